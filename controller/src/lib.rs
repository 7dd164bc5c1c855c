//! Tugboat's controller: the only writer of desired state. It holds the store
//! ([`store`]), serves the Kubernetes-style API ([`server`], through the
//! [`registry`]), and runs the reconcilers ([`controllers`]). Everything it knows
//! is in the store, so it can be killed at any moment and restarted with nothing
//! lost.
//!
//! The layers, bottom up:
//!
//! - [`store`]: revisions, compare-and-swap, bounded watch history (redb).
//! - [`registry`]: the one write path (admission, server-set metadata,
//!   subresources, preconditions) with what differs by kind in
//!   [`registry::strategy`], and typed reads and status writes for the
//!   controllers in [`registry::typed`]. JSON lives here and in [`server`].
//! - `source`: the registry as a [`tugboat_runtime::Source`], so every controller
//!   runs on the shared watch-and-reconcile layer ([`tugboat_runtime`]: watcher,
//!   reflector, keyed queue and `Controller`, back-off, event recorder), the same
//!   one the agent uses over HTTP.
//! - [`auth`]: who is asking (client certificates, tokens) and what they may
//!   do (admins, the Node authorizer, namespace-scoped tokens); [`pki`]: the
//!   cluster CA, the serving certificate and the admin kubeconfig.
//! - [`controllers`]: the reconcilers, on k8s-openapi types — Deployment,
//!   ReplicaSet, node lifecycle, event TTL and namespace on
//!   `tugboat_runtime::Controller`; the scheduler as a pass over reflectors; the
//!   garbage collector on the watcher.

