//! The container runtime behind the agent: a trait with what a kubelet needs from
//! Docker, implemented by [`docker::DockerRuntime`] (bollard, the real engine) and
//! [`fake::FakeRuntime`] (in memory, for unit tests and hollow nodes). The caller
//! chooses which; nothing here looks at `cfg!(test)`.

pub mod docker;
pub mod fake;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;

/// Labels every container Tugboat creates carries (the names Kubernetes' Docker
/// integration used, so tools that know them keep working).
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
pub const LABEL_NODE: &str = "io.tugboat.node";
/// How many times this container of this pod has been (re)created.
pub const LABEL_ATTEMPT: &str = "io.tugboat.attempt";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The image could not be pulled; the message is Docker's.
    #[error("pulling image {image}: {message}")]
    Pull { image: String, message: String },
    #[error("no such container: {0}")]
    NoSuchContainer(String),
    /// Docker refused or failed the request; the message is Docker's.
    #[error("{operation}: {message}")]
    Engine { operation: String, message: String },
    #[error("cannot reach the container engine: {0}")]
    Connect(String),
}

/// A port to publish: `container_port` inside, on `host_port` of the host if set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMapping {
    pub container_port: u16,
    pub host_port: Option<u16>,
    /// `tcp`, `udp` or `sctp`, lower case as Docker spells it.
    pub protocol: String,
    pub host_ip: Option<String>,
}

/// Where a mount comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountSource {
    /// A path on the host (bind mount). The agent runs on the engine's host, so
    /// its pod volume directories are the engine's too.
    Bind(String),
    /// A named volume of the engine (a pod's `emptyDir` with `medium: Memory`).
    Volume(String),
}

/// A mount into the container (`volumeMounts`, resolved to the host).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub source: MountSource,
    /// The absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

/// A named volume to create: a tmpfs (`o=size=…`) through the local driver.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The size limit in bytes (`None`: the tmpfs default, half the memory).
    pub size_bytes: Option<i64>,
}

/// What to create.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerSpec {
    /// The container's name in Docker (`tug_<ns>_<pod>_<container>_<n>`).
    pub name: String,
    pub image: String,
    /// Replaces the image's entrypoint (Kubernetes' `command`).
    pub command: Option<Vec<String>>,
    /// Replaces the image's cmd (Kubernetes' `args`).
    pub args: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<PortMapping>,
    pub memory_limit_bytes: Option<i64>,
    /// CPU limit in billionths of a CPU (Docker's `NanoCpus`).
    pub nano_cpus: Option<i64>,
    /// Relative CPU weight from the CPU request (Docker's `CpuShares`).
    pub cpu_shares: Option<i64>,
    pub hostname: Option<String>,
    /// The domain part of the container's FQDN (Docker writes
    /// `IP hostname.domainname hostname` into /etc/hosts).
    pub domainname: Option<String>,
    /// Docker network to attach to (`None`: the default bridge), or
    /// `container:<id>` to join another container's network namespace (a pod
    /// sandbox's; then hostname, ports and DNS are the sandbox's and must be unset).
    pub network: Option<String>,
    pub mounts: Vec<Mount>,
    /// resolv.conf: name servers, search domains and options (empty: Docker's).
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    /// Keep stdin open for `kubectl attach` (Kubernetes' `stdin`), closed after the
    /// first attach ends when `stdin_once`.
    pub stdin: bool,
    pub stdin_once: bool,
    /// A terminal for the process (Kubernetes' `tty`).
    pub tty: bool,
}

/// What Docker says about a container's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerState {
    /// Docker's word: `created`, `running`, `paused`, `restarting`, `removing`,
    /// `exited`, `dead`.
    pub status: String,
    pub running: bool,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// RFC 3339, as Docker reports them; `None` when never started / not finished.
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    /// The image as asked for (`tugboat/sample:latest`).
    pub image: String,
    /// The image's ID (`sha256:…`).
    pub image_id: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    /// The container's IP on its network, when running.
    pub ip: Option<String>,
    /// The container's main process on the host, while it runs (its network
    /// namespace is `/proc/PID/ns/net`).
    pub pid: Option<i64>,
    pub created: Option<String>,
}

impl ContainerInfo {
    /// Which (re)creation of its pod's container this is ([`LABEL_ATTEMPT`]; 0 when
    /// unlabelled).
    pub fn attempt(&self) -> u32 {
        self.labels
            .get(LABEL_ATTEMPT)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0)
    }
}

/// One event from the engine's stream about a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeEvent {
    pub container_id: String,
    /// Docker's action: `create`, `start`, `die`, `oom`, `kill`, `stop`, `destroy`…
    pub action: String,
    pub labels: BTreeMap<String, String>,
    /// Unix time in nanoseconds (for resuming with `since` after a reconnect).
    pub time_nanos: i64,
}

/// The machine the runtime runs on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostInfo {
    pub cpus: i64,
    pub memory_bytes: i64,
    pub os_image: String,
    pub kernel_version: String,
    pub architecture: String,
    pub operating_system: String,
    /// `docker://20.10.24`
    pub runtime_version: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    /// Only the last N lines.
    pub tail: Option<u64>,
    pub timestamps: bool,
}

