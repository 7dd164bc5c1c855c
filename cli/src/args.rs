//! Every flag and argument `tug` accepts, as clap derive structs: one place to read the
//! whole command line. The verbs that act on them live in `commands/`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// tug: the Tugboat command line. Speaks the Kubernetes API, so its verbs are kubectl's.
#[derive(Debug, Parser)]
#[command(name = "tug", version, about, propagate_version = true)]
pub struct Cli {
    /// API server URL, replacing the kubeconfig's (also $TUG_SERVER); several
    /// controllers of one cluster as `https://a:6443,https://b:6443`, tried in
    /// turn when one cannot be reached.
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,

    /// The kubeconfig to use, as kubectl's flag. Without it: $KUBECONFIG, then
    /// the one the local `tug controller`/`tug up` recorded, then ~/.kube/config.
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,

    /// tug's client config file, where a local controller records its address
    /// and kubeconfig. Without it: $TUG_CONFIG, then
    /// $XDG_CONFIG_HOME/tugboat/config.json, then ~/.config/tugboat/config.json.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Namespace for namespaced objects (default: `default`).
    #[arg(short = 'n', long, global = true, value_name = "NS")]
    pub namespace: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller: the API server, the store and the reconcilers.
    Controller(Box<ControllerArgs>),
    /// Create or update objects from manifests (client-side apply, like kubectl).
    Apply(ApplyArgs),
    /// List objects or show some by name.
    Get(GetArgs),
    /// Show one object in detail, with its events.
    Describe(DescribeArgs),
    /// Set the number of replicas of a deployment or replica set.
    Scale(ScaleArgs),
    /// Create a HorizontalPodAutoscaler for a deployment or replica set: its
    /// replicas follow the load between --min and --max.
    Autoscale(AutoscaleArgs),
    /// Show the current CPU and memory use of nodes or pods.
    Top(TopArgs),
    /// Delete objects by name or from manifests.
    Delete(DeleteArgs),
    /// Create an object from arguments.
    Create(CreateArgs),
    /// Mark a node unschedulable: new pods go elsewhere, running ones stay.
    Cordon(CordonArgs),
    /// Mark a node schedulable again.
    Uncordon(CordonArgs),
    /// Cordon a node, then evict its pods so their controllers run them elsewhere.
    Drain(DrainArgs),
    /// Print the client and server versions.
    Version(VersionArgs),
    /// Run a node agent: registers a Node and runs the pods bound to it on Docker.
    Agent(AgentArgs),
    /// A whole local cluster in one process: the controller plus N agents on the
    /// local Docker (the quick start).
    Up(UpArgs),
    /// Print the logs of a pod's container (or of the first pod of a Job,
    /// Deployment or ReplicaSet: `job/NAME`).
    Logs(LogsArgs),
    /// Wait until objects meet a condition (`--for=condition=complete`,
    /// `--for=delete`) or the timeout passes.
    Wait(WaitArgs),
    /// Stream or list events (`tug get events`, with `-w` to watch).
    Events(EventsArgs),
    /// Wait until stopped (what the node's service sandbox container runs).
    #[command(hide = true)]
    Pause,
    /// Remove what a local cluster left behind: every container Tugboat created on
    /// this Docker engine, and the controller's data directory.
    Down(DownArgs),
    /// Print the admin kubeconfig of the local controller, or merge it into
    /// ~/.kube/config as context `tugboat` (--merge).
    Kubeconfig(KubeconfigArgs),
    /// Create, list and delete join tokens (for new nodes) and API tokens (for
    /// automation, bound to a namespace and role).
    Token(TokenArgs),
    /// Manage a deployment's rollout: status, history, undo, restart, pause, resume.
    Rollout(RolloutArgs),
    /// Update a deployment's pod template: container images, environment.
    Set(SetArgs),
    /// Show what `tug apply -f` would change, as a unified diff. Exit status: 0
    /// no differences, 1 differences found, greater than 1 an error.
    Diff(DiffArgs),
    /// Run a command in a pod's container: `tug exec POD -- COMMAND [ARGS...]`.
    Exec(ExecArgs),
    /// Forward local ports to a pod (or a Service's or Deployment's pod).
    PortForward(PortForwardArgs),
    /// Copy files to and from a pod's container: `tug cp FILE POD:PATH`,
    /// `tug cp POD:PATH FILE` (the container needs tar).
    Cp(CpArgs),
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The pod (or `pod/NAME`, `deploy/NAME`, `svc/NAME`: one of its running pods).
    #[arg(value_name = "POD")]
    pub pod: String,

    /// The container (default: the pod's default or first one).
    #[arg(short = 'c', long, value_name = "NAME")]
    pub container: Option<String>,

    /// Pass stdin to the command.
    #[arg(short = 'i', long)]
    pub stdin: bool,

