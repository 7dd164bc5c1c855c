//! Benchmark (not a test): how fast a Deployment's pods are replaced when one of three
//! nodes is lost, and how fast the node's stale containers go once it is back, with
//! the controller's default settings.
//!
//! Two ways of losing a node, on a fresh cluster every round (3 agents, a 6-replica
//! Deployment, all 6 pods Running and Ready, spread over all 3 nodes):
//!
//! - **kill -9 agent**: agent 1 is a `tug agent` process, SIGKILLed; its containers keep
//!   running. At return the process is started again.
//! - **partition**: agent 1 is a container on a private Docker network, disconnected
//!   from it (`docker network disconnect`) while its process keeps running; at return
//!   it is connected again.
//!
//! Timed from t0, just before the kill or the disconnect: (a) the node is NotReady
//! (its Ready condition `Unknown`), (b) 6 pods are Running and Ready, none on the lost
//! node. Then, from t1, just before the restart or the reconnect (at once after (b),
//! or `NODELOSS_HOLD_SECS` later): (c) Docker holds exactly the 6 live pods'
//! containers, all running (the stale ones removed, not merely stopped), (d) the node
//! is Ready again. The conditions are polled every [`POLL`] (the API, and Docker
//! through bollard), so a figure is late by at most one poll plus one round trip.
//! A pod watch, a watch of the lost node's Lease and Docker's event stream are
//! recorded on the side to show where the time goes: eviction, replacement pods
//! created and bound, their containers created and started; at return, the first
//! heartbeat heard, the first stale container stopping and the last one removed.
//!
//! Every wait is bounded by [`LIMIT`]; a round that runs out is reported as timed out
//! and the benchmark fails at the end, after printing what it measured.
//!
//! `cargo bench -p tugboat-tests --bench nodeloss` (`NODELOSS_ROUNDS`, default 3;
//! `NODELOSS_HOLD_SECS`, default 0, keeps the node away that much longer;
//! `NODELOSS_AGENT_LOGS=1` prints the cut-off agent container's log after each
//! partition round; `RUST_LOG=info` makes the agent processes of the kill rounds log).
//! Needs the Docker daemon. Everything a round creates is removed when its cluster is
//! dropped, also on error, panic or Ctrl-C; the end checks that nothing is left.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::bench::{git_describe, loadavg, utc_now};
use crate::docker::{DockerCluster, sample_deployment};
use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tugboat_agent::runtime::docker::DockerRuntime;
use tugboat_agent::runtime::{ContainerRuntime, LABEL_NODE, LABEL_POD_NAME, LABEL_POD_NAMESPACE};
use tugboat_api::resource::{LEASES, NODES, PODS};
use tugboat_api::{Client, ListParams};

const AGENTS: usize = 3;
const REPLICAS: usize = 6;
/// The `nodeloss` benchmark's round count unless `NODELOSS_ROUNDS` says.
pub const DEFAULT_ROUNDS: usize = 3;
/// The longest any wait may take: setting up, each loss, each return.
const LIMIT: Duration = Duration::from_secs(90);
/// How often the conditions are checked.
const POLL: Duration = Duration::from_millis(50);
/// The goal from the issue: 6 pods Running again within this after the loss.
const GOAL: Duration = Duration::from_secs(5);
const APP: &str = "web";
/// Which agent is lost: the first.
const LOST: usize = 0;
/// Where agents keep their Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The medians of the kill -9 rounds of a node-loss run (seconds).
#[derive(Clone, Copy, Debug)]
pub struct NodeLossSummary {
    pub rounds: usize,
    /// The lost node NotReady.
    pub not_ready: f64,
    /// 6 pods Running and Ready again, none on the lost node.
    pub replaced: f64,
}

/// The `nodeloss` benchmark: both scenarios, `rounds` rounds each, and its full report.
pub async fn run_and_report(rounds: usize) -> anyhow::Result<NodeLossSummary> {
    run(rounds, &[Scenario::Kill, Scenario::Partition], true).await
}

