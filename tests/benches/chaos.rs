//! A bounded chaos run of a highly available cluster on this machine: three
//! `tug controller` processes on a three-member etcd on loopback, three `tug
//! agent` processes on the local Docker engine, and a client applying and
//! scaling Deployments and writing ConfigMaps throughout, while controllers and
//! etcd members are killed (SIGKILL) and started again, containers are killed
//! under their agents, and agents are killed and restarted.
//!
//! At the end (everything started again) it checks, and prints:
//! - every Deployment converges to the last replica count the client set;
//! - 0 acknowledged writes lost: every ConfigMap whose create was answered
//!   exists, and every Deployment holds the last replica count acknowledged;
//! - 0 duplicate pods: each Deployment has exactly its replicas, and no pod has
//!   two running containers;
//! - 0 orphaned containers: every container of the run belongs to a pod that
//!   exists.
//!
//! `cargo bench -p tugboat-tests --features etcd --bench chaos`;
//! `CHAOS_SECONDS` (default 600) bounds the chaos, and the convergence wait is
//! bounded too. Only what it started is touched: its processes by their PIDs,
//! its containers by the labels of its namespace.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tugboat_api::resource::{CONFIGMAPS, DEPLOYMENTS, PODS};
use tugboat_api::{ListParams, PatchType};
use tugboat_controller::store::etcd::testing::EtcdCluster;
use tugboat_tests::TestController;
use tugboat_tests::docker::{DockerCluster, docker, sample_deployment};

const DEPLOYMENTS_N: usize = 3;
const MAX_REPLICAS: i64 = 5;
/// How long the cluster has to converge once the chaos stops.
const CONVERGE: Duration = Duration::from_secs(300);

/// A small deterministic generator (xorshift), seeded from the clock and
/// printed, so a run can be told apart and repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Default, Debug)]
struct Tally {
    controller_kills: usize,
    etcd_kills: usize,
    container_kills: usize,
    agent_restarts: usize,
    scales_acked: usize,
    scales_failed: usize,
    configmaps_acked: Vec<String>,
    configmaps_failed: usize,
    /// From killing the leader to another holding the lease.
    failovers: Vec<Duration>,
}

