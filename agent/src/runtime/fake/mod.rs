//! [`FakeRuntime`]: an in-memory container engine for unit tests and hollow nodes.
//!
//! It behaves like Docker where the agent can tell: names are unique, containers move
//! through `created`, `running` and `exited`, stopping and killing give the exit codes a
//! signal would (143, 137), and the event stream carries the same actions (`create`,
//! `start`, `kill`, `die`, `stop`, `oom`, `destroy`) with the labels in the attributes.
//! Nothing runs: addresses are made up (10.x, never contacted), logs are what a test
//! pushed, exec answers with what a test configured, and usage is what a test set
//! ([`FakeRuntime::set_usage`]), CPU accruing on tokio's clock so paused-time tests
//! see exact rates. Test hooks make containers crash or run out of memory on their
//! own and inject one-shot failures.

mod engine;
mod names;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use self::names::{hash, hex_id, normalize};
use super::{
    ContainerInfo, ContainerSpec, ContainerStats, ExecOutput, HostInfo, LABEL_POD_NAME,
    LABEL_POD_NAMESPACE, RuntimeError, RuntimeEvent, VolumeSpec,
};

/// How many past events are kept for `events(since)`.
const EVENT_HISTORY: usize = 4096;
const EVENT_CHANNEL: usize = 1024;
const LOG_CHANNEL: usize = 256;
/// How often a stats stream gives a sample, as Docker's does.
pub const STATS_PERIOD: Duration = Duration::from_secs(1);

/// Container IDs and addresses are unique across every fake in the process, so
/// several hollow nodes in one process never hand out the same pod IP.
static NEXT_CONTAINER: AtomicU64 = AtomicU64::new(1);
static NEXT_ADDRESS: AtomicU64 = AtomicU64::new(2);

/// What [`FakeRuntime::set_exec_handler`] is given: the container and the command.
pub type ExecHandler =
    Arc<dyn Fn(&ContainerInfo, &[String]) -> Result<ExecOutput, RuntimeError> + Send + Sync>;

/// An operation that [`FakeRuntime::fail_next`] can make fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FakeOp {
    Pull,
    Create,
    Start,
    Stop,
    Kill,
    Remove,
    Inspect,
    List,
    Exec,
}

/// An in-memory [`ContainerRuntime`](crate::runtime::ContainerRuntime).
pub struct FakeRuntime {
    state: Mutex<State>,
    events: broadcast::Sender<RuntimeEvent>,
}

struct State {
    containers: HashMap<String, FakeContainer>,
    /// Normalized reference → image ID.
    images: HashMap<String, String>,
    pullable: HashSet<String>,
    pulls: Vec<String>,
    history: VecDeque<RuntimeEvent>,
    last_event_nanos: i64,
    host: HostInfo,
    stop_exit_code: i64,
    /// How long `stop` takes (a workload slow to shut down).
    stop_delay: Duration,
    /// How long `start` takes (a hollow node's engine, as slow as a real one).
    start_delay: Duration,
    /// The workload ignores SIGTERM: `stop` waits out the grace, then kills.
    ignore_sigterm: bool,
    /// Every `stop` asked for: the container and the grace given.
    stops: Vec<(String, Duration)>,
    exec: ExecHandler,
    failures: HashMap<FakeOp, VecDeque<String>>,
    /// Usage set for a pod (`namespace`, `name`): every container of it gets it
    /// when created.
    pod_usage: HashMap<(String, String), Usage>,
    /// Named volumes, by name.
    volumes: HashMap<String, VolumeSpec>,
    /// How many times `list` was called (what a worker's sync costs the engine).
    lists: usize,
}

/// What a container uses: CPU in thousandths of a CPU, memory in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Usage {
    cpu_millicores: u64,
    memory_bytes: u64,
}

/// A container's simulated usage over time. CPU accrues at the set rate on
/// tokio's clock, and samples are dated on it too (from the wall time when the
/// meter was made), so a rate computed from two samples is exactly what was set,
/// paused clock or not.
#[derive(Debug)]
struct Meter {
    usage: Usage,
    /// CPU used up to `since`, in nanoseconds.
    cpu_ns: u64,
    since: tokio::time::Instant,
    origin: (jiff::Timestamp, tokio::time::Instant),
}