/// What an interactive session (`kubectl exec`, `kubectl attach`) asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamRequest {
    /// The command, for an exec; empty for an attach.
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Output of an interactive session, by stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamOutput {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// Which session a resize or an exit code is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionId {
    /// An exec, by the engine's exec ID.
    Exec(String),
    /// An attach to the container itself, by its ID.
    Attach(String),
}

/// A running interactive session: its output until the process ends, and its
/// stdin (shut down to close it).
pub struct Session {
    pub id: SessionId,
    pub output: Pin<Box<dyn Stream<Item = Result<StreamOutput, RuntimeError>> + Send>>,
    pub input: Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i64,
    pub output: String,
}

/// One sample of a container's usage, as the engine streams them (about one a
/// second). CPU is cumulative, so a rate takes two samples; memory is what the
/// container holds at `read`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerStats {
    /// When the engine took the sample (Docker's `read`).
    pub read: jiff::Timestamp,
    /// CPU time used since the container started, in nanoseconds (the cgroup's
    /// `cpu_stats.cpu_usage.total_usage`).
    pub cpu_total_ns: u64,
    /// Memory in use less the inactive file pages the kernel can take back at
    /// once: the working set, as cAdvisor and the kubelet compute it.
    pub memory_working_set: u64,
}

/// Where a node's own CPU and memory figures come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeFigures {
    /// The host's kernel (`/proc`): the engine's containers run on this machine.
    Host,
    /// The sum of the pods' figures: the containers are simulated (hollow nodes),
    /// so the host's load is nothing of the node's.
    SumOfPods,
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<RuntimeEvent, RuntimeError>> + Send>>;
pub type LogStream = Pin<Box<dyn Stream<Item = Result<Bytes, RuntimeError>> + Send>>;
pub type StatsStream = Pin<Box<dyn Stream<Item = Result<ContainerStats, RuntimeError>> + Send>>;

/// Everything the agent asks of a container engine.
#[async_trait::async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    async fn host_info(&self) -> Result<HostInfo, RuntimeError>;

    /// The image's ID if it is present locally.
    async fn image_id(&self, image: &str) -> Result<Option<String>, RuntimeError>;

    /// Pulls `image`; `Pull` with Docker's message when that fails.
    async fn pull_image(&self, image: &str) -> Result<(), RuntimeError>;

    /// Creates (does not start) a container; returns its ID.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;

    async fn start(&self, id: &str) -> Result<(), RuntimeError>;

    /// SIGTERM, then SIGKILL after `grace`. Stopping a stopped container is fine.
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError>;

    /// Sends a signal (`SIGKILL`) without waiting.
    async fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError>;

    /// Removes it, running or not. Removing a missing container is fine.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;

    /// `None` when there is no such container.
    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError>;

    /// Every container (running or not) carrying all of `labels` (`key=value`).
    async fn list(&self, labels: &[(String, String)]) -> Result<Vec<ContainerInfo>, RuntimeError>;

    /// Container events for containers carrying all of `labels`, from `since_nanos`
    /// (Unix nanoseconds; `None`: from now) on. The stream ends if the engine closes it.
    async fn events(
        &self,
        labels: &[(String, String)],
        since_nanos: Option<i64>,
    ) -> Result<EventStream, RuntimeError>;

    /// The container's output (stdout and stderr interleaved).
    async fn logs(&self, id: &str, opts: &LogOptions) -> Result<LogStream, RuntimeError>;

    /// The container's usage, a sample about every second, until it stops (the
    /// stream then ends; at once for a container that is not running).
    /// `NoSuchContainer` when there is no such container.
    async fn stats(&self, id: &str) -> Result<StatsStream, RuntimeError>;

    /// Where the node's own figures come from (see [`NodeFigures`]): the host,
    /// unless the engine's containers are not real.
    fn node_figures(&self) -> NodeFigures {
        NodeFigures::Host
    }

    /// Creates a named volume (a tmpfs); fine if it exists already.
    async fn create_volume(&self, spec: &VolumeSpec) -> Result<(), RuntimeError> {
        Err(unsupported(&spec.name, "named volumes"))
    }

    /// Removes a named volume; removing a missing one is fine.
    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        let _ = name;
        Ok(())
    }

    /// Runs `cmd` inside the container and waits for it (for exec probes).
    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError>;

    /// Starts an interactive exec (`req.command`) or attaches to the container's
    /// own process (`req.command` empty).
    async fn session(&self, id: &str, req: &StreamRequest) -> Result<Session, RuntimeError> {
        let _ = req;
        Err(unsupported(id, "interactive sessions"))
    }

    /// Resizes a session's terminal.
    async fn resize(
        &self,
        session: &SessionId,
        width: u16,
        height: u16,
    ) -> Result<(), RuntimeError> {
        let _ = (width, height);
        Err(unsupported(&format!("{session:?}"), "terminal resizes"))
    }

    /// A finished session's exit code (waits a moment for the engine to record
    /// it); `None` for an attach, which has none of its own.
    async fn exit_code(&self, session: &SessionId) -> Result<Option<i64>, RuntimeError> {
        let _ = session;
        Ok(None)
    }
}

fn unsupported(id: &str, what: &str) -> RuntimeError {
    RuntimeError::Engine {
        operation: format!("{what} with {id}"),
        message: "this container runtime does not support them".into(),
    }
}
