//! Resource and request metrics, as metrics-server keeps them — but built in:
//! every `interval` the controller asks each Ready node's agent for its summary
//! (`GET /stats/summary` over the agent's mutual-TLS endpoint, the node's
//! pinned certificate checked, as the logs proxy does) and keeps the latest
//! figures in memory. Nothing is stored: metrics are recent readings, not
//! state, and a restarted controller has them again after one interval.
//!
//! What is kept: each node's and each pod's CPU (nanocores) and memory working
//! set, with the sample's time and window (served as `metrics.k8s.io`, read by
//! the autoscaler); and each endpoint pod IP's request rate — new connections
//! per second summed over every node's proxy, from the change of their
//! counters between two scrapes — and connections open now.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tugboat_api::resource::NODES;

use crate::registry::Registry;
use crate::server::agents::AgentClients;

/// How often nodes are asked by default (metrics-server's resolution).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// How many nodes are asked at once.
const CONCURRENCY: usize = 32;
/// How long one node may take to answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The largest summary read from a node (a full node of 110 pods answers
/// well under 100 KiB).
const MAX_SUMMARY_BYTES: usize = 4 * 1024 * 1024;
/// Readings older than this many intervals are dropped (a node that stopped
/// answering, a pod that is gone).
const STALE_INTERVALS: u32 = 3;

pub use tugboat_api::metrics::{
    ContainerUsage, EndpointConnections, NodeUsage, PodUsage, SUMMARY_PATH, Summary,
};

/// A node's or a pod's latest reading, and when it was taken here.
#[derive(Clone, Debug)]
pub struct Reading<T> {
    pub value: T,
    pub seen: Instant,
}

/// One node proxy's counters for one endpoint pod IP, at its last scrape.
#[derive(Clone, Copy, Debug)]
struct Counter {
    total: u64,
    at: Instant,
    active: u64,
    /// New connections per second since the scrape before; `None` when
    /// there was none to compare with (this controller's first scrape of the
    /// node).
    rate: Option<f64>,
}

/// One endpoint pod IP's requests, by the node whose proxy opened them.
type Requests = HashMap<String, Counter>;

/// What the controller knows of current usage.
#[derive(Default)]
pub struct Metrics {
    nodes: RwLock<HashMap<String, Reading<NodeUsage>>>,
    pods: RwLock<HashMap<(String, String), Reading<PodUsage>>>,
    requests: RwLock<HashMap<IpAddr, Requests>>,
    /// The nodes scraped at least twice, whose connection rates are known.
    baseline: RwLock<std::collections::HashSet<String>>,
    interval: RwLock<Duration>,
    /// When stale readings were last dropped. Dropping walks every pod's
    /// reading, so it is done once per interval, not once per node's summary
    /// (1,000 nodes × 30,000 pods each interval took a percent of the CPU);
    /// readers skip stale readings themselves.
    pruned: std::sync::Mutex<Option<Instant>>,
    /// Told after every scrape (the autoscaler looks again then).
    pub scraped: tokio::sync::Notify,
}

impl Metrics {
    pub fn new(interval: Duration) -> Arc<Metrics> {
        Arc::new(Metrics {
            interval: RwLock::new(interval),
            ..Default::default()
        })
    }

    pub fn interval(&self) -> Duration {
        *self.interval.read().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh<T: Clone>(&self, r: &Reading<T>) -> bool {
        r.seen.elapsed() <= self.interval() * STALE_INTERVALS
    }

    /// Is any node's agent being scraped (so a pod no proxy reported had no
    /// connections, rather than unknown)?
    pub fn scraping(&self) -> bool {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        let baseline = self.baseline.read().unwrap_or_else(|e| e.into_inner());
        nodes
            .iter()
            .any(|(name, r)| self.fresh(r) && baseline.contains(name))
    }

    pub fn node(&self, name: &str) -> Option<NodeUsage> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        nodes
            .get(name)
            .filter(|r| self.fresh(r))
            .map(|r| r.value.clone())
    }