impl Meter {
    fn new(usage: Usage) -> Meter {
        let now = tokio::time::Instant::now();
        Meter {
            usage,
            cpu_ns: 0,
            since: now,
            origin: (jiff::Timestamp::now(), now),
        }
    }

    fn cpu_ns_at(&self, now: tokio::time::Instant) -> u64 {
        let accrued = u128::from(self.usage.cpu_millicores)
            * now.saturating_duration_since(self.since).as_nanos()
            / 1000;
        self.cpu_ns
            .saturating_add(u64::try_from(accrued).unwrap_or(u64::MAX))
    }

    fn set(&mut self, usage: Usage) {
        let now = tokio::time::Instant::now();
        self.cpu_ns = self.cpu_ns_at(now);
        self.since = now;
        self.usage = usage;
    }

    fn sample(&self) -> ContainerStats {
        let now = tokio::time::Instant::now();
        let (wall, at) = self.origin;
        let read = wall
            .checked_add(now.saturating_duration_since(at))
            .unwrap_or(jiff::Timestamp::MAX);
        ContainerStats {
            read,
            cpu_total_ns: self.cpu_ns_at(now),
            memory_working_set: self.usage.memory_bytes,
        }
    }
}

struct FakeContainer {
    seq: u64,
    spec: ContainerSpec,
    info: ContainerInfo,
    logs: Vec<LogLine>,
    /// Lines as they are pushed; `None` when the container stops (ends `follow`).
    log_tx: broadcast::Sender<Option<LogLine>>,
    /// Shared with its stats streams.
    meter: Arc<Mutex<Meter>>,
    /// Cancelled when the container stops or goes (ends its stats streams); a
    /// new one at each start.
    stopped: CancellationToken,
}

#[derive(Clone, Debug)]
struct LogLine {
    time: jiff::Timestamp,
    bytes: Bytes,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for FakeRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeRuntime")
            .field("containers", &self.container_count())
            .finish_non_exhaustive()
    }
}

impl FakeRuntime {
    /// An engine with no containers and only the pods' sandbox image (which a
    /// real agent builds from its own binary at start), on a 4-CPU, 8 GiB host.
    pub fn new() -> Self {
        let fake = Self::empty();
        fake.add_image(crate::proxy::sandbox::SANDBOX_IMAGE);
        fake
    }

    /// An engine with no images and no containers, on a 4-CPU, 8 GiB host.
    pub fn empty() -> Self {
        let (events, _) = broadcast::channel(EVENT_CHANNEL);
        Self {
            events,
            state: Mutex::new(State {
                containers: HashMap::new(),
                images: HashMap::new(),
                pullable: HashSet::new(),
                pulls: Vec::new(),
                history: VecDeque::new(),
                last_event_nanos: 0,
                host: HostInfo {
                    cpus: 4,
                    memory_bytes: 8 << 30,
                    os_image: "Tugboat hollow node".into(),
                    kernel_version: "0.0.0-fake".into(),
                    architecture: "amd64".into(),
                    operating_system: "linux".into(),
                    runtime_version: "fake://0.1.0".into(),
                },
                stop_exit_code: 143,
                stop_delay: Duration::ZERO,
                start_delay: Duration::ZERO,
                ignore_sigterm: false,
                stops: Vec::new(),
                exec: Arc::new(|_, _| Ok(ExecOutput::default())),
                failures: HashMap::new(),
                pod_usage: HashMap::new(),
                volumes: HashMap::new(),
                lists: 0,
            }),
        }
    }

    /// These images are present locally (as if built or pulled before).
    pub fn with_images(self, images: &[&str]) -> Self {
        for image in images {
            self.add_image(image);
        }
        self
    }

    /// These images can be pulled; pulling any other fails as with no registry.
    pub fn with_pullable(self, images: &[&str]) -> Self {
        self.lock()
            .pullable
            .extend(images.iter().map(|i| normalize(i)));
        self
    }

    pub fn with_host_info(self, host: HostInfo) -> Self {
        self.lock().host = host;
        self
    }

    /// The exit code `stop` leaves: 143 (killed by SIGTERM) unless the workload is
    /// meant to shut down cleanly (0).
    pub fn with_stop_exit_code(self, code: i64) -> Self {
        self.lock().stop_exit_code = code;
        self
    }

