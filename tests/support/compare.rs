//! The parts of the `compare` benchmark (`benches/compare.rs`): the same work done
//! by Tugboat, by the Docker engine driven directly through bollard and by a Swarm
//! service, timed against one yardstick, Docker's event stream; and the footprint of
//! Tugboat's processes read from /proc.
//!
//! Everything created here carries [`BENCH_LABEL`] with a value unique to the run,
//! and is removed by its guard on drop (also on error or Ctrl-C).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;
use tugboat_agent::runtime::docker::DockerRuntime;
use tugboat_agent::runtime::{ContainerRuntime, ContainerSpec, LABEL_POD_NAMESPACE, RuntimeEvent};
use tugboat_agent::worker::sandbox::{LABEL_CONTAINER_TYPE, TYPE_SANDBOX};
use tugboat_api::resource::DEPLOYMENTS;

use crate::docker::{DockerCluster, docker, docker_ps, sample_deployment};

/// The label on everything the benchmark creates outside Tugboat.
pub const BENCH_LABEL: &str = "io.tugboat.bench";
/// Which round (and system) a bollard container belongs to.
const ROUND_LABEL: &str = "io.tugboat.bench.round";
/// `app` or `sandbox`, for the pod-shaped bollard containers.
const KIND_LABEL: &str = "io.tugboat.bench.kind";
pub const IMAGE: &str = "tugboat/sample:latest";
/// Swarm's label on a task's container.
const SERVICE_LABEL: &str = "com.docker.swarm.service.name";
/// The grace every system stops a container with before removing it (the
/// Deployment's `terminationGracePeriodSeconds`, `docker stop -t 2`, Swarm's
/// `--stop-grace-period 2s`).
const GRACE: Duration = Duration::from_secs(2);

/// A container event from Docker's stream, stamped when it arrived here.
pub struct Observed {
    pub at: Instant,
    pub event: RuntimeEvent,
}

/// Every container event of the daemon (one stream for every system), in order.
pub struct EventFeed {
    rx: UnboundedReceiver<Observed>,
    task: JoinHandle<()>,
}

impl Drop for EventFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EventFeed {
    pub fn start(runtime: Arc<DockerRuntime>) -> Self {
        let (tx, rx) = unbounded_channel();
        let task = tokio::spawn(forward(runtime, tx));
        EventFeed { rx, task }
    }

    /// Forgets what arrived so far.
    pub fn drain(&mut self) -> usize {
        let mut n = 0;
        while self.rx.try_recv().is_ok() {
            n += 1;
        }
        n
    }

    /// Runs `act` from t0 (now) and waits, at most `limit`, until events that
    /// `counts` accepts arrived for `want` distinct containers; returns the time
    /// from t0 to the arrival of the last of them. `act` runs alongside the
    /// waiting (its own requests are part of what is timed).
    pub async fn timed(
        &mut self,
        what: &str,
        act: impl Future<Output = anyhow::Result<()>>,
        want: usize,
        limit: Duration,
        counts: impl Fn(&RuntimeEvent) -> bool,
    ) -> anyhow::Result<Duration> {
        self.drain();
        let t0 = Instant::now();
        let deadline = tokio::time::Instant::from_std(t0 + limit);
        let mut act = std::pin::pin!(act);
        let mut acted = false;
        let mut seen: HashSet<String> = HashSet::new();
        let mut last = t0;
        while !(acted && seen.len() >= want) {
            tokio::select! {
                done = &mut act, if !acted => {
                    done.with_context(|| what.to_string())?;
                    acted = true;
                }
                o = tokio::time::timeout_at(deadline, self.rx.recv()) => match o {
                    Ok(Some(o)) => {
                        if counts(&o.event) && seen.insert(o.event.container_id.clone()) {
                            last = o.at;
                        }
                    }
                    Ok(None) => bail!("{what}: the Docker event stream ended"),
                    Err(_) => bail!(
                        "{what}: {} of {want} containers within {limit:?}{}",
                        seen.len(),
                        if acted { "" } else { " (the request had not returned)" }
                    ),
                },
            }
        }
        Ok(last.saturating_duration_since(t0))
    }
}