/// The lease holder, `c0`..`c2`.
async fn leader(client: &tugboat_api::Client) -> Option<String> {
    let lease = client
        .get(
            &tugboat_api::resource::LEASES,
            Some("kube-system"),
            "tugboat-controller",
        )
        .await
        .ok()?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

fn controller_flags(store: &str, name: &str) -> Vec<String> {
    [
        "--store",
        store,
        "--leader-elect-lease-duration",
        "4",
        "--leader-elect-renew-deadline",
        "3",
        "--leader-elect-retry-period",
        "1",
        "--leader-elect-identity",
        name,
        // Agents restarted by the chaos come back within seconds.
        "--node-grace",
        "20",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn run() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64
        | 1;
    let mut rng = Rng(seed);
    println!("chaos: {seconds} s, seed {seed}");

    let mut etcd = EtcdCluster::start(3).await?;
    let url = etcd.url();
    let mut controllers = Vec::new();
    for i in 0..3 {
        let flags = controller_flags(&url, &format!("c{i}"));
        controllers.push(
            TestController::start_process_with(
                &flags.iter().map(String::as_str).collect::<Vec<_>>(),
            )
            .await?,
        );
    }
    let mut cluster = DockerCluster::start_on_controllers("chaos", 3, controllers).await?;
    let ns = cluster.namespace.clone();
    let client = cluster.client.clone();
    let mut target: BTreeMap<String, i64> = BTreeMap::new();
    for d in 0..DEPLOYMENTS_N {
        let name = format!("app-{d}");
        client
            .create(&DEPLOYMENTS, Some(&ns), &sample_deployment(&name, 2))
            .await?;
        target.insert(name, 2);
    }

    let mut tally = Tally::default();
    // What is down, and when it comes back.
    let mut down_controller: Option<(usize, Instant)> = None;
    let mut down_member: Option<(usize, Instant)> = None;
    let mut down_agent: Option<(usize, Instant)> = None;
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let mut next_chaos = Instant::now() + Duration::from_secs(5);
    let mut writes = 0u64;
    while Instant::now() < end {
        // The client: a scale or a ConfigMap about every 300 ms.
        writes += 1;
        if rng.below(2) == 0 {
            let d = format!("app-{}", rng.below(DEPLOYMENTS_N as u64));
            let replicas = 1 + rng.below(MAX_REPLICAS as u64) as i64;
            let scaled = tokio::time::timeout(
                Duration::from_secs(15),
                client.patch(
                    &DEPLOYMENTS,
                    Some(&ns),
                    &d,
                    &json!({"spec": {"replicas": replicas}}),
                    PatchType::Merge,
                ),
            )
            .await;
            match scaled {
                Ok(Ok(_)) => {
                    tally.scales_acked += 1;
                    target.insert(d, replicas);
                }
                // Not acknowledged: it may or may not have happened; the
                // next acknowledged scale of it decides.
                _ => {
                    tally.scales_failed += 1;
                    target.insert(d.clone(), -1);
                }
            }
        } else {
            let name = format!("cm-{writes}");
            let made = tokio::time::timeout(
                Duration::from_secs(15),
                client.create(
                    &CONFIGMAPS,
                    Some(&ns),
                    &json!({"metadata": {"name": name}, "data": {"n": writes.to_string()}}),
                ),
            )
            .await;
            match made {
                Ok(Ok(_)) => tally.configmaps_acked.push(name),
                _ => tally.configmaps_failed += 1,
            }
        }

        let now = Instant::now();
        // Bring back what is due.
        if let Some((i, at)) = down_controller
            && now >= at
        {
            let c = if i == 0 {
                &mut cluster.controller
            } else {
                &mut cluster.other_controllers[i - 1]
            };
            c.restart_process().await?;
            down_controller = None;
        }
        if let Some((i, at)) = down_member
            && now >= at
        {
            etcd.members[i].restart()?;
            down_member = None;
        }
        if let Some((i, at)) = down_agent
            && now >= at
        {
            cluster.restart_agent(i)?;
            down_agent = None;
        }
        if now >= next_chaos {
            next_chaos = now + Duration::from_secs(3 + rng.below(5));
            let back = now + Duration::from_secs(2 + rng.below(8));
            match rng.below(4) {
                0 if down_controller.is_none() => {
                    // Every other time the leader, else any.
                    let led = leader(&client).await;
                    let i = match led.as_deref().and_then(|l| l.strip_prefix('c')) {
                        Some(n) if tally.controller_kills % 2 == 0 => n.parse().unwrap_or(0),
                        _ => rng.below(3) as usize,
                    };
                    let c = if i == 0 {
                        &mut cluster.controller
                    } else {
                        &mut cluster.other_controllers[i - 1]
                    };
                    c.kill9().await?;
                    let killed = Instant::now();
                    down_controller = Some((i, back));
                    tally.controller_kills += 1;
                    if led.as_deref() == Some(format!("c{i}").as_str()) {
                        let me = format!("c{i}");
                        let took = tugboat_tests::eventually_within(
                            Duration::from_secs(60),
                            "another controller leads",
                            || async { leader(&client).await.filter(|l| *l != me).map(|_| ()) },
                        )
                        .await;
                        if took.is_ok() {
                            tally.failovers.push(killed.elapsed());
                        }
                    }
                }
                1 if down_member.is_none() => {
                    let i = rng.below(3) as usize;
                    etcd.members[i].kill();
                    down_member = Some((i, back));
                    tally.etcd_kills += 1;
                }
                2 => {
                    let running = cluster.containers(true)?;
                    if !running.is_empty() {
                        let c = &running[rng.below(running.len() as u64) as usize];
                        let _ = docker(&["kill", &c.id]);
                        tally.container_kills += 1;
                    }
                }
                3 if down_agent.is_none() => {
                    let i = rng.below(3) as usize;
                    cluster.kill_agent(i).await?;
                    down_agent = Some((i, back));
                    tally.agent_restarts += 1;
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Everything back, then one last acknowledged scale for any deployment
    // whose last scale was not acknowledged.
    if let Some((i, _)) = down_controller {
        let c = if i == 0 {
            &mut cluster.controller
        } else {
            &mut cluster.other_controllers[i - 1]
        };
        c.restart_process().await?;
    }
    if let Some((i, _)) = down_member {
        etcd.members[i].restart()?;
    }
    if let Some((i, _)) = down_agent {
        cluster.restart_agent(i)?;
    }
    for (d, replicas) in target.iter_mut() {
        if *replicas < 0 {
            let set = 2;
            tugboat_tests::eventually_within(CONVERGE, "a last scale is acknowledged", || async {
                client
                    .patch(
                        &DEPLOYMENTS,
                        Some(&ns),
                        d,
                        &json!({"spec": {"replicas": set}}),
                        PatchType::Merge,
                    )
                    .await
                    .ok()
            })
            .await?;
            *replicas = set;
        }
    }
    let chaos_done = Instant::now();

    // Convergence: each Deployment's pods are its replicas, all Running, and
    // the containers on Docker are those pods', one running each.
    let converged = tugboat_tests::eventually_within(CONVERGE, "the cluster converges", || async {
        let pods = client
            .list(&PODS, Some(&ns), &ListParams::default())
            .await
            .ok()?;
        let pods = pods["items"].as_array()?.clone();
        let mut by_app: HashMap<String, usize> = HashMap::new();
        for p in &pods {
            if p["status"]["phase"] != "Running" || !p["metadata"]["deletionTimestamp"].is_null() {
                return None;
            }
            *by_app
                .entry(p["metadata"]["labels"]["app"].as_str()?.to_string())
                .or_default() += 1;
        }
        for (d, replicas) in &target {
            if by_app.get(d).copied().unwrap_or(0) as i64 != *replicas {
                return None;
            }
        }
        let running = cluster.containers(true).ok()?;
        let mut per_pod: HashMap<&str, usize> = HashMap::new();
        for c in &running {
            *per_pod.entry(c.pod.as_str()).or_default() += 1;
        }
        (per_pod.len() == pods.len() && per_pod.values().all(|n| *n == 1)).then_some(pods)
    })
    .await;
    let converge_s = chaos_done.elapsed().as_secs_f64();

    // The checks, measured whether or not it converged.
    let pods: Vec<Value> = client
        .list(&PODS, Some(&ns), &ListParams::default())
        .await?["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let pod_names: std::collections::HashSet<String> = pods
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    let mut by_app: BTreeMap<String, i64> = BTreeMap::new();
    for p in &pods {
        *by_app
            .entry(
                p["metadata"]["labels"]["app"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
            .or_default() += 1;
    }
    let duplicate_pods: i64 = target
        .iter()
        .map(|(d, r)| (by_app.get(d).copied().unwrap_or(0) - r).max(0))
        .sum();
    let containers = cluster.all_containers(false)?;
    let orphaned = containers
        .iter()
        .filter(|c| !pod_names.contains(&c.pod))
        .count();
    let mut running_per_pod: HashMap<&str, usize> = HashMap::new();
    for c in containers.iter().filter(|c| c.running && !c.sandbox) {
        *running_per_pod.entry(c.pod.as_str()).or_default() += 1;
    }
    let doubled = running_per_pod.values().filter(|n| **n > 1).count();
    let cms = client
        .list(&CONFIGMAPS, Some(&ns), &ListParams::default())
        .await?;
    let present: std::collections::HashSet<&str> = cms["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["metadata"]["name"].as_str())
        .collect();
    let lost: Vec<&String> = tally
        .configmaps_acked
        .iter()
        .filter(|n| !present.contains(n.as_str()))
        .collect();
    let mut wrong_replicas = 0;
    for (d, r) in &target {
        let dep = client.get(&DEPLOYMENTS, Some(&ns), d).await?;
        if dep["spec"]["replicas"].as_i64() != Some(*r) {
            wrong_replicas += 1;
        }
    }

    println!("| figure | value |");
    println!("|---|---|");
    println!("| chaos | {seconds} s, seed {seed} |");
    println!(
        "| controllers killed (SIGKILL) and restarted | {} |",
        tally.controller_kills
    );
    println!(
        "| etcd members killed and restarted | {} |",
        tally.etcd_kills
    );
    println!("| containers killed | {} |", tally.container_kills);
    println!("| agents killed and restarted | {} |", tally.agent_restarts);
    println!(
        "| client writes acknowledged / failed | {} / {} |",
        tally.scales_acked + tally.configmaps_acked.len(),
        tally.scales_failed + tally.configmaps_failed
    );
    println!(
        "| converged after the chaos | {} |",
        match &converged {
            Ok(_) => format!("yes, in {converge_s:.1} s"),
            Err(_) => format!("NO, after {converge_s:.0} s"),
        }
    );
    println!(
        "| acknowledged writes lost | {} ConfigMaps, {} Deployments' replicas |",
        lost.len(),
        wrong_replicas
    );
    println!("| duplicate pods | {duplicate_pods} (pods with two running containers: {doubled}) |");
    println!("| orphaned containers | {orphaned} |");
    let mut failovers = tally.failovers.clone();
    failovers.sort();
    if !failovers.is_empty() {
        println!(
            "| leader fail-over (kill -9 → another holds the lease; lease 4 s, retry 1 s) | {} times: min {:.2} s, median {:.2} s, max {:.2} s |",
            failovers.len(),
            failovers[0].as_secs_f64(),
            failovers[failovers.len() / 2].as_secs_f64(),
            failovers[failovers.len() - 1].as_secs_f64()
        );
    }
    let ok = converged.is_ok()
        && lost.is_empty()
        && wrong_replicas == 0
        && duplicate_pods == 0
        && doubled == 0
        && orphaned == 0;
    drop(cluster);
    drop(etcd);
    if !ok {
        anyhow::bail!("the chaos run failed a check (see the table)");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}
