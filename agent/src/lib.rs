//! Tugboat's node agent: registers its Node, keeps it alive with a Lease, runs the
//! pods bound to it through a [`runtime::ContainerRuntime`] (Docker via bollard, or
//! the in-memory fake for hollow nodes), reports their status and serves their logs.
//!
//! Fail-static: stopping the agent never stops a workload. On start it first removes
//! the containers whose pod is gone or bound elsewhere ([`fence`]), then adopts the
//! rest: a pod's worker finds its containers by their labels.
//!
//! Where things are:
//! - [`node`]: registration, the Lease heartbeat and the Node's status;
//! - [`pods`]: the watch of this node's pods (on `tugboat_runtime`'s watcher), one
//!   worker per pod, Docker's events poking them;
//! - [`worker`]: one pod's loop — [`worker::plan`] (each container's phase and next
//!   step), [`worker::status`] (the typed pod status), [`worker::act`] (the runtime
//!   I/O); [`probe`] runs the probes it reads;
//! - [`sink`]: where workers write status, releases and events (the API over HTTP);
//! - [`runtime`]: the container engine trait, Docker and the in-memory fake;
//! - [`metrics`]: the node's, its pods' and its endpoints' usage figures, from
//!   the engine's stats streams, `/proc` and the Service proxy's counters;
//! - [`server`]: container logs and usage figures for the controller; [`image`]:
//!   the sample image;
//! - [`join`]: joining with a token and keeping the node's credential;
//!   [`tls`]: that credential at run time (the API client, the agent's
//!   endpoints, connections to peers).
//!
//! Every task runs on the agent's `TaskTracker` and stops on its shutdown token.

pub mod image;
pub mod join;
pub mod metrics;
pub mod node;
pub mod objects;
pub mod pods;
pub mod probe;
pub mod proxy;
pub mod runtime;
pub mod server;
pub mod sink;
pub mod stream;
pub mod tls;
pub mod worker;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tugboat_api::resource::PODS;
use tugboat_api::{Client, ClientError, ListParams, meta};
use tugboat_runtime::Backoff;