pub mod auth;
pub mod controllers;
pub mod events;
pub mod leader;
pub mod managed;
pub mod metrics;
pub mod patch;
pub mod pki;
pub mod registry;
pub mod server;
mod source;
pub mod store;
#[doc(hidden)]
pub mod testing;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::registry::Registry;
use crate::store::Store;
use crate::store::redb::RedbStore;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the store: {0}")]
    Store(#[from] store::StoreError),
    #[error("cannot set up the cluster: {0}")]
    Setup(#[from] tugboat_api::ApiError),
    #[error("the API server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("cannot set up TLS: {0}")]
    Pki(#[from] pki::PkiError),
    #[cfg(feature = "etcd")]
    #[error("cannot share the cluster CA through etcd: {0}")]
    Bootstrap(#[from] store::etcd::BootstrapError),
}

/// Where the controller keeps its state.
#[derive(Clone, Debug, Default)]
pub enum StoreConfig {
    /// `DATA_DIR/tugboat.redb`: one controller, nothing to run beside it.
    #[default]
    Redb,
    /// An etcd cluster, which several controllers may share (`--store
    /// etcd://…`); only the elected leader reconciles.
    #[cfg(feature = "etcd")]
    Etcd(store::etcd::EtcdConfig),
}

/// How the API is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Security {
    /// HTTPS with the cluster CA; client certificates and tokens authenticate.
    /// `extra_sans` (`--tls-san`) are names and addresses the serving
    /// certificate must also be valid for.
    Tls { extra_sans: Vec<String> },
    /// Plain HTTP where every request is an admin's (`--insecure-http`).
    InsecureHttp,
}

impl Default for Security {
    fn default() -> Self {
        Security::Tls {
            extra_sans: Vec::new(),
        }
    }
}

/// The URL clients on this machine use for a controller listening on `addr`:
/// loopback when it listens on every interface.
pub fn client_url(addr: SocketAddr, security: &Security) -> String {
    let addr = if addr.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(loopback, addr.port())
    } else {
        addr
    };
    match security {
        Security::Tls { .. } => format!("https://{addr}"),
        Security::InsecureHttp => format!("http://{addr}"),
    }
}

/// How the controller runs. `Default` gives a working local setup.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the store file (`tugboat.redb`) lives.
    pub data_dir: PathBuf,
    /// How many past writes a watch can resume from.
    pub history: usize,
    /// How many reconciles of one controller may run at once.
    pub concurrency: usize,
    /// A node not heard from (Lease renewal or status heartbeat) for longer than
    /// this, on two consecutive checks half a second apart, is NotReady. Agents
    /// renew every second, so the default of 3 s is three missed heartbeats.
    pub node_grace: Duration,
    /// How long a node is NotReady before its pods are deleted so that their
    /// ReplicaSets replace them elsewhere (Kubernetes' taint-based eviction).
    pub eviction_delay: Duration,
    /// Events older than this are deleted (Kubernetes' default: one hour).
    pub event_ttl: Duration,
    /// How many bytes of past writes (encoded) the history keeps at most, beside
    /// the `history` count.
    pub history_bytes: usize,
    /// Bounds on client connections (header and idle timeouts, connections per
    /// client and in all).
    pub connections: server::ConnLimits,
    /// Writes served at once; more wait their turn, node heartbeats do not
    /// (`--max-mutating-requests-inflight`, default 200 as kube-apiserver).
    pub max_mutating_inflight: usize,
    /// Where Services' cluster IPs come from (`--service-cidr`, default
    /// `10.96.0.0/16`; its first address is kept for the `kubernetes` Service).
    pub service_cidr: registry::services::Ipv4Cidr,
    /// Where NodePort and LoadBalancer Services' node ports come from
    /// (`--service-node-port-range`, default `30000-32767`).
    pub node_port_range: registry::services::PortRange,
    /// HTTPS with authentication (the default) or plain HTTP.
    pub security: Security,
    /// How often the agents are asked for their nodes' and pods' usage
    /// (`--metrics-interval`, default 15 s as metrics-server).
    pub metrics_interval: Duration,
    /// The autoscalers' sync period and whether they may scale to zero
    /// (`--hpa-sync-period`, `--hpa-scale-to-zero`).
    pub hpa: controllers::hpa::Config,
    /// The Job controller's back-off base (`--job-backoff-base`, hidden: 10 s as
    /// Kubernetes; tests shorten it).
    pub job: controllers::job::Config,
    /// The CronJob controller's clock (`--cronjob-minute-seconds`, hidden: a
    /// test aid that makes a schedule's minute last fewer real seconds).
    pub cronjob: controllers::cronjob::Config,
    /// Where the state is kept: redb in `data_dir` (the default) or etcd.
    pub store: StoreConfig,
    /// Leader election among controllers sharing a store (`None`: this
    /// controller is the only one and always reconciles). On by default with
    /// etcd.
    pub leader_election: Option<leader::Timing>,
    /// This controller's name in the election (`--leader-elect-identity`;
    /// default: the host name and a random suffix).
    pub leader_identity: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("tugboat-data"),
            history: store::redb::DEFAULT_HISTORY,
            concurrency: 8,
            node_grace: Duration::from_secs(3),
            eviction_delay: Duration::from_secs(1),
            event_ttl: Duration::from_secs(3600),
            history_bytes: store::redb::DEFAULT_HISTORY_BYTES,
            connections: server::ConnLimits::default(),
            max_mutating_inflight: server::priority::DEFAULT_MAX_MUTATING_INFLIGHT,
            service_cidr: registry::services::Ipv4Cidr::default(),
            node_port_range: registry::services::PortRange::default(),
            security: Security::default(),
            metrics_interval: metrics::DEFAULT_INTERVAL,
            hpa: controllers::hpa::Config::default(),
            job: controllers::job::Config::default(),
            cronjob: controllers::cronjob::Config::default(),
            store: StoreConfig::default(),
            leader_election: None,
            leader_identity: None,
        }
    }
}

/// Opens the store, serves the API on `listener` and runs every controller until
/// `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| Error::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    #[cfg(feature = "etcd")]
    if let StoreConfig::Etcd(etcd) = &config.store {
        let mut etcd = etcd.clone();
        etcd.history = store::redb::History {
            events: config.history,
            bytes: config.history_bytes,
        };
        // Boxed, as the redb path's future is: both in one future made it
        // large enough to overflow a test thread's stack in debug builds.
        let store = Arc::new(Box::pin(store::etcd::EtcdStore::connect(etcd)).await?);
        Box::pin(store.share_cluster_ca(&config.data_dir)).await?;
        return Box::pin(run_with_store(listener, store, config, shutdown)).await;
    }
    let path = config.data_dir.join("tugboat.redb");
    let store = Arc::new(RedbStore::open_with(
        &path,
        store::redb::History {
            events: config.history,
            bytes: config.history_bytes,
        },
    )?);
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(store = %path.display(), revision = store.revision(), ?addr, "controller starting");
    let result = Box::pin(run_with_store(listener, store.clone(), config, shutdown)).await;
    // The file stays locked while anything holds the store: wait (a bounded time)
    // for the last tasks to let go, so a controller started right after this one
    // returns can open it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    // A write whose caller was cancelled finishes on the blocking pool first.
    let held = || Arc::strong_count(&store) > 1 || store.writing();
    while held() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if held() {
        tracing::warn!("tasks still hold the store 5 s after shutdown");
    }
    result
}

