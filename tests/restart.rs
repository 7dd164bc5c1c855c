//! The controller as a real process, killed with SIGKILL at arbitrary moments:
//! every acknowledged write survives, and reconciling resumes without duplicates.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tugboat_api::resource::{DEPLOYMENTS, NAMESPACES, PODS, REPLICASETS};
use tugboat_api::{Client, ListParams};
use tugboat_tests::{deployment, eventually, spawn_controller};

#[tokio::test]
async fn sigkill_loses_no_acknowledged_write_and_reconciling_resumes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let config = dir.path().join("config.json");
    let (mut controller, client) = spawn_controller(&data, &config).await?;

    client
        .create(
            &NAMESPACES,
            None,
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "durable"}}),
        )
        .await?;
    client
        .create(
            &DEPLOYMENTS,
            Some("durable"),
            &deployment("web", "durable", 3),
        )
        .await?;

    // Writers run flat out; the controller is killed while they do.
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for w in 0..4 {
        let client: Client = client.clone();
        let acked = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..10_000 {
                let name = format!("w{w}-{i}");
                let body = deployment(&name, "durable", 0);
                match client.create(&DEPLOYMENTS, Some("durable"), &body).await {
                    Ok(_) => acked.lock().unwrap_or_else(|e| e.into_inner()).push(name),
                    Err(_) => break,
                }
            }
        }));
    }
    eventually("some writes are acknowledged", || async {
        (acknowledged.lock().unwrap_or_else(|e| e.into_inner()).len() >= 20).then_some(())
    })
    .await?;
    controller.kill9().await?;
    for w in writers {
        tokio::time::timeout(Duration::from_secs(20), w).await??;
    }
    let acked: Vec<String> = acknowledged
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();

    let (_controller, client) = spawn_controller(&data, &config).await?;
    let list = client
        .list(&DEPLOYMENTS, Some("durable"), &ListParams::default())
        .await?;
    let stored: std::collections::HashSet<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !stored.contains(*n)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes were lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(stored.contains("web"));

    // The original Deployment is reconciled to exactly 3 pods, one ReplicaSet.
    let params = ListParams {
        label_selector: Some("app=web".into()),
        ..Default::default()
    };
    eventually(
        "web has exactly 3 pods and one replica set after the restart",
        || async {
            let pods = client.list(&PODS, Some("durable"), &params).await.ok()?;
            let rs = client
                .list(&REPLICASETS, Some("durable"), &params)
                .await
                .ok()?;
            (pods["items"].as_array()?.len() == 3 && rs["items"].as_array()?.len() == 1)
                .then_some(())
        },
    )
    .await?;
    // Nothing more appears after a moment (no duplicate creation after restart).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pods = client.list(&PODS, Some("durable"), &params).await?;
    assert_eq!(pods["items"].as_array().map(Vec::len), Some(3));
    Ok(())
}

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
    const REPLICAS: usize = 2_000;
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
    let stored: std::collections::HashSet<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !stored.contains(*n)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes were lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
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