use crate::runtime::{ContainerRuntime, LABEL_NODE, LABEL_POD_UID, RuntimeError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid agent configuration: {0}")]
    Config(String),
    #[error("the container runtime failed: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("cannot talk to the controller: {0}")]
    Api(#[from] ClientError),
    #[error("cannot listen for log requests on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// How an agent runs. `Config::new(server, node)` gives the defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// The controller's URL.
    pub server: String,
    /// The node's credential (see [`join::load_or_join`]); `None` only against
    /// a controller serving plain HTTP (`--insecure-http`), where the agent's
    /// endpoints are plain HTTP too.
    pub credential: Option<Arc<tls::NodeTls>>,
    /// This node's name (a DNS-1123 subdomain).
    pub node_name: String,
    /// Where the agent serves logs to the controller.
    pub listen: SocketAddr,
    /// The address published as the node's InternalIP.
    pub address: String,
    /// How often the node's Lease is renewed.
    pub heartbeat: Duration,
    /// Crash-loop back-off: first delay (doubling)…
    pub backoff_initial: Duration,
    /// …up to this cap.
    pub backoff_max: Duration,
    /// Pods this node takes.
    pub max_pods: i64,
    /// Docker network for pod containers (`None`: the default bridge).
    pub network: Option<String>,
    /// CPU (millicores) and memory (bytes) held back from pods.
    pub reserved_cpu_millis: i64,
    pub reserved_memory: i64,
    /// Report this many CPUs / bytes instead of what Docker says (simulated nodes of
    /// different sizes on one machine).
    pub cpus_override: Option<i64>,
    pub memory_override: Option<i64>,
    /// The host address `hostPort`s are published on when a pod names none
    /// (`None`: every interface, as Kubernetes does). Agents sharing one Docker
    /// host as separate nodes each get their own.
    pub host_port_ip: Option<String>,
    /// The port of the Service tunnel other nodes' proxies connect to (on the
    /// `listen` IP; 0: any free port, published on the Node).
    pub proxy_port: u16,
    /// ClusterIPs and cluster DNS on this node (`None`: node ports only). Needs
    /// Docker, root and the host's /proc (see [`proxy::sandbox`]).
    pub cluster: Option<proxy::cluster::ClusterConfig>,
    /// Bounds on the log server's connections (header and idle timeouts,
    /// connections per client): anything on the node's network can reach it.
    pub connections: tugboat_serve::ConnLimits,
    /// The image (and command) of every pod's sandbox, the container holding
    /// the pod's network namespace (`--pod-infra-image`).
    pub pod_infra: worker::sandbox::PodInfra,
    /// The agent's state directory: pods' volumes live under `pods/` in it
    /// (`None`: a directory named after the node in the system's temp dir).
    pub state_dir: Option<std::path::PathBuf>,
    /// Runs the node's share of the Service data plane (watching Services,
    /// EndpointSlices and Nodes). Off only for hollow nodes in scale tests,
    /// which simulate the kubelet's work and not kube-proxy's.
    pub service_proxy: bool,
}

impl Config {
    pub fn new(server: &str, node_name: &str) -> Self {
        Config {
            server: server.to_string(),
            credential: None,
            node_name: node_name.to_string(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            address: "127.0.0.1".to_string(),
            heartbeat: Duration::from_secs(1),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            max_pods: 110,
            network: None,
            reserved_cpu_millis: 0,
            reserved_memory: 0,
            cpus_override: None,
            memory_override: None,
            host_port_ip: None,
            proxy_port: 0,
            cluster: None,
            connections: tugboat_serve::ConnLimits::default(),
            pod_infra: worker::sandbox::PodInfra::default(),
            state_dir: None,
            service_proxy: true,
        }
    }
}

/// What every part of a running agent shares.
pub struct AgentCtx {
    pub node: String,
    pub address: String,
    pub client: Client,
    pub runtime: Arc<dyn ContainerRuntime>,
    /// Where workers write pod status, releases and events.
    pub sink: Arc<dyn sink::PodSink>,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub network: Option<String>,
    pub host_port_ip: Option<String>,
    /// The Service network as pods see it (resolv.conf, Service variables, the
    /// route to the sandbox).
    pub cluster: Arc<proxy::cluster::ClusterNet>,
    /// For HTTP probes: no connection reuse, as each probe is a fresh request.
    pub http: reqwest::Client,
    /// The node's credential, for its endpoints and for connecting to peers.
    pub tls: Option<Arc<tls::NodeTls>>,
    /// What the node's Service proxy routes by (pod workers wait on it to
    /// drain a terminating pod).
    pub proxy: Arc<proxy::Shared>,
    /// The usage figures the controller scrapes (Docker's events feed it).
    pub metrics: Arc<metrics::Collector>,
    /// The sandboxes' image and command.
    pub pod_infra: worker::sandbox::PodInfra,
    /// Where the ConfigMaps and Secrets of pods come from.
    pub objects: Arc<dyn objects::ObjectSource>,
    /// Where pods' volumes live: `<this>/<pod uid>/volumes/…`.
    pub pods_dir: std::path::PathBuf,
    /// Images the engine is known to hold (checked once, not per pod start).
    pub images: worker::images::PresentImages,
    /// The engine's machine as it reported it (read once, for `resourceFieldRef`s).
    pub host: tokio::sync::OnceCell<runtime::HostInfo>,
}

/// Where pods' volumes live for an agent with `config`.
pub fn pods_dir(config: &Config) -> std::path::PathBuf {
    match &config.state_dir {
        Some(d) => d.join("pods"),
        None => std::env::temp_dir()
            .join(format!("tugboat-agent-{}", config.node_name))
            .join("pods"),
    }
}

/// Runs the agent until `shutdown`; containers are left running when it stops.
pub async fn run(
    config: Config,
    runtime: Arc<dyn ContainerRuntime>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    if let Some(why) = tugboat_api::validation::dns1123_subdomain(&config.node_name) {
        return Err(Error::Config(format!(
            "node name {:?}: {why}",
            config.node_name
        )));
    }
    let creds = config
        .credential
        .as_ref()
        .map(|c| c.credentials())
        .unwrap_or_default();
    let client = Client::with_credentials(&config.server, &creds)?;
    let mut config = config;
    if config.address == "auto" {
        config.address = route_address(&config.server)?;
        tracing::info!(address = %config.address, "published address chosen by the route to the controller");
    }
    let engine_host = runtime.host_info().await?;
    let mut host = engine_host.clone();
    if let Some(cpus) = config.cpus_override {
        host.cpus = cpus;
    }
    if let Some(memory) = config.memory_override {
        host.memory_bytes = memory;
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    // Other nodes' proxies reach this node's Service endpoints here, at the
    // node's address: on the log server's IP, any port (published on the Node).
    let tunnel_addr = SocketAddr::new(config.listen.ip(), config.proxy_port);
    let tunnel = TcpListener::bind(tunnel_addr)
        .await
        .map_err(|source| Error::Listen {
            addr: tunnel_addr,
            source,
        })?;
    let proxy_port = tunnel.local_addr().map(|a| a.port()).unwrap_or(0);
    // Every task of the agent runs on this tracker, and the agent waits for them.
    let tracker = TaskTracker::new();
    let services = tugboat_runtime::reflector::Writer::new();
    let (collector, collector_inbox) =
        metrics::Collector::new(&config.node_name, runtime.node_figures());
    let ctx = Arc::new(AgentCtx {
        cluster: Arc::new(proxy::cluster::ClusterNet::new(
            config.cluster.clone(),
            services.store(),
        )),
        node: config.node_name.clone(),
        address: config.address.clone(),
        client: client.clone(),
        runtime: runtime.clone(),
        sink: Arc::new(sink::ApiSink {
            client: client.clone(),
            events: tugboat_runtime::events::Recorder::new(
                Arc::new(client.clone()),
                tugboat_runtime::events::Reporter::agent(&config.node_name),
            )
            .queued(&tracker, shutdown.clone()),
        }),
        backoff_initial: config.backoff_initial,
        backoff_max: config.backoff_max,
        network: config.network.clone(),
        host_port_ip: config.host_port_ip.clone(),
        // HTTPS probes do not check the pod's certificate, as the kubelet's do
        // not (and a `FROM scratch` agent has no system roots to check with).
        http: reqwest::Client::builder()
            .use_preconfigured_tls(
                tugboat_tls::config::client_config(
                    None,
                    None,
                    tugboat_tls::config::ServerCheck::Nothing,
                )
                .map_err(|e| Error::Config(format!("TLS for probes: {e}")))?,
            )
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::limited(10))
            .build()
            .map_err(|e| Error::Config(format!("cannot set up the HTTP client for probes: {e}")))?,
        tls: config.credential.clone(),
        proxy: Arc::new(proxy::Shared::with_tls(config.credential.clone())),
        metrics: collector.clone(),
        pod_infra: config.pod_infra.clone(),
        objects: Arc::new(objects::ApiObjects {
            client: client.clone(),
        }),
        pods_dir: pods_dir(&config),
        images: Default::default(),
        host: tokio::sync::OnceCell::new_with(Some(engine_host)),
    });
    let identity = node::NodeIdentity {
        name: config.node_name.clone(),
        address: config.address.clone(),
        port,
        proxy_port,
        host,
        max_pods: config.max_pods,
        reserved_cpu_millis: config.reserved_cpu_millis,
        reserved_memory: config.reserved_memory,
    };
    // The controller may not be up yet (or be restarting): wait for it, with back-off,
    // without touching any container.
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match node::register(&client, &identity).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(node = %config.node_name, error = %e, "cannot register the node yet; retrying");
                if !backoff.wait(&shutdown).await {
                    return Ok(());
                }
            }
        }
    }
    // Heartbeats first: fencing can take as long as its slowest container stop,
    // and a node silent for that long would be found lost and its pods evicted.
    tracker.spawn(node::heartbeat(
        client.clone(),
        identity,
        config.heartbeat,
        shutdown.clone(),
    ));
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match fence(&ctx).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(node = %config.node_name, error = %e, "cannot check this node's containers against its pods yet; retrying");
                if !backoff.wait(&shutdown).await {
                    tracker.close();
                    tracker.wait().await;
                    return Ok(());
                }
            }
        }
    }
    tracing::info!(node = %config.node_name, server = %config.server, logs_port = port, "agent running");
    // The service sandbox before any pod starts, so pods get the cluster DNS.
    if config.service_proxy {
        proxy::check_sandbox(&ctx).await;
    }
    tracker.spawn(pods::run(ctx.clone(), tracker.clone(), shutdown.clone()));
    tracker.spawn(metrics::run(
        collector,
        runtime.clone(),
        collector_inbox,
        tracker.clone(),
        shutdown.clone(),
    ));
    let node_port_ip = match config.host_port_ip.as_deref() {
        Some(ip) => Some(ip.parse().map_err(|_| {
            Error::Config(format!("--host-port-ip {ip:?}: expected an IP address"))
        })?),
        None => None,
    };
    if config.service_proxy {
        tracker.spawn(proxy::run(
            ctx.clone(),
            node_port_ip,
            services,
            tunnel,
            tracker.clone(),
            shutdown.clone(),
        ));
    }
    let serve_ctx = ctx.clone();
    let serve_shutdown = shutdown.clone();
    let connections = config.connections;
    tracker.spawn(async move {
        if let Err(e) = server::serve(listener, serve_ctx, connections, serve_shutdown).await {
            tracing::error!(error = %e, "the agent's log server failed");
        }
    });
    tracker.close();
    tracker.wait().await;
    tracing::info!(node = %config.node_name, "agent stopped; its containers keep running");
    Ok(())
}