/// `rounds` rounds of the kill -9 scenario, printing only each round (to stderr).
pub async fn measure(rounds: usize) -> anyhow::Result<NodeLossSummary> {
    run(rounds, &[Scenario::Kill], false).await
}

async fn run(
    rounds: usize,
    scenarios: &[Scenario],
    report: bool,
) -> anyhow::Result<NodeLossSummary> {
    let runtime = DockerRuntime::connect(None).await?;
    let host = runtime.host_info().await?;
    let date = utc_now();
    let code = git_describe();
    let load_before = loadavg();
    let defaults = tugboat_controller::Config::default();
    let logs = std::env::var("NODELOSS_AGENT_LOGS").is_ok_and(|v| !v.is_empty() && v != "0");
    let hold = match std::env::var("NODELOSS_HOLD_SECS") {
        Ok(v) => v
            .parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .with_context(|| format!("NODELOSS_HOLD_SECS={v:?}: expected seconds"))?,
        Err(_) => Duration::ZERO,
    };

    let mut results: BTreeMap<Scenario, Vec<Result<Round, String>>> = BTreeMap::new();
    let mut namespaces = Vec::new();
    // Alternated, so that a slow spell of the machine does not land on one scenario.
    for round in 1..=rounds {
        for &scenario in scenarios {
            eprintln!("round {round}/{rounds} {}: starting", scenario.label());
            let result = run_round(scenario, &runtime, logs, hold, &mut namespaces).await;
            match &result {
                Ok(r) => eprintln!(
                    "round {round}/{rounds} {}: {}",
                    scenario.label(),
                    r.summary()
                ),
                Err(e) => eprintln!("round {round}/{rounds} {}: FAILED: {e:#}", scenario.label()),
            }
            results
                .entry(scenario)
                .or_default()
                .push(result.map_err(|e| format!("{e:#}")));
        }
    }
    let leftovers = leftovers(&namespaces);
    if report {
        println!();
        println!(
            "node loss, {AGENTS} agents, {REPLICAS} replicas, {rounds} rounds, default settings \
             (node_grace {}, eviction_delay {}), {date}",
            secs(defaults.node_grace),
            secs(defaults.eviction_delay),
        );
        println!(
            "code {code}, engine {}, {} CPUs, load average {load_before} before, {} after; polled \
             every {}",
            host.runtime_version,
            host.cpus,
            loadavg(),
            secs(POLL),
        );
        if !hold.is_zero() {
            println!(
                "the node stayed away {} more after its pods were replaced",
                secs(hold)
            );
        }
        println!(
            "{:<24}{:>10}{:>18}{:>26}{:>18}",
            "", "NotReady", "6 Running again", "stale gone after return", "node Ready again"
        );
        for &scenario in scenarios {
            let rounds = &results[&scenario];
            let done = completed(rounds);
            for (stat, pick) in [("p50", Stat::P50), ("max", Stat::Max)] {
                let label = if stat == "p50" { scenario.label() } else { "" };
                println!(
                    "{label:<15}{stat:<9}{:>10}{:>18}{:>26}{:>18}",
                    pick.of(&done, |r| r.not_ready),
                    pick.of(&done, |r| r.replaced),
                    pick.of(&done, |r| r.stale_gone),
                    pick.of(&done, |r| r.ready_again),
                );
            }
            for (i, r) in rounds.iter().enumerate() {
                let label = format!("round {}", i + 1);
                match r {
                    Ok(r) => println!(
                        "{:<15}{label:<9}{:>10}{:>18}{:>26}{:>18}   {} pods on the lost node, {} \
                         of their containers running at return",
                        "",
                        cell(r.not_ready),
                        cell(r.replaced),
                        cell(r.stale_gone),
                        cell(r.ready_again),
                        r.on_lost,
                        r.stale_running,
                    ),
                    Err(e) => println!("{:<15}{label:<9}FAILED: {e}", ""),
                }
            }
        }
        println!();
        breakdown(
            "where the time goes, from t0 (the loss); each step the last of the replacements",
            &[
                ("NotReady", ""),
                ("evicted", ""),
                ("pods", "created"),
                ("pods", "bound"),
                ("containers", "created"),
                ("containers", "started"),
                ("all Ready", ""),
            ],
            &[
                |r| r.not_ready,
                |r| r.steps.evicted,
                |r| r.steps.created,
                |r| r.steps.bound,
                |r| r.steps.containers_created,
                |r| r.steps.started,
                |r| r.replaced,
            ],
            &results,
        );
        println!();
        breakdown(
            "where the time goes, from t1 (the return)",
            &[
                ("heartbeat", "heard"),
                ("first stale", "stopping"),
                ("last stale", "removed"),
                ("stale gone", ""),
                ("node Ready", "again"),
            ],
            &[
                |r| r.steps.heartbeat_back,
                |r| r.steps.fence_began,
                |r| r.steps.last_removed,
                |r| r.stale_gone,
                |r| r.ready_again,
            ],
            &results,
        );
        println!();
        let replaced: Vec<Option<Duration>> = results
            .values()
            .flatten()
            .map(|r| r.as_ref().ok().and_then(|r| r.replaced))
            .collect();
        let met = replaced.iter().all(|r| r.is_some_and(|d| d <= GOAL));
        println!(
            "goal, 6 Running again ≤ {} in every round of both scenarios: {}",
            secs(GOAL),
            if met { "met" } else { "missed" }
        );
    }

    let incomplete = results
        .values()
        .flatten()
        .filter(|r| r.as_ref().map_or(true, |r| !r.complete()))
        .count();
    if let Err(e) = leftovers {
        bail!("{e}");
    }
    if incomplete > 0 {
        bail!("{incomplete} rounds failed or timed out (see the rounds above)");
    }
    let kills = results
        .get(&Scenario::Kill)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let done = completed(kills);
    let median = |pick: Figure| {
        let mut v: Vec<Duration> = done.iter().filter_map(|r| pick(r)).collect();
        v.sort();
        v.get(v.len().saturating_sub(1) / 2)
            .map_or(f64::NAN, Duration::as_secs_f64)
    };
    Ok(NodeLossSummary {
        rounds: done.len(),
        not_ready: median(|r| r.not_ready),
        replaced: median(|r| r.replaced),
    })
}