/// Like [`run`], on a store the caller opened (an in-memory one in tests).
pub async fn run_with_store(
    listener: TcpListener,
    store: Arc<dyn Store>,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    // With several controllers, only the leader's reconcilers write.
    let leadership = Arc::new(leader::Leadership::new(
        config
            .leader_identity
            .clone()
            .unwrap_or_else(leader::identity),
    ));
    let store: Arc<dyn Store> = match config.leader_election {
        Some(_) => Arc::new(store::fence::FencedStore::new(store, leadership.clone())),
        None => store,
    };
    let registry = Arc::new(Registry::with_network(
        store,
        registry::services::ServiceNetwork {
            cidr: config.service_cidr,
            node_ports: config.node_port_range,
        },
    ));
    if config.leader_election.is_some() {
        registry.set_instance(leadership.identity());
        registry.set_shared();
    }
    for ns in registry::SYSTEM_NAMESPACES {
        store::fence::exempt(registry.ensure_namespace(ns)).await?;
    }
    let (mode, agents, tls) = match &config.security {
        Security::Tls { extra_sans } => {
            let addr = listener.local_addr().map_err(Error::Serve)?;
            let url = client_url(addr, &config.security);
            let pki = pki::Pki::load_or_create(&config.data_dir, addr, extra_sans, &url)?;
            (
                auth::Mode::Tls(pki.ca.clone()),
                server::agents::AgentClients::tls(pki.ca.cert_pem(), pki.controller),
                Some(pki.server),
            )
        }
        Security::InsecureHttp => {
            tracing::warn!(
                "serving plain HTTP (--insecure-http): no TLS, and every request may do everything"
            );
            (
                auth::Mode::InsecureHttp,
                server::agents::AgentClients::plain()?,
                None,
            )
        }
    };
    let tracker = TaskTracker::new();
    let agents = Arc::new(agents);
    let metrics = metrics::Metrics::new(config.metrics_interval);
    tracker.spawn(metrics::run(
        registry.clone(),
        agents.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let activations = Arc::new(controllers::hpa::Activations::default());
    registry.set_scale_to_zero(config.hpa.scale_to_zero);
    let autoscaling = controllers::Autoscaling {
        metrics: metrics.clone(),
        activations: activations.clone(),
    };
    match config.leader_election {
        None => controllers::spawn_all(
            &tracker,
            registry.clone(),
            &config,
            autoscaling,
            shutdown.clone(),
        ),
        Some(timing) => {
            let registry = registry.clone();
            let config = config.clone();
            tracker.spawn(leader::run(
                registry.clone(),
                timing,
                leadership,
                shutdown.clone(),
                move |token| {
                    let leading = TaskTracker::new();
                    controllers::spawn_all(
                        &leading,
                        registry.clone(),
                        &config,
                        autoscaling.clone(),
                        token,
                    );
                    leading
                },
            ));
        }
    }
    tracker.close();
    let state = Arc::new(server::AppState {
        auth: Arc::new(auth::Auth::new(mode, registry.clone())),
        registry,
        agents,
        metrics,
        activations,
        tls,
        shutdown: shutdown.clone(),
        conn_limits: config.connections,
        write_slots: server::priority::WriteSlots::new(config.max_mutating_inflight),
    });
    let served = server::serve(listener, state).await;
    shutdown.cancel();
    tracker.wait().await;
    tracing::info!("controller stopped");
    served.map_err(Error::Serve)
}
