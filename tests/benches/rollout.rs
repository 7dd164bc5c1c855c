//! Benchmark (not a test): a rolling update under load. A Deployment of 4
//! replicas of the sample behind a NodePort Service on two nodes (sharing this
//! host, each agent on its own loopback address) is updated to a new
//! environment value while a client opens 50 new connections a second through
//! the node ports; each round reports how long the rollout took (until every
//! pod is new and the old containers are gone) and how many requests failed.
//!
//! Docker Swarm on the same daemon gets the same update
//! (`docker service update --update-parallelism 1 --update-delay 0s`) under the
//! same load through its published port, when its routing mesh can be set up
//! (it needs IPVS; the run says so when it cannot).
//!
//! `cargo bench -p tugboat-tests --bench rollout` (`ROLLOUT_ROUNDS`, default 3).
//! A daemon outside any swarm is made a single-node swarm for the run and
//! leaves it at the end; everything the run created is removed. Traffic goes
//! only to loopback.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tugboat_api::PatchType;
use tugboat_api::resource::DEPLOYMENTS;
use tugboat_tests::bench::{
    Swarm, git_describe, loadavg, rounds_from_env, swarm_mesh_service, utc_now,
};
use tugboat_tests::docker::{DockerCluster, docker, sample_deployment};
use tugboat_tests::eventually_within;
use tugboat_tests::load::Load;

const IMAGE: &str = "tugboat/sample:latest";
const RATE: u64 = 50;
const LIMIT: Duration = Duration::from_secs(120);

fn row(system: &str, round: usize, took: Duration, answered: usize, failed: usize) {
    println!(
        "| {system:<20} | {round:>5} | {:>9.1} | {answered:>8} | {failed:>6} |",
        took.as_secs_f64()
    );
}

/// One Tugboat round: the update to `version` under load; (took, answered, failed).
async fn tugboat_round(
    c: &DockerCluster,
    addrs: &[SocketAddr],
    version: usize,
) -> anyhow::Result<(Duration, usize, usize)> {
    let ns = c.namespace.clone();
    let load = Load::start(addrs.to_vec(), RATE);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    c.client
        .patch(
            &DEPLOYMENTS,
            Some(&ns),
            "web",
            &json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "env": [{"name": "VERSION", "value": version.to_string()}]}]}}}}),
            PatchType::Strategic,
        )
        .await?;
    eventually_within(LIMIT, "the rollout completes", || async {
        let d = c.client.get(&DEPLOYMENTS, Some(&ns), "web").await.ok()?;
        let s = &d["status"];
        let done = d["metadata"]["generation"] == s["observedGeneration"]
            && s["updatedReplicas"] == 4
            && s["replicas"] == 4
            && s["availableReplicas"] == 4;
        let pods = c.pods("app=web").await.ok()?;
        let names: Vec<&str> = pods
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str())
            .collect();
        let containers = c.containers(false).ok()?;
        let only_new = containers.iter().all(|k| names.contains(&k.pod.as_str()));
        (done && pods.len() == 4 && only_new).then_some(())
    })
    .await?;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (answered, failures) = load.finish().await?;
    Ok((took, answered, failures.len()))
}

/// One Swarm round through the mesh.
async fn swarm_round(
    service: &str,
    mesh: SocketAddr,
    version: usize,
) -> anyhow::Result<(Duration, usize, usize)> {
    let load = Load::start(vec![mesh], RATE);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    docker(&[
        "service",
        "update",
        "--detach",
        "--quiet",
        "--env-add",
        &format!("VERSION={version}"),
        "--update-parallelism",
        "1",
        "--update-delay",
        "0s",
        service,
    ])?;
    eventually_within(LIMIT, "the swarm update completes", || async {
        let state = docker(&[
            "service",
            "inspect",
            "-f",
            "{{.UpdateStatus.State}}",
            service,
        ])
        .ok()?;
        (state == "completed").then_some(())
    })
    .await?;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (answered, failures) = load.finish().await?;
    Ok((took, answered, failures.len()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tugboat_tests::init_tracing();
    let rounds = rounds_from_env("ROLLOUT_ROUNDS", 3)?;
    let (c, ips) = DockerCluster::start_loopback_nodes("bench-rollout", 40, &[]).await?;
    let mut d = sample_deployment("web", 4);
    let cont = &mut d["spec"]["template"]["spec"]["containers"][0];
    cont["ports"] = json!([{"name": "http", "containerPort": 8080}]);
    cont["env"] = json!([{"name": "VERSION", "value": "0"}]);
    cont["readinessProbe"] = json!({"httpGet": {"path": "/ready", "port": 8080},
        "periodSeconds": 1, "failureThreshold": 1});
    c.apply(&d).await?;
    let svc = c
        .apply(
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "selector": {"app": "web"},
                "ports": [{"port": 80, "targetPort": "http"}]}}),
        )
        .await?;
    let port = u16::try_from(svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap_or(0))?;
    let addrs: Vec<SocketAddr> = ips
        .iter()
        .map(|ip| format!("{ip}:{port}").parse())
        .collect::<Result<_, _>>()?;
    eventually_within(LIMIT, "4 replicas answer on both nodes", || async {
        let d = c
            .client
            .get(&DEPLOYMENTS, Some(&c.namespace), "web")
            .await
            .ok()?;
        if d["status"]["availableReplicas"] != 4 {
            return None;
        }
        for a in &addrs {
            tugboat_tests::load::get(*a).await.ok()?;
        }
        Some(())
    })
    .await?;

    let swarm = match Swarm::join() {
        Ok(s) => Some(s),
        Err(e) => {
            println!("# no Swarm: {e}");
            None
        }
    };
    let mesh = match &swarm {
        Some(_) => match swarm_mesh_service(
            "tugbench-roll",
            IMAGE,
            4,
            31999,
            "io.tugboat.bench=rollout",
            Duration::from_secs(60),
        )
        .await
        {
            Ok((service, mesh, _task)) => Some((service, mesh)),
            Err(e) => {
                println!("# swarm routing mesh not available here: {e}");
                None
            }
        },
        None => None,
    };

    println!(
        "rollout bench, {}, commit {}, load {}, 4 replicas, {RATE} new connections/s",
        utc_now(),
        git_describe(),
        loadavg()
    );
    println!("| system               | round | rollout s | requests | failed |");
    println!("|----------------------|------:|----------:|---------:|-------:|");
    for round in 1..=rounds {
        let (took, answered, failed) = tugboat_round(&c, &addrs, round).await?;
        row("tugboat node port", round, took, answered, failed);
        if let Some((service, mesh)) = &mesh {
            let (took, answered, failed) = swarm_round(&service.name, *mesh, round).await?;
            row("swarm mesh", round, took, answered, failed);
        }
    }
    println!("# load after {}", loadavg());
    drop(mesh);
    drop(swarm);
    drop(c);
    Ok(())
}
