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
//! - Each connection (or UDP flow) opened to an endpoint is counted, per endpoint
//!   IP, on this node only: the node whose proxy accepted the client counts it;
//!   another node's tunnel that carries it does not ([`Shared::endpoint_connections`],
//!   for the autoscaler's request rates).
//!
//! What it serves comes from Services, EndpointSlices and Nodes, each watched on the
//! shared watcher and kept in a reflector; [`table::build`] turns them into
//! frontends, and every change is applied at once (listeners opened and closed,
//! endpoint lists swapped).

pub mod cluster;
pub mod dns;
pub mod drain;
pub mod netns;
pub mod sandbox;
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
/// How long a connection to a Service scaled to zero is held for a replica
/// to become ready before it is answered 503 (HTTP) or closed.
pub const ACTIVATION_HOLD: Duration = Duration::from_secs(60);
/// How often one node asks the controller to activate one Service at most.
pub const ACTIVATE_EVERY: Duration = Duration::from_secs(2);
/// How long one activation request may take.
const ACTIVATE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most Services remembered as activated from this node.
const MAX_ACTIVATIONS: usize = 4096;
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

    /// The Service port as it is now, and the endpoints a new connection from
    /// `client` tries, in order: `external` (a node port) or not (a ClusterIP)
    /// decides which traffic policy applies.
    fn pick(
        &self,
        client: IpAddr,
        external: bool,
        shared: &Shared,
    ) -> (Arc<Frontend>, Vec<table::Endpoint>) {
        let frontend = self.frontend();
        let local_only = if external {
            frontend.external_local
        } else {
            frontend.internal_local
        };
        let sticky = frontend
            .affinity
            .and_then(|timeout| self.sticky(client, timeout));
        let turn = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let candidates =
            frontend.candidates(local_only, turn, sticky, &|a| shared.failed_recently(a));
        (frontend, candidates)
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

/// What this node's proxy has applied to its listeners: the highest
/// EndpointSlice revision it has seen, and the addresses that are ready
/// endpoints (get new connections) there. A terminating pod's agent waits for
/// every node to have applied the revision that took its pod out
/// ([`drain`]).
#[derive(Clone, Debug, Default)]
pub struct Applied {
    pub revision: u64,
    pub ready: Arc<HashSet<IpAddr>>,
}

/// What the listeners, the tunnel, the manager and the pod workers share.
pub struct Shared {
    /// Endpoints that recently refused or timed out, with when.
    failed: Mutex<HashMap<SocketAddr, Instant>>,
    /// This node's endpoints of every Service port (what the tunnel may reach).
    local: RwLock<HashSet<(Protocol, SocketAddr)>>,
    /// The node's credential: tunnels to and from other agents are TLS with it.
    pub tls: Option<Arc<crate::tls::NodeTls>>,
    /// What the listeners route by now.
    applied: tokio::sync::watch::Sender<Applied>,
    /// The other Ready nodes' tunnels: whom to ask to drain an endpoint.
    peers: RwLock<Vec<(String, SocketAddr)>>,
    /// Connections and UDP flows this node's proxy opened, per endpoint IP;
    /// IPs that are no endpoint any more are forgotten once nothing is open.
    connections: Mutex<HashMap<IpAddr, Counts>>,
    /// Connections this node's tunnel carries to its own endpoints for other
    /// nodes' proxies, open now, per endpoint IP (not counted above: the
    /// proxy that accepted them counts them).
    carried: Mutex<HashMap<IpAddr, u64>>,
    /// The API, for asking the controller to wake a Service scaled to zero.
    api: std::sync::OnceLock<Client>,
    /// When each Service scaled to zero was last activated from this node, and
    /// whether the controller had an autoscaler for it.
    activations: Mutex<HashMap<table::Activator, (Instant, bool)>>,
}

/// One endpoint IP's connections: opened in all, and open now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    total: u64,
    active: u64,
}

