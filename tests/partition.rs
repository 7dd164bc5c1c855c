//! Losing a node on the real Docker engine: an agent killed with SIGKILL, and an
//! agent cut off the network while its process keeps running. Either way the pods
//! are replaced on the other nodes, and when the node comes back its stale
//! containers go, leaving exactly the desired number.

use std::collections::BTreeSet;

use serde_json::Value;
use tugboat_api::ListParams;
use tugboat_api::resource::NODES;
use tugboat_tests::docker::{DockerCluster, sample_deployment};
use tugboat_tests::eventually_within;

const SETTLE: std::time::Duration = std::time::Duration::from_secs(60);

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Waits until `n` pods of `app` run Ready, none on `avoid`; returns their names.
async fn replaced(
    c: &DockerCluster,
    app: &str,
    n: usize,
    avoid: &str,
) -> anyhow::Result<BTreeSet<String>> {
    eventually_within(SETTLE, &format!("{n} pods Ready off {avoid}"), || async {
        let pods = c.pods(&format!("app={app}")).await.ok()?;
        let live: Vec<&Value> = pods
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        let ok = live.len() == n
            && live
                .iter()
                .all(|p| is_ready(p) && p["spec"]["nodeName"] != avoid);
        ok.then(|| {
            live.iter()
                .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
                .collect()
        })
    })
    .await
}

/// Waits until Docker runs exactly the containers of `pods`, and nothing else of this test.
async fn exactly(c: &DockerCluster, pods: &BTreeSet<String>) -> anyhow::Result<()> {
    eventually_within(SETTLE, "only the live pods' containers remain", || async {
        let running = c.containers(false).ok()?;
        let names: BTreeSet<String> = running.iter().map(|k| k.pod.clone()).collect();
        (running.len() == pods.len() && &names == pods && running.iter().all(|k| k.running))
            .then_some(())
    })
    .await
}

async fn node_ready(c: &DockerCluster, node: &str) -> Option<String> {
    let n = c.client.get(&NODES, None, node).await.ok()?;
    n["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

async fn on_node(c: &DockerCluster, app: &str, node: &str) -> usize {
    c.pods(&format!("app={app}"))
        .await
        .unwrap_or_default()
        .iter()
        .filter(|p| p["spec"]["nodeName"] == node)
        .count()
}

#[tokio::test]
async fn a_killed_agents_pods_are_replaced_and_its_stale_containers_removed_on_return()
-> anyhow::Result<()> {
    let mut c = DockerCluster::start("agentkill", 3).await?;
    c.apply(&sample_deployment("web", 6)).await?;
    replaced(&c, "web", 6, "").await?;
    let lost = c.nodes[0].clone();
    assert!(
        on_node(&c, "web", &lost).await > 0,
        "the spread put pods on every node"
    );

    c.kill_agent(0).await?;
    let pods = replaced(&c, "web", 6, &lost).await?;
    assert_eq!(
        node_ready(&c, &lost).await.as_deref(),
        Some("Unknown"),
        "the lost node is NotReady"
    );
    // Fail-static: the dead agent's containers still run until it comes back.
    assert!(
        c.containers(true)?.len() > 6,
        "stale containers keep running while the agent is away"
    );

    c.restart_agent(0)?;
    exactly(&c, &pods).await?;
    eventually_within(SETTLE, "the node is Ready again", || async {
        (node_ready(&c, &lost).await.as_deref() == Some("True")).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_partitioned_node_is_replaced_and_fenced_when_it_heals() -> anyhow::Result<()> {
    let c = DockerCluster::start_networked("partition", 3).await?;
    c.apply(&sample_deployment("web", 6)).await?;
    replaced(&c, "web", 6, "").await?;
    let cut = c.nodes[0].clone();
    assert!(
        on_node(&c, "web", &cut).await > 0,
        "the spread put pods on every node"
    );

    c.partition(0)?;
    let pods = replaced(&c, "web", 6, &cut).await?;
    assert_eq!(node_ready(&c, &cut).await.as_deref(), Some("Unknown"));
    assert!(
        c.containers(true)?.len() > 6,
        "the cut-off node's containers keep running (fail-static)"
    );

    c.heal(0)?;
    exactly(&c, &pods).await?;
    eventually_within(SETTLE, "the healed node is Ready again", || async {
        (node_ready(&c, &cut).await.as_deref() == Some("True")).then_some(())
    })
    .await?;
    // Settled: never more than the desired count.
    let list = c
        .client
        .list(
            &tugboat_api::resource::PODS,
            Some(&c.namespace),
            &ListParams::default(),
        )
        .await?;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(6));
    Ok(())
}