    /// `stop` takes this long, as a workload that shuts down slowly.
    pub fn with_stop_delay(self, delay: Duration) -> Self {
        self.lock().stop_delay = delay;
        self
    }

    /// `start` takes this long, as a real engine's does (hollow nodes: the
    /// Docker engine here takes about 0.1 s from create to started).
    pub fn with_start_delay(self, delay: Duration) -> Self {
        self.lock().start_delay = delay;
        self
    }

    /// The workloads ignore SIGTERM: `stop` waits the whole grace period, then
    /// kills with SIGKILL (exit code 137), as Docker does.
    pub fn with_sigterm_ignored(self) -> Self {
        self.lock().ignore_sigterm = true;
        self
    }

    /// Every `stop` asked for, in order: the container as named in the call and
    /// the grace period given.
    pub fn stops(&self) -> Vec<(String, Duration)> {
        self.lock().stops.clone()
    }

    /// Makes `image` present locally; returns its ID.
    pub fn add_image(&self, image: &str) -> String {
        let normalized = normalize(image);
        let id = format!("sha256:{}", hex_id(hash(normalized.as_bytes())));
        self.lock().images.insert(normalized, id.clone());
        id
    }

    /// Every exec answers `output` from now on.
    pub fn set_exec_result(&self, output: ExecOutput) {
        self.set_exec_handler(Arc::new(move |_, _| Ok(output.clone())));
    }

    /// Exec calls `handler` with the container and the command from now on. It runs
    /// without the fake's lock held, so it may call back into the fake.
    pub fn set_exec_handler(&self, handler: ExecHandler) {
        self.lock().exec = handler;
    }

    /// The next `operation` fails with `message` (as Docker's), once.
    pub fn fail_next(&self, operation: FakeOp, message: impl Into<String>) {
        self.lock()
            .failures
            .entry(operation)
            .or_default()
            .push_back(message.into());
    }

    /// Appends output to a container's log (split into lines, as Docker stores it).
    pub fn push_log(&self, id: &str, bytes: impl Into<Bytes>) -> Result<(), RuntimeError> {
        let bytes = bytes.into();
        let mut state = self.lock();
        let id = resolve(&state, id).ok_or_else(|| RuntimeError::NoSuchContainer(id.to_owned()))?;
        let container = state.containers.get_mut(&id).expect("resolved");
        let time = jiff::Timestamp::now();
        for line in bytes.split_inclusive(|b| *b == b'\n') {
            let line = LogLine {
                time,
                bytes: bytes.slice_ref(line),
            };
            let _ = container.log_tx.send(Some(line.clone()));
            container.logs.push(line);
        }
        Ok(())
    }

    /// What containers use from now on: `target` is a container (its ID, a unique
    /// ID prefix or its name, as Docker finds them) or a pod as `namespace/name`:
    /// every container of that pod, now and as they are created (restarts, pods
    /// not started yet). CPU accrues at `cpu_millicores` thousandths of a CPU;
    /// the working set is `memory_bytes`. Returns how many containers it applies
    /// to now.
    pub fn set_usage(
        &self,
        target: &str,
        cpu_millicores: u64,
        memory_bytes: u64,
    ) -> Result<usize, RuntimeError> {
        let usage = Usage {
            cpu_millicores,
            memory_bytes,
        };
        let mut state = self.lock();
        let meters: Vec<Arc<Mutex<Meter>>> = match target.split_once('/') {
            // Container names have no `/`: this names a pod.
            Some((namespace, name)) => {
                state
                    .pod_usage
                    .insert((namespace.to_owned(), name.to_owned()), usage);
                state
                    .containers
                    .values()
                    .filter(|c| pod_of(&c.info) == Some((namespace, name)))
                    .map(|c| c.meter.clone())
                    .collect()
            }
            None => {
                let id = resolve(&state, target)
                    .ok_or_else(|| RuntimeError::NoSuchContainer(target.to_owned()))?;
                vec![state.containers[&id].meter.clone()]
            }
        };
        for meter in &meters {
            lock_meter(meter).set(usage);
        }
        Ok(meters.len())
    }

    /// The container exits on its own with `exit_code` (emits `die`).
    pub fn crash(&self, id: &str, exit_code: i64) -> Result<(), RuntimeError> {
        self.exit_on_its_own(id, exit_code, false)
    }

