//! Benchmark (not a test): how fast a Deployment heals after one of its containers
//! is killed, side by side with Docker Swarm on the same daemon, image and replica
//! count, in the same run.
//!
//! Each round SIGKILLs one container through the Docker API, timed from just before
//! the request, until Docker's event stream reports the replacement container
//! `start`ed ("Running": the same yardstick for both) and, for Tugboat, until a pod
//! watch shows the pod's new container running and the pod Ready ("Ready"). Rounds
//! alternate Tugboat and Swarm; before each kill both are whole again (6 running
//! replicas) and quiet for [`SETTLE`].
//!
//! Tugboat restarts a container's first crash at once and backs off from the second
//! on (reset after 10 minutes of good run), as the kubelet does; Swarm with
//! `--restart-delay 0` restarts at once every time, with a new task. Killing the same
//! pod twice would time Tugboat's back-off, not its healing, so no pod is killed
//! twice: after its round the killed pod is deleted and its ReplicaSet replaces it
//! with a fresh one, and the next round kills the oldest pod. Swarm's slots are
//! killed round-robin.
//!
//! `cargo bench -p tugboat-tests --bench selfheal` (`SELFHEAL_ROUNDS`, default 20).
//! Needs the Docker daemon. A daemon outside any swarm is made a single-node swarm
//! for the run and leaves it at the end (also on error, panic, Ctrl-C or SIGTERM); one
//! already in a swarm stays in it. Only what the benchmark created is removed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::bench::{Swarm, loadavg, output_of, utc_now};
use crate::docker::{DockerCluster, docker, sample_deployment};
use crate::eventually_within;
use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use serde_json::Value;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;
use tugboat_agent::runtime::docker::DockerRuntime;
use tugboat_agent::runtime::{
    ContainerInfo, ContainerRuntime, LABEL_POD_NAME, LABEL_POD_NAMESPACE, RuntimeEvent,
};
use tugboat_api::resource::PODS;
use tugboat_api::{Client, ListParams};

const REPLICAS: usize = 6;
/// The `selfheal` benchmark's round count unless `SELFHEAL_ROUNDS` says.
pub const DEFAULT_ROUNDS: usize = 20;
/// A kill not healed this long after is a failed round; also the longest wait for
/// either system to be whole again.
const HEAL_LIMIT: Duration = Duration::from_secs(30);
/// How long both systems are left alone, whole, before the next kill.
const SETTLE: Duration = Duration::from_millis(500);
const DEPLOYMENT: &str = "heal";
const IMAGE: &str = "tugboat/sample:latest";
const BENCH_LABEL: &str = "io.tugboat.bench=1";
const SERVICE_LABEL: &str = "com.docker.swarm.service.name";
/// `<service>.<slot>.<task id>`.
const TASK_LABEL: &str = "com.docker.swarm.task.name";
const TARGET_P50: Duration = Duration::from_millis(300);
const TARGET_P99: Duration = Duration::from_secs(1);

/// The medians of a self-heal run (seconds).
#[derive(Clone, Copy, Debug)]
pub struct HealSummary {
    pub rounds: usize,
    /// Kill → replacement `start`, p50.
    pub tugboat_running: f64,
    /// Kill → the pod Ready again, p50.
    pub tugboat_ready: f64,
    pub swarm_running: f64,
}

/// The `selfheal` benchmark: runs `rounds` rounds and prints its full report.
pub async fn run_and_report(rounds: usize) -> anyhow::Result<HealSummary> {
    run(rounds, true).await
}

/// `rounds` rounds of self-heal, Tugboat and Swarm alternating, printing only
/// each round (to stderr); the medians.
pub async fn measure(rounds: usize) -> anyhow::Result<HealSummary> {
    run(rounds, false).await
}