/// A connection (or flow) counted as open while this lives.
pub(crate) struct Counted<'a> {
    shared: &'a Shared,
    ip: IpAddr,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        let mut counts = self.shared.counts();
        if let Some(c) = counts.get_mut(&self.ip) {
            c.active = c.active.saturating_sub(1);
        }
    }
}

/// A connection the tunnel carries to a local endpoint, open while this lives.
pub(crate) struct Carried<'a> {
    shared: &'a Shared,
    ip: IpAddr,
}

impl Drop for Carried<'_> {
    fn drop(&mut self) {
        let mut carried = self
            .shared
            .carried
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = carried.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                carried.remove(&self.ip);
            }
        }
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            failed: Mutex::default(),
            local: RwLock::default(),
            tls: None,
            applied: tokio::sync::watch::Sender::new(Applied::default()),
            peers: RwLock::default(),
            connections: Mutex::default(),
            carried: Mutex::default(),
            api: std::sync::OnceLock::new(),
            activations: Mutex::default(),
        }
    }
}

impl Shared {
    /// A node's shared proxy state, with its credential.
    pub fn with_tls(tls: Option<Arc<crate::tls::NodeTls>>) -> Shared {
        Shared {
            tls,
            ..Shared::default()
        }
    }

    /// Follows what the listeners route by.
    pub fn applied(&self) -> tokio::sync::watch::Receiver<Applied> {
        self.applied.subscribe()
    }

    /// Records what was just applied (the revision never goes back).
    fn publish(&self, revision: u64, ready: HashSet<IpAddr>) {
        self.applied.send_if_modified(|a| {
            let revision = revision.max(a.revision);
            if a.revision == revision && *a.ready == ready {
                return false;
            }
            *a = Applied {
                revision,
                ready: Arc::new(ready),
            };
            true
        });
    }

    /// Asks the controller to scale the Service's target up from zero; at most
    /// once per [`ACTIVATE_EVERY`] per Service from this node (a held
    /// connection arriving meanwhile goes on holding). False when the
    /// controller says nothing scales it from zero: the connection is closed.
    async fn activate(&self, a: &table::Activator) -> bool {
        {
            let mut map = self.activations.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, known)) = map.get(a)
                && at.elapsed() < ACTIVATE_EVERY
            {
                return *known;
            }
            if map.len() >= MAX_ACTIVATIONS {
                map.retain(|_, (at, _)| at.elapsed() < ACTIVATE_EVERY);
            }
            map.insert(a.clone(), (Instant::now(), true));
        }
        let Some(api) = self.api.get() else {
            return false;
        };
        let body = serde_json::json!({"namespace": a.namespace, "service": a.service});
        let answer = tokio::time::timeout(
            ACTIVATE_TIMEOUT,
            api.post_path(tugboat_api::metrics::ACTIVATE_PATH, &body),
        )
        .await;
        match answer {
            Ok(Ok(_)) => true,
            Ok(Err(e)) if e.is_not_found() => {
                // Not remembered: an autoscaler made a moment later is asked
                // about by the next connection (the controller also takes the
                // Service's annotation off, so connections stop being held).
                tracing::debug!(service = %a.service, namespace = %a.namespace, error = %e, "nothing scales the Service from zero");
                self.activations
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(a);
                false
            }
            // The controller could not be asked now: keep holding, ask again.
            Ok(Err(e)) => {
                tracing::warn!(service = %a.service, namespace = %a.namespace, error = %e, "cannot ask the controller to scale the Service up from zero");
                true
            }
            Err(_) => {
                tracing::warn!(service = %a.service, namespace = %a.namespace, "the controller did not answer an activation in time");
                true
            }
        }
    }

    /// The other Ready nodes' tunnels.
    pub fn peers(&self) -> Vec<(String, SocketAddr)> {
        self.peers.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

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

    /// Counts a connection or flow this node's proxy opened to endpoint `ip`
    /// (never one it only carries for another node's proxy); open until the
    /// returned guard drops.
    pub(crate) fn opened(&self, ip: IpAddr) -> Counted<'_> {
        let mut counts = self.counts();
        let c = counts.entry(ip).or_default();
        c.total += 1;
        c.active += 1;
        Counted { shared: self, ip }
    }

    /// Counts a connection the tunnel carries to local endpoint `ip` for
    /// another node's proxy; open until the returned guard drops.
    pub(crate) fn carrying(&self, ip: IpAddr) -> Carried<'_> {
        *self
            .carried
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(ip)
            .or_default() += 1;
        Carried { shared: self, ip }
    }

    /// Connections to endpoint `ip` open through this node now: the ones its
    /// proxy opened and the ones its tunnel carries for other nodes.
    pub fn open_to(&self, ip: IpAddr) -> u64 {
        let opened = self.counts().get(&ip).map_or(0, |c| c.active);
        let carried = self
            .carried
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ip)
            .copied()
            .unwrap_or(0);
        opened.saturating_add(carried)
    }

    /// What this node's proxy opened, per endpoint IP, in IP order.
    pub fn endpoint_connections(&self) -> Vec<tugboat_api::metrics::EndpointConnections> {
        let mut out: Vec<_> = self
            .counts()
            .iter()
            .map(|(ip, c)| tugboat_api::metrics::EndpointConnections {
                ip: *ip,
                connections_total: c.total,
                active: c.active,
            })
            .collect();
        out.sort_by_key(|e| e.ip);
        out
    }

    /// Forgets the counts of IPs that are no endpoint now and have nothing open
    /// (so the map stays as large as the endpoints; an IP that comes back starts
    /// from 0, which the scraper reads as a counter reset).
    fn keep_counts_of(&self, endpoints: &HashSet<IpAddr>) {
        self.counts()
            .retain(|ip, c| c.active > 0 || endpoints.contains(ip));
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Counts>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_local_endpoint(&self, protocol: Protocol, addr: SocketAddr) -> bool {
        self.local
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(protocol, addr))
    }
}