    pub fn nodes(&self) -> Vec<NodeUsage> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        nodes
            .values()
            .filter(|r| self.fresh(r))
            .map(|r| r.value.clone())
            .collect()
    }

    pub fn pod(&self, ns: &str, name: &str) -> Option<PodUsage> {
        let pods = self.pods.read().unwrap_or_else(|e| e.into_inner());
        pods.get(&(ns.to_string(), name.to_string()))
            .filter(|r| self.fresh(r))
            .map(|r| r.value.clone())
    }

    /// Every pod's reading (in `ns` when given).
    pub fn pods(&self, ns: Option<&str>) -> Vec<PodUsage> {
        let pods = self.pods.read().unwrap_or_else(|e| e.into_inner());
        pods.values()
            .filter(|r| self.fresh(r))
            .filter(|r| ns.is_none_or(|ns| r.value.namespace == ns))
            .map(|r| r.value.clone())
            .collect()
    }

    /// New connections per second to the pod at `ip` (`None` while a proxy's
    /// rate is not known yet), and connections open now, summed over every
    /// node's proxy (`None` when no proxy reported it).
    pub fn requests(&self, ip: IpAddr) -> Option<(Option<f64>, u64)> {
        let requests = self.requests.read().unwrap_or_else(|e| e.into_inner());
        let stale = self.interval() * STALE_INTERVALS;
        let by_node = requests.get(&ip)?;
        let live = by_node.values().filter(|c| c.at.elapsed() <= stale);
        let (rate, active) = live.fold((Some(0.0), 0u64), |(r, a), c| {
            (
                r.zip(c.rate).map(|(r, c)| r + c),
                a.saturating_add(c.active),
            )
        });
        Some((rate, active))
    }

    /// Whether stale readings are to be dropped now (once per interval).
    fn prune_due(&self, now: Instant) -> bool {
        let mut pruned = self.pruned.lock().unwrap_or_else(|e| e.into_inner());
        match *pruned {
            Some(at) if now.duration_since(at) < self.interval() => false,
            _ => {
                *pruned = Some(now);
                true
            }
        }
    }

    /// Takes in node `node`'s summary.
    pub fn record(&self, node: &str, summary: Summary) {
        let now = Instant::now();
        let prune = self.prune_due(now);
        let stale = self.interval() * STALE_INTERVALS;
        let previous = {
            let mut n = summary.node;
            n.name = node.to_string();
            self.nodes
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    node.to_string(),
                    Reading {
                        value: n,
                        seen: now,
                    },
                )
                .map(|r| r.seen)
                // A stale reading not dropped yet counts as none, as if dropped.
                .filter(|seen| now.duration_since(*seen) <= stale)
        };
        if prune {
            self.nodes
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|_, r| r.seen.elapsed() <= stale);
        }
        {
            let mut baseline = self.baseline.write().unwrap_or_else(|e| e.into_inner());
            if prune {
                let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
                baseline.retain(|n| nodes.contains_key(n));
            }
            if previous.is_some() {
                baseline.insert(node.to_string());
            } else {
                baseline.remove(node);
            }
        }
        {
            let mut pods = self.pods.write().unwrap_or_else(|e| e.into_inner());
            for p in summary.pods {
                pods.insert(
                    (p.namespace.clone(), p.name.clone()),
                    Reading {
                        value: p,
                        seen: now,
                    },
                );
            }
            if prune {
                pods.retain(|_, r| r.seen.elapsed() <= stale);
            }
        }
        let mut requests = self.requests.write().unwrap_or_else(|e| e.into_inner());
        for e in summary.endpoints {
            let by_node = requests.entry(e.ip).or_default();
            let before = by_node.get(node).copied();
            // The counter's change since the node's last scrape (one that went
            // back is an agent restarted from 0). A counter the node did not
            // report last time started since: all of it is new. On the first
            // scrape of a node there is nothing to compare with.
            let (from_total, since) = match (before, previous) {
                (Some(b), _) => (Some(b.total), Some(b.at)),
                (None, Some(p)) => (Some(0), Some(p)),
                (None, None) => (None, None),
            };
            let rate = from_total.zip(since).and_then(|(from, at)| {
                let dt = now.duration_since(at).as_secs_f64();
                let delta = e
                    .connections_total
                    .checked_sub(from)
                    .unwrap_or(e.connections_total);
                if dt > 0.0 {
                    Some(delta as f64 / dt)
                } else {
                    before.and_then(|b| b.rate)
                }
            });
            by_node.insert(
                node.to_string(),
                Counter {
                    total: e.connections_total,
                    at: now,
                    active: e.active,
                    rate,
                },
            );
        }
        if prune {
            requests.retain(|_, by_node| {
                by_node.retain(|_, c| c.at.elapsed() <= stale);
                !by_node.is_empty()
            });
        }
    }
}