type Figure = fn(&Round) -> Option<Duration>;

/// A table of `figures` (headed by two lines each): the median, then every round.
fn breakdown(
    title: &str,
    heads: &[(&str, &str)],
    figures: &[Figure],
    results: &BTreeMap<Scenario, Vec<Result<Round, String>>>,
) {
    println!("{title}");
    let first: String = heads.iter().map(|(a, _)| format!("{a:>12}")).collect();
    let second: String = heads.iter().map(|(_, b)| format!("{b:>12}")).collect();
    println!("{:<24}{first}", "");
    println!("{:<24}{second}", "");
    for (scenario, rounds) in results {
        let done = completed(rounds);
        let cells: String = figures
            .iter()
            .map(|f| format!("{:>12}", Stat::P50.of(&done, f)))
            .collect();
        println!("{:<15}{:<9}{cells}", scenario.label(), "p50");
        for (i, round) in rounds.iter().enumerate() {
            let Ok(round) = round else { continue };
            let cells: String = figures
                .iter()
                .map(|f| format!("{:>12}", f(round).map_or_else(|| "–".to_string(), secs)))
                .collect();
            println!("{:<15}{:<9}{cells}", "", format!("round {}", i + 1));
        }
    }
}

/// The rounds that ran to the end (possibly with timed-out waits).
fn completed(rounds: &[Result<Round, String>]) -> Vec<&Round> {
    rounds.iter().filter_map(|r| r.as_ref().ok()).collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    Kill,
    Partition,
}

