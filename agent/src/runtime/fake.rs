//! [`FakeRuntime`]: an in-memory container engine for unit tests and hollow nodes.
//!
//! It behaves like Docker where the agent can tell: names are unique, containers move
//! through `created`, `running` and `exited`, stopping and killing give the exit codes a
//! signal would (143, 137), and the event stream carries the same actions (`create`,
//! `start`, `kill`, `die`, `stop`, `oom`, `destroy`) with the labels in the attributes.
//! Nothing runs: addresses are made up (10.x, never contacted), logs are what a test
//! pushed, and exec answers with what a test configured. Test hooks make containers
//! crash or run out of memory on their own and inject one-shot failures.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ContainerState, EventStream, ExecOutput,
    HostInfo, LogOptions, LogStream, RuntimeError, RuntimeEvent,
};

/// How many past events are kept for `events(since)`.
const EVENT_HISTORY: usize = 4096;
const EVENT_CHANNEL: usize = 1024;
const LOG_CHANNEL: usize = 256;

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

/// An in-memory [`ContainerRuntime`].
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
    exec: ExecHandler,
    failures: HashMap<FakeOp, VecDeque<String>>,
}

struct FakeContainer {
    seq: u64,
    spec: ContainerSpec,
    info: ContainerInfo,
    logs: Vec<LogLine>,
    /// Lines as they are pushed; `None` when the container stops (ends `follow`).
    log_tx: broadcast::Sender<Option<LogLine>>,
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
    /// An engine with no images and no containers, on a 4-CPU, 8 GiB host.
    pub fn new() -> Self {
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
                exec: Arc::new(|_, _| Ok(ExecOutput::default())),
                failures: HashMap::new(),
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

    /// The container exits on its own with `exit_code` (emits `die`).
    pub fn crash(&self, id: &str, exit_code: i64) -> Result<(), RuntimeError> {
        self.exit_on_its_own(id, exit_code, false)
    }

    /// The container is killed for running out of memory (emits `oom` and `die`, exit
    /// code 137, `oom_killed` set).
    pub fn oom_kill(&self, id: &str) -> Result<(), RuntimeError> {
        self.exit_on_its_own(id, 137, true)
    }

    pub fn container_count(&self) -> usize {
        self.lock().containers.len()
    }

    /// The spec a container was created from.
    pub fn spec(&self, id: &str) -> Option<ContainerSpec> {
        let state = self.lock();
        resolve(&state, id).map(|id| state.containers[&id].spec.clone())
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

/// `nginx` → `nginx:latest`, `docker.io/library/nginx` → `nginx:latest`.
fn normalize(image: &str) -> String {
    let image = image.strip_prefix("docker.io/").unwrap_or(image);
    let image = image.strip_prefix("library/").unwrap_or(image);
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    if image.contains('@') || image[name_start..].contains(':') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

/// The repository of a reference, as Docker names it in pull errors.
fn repository(image: &str) -> &str {
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    let end = image[name_start..]
        .find(['@', ':'])
        .map_or(image.len(), |i| name_start + i);
    &image[..end]
}

fn hash(bytes: &[u8]) -> u64 {
    // FNV-1a: stable across runs, unlike std's hasher.
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// 64 hex digits, like Docker's IDs.
fn hex_id(seed: u64) -> String {
    (0..4)
        .map(|i| format!("{:016x}", splitmix(seed ^ (i * 0x1000_0000_0000_0001))))
        .collect()
}

fn next_address() -> String {
    let n = NEXT_ADDRESS.fetch_add(1, Ordering::Relaxed);
    format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

/// The exit code a process killed by `signal` has (128 + its number).
fn signal_exit_code(signal: &str) -> i64 {
    let name = signal.trim().to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let number = name.parse().unwrap_or(match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ABRT" => 6,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => 9,
    });
    128 + number
}

fn signal_number(signal: &str) -> i64 {
    signal_exit_code(signal) - 128
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn has_labels(labels: &BTreeMap<String, String>, wanted: &[(String, String)]) -> bool {
    wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn not_running(operation: String, id: &str) -> RuntimeError {
    RuntimeError::Engine {
        operation,
        message: format!("Container {id} is not running"),
    }
}

/// Log lines as Docker would send them: the last `tail`, with timestamps if asked.
fn render_lines(lines: &[LogLine], opts: &LogOptions) -> Vec<Bytes> {
    let skip = opts.tail.map_or(0, |tail| {
        lines
            .len()
            .saturating_sub(usize::try_from(tail).unwrap_or(usize::MAX))
    });
    lines[skip..]
        .iter()
        .map(|line| render_line(line, opts.timestamps))
        .collect()
}

fn render_line(line: &LogLine, timestamps: bool) -> Bytes {
    if !timestamps {
        return line.bytes.clone();
    }
    let mut out = BytesMut::from(format!("{} ", line.time).as_bytes());
    out.extend_from_slice(&line.bytes);
    out.freeze()
}

#[async_trait::async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn host_info(&self) -> Result<HostInfo, RuntimeError> {
        Ok(self.lock().host.clone())
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>, RuntimeError> {
        let state = self.lock();
        let by_name = state.images.get(&normalize(image)).cloned();
        Ok(by_name.or_else(|| state.images.values().find(|id| *id == image).cloned()))
    }

    async fn pull_image(&self, image: &str) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        state.pulls.push(image.to_owned());
        if let Some(message) = self.injected(&mut state, FakeOp::Pull) {
            return Err(RuntimeError::Pull {
                image: image.to_owned(),
                message,
            });
        }
        if !state.pullable.contains(&normalize(image)) {
            return Err(RuntimeError::Pull {
                image: image.to_owned(),
                message: format!(
                    "pull access denied for {}, repository does not exist or may require 'docker login'",
                    repository(image)
                ),
            });
        }
        drop(state);
        self.add_image(image);
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let operation = format!("create container {}", spec.name);
        let engine = |message: String| RuntimeError::Engine {
            operation: operation.clone(),
            message,
        };
        let mut state = self.lock();
        if let Some(message) = self.injected(&mut state, FakeOp::Create) {
            return Err(engine(message));
        }
        let seq = NEXT_CONTAINER.fetch_add(1, Ordering::Relaxed);
        let id = hex_id(splitmix(seq));
        let name = if spec.name.is_empty() {
            format!("fake_{seq}")
        } else {
            spec.name.clone()
        };
        if !valid_name(&name) {
            return Err(engine(format!(
                "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        if let Some(other) = state.containers.values().find(|c| c.info.name == name) {
            return Err(engine(format!(
                "Conflict. The container name \"/{name}\" is already in use by container \"{}\". \
                 You have to remove (or rename) that container to be able to reuse that name.",
                other.info.id
            )));
        }
        let Some(image_id) = state.images.get(&normalize(&spec.image)).cloned() else {
            return Err(engine(format!("No such image: {}", spec.image)));
        };
        let info = ContainerInfo {
            id: id.clone(),
            name,
            image: spec.image.clone(),
            image_id,
            labels: spec.labels.clone(),
            state: ContainerState {
                status: "created".into(),
                ..Default::default()
            },
            ip: None,
            created: Some(jiff::Timestamp::now().to_string()),
        };
        let (log_tx, _) = broadcast::channel(LOG_CHANNEL);
        let container = FakeContainer {
            seq,
            spec: spec.clone(),
            info,
            logs: Vec::new(),
            log_tx,
        };
        state.containers.insert(id.clone(), container);
        self.emit(&mut state, &id, "create", []);
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        let key =
            resolve(&state, id).ok_or_else(|| RuntimeError::NoSuchContainer(id.to_owned()))?;
        if let Some(message) = self.injected(&mut state, FakeOp::Start) {
            state
                .containers
                .get_mut(&key)
                .expect("resolved")
                .info
                .state
                .error = Some(message.clone());
            return Err(RuntimeError::Engine {
                operation: format!("start container {id}"),
                message,
            });
        }
        let container = state.containers.get_mut(&key).expect("resolved");
        if container.info.state.running {
            return Ok(());
        }
        container.info.state = ContainerState {
            status: "running".into(),
            running: true,
            started_at: Some(jiff::Timestamp::now().to_string()),
            ..Default::default()
        };
        container.info.ip = Some(next_address());
        self.emit(&mut state, &key, "start", []);
        Ok(())
    }

    /// Stops at once (nothing runs to take the grace period), with the stop exit code.
    async fn stop(&self, id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        let delay = {
            let mut state = self.lock();
            if let Some(message) = self.injected(&mut state, FakeOp::Stop) {
                return Err(RuntimeError::Engine {
                    operation: format!("stop container {id}"),
                    message,
                });
            }
            state.stop_delay
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut state = self.lock();
        let Some(key) = resolve(&state, id) else {
            return Ok(());
        };
        if !state.containers[&key].info.state.running {
            return Ok(());
        }
        let code = state.stop_exit_code;
        self.emit(&mut state, &key, "kill", [("signal", "15".into())]);
        self.exit(&mut state, &key, code, false);
        self.emit(&mut state, &key, "stop", []);
        Ok(())
    }

    /// Every signal is fatal here; the exit code is 128 + the signal's number.
    async fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        if let Some(message) = self.injected(&mut state, FakeOp::Kill) {
            return Err(RuntimeError::Engine {
                operation: format!("kill container {id} with {signal}"),
                message,
            });
        }
        let Some(key) = resolve(&state, id) else {
            return Ok(());
        };
        if !state.containers[&key].info.state.running {
            return Ok(());
        }
        self.emit(
            &mut state,
            &key,
            "kill",
            [("signal", signal_number(signal).to_string())],
        );
        self.exit(&mut state, &key, signal_exit_code(signal), false);
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        if let Some(message) = self.injected(&mut state, FakeOp::Remove) {
            return Err(RuntimeError::Engine {
                operation: format!("remove container {id}"),
                message,
            });
        }
        let Some(key) = resolve(&state, id) else {
            return Ok(());
        };
        if state.containers[&key].info.state.running {
            self.emit(&mut state, &key, "kill", [("signal", "9".into())]);
            self.exit(&mut state, &key, 137, false);
        }
        self.emit(&mut state, &key, "destroy", []);
        if let Some(container) = state.containers.remove(&key) {
            let _ = container.log_tx.send(None);
        }
        Ok(())
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        let mut state = self.lock();
        if let Some(message) = self.injected(&mut state, FakeOp::Inspect) {
            return Err(RuntimeError::Engine {
                operation: format!("inspect container {id}"),
                message,
            });
        }
        Ok(resolve(&state, id).map(|key| state.containers[&key].info.clone()))
    }

    /// Newest first, as Docker lists them.
    async fn list(&self, labels: &[(String, String)]) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let mut state = self.lock();
        if let Some(message) = self.injected(&mut state, FakeOp::List) {
            return Err(RuntimeError::Engine {
                operation: "list containers".into(),
                message,
            });
        }
        let mut matching: Vec<&FakeContainer> = state
            .containers
            .values()
            .filter(|c| has_labels(&c.info.labels, labels))
            .collect();
        matching.sort_by_key(|c| std::cmp::Reverse(c.seq));
        Ok(matching.into_iter().map(|c| c.info.clone()).collect())
    }

    async fn events(
        &self,
        labels: &[(String, String)],
        since_nanos: Option<i64>,
    ) -> Result<EventStream, RuntimeError> {
        let (past, live) = {
            let state = self.lock();
            // Subscribing under the lock that every emit holds: nothing is missed or
            // seen twice between the replay and the live stream.
            let live = self.events.subscribe();
            let past: Vec<RuntimeEvent> = match since_nanos {
                Some(since) => state
                    .history
                    .iter()
                    .filter(|e| e.time_nanos >= since && has_labels(&e.labels, labels))
                    .cloned()
                    .collect(),
                None => Vec::new(),
            };
            (past, live)
        };
        let labels = labels.to_vec();
        let live = BroadcastStream::new(live).filter_map(move |item| {
            let item = match item {
                Ok(event) => has_labels(&event.labels, &labels).then_some(Ok(event)),
                Err(BroadcastStreamRecvError::Lagged(n)) => Some(Err(RuntimeError::Engine {
                    operation: "watch container events".into(),
                    message: format!("the watcher fell behind and lost {n} events"),
                })),
            };
            futures::future::ready(item)
        });
        Ok(Box::pin(
            futures::stream::iter(past.into_iter().map(Ok)).chain(live),
        ))
    }

    /// With `follow`, goes on with what is pushed until the container stops.
    async fn logs(&self, id: &str, opts: &LogOptions) -> Result<LogStream, RuntimeError> {
        let state = self.lock();
        let key =
            resolve(&state, id).ok_or_else(|| RuntimeError::NoSuchContainer(id.to_owned()))?;
        let container = &state.containers[&key];
        let past = futures::stream::iter(render_lines(&container.logs, opts).into_iter().map(Ok));
        if !(opts.follow && container.info.state.running) {
            return Ok(Box::pin(past));
        }
        let timestamps = opts.timestamps;
        let live = BroadcastStream::new(container.log_tx.subscribe())
            .take_while(|item| futures::future::ready(!matches!(item, Ok(None))))
            .map(move |item| match item {
                Ok(line) => Ok(line
                    .map(|line| render_line(&line, timestamps))
                    .unwrap_or_default()),
                Err(BroadcastStreamRecvError::Lagged(n)) => Err(RuntimeError::Engine {
                    operation: format!("follow logs of container {key}"),
                    message: format!("the reader fell behind and lost {n} lines"),
                }),
            });
        Ok(Box::pin(past.chain(live)))
    }

    /// Answers with the configured result at once; the timeout never fires.
    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        _timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let operation = format!("exec {cmd:?} in container {id}");
        let (handler, info) = {
            let mut state = self.lock();
            let key =
                resolve(&state, id).ok_or_else(|| RuntimeError::NoSuchContainer(id.to_owned()))?;
            if let Some(message) = self.injected(&mut state, FakeOp::Exec) {
                return Err(RuntimeError::Engine { operation, message });
            }
            let info = state.containers[&key].info.clone();
            if !info.state.running {
                return Err(not_running(operation, &info.id));
            }
            (state.exec.clone(), info)
        };
        handler(&info, cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::Stream;

    const WAIT: Duration = Duration::from_secs(5);
    const IMAGE: &str = "tugboat/sample:latest";

    fn spec(name: &str, labels: &[(&str, &str)]) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            image: IMAGE.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    async fn next<T>(stream: &mut (impl Stream<Item = Result<T, RuntimeError>> + Unpin)) -> T {
        tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("an item within the timeout")
            .expect("the stream goes on")
            .expect("no error")
    }

    /// The actions the stream yields until (and including) `last`.
    async fn actions_until(stream: &mut EventStream, last: &str) -> Vec<(String, RuntimeEvent)> {
        let mut seen = Vec::new();
        loop {
            let event = next(stream).await;
            let done = event.action == last;
            seen.push((event.action.clone(), event));
            if done {
                return seen;
            }
        }
    }

    #[tokio::test]
    async fn a_created_container_starts_running_with_an_address() {
        let fake = FakeRuntime::new().with_images(&[IMAGE]);
        let id = fake.create(&spec("web", &[])).await.unwrap();
        let created = fake.inspect(&id).await.unwrap().unwrap();
        assert_eq!(created.state.status, "created");
        assert!(!created.state.running);
        assert_eq!(created.name, "web");
        assert!(created.image_id.starts_with("sha256:"));

        fake.start(&id).await.unwrap();
        let running = fake.inspect("web").await.unwrap().unwrap();
        assert_eq!(running.state.status, "running");
        assert!(running.state.running);
        assert!(running.state.started_at.is_some());
        assert_eq!(running.state.exit_code, None);
        assert!(running.ip.unwrap().starts_with("10."));
        assert_eq!(fake.container_count(), 1);
    }

    #[tokio::test]
    async fn killing_emits_kill_and_die_with_the_exit_code() {
        let fake = FakeRuntime::new().with_images(&[IMAGE]);
        let mut events = fake.events(&[], None).await.unwrap();
        let id = fake.create(&spec("web", &[])).await.unwrap();
        fake.start(&id).await.unwrap();
        fake.kill(&id, "SIGKILL").await.unwrap();

        let seen = actions_until(&mut events, "die").await;
        let actions: Vec<&str> = seen.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(actions, ["create", "start", "kill", "die"]);
        let die = &seen[3].1;
        assert_eq!(die.container_id, id);
        assert_eq!(die.labels["exitCode"], "137");
        let state = fake.inspect(&id).await.unwrap().unwrap().state;
        assert_eq!(
            (state.status.as_str(), state.running, state.exit_code),
            ("exited", false, Some(137))
        );
        assert!(state.finished_at.is_some());
    }

    #[tokio::test]
    async fn stopping_exits_143_and_stopping_again_is_fine() {
        let fake = FakeRuntime::new().with_images(&[IMAGE]);
        let id = fake.create(&spec("web", &[])).await.unwrap();
        fake.start(&id).await.unwrap();
        fake.stop(&id, Duration::from_secs(30)).await.unwrap();
        fake.stop(&id, Duration::from_secs(30)).await.unwrap();
        fake.stop("missing", Duration::from_secs(30)).await.unwrap();
        assert_eq!(
            fake.inspect(&id).await.unwrap().unwrap().state.exit_code,
            Some(143)
        );
    }

    #[tokio::test]
    async fn a_crash_emits_die_with_its_exit_code() {
        let fake = FakeRuntime::new().with_images(&[IMAGE]);
        let id = fake.create(&spec("web", &[])).await.unwrap();
        fake.start(&id).await.unwrap();
        let mut events = fake.events(&[], None).await.unwrap();
        fake.crash(&id, 3).unwrap();
        let die = next(&mut events).await;
        assert_eq!(
            (die.action.as_str(), die.labels["exitCode"].as_str()),
            ("die", "3")
        );
        assert!(
            fake.crash(&id, 3).is_err(),
            "an exited container cannot crash again"
        );
    }

    #[tokio::test]
    async fn removing_emits_destroy_and_forgets_the_container() {
        let fake = FakeRuntime::new().with_images(&[IMAGE]);
        let id = fake.create(&spec("web", &[])).await.unwrap();
        fake.start(&id).await.unwrap();
        let mut events = fake.events(&[], None).await.unwrap();
        fake.remove(&id).await.unwrap();
        let seen = actions_until(&mut events, "destroy").await;
        let actions: Vec<&str> = seen.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(actions, ["kill", "die", "destroy"]);
        assert_eq!(fake.inspect(&id).await.unwrap(), None);
        assert_eq!(fake.container_count(), 0);
        fake.remove(&id).await.unwrap();
    }

    #[tokio::test]
    async fn list_and_events_honour_label_filters() {
        let fake = FakeRuntime::new().with_images(&[IMAGE]);
        let mine = labels(&[("io.tugboat.node", "a")]);
        let mut events = fake.events(&mine, None).await.unwrap();
        let a = fake
            .create(&spec("web-a", &[("io.tugboat.node", "a"), ("app", "web")]))
            .await
            .unwrap();
        fake.create(&spec("web-b", &[("io.tugboat.node", "b")]))
            .await
            .unwrap();
        let a2 = fake
            .create(&spec("web-a2", &[("io.tugboat.node", "a")]))
            .await
            .unwrap();

        let listed: Vec<String> = fake
            .list(&mine)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(
            listed,
            [a2.clone(), a.clone()],
            "newest first, only node a's"
        );
        let both = labels(&[("io.tugboat.node", "a"), ("app", "web")]);
        assert_eq!(fake.list(&both).await.unwrap().len(), 1);
        assert_eq!(fake.list(&[]).await.unwrap().len(), 3);

        assert_eq!(next(&mut events).await.container_id, a);
        assert_eq!(
            next(&mut events).await.container_id,
            a2,
            "b's create is filtered out"
        );
    }

    #[tokio::test]
    async fn events_since_a_time_replay_what_came_after_it() {
        let fake = FakeRuntime::new().with_images(&[IMAGE]);
        let id = fake.create(&spec("web", &[])).await.unwrap();
        let mut all = fake.events(&[], Some(0)).await.unwrap();
        let create = next(&mut all).await;
        assert_eq!(create.action, "create");
        fake.start(&id).await.unwrap();
        let start = next(&mut all).await;

        let mut resumed = fake.events(&[], Some(create.time_nanos + 1)).await.unwrap();
        assert_eq!(next(&mut resumed).await, start);
    }

    #[tokio::test]
    async fn pulling_an_unknown_image_fails_like_docker() {
        let fake = FakeRuntime::new().with_pullable(&["nginx"]);
        let error = fake.pull_image("tugboat/nope:1.0").await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "pulling image tugboat/nope:1.0: pull access denied for tugboat/nope, \
             repository does not exist or may require 'docker login'"
        );
        assert_eq!(fake.image_id("nginx:latest").await.unwrap(), None);
        fake.pull_image("docker.io/library/nginx").await.unwrap();
        assert!(fake.image_id("nginx").await.unwrap().is_some());
        assert_eq!(
            fake.pulls(),
            ["tugboat/nope:1.0", "docker.io/library/nginx"]
        );
    }

    #[tokio::test]
    async fn a_taken_name_is_a_conflict() {
        let fake = FakeRuntime::new().with_images(&[IMAGE]);
        let id = fake
            .create(&spec("tug_default_web_web_0", &[]))
            .await
            .unwrap();
        let error = fake
            .create(&spec("tug_default_web_web_0", &[]))
            .await
            .unwrap_err();
        let RuntimeError::Engine { operation, message } = error else {
            panic!("{error:?}")
        };
        assert_eq!(operation, "create container tug_default_web_web_0");
        assert!(message.starts_with(
            "Conflict. The container name \"/tug_default_web_web_0\" is already in use"
        ));
        assert!(message.contains(&id));
    }

    #[tokio::test]
    async fn creating_from_a_missing_image_fails() {
        let fake = FakeRuntime::new();
        let error = fake.create(&spec("web", &[])).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "create container web: No such image: tugboat/sample:latest"
        );
    }

    #[tokio::test]
    async fn logs_return_what_was_pushed_and_follow_until_the_container_stops() {
        let fake = FakeRuntime::new().with_images(&[IMAGE]);
        let id = fake.create(&spec("web", &[])).await.unwrap();
        fake.start(&id).await.unwrap();
        fake.push_log(&id, "one\ntwo\nthree\n").unwrap();

        let tail = LogOptions {
            tail: Some(2),
            ..Default::default()
        };
        let got: Vec<Bytes> = fake
            .logs(&id, &tail)
            .await
            .unwrap()
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(got, [Bytes::from("two\n"), Bytes::from("three\n")]);

        let follow = LogOptions {
            follow: true,
            tail: Some(0),
            ..Default::default()
        };
        let mut stream = fake.logs(&id, &follow).await.unwrap();
        fake.push_log(&id, "four\n").unwrap();
        assert_eq!(next(&mut stream).await, Bytes::from("four\n"));
        fake.kill(&id, "SIGTERM").await.unwrap();
        let end = tokio::time::timeout(WAIT, stream.next()).await.unwrap();
        assert!(end.is_none(), "follow ends when the container stops");

        let stamped = LogOptions {
            timestamps: true,
            tail: Some(1),
            ..Default::default()
        };
        let line = fake
            .logs(&id, &stamped)
            .await
            .unwrap()
            .next()
            .await
            .unwrap()
            .unwrap();
        assert!(line.ends_with(b" four\n") && line.len() > 20, "{line:?}");
    }

    #[tokio::test]
    async fn exec_answers_what_was_configured_while_running() {
        let fake = FakeRuntime::new().with_images(&[IMAGE]);
        let id = fake.create(&spec("web", &[])).await.unwrap();
        let cmd = vec!["cat".to_owned(), "/tmp/healthy".to_owned()];
        assert!(fake.exec(&id, &cmd, WAIT).await.is_err(), "not running yet");
        fake.start(&id).await.unwrap();
        assert_eq!(fake.exec(&id, &cmd, WAIT).await.unwrap().exit_code, 0);
        fake.set_exec_result(ExecOutput {
            exit_code: 1,
            output: "no such file".into(),
        });
        let out = fake.exec(&id, &cmd, WAIT).await.unwrap();
        assert_eq!((out.exit_code, out.output.as_str()), (1, "no such file"));
    }

    #[tokio::test]
    async fn an_injected_failure_fails_once() {
        let fake = FakeRuntime::new().with_images(&[IMAGE]);
        let id = fake.create(&spec("web", &[])).await.unwrap();
        fake.fail_next(FakeOp::Start, "exec: \"/tug-sample\": permission denied");
        let error = fake.start(&id).await.unwrap_err();
        assert!(error.to_string().contains("permission denied"));
        assert!(
            fake.inspect(&id)
                .await
                .unwrap()
                .unwrap()
                .state
                .error
                .is_some()
        );
        fake.start(&id).await.unwrap();
    }

    #[tokio::test]
    async fn an_oom_kill_sets_oom_killed() {
        let fake = FakeRuntime::new().with_images(&[IMAGE]);
        let id = fake.create(&spec("web", &[])).await.unwrap();
        fake.start(&id).await.unwrap();
        let mut events = fake.events(&[], None).await.unwrap();
        fake.oom_kill(&id).unwrap();
        assert_eq!(next(&mut events).await.action, "oom");
        assert_eq!(next(&mut events).await.action, "die");
        let state = fake.inspect(&id).await.unwrap().unwrap().state;
        assert!(state.oom_killed);
        assert_eq!(state.exit_code, Some(137));
    }

    #[test]
    fn signals_give_shell_exit_codes() {
        assert_eq!(signal_exit_code("SIGKILL"), 137);
        assert_eq!(signal_exit_code("TERM"), 143);
        assert_eq!(signal_exit_code("2"), 130);
    }
}