    /// Give the command a terminal (with -i, for a shell).
    #[arg(short = 't', long)]
    pub tty: bool,

    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PortForwardArgs {
    /// `POD`, `pod/NAME`, `svc/NAME` or `deploy/NAME`.
    #[arg(value_name = "TARGET")]
    pub target: String,

    /// `[LOCAL:]REMOTE`: `8080`, `9000:8080`, `:8080` (any free local port).
    #[arg(value_name = "PORTS", required = true)]
    pub ports: Vec<String>,

    /// The local address to listen on.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub address: String,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// A local path, or `[NAMESPACE/]POD:PATH`.
    #[arg(value_name = "SRC")]
    pub src: String,

    /// A local path, or `[NAMESPACE/]POD:PATH`.
    #[arg(value_name = "DEST")]
    pub dest: String,

    /// The container (default: the pod's default or first one).
    #[arg(short = 'c', long, value_name = "NAME")]
    pub container: Option<String>,
}

#[derive(Debug, Args)]
pub struct RolloutArgs {
    #[command(subcommand)]
    pub what: RolloutCommand,
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Show the status of the rollout, watching it until it is done.
    Status(RolloutStatusArgs),
    /// List the revisions of a deployment (its replica sets), or show one.
    History(RolloutHistoryArgs),
    /// Roll back to a previous revision (by default the one before the current).
    Undo(RolloutUndoArgs),
    /// Restart every pod by a rolling update (a new template annotation).
    Restart(RolloutTargets),
    /// Mark a deployment paused: template changes do not roll out until resumed.
    Pause(RolloutTargets),
    /// Resume a paused deployment.
    Resume(RolloutTargets),
}

/// `deployment/NAME…`, or `deployment NAME…`.
#[derive(Debug, Args)]
pub struct RolloutTargets {
    #[arg(required = true, value_name = "TYPE[/NAME]")]
    pub targets: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RolloutStatusArgs {
    /// `deployment/NAME` or `deployment NAME` (`deploy` works too).
    #[arg(required = true, value_name = "TYPE[/NAME]")]
    pub targets: Vec<String>,

    /// Watch the status of the rollout until it's done; `--watch=false` prints it
    /// once and exits 0 whatever it says.
    #[arg(
        short = 'w',
        long,
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub watch: bool,

    /// How long to wait before giving up (`2s`, `5m`, `1m30s`); 0 waits as long
    /// as it takes.
    #[arg(long, default_value = "0s", value_parser = crate::duration::parse_flag, value_name = "DURATION")]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct RolloutHistoryArgs {
    /// `deployment/NAME` or `deployment NAME`.
    #[arg(required = true, value_name = "TYPE[/NAME]")]
    pub targets: Vec<String>,

    /// Show the pod template of this revision.
    #[arg(long, allow_negative_numbers = true, value_name = "N")]
    pub revision: Option<i64>,
}

#[derive(Debug, Args)]
pub struct RolloutUndoArgs {
    /// `deployment/NAME` or `deployment NAME`.
    #[arg(required = true, value_name = "TYPE[/NAME]")]
    pub targets: Vec<String>,

    /// The revision to roll back to; 0: the one before the current.
    #[arg(
        long,
        default_value_t = 0,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub to_revision: i64,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    #[command(subcommand)]
    pub what: SetCommand,
}

#[derive(Debug, Subcommand)]
pub enum SetCommand {
    /// Set containers' images: `tug set image deployment/web web=tugboat/sample:2`
    /// (`*=IMAGE` for every container).
    Image(SetImageArgs),
    /// Set or remove environment variables: `tug set env deployment/web A=1 B-`.
    Env(SetEnvArgs),
}

#[derive(Debug, Args)]
pub struct SetImageArgs {
    /// `deployment/NAME` (or `deployment NAME`), then `CONTAINER=IMAGE` pairs.
    #[arg(required = true, value_name = "TYPE[/NAME] CONTAINER=IMAGE")]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SetEnvArgs {
    /// `deployment/NAME` (or `deployment NAME`), then `KEY=VALUE` to set and
    /// `KEY-` to remove.
    #[arg(required = true, value_name = "TYPE[/NAME] KEY=VALUE|KEY-")]
    pub args: Vec<String>,

    /// The containers to change (a name, or a glob such as `web*`); default all.
    #[arg(short = 'c', long, default_value = "*", value_name = "NAME")]
    pub containers: String,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Manifest file, directory of .yaml/.yml/.json files, or `-` for stdin. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub filenames: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// Merge it into the kubeconfig (--kubeconfig, else the first file of
    /// $KUBECONFIG, else ~/.kube/config) as context `tugboat`, and make that the
    /// current context.
    #[arg(long)]
    pub merge: bool,