/// Where a listener is: on the node's address (node ports), or inside the
/// service sandbox whose process is this pid (ClusterIPs, cluster DNS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Place {
    Node,
    Sandbox(i64),
}

/// What a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Serves {
    Service,
    Dns,
}

type ListenerKey = (Place, Serves, Protocol, SocketAddr);
/// A listener wanted, with the Service port it serves (none: the DNS).
type Wanted = (ListenerKey, Option<Arc<Frontend>>);

/// A listener: which Service port it serves, and how to stop it.
struct Listener {
    slot: Option<Arc<Slot>>,
    stop: CancellationToken,
}

/// Runs the proxy until `shutdown`: watches Services (into `services`, which the
/// pods' environment variables read too), EndpointSlices and Nodes, serves the
/// tunnel on `tunnel`, one listener per node port, and — when the node has a
/// service sandbox — per ClusterIP port, and the cluster DNS.
pub async fn run(
    ctx: Arc<crate::AgentCtx>,
    node_port_ip: Option<IpAddr>,
    services: reflector::Writer<Service>,
    tunnel: TcpListener,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let node = ctx.node.clone();
    let shared = ctx.proxy.clone();
    let _ = shared.api.set(ctx.client.clone());
    tracker.spawn(tunnel::serve(
        tunnel,
        shared.clone(),
        tracker.clone(),
        shutdown.clone(),
    ));
    let source = Arc::new(ctx.client.clone());
    let svc_store = services.store();
    let svc_events = reflector::reflector(
        services,
        watcher::watch::<Service, _>(source.clone(), &SERVICES, watch_config(&node, &SERVICES)),
    )
    .map(|_| ());
    let (slices, slice_events) = reflect::<EndpointSlice>(source.clone(), &ENDPOINTSLICES, &node);
    let (nodes, node_events) = reflect::<Node>(source, &NODES, &node);
    let mut events = std::pin::pin!(futures::stream::select(
        svc_events,
        futures::stream::select(slice_events, node_events)
    ));
    let records: Arc<RwLock<Arc<dns::Records>>> = Arc::default();
    let mut listeners: HashMap<ListenerKey, Listener> = HashMap::new();
    let mut tick = tokio::time::interval(RETRY_BIND);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
            // Now and then: retry listeners that could not be opened, and check
            // the sandbox is still there.
            _ = tick.tick() => {
                check_sandbox(&ctx).await;
            }
        }
        if !(svc_store.is_ready() && slices.is_ready() && nodes.is_ready()) {
            continue;
        }
        let (svcs, slcs, all_nodes) = (svc_store.state(), slices.state(), nodes.state());
        let frontends = table::build(&node, &svcs, &slcs, &all_nodes);
        if let Some(c) = ctx.cluster.config.as_ref() {
            *records.write().unwrap_or_else(|e| e.into_inner()) =
                Arc::new(dns::records(&c.domain, &svcs, &slcs));
        }
        let wanted = wanted(&ctx, node_port_ip, frontends);
        apply(
            &ctx,
            &shared,
            &records,
            &mut listeners,
            wanted,
            &tracker,
            &shutdown,
        );
        // Only now, with the listeners routing by them, do these count as applied.
        let (revision, ready) = drain::routed(&slcs);
        *shared.peers.write().unwrap_or_else(|e| e.into_inner()) = drain::peers(&node, &all_nodes);
        shared.publish(revision, ready);
    }
    for l in listeners.values() {
        l.stop.cancel();
    }
}