/// Asks every Ready node's agent for its summary every `interval` until
/// `shutdown`.
pub async fn run(
    registry: Arc<Registry>,
    agents: Arc<AgentClients>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(metrics.interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let nodes = match registry.list_all(&NODES, None).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e.message, "cannot list nodes for metrics");
                continue;
            }
        };
        let ready: Vec<(String, std::net::SocketAddr)> = nodes
            .iter()
            .filter(|n| {
                n.pointer("/status/conditions")
                    .and_then(|c| c.as_array())
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
            })
            .filter_map(|n| {
                let name = tugboat_api::meta::name(n)?.to_string();
                let addr = crate::server::agent_address(n, &name).ok()?;
                Some((name, addr))
            })
            .collect();
        let fetched = futures::stream::iter(ready)
            .map(|(name, addr)| {
                let registry = registry.clone();
                let agents = agents.clone();
                async move {
                    let r = scrape(&registry, &agents, &name, addr).await;
                    (name, r)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        for (node, result) in fetched {
            match result {
                Ok(summary) => metrics.record(&node, summary),
                Err(e) => tracing::debug!(node, error = %e, "no metrics from the node this time"),
            }
        }
        metrics.scraped.notify_waiters();
    }
}

async fn scrape(
    registry: &Registry,
    agents: &AgentClients,
    node: &str,
    addr: std::net::SocketAddr,
) -> Result<Summary, String> {
    let credential = registry
        .node_credential(node)
        .await
        .map_err(|e| e.message)?;
    let http = agents
        .for_node(node, credential.as_ref().map(|c| c.fingerprint.as_str()))
        .map_err(|e| e.message)?;
    let url = format!("{}://{addr}{SUMMARY_PATH}", agents.scheme());
    let resp = tokio::time::timeout(TIMEOUT, http.get(&url).send())
        .await
        .map_err(|_| format!("{url}: no answer within {TIMEOUT:?}"))?
        .map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: answered {}", resp.status()));
    }
    let read = async {
        let mut resp = resp;
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_SUMMARY_BYTES {
                return Err(format!(
                    "{url}: the summary is larger than {MAX_SUMMARY_BYTES} bytes"
                ));
            }
        }
        Ok(bytes)
    };
    let bytes = tokio::time::timeout(TIMEOUT, read)
        .await
        .map_err(|_| format!("{url}: the answer took longer than {TIMEOUT:?}"))??;
    serde_json::from_slice(&bytes).map_err(|e| format!("{url}: not a summary: {e}"))
}

#[cfg(test)]
mod tests {
    use tugboat_api::metrics::{EndpointConnections, NodeUsage, Summary};

    use super::*;

    fn summary(endpoints: &[(&str, u64)]) -> Summary {
        Summary {
            node: NodeUsage {
                name: String::new(),
                timestamp: jiff::Timestamp::now(),
                window: Duration::from_secs(1),
                cpu_nano_cores: 0,
                memory_working_set_bytes: 0,
            },
            pods: Vec::new(),
            endpoints: endpoints
                .iter()
                .map(|(ip, total)| EndpointConnections {
                    ip: ip.parse().unwrap(),
                    connections_total: *total,
                    active: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn connection_rates_are_unknown_until_a_node_was_read_twice() {
        let m = Metrics::new(Duration::from_secs(15));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        // A controller that just started knows totals, not rates: it must not
        // read them as 0 (an autoscaler would scale a busy Service down).
        m.record("n1", summary(&[("10.0.0.1", 500)]));
        assert_eq!(m.requests(a), Some((None, 1)));
        assert!(!m.scraping());
        std::thread::sleep(Duration::from_millis(100));
        m.record("n1", summary(&[("10.0.0.1", 510), ("10.0.0.2", 5)]));
        assert!(m.scraping());
        let (rate, _) = m.requests(a).unwrap();
        let rate = rate.expect("known after two reads");
        assert!(rate > 10.0 && rate < 110.0, "10 in about 0.1 s: {rate}");
        // An endpoint first reported now opened all its connections since the
        // read before.
        let (rate, _) = m.requests(b).unwrap();
        assert!(rate.is_some_and(|r| r > 5.0), "{rate:?}");
    }
}
