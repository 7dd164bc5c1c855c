//! End to end on the real Docker engine: pods become containers on two nodes,
//! follow scaling, print logs, report image pull failures, and survive an agent
//! killed with SIGKILL. Each test has its own namespace and node names, and removes
//! its containers even when it fails.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use tugboat_api::resource::{DEPLOYMENTS, PODS};
use tugboat_tests::docker::{DockerCluster, sample_deployment};
use tugboat_tests::{eventually, eventually_within, tug};

fn running_and_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

async fn wait_running(c: &DockerCluster, app: &str, n: usize) -> anyhow::Result<Vec<Value>> {
    eventually(
        &format!("{n} pods of {app} Running and Ready with {n} containers running"),
        || async {
            let pods = c.pods(&format!("app={app}")).await.ok()?;
            let live: Vec<Value> = pods
                .into_iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .collect();
            let names: BTreeSet<&str> = live
                .iter()
                .filter_map(|p| p["metadata"]["name"].as_str())
                .collect();
            let containers = c.containers(true).ok()?;
            let running = containers
                .iter()
                .filter(|k| names.contains(k.pod.as_str()))
                .count();
            (live.len() == n && live.iter().all(running_and_ready) && running == n).then_some(live)
        },
    )
    .await
}

#[tokio::test]
async fn a_deployment_runs_as_containers_on_both_nodes_and_follows_scaling() -> anyhow::Result<()> {
    let c = DockerCluster::start("scale", 2).await?;
    c.apply(&sample_deployment("web", 3)).await?;
    let pods = wait_running(&c, "web", 3).await?;

    let containers = c.containers(true)?;
    let nodes: BTreeSet<&str> = containers.iter().map(|c| c.node.as_str()).collect();
    assert_eq!(nodes.len(), 2, "spread over both nodes: {containers:?}");
    let by_id: BTreeMap<String, &str> = containers
        .iter()
        .map(|c| (format!("docker://{}", c.id), c.pod.as_str()))
        .collect();
    for pod in &pods {
        let id = pod["status"]["containerStatuses"][0]["containerID"]
            .as_str()
            .unwrap_or("");
        let name = pod["metadata"]["name"].as_str().unwrap_or("");
        assert_eq!(
            by_id.get(id),
            Some(&name),
            "containerID {id} of {name} is that pod's container in docker"
        );
        assert_eq!(pod["status"]["containerStatuses"][0]["ready"], true);
        assert!(pod["status"]["podIP"].is_string(), "{name} has an IP");
        let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
        assert!(
            c.nodes.iter().any(|n| n == node),
            "{name} is bound to one of our nodes"
        );
        assert_eq!(
            containers
                .iter()
                .find(|k| k.pod == name)
                .map(|k| k.node.as_str()),
            Some(node),
            "the container runs on the pod's node"
        );
    }

    c.client
        .scale(&DEPLOYMENTS, Some(&c.namespace), "web", 5)
        .await?;
    wait_running(&c, "web", 5).await?;
    c.client
        .scale(&DEPLOYMENTS, Some(&c.namespace), "web", 1)
        .await?;
    eventually("1 container left", || async {
        (c.containers(false).ok()?.len() == 1 && c.pods("app=web").await.ok()?.len() == 1)
            .then_some(())
    })
    .await?;
    c.client
        .delete(&DEPLOYMENTS, Some(&c.namespace), "web")
        .await?;
    eventually("no container and no pod left", || async {
        (c.containers(false).ok()?.is_empty() && c.pods("app=web").await.ok()?.is_empty())
            .then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn tug_logs_prints_what_the_container_wrote() -> anyhow::Result<()> {
    let c = DockerCluster::start("logs", 1).await?;
    c.apply(&sample_deployment("web", 1)).await?;
    let pods = wait_running(&c, "web", 1).await?;
    let name = pods[0]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let ip = pods[0]["status"]["podIP"]
        .as_str()
        .unwrap_or("")
        .to_string();
    // Make the server write a request line into its log. Running is not
    // listening yet (the pod has no readiness probe): ask until it answers.
    let url = format!("http://{ip}:8080/");
    let body: Value = eventually("the pod's server answers", || async {
        let out = tokio::process::Command::new("curl")
            .args(["-s", "--max-time", "5", &url])
            .output()
            .await
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    })
    .await?;
    assert_eq!(
        body["hostname"],
        name.as_str(),
        "the pod's hostname is its name"
    );
    let logs = eventually("the logs show the request", || async {
        let text = tug(
            &c.controller.url,
            c.config_dir(),
            &["logs", &name, "-n", &c.namespace],
        )
        .await
        .ok()?;
        text.contains("GET / 200").then_some(text)
    })
    .await?;
    assert!(
        logs.contains("tug-sample listening on 0.0.0.0:8080"),
        "{logs}"
    );
    let tail = tug(
        &c.controller.url,
        c.config_dir(),
        &["logs", &name, "-n", &c.namespace, "--tail", "1"],
    )
    .await?;
    assert_eq!(tail.lines().count(), 1, "{tail}");
    let err = tug(
        &c.controller.url,
        c.config_dir(),
        &["logs", "nope", "-n", &c.namespace],
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_missing_image_shows_err_image_pull_then_back_off_and_cleans_up() -> anyhow::Result<()> {
    let c = DockerCluster::start("pull", 1).await?;
    let mut d = sample_deployment("ghost", 1);
    d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("tugboat/does-not-exist:v1");
    c.apply(&d).await?;
    let seen = std::sync::Mutex::new(BTreeSet::new());
    let message = eventually_within(
        std::time::Duration::from_secs(40),
        "ErrImagePull then ImagePullBackOff",
        || {
            let seen = &seen;
            let c = &c;
            async move {
                let pods = c.pods("app=ghost").await.ok()?;
                let waiting =
                    pods.first()?["status"]["containerStatuses"][0]["state"]["waiting"].clone();
                let both = {
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(reason) = waiting["reason"].as_str() {
                        seen.insert(reason.to_string());
                    }
                    seen.contains("ImagePullBackOff")
                };
                let events = tug(
                    &c.controller.url,
                    c.config_dir(),
                    &["get", "events", "-n", &c.namespace],
                )
                .await
                .ok()?;
                (both && events.contains("ErrImagePull"))
                    .then(|| waiting["message"].as_str().unwrap_or("").to_string())
            }
        },
    )
    .await?;
    assert!(
        message.contains("tugboat/does-not-exist"),
        "Docker's message names the image: {message}"
    );
    assert!(c.containers(false)?.is_empty(), "no container was created");
    let described = tug(
        &c.controller.url,
        c.config_dir(),
        &["get", "pods", "-n", &c.namespace],
    )
    .await?;
    assert!(
        described.contains("ErrImagePull") || described.contains("ImagePullBackOff"),
        "{described}"
    );
    c.client
        .delete(&DEPLOYMENTS, Some(&c.namespace), "ghost")
        .await?;
    eventually("the pod is gone", || async {
        c.pods("app=ghost").await.ok()?.is_empty().then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn an_agent_killed_and_restarted_adopts_its_containers_and_removes_stale_ones()
-> anyhow::Result<()> {
    // The agent is away on purpose: a long node grace keeps its pods from being
    // evicted meanwhile (eviction has tests of its own).
    let mut c = DockerCluster::start_tuned("adopt", 1, |cfg| {
        cfg.node_grace = std::time::Duration::from_secs(120)
    })
    .await?;
    c.apply(&sample_deployment("keep", 2)).await?;
    let mut bare = sample_deployment("gone", 1);
    bare["metadata"]["name"] = json!("gone");
    c.apply(&bare).await?;
    eventually("3 containers run", || async {
        (c.containers(true).ok()?.len() == 3).then_some(())
    })
    .await?;
    wait_running(&c, "keep", 2).await?;
    let before: BTreeMap<String, String> = c
        .containers(true)?
        .into_iter()
        .filter(|k| k.pod.starts_with("keep-"))
        .map(|k| (k.id, k.started_at))
        .collect();

    c.kill_agent(0).await?;
    // While the agent is down: its containers keep running, and a Deployment goes.
    assert_eq!(
        c.containers(true)?.len(),
        3,
        "fail-static: nothing stopped with the agent"
    );
    c.client
        .delete(&DEPLOYMENTS, Some(&c.namespace), "gone")
        .await?;
    // The bound pod waits for its agent; release it as the node lifecycle would.
    eventually(
        "the gone deployment's pod is marked for deletion",
        || async {
            let pods = c.pods("app=gone").await.ok()?;
            (pods.is_empty()
                || pods
                    .iter()
                    .all(|p| !p["metadata"]["deletionTimestamp"].is_null()))
            .then_some(())
        },
    )
    .await?;
    for p in c.pods("app=gone").await? {
        let name = p["metadata"]["name"].as_str().unwrap_or("");
        let _ = c
            .client
            .delete_with_grace(&PODS, Some(&c.namespace), name, Some(0))
            .await;
    }

    c.restart_agent(0)?;
    eventually("the stale container is removed", || async {
        let all = c.containers(false).ok()?;
        (!all.iter().any(|k| k.pod.starts_with("gone-"))).then_some(())
    })
    .await?;
    // Give the agent time to do anything wrong, then compare.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let after: BTreeMap<String, String> = c
        .containers(true)?
        .into_iter()
        .filter(|k| k.pod.starts_with("keep-"))
        .map(|k| (k.id, k.started_at))
        .collect();
    assert_eq!(before, after, "same containers, not restarted");
    let pods = wait_running(&c, "keep", 2).await?;
    for p in pods {
        assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
    }
    Ok(())
}

#[tokio::test]
async fn a_controller_killed_mid_scale_finishes_the_scale_without_touching_running_containers()
-> anyhow::Result<()> {
    let mut c = DockerCluster::start_with_controller_process("ctlkill", 2).await?;
    c.apply(&sample_deployment("web", 2)).await?;
    wait_running(&c, "web", 2).await?;
    let before: BTreeMap<String, String> = c
        .containers(true)?
        .into_iter()
        .map(|k| (k.id, k.started_at))
        .collect();
    c.client
        .scale(&DEPLOYMENTS, Some(&c.namespace), "web", 6)
        .await?;
    c.controller.kill9().await?;
    c.controller.restart_process().await?;
    wait_running(&c, "web", 6).await?;
    // Settled: exactly six containers, the first two untouched.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let after: BTreeMap<String, String> = c
        .containers(false)?
        .into_iter()
        .map(|k| (k.id, k.started_at))
        .collect();
    assert_eq!(after.len(), 6, "no duplicates: {after:?}");
    for (id, started) in &before {
        assert_eq!(
            after.get(id),
            Some(started),
            "container {id} kept running, not restarted"
        );
    }
    let d = c
        .client
        .get(&DEPLOYMENTS, Some(&c.namespace), "web")
        .await?;
    assert_eq!(
        d["spec"]["replicas"], 6,
        "the acknowledged scale survived the kill"
    );
    Ok(())
}

#[tokio::test]
async fn a_pod_whose_name_is_too_long_for_a_hostname_still_runs() -> anyhow::Result<()> {
    // Pod names of this Deployment are 67 characters; runc refuses hostnames over
    // 63, so the agent cuts them as the kubelet does.
    let name = "a-deployment-whose-name-is-long-enough-to-overflow";
    let c = DockerCluster::start("longname", 1).await?;
    c.apply(&sample_deployment(name, 1)).await?;
    let pods = wait_running(&c, name, 1).await?;
    let pod = pods[0]["metadata"]["name"].as_str().unwrap_or("");
    assert!(pod.len() > 63, "{pod}");
    let id = c.containers(true)?[0].id.clone();
    let hostname =
        tugboat_tests::docker::docker(&["inspect", "--format", "{{.Config.Hostname}}", &id])?;
    assert_eq!(hostname.trim(), pod[..63].trim_end_matches(['-', '.']));
    Ok(())
}
