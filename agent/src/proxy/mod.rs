//! The node's share of the Service data plane, in the agent's own process (no
//! iptables, no change to the host's network configuration): an L4 proxy per
//! Service port, TCP ([`tcp`]) and UDP ([`udp`]).
//!
//! - NodePort and LoadBalancer ports are listened on at the node's address (the
//!   agent's `--host-port-ip`, else every interface) on every node, whether or not
//!   it runs a replica — Swarm's routing mesh.
//! - Each new connection goes to the next ready endpoint, round-robin (the client's
//!   own endpoint first with `sessionAffinity: ClientIP`); one that refuses or does
//!   not answer within [`CONNECT_TIMEOUT`] is skipped for [`FAILED_FOR`] and the next
//!   is tried, so a replica that just died costs no request. Terminating endpoints get
//!   no new connections (unless nothing else serves); open ones run to their end.
//! - Endpoints on other nodes are reached through those nodes' agents ([`tunnel`]).
//!
//! What it serves comes from Services, EndpointSlices and Nodes, each watched on the
//! shared watcher and kept in a reflector; [`table::build`] turns them into
//! frontends, and every change is applied at once (listeners opened and closed,
//! endpoint lists swapped).

pub mod table;
mod tcp;
pub mod tunnel;
mod udp;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tugboat_api::Client;
use tugboat_api::resource::{ENDPOINTSLICES, NODES, SERVICES};
use tugboat_runtime::reflector::{self, Store};
use tugboat_runtime::watcher;

use table::{Frontend, Protocol};

/// How long connecting to one endpoint may take before the next is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long connecting through another node's agent may take (its own connect
/// to the pod included).
pub const TUNNEL_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long an endpoint that refused is tried only after the others.
pub const FAILED_FOR: Duration = Duration::from_secs(2);
/// How many endpoints one new connection tries at most.
pub const MAX_TRIES: usize = 8;
/// A UDP flow with no datagram either way for this long is forgotten.
pub const UDP_IDLE: Duration = Duration::from_secs(30);
/// The most client IPs remembered per Service port for `ClientIP` affinity.
pub const MAX_AFFINITY: usize = 10_000;
/// How often listeners that could not be opened are retried.
const RETRY_BIND: Duration = Duration::from_secs(5);

/// One Service port's live state, shared by its listener and connections.
pub struct Slot {
    frontend: RwLock<Arc<Frontend>>,
    turn: AtomicUsize,
    /// Client IP → (endpoint, last used), for `ClientIP` affinity.
    affinity: Mutex<HashMap<IpAddr, (SocketAddr, Instant)>>,
}

impl Slot {
    fn new(frontend: Arc<Frontend>) -> Self {
        Slot {
            frontend: RwLock::new(frontend),
            turn: AtomicUsize::new(0),
            affinity: Mutex::new(HashMap::new()),
        }
    }

    pub fn frontend(&self) -> Arc<Frontend> {
        self.frontend
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn sticky(&self, client: IpAddr, timeout: Duration) -> Option<SocketAddr> {
        let map = self.affinity.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&client)
            .filter(|(_, at)| at.elapsed() < timeout)
            .map(|(ep, _)| *ep)
    }

    fn remember(&self, client: IpAddr, endpoint: SocketAddr, timeout: Duration) {
        let mut map = self.affinity.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_AFFINITY && !map.contains_key(&client) {
            map.retain(|_, (_, at)| at.elapsed() < timeout);
            if map.len() >= MAX_AFFINITY {
                return;
            }
        }
        map.insert(client, (endpoint, Instant::now()));
    }
}

/// What the listeners, the tunnel and the manager share.
#[derive(Default)]
pub struct Shared {
    /// Endpoints that recently refused or timed out, with when.
    failed: Mutex<HashMap<SocketAddr, Instant>>,
    /// This node's endpoints of every Service port (what the tunnel may reach).
    local: RwLock<HashSet<(Protocol, SocketAddr)>>,
}

impl Shared {
    pub fn mark_failed(&self, addr: SocketAddr) {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed.retain(|_, at| at.elapsed() < FAILED_FOR);
        failed.insert(addr, Instant::now());
    }

    pub fn failed_recently(&self, addr: SocketAddr) -> bool {
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed
            .get(&addr)
            .is_some_and(|at| at.elapsed() < FAILED_FOR)
    }

    fn clear_failed(&self, addr: SocketAddr) {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed.remove(&addr);
    }

    pub fn is_local_endpoint(&self, protocol: Protocol, addr: SocketAddr) -> bool {
        self.local
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(protocol, addr))
    }
}

/// How the proxy of one node runs.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub node: String,
    /// Where node ports are listened on (`None`: every interface).
    pub node_port_ip: Option<IpAddr>,
}

/// A listener: which Service port it serves, and how to stop it.
struct Listener {
    slot: Arc<Slot>,
    stop: CancellationToken,
}

