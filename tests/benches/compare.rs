//! Benchmark (not a test): one table comparing Tugboat with the Docker engine it
//! drives and with Docker Swarm, all measured in the same run on the same daemon.
//!
//! - **scale-out** of N replicas (N = 20, 50, 100): Tugboat (a Deployment of the
//!   sample image, 1 agent), from the create request until Docker's event stream has
//!   reported every app container `start`; the same N containers created and
//!   started at once through bollard; the same N with a sandbox each whose network
//!   namespace they join ("pod-shaped", as Tugboat makes pods); a Swarm service of N
//!   replicas.
//! - **delete** of those N: until every app container's `destroy` (all stop with a
//!   2 s grace first).
//! - **self-heal** (kill a container → its replacement started) and **node loss**
//!   (agent SIGKILLed → its pods Running elsewhere): the `selfheal` and `nodeloss`
//!   benchmarks' cores, a few rounds.
//! - **footprint**: resident memory and CPU of the controller and agent processes,
//!   idle and with 100 pods; the size of the release `tug` binary the run used.
//! - the engine's creates+starts per second at 2…32 at a time (what the agent's
//!   bound on concurrent creates was chosen from).
//!
//! Rounds alternate the systems (the order rotates each round); each figure is the
//! median of `COMPARE_ROUNDS` (default 3). `COMPARE_SIZES` (default `20,50,100`),
//! `COMPARE_HEAL_ROUNDS` (default 5, 0 skips), `COMPARE_NODELOSS_ROUNDS` (default 1, 0
//! skips), `COMPARE_SWEEP=0` skips the concurrency sweep, `COMPARE_CREATE_CONCURRENCY=N`
//! starts the agent with `--create-concurrency N`.
//!
//! `cargo bench -p tugboat-tests --bench compare`. Needs the Docker daemon. A daemon
//! outside any swarm is made a single-node swarm for the run and leaves it at the
//! end; only what the benchmark created is removed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::signal::unix::{SignalKind, signal};
use tugboat_agent::runtime::ContainerRuntime as _;
use tugboat_agent::runtime::docker::DockerRuntime;
use tugboat_tests::bench::{Swarm, git_describe, loadavg, rounds_from_env, utc_now};
use tugboat_tests::compare::{
    Bollard, EventFeed, Footprint, SwarmServices, Tugboat, creates_per_second, footprint, median,
};
use tugboat_tests::docker::DockerCluster;

/// The longest one scale-out or delete may take.
const LIMIT: Duration = Duration::from_secs(180);
/// How long a footprint is sampled.
const WINDOW: Duration = Duration::from_secs(5);
const SWEEP: [usize; 5] = [2, 4, 8, 16, 32];
const SWEEP_CONTAINERS: usize = 64;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = run() => result,
        _ = interrupt.recv() => bail!("interrupted"),
        _ = terminate.recv() => bail!("terminated"),
    }
}

fn sizes() -> anyhow::Result<Vec<usize>> {
    match std::env::var("COMPARE_SIZES") {
        Ok(v) => v
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| anyhow::anyhow!("COMPARE_SIZES={v:?}: expected e.g. 20,50,100"))
            })
            .collect(),
        Err(_) => Ok(vec![20, 50, 100]),
    }
}

fn count_from_env(var: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(var) {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{var}={v:?}: expected a whole number")),
        Err(_) => Ok(default),
    }
}

#[derive(Default)]
struct Samples {
    tugboat: Vec<Duration>,
    bollard: Vec<Duration>,
    pod_shaped: Vec<Duration>,
    swarm: Vec<Duration>,
}

#[derive(Clone, Copy)]
enum System {
    Tugboat,
    Bollard,
    PodShaped,
    Swarm,
}

async fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let rounds = rounds_from_env("COMPARE_ROUNDS", 3)?;
    let sizes = sizes()?;
    let heal_rounds = count_from_env("COMPARE_HEAL_ROUNDS", 5)?;
    let nodeloss_rounds = count_from_env("COMPARE_NODELOSS_ROUNDS", 1)?;
    let sweep = std::env::var("COMPARE_SWEEP").map_or(true, |v| v != "0");
    let runtime = Arc::new(DockerRuntime::connect(None).await?);
    let host = runtime.host_info().await?;
    let date = utc_now();
    let code = git_describe();
    let load_before = loadavg();

    // The cluster first: it builds the sample image (and the agent the sandbox
    // image) that the other systems run too.
    let agent_args = match std::env::var("COMPARE_CREATE_CONCURRENCY") {
        Ok(n) => vec!["--create-concurrency".to_string(), n],
        Err(_) => Vec::new(),
    };
    let cluster =
        DockerCluster::start_with_controller_process_and_args("compare", vec![agent_args.clone()])
            .await?;
    let tug = tugboat_tests::tug_binary()?;
    let tug_size = std::fs::metadata(&tug)?.len();
    let controller_pid = cluster.controller.pid();
    let agent_pid = cluster.agent_pid(0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (idle_controller, idle_agent) = tokio::join!(
        footprint(controller_pid, WINDOW),
        footprint(agent_pid, WINDOW)
    );
    eprintln!("idle: controller {idle_controller:?}, agent {idle_agent:?}");

    let run_id = format!("compare-{}", std::process::id());
    let swarm = Swarm::join()?;
    let mut feed = EventFeed::start(runtime.clone());
    let bollard = Bollard::new(runtime.clone(), &run_id);
    let _cleanup = CleanUp(&bollard);
    let mut services = SwarmServices::new(&run_id);
    let tugboat = Tugboat { cluster: &cluster };

    let mut sweep_rates = Vec::new();
    if sweep {
        for c in SWEEP {
            let rate =
                creates_per_second(&bollard, &format!("sweep{c}"), SWEEP_CONTAINERS, c).await?;
            eprintln!("{SWEEP_CONTAINERS} creates+starts, {c} at a time: {rate:.1}/s");
            sweep_rates.push((c, rate));
        }
    }

    let mut busy: Option<(Footprint, Footprint)> = None;
    let mut scale_out = Vec::new();
    let mut delete = Vec::new();
    let systems = [
        System::Tugboat,
        System::Bollard,
        System::PodShaped,
        System::Swarm,
    ];
    for &n in &sizes {
        let mut up = Samples::default();
        let mut down = Samples::default();
        for round in 0..rounds {
            for k in 0..systems.len() {
                let system = systems[(k + round) % systems.len()];
                let tag = format!("n{n}r{round}");
                let (u, d) = match system {
                    System::Tugboat => {
                        let name = format!("scale-{tag}");
                        let u = tugboat.scale_out(&mut feed, &name, n, LIMIT).await?;
                        if n == 100 && busy.is_none() {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                            let b = tokio::join!(
                                footprint(controller_pid, WINDOW),
                                footprint(agent_pid, WINDOW)
                            );
                            eprintln!("100 pods: controller {:?}, agent {:?}", b.0, b.1);
                            busy = Some(b);
                        }
                        let d = tugboat.delete(&mut feed, &name, n, LIMIT).await?;
                        up.tugboat.push(u);
                        down.tugboat.push(d);
                        (u, d)
                    }
                    System::Bollard | System::PodShaped => {
                        let pod_shaped = matches!(system, System::PodShaped);
                        let tag = format!("{tag}{}", if pod_shaped { "p" } else { "b" });
                        let u = bollard
                            .scale_out(&mut feed, &tag, n, pod_shaped, LIMIT)
                            .await?;
                        let d = bollard.delete(&mut feed, &tag, n, LIMIT).await?;
                        if pod_shaped {
                            up.pod_shaped.push(u);
                            down.pod_shaped.push(d);
                        } else {
                            up.bollard.push(u);
                            down.bollard.push(d);
                        }
                        (u, d)
                    }
                    System::Swarm => {
                        let name = format!("tugbench-{}-{tag}", std::process::id());
                        let u = services.scale_out(&mut feed, &name, n, LIMIT).await?;
                        let d = services.delete(&mut feed, &name, n, LIMIT).await?;
                        up.swarm.push(u);
                        down.swarm.push(d);
                        (u, d)
                    }
                };
                eprintln!(
                    "N={n} round {}/{rounds} {:<10} scale-out {:.2} s, delete {:.2} s",
                    round + 1,
                    system.name(),
                    u.as_secs_f64(),
                    d.as_secs_f64()
                );
            }
        }
        scale_out.push((n, up));
        delete.push((n, down));
    }
    drop(services);
    drop(feed);

    let heal = if heal_rounds > 0 {
        Some(tugboat_tests::selfheal::measure(heal_rounds).await?)
    } else {
        None
    };
    let nodeloss = if nodeloss_rounds > 0 {
        Some(tugboat_tests::nodeloss::measure(nodeloss_rounds).await?)
    } else {
        None
    };
    let load_after = loadavg();
    drop(swarm);

    println!();
    println!(
        "Tugboat vs the Docker engine (bollard) vs Swarm, one daemon, same run, {date}; \
         code {code}"
    );
    println!(
        "engine {}, {} CPUs, load average {load_before} before, {load_after} after; \
         Tugboat: controller + 1 agent {}; median of {rounds} rounds, systems alternating",
        host.runtime_version,
        host.cpus,
        if agent_args.is_empty() {
            format!(
                "(--create-concurrency {} by default)",
                tugboat_agent::runtime::docker::CREATE_CONCURRENCY
            )
        } else {
            format!("({})", agent_args.join(" "))
        }
    );
    println!();
    println!(
        "{:<22}{:>10}{:>10}{:>10}{:>10}{:>12}{:>12}{:>12}",
        "",
        "Tugboat s",
        "bollard s",
        "pod-sh. s",
        "Swarm s",
        "Tug/bollard",
        "Tug/pod-sh.",
        "Tug/Swarm"
    );
    for (what, table) in [("scale-out", &scale_out), ("delete", &delete)] {
        for (n, s) in table {
            let (t, b, p, w) = (
                median(&s.tugboat),
                median(&s.bollard),
                median(&s.pod_shaped),
                median(&s.swarm),
            );
            println!(
                "{:<22}{t:>10.2}{b:>10.2}{p:>10.2}{w:>10.2}{:>12.2}{:>12.2}{:>12.2}",
                format!("{what} {n}"),
                t / b,
                t / p,
                t / w
            );
        }
    }
    if let Some(h) = &heal {
        println!(
            "{:<22}{:>10.3}{:>10}{:>10}{:>10.3}{:>12}{:>12}{:>12.2}",
            format!("self-heal p50 ({}×)", h.rounds),
            h.tugboat_running,
            "–",
            "–",
            h.swarm_running,
            "–",
            "–",
            h.tugboat_running / h.swarm_running
        );
    }
    if let Some(l) = &nodeloss {
        println!(
            "{:<22}{:>10.2}{:>10}{:>10}{:>10}{:>12}{:>12}{:>12}",
            format!("node loss ({}×)", l.rounds),
            l.replaced,
            "–",
            "–",
            "–",
            "",
            "",
            ""
        );
    }
    println!();
    let fp = |f: &Footprint| format!("{:>7.1} MB {:>6.2} % CPU", f.rss_mb, f.cpu_percent);
    println!("footprint (resident memory, CPU over {WINDOW:?})");
    println!("  controller idle      {}", fp(&idle_controller));
    println!("  agent idle           {}", fp(&idle_agent));
    match &busy {
        Some((c, a)) => {
            println!("  controller, 100 pods {}", fp(c));
            println!("  agent, 100 pods      {}", fp(a));
        }
        None => println!("  with 100 pods: not measured (100 is not in COMPARE_SIZES)"),
    }
    println!(
        "  tug binary           {:>7.1} MB ({}, the release build this run used)",
        tug_size as f64 / 1e6,
        tug.display()
    );
    if !sweep_rates.is_empty() {
        println!();
        println!(
            "the engine: {SWEEP_CONTAINERS} containers created+started, k at a time (bollard)"
        );
        for (c, rate) in &sweep_rates {
            println!("  k = {c:>2}: {rate:>6.1} containers/s");
        }
    }
    println!();
    println!(
        "Times run from the request until Docker's event stream reported the last app \
         container `start` (scale-out) or `destroy` (delete); every system stops with a 2 s \
         grace before removing."
    );
    println!(
        "Tugboat makes 2 containers per pod (a sandbox holding the network namespace + the app \
         container, like Kubernetes' pause); only app containers are counted. bollard: N plain \
         containers at once; pod-shaped: N (sandbox + app joined via container:<id>) at once."
    );
    if heal.is_some() {
        println!(
            "self-heal: docker kill of one app container → its replacement `start`, p50 \
             (Swarm with --restart-delay 0); node loss: agent SIGKILLed → 6 pods Running and \
             Ready elsewhere, median (3 agents; a Swarm comparison is not made)."
        );
    }
    println!("Service throughput: not in this table (see `--bench services`).");
    eprintln!(
        "the whole run took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    drop(cluster);
    Ok(())
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Tugboat => "Tugboat",
            System::Bollard => "bollard",
            System::PodShaped => "pod-shaped",
            System::Swarm => "Swarm",
        }
    }
}

/// Removes what a failed round of bollard containers left.
struct CleanUp<'a>(&'a Bollard);

impl Drop for CleanUp<'_> {
    fn drop(&mut self) {
        self.0.clean_up();
    }
}