    /// The controller's data directory (default: $XDG_DATA_HOME/tugboat or
    /// ~/.local/share/tugboat).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub what: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (its secret is shown only now). Without
    /// --role: a join token for `tug agent --token`. With --role: an API token
    /// for `Authorization: Bearer` (a kubeconfig `token:`), acting in the
    /// namespace given with -n.
    Create {
        /// How long it is valid (`24h`, `30m`, `7d` as `168h`; `0`: never expires).
        #[arg(long, default_value = "24h", value_parser = crate::duration::parse_flag, value_name = "DURATION")]
        ttl: std::time::Duration,

        /// A note shown by `tug token list`.
        #[arg(long, default_value = "", value_name = "TEXT")]
        description: String,

        /// Make an API token with this role in the namespace (-n): `view`
        /// (get, list, watch, logs) or `edit` (everything on its objects).
        #[arg(long, value_name = "ROLE")]
        role: Option<String>,
    },
    /// List the tokens (never their secrets).
    List,
    /// Delete tokens by ID; a join token can no longer be used to join, an API
    /// token no longer authenticates.
    Delete {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Events of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,

    /// Keep printing events as they happen.
    #[arg(short = 'w', long)]
    pub watch: bool,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// The data directory (default: $XDG_DATA_HOME/tugboat or
    /// ~/.local/share/tugboat): where `tug up -d` left its pid file; removed
    /// with --purge.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Also remove every container Tugboat created on this Docker engine and the
    /// data directory (without it the cluster only stops, and the next `tug up`
    /// adopts what it left).
    #[arg(long)]
    pub purge: bool,

    /// The Docker engine; default: DOCKER_HOST or the local socket.
    #[arg(long, value_name = "URI")]
    pub docker: Option<String>,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// This node's name.
    #[arg(long = "node", value_name = "NAME")]
    pub node: String,

    /// A join token (`tug token create` on the controller) for the first start;
    /// later starts use the credential kept in the state directory.
    #[arg(long, env = "TUG_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,

    /// Where the node keeps its credential (node.kubeconfig); default:
    /// $XDG_DATA_HOME/tugboat/agents/NAME or ~/.local/share/tugboat/agents/NAME.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// The Docker engine (`unix:///var/run/docker.sock`, `tcp://host:2375`); default:
    /// DOCKER_HOST or the local socket.
    #[arg(long, value_name = "URI")]
    pub docker: Option<String>,

    /// Where the agent serves its endpoints (logs for the controller, the
    /// Service tunnel for other nodes; mutual TLS with the node's credential);
    /// default 0.0.0.0 on any free port (published on the Node), or 127.0.0.1
    /// against a controller serving plain HTTP.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// The address published as the node's InternalIP (how the controller and
    /// other nodes reach this agent); `auto`: the one this host reaches the
    /// controller from.
    #[arg(long, default_value = "auto", value_name = "IP")]
    pub address: String,

    /// Seconds between heartbeats (Lease renewals).
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub heartbeat: f64,

    /// First crash-loop back-off delay in seconds (doubling from there).
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub backoff_initial: f64,

    /// Longest crash-loop back-off delay in seconds.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub backoff_max: f64,

    /// How many pods this node takes.
    #[arg(long, default_value_t = 110, value_name = "N")]
    pub max_pods: i64,

    /// How many container creates and starts the agent has in flight at once (the
    /// engine answers each later past a few at a time).
    #[arg(long, default_value_t = tugboat_agent::runtime::docker::CREATE_CONCURRENCY, value_name = "N")]
    pub create_concurrency: usize,

    /// CPU held back from pods (a quantity: `500m`, `1`).
    #[arg(long, value_name = "CPU")]
    pub reserve_cpu: Option<String>,

    /// Memory held back from pods (a quantity: `512Mi`, `1Gi`).
    #[arg(long, value_name = "MEMORY")]
    pub reserve_memory: Option<String>,

    /// Report this many CPUs instead of the machine's (simulated nodes of different
    /// sizes on one machine).
    #[arg(long, value_name = "N")]
    pub cpus: Option<i64>,

    /// Report this much memory instead of the machine's (a quantity: `2Gi`).
    #[arg(long, value_name = "MEMORY")]
    pub memory: Option<String>,

    /// Publish `hostPort`s on this address when a pod names none (default: every
    /// interface). Lets several agents share one Docker host as separate nodes.
    #[arg(long, value_name = "IP")]
    pub host_port_ip: Option<String>,

    /// Port of the Service tunnel other nodes' proxies reach this node's endpoints
    /// through, on the `--listen` IP (0: any free port; published on the Node).
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    pub proxy_port: u16,

    /// The Service range; must be the controller's `--service-cidr`.
    #[arg(long, default_value = "10.96.0.0/16", value_name = "CIDR")]
    pub service_cidr: String,

    /// The image of every pod's sandbox (the container holding the pod's
    /// network namespace). The default is built at start from this `tug`
    /// binary (`tug pause`); the sample image runs its `pause` command, any
    /// other image its own.
    #[arg(long, default_value = tugboat_agent::proxy::sandbox::SANDBOX_IMAGE, value_name = "IMAGE")]
    pub pod_infra_image: String,

    #[command(flatten)]
    pub cluster: ClusterNetArgs,
}

/// How an agent serves ClusterIPs and the cluster DNS.
#[derive(Debug, Args, Clone)]
pub struct ClusterNetArgs {
    /// Where the cluster DNS forwards names outside the cluster domain (IP or
    /// IP:PORT, repeatable); default: the name servers of /etc/resolv.conf.
    #[arg(long = "dns-upstream", value_name = "ADDR")]
    pub dns_upstream: Vec<String>,