/// Runs the proxy until `shutdown`: watches Services, EndpointSlices and Nodes,
/// serves the tunnel on `tunnel`, and keeps one listener per node port.
pub async fn run(
    client: Client,
    config: ProxyConfig,
    tunnel: TcpListener,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared::default());
    tracker.spawn(tunnel::serve(
        tunnel,
        shared.clone(),
        tracker.clone(),
        shutdown.clone(),
    ));
    let source = Arc::new(client);
    let (services, svc_events) = reflect::<Service>(source.clone(), &SERVICES, &config.node);
    let (slices, slice_events) =
        reflect::<EndpointSlice>(source.clone(), &ENDPOINTSLICES, &config.node);
    let (nodes, node_events) = reflect::<Node>(source, &NODES, &config.node);
    let mut events = std::pin::pin!(futures::stream::select(
        svc_events,
        futures::stream::select(slice_events, node_events)
    ));
    let mut listeners: HashMap<(Protocol, SocketAddr), Listener> = HashMap::new();
    let mut retry = tokio::time::interval(RETRY_BIND);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unbound = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            ev = events.next() => {
                if ev.is_none() {
                    break;
                }
                // Take every event already waiting, then apply once.
                while let Some(Some(_)) = events.now_or_never_ready() {}
            }
            _ = retry.tick(), if unbound => {}
        }
        if !(services.is_ready() && slices.is_ready() && nodes.is_ready()) {
            continue;
        }
        let frontends = table::build(
            &config.node,
            &services.state(),
            &slices.state(),
            &nodes.state(),
        );
        unbound = apply(
            &config,
            &shared,
            &mut listeners,
            frontends,
            &tracker,
            &shutdown,
        )
        .await;
    }
    for l in listeners.values() {
        l.stop.cancel();
    }
}

/// Polls a stream once without waiting.
trait NowOrNever: futures::Stream + Unpin {
    fn now_or_never_ready(&mut self) -> Option<Option<Self::Item>> {
        futures::FutureExt::now_or_never(self.next())
    }
}
impl<S: futures::Stream + Unpin> NowOrNever for S {}

/// A typed watcher feeding a reflector; the stream yields `()` per change.
fn reflect<K>(
    source: Arc<Client>,
    resource: &'static tugboat_api::resource::ResourceInfo,
    node: &str,
) -> (Store<K>, impl futures::Stream<Item = ()> + Send + 'static)
where
    K: serde::de::DeserializeOwned + tugboat_runtime::Object + Send + Sync + 'static,
{
    let writer = reflector::Writer::<K>::new();
    let store = writer.store();
    let config = watcher::Config::new(format!("proxy {node} {}", resource.plural))
        .backoff(Duration::from_millis(200), Duration::from_secs(5));
    let stream =
        reflector::reflector(writer, watcher::watch::<K, _>(source, resource, config)).map(|_| ());
    (store, stream)
}

/// Makes the listeners match `frontends`; true when some could not be opened.
async fn apply(
    config: &ProxyConfig,
    shared: &Arc<Shared>,
    listeners: &mut HashMap<(Protocol, SocketAddr), Listener>,
    frontends: Vec<Frontend>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> bool {
    let local: HashSet<(Protocol, SocketAddr)> = frontends
        .iter()
        .flat_map(|f| {
            f.endpoints
                .iter()
                .filter(|e| e.route == table::Route::Local)
                .map(|e| (f.protocol, e.addr))
        })
        .collect();
    *shared.local.write().unwrap_or_else(|e| e.into_inner()) = local;
    let bind_ip = config.node_port_ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let mut wanted: HashMap<(Protocol, SocketAddr), Arc<Frontend>> = HashMap::new();
    for f in frontends {
        if let Some(port) = f.node_port {
            wanted.insert((f.protocol, SocketAddr::new(bind_ip, port)), Arc::new(f));
        }
    }
    listeners.retain(|key, l| {
        let keep = wanted.contains_key(key);
        if !keep {
            tracing::info!(node = %config.node, protocol = key.0.as_str(), addr = %key.1, "closing a node port");
            l.stop.cancel();
        }
        keep
    });
    let mut unbound = false;
    for (key, frontend) in wanted {
        if let Some(l) = listeners.get(&key) {
            *l.slot.frontend.write().unwrap_or_else(|e| e.into_inner()) = frontend;
            continue;
        }
        let (protocol, addr) = key;
        let slot = Arc::new(Slot::new(frontend.clone()));
        let stop = shutdown.child_token();
        let opened = match protocol {
            Protocol::Tcp => match TcpListener::bind(addr).await {
                Ok(l) => {
                    tracker.spawn(tcp::serve(
                        l,
                        slot.clone(),
                        shared.clone(),
                        true,
                        tracker.clone(),
                        stop.clone(),
                    ));
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Protocol::Udp => match tokio::net::UdpSocket::bind(addr).await {
                Ok(s) => {
                    tracker.spawn(udp::serve(
                        s,
                        slot.clone(),
                        shared.clone(),
                        true,
                        tracker.clone(),
                        stop.clone(),
                    ));
                    Ok(())
                }
                Err(e) => Err(e),
            },
        };
        match opened {
            Ok(()) => {
                tracing::info!(node = %config.node, service = %frontend.key, protocol = protocol.as_str(), %addr, "serving a node port");
                listeners.insert(key, Listener { slot, stop });
            }
            Err(e) => {
                tracing::warn!(node = %config.node, service = %frontend.key, protocol = protocol.as_str(), %addr, error = %e, "cannot open a node port; retrying");
                unbound = true;
            }
        }
    }
    unbound
}

/// Connects to one endpoint: straight to a pod on this node, through its node's
/// agent otherwise.
async fn connect(endpoint: &table::Endpoint, shared: &Shared) -> Result<TcpStream, String> {
    let result = match &endpoint.route {
        table::Route::Local => {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(endpoint.addr)).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".to_string()),
            }
        }
        table::Route::Via(via) => {
            tunnel::connect(*via, Protocol::Tcp, endpoint.addr, TUNNEL_TIMEOUT)
                .await
                .map_err(|e| e.to_string())
        }
    };
    match &result {
        Ok(s) => {
            let _ = s.set_nodelay(true);
            shared.clear_failed(endpoint.addr);
        }
        Err(_) => shared.mark_failed(endpoint.addr),
    }
    result
}

/// Copies both ways until both sides are done (half-closes passed on).
pub(crate) async fn copy_tcp(mut a: TcpStream, mut b: TcpStream) {
    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
}
