//! Benchmark (not a test): how fast autoscaling reacts, against the same scale
//! done by hand and against a bare `docker run`. A Deployment of the sample
//! (CPU request 100m, readiness probe every second) behind a NodePort Service
//! on two nodes sharing this host (each agent on its own loopback address);
//! the controller reads the agents and evaluates autoscalers every
//! `AUTOSCALE_PERIOD` seconds (default 15, Tugboat's and Kubernetes' default).
//! Each round measures:
//!
//! - **by hand 1→3**: `spec.replicas` patched from 1 to 3, until 3 pods are
//!   Ready — what scaling costs once someone (or something) decides;
//! - **CPU 1→3**: an HPA at 50 % CPU is measuring the idle pod; one pod starts
//!   burning 300m (3× its request) — until 3 pods are Ready;
//! - **rate 1→3**: an HPA at 4 new connections a second per pod on the
//!   Service; 12 new connections a second through the node ports start —
//!   until 3 pods are Ready, and how many of the requests failed meanwhile;
//! - **by hand 0→1**: from 0 replicas, `spec.replicas` patched to 1, until a
//!   request through the node port is answered;
//! - **held 0→1** (cold start): an HPA with `minReplicas: 0` has scaled the
//!   idle Deployment to 0; one request through a node port is held by the
//!   proxy, the Deployment woken and the request answered — until it is;
//! - **docker run**: `docker run -d -p 127.0.0.1:PORT:8080` of the same image,
//!   until a request to that port is answered — the engine's own floor.
//!
//! `cargo bench -p tugboat-tests --bench autoscale` (`AUTOSCALE_ROUNDS`,
//! default 3; `AUTOSCALE_PERIOD`, default 15). Everything the run created is
//! removed (the cluster's containers by its labels, the bare container by
//! name). Traffic goes only to loopback.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use tugboat_api::PatchType;
use tugboat_api::resource::{DEPLOYMENTS, HORIZONTALPODAUTOSCALERS};
use tugboat_tests::autoscale::{
    burn, cluster, connections_hpa, cpu_hpa, held_get, node_ports, ready_pods, replicas, service,
    web,
};
use tugboat_tests::bench::{git_describe, loadavg, rounds_from_env, utc_now};
use tugboat_tests::docker::{DockerCluster, docker};
use tugboat_tests::eventually_within;
use tugboat_tests::load::{Load, get_from};

const IMAGE: &str = "tugboat/sample:latest";
/// The longest any one step may take.
const LIMIT: Duration = Duration::from_secs(180);
/// New connections a second in the rate round: 3× the per-pod target.
const RATE: u64 = 12;

struct Bench {
    c: DockerCluster,
    addrs: Vec<SocketAddr>,
    period: Duration,
}

impl Bench {
    fn ns(&self) -> &str {
        &self.c.namespace
    }

    async fn set_replicas(&self, n: i64) -> anyhow::Result<()> {
        self.c
            .client
            .patch(
                &DEPLOYMENTS,
                Some(self.ns()),
                "web",
                &json!({"spec": {"replicas": n}}),
                PatchType::Merge,
            )
            .await?;
        Ok(())
    }

    /// Until exactly `n` pods are Ready (and none more); how long it took.
    async fn until_ready(&self, n: usize, what: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        eventually_within(LIMIT, what, || async {
            (ready_pods(&self.c.client, self.ns()).await?.len() == n).then_some(())
        })
        .await?;
        Ok(started.elapsed())
    }

    /// Until the Deployment has no pod and no running container at all.
    async fn until_gone(&self) -> anyhow::Result<()> {
        eventually_within(LIMIT, "no pod and no container left", || async {
            let pods = self.c.pods("app=web").await.ok()?;
            let running = self.c.containers(true).ok()?;
            (pods.is_empty() && running.is_empty()).then_some(())
        })
        .await
    }

    /// Removes the autoscaler, if any, and sets 1 replica by hand.
    async fn reset(&self) -> anyhow::Result<()> {
        let _ = self
            .c
            .client
            .delete(&HORIZONTALPODAUTOSCALERS, Some(self.ns()), "web")
            .await;
        self.set_replicas(1).await?;
        self.until_ready(1, "back to 1 Ready pod").await?;
        for a in &self.addrs {
            eventually_within(LIMIT, "the node port answers", || async {
                get_from(*a).await.ok()
            })
            .await?;
        }
        Ok(())
    }

    /// Applies `hpa` and waits until it reports a current metric, so the
    /// measurement starts with an autoscaler that is already measuring.
    async fn autoscaler(&self, hpa: &serde_json::Value) -> anyhow::Result<()> {
        self.c.apply(hpa).await?;
        eventually_within(LIMIT, "the HPA reports a metric", || async {
            let h = self
                .c
                .client
                .get(&HORIZONTALPODAUTOSCALERS, Some(self.ns()), "web")
                .await
                .ok()?;
            h["status"]["currentMetrics"][0]["type"]
                .as_str()
                .map(|_| ())
        })
        .await
    }

