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
    let stored = tugboat_tests::names_in(&list);
    tugboat_tests::assert_none_lost(&acked, &list);
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