impl Scenario {
    fn label(self) -> &'static str {
        match self {
            Scenario::Kill => "kill -9 agent",
            Scenario::Partition => "partition",
        }
    }

    async fn start(self) -> anyhow::Result<DockerCluster> {
        match self {
            Scenario::Kill => DockerCluster::start("nodeloss-kill", AGENTS).await,
            Scenario::Partition => DockerCluster::start_networked("nodeloss-cut", AGENTS).await,
        }
    }

    async fn lose(self, c: &mut DockerCluster) -> anyhow::Result<()> {
        match self {
            Scenario::Kill => c.kill_agent(LOST).await,
            Scenario::Partition => c.partition(LOST),
        }
    }

    fn restore(self, c: &mut DockerCluster) -> anyhow::Result<()> {
        match self {
            Scenario::Kill => c.restart_agent(LOST),
            Scenario::Partition => c.heal(LOST),
        }
    }
}

/// What one round measured. Durations of the loss count from t0, those of the return
/// from t1; `None` is a wait that ran out.
#[derive(Debug, Default)]
struct Round {
    /// Pods on the lost node before the loss.
    on_lost: usize,
    /// Of their containers, how many still ran just before the return (fail-static).
    stale_running: usize,
    not_ready: Option<Duration>,
    replaced: Option<Duration>,
    stale_gone: Option<Duration>,
    ready_again: Option<Duration>,
    steps: Steps,
}

impl Round {
    fn complete(&self) -> bool {
        self.not_ready.is_some()
            && self.replaced.is_some()
            && self.stale_gone.is_some()
            && self.ready_again.is_some()
    }

    fn summary(&self) -> String {
        format!(
            "NotReady {}, 6 Running again {}, stale gone {}, Ready again {} ({} pods on the lost \
             node, {} stale containers running at return)",
            cell(self.not_ready),
            cell(self.replaced),
            cell(self.stale_gone),
            cell(self.ready_again),
            self.on_lost,
            self.stale_running,
        )
    }
}

/// Where the time went, from what the pod watch and Docker's events showed.
#[derive(Debug, Default)]
struct Steps {
    /// From t0: the first pod of the lost node deleted.
    evicted: Option<Duration>,
    /// From t0, each the last of the replacements: pod created, pod bound to a node,
    /// its container created, and started (Docker's `create` and `start` events).
    created: Option<Duration>,
    bound: Option<Duration>,
    containers_created: Option<Duration>,
    started: Option<Duration>,
    /// From t1: the lost node's Lease renewed for the first time since the return.
    heartbeat_back: Option<Duration>,
    /// From t1: the first stale container stopping (kill, die or destroy), the last one
    /// removed.
    fence_began: Option<Duration>,
    last_removed: Option<Duration>,
}

async fn run_round(
    scenario: Scenario,
    runtime: &DockerRuntime,
    logs: bool,
    hold: Duration,
    namespaces: &mut Vec<String>,
) -> anyhow::Result<Round> {
    let mut c = scenario.start().await?;
    namespaces.push(c.namespace.clone());
    c.apply(&sample_deployment(APP, REPLICAS as i64)).await?;
    let lost = c.nodes[LOST].clone();
    let before = whole(&c, runtime).await?;
    let stale: BTreeSet<String> = before
        .iter()
        .filter(|(_, node)| **node == lost)
        .map(|(pod, _)| pod.clone())
        .collect();
    let log = Recorder::start(&c, runtime, &lost).await?;
    let mut round = Round {
        on_lost: stale.len(),
        ..Round::default()
    };

    let t0 = Instant::now();
    let t0_wall = SystemTime::now();
    scenario.lose(&mut c).await?;
    let (not_ready, replaced) = lose_and_replace(&c, &lost, t0).await;
    round.not_ready = not_ready;
    round.replaced = replaced;

    let ours = [(LABEL_NODE.to_string(), lost.clone())];
    round.stale_running = runtime
        .list(&ours)
        .await?
        .iter()
        .filter(|k| k.state.running)
        .count();
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    let t1 = Instant::now();
    let t1_wall = SystemTime::now();
    scenario.restore(&mut c)?;
    let (stale_gone, ready_again) = come_back(&c, runtime, &lost, t1).await;
    round.stale_gone = stale_gone;
    round.ready_again = ready_again;

    let observed = log.stop();
    let initial: BTreeSet<String> = before.keys().cloned().collect();
    round.steps = steps(&observed, &stale, &initial, t0, t1);
    if logs && scenario == Scenario::Partition {
        print_agent_log(&c, t0_wall, t1_wall);
    }
    Ok(round)
}