    /// Serve node ports only: no service sandbox, no ClusterIPs, no cluster DNS.
    #[arg(long)]
    pub no_cluster_ip: bool,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// How many agents (nodes `node-1`..`node-N`).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub agents: usize,

    /// Address to serve the API on.
    #[arg(long, default_value = "127.0.0.1:6443", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Where the store keeps its data (default: $XDG_DATA_HOME/tugboat or
    /// ~/.local/share/tugboat).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// The Docker engine; default: DOCKER_HOST or the local socket.
    #[arg(long, value_name = "URI")]
    pub docker: Option<String>,

    /// Rebuild the sample image even if it exists.
    #[arg(long)]
    pub rebuild_image: bool,

    /// Do not merge the admin kubeconfig into ~/.kube/config.
    #[arg(long)]
    pub no_kubeconfig: bool,

    /// Run in the background: return once every node is Ready, logging to
    /// DATA_DIR/tug-up.log (`tug down` stops it).
    #[arg(short = 'd', long)]
    pub detach: bool,

    #[command(flatten)]
    pub security: SecurityArgs,

    #[command(flatten)]
    pub tuning: ControllerTuning,

    #[command(flatten)]
    pub cluster: ClusterNetArgs,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The pod (or `pod/NAME`), or `job/NAME`, `deploy/NAME`, `rs/NAME`: the
    /// first of their pods.
    #[arg(value_name = "POD")]
    pub pod: String,

    /// The container (needed when the pod has several).
    #[arg(short = 'c', long, value_name = "NAME")]
    pub container: Option<String>,

    /// Keep streaming new output.
    #[arg(short = 'f', long)]
    pub follow: bool,

    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<i64>,

    /// The previous (dead) instance's output.
    #[arg(short = 'p', long)]
    pub previous: bool,

    /// Prefix each line with its time.
    #[arg(long)]
    pub timestamps: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ControllerArgs {
    #[command(subcommand)]
    pub command: Option<ControllerCommand>,

    /// Address to serve the API on (HTTPS, every request authenticated); default
    /// 0.0.0.0:6443, or 127.0.0.1:6443 with --insecure-http.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Where the store keeps its data (default: $XDG_DATA_HOME/tugboat or
    /// ~/.local/share/tugboat).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    #[command(flatten)]
    pub security: SecurityArgs,

    #[command(flatten)]
    pub tuning: ControllerTuning,

    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Subcommand)]
pub enum ControllerCommand {
    /// Copy every object of a stopped controller's redb store into etcd (empty
    /// under the prefix), with the cluster CA, then check that all arrived:
    /// the way from one controller to several. Stop the controller first.
    Migrate {
        /// `redb:DIR` (the controller's --data-dir, or its tugboat.redb file).
        #[arg(long, value_name = "redb:PATH")]
        from: String,

        /// `etcd://HOST:PORT[,HOST:PORT…]`, with the --etcd-* flags below.
        #[arg(long, value_name = "URL")]
        to: String,

        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Where the controller keeps its state, and the election among controllers
/// sharing it.
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// Where the state is kept: `redb` (the default: a file in --data-dir, one
    /// controller), or `etcd://HOST:PORT[,HOST:PORT…]`, an etcd cluster that
    /// several controllers share (each serves the API; the elected leader
    /// reconciles). Needs a tug built with `--features etcd`.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,

    /// The key prefix in etcd; clusters sharing one etcd need different ones.
    #[arg(long, default_value = "/tugboat", value_name = "PREFIX")]
    pub etcd_prefix: String,

    /// The CA certificate (PEM) etcd's serving certificates are signed by;
    /// turns on TLS to etcd.
    #[arg(long, value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,

    /// This controller's client certificate for etcd (PEM; with --etcd-key).
    #[arg(long, value_name = "FILE", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,

    /// The key of --etcd-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,

    /// Seconds between compactions of etcd's history (0: never).
    #[arg(long, default_value_t = 300.0, value_name = "SECS")]
    pub etcd_compaction_interval: f64,

    /// Elect a leader among the controllers sharing the store (default: on
    /// with etcd; a redb store has one controller).
    #[arg(long, value_name = "BOOL")]
    pub leader_elect: Option<bool>,

    /// Seconds a standby waits, from the last change it saw of the leader's
    /// lease, before it takes over.
    #[arg(long, default_value_t = 15.0, value_name = "SECS")]
    pub leader_elect_lease_duration: f64,

    /// Seconds the leader keeps trying to renew before it stops reconciling
    /// (shorter than the lease duration).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub leader_elect_renew_deadline: f64,

    /// Seconds between tries to take or renew the lease.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub leader_elect_retry_period: f64,

    /// This controller's name in the lease (`kubectl get lease -n kube-system
    /// tugboat-controller` shows the leader's); default: the host name and a
    /// random suffix. Each controller needs its own.
    #[arg(long, value_name = "NAME")]
    pub leader_elect_identity: Option<String>,
}

/// How the API is secured.
#[derive(Debug, Args, Clone)]
pub struct SecurityArgs {
    /// Another name or address the API server's certificate is valid for (the
    /// ones agents and clients use to reach it); repeatable.
    #[arg(long = "tls-san", value_name = "NAME|IP")]
    pub tls_san: Vec<String>,