async fn run(rounds: usize, report: bool) -> anyhow::Result<HealSummary> {
    let runtime = Arc::new(DockerRuntime::connect(None).await?);
    let host = runtime.host_info().await?;
    let date = utc_now();
    let code = output_of("git", &["describe", "--always", "--dirty"]);
    let load_before = loadavg();

    // The cluster first: it rebuilds the sample image the Swarm service runs too.
    let cluster = DockerCluster::start("selfheal", 1).await?;
    let swarm = Swarm::join()?;
    let service = SwarmService::create(&format!("tugbench-{}", std::process::id()))?;

    let (tx, mut rx) = unbounded_channel();
    let _observers = Observers(vec![
        tokio::spawn(forward_docker_events(runtime.clone(), tx.clone())),
        tokio::spawn(forward_pods(
            cluster.client.clone(),
            cluster.namespace.clone(),
            tx,
        )),
    ]);
    cluster
        .apply(&sample_deployment(DEPLOYMENT, REPLICAS as i64))
        .await?;
    let mut tugboat = TugboatSide {
        cluster: &cluster,
        runtime: &runtime,
        killed: BTreeSet::new(),
    };
    let swarm_side = SwarmSide {
        service: &service.name,
        runtime: &runtime,
    };
    tugboat.whole().await?;
    eventually_within(
        Duration::from_secs(60),
        &format!("the Swarm service runs {REPLICAS} tasks"),
        || async { swarm_side.whole().await.ok() },
    )
    .await?;
    let (docker_events, pod_events) = drain(&mut rx);
    if docker_events == 0 || pod_events == 0 {
        bail!(
            "the observers saw {docker_events} Docker events and {pod_events} pod events while \
             {REPLICAS} pods started: they cannot time anything"
        );
    }

    let mut tug_heals = Vec::with_capacity(rounds);
    let mut swarm_heals = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let pods = tugboat.whole().await?;
        tokio::time::sleep(SETTLE).await;
        let (pod, id) = &pods[0];
        let heal = tugboat.kill(&mut rx, pod, id).await?;
        eprintln!(
            "round {}/{rounds} tugboat (pod {pod}): {}",
            round + 1,
            heal.summary()
        );
        tug_heals.push(heal);

        let tasks = swarm_side.whole().await?;
        tokio::time::sleep(SETTLE).await;
        let (slot, id) = &tasks[round % tasks.len()];
        let heal = swarm_side.kill(&mut rx, id).await;
        eprintln!(
            "round {}/{rounds} swarm   (slot {slot}): {}",
            round + 1,
            heal.summary()
        );
        swarm_heals.push(heal);
    }
    // Both whole again, so the last round's failure (if any) is not hidden by teardown.
    tugboat.whole().await?;
    swarm_side.whole().await?;

    let tug_running: Vec<Duration> = tug_heals.iter().filter_map(|h| h.running).collect();
    let tug_ready: Vec<Duration> = tug_heals.iter().filter_map(|h| h.ready).collect();
    let swarm_running: Vec<Duration> = swarm_heals.iter().filter_map(|h| h.running).collect();
    if report {
        println!();
        println!(
            "self-heal after docker kill, N={rounds} rounds, {REPLICAS} replicas, same daemon, {date}"
        );
        println!(
            "code {code}, engine {}, {} CPUs, load average {load_before} before, {} after; \
             Tugboat: 1 agent",
            host.runtime_version,
            host.cpus,
            loadavg()
        );
        println!(
            "{:<21}{:>10}{:>10}{:>10}{:>10}{:>8}",
            "", "p50", "p90", "p99", "max", "healed"
        );
        println!("{}", row("tugboat  → Running", &tug_running, rounds));
        println!("{}", row("tugboat  → Ready", &tug_ready, rounds));
        println!("{}", row("swarm    → Running", &swarm_running, rounds));
        println!(
            "{:<21}{:>10}",
            "swarm    → Ready", "= Running (no readiness probe; Swarm has no Ready to watch)"
        );
        println!();
        println!(
            "where the time goes (medians){:>27}{:>12}{:>14}{:>14}",
            "kill→die", "die→create", "create→start", "start→Ready"
        );
        println!("{}", breakdown("tugboat", &tug_heals));
        println!("{}", breakdown("swarm", &swarm_heals));
        println!(
            "tugboat, after the kill: the API shows the pod not Ready at {} ({} of {rounds} rounds), \
             the replacement is created at {} (medians)",
            median(&tug_heals, &|h| h.not_ready),
            tug_heals.iter().filter(|h| h.not_ready.is_some()).count(),
            median(&tug_heals, &|h| {
                u64::try_from(h.created? - h.killed_at)
                    .ok()
                    .map(Duration::from_nanos)
            }),
        );
        println!();
        let mut sorted = tug_running.clone();
        sorted.sort();
        let verdict = |p: usize, target: Duration| match nearest_rank(&sorted, p) {
            Some(v) if v <= target && sorted.len() == rounds => "met",
            _ => "missed",
        };
        println!(
            "target, tugboat → Running: p50 ≤ {} {}, p99 ≤ {} {}",
            secs(TARGET_P50),
            verdict(50, TARGET_P50),
            secs(TARGET_P99),
            verdict(99, TARGET_P99)
        );
    }
    drop(_observers);
    drop(service);
    drop(swarm);
    drop(cluster);
    let failed = tug_heals.iter().filter(|h| !h.healed(true)).count()
        + swarm_heals.iter().filter(|h| !h.healed(false)).count();
    if failed > 0 {
        bail!(
            "{failed} kills were not healed within {HEAL_LIMIT:?} (see the rounds above and the \
             healed column)"
        );
    }
    let p50 = |samples: &[Duration]| {
        let mut sorted = samples.to_vec();
        sorted.sort();
        nearest_rank(&sorted, 50).map_or(f64::NAN, |d| d.as_secs_f64())
    };
    Ok(HealSummary {
        rounds,
        tugboat_running: p50(&tug_running),
        tugboat_ready: p50(&tug_ready),
        swarm_running: p50(&swarm_running),
    })
}

