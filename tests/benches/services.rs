//! Benchmark (not a test): requests through a Service against straight to the
//! container, in the same run — Tugboat's node port and ClusterIP, and Docker
//! Swarm's routing mesh on the same daemon when it can be set up.
//!
//! Each case sends `SERVICES_REQUESTS` (default 2000) `GET /` requests to the
//! sample, each on a new connection (the sample closes after every answer, so
//! every request is also a proxied connection), from `SERVICES_CONCURRENCY`
//! (default 8) clients at once, and reports requests/s and latency p50/p99. Cases
//! alternate per replica count (1 and 3):
//!
//! - `direct`: to one pod IP from the host (the baseline for the node port);
//! - `node port`: to node-1's node port on its loopback address;
//! - `direct (pod)`: to one pod IP from inside a client pod's network namespace;
//! - `ClusterIP`: to the ClusterIP from inside the same client pod (the baseline
//!   for it is `direct (pod)`);
//! - `swarm mesh`: a Swarm service of the same image and replica count published
//!   on a port of 127.0.0.1 through the ingress routing mesh, and `swarm direct`
//!   to one of its task containers.
//!
//! `cargo bench -p tugboat-tests --bench services`. Needs the Docker daemon and
//! root (to enter the client pod's namespace). A daemon outside any swarm is made a
//! single-node swarm for the run and leaves it at the end; everything the run
//! created is removed. Traffic goes only to loopback and the run's own containers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tugboat_api::resource::DEPLOYMENTS;
use tugboat_tests::bench::{
    Swarm, loadavg, output_of, rounds_from_env, swarm_mesh_service, utc_now,
};
use tugboat_tests::docker::{DockerCluster, docker, sample_deployment};
use tugboat_tests::eventually_within;

const IMAGE: &str = "tugboat/sample:latest";
const BENCH_LABEL: &str = "io.tugboat.bench=services";
const SWARM_SERVICE: &str = "tugbench-svc";
/// The longest one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a whole case may take.
const CASE_LIMIT: Duration = Duration::from_secs(300);
const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Figures {
    ok: usize,
    failed: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Figures {
    fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn pct(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)]
    }
}

async fn one(target: SocketAddr) -> anyhow::Result<()> {
    let mut c = TcpStream::connect(target).await?;
    c.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await?;
    let mut raw = Vec::with_capacity(512);
    c.read_to_end(&mut raw).await?;
    if !raw.starts_with(b"HTTP/1.1 200") {
        bail!("answered {:?}", String::from_utf8_lossy(&raw));
    }
    Ok(())
}

/// `total` requests to `target` from `concurrency` clients.
async fn load(target: SocketAddr, total: usize, concurrency: usize) -> Figures {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut f = Figures::default();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                if start.elapsed() > CASE_LIMIT {
                    f.failed += 1;
                    continue;
                }
                let t = Instant::now();
                match tokio::time::timeout(REQUEST_TIMEOUT, one(target)).await {
                    Ok(Ok(())) => {
                        f.ok += 1;
                        f.latencies.push(t.elapsed());
                    }
                    _ => f.failed += 1,
                }
            }
            f
        }));
    }
    let mut all = Figures::default();
    for t in tasks {
        if let Ok(f) = t.await {
            all.ok += f.ok;
            all.failed += f.failed;
            all.latencies.extend(f.latencies);
        }
    }
    all.elapsed = start.elapsed();
    all.latencies.sort();
    all
}