fn watch_config(node: &str, resource: &tugboat_api::resource::ResourceInfo) -> watcher::Config {
    watcher::Config::new(format!("proxy {node} {}", resource.plural))
        .backoff(Duration::from_millis(200), Duration::from_secs(5))
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
    let stream = reflector::reflector(
        writer,
        watcher::watch::<K, _>(source, resource, watch_config(node, resource)),
    )
    .map(|_| ());
    (store, stream)
}

/// Makes sure the node's sandbox runs (when ClusterIPs are on); a new one gets
/// every running pod container routed to it.
pub async fn check_sandbox(ctx: &crate::AgentCtx) {
    let Some(config) = ctx.cluster.config.as_ref() else {
        return;
    };
    if !ctx.cluster.may_check() {
        return;
    }
    let before = ctx.cluster.sandbox();
    match sandbox::ensure(
        ctx.runtime.as_ref(),
        &ctx.node,
        ctx.network.clone(),
        config.service_cidr,
        before.as_ref(),
    )
    .await
    {
        Ok(s) => {
            if before.as_ref() == Some(&s) {
                return;
            }
            tracing::info!(node = %ctx.node, sandbox = %s.ip, cidr = %config.service_cidr, dns = %config.dns_ip, "service sandbox ready: ClusterIPs and cluster DNS are served");
            ctx.cluster.set_sandbox(Some(s));
            // Pods started before (or with another sandbox) are routed again.
            let running = ctx
                .runtime
                .list(&[(crate::runtime::LABEL_NODE.to_string(), ctx.node.clone())])
                .await
                .unwrap_or_default();
            for c in running {
                // Containers in a pod sandbox share its namespace: routed once,
                // through the sandbox.
                if c.labels.contains_key(sandbox::LABEL_ROLE)
                    || c.labels
                        .contains_key(crate::worker::sandbox::LABEL_SANDBOX_ID)
                {
                    continue;
                }
                if let Some(pid) = c.pid {
                    let cluster = ctx.cluster.clone();
                    let _ = tokio::task::spawn_blocking(move || cluster.attach(pid)).await;
                }
            }
        }
        Err(e) => {
            if before.is_some() {
                ctx.cluster.set_sandbox(None);
            }
            if ctx.cluster.failed(&e.to_string()) {
                tracing::warn!(node = %ctx.node, error = %e, "no service sandbox: this node serves node ports only, without ClusterIPs or cluster DNS; retrying every 10 s");
            }
        }
    }
}

