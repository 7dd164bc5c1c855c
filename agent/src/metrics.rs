//! The node's usage figures, for the controller's metrics API and autoscaler
//! (`GET /stats/summary`, [`tugboat_api::metrics`]). The [`Collector`] owns one
//! stats stream per running container of this node's pods, the CPU rate and
//! working set computed from each stream's last two samples, and the node's own
//! figures ([`host`], or the sum of the pods' on a hollow node).
//!
//! Why streams: the engine sends a sample about every second over one long
//! request per container, so following a container costs no request per
//! sample. A stream starts when Docker reports the container's `start` and ends
//! with its `die` or `destroy` (the events the agent already follows, passed on
//! by [`crate::pods`] through [`Collector::observe`]) or when the engine ends it.
//! A list of the node's containers every [`RELIST`] catches what the events did
//! not say (containers running before the agent started, a watcher that lagged).
//!
//! Bounded: one entry per running container (at most [`MAX_CONTAINERS`]), removed
//! when it stops or goes; each keeps only its last sample and rate.

pub mod host;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tugboat_api::metrics::{ContainerUsage, EndpointConnections, NodeUsage, PodUsage, Summary};

use crate::proxy::sandbox::LABEL_ROLE;
use crate::runtime::{
    ContainerRuntime, ContainerStats, LABEL_CONTAINER_NAME, LABEL_NODE, LABEL_POD_NAME,
    LABEL_POD_NAMESPACE, LABEL_POD_UID, NodeFigures, RuntimeEvent,
};

/// How often the node's containers are listed, to follow what the events missed.
pub const RELIST: Duration = Duration::from_secs(10);
/// How often the host is read: as often as the engine samples containers, so the
/// node's window matches its pods'.
pub const HOST_PERIOD: Duration = Duration::from_secs(1);
/// The most containers followed at once (a node runs at most `--max-pods`).
pub const MAX_CONTAINERS: usize = 4096;
/// Container events waiting for the collector; past this a relist comes early.
const INBOX: usize = 1024;
/// The window reported for a hollow node running nothing yet.
const IDLE_WINDOW: Duration = Duration::from_secs(1);

/// CPU over the time between two samples, and memory at the later one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// When the later sample was taken.
    pub timestamp: jiff::Timestamp,
    /// The time between the two samples.
    pub window: Duration,
    pub cpu_nano_cores: u64,
    pub memory_working_set: u64,
}

/// The rate between two samples of one container: nanocores are the CPU
/// nanoseconds used per second of `read` time. `None` when `later` is not later,
/// or its CPU counter went back (the engine's counters started over).
pub fn rate(earlier: &ContainerStats, later: &ContainerStats) -> Option<Rate> {
    let window = Duration::try_from(later.read.duration_since(earlier.read))
        .ok()
        .filter(|w| !w.is_zero())?;
    let used = later.cpu_total_ns.checked_sub(earlier.cpu_total_ns)?;
    let nano_cores = u128::from(used) * 1_000_000_000 / window.as_nanos();
    Some(Rate {
        timestamp: later.read,
        window,
        cpu_nano_cores: u64::try_from(nano_cores).unwrap_or(u64::MAX),
        memory_working_set: later.memory_working_set,
    })
}

/// A pod's identity, from its container's labels.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PodRef {
    namespace: String,
    name: String,
    uid: String,
}

/// One followed container.
struct Followed {
    /// Tells this entry from a later one for the same container (restarted).
    generation: u64,
    stop: CancellationToken,
    pod: PodRef,
    container: String,
    last: Option<ContainerStats>,
    rate: Option<Rate>,
}

#[derive(Default)]
struct State {
    /// By container ID.
    containers: HashMap<String, Followed>,
    next_generation: u64,
    host: Option<host::HostSample>,
    host_rate: Option<Rate>,
}

/// The collector's figures, shared by its task (the writer) and the server.
pub struct Collector {
    node: String,
    figures: NodeFigures,
    state: Mutex<State>,
    inbox: mpsc::Sender<RuntimeEvent>,
    /// Set when an event could not be queued: relist at once.
    missed: AtomicBool,
    relist_now: Notify,
    /// Warned once that [`MAX_CONTAINERS`] was reached.
    full_reported: AtomicBool,
}

/// Where the collector's task reads the events [`Collector::observe`] passes on.
pub struct Inbox(mpsc::Receiver<RuntimeEvent>);

impl Collector {
    /// The collector of node `node`, whose own figures come from `figures`; its
    /// task is [`run`] with the returned [`Inbox`].
    pub fn new(node: &str, figures: NodeFigures) -> (Arc<Collector>, Inbox) {
        let (tx, rx) = mpsc::channel(INBOX);
        let collector = Collector {
            node: node.to_owned(),
            figures,
            state: Mutex::default(),
            inbox: tx,
            missed: AtomicBool::new(false),
            relist_now: Notify::new(),
            full_reported: AtomicBool::new(false),
        };
        (Arc::new(collector), Inbox(rx))
    }