    /// Serve plain HTTP with no authentication: anyone who reaches the API may
    /// do anything. For local experiments only.
    #[arg(long)]
    pub insecure_http: bool,
}

/// Timings of the controller's node lifecycle and event expiry, its connection
/// bounds, and the ranges Services draw from.
#[derive(Debug, Args, Clone)]
pub struct ControllerTuning {
    /// Seconds without a heartbeat before a node is NotReady.
    #[arg(long, default_value_t = 3.0, value_name = "SECS")]
    pub node_grace: f64,

    /// Seconds a node is NotReady before its pods are replaced elsewhere.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub eviction_delay: f64,

    /// Seconds an event is kept after it last happened.
    #[arg(long, default_value_t = 3600.0, value_name = "SECS")]
    pub event_ttl: f64,

    /// Seconds a client may take to send a request's headers.
    #[arg(long, default_value_t = tugboat_api::limits::HEADER_READ_TIMEOUT_SECS as f64, value_name = "SECS")]
    pub header_timeout: f64,

    /// Seconds a keep-alive connection with no request in flight stays open.
    #[arg(long, default_value_t = tugboat_api::limits::IDLE_TIMEOUT_SECS as f64, value_name = "SECS")]
    pub idle_timeout: f64,

    /// Connections one client address may hold open at once.
    #[arg(long, default_value_t = tugboat_api::limits::MAX_CONNECTIONS_PER_CLIENT, value_name = "N")]
    pub max_connections_per_client: usize,

    /// Connections the API server holds open at once, from all clients
    /// (each agent holds two or three).
    #[arg(long, default_value_t = tugboat_api::limits::MAX_CONNECTIONS, value_name = "N")]
    pub max_connections: usize,

    /// Writes (POST, PUT, PATCH, DELETE) served at once; more wait their turn
    /// (up to 60 s, then 429). Node heartbeats (Leases, Node status) do not wait,
    /// so a write storm cannot make nodes look lost.
    #[arg(long, default_value_t = tugboat_controller::server::priority::DEFAULT_MAX_MUTATING_INFLIGHT, value_name = "N")]
    pub max_mutating_requests_inflight: usize,

    /// The IPv4 network Services' cluster IPs come from (its first address is kept
    /// for the `kubernetes` Service).
    #[arg(long, default_value = "10.96.0.0/16", value_name = "CIDR")]
    pub service_cidr: tugboat_controller::registry::services::Ipv4Cidr,

    /// The ports NodePort and LoadBalancer Services are given on every node.
    #[arg(long, default_value = "30000-32767", value_name = "FIRST-LAST")]
    pub service_node_port_range: tugboat_controller::registry::services::PortRange,

    /// Seconds between two readings of every node's and pod's usage (what
    /// `top` shows and autoscalers act on).
    #[arg(long, default_value_t = 15.0, value_name = "SECS")]
    pub metrics_interval: f64,

    /// Seconds between two evaluations of each HorizontalPodAutoscaler.
    #[arg(long, default_value_t = 15.0, value_name = "SECS")]
    pub hpa_sync_period: f64,

    /// Allow HorizontalPodAutoscalers with `minReplicas: 0`: an idle target is
    /// scaled to nothing and the first connection to its Service wakes it
    /// (Kubernetes' HPAScaleToZero).
    #[arg(long)]
    pub hpa_scale_to_zero: bool,

    /// Seconds before a Job's first failed pod is replaced; doubles per failure
    /// up to 6 minutes (Kubernetes' 10 s). Hidden: tests shorten it.
    #[arg(long, default_value_t = 10.0, value_name = "SECS", hide = true)]
    pub job_backoff_base: f64,

    /// A test aid: how many real seconds one minute of CronJob schedules lasts
    /// (default 60), so an every-minute CronJob runs several times in seconds.
    #[arg(long, default_value_t = 60.0, value_name = "SECS", hide = true)]
    pub cronjob_minute_seconds: f64,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Manifest file, directory of .yaml/.yml/.json files, or `-` for stdin. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub filenames: Vec<PathBuf>,

    /// Then wait for every Deployment applied to roll out, as `tug rollout
    /// status` does; fail naming the one that did not.
    #[arg(long)]
    pub wait: bool,

