//! The control plane at scale, on a real controller process with a thousand
//! hollow nodes (real agents on the in-memory engine, see
//! `tugboat_tests::hollow`). Its own test binary, so nothing else competes with
//! it for the machine's cores.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tugboat_api::resource::{DEPLOYMENTS, PODS};
use tugboat_api::{Client, ListParams};

/// Group commit under load: the controller is SIGKILLed while a thousand hollow
/// nodes heartbeat, pods are scheduled and report status, and clients write
/// flat out. Every acknowledged write is there after the restart, the nodes
/// stay, and the Deployment converges with no pod created twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_thousand_node_run_loses_no_acknowledged_write() -> anyhow::Result<()> {
    use tugboat_api::resource::{CONFIGMAPS, NODES};
    use tugboat_tests::hollow::{HollowConfig, HollowNodes, deployment as hollow_deployment};
    use tugboat_tests::{TestController, eventually_within};

    const NODES_N: usize = 1_000;
    const REPLICAS: usize = 1_000;
    let mut tc = TestController::start_process_with(&[
        "--max-connections-per-client",
        "8000",
        "--max-connections",
        "8000",
        "--node-grace",
        "120",
    ])
    .await?;
    let nodes = HollowNodes::start(&tc, "durable", NODES_N, HollowConfig::default()).await?;
    tugboat_tests::hollow::wait_ready(&tc.client, "durable", NODES_N, Duration::from_secs(600))
        .await?;
    tc.client
        .create(
            &DEPLOYMENTS,
            Some("default"),
            &hollow_deployment("fleet", REPLICAS as i64),
        )
        .await?;

    // Clients write flat out (each write acknowledged only once durable)
    // while the pods are being scheduled and started.
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for w in 0..16 {
        let client: Client = tc.client.clone();
        let acked = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..100_000 {
                let name = format!("w{w}-{i}");
                let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name}, "data": {"i": i.to_string()}});
                match client.create(&CONFIGMAPS, Some("default"), &body).await {
                    Ok(_) => acked.lock().unwrap_or_else(|e| e.into_inner()).push(name),
                    Err(_) => break,
                }
            }
        }));
    }
    let fleet = ListParams {
        label_selector: Some("app=fleet".into()),
        ..Default::default()
    };
    // Killed in the middle of the rollout: some pods exist, not all run yet.
    eventually_within(
        Duration::from_secs(300),
        "part of the fleet is running",
        || async {
            let pods = tc.client.list(&PODS, Some("default"), &fleet).await.ok()?;
            let running = pods["items"]
                .as_array()?
                .iter()
                .filter(|p| p["status"]["phase"] == "Running")
                .count();
            (running >= REPLICAS / 10).then_some(())
        },
    )
    .await?;
    tc.kill9().await?;
    for w in writers {
        tokio::time::timeout(Duration::from_secs(30), w).await??;
    }
    let acked: Vec<String> = acknowledged
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert!(acked.len() >= 16, "the writers wrote before the kill");

    tc.restart_process().await?;
    let list = tc
        .client
        .list(&CONFIGMAPS, Some("default"), &ListParams::default())
        .await?;
    tugboat_tests::assert_none_lost(&acked, &list);
    let node_list = tc.client.list(&NODES, None, &ListParams::default()).await?;
    assert_eq!(
        node_list["items"].as_array().map(Vec::len),
        Some(NODES_N),
        "every node is still registered"
    );

    // The fleet converges: every replica Running, each pod on one node's
    // engine, none created twice.
    eventually_within(
        Duration::from_secs(600),
        "the fleet to run all its replicas after the restart",
        || async {
            let pods = tc.client.list(&PODS, Some("default"), &fleet).await.ok()?;
            let items = pods["items"].as_array()?;
            let running = items
                .iter()
                .filter(|p| p["status"]["phase"] == "Running")
                .count();
            (items.len() == REPLICAS && running == REPLICAS).then_some(())
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pods = tc.client.list(&PODS, Some("default"), &fleet).await?;
    assert_eq!(
        pods["items"].as_array().map(Vec::len),
        Some(REPLICAS),
        "no pod created twice"
    );
    // Each pod runs once: the engines hold one app container per pod (and one
    // sandbox each).
    assert_eq!(
        nodes.containers(),
        2 * REPLICAS,
        "one sandbox and one app container per pod"
    );
    nodes.stop(Duration::from_secs(60)).await;
    Ok(())
}