/// Forwards every container event, reconnecting where the stream broke off.
async fn forward(runtime: Arc<DockerRuntime>, tx: UnboundedSender<Observed>) {
    let mut since = None;
    loop {
        match runtime.events(&[], since).await {
            Ok(mut events) => {
                while let Some(Ok(event)) = events.next().await {
                    let at = Instant::now();
                    since = Some(event.time_nanos + 1);
                    if tx.send(Observed { at, event }).is_err() {
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

fn label<'a>(e: &'a RuntimeEvent, key: &str) -> Option<&'a str> {
    e.labels.get(key).map(String::as_str)
}

/// Tugboat: a Deployment of the sample image in the cluster's namespace.
pub struct Tugboat<'a> {
    pub cluster: &'a DockerCluster,
}

impl Tugboat<'_> {
    /// An app container (not a sandbox) of this cluster's namespace.
    fn app(&self, e: &RuntimeEvent) -> bool {
        label(e, LABEL_POD_NAMESPACE) == Some(self.cluster.namespace.as_str())
            && label(e, LABEL_CONTAINER_TYPE) != Some(TYPE_SANDBOX)
    }

    /// From the create request until every app container has started.
    pub async fn scale_out(
        &self,
        feed: &mut EventFeed,
        name: &str,
        n: usize,
        limit: Duration,
    ) -> anyhow::Result<Duration> {
        let manifest = sample_deployment(name, i64::try_from(n)?);
        feed.timed(
            &format!("Tugboat: Deployment {name} of {n}"),
            async { self.cluster.apply(&manifest).await.map(|_| ()) },
            n,
            limit,
            |e| e.action == "start" && self.app(e),
        )
        .await
    }

    /// From the delete request until every app container is removed; then
    /// waits (untimed) until the sandboxes are gone too.
    pub async fn delete(
        &self,
        feed: &mut EventFeed,
        name: &str,
        n: usize,
        limit: Duration,
    ) -> anyhow::Result<Duration> {
        let ns = self.cluster.namespace.clone();
        let took = feed
            .timed(
                &format!("Tugboat: deleting Deployment {name}"),
                async {
                    self.cluster
                        .client
                        .delete(&DEPLOYMENTS, Some(&ns), name)
                        .await
                        .map(|_| ())
                        .map_err(anyhow::Error::from)
                },
                n,
                limit,
                |e| e.action == "destroy" && self.app(e),
            )
            .await?;
        let filter = format!("label={LABEL_POD_NAMESPACE}={ns}");
        gone(&filter, limit).await?;
        Ok(took)
    }
}

/// Waits until `docker ps -a --filter FILTER` lists nothing.
async fn gone(filter: &str, limit: Duration) -> anyhow::Result<()> {
    crate::eventually_within(
        limit,
        &format!("no container left with {filter}"),
        || async { docker_ps(filter, false).ok()?.is_empty().then_some(()) },
    )
    .await
}

/// The Docker engine driven directly: N containers of the sample image created
/// and started at once through bollard, with labels; `pod_shaped` gives each a
/// sandbox (Tugboat's sandbox image) whose network namespace it joins, as a pod's
/// containers do.
pub struct Bollard {
    runtime: Arc<DockerRuntime>,
    /// The value of [`BENCH_LABEL`] for this run.
    run: String,
    sandbox_image: String,
}

impl Bollard {
    pub fn new(runtime: Arc<DockerRuntime>, run: &str) -> Self {
        Bollard {
            runtime,
            run: run.to_string(),
            sandbox_image: tugboat_agent::worker::sandbox::PodInfra::default().image,
        }
    }

    fn spec(&self, round: &str, name: String, kind: &str, image: &str) -> ContainerSpec {
        ContainerSpec {
            name,
            image: image.to_string(),
            labels: BTreeMap::from([
                (BENCH_LABEL.to_string(), self.run.clone()),
                (ROUND_LABEL.to_string(), round.to_string()),
                (KIND_LABEL.to_string(), kind.to_string()),
            ]),
            ..Default::default()
        }
    }

    /// Creates and starts one container (after its sandbox, when pod-shaped).
    async fn one(&self, round: &str, i: usize, pod_shaped: bool) -> anyhow::Result<()> {
        let mut app = self.spec(round, format!("tugbench_{round}_{i}"), "app", IMAGE);
        if pod_shaped {
            let sandbox = self.spec(
                round,
                format!("tugbench_{round}_{i}_sandbox"),
                "sandbox",
                &self.sandbox_image,
            );
            let id = self.runtime.create(&sandbox).await?;
            self.runtime.start(&id).await?;
            app.network = Some(format!("container:{id}"));
        }
        let id = self.runtime.create(&app).await?;
        self.runtime.start(&id).await?;
        Ok(())
    }

    /// `n` containers created and started, at most `concurrency` at a time.
    pub async fn create_start(
        &self,
        round: &str,
        n: usize,
        pod_shaped: bool,
        concurrency: usize,
    ) -> anyhow::Result<()> {
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..n)
            .map(|i| self.one(round, i, pod_shaped))
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        results.into_iter().collect()
    }

    fn ours(&self, e: &RuntimeEvent, round: &str) -> bool {
        label(e, BENCH_LABEL) == Some(self.run.as_str())
            && label(e, ROUND_LABEL) == Some(round)
            && label(e, KIND_LABEL) == Some("app")
    }

    /// From the first request until all `n` app containers have started.
    pub async fn scale_out(
        &self,
        feed: &mut EventFeed,
        round: &str,
        n: usize,
        pod_shaped: bool,
        limit: Duration,
    ) -> anyhow::Result<Duration> {
        feed.timed(
            &format!("bollard: {n} containers"),
            self.create_start(round, n, pod_shaped, n),
            n,
            limit,
            |e| e.action == "start" && self.ours(e, round),
        )
        .await
    }

    /// Every container of `round` stopped (grace [`GRACE`]) and removed, all at
    /// once (an app container before its sandbox); until every app container is
    /// removed.
    pub async fn delete(
        &self,
        feed: &mut EventFeed,
        round: &str,
        n: usize,
        limit: Duration,
    ) -> anyhow::Result<Duration> {
        let filter = [
            (BENCH_LABEL.to_string(), self.run.clone()),
            (ROUND_LABEL.to_string(), round.to_string()),
        ];
        let act = async {
            let containers = self.runtime.list(&filter).await?;
            let (sandboxes, apps): (Vec<_>, Vec<_>) = containers
                .into_iter()
                .partition(|c| c.labels.get(KIND_LABEL).map(String::as_str) == Some("sandbox"));
            let removals = apps.iter().map(|app| async {
                self.runtime.stop(&app.id, GRACE).await?;
                self.runtime.remove(&app.id).await?;
                // Its sandbox (the one whose namespace it joined), if any.
                let name = format!("{}_sandbox", app.name.trim_start_matches('/'));
                if let Some(s) = sandboxes
                    .iter()
                    .find(|s| s.name.trim_start_matches('/') == name)
                {
                    self.runtime.stop(&s.id, GRACE).await?;
                    self.runtime.remove(&s.id).await?;
                }
                anyhow::Ok(())
            });
            futures::future::join_all(removals)
                .await
                .into_iter()
                .collect::<anyhow::Result<Vec<()>>>()?;
            Ok(())
        };
        let took = feed
            .timed(
                &format!("bollard: removing {n} containers"),
                act,
                n,
                limit,
                |e| e.action == "destroy" && self.ours(e, round),
            )
            .await?;
        gone(&format!("label={ROUND_LABEL}={round}"), limit).await?;
        Ok(took)
    }

    /// Removes every container of this run (what a failed round left).
    pub fn clean_up(&self) {
        remove_labelled(&format!("label={BENCH_LABEL}={}", self.run));
    }
}

/// `docker rm -f` of every container matching `filter`.
fn remove_labelled(filter: &str) {
    if let Ok(ids) = docker(&["ps", "-aq", "--filter", filter])
        && !ids.is_empty()
    {
        let mut args = vec!["rm", "-f"];
        args.extend(ids.split_whitespace());
        let _ = docker(&args);
    }
}

/// Creates and starts `n` plain containers at most `concurrency` at a time and
/// removes them; how many were created and started per second (by the API calls'
/// own completion, no events).
pub async fn creates_per_second(
    bollard: &Bollard,
    round: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let made = bollard.create_start(round, n, false, concurrency).await;
    let took = t0.elapsed();
    remove_labelled(&format!("label={ROUND_LABEL}={round}"));
    made?;
    Ok(n as f64 / took.as_secs_f64())
}

/// Swarm: a service of the sample image with N replicas.
pub struct SwarmServices {
    run: String,
    created: Vec<String>,
}

impl SwarmServices {
    pub fn new(run: &str) -> Self {
        SwarmServices {
            run: run.to_string(),
            created: Vec::new(),
        }
    }

    fn task_of(e: &RuntimeEvent, service: &str) -> bool {
        label(e, SERVICE_LABEL) == Some(service)
    }

    /// From `docker service create` until all `n` tasks' containers have started.
    pub async fn scale_out(
        &mut self,
        feed: &mut EventFeed,
        name: &str,
        n: usize,
        limit: Duration,
    ) -> anyhow::Result<Duration> {
        self.created.push(name.to_string());
        let bench = format!("{BENCH_LABEL}={}", self.run);
        let replicas = n.to_string();
        let args = [
            "service",
            "create",
            "--detach",
            "--quiet",
            "--name",
            name,
            "--replicas",
            &replicas,
            "--stop-grace-period",
            "2s",
            "--label",
            &bench,
            "--container-label",
            &bench,
            IMAGE,
        ]
        .map(str::to_string);
        feed.timed(
            &format!("Swarm: service {name} of {n}"),
            blocking_docker(args.to_vec()),
            n,
            limit,
            |e| e.action == "start" && Self::task_of(e, name),
        )
        .await
    }

    /// From `docker service rm` until every task's container is removed.
    pub async fn delete(
        &mut self,
        feed: &mut EventFeed,
        name: &str,
        n: usize,
        limit: Duration,
    ) -> anyhow::Result<Duration> {
        let args = ["service", "rm", name].map(str::to_string);
        let took = feed
            .timed(
                &format!("Swarm: removing service {name}"),
                blocking_docker(args.to_vec()),
                n,
                limit,
                |e| e.action == "destroy" && Self::task_of(e, name),
            )
            .await?;
        self.created.retain(|s| s != name);
        gone(&format!("label={SERVICE_LABEL}={name}"), limit).await?;
        Ok(took)
    }
}

impl Drop for SwarmServices {
    fn drop(&mut self) {
        for name in &self.created {
            if let Err(e) = docker(&["service", "rm", name]) {
                eprintln!("REMOVE THE SERVICE BY HAND (`docker service rm {name}`): {e}");
            }
        }
        // Swarm removes a removed service's containers on its own, soon after.
        let filter = format!("label={BENCH_LABEL}={}", self.run);
        for _ in 0..100 {
            if docker(&["ps", "-aq", "--filter", &filter]).is_ok_and(|ids| ids.is_empty()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

async fn blocking_docker(args: Vec<String>) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args).map(|_| ())
    })
    .await?
}

/// A process's resident memory and CPU use over a window.
#[derive(Clone, Copy, Debug)]
pub struct Footprint {
    pub rss_mb: f64,
    /// Percent of one core, averaged over the window.
    pub cpu_percent: f64,
}

/// The CPU time (user + system) process `pid` has used, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces): state is the
    // first, utime the 12th and stime the 13th.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

fn clock_ticks() -> f64 {
    crate::bench::output_of("getconf", &["CLK_TCK"])
        .parse()
        .unwrap_or(100.0)
}

/// `pid`'s resident memory at the end of `window` and its CPU use during it.
pub async fn footprint(pid: Option<u32>, window: Duration) -> Footprint {
    let before = pid.and_then(cpu_seconds);
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let after = pid.and_then(cpu_seconds);
    let cpu_percent = match (before, after) {
        (Some(b), Some(a)) => 100.0 * (a - b) / t0.elapsed().as_secs_f64(),
        _ => f64::NAN,
    };
    Footprint {
        rss_mb: crate::bench::rss_mb(pid),
        cpu_percent,
    }
}

/// The median of `samples` (the lower middle one for an even count); NaN if none.
pub fn median(samples: &[Duration]) -> f64 {
    let mut v: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[(v.len() - 1) / 2]
}