    /// With --wait: how long to wait in all (`5m`, `90s`; 0: as long as it takes).
    #[arg(long, default_value = "5m", value_parser = crate::duration::parse_flag, value_name = "DURATION", requires = "wait")]
    pub timeout: std::time::Duration,
}

/// How `get` prints what it found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Wide,
    Json,
    Yaml,
    Name,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Resource type (`deploy`, `pods`, `rs`…), optionally followed by names; or
    /// `TYPE/NAME` pairs.
    #[arg(required = true, value_name = "TYPE[/NAME]")]
    pub targets: Vec<String>,

    /// List across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,

    /// Label selector, e.g. `app=web,tier!=db`.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,

    /// Field selector, e.g. `spec.nodeName=node-1`.
    #[arg(long, value_name = "SELECTOR")]
    pub field_selector: Option<String>,

    /// Output format.
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,

    /// Add a LABELS column.
    #[arg(long)]
    pub show_labels: bool,

    /// After listing, keep printing changes until interrupted.
    #[arg(short = 'w', long)]
    pub watch: bool,

    /// Print only changes, not the current list.
    #[arg(long)]
    pub watch_only: bool,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Resource type and name (`deploy web` or `deploy/web`).
    #[arg(required = true, value_name = "TYPE[/NAME]")]
    pub targets: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// `deployment/NAME`, or `deployment NAME` (also replica sets).
    #[arg(required = true, value_name = "TYPE[/NAME]")]
    pub targets: Vec<String>,

    /// The new number of replicas.
    #[arg(long, allow_negative_numbers = true, value_name = "N")]
    pub replicas: Option<i64>,
}

#[derive(Debug, Args)]
pub struct AutoscaleArgs {
    /// `deployment/NAME`, or `deployment NAME` (also replica sets).
    #[arg(required = true, value_name = "TYPE[/NAME]")]
    pub targets: Vec<String>,

    /// The fewest replicas to run (0 needs the controller's --hpa-scale-to-zero
    /// and --connections-per-second, the metric that wakes it).
    #[arg(long, value_name = "N")]
    pub min: Option<i32>,

    /// The most replicas to run.
    #[arg(long, value_name = "N", required = true)]
    pub max: i32,

    /// Target average CPU use, in percent of the pods' CPU request (80 when
    /// no metric is given).
    #[arg(long, value_name = "PERCENT")]
    pub cpu_percent: Option<i32>,

    /// Target new connections per second per pod, as counted by the
    /// Service in front of the pods (`--service`, or the one whose selector
    /// picks them).
    #[arg(long, value_name = "RATE")]
    pub connections_per_second: Option<String>,

    /// The Service in front of the pods, for --connections-per-second.
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,

    /// The autoscaler's name (default: the target's).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(subcommand)]
    pub what: TopCommand,
}

#[derive(Debug, Subcommand)]
pub enum TopCommand {
    /// CPU and memory of each node (the whole host), and their share of what the
    /// node has.
    #[command(visible_alias = "node", visible_alias = "no")]
    Nodes(TopNodesArgs),
    /// CPU and memory of each pod (or of each container, with --containers).
    #[command(visible_alias = "pod", visible_alias = "po")]
    Pods(TopPodsArgs),
}

#[derive(Debug, Args)]
pub struct TopNodesArgs {
    /// Only this node.
    pub name: Option<String>,

    /// Only nodes with these labels (`role=edge`).
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,

    /// Sort by `cpu` or `memory`, highest first.
    #[arg(long, value_name = "cpu|memory")]
    pub sort_by: Option<TopSort>,
}

#[derive(Debug, Args)]
pub struct TopPodsArgs {
    /// Only this pod.
    pub name: Option<String>,

    /// Pods of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,

    /// Only pods with these labels (`app=web`).
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,

    /// One line per container.
    #[arg(long)]
    pub containers: bool,

    /// Sort by `cpu` or `memory`, highest first.
    #[arg(long, value_name = "cpu|memory")]
    pub sort_by: Option<TopSort>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TopSort {
    Cpu,
    Memory,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Resource type and names (`deploy web api` or `deploy/web`).
    #[arg(value_name = "TYPE[/NAME]")]
    pub targets: Vec<String>,

    /// Delete the objects in these manifests (file, directory or `-`). Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub filenames: Vec<PathBuf>,

    /// Treat objects that do not exist as deleted.
    #[arg(long)]
    pub ignore_not_found: bool,
}

#[derive(Debug, Args)]
pub struct CordonArgs {
    /// The node.
    #[arg(value_name = "NODE")]
    pub node: String,
}

#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The node.
    #[arg(value_name = "NODE")]
    pub node: String,

    /// Also delete pods that no controller owns (they are not recreated anywhere).
    #[arg(long)]
    pub force: bool,

    /// Leave DaemonSet pods on the node (always the case; accepted for kubectl's
    /// sake).
    #[arg(long)]
    pub ignore_daemonsets: bool,

