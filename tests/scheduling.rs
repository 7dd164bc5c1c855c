//! Scheduling on the real Docker engine, with three agents reporting different
//! sizes: requests land only where they fit, a pod too big for every node stays
//! Pending with kubectl's words, `nodeSelector` pins, and host ports spread pods.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use tugboat_api::ListParams;
use tugboat_api::resource::EVENTS;
use tugboat_tests::docker::{DockerCluster, sample_deployment};
use tugboat_tests::eventually;

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn with_requests(mut d: Value, cpu: &str, memory: &str) -> Value {
    d["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": cpu, "memory": memory}});
    d
}

fn running(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
}

#[tokio::test]
async fn pods_land_where_they_fit_and_the_rest_wait_with_a_reason() -> anyhow::Result<()> {
    let c = DockerCluster::start_with_agent_args(
        "fit",
        vec![
            args(&[
                "--cpus",
                "1",
                "--memory",
                "1Gi",
                "--host-port-ip",
                "127.0.0.2",
            ]),
            args(&[
                "--cpus",
                "2",
                "--memory",
                "4Gi",
                "--host-port-ip",
                "127.0.0.3",
            ]),
            args(&[
                "--cpus",
                "2",
                "--memory",
                "4Gi",
                "--host-port-ip",
                "127.0.0.4",
            ]),
        ],
    )
    .await?;
    let small = c.nodes[0].clone();

    // 2 GiB each fits only the two big nodes.
    c.apply(&with_requests(sample_deployment("big", 2), "100m", "2Gi"))
        .await?;
    let pods = eventually("both big pods run", || async {
        let pods = c.pods("app=big").await.ok()?;
        (pods.len() == 2 && pods.iter().all(running)).then_some(pods)
    })
    .await?;
    assert!(
        pods.iter().all(|p| p["spec"]["nodeName"] != small.as_str()),
        "nothing landed on the small node: {pods:?}"
    );

    // Too big for every node: Pending, with the reason per node.
    c.apply(&with_requests(sample_deployment("huge", 1), "100m", "8Gi"))
        .await?;
    let condition = eventually("the huge pod is unschedulable", || async {
        let p = c.pods("app=huge").await.ok()?.into_iter().next()?;
        p["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
            .cloned()
    })
    .await?;
    assert_eq!(condition["reason"], "Unschedulable");
    assert_eq!(
        condition["message"],
        "0/3 nodes are available: 3 Insufficient memory."
    );
    // The event is written just after the condition: wait for it too.
    let params = ListParams {
        field_selector: Some("reason=FailedScheduling".into()),
        ..Default::default()
    };
    eventually("a FailedScheduling event", || async {
        let events = c
            .client
            .list(&EVENTS, Some(&c.namespace), &params)
            .await
            .ok()?;
        events["items"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
            .then_some(())
    })
    .await?;
    assert!(c.pods("app=huge").await?[0]["spec"]["nodeName"].is_null());

    // nodeSelector pins a pod to the small node.
    let mut pinned = sample_deployment("pinned", 1);
    pinned["spec"]["template"]["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": small});
    c.apply(&pinned).await?;
    eventually("the pinned pod runs on the small node", || async {
        let p = c.pods("app=pinned").await.ok()?.into_iter().next()?;
        (running(&p) && p["spec"]["nodeName"] == small.as_str()).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn host_ports_spread_pods_one_per_node() -> anyhow::Result<()> {
    let c = DockerCluster::start_with_agent_args(
        "ports",
        vec![
            args(&["--host-port-ip", "127.0.0.2"]),
            args(&["--host-port-ip", "127.0.0.3"]),
            args(&["--host-port-ip", "127.0.0.4"]),
        ],
    )
    .await?;
    let port = 20000 + (std::process::id() % 20000) as i64;
    let mut d = sample_deployment("hp", 4);
    d["spec"]["template"]["spec"]["containers"][0]["ports"] =
        json!([{"containerPort": 8080, "hostPort": port}]);
    c.apply(&d).await?;
    let pods = eventually(
        "three pods run, one per node, and the fourth waits",
        || async {
            let pods = c.pods("app=hp").await.ok()?;
            let bound: Vec<&Value> = pods.iter().filter(|p| running(p)).collect();
            let pending = pods.iter().find(|p| p["spec"]["nodeName"].is_null())?;
            let message = pending["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "PodScheduled")?["message"]
                .as_str()?
                .to_string();
            (bound.len() == 3
                && message.contains("didn't have free ports for the requested pod ports"))
            .then_some(pods)
        },
    )
    .await?;
    let nodes: BTreeSet<&str> = pods
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    assert_eq!(nodes.len(), 3, "one per node");
    // Each node publishes the port on its own address.
    // Running is not listening yet (no readiness probe): ask until it answers.
    for ip in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        let url = format!("http://{ip}:{port}/healthz");
        eventually(&format!("the hostPort answers on {ip}"), || async {
            let out = tokio::process::Command::new("curl")
                .args(["-s", "--max-time", "3", &url])
                .output()
                .await
                .ok()?;
            (String::from_utf8_lossy(&out.stdout) == "ok").then_some(())
        })
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn drain_moves_pods_off_a_node_and_uncordon_lets_them_back() -> anyhow::Result<()> {
    let c = DockerCluster::start("drain", 2).await?;
    let url = c.controller.url.clone();
    let (a, b) = (c.nodes[0].clone(), c.nodes[1].clone());
    c.apply(&sample_deployment("web", 4)).await?;
    eventually("4 pods run on both nodes", || async {
        let pods = c.pods("app=web").await.ok()?;
        let nodes: BTreeSet<&str> = pods
            .iter()
            .filter_map(|p| p["spec"]["nodeName"].as_str())
            .collect();
        (pods.len() == 4 && pods.iter().all(running) && nodes.len() == 2).then_some(())
    })
    .await?;
    let out = tugboat_tests::tug(&url, c.config_dir(), &["drain", &a, "--timeout", "60s"]).await?;
    assert!(
        out.contains(&format!("node/{a} cordoned")) && out.contains(&format!("node/{a} drained")),
        "{out}"
    );
    eventually(
        "all 4 pods run on the other node, and no container is left on the drained one",
        || async {
            let pods = c.pods("app=web").await.ok()?;
            let live: Vec<&Value> = pods
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .collect();
            let on_a = c
                .containers(false)
                .ok()?
                .iter()
                .filter(|k| k.node == a)
                .count();
            (live.len() == 4
                && live
                    .iter()
                    .all(|p| running(p) && p["spec"]["nodeName"] == b.as_str())
                && on_a == 0)
                .then_some(())
        },
    )
    .await?;
    let nodes = tugboat_tests::tug(&url, c.config_dir(), &["get", "nodes"]).await?;
    assert!(
        nodes
            .lines()
            .any(|l| l.starts_with(&a) && l.contains("Ready,SchedulingDisabled")),
        "{nodes}"
    );
    tugboat_tests::tug(&url, c.config_dir(), &["uncordon", &a]).await?;
    c.client
        .scale(
            &tugboat_api::resource::DEPLOYMENTS,
            Some(&c.namespace),
            "web",
            6,
        )
        .await?;
    eventually("new pods land on the uncordoned node again", || async {
        let pods = c.pods("app=web").await.ok()?;
        (pods.iter().filter(|p| running(p)).count() == 6
            && pods.iter().any(|p| p["spec"]["nodeName"] == a.as_str()))
        .then_some(())
    })
    .await?;
    Ok(())
}