    /// Passes on one of the engine's container events (any; those that start or
    /// end a pod container's stream are kept). Never waits.
    pub fn observe(&self, event: &RuntimeEvent) {
        if !matches!(event.action.as_str(), "start" | "die" | "destroy")
            || !is_pod_container(&event.labels)
        {
            return;
        }
        if self.inbox.try_send(event.clone()).is_err() {
            self.missed.store(true, Ordering::Relaxed);
            self.relist_now.notify_one();
        }
    }

    /// How many containers are followed now.
    pub fn following(&self) -> usize {
        self.state().containers.len()
    }

    /// The node's figures, its pods' (each once every running container of it has
    /// a rate) and `endpoints`; `None` while the host has not been read twice.
    pub fn summary(&self, endpoints: Vec<EndpointConnections>) -> Option<Summary> {
        let state = self.state();
        let mut by_pod: BTreeMap<&PodRef, Vec<(&str, Option<Rate>)>> = BTreeMap::new();
        for f in state.containers.values() {
            by_pod
                .entry(&f.pod)
                .or_default()
                .push((f.container.as_str(), f.rate));
        }
        let mut pods = Vec::new();
        for (pod, mut containers) in by_pod {
            // A restarted container's new attempt may overlap its old one for a
            // moment: keep the newest figures of each name.
            containers.sort_by(|a, b| {
                a.0.cmp(b.0)
                    .then_with(|| b.1.map(|r| r.timestamp).cmp(&a.1.map(|r| r.timestamp)))
            });
            containers.dedup_by(|later, kept| later.0 == kept.0);
            let Some(rates) = containers
                .iter()
                .map(|(name, rate)| rate.map(|r| (*name, r)))
                .collect::<Option<Vec<_>>>()
            else {
                continue;
            };
            let (Some(timestamp), Some(window)) = (
                rates.iter().map(|(_, r)| r.timestamp).min(),
                rates.iter().map(|(_, r)| r.window).max(),
            ) else {
                continue;
            };
            pods.push(PodUsage {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                timestamp,
                window,
                containers: rates
                    .iter()
                    .map(|(name, r)| ContainerUsage {
                        name: (*name).to_owned(),
                        cpu_nano_cores: r.cpu_nano_cores,
                        memory_working_set_bytes: r.memory_working_set,
                    })
                    .collect(),
            });
        }
        let node = match self.figures {
            NodeFigures::Host => state.host_rate?,
            NodeFigures::SumOfPods => sum_of(&pods),
        };
        Some(Summary {
            node: NodeUsage {
                name: self.node.clone(),
                timestamp: node.timestamp,
                window: node.window,
                cpu_nano_cores: node.cpu_nano_cores,
                memory_working_set_bytes: node.memory_working_set,
            },
            pods,
            endpoints,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts following container `id` unless it already is.
    fn follow(
        self: &Arc<Self>,
        id: &str,
        labels: &BTreeMap<String, String>,
        runtime: &Arc<dyn ContainerRuntime>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        let (Some(pod), Some(container)) = (pod_of(labels), labels.get(LABEL_CONTAINER_NAME))
        else {
            return;
        };
        let mut state = self.state();
        if state.containers.contains_key(id) {
            return;
        }
        if state.containers.len() >= MAX_CONTAINERS {
            drop(state);
            if !self.full_reported.swap(true, Ordering::Relaxed) {
                tracing::warn!(node = %self.node, limit = MAX_CONTAINERS, "too many containers to follow their usage; leaving some out");
            }
            return;
        }
        let generation = state.next_generation;
        state.next_generation += 1;
        let stop = shutdown.child_token();
        state.containers.insert(
            id.to_owned(),
            Followed {
                generation,
                stop: stop.clone(),
                pod,
                container: container.clone(),
                last: None,
                rate: None,
            },
        );
        drop(state);
        tracker.spawn(follow_stream(
            self.clone(),
            runtime.clone(),
            id.to_owned(),
            generation,
            stop,
        ));
    }

    /// Stops following container `id`.
    fn unfollow(&self, id: &str) {
        if let Some(f) = self.state().containers.remove(id) {
            f.stop.cancel();
        }
    }

    fn record(&self, id: &str, generation: u64, sample: ContainerStats) {
        let mut state = self.state();
        let Some(f) = state
            .containers
            .get_mut(id)
            .filter(|f| f.generation == generation)
        else {
            return;
        };
        if let Some(r) = f.last.as_ref().and_then(|last| rate(last, &sample)) {
            f.rate = Some(r);
        }
        f.last = Some(sample);
    }

    /// Forgets container `id` if this is still the entry of `generation` (its
    /// stream ended).
    fn forget(&self, id: &str, generation: u64) {
        let mut state = self.state();
        if state
            .containers
            .get(id)
            .is_some_and(|f| f.generation == generation)
        {
            state.containers.remove(id);
        }
    }

    /// Follows every running pod container the engine lists for this node, and
    /// stops following those it does not list as running (unless they were
    /// started after the list was asked for: the list may not know them yet).
    async fn relist(
        self: &Arc<Self>,
        runtime: &Arc<dyn ContainerRuntime>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        let asked_at = self.state().next_generation;
        let listed = match runtime
            .list(&[(LABEL_NODE.to_owned(), self.node.clone())])
            .await
        {
            Ok(listed) => listed,
            Err(e) => {
                tracing::debug!(node = %self.node, error = %e, "cannot list containers to follow their usage; retrying");
                return;
            }
        };
        let running: HashMap<&str, &BTreeMap<String, String>> = listed
            .iter()
            .filter(|c| c.state.running && is_pod_container(&c.labels))
            .map(|c| (c.id.as_str(), &c.labels))
            .collect();
        self.state().containers.retain(|id, f| {
            let keep = running.contains_key(id.as_str()) || f.generation >= asked_at;
            if !keep {
                f.stop.cancel();
            }
            keep
        });
        for (id, labels) in running {
            self.follow(id, labels, runtime, tracker, shutdown);
        }
    }

    async fn read_host(&self) {
        let Some(sample) = host::read().await else {
            return;
        };
        let mut state = self.state();
        if let Some(r) = state.host.as_ref().and_then(|h| host::rate(h, &sample)) {
            state.host_rate = Some(r);
        }
        state.host = Some(sample);
    }
}

/// Follows the engine's events (through [`Collector::observe`]) and the node's
/// containers until `shutdown`; the streams run on `tracker` and end with it.
pub async fn run(
    collector: Arc<Collector>,
    runtime: Arc<dyn ContainerRuntime>,
    inbox: Inbox,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let Inbox(mut inbox) = inbox;
    let mut relist = tokio::time::interval(RELIST);
    relist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut host = tokio::time::interval(HOST_PERIOD);
    host.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let read_host = collector.figures == NodeFigures::Host;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = relist.tick() => collector.relist(&runtime, &tracker, &shutdown).await,
            _ = collector.relist_now.notified() => {
                if collector.missed.swap(false, Ordering::Relaxed) {
                    collector.relist(&runtime, &tracker, &shutdown).await;
                }
            }
            event = inbox.recv() => {
                let Some(event) = event else { break };
                let id = &event.container_id;
                match event.action.as_str() {
                    "start" => collector.follow(id, &event.labels, &runtime, &tracker, &shutdown),
                    _ => collector.unfollow(id),
                }
            }
            _ = host.tick(), if read_host => collector.read_host().await,
        }
    }
}

/// One container's stream: every sample recorded until the stream ends, the
/// container stops being followed, or the agent stops.
async fn follow_stream(
    collector: Arc<Collector>,
    runtime: Arc<dyn ContainerRuntime>,
    id: String,
    generation: u64,
    stop: CancellationToken,
) {
    let stream = tokio::select! {
        _ = stop.cancelled() => None,
        stream = runtime.stats(&id) => match stream {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(container = %id, error = %e, "cannot follow a container's usage");
                None
            }
        },
    };
    if let Some(mut stream) = stream {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                item = stream.next() => match item {
                    Some(Ok(sample)) => collector.record(&id, generation, sample),
                    Some(Err(e)) => {
                        tracing::debug!(container = %id, error = %e, "a container's usage stream failed");
                        break;
                    }
                    None => break,
                },
            }
        }
    }
    collector.forget(&id, generation);
}