    async fn by_hand_up(&self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.set_replicas(3).await?;
        self.until_ready(3, "3 Ready pods").await?;
        Ok(started.elapsed())
    }

    async fn cpu_up(&self) -> anyhow::Result<Duration> {
        self.autoscaler(&cpu_hpa(1, 3, 50, 300)).await?;
        // Long enough to be seen twice at the slowest, then it ends by itself.
        let seconds = 4 * self.period.as_secs() + 20;
        let started = Instant::now();
        burn(self.addrs[0], seconds, 300).await?;
        self.until_ready(3, "3 Ready pods").await?;
        let took = started.elapsed();
        // The next rounds start without a busy pod.
        let rest = Duration::from_secs(seconds).saturating_sub(started.elapsed());
        tokio::time::sleep(rest + Duration::from_secs(2)).await;
        Ok(took)
    }

    /// (until 3 Ready, requests answered, failed)
    async fn rate_up(&self) -> anyhow::Result<(Duration, usize, usize)> {
        self.autoscaler(&connections_hpa(1, 3, "4", 300)).await?;
        let load = Load::start(self.addrs.clone(), RATE);
        let started = Instant::now();
        let up = self.until_ready(3, "3 Ready pods").await;
        let took = started.elapsed();
        let (answered, failures) = load.finish().await?;
        up?;
        Ok((took, answered, failures.len()))
    }

    async fn by_hand_from_zero(&self) -> anyhow::Result<Duration> {
        self.set_replicas(0).await?;
        self.until_gone().await?;
        let started = Instant::now();
        self.set_replicas(1).await?;
        eventually_within(LIMIT, "the node port answers", || async {
            get_from(self.addrs[1]).await.ok()
        })
        .await?;
        Ok(started.elapsed())
    }

    async fn held_from_zero(&self) -> anyhow::Result<Duration> {
        self.autoscaler(&connections_hpa(0, 3, "5", 0)).await?;
        eventually_within(LIMIT, "0 replicas and no Ready pod", || async {
            let none = ready_pods(&self.c.client, self.ns()).await?.is_empty();
            (replicas(&self.c.client, self.ns()).await? == 0 && none).then_some(())
        })
        .await?;
        self.until_gone().await?;
        // The proxies learn that the Service is now behind the activator.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let started = Instant::now();
        let answer = held_get(self.addrs[1], Duration::from_secs(90)).await?;
        let took = started.elapsed();
        anyhow::ensure!(answer.starts_with("HTTP/1.1 200"), "answered {answer:?}");
        Ok(took)
    }
}

/// The bare container of one `docker run` round, removed on drop.
struct Bare(String);

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

/// `docker run` of the sample publishing 8080 on loopback, until it answers.
async fn docker_run(round: usize) -> anyhow::Result<Duration> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let name = format!("tugbench-autoscale-{}-{round}", std::process::id());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let started = Instant::now();
    let _bare = Bare(name.clone());
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "io.tugboat.bench=autoscale",
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        IMAGE,
    ])
    .context("docker run")?;
    eventually_within(LIMIT, "the bare container answers", || async {
        get_from(addr).await.ok()
    })
    .await?;
    Ok(started.elapsed())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tugboat_tests::init_tracing();
    let rounds = rounds_from_env("AUTOSCALE_ROUNDS", 3)?;
    let period = Duration::from_secs(rounds_from_env("AUTOSCALE_PERIOD", 15)? as u64);
    let (c, ips) = cluster("bench-hpa", 60, period).await?;
    c.apply(&web(1, "100m")).await?;
    let svc = c.apply(&service()).await?;
    let addrs = node_ports(&svc, &ips)?;
    let b = Bench { c, addrs, period };
    b.reset().await?;

    println!(
        "autoscale bench, {}, commit {}, load {}, metrics and HPA period {}s, {RATE} new connections/s in the rate round",
        utc_now(),
        git_describe(),
        loadavg(),
        period.as_secs()
    );
    println!(
        "| round | by hand 1→3 s | CPU 1→3 s | rate 1→3 s | rate failed | by hand 0→1 s | held 0→1 s | docker run s |"
    );
    println!(
        "|------:|--------------:|----------:|-----------:|------------:|--------------:|-----------:|-------------:|"
    );
    for round in 1..=rounds {
        let hand = b.by_hand_up().await?;
        b.reset().await?;
        let cpu = b.cpu_up().await?;
        b.reset().await?;
        let (rate, answered, failed) = b.rate_up().await?;
        b.reset().await?;
        let hand_zero = b.by_hand_from_zero().await?;
        b.reset().await?;
        let held = b.held_from_zero().await?;
        b.reset().await?;
        let bare = docker_run(round).await?;
        println!(
            "| {round:>5} | {:>13.1} | {:>9.1} | {:>10.1} | {:>5} of {:>3} | {:>13.2} | {:>10.2} | {:>12.2} |",
            hand.as_secs_f64(),
            cpu.as_secs_f64(),
            rate.as_secs_f64(),
            failed,
            answered,
            hand_zero.as_secs_f64(),
            held.as_secs_f64(),
            bare.as_secs_f64(),
        );
    }
    Ok(())
}