    /// The container is killed for running out of memory (emits `oom` and `die`, exit
    /// code 137, `oom_killed` set).
    pub fn oom_kill(&self, id: &str) -> Result<(), RuntimeError> {
        self.exit_on_its_own(id, 137, true)
    }

    /// How many times containers were listed so far.
    pub fn lists(&self) -> usize {
        self.lock().lists
    }

    pub fn container_count(&self) -> usize {
        self.lock().containers.len()
    }

    /// The spec a container was created from.
    pub fn spec(&self, id: &str) -> Option<ContainerSpec> {
        let state = self.lock();
        resolve(&state, id).map(|id| state.containers[&id].spec.clone())
    }

    /// The named volumes there are, by name.
    pub fn volumes(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().volumes.keys().cloned().collect();
        names.sort();
        names
    }

    /// Every image a pull was attempted for, in order.
    pub fn pulls(&self) -> Vec<String> {
        self.lock().pulls.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock leaves plain data behind; go on.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn exit_on_its_own(&self, id: &str, exit_code: i64, oom: bool) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        let id = resolve(&state, id).ok_or_else(|| RuntimeError::NoSuchContainer(id.to_owned()))?;
        if !state.containers[&id].info.state.running {
            return Err(RuntimeError::Engine {
                operation: format!("crash container {id}"),
                message: format!("Container {id} is not running"),
            });
        }
        if oom {
            self.emit(&mut state, &id, "oom", []);
        }
        self.exit(&mut state, &id, exit_code, oom);
        Ok(())
    }

    /// Marks a running container exited and emits `die`.
    fn exit(&self, state: &mut State, id: &str, exit_code: i64, oom_killed: bool) {
        let container = state
            .containers
            .get_mut(id)
            .expect("caller resolved the id");
        let s = &mut container.info.state;
        s.status = "exited".into();
        s.running = false;
        s.exit_code = Some(exit_code);
        s.oom_killed = oom_killed;
        s.finished_at = Some(jiff::Timestamp::now().to_string());
        container.info.ip = None;
        let _ = container.log_tx.send(None);
        container.stopped.cancel();
        self.emit(state, id, "die", [("exitCode", exit_code.to_string())]);
    }

    /// Records and broadcasts an event about container `id`, with Docker's attributes:
    /// the labels, `name`, `image`, and `extra`.
    fn emit<const N: usize>(
        &self,
        state: &mut State,
        id: &str,
        action: &str,
        extra: [(&str, String); N],
    ) {
        let container = &state.containers[id].info;
        let mut labels = container.labels.clone();
        labels.insert("name".into(), container.name.clone());
        labels.insert("image".into(), container.image.clone());
        labels.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
        let now = i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX);
        // Strictly increasing, so resuming with `since` is exact.
        let time_nanos = now.max(state.last_event_nanos + 1);
        state.last_event_nanos = time_nanos;
        let event = RuntimeEvent {
            container_id: id.to_owned(),
            action: action.to_owned(),
            labels,
            time_nanos,
        };
        if state.history.len() == EVENT_HISTORY {
            state.history.pop_front();
        }
        state.history.push_back(event.clone());
        let _ = self.events.send(event);
    }

    fn injected(&self, state: &mut State, op: FakeOp) -> Option<String> {
        state.failures.get_mut(&op).and_then(VecDeque::pop_front)
    }
}

/// The pod a container belongs to, by its labels: (`namespace`, `name`).
fn pod_of(info: &ContainerInfo) -> Option<(&str, &str)> {
    Some((
        info.labels.get(LABEL_POD_NAMESPACE)?.as_str(),
        info.labels.get(LABEL_POD_NAME)?.as_str(),
    ))
}

fn lock_meter(meter: &Mutex<Meter>) -> MutexGuard<'_, Meter> {
    meter
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Finds a container by full ID, unique ID prefix or name, as Docker does.
fn resolve(state: &State, key: &str) -> Option<String> {
    if state.containers.contains_key(key) {
        return Some(key.to_owned());
    }
    let name = key.trim_start_matches('/');
    if let Some(c) = state.containers.values().find(|c| c.info.name == name) {
        return Some(c.info.id.clone());
    }
    let mut prefixed = state
        .containers
        .keys()
        .filter(|id| !key.is_empty() && id.starts_with(key));
    match (prefixed.next(), prefixed.next()) {
        (Some(id), None) => Some(id.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