/// Waits until the Deployment is whole: 6 pods Running and Ready, on every node, and in
/// Docker exactly their containers, running. Returns pod → node.
async fn whole(
    c: &DockerCluster,
    runtime: &DockerRuntime,
) -> anyhow::Result<BTreeMap<String, String>> {
    let deadline = Instant::now() + LIMIT;
    let mut tick = ticker();
    loop {
        tick.tick().await;
        if Instant::now() >= deadline {
            bail!(
                "timed out after {LIMIT:?} waiting until {REPLICAS} pods run Ready on all \
                 {AGENTS} nodes"
            );
        }
        let Ok(Some(pods)) = tokio::time::timeout_at(deadline, live_pods(c)).await else {
            continue;
        };
        let placed: BTreeMap<String, String> = pods
            .iter()
            .filter(|p| running_and_ready(p))
            .filter_map(|p| Some((name(p)?.to_string(), node(p)?.to_string())))
            .collect();
        let nodes: BTreeSet<&String> = placed.values().collect();
        if pods.len() != REPLICAS || placed.len() != REPLICAS || nodes.len() != AGENTS {
            continue;
        }
        let names: BTreeSet<String> = placed.keys().cloned().collect();
        if let Ok(true) = tokio::time::timeout_at(deadline, exactly(c, runtime, &names)).await {
            return Ok(placed);
        }
    }
}

/// From t0 until the node is NotReady and 6 pods run Ready off it (or [`LIMIT`]).
async fn lose_and_replace(
    c: &DockerCluster,
    lost: &str,
    t0: Instant,
) -> (Option<Duration>, Option<Duration>) {
    let deadline = t0 + LIMIT;
    let mut not_ready = None;
    let mut replaced = None;
    let mut tick = ticker();
    while not_ready.is_none() || replaced.is_none() {
        tick.tick().await;
        let check = async {
            if not_ready.is_none()
                && node_ready(&c.client, lost).await.as_deref() == Some("Unknown")
            {
                not_ready = Some(t0.elapsed());
            }
            if replaced.is_none()
                && let Some(pods) = live_pods(c).await
                && pods.len() == REPLICAS
                && pods
                    .iter()
                    .all(|p| running_and_ready(p) && node(p) != Some(lost))
            {
                replaced = Some(t0.elapsed());
            }
        };
        if tokio::time::timeout_at(deadline, check).await.is_err() || Instant::now() >= deadline {
            break;
        }
    }
    (not_ready, replaced)
}