/// A container of a pod (not the node's own, such as the service sandbox).
fn is_pod_container(labels: &BTreeMap<String, String>) -> bool {
    labels.contains_key(LABEL_POD_UID)
        && !labels.contains_key(LABEL_ROLE)
        && labels
            .get(crate::worker::sandbox::LABEL_CONTAINER_TYPE)
            .map(String::as_str)
            != Some(crate::worker::sandbox::TYPE_SANDBOX)
}

fn pod_of(labels: &BTreeMap<String, String>) -> Option<PodRef> {
    Some(PodRef {
        namespace: labels.get(LABEL_POD_NAMESPACE)?.clone(),
        name: labels.get(LABEL_POD_NAME)?.clone(),
        uid: labels.get(LABEL_POD_UID)?.clone(),
    })
}

/// A hollow node's figures: its pods' together, as of the latest of them (now,
/// with none).
fn sum_of(pods: &[PodUsage]) -> Rate {
    let containers = pods.iter().flat_map(|p| &p.containers);
    Rate {
        timestamp: pods
            .iter()
            .map(|p| p.timestamp)
            .max()
            .unwrap_or_else(jiff::Timestamp::now),
        window: pods.iter().map(|p| p.window).max().unwrap_or(IDLE_WINDOW),
        cpu_nano_cores: containers
            .clone()
            .fold(0u64, |s, c| s.saturating_add(c.cpu_nano_cores)),
        memory_working_set: containers
            .fold(0u64, |s, c| s.saturating_add(c.memory_working_set_bytes)),
    }
}
