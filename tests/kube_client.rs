//! A stock Kubernetes client (kube-rs's `kube::Api`) drives a Deployment through
//! its life against `tug controller`: create, get, list, watch, scale, delete.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use tugboat_tests::{TestController, deployment, eventually, within};

/// kube-rs with the admin kubeconfig the controller wrote, as any program
/// given a kubeconfig would use it.
async fn client(tc: &TestController) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(tc.kubeconfig())?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

#[tokio::test]
async fn kube_rs_creates_gets_lists_watches_scales_and_deletes_a_deployment() -> anyhow::Result<()>
{
    let tc = TestController::start().await?;
    let client = client(&tc).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    let manifest: Deployment = serde_json::from_value(deployment("web", "default", 2))?;
    let created = deployments
        .create(&PostParams::default(), &manifest)
        .await?;
    assert_eq!(created.metadata.generation, Some(1));
    let rv = created
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();

    let got = deployments.get("web").await?;
    assert_eq!(got.spec.as_ref().and_then(|s| s.replicas), Some(2));
    let listed = deployments.list(&ListParams::default()).await?;
    assert_eq!(listed.items.len(), 1);
    assert!(listed.metadata.resource_version.is_some());

    // A raw watch from the creation's revision sees the controller's status write.
    let mut events = deployments
        .watch(&WatchParams::default().timeout(10), &rv)
        .await?
        .boxed();
    let modified = within("a MODIFIED event", async {
        while let Some(ev) = events.try_next().await? {
            if let WatchEvent::Modified(d) = ev {
                return Ok::<_, kube::Error>(Some(d));
            }
        }
        Ok(None)
    })
    .await??;
    assert!(
        modified.is_some(),
        "the watch ended without a MODIFIED event"
    );

    // kube-runtime's watcher (list, then watch from the list's revision) sees the pods.
    let mut stream = watcher(pods.clone(), watcher::Config::default().labels("app=web")).boxed();
    let seen = within("the watcher's initial pods", async {
        let mut names = std::collections::BTreeSet::new();
        while let Some(ev) = stream.try_next().await? {
            if let watcher::Event::InitApply(p) | watcher::Event::Apply(p) = ev {
                names.insert(p.metadata.name.unwrap_or_default());
                if names.len() == 2 {
                    break;
                }
            }
        }
        Ok::<_, watcher::Error>(names)
    })
    .await;
    // Pods may not exist yet when the watcher lists; then they arrive as Apply.
    assert_eq!(seen??.len(), 2);

    let scale = deployments
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 4}})),
        )
        .await?;
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(4));
    eventually("4 pods exist", || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        (list.items.len() == 4).then_some(())
    })
    .await?;
    assert_eq!(
        deployments
            .get_scale("web")
            .await?
            .spec
            .and_then(|s| s.replicas),
        Some(4)
    );

    deployments.delete("web", &DeleteParams::default()).await?;
    let replicasets: Api<ReplicaSet> = Api::namespaced(client, "default");
    eventually(
        "the deployment, its replica set and pods are gone",
        || async {
            let d = deployments.get_opt("web").await.ok()?;
            let rs = replicasets.list(&ListParams::default()).await.ok()?;
            let p = pods.list(&ListParams::default()).await.ok()?;
            (d.is_none() && rs.items.is_empty() && p.items.is_empty()).then_some(())
        },
    )
    .await?;
    tc.stop().await
}

#[tokio::test]
async fn kube_rs_sees_kubernetes_errors() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let deployments: Api<Deployment> = Api::namespaced(client(&tc).await?, "default");
    let mut bad: Deployment = serde_json::from_value(deployment("web", "default", 1))?;
    if let Some(spec) = bad.spec.as_mut() {
        spec.replicas = Some(-1);
    }
    match deployments.create(&PostParams::default(), &bad).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422);
            assert_eq!(status.reason, "Invalid");
            assert!(
                status.message.contains("spec.replicas"),
                "{}",
                status.message
            );
        }
        other => panic!("expected a 422, got {other:?}"),
    }
    match deployments.get("missing").await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 404),
        other => panic!("expected a 404, got {other:?}"),
    }
    tc.stop().await
}