/// From t1 until Docker holds exactly the live pods' containers and the node is Ready
/// again (or [`LIMIT`]).
async fn come_back(
    c: &DockerCluster,
    runtime: &DockerRuntime,
    node_name: &str,
    t1: Instant,
) -> (Option<Duration>, Option<Duration>) {
    let deadline = t1 + LIMIT;
    let mut stale_gone = None;
    let mut ready_again = None;
    let mut tick = ticker();
    while stale_gone.is_none() || ready_again.is_none() {
        tick.tick().await;
        let check = async {
            if ready_again.is_none()
                && node_ready(&c.client, node_name).await.as_deref() == Some("True")
            {
                ready_again = Some(t1.elapsed());
            }
            if stale_gone.is_none()
                && let Some(pods) = live_pods(c).await
                && pods.len() == REPLICAS
                && pods.iter().all(running_and_ready)
            {
                let names: BTreeSet<String> = pods
                    .iter()
                    .filter_map(|p| name(p).map(str::to_string))
                    .collect();
                if exactly(c, runtime, &names).await {
                    stale_gone = Some(t1.elapsed());
                }
            }
        };
        if tokio::time::timeout_at(deadline, check).await.is_err() || Instant::now() >= deadline {
            break;
        }
    }
    (stale_gone, ready_again)
}

fn ticker() -> tokio::time::Interval {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick
}

/// The Deployment's pods not being deleted; `None` when the API does not answer.
async fn live_pods(c: &DockerCluster) -> Option<Vec<Value>> {
    let pods = c.pods(&format!("app={APP}")).await.ok()?;
    Some(
        pods.into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect(),
    )
}

/// Docker holds exactly the containers of `pods` (one each, beside its sandbox),
/// all running, and nothing else of this cluster's namespace, stopped or not.
async fn exactly(c: &DockerCluster, runtime: &DockerRuntime, pods: &BTreeSet<String>) -> bool {
    let ns = [(LABEL_POD_NAMESPACE.to_string(), c.namespace.clone())];
    let Ok(all) = runtime.list(&ns).await else {
        return false;
    };
    let (sandboxes, containers): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(tugboat_agent::worker::sandbox::is_sandbox);
    if sandboxes.len() != pods.len() || !sandboxes.iter().all(|k| k.state.running) {
        return false;
    }
    let names: BTreeSet<&str> = containers
        .iter()
        .filter_map(|k| k.labels.get(LABEL_POD_NAME).map(String::as_str))
        .collect();
    containers.len() == pods.len()
        && names.len() == pods.len()
        && pods.iter().all(|p| names.contains(p.as_str()))
        && containers.iter().all(|k| k.state.running)
}