    /// How long to wait for the node's pods to be gone (`60s`, `2m`, `1m30s`; `0`
    /// waits as long as it takes).
    #[arg(long, default_value = "60s", value_parser = crate::duration::parse_flag, value_name = "DURATION")]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(subcommand)]
    pub what: CreateCommand,
}

#[derive(Debug, Subcommand)]
pub enum CreateCommand {
    /// Create a namespace.
    #[command(alias = "ns")]
    Namespace {
        /// Name of the new namespace.
        name: String,
    },
    /// Create a ConfigMap from literal values, files, directories or env files.
    #[command(name = "configmap", alias = "cm")]
    ConfigMap(CreateConfigMapArgs),
    /// Create a Secret: `generic`, `tls` or `docker-registry`.
    Secret {
        #[command(subcommand)]
        what: CreateSecretCommand,
    },
    /// Create a ServiceAccount.
    #[command(name = "serviceaccount", alias = "sa")]
    ServiceAccount {
        /// Name of the new service account.
        name: String,
        #[command(flatten)]
        common: CreateCommon,
    },
    /// Create a Job: from an image and command (`--image=IMG -- CMD...`), or
    /// as a manual run of a CronJob's template (`--from=cronjob/NAME`).
    Job {
        /// Name of the new Job.
        name: String,
        /// The image of the Job's one container.
        #[arg(long, value_name = "IMAGE", conflicts_with = "from")]
        image: Option<String>,
        /// Copy the template of this CronJob (`cronjob/NAME`).
        #[arg(long, value_name = "cronjob/NAME")]
        from: Option<String>,
        /// The container's command, after `--`.
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Create a CronJob: `--image=IMG --schedule='*/5 * * * *' -- CMD...`.
    #[command(alias = "cj")]
    Cronjob {
        /// Name of the new CronJob.
        name: String,
        /// The image of the Jobs' one container.
        #[arg(long, value_name = "IMAGE")]
        image: String,
        /// When to run, in cron syntax (`*/5 * * * *`, `@hourly`).
        #[arg(long, value_name = "SCHEDULE")]
        schedule: String,
        /// The pods' restart policy: OnFailure (default) or Never.
        #[arg(long, default_value = "OnFailure", value_name = "POLICY")]
        restart: String,
        /// The container's command, after `--`.
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
}

/// What every `create KIND` takes besides its data: whether to only show the
/// object, and how to print it.
#[derive(Debug, Args)]
pub struct CreateCommon {
    /// `client`: print the object without sending it; `server`: have the server
    /// check it without storing it; `none`: create it.
    #[arg(long, value_enum, default_value_t = DryRun::None, num_args = 0..=1,
          default_missing_value = "client", require_equals = true, value_name = "STRATEGY")]
    pub dry_run: DryRun,

