//! The service load balancer end to end, on an in-process controller with no
//! agent: nodes are written through the API with each node's own credential, a
//! Ready condition and an InternalIP, as an agent registers them, and their
//! Ready-ness changed through `/status`; a LoadBalancer Service's `status.loadBalancer.ingress` follows the
//! Ready nodes, other Services have none, and `tug get svc` prints it.

use std::time::Duration;

use serde_json::{Value, json};
use tugboat_api::resource::{NODES, SERVICES};
use tugboat_api::{Client, PatchType};
use tugboat_tests::{TestController, eventually, tug};

const NS: &str = "default";

/// A controller that never judges these agent-less nodes by their heartbeats.
async fn controller() -> anyhow::Result<TestController> {
    TestController::start_tuned(|c| c.node_grace = Duration::from_secs(3600)).await
}

/// A node's status as its agent posts it, with a heartbeat at second `beat`.
fn node_status(ready: bool, ip: &str, beat: u32) -> Value {
    json!({
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
            "lastHeartbeatTime": format!("2026-01-01T00:00:{:02}Z", beat % 60)}],
        "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": "h"}]
    })
}

async fn create_node(tc: &TestController, name: &str, ip: &str, ready: bool) -> anyhow::Result<()> {
    let c = &tc.node_client(name).await?;
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name},
        "status": node_status(ready, ip, 0)
    });
    c.create(&NODES, None, &node).await?;
    // Whether a create keeps the status or not, this sets it as an agent would.
    set_status(tc, name, ip, ready, 0).await
}

async fn set_status(
    tc: &TestController,
    name: &str,
    ip: &str,
    ready: bool,
    beat: u32,
) -> anyhow::Result<()> {
    let c = tc.node_client(name).await?;
    c.patch_status(
        &NODES,
        None,
        name,
        &json!({"status": node_status(ready, ip, beat)}),
        PatchType::Merge,
    )
    .await?;
    Ok(())
}

fn service(name: &str, kind: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"type": kind, "selector": {"app": name}, "ports": [{"port": 80}]}
    })
}

/// The Service's ingress IPs as stored, and its whole `status.loadBalancer`.
async fn ingress(c: &Client, name: &str) -> anyhow::Result<(Vec<String>, Value)> {
    let svc = c.get(&SERVICES, Some(NS), name).await?;
    let lb = svc
        .pointer("/status/loadBalancer")
        .cloned()
        .unwrap_or(json!({}));
    let ips = lb["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str().map(str::to_string))
        .collect();
    Ok((ips, lb))
}

async fn wait_ingress(c: &Client, name: &str, want: &[&str]) -> anyhow::Result<Value> {
    eventually(&format!("service {name} has ingress {want:?}"), || async {
        let (ips, lb) = ingress(c, name).await.ok()?;
        (ips == want).then_some(lb)
    })
    .await
}

#[tokio::test]
async fn a_load_balancer_service_is_reachable_at_its_ready_nodes() -> anyhow::Result<()> {
    let tc = controller().await?;
    let c = &tc.client;
    create_node(&tc, "n2", "192.0.2.20", true).await?;
    create_node(&tc, "n1", "192.0.2.3", true).await?;
    create_node(&tc, "n3", "192.0.2.30", false).await?;
    c.create(&SERVICES, Some(NS), &service("lb", "LoadBalancer"))
        .await?;
    c.create(&SERVICES, Some(NS), &service("web", "ClusterIP"))
        .await?;

    // Both Ready nodes, in address order, each entry just an IP.
    let lb = wait_ingress(c, "lb", &["192.0.2.3", "192.0.2.20"]).await?;
    assert_eq!(
        lb,
        json!({"ingress": [{"ip": "192.0.2.3"}, {"ip": "192.0.2.20"}]})
    );

    // A node going NotReady leaves the list; one becoming Ready joins it.
    set_status(&tc, "n2", "192.0.2.20", false, 1).await?;
    wait_ingress(c, "lb", &["192.0.2.3"]).await?;
    set_status(&tc, "n3", "192.0.2.30", true, 1).await?;
    wait_ingress(c, "lb", &["192.0.2.3", "192.0.2.30"]).await?;

    // A deleted node leaves it too; a heartbeat of a Ready node changes nothing.
    c.delete(&NODES, None, "n1").await?;
    wait_ingress(c, "lb", &["192.0.2.30"]).await?;
    let before = c.get(&SERVICES, Some(NS), "lb").await?;
    set_status(&tc, "n3", "192.0.2.30", true, 2).await?;

    // The ClusterIP Service never gets one (by now it has been reconciled: the
    // LoadBalancer created after it has).
    let (ips, _) = ingress(c, "web").await?;
    assert!(
        ips.is_empty(),
        "a ClusterIP Service has no ingress: {ips:?}"
    );

    // `tug get svc` shows the ingress as EXTERNAL-IP.
    let dir = tempfile::tempdir()?;
    let out = tug(&tc.url, dir.path(), &["get", "svc", "-o", "wide"]).await?;
    let row = |name: &str| -> Vec<String> {
        out.lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .find(|cells| cells.first().map(String::as_str) == Some(name))
            .unwrap_or_default()
    };
    assert_eq!(row("lb")[1], "LoadBalancer", "{out}");
    assert_eq!(row("lb")[3], "192.0.2.30", "{out}");
    assert_eq!(row("web")[3], "<none>", "{out}");

    let after = c.get(&SERVICES, Some(NS), "lb").await?;
    assert_eq!(
        before["metadata"]["resourceVersion"], after["metadata"]["resourceVersion"],
        "a heartbeat rewrites nothing"
    );

    // Changing the LoadBalancer to ClusterIP clears its ingress.
    c.patch(
        &SERVICES,
        Some(NS),
        "lb",
        &json!({"spec": {"type": "ClusterIP"}}),
        PatchType::Merge,
    )
    .await?;
    let lb = wait_ingress(c, "lb", &[]).await?;
    assert_eq!(lb, json!({}), "an empty status.loadBalancer");

    tc.stop().await
}