/// The local address this host uses to reach the controller (what a node behind a
/// network should publish as its InternalIP). A UDP "connect" sends nothing.
fn route_address(server: &str) -> Result<String, Error> {
    // Of several controllers, the first: they share the agent's network.
    let server = server.split(',').next().unwrap_or(server).trim();
    let rest = server.split_once("://").map(|(_, r)| r).unwrap_or(server);
    let authority = rest.split('/').next().unwrap_or(rest);
    let target = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")
        .map_err(|e| Error::Config(format!("--address auto: {e}")))?;
    socket.connect(&target).map_err(|e| {
        Error::Config(format!(
            "--address auto: no route to the controller at {target}: {e}"
        ))
    })?;
    let ip = socket
        .local_addr()
        .map_err(|e| Error::Config(format!("--address auto: {e}")))?
        .ip();
    Ok(ip.to_string())
}

/// Before anything else: removes this node's containers whose pod no longer exists
/// or is bound to another node (deleted or moved while the agent was away).
pub async fn fence(ctx: &AgentCtx) -> Result<(), Error> {
    let params = ListParams {
        field_selector: Some(format!("spec.nodeName={}", ctx.node)),
        ..Default::default()
    };
    let list = ctx.client.list_lenient(&PODS, None, &params).await?;
    if !list.undecodable.is_empty() {
        // A pod that cannot be read cannot be told apart from one that is gone:
        // remove nothing rather than a container that may still be wanted.
        tracing::warn!(
            node = %ctx.node,
            unreadable = list.undecodable.len(),
            first = %list.undecodable[0],
            "some of this node's pods cannot be read; not removing any container at start"
        );
        return Ok(());
    }
    let bound: HashSet<String> = list
        .items
        .iter()
        .filter_map(|p| meta::uid(p).map(str::to_string))
        .collect();
    let containers = ctx
        .runtime
        .list(&[(LABEL_NODE.to_string(), ctx.node.clone())])
        .await?;
    let mut removed = 0;
    // Pod sandboxes last: the containers in their network go first.
    let mut containers = containers;
    containers.sort_by_key(worker::sandbox::is_sandbox);
    for c in containers {
        // The node's own infrastructure (the service sandbox) belongs to no pod.
        if c.labels.contains_key(proxy::sandbox::LABEL_ROLE) {
            continue;
        }
        let uid = c.labels.get(LABEL_POD_UID).cloned().unwrap_or_default();
        if bound.contains(&uid) {
            continue;
        }
        tracing::info!(node = %ctx.node, container = %c.name, "removing a container whose pod is gone or bound elsewhere");
        if c.state.running {
            let _ = ctx.runtime.stop(&c.id, Duration::from_secs(10)).await;
        }
        ctx.runtime.remove(&c.id).await?;
        removed += 1;
    }
    if removed > 0 {
        tracing::info!(node = %ctx.node, removed, "fenced stale containers");
    }
    Ok(())
}