/// Something an observer saw, stamped when it arrived here.
struct Observation {
    at: Instant,
    seen: Seen,
}

enum Seen {
    /// A container's `create`, `start` or `die`.
    Docker(RuntimeEvent),
    /// A pod as an ADDED or MODIFIED watch event showed it.
    Pod(Value),
}

/// The observer tasks, stopped on drop.
struct Observers(Vec<JoinHandle<()>>);

impl Drop for Observers {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Forwards every container's `create`, `start` and `die` from the daemon's event
/// stream (one stream for both systems), reconnecting where it broke off.
async fn forward_docker_events(runtime: Arc<DockerRuntime>, tx: UnboundedSender<Observation>) {
    let mut since = None;
    loop {
        match runtime.events(&[], since).await {
            Ok(mut events) => {
                while let Some(Ok(event)) = events.next().await {
                    let at = Instant::now();
                    since = Some(event.time_nanos);
                    if !matches!(event.action.as_str(), "create" | "start" | "die") {
                        continue;
                    }
                    let seen = Seen::Docker(event);
                    if tx.send(Observation { at, seen }).is_err() {
                        return;
                    }
                }
                eprintln!("the Docker event stream ended; reconnecting");
            }
            Err(e) => eprintln!("cannot watch Docker events: {e}; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Forwards the namespace's pods as a watch from the current revision shows them.
async fn forward_pods(client: Client, ns: String, tx: UnboundedSender<Observation>) {
    let params = ListParams::default();
    loop {
        let watch = async {
            let list = client.list(&PODS, Some(&ns), &params).await?;
            let rv = list["metadata"]["resourceVersion"].as_str();
            client.watch(&PODS, Some(&ns), &params, rv).await
        };
        match watch.await {
            Ok(events) => {
                let mut events = Box::pin(events);
                while let Some(Ok(event)) = events.next().await {
                    let at = Instant::now();
                    if !matches!(event.event_type.as_str(), "ADDED" | "MODIFIED") {
                        continue;
                    }
                    let seen = Seen::Pod(event.object);
                    if tx.send(Observation { at, seen }).is_err() {
                        return;
                    }
                }
                eprintln!("the pod watch ended; watching again");
            }
            Err(e) => eprintln!("cannot watch pods: {e}; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Throws away what was observed so far; returns how many (Docker, pod) observations.
fn drain(rx: &mut UnboundedReceiver<Observation>) -> (usize, usize) {
    let mut counts = (0, 0);
    while let Ok(o) = rx.try_recv() {
        match o.seen {
            Seen::Docker(_) => counts.0 += 1,
            Seen::Pod(_) => counts.1 += 1,
        }
    }
    counts
}

/// What one kill led to. Daemon times are Unix nanoseconds from Docker's events;
/// `running` and `ready` are measured here, from just before the kill request.
#[derive(Debug, Default)]
struct Heal {
    killed_at: i64,
    died: Option<i64>,
    created: Option<i64>,
    started: Option<i64>,
    running: Option<Duration>,
    ready: Option<Duration>,
    /// When the API first showed the killed pod not Ready.
    not_ready: Option<Duration>,
}

impl Heal {
    fn healed(&self, wants_ready: bool) -> bool {
        self.running.is_some() && (!wants_ready || self.ready.is_some())
    }

    fn summary(&self) -> String {
        let show = |d: Option<Duration>| d.map_or_else(|| "NOT HEALED".to_string(), secs);
        match self.ready {
            Some(_) => format!("Running {}, Ready {}", show(self.running), show(self.ready)),
            None if self.running.is_some() => format!("Running {}", show(self.running)),
            None => "NOT HEALED".to_string(),
        }
    }
}

/// SIGKILLs `victim` and waits (at most [`HEAL_LIMIT`]) until a container `ours`
/// says belongs to the same workload starts, and until `ready` holds for a pod, if
/// given. A kill not healed in time comes back incomplete.
async fn kill_and_observe(
    runtime: &DockerRuntime,
    rx: &mut UnboundedReceiver<Observation>,
    victim: &str,
    ours: impl Fn(&RuntimeEvent) -> bool,
    judge: Option<&dyn Fn(&Value) -> PodSays>,
) -> anyhow::Result<Heal> {
    drain(rx);
    let mut heal = Heal {
        killed_at: unix_nanos(),
        ..Heal::default()
    };
    let t0 = Instant::now();
    runtime.kill(victim, "SIGKILL").await?;
    let deadline = tokio::time::Instant::from_std(t0 + HEAL_LIMIT);
    while !heal.healed(judge.is_some()) {
        let Ok(Some(o)) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            break;
        };
        let since_kill = o.at.saturating_duration_since(t0);
        match o.seen {
            Seen::Docker(e) if ours(&e) => {
                let replacement = e.container_id != victim;
                match e.action.as_str() {
                    "die" if !replacement => {
                        heal.died.get_or_insert(e.time_nanos);
                    }
                    "create" if replacement => {
                        heal.created.get_or_insert(e.time_nanos);
                    }
                    "start" if replacement => {
                        heal.started.get_or_insert(e.time_nanos);
                        heal.running.get_or_insert(since_kill);
                    }
                    _ => {}
                }
            }
            Seen::Pod(pod) => match judge.map(|judge| judge(&pod)) {
                Some(PodSays::NotReady) => {
                    heal.not_ready.get_or_insert(since_kill);
                }
                Some(PodSays::Healed) => {
                    heal.ready.get_or_insert(since_kill);
                }
                Some(PodSays::Nothing) | None => {}
            },
            Seen::Docker(_) => {}
        }
    }
    Ok(heal)
}

/// Tugboat's side: the Deployment, on one agent.
struct TugboatSide<'a> {
    cluster: &'a DockerCluster,
    runtime: &'a DockerRuntime,
    /// Pods whose container was killed, never to be killed again.
    killed: BTreeSet<String>,
}

impl TugboatSide<'_> {
    /// Waits until the Deployment is whole and fresh: its pods all Running and Ready,
    /// none deleting and none killed before, and in Docker exactly their containers,
    /// running. Returns (pod, container ID), oldest pod first.
    async fn whole(&self) -> anyhow::Result<Vec<(String, String)>> {
        let ns = &self.cluster.namespace;
        let namespace_label = [(LABEL_POD_NAMESPACE.to_string(), ns.clone())];
        eventually_within(
            HEAL_LIMIT,
            &format!("{REPLICAS} fresh pods of {DEPLOYMENT} are Running and Ready"),
            || async {
                let mut pods = self.cluster.pods(&format!("app={DEPLOYMENT}")).await.ok()?;
                // The pods' containers, not their sandboxes (which a kill
                // of a container leaves alone).
                let containers: Vec<_> = self
                    .runtime
                    .list(&namespace_label)
                    .await
                    .ok()?
                    .into_iter()
                    .filter(|c| !tugboat_agent::worker::sandbox::is_sandbox(c))
                    .collect();
                let whole = pods.len() == REPLICAS
                    && pods.iter().all(|p| {
                        p["metadata"]["deletionTimestamp"].is_null() && running_and_ready(p)
                    })
                    && containers.len() == REPLICAS
                    && containers.iter().all(|c| c.state.running);
                if !whole {
                    return None;
                }
                pods.sort_by_key(|p| {
                    (
                        p["metadata"]["creationTimestamp"].to_string(),
                        p["metadata"]["name"].to_string(),
                    )
                });
                pods.iter()
                    .map(|p| {
                        let name = p["metadata"]["name"].as_str()?;
                        if self.killed.contains(name) {
                            return None;
                        }
                        let c = containers.iter().find(|c| {
                            c.labels.get(LABEL_POD_NAME).map(String::as_str) == Some(name)
                        })?;
                        Some((name.to_string(), c.id.clone()))
                    })
                    .collect()
            },
        )
        .await
    }

    /// Kills `pod`'s container, times the heal, then deletes the pod so a fresh one
    /// (without back-off history) takes its place.
    async fn kill(
        &mut self,
        rx: &mut UnboundedReceiver<Observation>,
        pod: &str,
        container: &str,
    ) -> anyhow::Result<Heal> {
        self.killed.insert(pod.to_string());
        let ns = &self.cluster.namespace;
        let ours = |e: &RuntimeEvent| {
            e.labels.get(LABEL_POD_NAMESPACE) == Some(ns)
                && e.labels.get(LABEL_POD_NAME).map(String::as_str) == Some(pod)
        };
        let judge = |p: &Value| judge_pod(p, pod, container);
        let heal = kill_and_observe(self.runtime, rx, container, ours, Some(&judge)).await?;
        self.cluster
            .client
            .delete(&PODS, Some(ns), pod)
            .await
            .with_context(|| format!("deleting the killed pod {ns}/{pod}"))?;
        Ok(heal)
    }
}

fn running_and_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// What a pod watch event says about pod `name`, whose container `old` was killed.
enum PodSays {
    Nothing,
    /// The pod is not Ready: the API shows the crash.
    NotReady,
    /// The pod is Ready again, with a running container other than `old`.
    Healed,
}

fn judge_pod(pod: &Value, name: &str, old: &str) -> PodSays {
    if pod["metadata"]["name"] != name {
        return PodSays::Nothing;
    }
    if !running_and_ready(pod) {
        return PodSays::NotReady;
    }
    let status = &pod["status"]["containerStatuses"][0];
    let replaced = status["containerID"]
        .as_str()
        .is_some_and(|id| id.strip_prefix("docker://") != Some(old));
    if replaced && status["state"]["running"].is_object() && status["ready"] == true {
        PodSays::Healed
    } else {
        PodSays::Nothing
    }
}

/// Swarm's side: the service.
struct SwarmSide<'a> {
    service: &'a str,
    runtime: &'a DockerRuntime,
}

impl SwarmSide<'_> {
    /// Waits until a container runs in each of the service's slots. Returns
    /// (slot, container ID) by slot.
    async fn whole(&self) -> anyhow::Result<Vec<(u32, String)>> {
        let service_label = [(SERVICE_LABEL.to_string(), self.service.to_string())];
        eventually_within(
            HEAL_LIMIT,
            &format!(
                "a container runs in each of {REPLICAS} slots of {}",
                self.service
            ),
            || async {
                let containers = self.runtime.list(&service_label).await.ok()?;
                let mut running: Vec<(u32, String)> = containers
                    .iter()
                    .filter(|c| c.state.running)
                    .map(|c| Some((slot_of(c)?, c.id.clone())))
                    .collect::<Option<_>>()?;
                running.sort();
                let slots: BTreeSet<u32> = running.iter().map(|(s, _)| *s).collect();
                (running.len() == REPLICAS && slots.len() == REPLICAS).then_some(running)
            },
        )
        .await
    }

    /// Kills `container` and times its replacement's start. Swarm's Ready is its
    /// Running: the service has no health check.
    async fn kill(&self, rx: &mut UnboundedReceiver<Observation>, container: &str) -> Heal {
        let ours = |e: &RuntimeEvent| {
            e.labels.get(SERVICE_LABEL).map(String::as_str) == Some(self.service)
        };
        match kill_and_observe(self.runtime, rx, container, ours, None).await {
            Ok(heal) => heal,
            Err(e) => {
                eprintln!("killing {container}: {e}");
                Heal::default()
            }
        }
    }
}

fn slot_of(c: &ContainerInfo) -> Option<u32> {
    c.labels.get(TASK_LABEL)?.split('.').nth(1)?.parse().ok()
}

/// The Swarm service, removed with its containers on drop.
struct SwarmService {
    name: String,
}

impl SwarmService {
    fn create(name: &str) -> anyhow::Result<Self> {
        let replicas = REPLICAS.to_string();
        docker(&[
            "service",
            "create",
            "--detach",
            "--quiet",
            "--name",
            name,
            "--replicas",
            &replicas,
            "--restart-condition",
            "any",
            "--restart-delay",
            "0s",
            "--label",
            BENCH_LABEL,
            "--container-label",
            BENCH_LABEL,
            IMAGE,
        ])?;
        Ok(SwarmService {
            name: name.to_string(),
        })
    }
}

impl Drop for SwarmService {
    fn drop(&mut self) {
        if let Err(e) = docker(&["service", "rm", &self.name]) {
            eprintln!(
                "REMOVE THE SERVICE BY HAND (`docker service rm {}`): {e}",
                self.name
            );
        }
        // Swarm removes the task containers on its own, soon after.
        let service = format!("label={SERVICE_LABEL}={}", self.name);
        let bench = format!("label={BENCH_LABEL}");
        let left = || docker(&["ps", "-aq", "--filter", &service, "--filter", &bench]);
        for _ in 0..100 {
            if left().is_ok_and(|ids| ids.is_empty()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Ok(ids) = left() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.split_whitespace());
            let _ = docker(&args);
        }
    }
}

/// The `p`th percentile by nearest rank: the smallest sample with at least `p`% of
/// the samples at or below it. `sorted` must be sorted.
fn nearest_rank(sorted: &[Duration], p: usize) -> Option<Duration> {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

fn row(label: &str, samples: &[Duration], rounds: usize) -> String {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let cell = |d: Option<Duration>| d.map_or_else(|| "–".to_string(), secs);
    format!(
        "{label:<21}{:>10}{:>10}{:>10}{:>10}{:>8}",
        cell(nearest_rank(&sorted, 50)),
        cell(nearest_rank(&sorted, 90)),
        cell(nearest_rank(&sorted, 99)),
        cell(sorted.last().copied()),
        format!("{}/{rounds}", sorted.len()),
    )
}

/// Median time of each step of a heal: by the daemon's event times, the kill by our
/// clock just before the request (same host), and start→Ready as both arrived here.
fn breakdown(label: &str, heals: &[Heal]) -> String {
    let between = |a: i64, b: i64| u64::try_from(b - a).ok().map(Duration::from_nanos);
    format!(
        "{label:<44}{:>12}{:>12}{:>14}{:>14}",
        median(heals, &|h| between(h.killed_at, h.died?)),
        median(heals, &|h| between(h.died?, h.created?)),
        median(heals, &|h| between(h.created?, h.started?)),
        median(heals, &|h| h.ready?.checked_sub(h.running?)),
    )
}

/// The median of `step` over the heals that have it, or `–`.
fn median(heals: &[Heal], step: &dyn Fn(&Heal) -> Option<Duration>) -> String {
    let mut v: Vec<Duration> = heals.iter().filter_map(step).collect();
    v.sort();
    nearest_rank(&v, 50).map_or_else(|| "–".to_string(), secs)
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or_default()
}