/// The listeners the frontends want.
fn wanted(
    ctx: &crate::AgentCtx,
    node_port_ip: Option<IpAddr>,
    frontends: Vec<Frontend>,
) -> Vec<Wanted> {
    let bind_ip = node_port_ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let sandbox = ctx.cluster.sandbox();
    let mut out = Vec::new();
    for f in frontends {
        let f = Arc::new(f);
        if let Some(port) = f.node_port {
            let key = (
                Place::Node,
                Serves::Service,
                f.protocol,
                SocketAddr::new(bind_ip, port),
            );
            out.push((key, Some(f.clone())));
        }
        if let (Some(s), Some(addr)) = (sandbox.as_ref(), f.cluster) {
            out.push((
                (Place::Sandbox(s.pid), Serves::Service, f.protocol, addr),
                Some(f),
            ));
        }
    }
    if let (Some(s), Some(c)) = (sandbox.as_ref(), ctx.cluster.config.as_ref()) {
        let addr = SocketAddr::new(IpAddr::V4(c.dns_ip), 53);
        for protocol in [Protocol::Udp, Protocol::Tcp] {
            out.push(((Place::Sandbox(s.pid), Serves::Dns, protocol, addr), None));
        }
    }
    out
}

/// A socket opened for a listener.
enum Opened {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

fn open(protocol: Protocol, addr: SocketAddr) -> std::io::Result<Opened> {
    let opened = match protocol {
        Protocol::Tcp => {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Opened::Tcp(l)
        }
        Protocol::Udp => {
            let s = std::net::UdpSocket::bind(addr)?;
            s.set_nonblocking(true)?;
            Opened::Udp(s)
        }
    };
    Ok(opened)
}

/// Makes the listeners match `wanted`.
fn apply(
    ctx: &crate::AgentCtx,
    shared: &Arc<Shared>,
    records: &Arc<RwLock<Arc<dns::Records>>>,
    listeners: &mut HashMap<ListenerKey, Listener>,
    wanted: Vec<Wanted>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let local: HashSet<(Protocol, SocketAddr)> = wanted
        .iter()
        .filter_map(|(_, f)| f.as_ref())
        .flat_map(|f| {
            f.endpoints
                .iter()
                .filter(|e| e.route == table::Route::Local)
                .map(|e| (f.protocol, e.addr))
        })
        .collect();
    *shared.local.write().unwrap_or_else(|e| e.into_inner()) = local;
    let endpoints: HashSet<IpAddr> = wanted
        .iter()
        .filter_map(|(_, f)| f.as_ref())
        .flat_map(|f| f.endpoints.iter().map(|e| e.addr.ip()))
        .collect();
    shared.keep_counts_of(&endpoints);
    let keys: HashSet<ListenerKey> = wanted.iter().map(|(k, _)| *k).collect();
    listeners.retain(|key, l| {
        let keep = keys.contains(key);
        if !keep {
            tracing::info!(node = %ctx.node, protocol = key.2.as_str(), addr = %key.3, "closing a Service port");
            l.stop.cancel();
        }
        keep
    });
    // Where the cluster DNS sends names outside the cluster domain.
    let upstream = ctx
        .cluster
        .config
        .as_ref()
        .map(|c| c.upstream.clone())
        .unwrap_or_default();
    // Sockets to open, grouped by where (one trip into each sandbox).
    let mut to_open: HashMap<Place, Vec<Wanted>> = HashMap::new();
    for (key, frontend) in wanted {
        if let Some(l) = listeners.get(&key) {
            if let (Some(slot), Some(f)) = (&l.slot, frontend) {
                *slot.frontend.write().unwrap_or_else(|e| e.into_inner()) = f;
            }
            continue;
        }
        to_open.entry(key.0).or_default().push((key, frontend));
    }
    for (place, batch) in to_open {
        let addrs: Vec<(Protocol, SocketAddr)> = batch.iter().map(|(k, _)| (k.2, k.3)).collect();
        let opened: Vec<std::io::Result<Opened>> = match place {
            Place::Node => addrs.iter().map(|(p, a)| open(*p, *a)).collect(),
            Place::Sandbox(pid) => {
                let n = addrs.len();
                match netns::run_in(pid, move || {
                    addrs.iter().map(|(p, a)| open(*p, *a)).collect::<Vec<_>>()
                }) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(node = %ctx.node, error = %e, "cannot open ClusterIP sockets in the service sandbox");
                        (0..n)
                            .map(|_| Err(std::io::Error::other(e.to_string())))
                            .collect()
                    }
                }
            }
        };
        for ((key, frontend), opened) in batch.into_iter().zip(opened) {
            let (_, serves, protocol, addr) = key;
            let external = key.0 == Place::Node;
            let what = frontend
                .as_ref()
                .map_or("cluster DNS", |f| f.key.as_str())
                .to_string();
            let stop = shutdown.child_token();
            let slot = frontend.map(|f| Arc::new(Slot::new(f)));
            let started = match (opened, serves, &slot) {
                (Ok(Opened::Tcp(l)), Serves::Service, Some(slot)) => {
                    tokio::net::TcpListener::from_std(l).map(|l| {
                        tracker.spawn(tcp::serve(
                            l,
                            slot.clone(),
                            shared.clone(),
                            external,
                            tracker.clone(),
                            stop.clone(),
                        ));
                    })
                }
                (Ok(Opened::Udp(s)), Serves::Service, Some(slot)) => {
                    tokio::net::UdpSocket::from_std(s).map(|s| {
                        tracker.spawn(udp::serve(
                            s,
                            slot.clone(),
                            shared.clone(),
                            external,
                            tracker.clone(),
                            stop.clone(),
                        ));
                    })
                }
                (Ok(Opened::Udp(s)), Serves::Dns, _) => {
                    tokio::net::UdpSocket::from_std(s).map(|s| {
                        tracker.spawn(dns::serve_udp(
                            s,
                            records.clone(),
                            upstream.clone(),
                            tracker.clone(),
                            stop.clone(),
                        ));
                    })
                }
                (Ok(Opened::Tcp(l)), Serves::Dns, _) => {
                    tokio::net::TcpListener::from_std(l).map(|l| {
                        tracker.spawn(dns::serve_tcp(
                            l,
                            records.clone(),
                            upstream.clone(),
                            tracker.clone(),
                            stop.clone(),
                        ));
                    })
                }
                (Ok(_), _, _) => Err(std::io::Error::other("no server for this socket")),
                (Err(e), _, _) => Err(e),
            };
            match started {
                Ok(()) => {
                    tracing::info!(node = %ctx.node, service = %what, protocol = protocol.as_str(), %addr, "serving");
                    listeners.insert(key, Listener { slot, stop });
                }
                Err(e) => {
                    tracing::warn!(node = %ctx.node, service = %what, protocol = protocol.as_str(), %addr, error = %e, "cannot open a Service port; retrying");
                }
            }
        }
    }
}

/// Connects to one endpoint: straight to a pod on this node, through its node's
/// agent otherwise.
async fn connect(endpoint: &table::Endpoint, shared: &Shared) -> Result<tunnel::Stream, String> {
    let result = match &endpoint.route {
        table::Route::Local => {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(endpoint.addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    Ok(Box::new(s) as tunnel::Stream)
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".to_string()),
            }
        }
        table::Route::Via { addr, node } => tunnel::connect(
            shared.tls.as_deref(),
            *addr,
            node,
            Protocol::Tcp,
            endpoint.addr,
            TUNNEL_TIMEOUT,
        )
        .await
        .map_err(|e| e.to_string()),
    };
    match &result {
        Ok(_) => shared.clear_failed(endpoint.addr),
        Err(_) => shared.mark_failed(endpoint.addr),
    }
    result
}

/// Copies both ways until both sides are done (half-closes passed on).
pub(crate) async fn copy_tcp<A, B>(mut a: A, mut b: B)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
}
