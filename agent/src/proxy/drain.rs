//! Taking a pod out of every node's Service traffic before its containers are
//! told to stop — what Kubernetes and Swarm leave to `preStop: sleep`
//! workarounds (kubernetes#43576, moby#30321), done here by asking.
//!
//! A pod being deleted stops being a ready endpoint in its EndpointSlices (the
//! endpoints controller writes that at once). Each node's proxy publishes what
//! it has applied to its listeners: the highest EndpointSlice revision and the
//! ready addresses ([`super::Applied`]). The pod's agent waits until its own
//! proxy no longer routes new connections to the pod — that revision is the
//! one that took it out — then asks every other Ready node's agent, over the
//! tunnel (`TUG/1 SYNC <revision>`), to answer once it has applied that
//! revision too. Then the connections already open to the pod through this
//! node (its proxy's, and those its tunnel carries for other nodes) are given
//! up to [`IN_FLIGHT_WAIT`] to finish, so a request that reached the pod just
//! before is answered. Only then (or at the deadline) does the agent run
//! `preStop` and send SIGTERM.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::time::Instant;

use super::Shared;
use super::tunnel;

/// What a drain achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drained {
    /// The revision every acknowledging node has applied.
    pub revision: u64,
    /// Whether this node's own proxy took the pod out in time.
    pub local: bool,
    /// Nodes that acknowledged, of those asked.
    pub acknowledged: usize,
    pub asked: usize,
    /// Connections to the pod still open through this node when the wait for
    /// them ended (0: every one had finished).
    pub still_open: u64,
    pub took: Duration,
}

/// How long a drained pod waits, at most, for the connections already open to
/// it (through this node's proxy or tunnel) to finish before it is stopped: a
/// request that reached it just before the drain is answered, a kept-alive idle
/// connection does not hold the stop for long.
pub const IN_FLIGHT_WAIT: Duration = Duration::from_secs(1);

/// The highest revision among `slices`, and the addresses that are ready
/// endpoints in them (ready and not terminating: what gets new connections).
pub fn routed(slices: &[Arc<EndpointSlice>]) -> (u64, HashSet<IpAddr>) {
    let revision = slices
        .iter()
        .filter_map(|s| s.metadata.resource_version.as_deref()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let ready = slices
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| {
            let c = e.conditions.as_ref();
            c.and_then(|c| c.ready).unwrap_or(true)
                && !c.and_then(|c| c.terminating).unwrap_or(false)
        })
        .flat_map(|e| e.addresses.iter())
        .filter_map(|a| a.parse().ok())
        .collect();
    (revision, ready)
}

/// The other nodes to ask: Ready ones that publish a tunnel.
pub fn peers(me: &str, nodes: &[Arc<Node>]) -> Vec<(String, SocketAddr)> {
    nodes
        .iter()
        .filter(|n| n.metadata.name.as_deref() != Some(me))
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|n| super::table::tunnel_of(n).map(|(name, addr)| (name.to_string(), addr)))
        .collect()
}

/// Waits until no node sends new connections to `ip` — this node's proxy first,
/// then every other Ready node's, asked in parallel — or until `deadline`.
pub async fn drain(shared: &Shared, ip: IpAddr, deadline: Instant) -> Drained {
    let started = Instant::now();
    let mut applied = shared.applied();
    let local = tokio::time::timeout_at(deadline, applied.wait_for(|a| !a.ready.contains(&ip)))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|a| a.revision);
    let (revision, local) = match local {
        Some(revision) => (revision, true),
        // The proxy stopped, or the deadline came: ask with what is applied.
        None => (shared.applied().borrow().revision, false),
    };
    let peers = shared.peers();
    let asked = peers.len();
    let tls = shared.tls.as_deref();
    let acks = futures::future::join_all(peers.iter().map(|(name, addr)| async move {
        let left = deadline.saturating_duration_since(Instant::now());
        match tunnel::sync(tls, *addr, name, revision, left).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(peer = %name, error = %e, "a node did not confirm the drain");
                false
            }
        }
    }))
    .await;
    // No new connection reaches the pod now; let the open ones finish.
    let until = deadline.min(Instant::now() + IN_FLIGHT_WAIT);
    let mut still_open = shared.open_to(ip);
    while still_open > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
        still_open = shared.open_to(ip);
    }
    Drained {
        revision,
        local,
        acknowledged: acks.iter().filter(|a| **a).count(),
        asked,
        still_open,
        took: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(rv: &str, eps: serde_json::Value) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "s", "resourceVersion": rv},
                "addressType": "IPv4",
                "endpoints": eps,
            }))
            .unwrap(),
        )
    }

    #[test]
    fn only_ready_endpoints_that_are_not_terminating_are_routed() {
        let (rev, ready) = routed(&[
            slice(
                "7",
                json!([
                    {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                    {"addresses": ["10.0.0.2"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                    {"addresses": ["10.0.0.3"]},
                ]),
            ),
            slice(
                "9",
                json!([{"addresses": ["10.0.0.4"], "conditions": {"ready": false}}]),
            ),
        ]);
        assert_eq!(rev, 9);
        let ips: HashSet<IpAddr> = ["10.0.0.1", "10.0.0.3"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(ready, ips);
    }

    #[tokio::test]
    async fn a_drain_waits_for_the_local_proxy_and_asks_no_one_when_alone() {
        let shared = Arc::new(Shared::default());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        shared.publish(5, [ip].into_iter().collect());
        let waiter = {
            let shared = shared.clone();
            tokio::spawn(async move {
                drain(&shared, ip, Instant::now() + Duration::from_secs(10)).await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "drained while the pod was still routed"
        );
        shared.publish(6, HashSet::new());
        let d = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(d.local);
        assert_eq!((d.revision, d.asked), (6, 0));
    }

    #[tokio::test]
    async fn a_drain_gives_up_at_its_deadline() {
        let shared = Shared::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        shared.publish(5, [ip].into_iter().collect());
        let d = drain(&shared, ip, Instant::now() + Duration::from_millis(100)).await;
        assert!(!d.local);
    }

    #[tokio::test]
    async fn a_connection_open_to_the_pod_is_let_finish_within_the_bound() {
        let shared = Arc::new(Shared::default());
        let ip: IpAddr = "172.17.0.9".parse().unwrap();
        let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn({
            let (shared, finished) = (shared.clone(), finished.clone());
            async move {
                let _open = shared.carrying(ip);
                held.await.ok();
                tokio::time::sleep(Duration::from_millis(50)).await;
                finished.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
        // The connection is open when the drain starts; it ends a little later.
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(shared.open_to(ip), 1);
        release.send(()).unwrap();
        let d = drain(&shared, ip, Instant::now() + Duration::from_secs(5)).await;
        assert!(finished.load(std::sync::atomic::Ordering::SeqCst), "{d:?}");
        assert_eq!(d.still_open, 0);
        task.await.unwrap();
        // One that stays open is waited for only up to the bound.
        let _idle = shared.carrying(ip);
        let d = drain(&shared, ip, Instant::now() + Duration::from_secs(5)).await;
        assert_eq!(d.still_open, 1);
        assert!(d.took >= IN_FLIGHT_WAIT, "{d:?}");
    }
}