/// The status of the node's Ready condition (`True`, `Unknown`…).
async fn node_ready(client: &Client, node: &str) -> Option<String> {
    let n = client.get(&NODES, None, node).await.ok()?;
    n["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

fn running_and_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn name(pod: &Value) -> Option<&str> {
    pod["metadata"]["name"].as_str()
}

fn node(pod: &Value) -> Option<&str> {
    pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty())
}

/// Something seen on the side while a round ran, stamped when it arrived here.
#[derive(Debug)]
struct Observation {
    at: Instant,
    seen: Seen,
}

#[derive(Debug)]
enum Seen {
    /// A pod watch event: ADDED, MODIFIED or DELETED.
    Pod {
        event: String,
        name: String,
        node: Option<String>,
    },
    /// A Docker event of one of the namespace's containers.
    Container { action: String, pod: String },
    /// The lost node's Lease, renewed.
    Lease,
}

/// A pod watch on the cluster's namespace and Docker's events of its containers,
/// both established before [`Recorder::start`] returns, recorded until
/// [`Recorder::stop`] (or drop).
struct Recorder {
    seen: Arc<Mutex<Vec<Observation>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Recorder {
    async fn start(c: &DockerCluster, runtime: &DockerRuntime, lost: &str) -> anyhow::Result<Self> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let params = ListParams::default();
        let list = c.client.list(&PODS, Some(&c.namespace), &params).await?;
        let rv = list["metadata"]["resourceVersion"].as_str();
        let pods = c
            .client
            .watch(&PODS, Some(&c.namespace), &params, rv)
            .await?;
        let labels = [(LABEL_POD_NAMESPACE.to_string(), c.namespace.clone())];
        let mut containers = runtime.events(&labels, None).await?;
        let lease = ListParams {
            field_selector: Some(format!("metadata.name={lost}")),
            ..Default::default()
        };
        let list = c
            .client
            .list(&LEASES, Some(LEASE_NAMESPACE), &lease)
            .await?;
        let rv = list["metadata"]["resourceVersion"].as_str();
        let leases = c
            .client
            .watch(&LEASES, Some(LEASE_NAMESPACE), &lease, rv)
            .await?;
        let mut tasks = Vec::new();
        let log = seen.clone();
        tasks.push(tokio::spawn(async move {
            let mut pods = Box::pin(pods);
            while let Some(Ok(ev)) = pods.next().await {
                let at = Instant::now();
                let seen = Seen::Pod {
                    name: name(&ev.object).unwrap_or_default().to_string(),
                    node: node(&ev.object).map(str::to_string),
                    event: ev.event_type,
                };
                push(&log, Observation { at, seen });
            }
            eprintln!("the pod watch ended: the breakdown may miss steps");
        }));
        let log = seen.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(ev)) = containers.next().await {
                let at = Instant::now();
                let pod = ev.labels.get(LABEL_POD_NAME).cloned().unwrap_or_default();
                let seen = Seen::Container {
                    action: ev.action,
                    pod,
                };
                push(&log, Observation { at, seen });
            }
            eprintln!("the Docker event stream ended: the breakdown may miss steps");
        }));
        let log = seen.clone();
        tasks.push(tokio::spawn(async move {
            let mut leases = Box::pin(leases);
            while let Some(Ok(ev)) = leases.next().await {
                if ev.event_type == "MODIFIED" || ev.event_type == "ADDED" {
                    let at = Instant::now();
                    push(
                        &log,
                        Observation {
                            at,
                            seen: Seen::Lease,
                        },
                    );
                }
            }
            eprintln!("the Lease watch ended: the breakdown may miss steps");
        }));
        Ok(Recorder { seen, tasks })
    }

    fn stop(self) -> Vec<Observation> {
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn push(log: &Mutex<Vec<Observation>>, o: Observation) {
    log.lock().unwrap_or_else(PoisonError::into_inner).push(o);
}

/// Reads the steps off what was observed: `stale` are the pods the lost node ran,
/// `initial` all pods before the loss (what is not among them is a replacement).
fn steps(
    observed: &[Observation],
    stale: &BTreeSet<String>,
    initial: &BTreeSet<String>,
    t0: Instant,
    t1: Instant,
) -> Steps {
    let since = |t: Instant, at: Instant| at.checked_duration_since(t);
    let mut created: BTreeMap<&str, Instant> = BTreeMap::new();
    let mut bound: BTreeMap<&str, Instant> = BTreeMap::new();
    let mut containers: BTreeMap<&str, Instant> = BTreeMap::new();
    let mut started: BTreeMap<&str, Instant> = BTreeMap::new();
    let mut removed: BTreeMap<&str, Instant> = BTreeMap::new();
    let mut out = Steps::default();
    for o in observed {
        match &o.seen {
            Seen::Pod { event, name, node } if o.at >= t0 && o.at < t1 => {
                if event == "DELETED" && stale.contains(name) && out.evicted.is_none() {
                    out.evicted = since(t0, o.at);
                }
                if initial.contains(name) || event == "DELETED" {
                    continue;
                }
                created.entry(name.as_str()).or_insert(o.at);
                if node.is_some() {
                    bound.entry(name.as_str()).or_insert(o.at);
                }
            }
            Seen::Container { action, pod }
                if o.at >= t0 && o.at < t1 && !initial.contains(pod) =>
            {
                match action.as_str() {
                    "create" => containers.entry(pod.as_str()).or_insert(o.at),
                    "start" => started.entry(pod.as_str()).or_insert(o.at),
                    _ => continue,
                };
            }
            Seen::Lease if o.at >= t1 && out.heartbeat_back.is_none() => {
                out.heartbeat_back = since(t1, o.at);
            }
            Seen::Container { action, pod } if o.at >= t1 && stale.contains(pod) => {
                if matches!(action.as_str(), "kill" | "die" | "stop" | "destroy")
                    && out.fence_began.is_none()
                {
                    out.fence_began = since(t1, o.at);
                }
                if action == "destroy" {
                    removed.insert(pod.as_str(), o.at);
                }
            }
            _ => {}
        }
    }
    let last = |m: &BTreeMap<&str, Instant>, from: Instant| {
        m.values().max().and_then(|at| since(from, *at))
    };
    out.created = last(&created, t0);
    out.bound = last(&bound, t0);
    out.containers_created = last(&containers, t0);
    out.started = last(&started, t0);
    if removed.len() == stale.len() {
        out.last_removed = last(&removed, t1);
    }
    out
}

/// The cut-off agent container's log (timestamped by Docker), with the round's t0 and
/// t1 to read it against. The container's name is `DockerCluster`'s convention.
fn print_agent_log(c: &DockerCluster, t0: SystemTime, t1: SystemTime) {
    let container = format!("tug-{}-agent-{}", c.namespace, LOST + 1);
    eprintln!(
        "--- log of {container} (t0 {}, t1 {}) ---",
        wall(t0),
        wall(t1)
    );
    match Command::new("docker")
        .args(["logs", "--timestamps", &container])
        .output()
    {
        Ok(out) => {
            eprint!("{}", String::from_utf8_lossy(&out.stdout));
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
        Err(e) => eprintln!("cannot run docker logs: {e}"),
    }
    eprintln!("--- end of log ---");
}

/// What the rounds' clusters left behind (there should be nothing): containers and
/// networks labelled with their namespaces.
fn leftovers(namespaces: &[String]) -> anyhow::Result<()> {
    let mut left = Vec::new();
    for ns in namespaces {
        for (what, args) in [
            (
                "pod containers",
                vec![
                    "ps",
                    "-aq",
                    "--filter",
                    "label=io.kubernetes.pod.namespace=NS",
                ],
            ),
            (
                "agent containers",
                vec!["ps", "-aq", "--filter", "label=io.tugboat.test=NS"],
            ),
            (
                "networks",
                vec![
                    "network",
                    "ls",
                    "-q",
                    "--filter",
                    "label=io.tugboat.test=NS",
                ],
            ),
        ] {
            let filter = args[args.len() - 1].replace("NS", ns);
            let mut args: Vec<&str> = args[..args.len() - 1].to_vec();
            args.push(&filter);
            let out = Command::new("docker").args(&args).output()?;
            let ids = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !ids.is_empty() {
                left.push(format!("{what} of {ns}: {}", ids.replace('\n', " ")));
            }
        }
    }
    if left.is_empty() {
        Ok(())
    } else {
        bail!("left behind: {}", left.join("; "))
    }
}

#[derive(Clone, Copy)]
enum Stat {
    P50,
    Max,
}

impl Stat {
    /// The median by nearest rank, or the maximum, of the rounds that have the figure;
    /// "n/N" is appended when some rounds lack it (timed out).
    fn of(self, rounds: &[&Round], figure: impl Fn(&Round) -> Option<Duration>) -> String {
        let mut v: Vec<Duration> = rounds.iter().filter_map(|r| figure(r)).collect();
        v.sort();
        let pick = match self {
            Stat::P50 => v.get((v.len().max(1) - 1) / 2).copied(),
            Stat::Max => v.last().copied(),
        };
        match pick {
            None => "–".to_string(),
            Some(d) if v.len() == rounds.len() => secs(d),
            Some(d) => format!("{} ({}/{})", secs(d), v.len(), rounds.len()),
        }
    }
}

fn cell(d: Option<Duration>) -> String {
    d.map_or_else(|| "timed out".to_string(), secs)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// `HH:MM:SS.mmm` UTC, to read against `docker logs --timestamps`.
fn wall(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let s = d.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_millis()
    )
}