    /// Print the object (`json`, `yaml`) or its `kind/name` (`name`) instead of
    /// `kind/name created`.
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    pub output: Option<CreateOutput>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DryRun {
    None,
    Client,
    Server,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CreateOutput {
    Json,
    Yaml,
    Name,
}

/// Where a ConfigMap's or generic Secret's keys come from (kubectl's flags).
#[derive(Debug, Args)]
pub struct DataSources {
    /// `KEY=VALUE`: a key and its literal value (repeatable).
    #[arg(long = "from-literal", value_name = "KEY=VALUE")]
    pub literals: Vec<String>,

    /// `[KEY=]PATH`: a file's content under KEY (default: the file's name), or
    /// every file of a directory under its name (repeatable).
    #[arg(long = "from-file", value_name = "[KEY=]PATH")]
    pub files: Vec<String>,

    /// A file of `KEY=VALUE` lines (blank lines and `#` comments skipped; a bare
    /// `KEY` takes its value from the environment) (repeatable).
    #[arg(long = "from-env-file", value_name = "PATH")]
    pub env_files: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CreateConfigMapArgs {
    /// Name of the new ConfigMap.
    pub name: String,
    #[command(flatten)]
    pub data: DataSources,
    #[command(flatten)]
    pub common: CreateCommon,
}

#[derive(Debug, Subcommand)]
pub enum CreateSecretCommand {
    /// A Secret from literal values, files, directories or env files.
    Generic {
        /// Name of the new Secret.
        name: String,
        #[command(flatten)]
        data: DataSources,
        /// The Secret's type (default `Opaque`).
        #[arg(long = "type", value_name = "TYPE")]
        type_: Option<String>,
        #[command(flatten)]
        common: CreateCommon,
    },
    /// A `kubernetes.io/tls` Secret from a PEM certificate and key.
    Tls {
        /// Name of the new Secret.
        name: String,
        /// The PEM certificate (chain) file.
        #[arg(long, value_name = "PATH")]
        cert: String,
        /// The PEM private key file.
        #[arg(long, value_name = "PATH")]
        key: String,
        #[command(flatten)]
        common: CreateCommon,
    },
    /// A `kubernetes.io/dockerconfigjson` Secret: registry credentials for
    /// image pulls.
    #[command(name = "docker-registry")]
    DockerRegistry {
        /// Name of the new Secret.
        name: String,
        /// The registry.
        #[arg(
            long,
            default_value = "https://index.docker.io/v1/",
            value_name = "URL"
        )]
        docker_server: String,
        #[arg(long, value_name = "USER")]
        docker_username: Option<String>,
        #[arg(long, value_name = "PASSWORD")]
        docker_password: Option<String>,
        #[arg(long, value_name = "EMAIL")]
        docker_email: Option<String>,
        /// `[KEY=]PATH` of an existing docker config file, instead of the
        /// `--docker-*` flags (repeatable).
        #[arg(long = "from-file", value_name = "[KEY=]PATH")]
        files: Vec<String>,
        #[command(flatten)]
        common: CreateCommon,
    },
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// What to wait for: `TYPE/NAME...` or `TYPE NAME...`.
    #[arg(required = true, value_name = "TYPE/NAME")]
    pub targets: Vec<String>,

    /// The condition: `condition=NAME[=VALUE]` (VALUE defaults to True),
    /// `delete`, or `jsonpath={.status.phase}=VALUE`.
    #[arg(long = "for", value_name = "CONDITION", required = true)]
    pub for_: String,

    /// How long to wait before giving up (`60s`, `2m`; 0 checks once).
    #[arg(long, default_value = "30s", value_parser = crate::duration::parse_flag, value_name = "DURATION")]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Print only the client version; do not ask the server.
    #[arg(long)]
    pub client: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn server_is_accepted_before_or_after_the_verb() {
        let before = Cli::try_parse_from(["tug", "--server", "http://a:1", "get", "pods"]).unwrap();
        let after = Cli::try_parse_from(["tug", "get", "pods", "--server", "http://a:1"]).unwrap();
        assert_eq!(before.server.as_deref(), Some("http://a:1"));
        assert_eq!(after.server.as_deref(), Some("http://a:1"));
    }

    #[test]
    fn output_accepts_the_kubectl_short_form() {
        let cli = Cli::try_parse_from(["tug", "get", "deploy", "-owide"]).unwrap();
        let Command::Get(get) = cli.command else {
            panic!("expected get");
        };
        assert_eq!(get.output, Some(OutputFormat::Wide));
    }

    #[test]
    fn negative_replicas_reach_the_verb_so_it_can_explain() {
        let cli = Cli::try_parse_from(["tug", "scale", "deploy/web", "--replicas", "-1"]).unwrap();
        let Command::Scale(scale) = cli.command else {
            panic!("expected scale");
        };
        assert_eq!(scale.replicas, Some(-1));
    }

    #[test]
    fn rollout_status_watches_unless_told_watch_false() {
        let status = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            let Command::Rollout(RolloutArgs {
                what: RolloutCommand::Status(s),
            }) = cli.command
            else {
                panic!("expected rollout status");
            };
            s
        };
        let s = status(&["tug", "rollout", "status", "deploy/web"]);
        assert!(s.watch);
        assert_eq!(s.timeout, std::time::Duration::ZERO);
        let s = status(&["tug", "rollout", "status", "deploy/web", "--watch=false"]);
        assert!(!s.watch);
        let s = status(&[
            "tug",
            "rollout",
            "status",
            "deployment",
            "web",
            "-w",
            "--timeout",
            "2s",
        ]);
        assert!(s.watch);
        assert_eq!(s.targets, ["deployment", "web"]);
        assert_eq!(s.timeout, std::time::Duration::from_secs(2));
    }

    #[test]
    fn set_env_takes_the_container_flag_between_its_arguments() {
        let cli =
            Cli::try_parse_from(["tug", "set", "env", "deploy/web", "-c", "web", "A-", "B=2"])
                .unwrap();
        let Command::Set(SetArgs {
            what: SetCommand::Env(env),
        }) = cli.command
        else {
            panic!("expected set env");
        };
        assert_eq!(env.containers, "web");
        assert_eq!(env.args, ["deploy/web", "A-", "B=2"]);
    }

    #[test]
    fn timeout_on_apply_needs_wait() {
        assert!(Cli::try_parse_from(["tug", "apply", "-f", "x", "--timeout", "1s"]).is_err());
        assert!(
            Cli::try_parse_from(["tug", "apply", "-f", "x", "--wait", "--timeout", "1s"]).is_ok()
        );
    }

    #[test]
    fn create_ns_is_an_alias_of_create_namespace() {
        let cli = Cli::try_parse_from(["tug", "create", "ns", "team-a"]).unwrap();
        let Command::Create(CreateArgs {
            what: CreateCommand::Namespace { name },
        }) = cli.command
        else {
            panic!("expected create namespace");
        };
        assert_eq!(name, "team-a");
    }
}