/// [`load`] from inside the network namespace of process `pid`, on a thread of
/// its own (its sockets are made there).
fn load_in(
    pid: i64,
    target: SocketAddr,
    total: usize,
    concurrency: usize,
) -> anyhow::Result<Figures> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::spawn(move || -> anyhow::Result<Figures> {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(rt.block_on(load(target, total, concurrency)))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the load thread panicked"))?
}

fn row(case: &str, replicas: usize, f: &Figures) -> String {
    format!(
        "{case:<14} {replicas:>8} {:>9.0} {:>9.2} {:>9.2} {:>7}",
        f.rps(),
        f.pct(0.5).as_secs_f64() * 1000.0,
        f.pct(0.99).as_secs_f64() * 1000.0,
        f.failed
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total = rounds_from_env("SERVICES_REQUESTS", 2000)?;
    let concurrency = rounds_from_env("SERVICES_CONCURRENCY", 8)?;
    println!(
        "# services: {} , code {}, load before {}, docker {}",
        utc_now(),
        output_of("git", &["describe", "--always", "--dirty"]),
        loadavg(),
        output_of("docker", &["version", "--format", "{{.Server.Version}}"])
    );
    println!("# {total} requests per case, {concurrency} clients, a new connection each");
    let (c, ips) = DockerCluster::start_loopback_nodes("bench-svc", 40, &[]).await?;
    let mut web = sample_deployment("web", 1);
    web["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] =
        json!({"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1});
    c.apply(&web).await?;
    let svc = c
        .apply(
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "selector": {"app": "web"},
                "ports": [{"port": 80, "targetPort": 8080}]}}),
        )
        .await?;
    let node_port: SocketAddr = format!(
        "{}:{}",
        ips[0],
        svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap_or(0)
    )
    .parse()?;
    let cluster_ip: SocketAddr =
        format!("{}:80", svc["spec"]["clusterIP"].as_str().unwrap_or("")).parse()?;
    c.apply(&sample_deployment("client", 1)).await?;
    let client = eventually_within(WAIT, "the client pod runs", || async {
        let p = c.pods("app=client").await.ok()?.into_iter().next()?;
        p["status"]["containerStatuses"][0]["state"]["running"]
            .is_object()
            .then_some(p)
    })
    .await?;
    let client_id = c
        .containers(true)?
        .into_iter()
        .find(|x| x.pod == client["metadata"]["name"].as_str().unwrap_or(""))
        .context("no client container")?
        .id;
    let client_pid: i64 = docker(&["inspect", "-f", "{{.State.Pid}}", &client_id])?.parse()?;
    let swarm = match Swarm::join() {
        Ok(s) => Some(s),
        Err(e) => {
            println!("# no Swarm: {e}");
            None
        }
    };

    println!(
        "{:<14} {:>8} {:>9} {:>9} {:>9} {:>7}",
        "case", "replicas", "req/s", "p50 ms", "p99 ms", "failed"
    );
    for replicas in [1usize, 3] {
        c.client
            .scale(&DEPLOYMENTS, Some(&c.namespace), "web", replicas as i32)
            .await?;
        eventually_within(WAIT, "the web replicas are ready endpoints", || async {
            (c.ready_endpoints("web").await == replicas).then_some(())
        })
        .await?;
        let pods = c.pods("app=web").await?;
        let pod_ip: SocketAddr = format!(
            "{}:8080",
            pods.iter()
                .find_map(|p| p["status"]["podIP"].as_str())
                .unwrap_or("")
        )
        .parse()?;
        // Warm up every path once.
        for t in [pod_ip, node_port] {
            let _ = load(t, 50, 2).await;
        }
        let _ = load_in(client_pid, cluster_ip, 50, 2);
        println!(
            "{}",
            row("direct", replicas, &load(pod_ip, total, concurrency).await)
        );
        println!(
            "{}",
            row(
                "node port",
                replicas,
                &load(node_port, total, concurrency).await
            )
        );
        let f =
            tokio::task::spawn_blocking(move || load_in(client_pid, pod_ip, total, concurrency))
                .await??;
        println!("{}", row("direct (pod)", replicas, &f));
        let f = tokio::task::spawn_blocking(move || {
            load_in(client_pid, cluster_ip, total, concurrency)
        })
        .await??;
        println!("{}", row("ClusterIP", replicas, &f));
        if swarm.is_some() {
            match swarm_mesh_service(SWARM_SERVICE, IMAGE, replicas, 30999, BENCH_LABEL, WAIT).await
            {
                Ok((_service, mesh, task)) => {
                    let _ = load(mesh, 50, 2).await;
                    println!(
                        "{}",
                        row(
                            "swarm direct",
                            replicas,
                            &load(task, total, concurrency).await
                        )
                    );
                    println!(
                        "{}",
                        row(
                            "swarm mesh",
                            replicas,
                            &load(mesh, total, concurrency).await
                        )
                    );
                }
                Err(e) => println!("# swarm routing mesh not available here: {e}"),
            }
        }
    }
    println!("# load after {}", loadavg());
    drop(swarm);
    drop(c);
    Ok(())
}
