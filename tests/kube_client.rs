//! A stock Kubernetes client (kube-rs's `kube::Api`) drives a Deployment through
//! its life against `tug controller`: create, get, list, watch, scale, delete; a
//! reflector's store follows creates, updates and deletes; and, on the real
//! Docker engine, exec and port-forward into pods (kube's `ws` feature).

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, AttachParams, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tugboat_tests::docker::{BUSYBOX_IMAGE, DockerCluster, busybox_image};
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

#[tokio::test]
async fn a_kube_rs_reflector_stays_in_sync_through_creates_updates_and_deletes()
-> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let client = client(&tc).await?;
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    let labelled = |name: &str, set: &str| -> anyhow::Result<Deployment> {
        let mut d: Deployment = serde_json::from_value(deployment(name, "default", 0))?;
        d.metadata.labels = Some([("set".to_string(), set.to_string())].into());
        Ok(d)
    };
    deployments
        .create(&PostParams::default(), &labelled("alpha", "reflected")?)
        .await?;

    let (store, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(
            deployments.clone(),
            watcher::Config::default().labels("set=reflected"),
        ),
    )
    .default_backoff()
    .applied_objects();
    let driver = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while stream.next().await.is_some() {}
    });
    within("the store's first list", store.wait_until_ready()).await??;

    // The store holds what the server lists: the same names at the same versions.
    let in_sync = |want: &'static [&'static str]| {
        let (store, deployments) = (store.clone(), deployments.clone());
        async move {
            let mut cached: Vec<(String, String)> = store
                .state()
                .iter()
                .map(|d| {
                    (
                        d.metadata.name.clone().unwrap_or_default(),
                        d.metadata.resource_version.clone().unwrap_or_default(),
                    )
                })
                .collect();
            cached.sort();
            let listed = deployments
                .list(&ListParams::default().labels("set=reflected"))
                .await
                .ok()?;
            let mut live: Vec<(String, String)> = listed
                .items
                .iter()
                .map(|d| {
                    (
                        d.metadata.name.clone().unwrap_or_default(),
                        d.metadata.resource_version.clone().unwrap_or_default(),
                    )
                })
                .collect();
            live.sort();
            let names: Vec<&str> = live.iter().map(|(n, _)| n.as_str()).collect();
            (cached == live && names == want).then_some(())
        }
    };
    eventually("the store holds alpha", || in_sync(&["alpha"])).await?;
    for name in ["beta", "gamma"] {
        deployments
            .create(&PostParams::default(), &labelled(name, "reflected")?)
            .await?;
    }
    eventually("the store holds the three", || {
        in_sync(&["alpha", "beta", "gamma"])
    })
    .await?;

    deployments
        .patch(
            "beta",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"step": "2"}}})),
        )
        .await?;
    eventually("the store sees beta's update", || async {
        let beta = store.get(&reflector::ObjectRef::new("beta").within("default"))?;
        let step = beta.metadata.annotations.as_ref()?.get("step")?;
        (step == "2").then_some(())
    })
    .await?;

    // A delete, and an object leaving the selector.
    deployments
        .delete("alpha", &DeleteParams::default())
        .await?;
    deployments
        .patch(
            "gamma",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"set": "other"}}})),
        )
        .await?;
    eventually("the store drops alpha and gamma", || in_sync(&["beta"])).await?;
    deployments
        .create(&PostParams::default(), &labelled("delta", "reflected")?)
        .await?;
    eventually("the store holds beta and delta", || {
        in_sync(&["beta", "delta"])
    })
    .await?;
    driver.abort();
    tc.stop().await
}

#[tokio::test]
async fn kube_rs_execs_in_a_pod_and_port_forwards_to_one() -> anyhow::Result<()> {
    busybox_image().await?;
    let c = DockerCluster::start("kube-rs-stream", 1).await?;
    let client = client(&c.controller).await?;
    let pods: Api<Pod> = Api::namespaced(client, &c.namespace);
    let pod = |name: &str, image: &str| -> anyhow::Result<Pod> {
        Ok(serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": name, "image": image, "imagePullPolicy": "IfNotPresent",
                    "ports": [{"containerPort": 8080}]
                }]
            }
        }))?)
    };
    pods.create(&PostParams::default(), &pod("bb", BUSYBOX_IMAGE)?)
        .await?;
    pods.create(
        &PostParams::default(),
        &pod("web", "tugboat/sample:latest")?,
    )
    .await?;
    for name in ["bb", "web"] {
        within(
            &format!("pod {name} runs"),
            kube::runtime::wait::await_condition(
                pods.clone(),
                name,
                kube::runtime::conditions::is_pod_running(),
            ),
        )
        .await??;
    }

    // exec: stdout and stderr apart, and the exit code in the final status.
    let mut run = pods
        .exec(
            "bb",
            ["sh", "-c", "echo out; echo err >&2; exit 3"],
            &AttachParams::default(),
        )
        .await?;
    let (mut stdout, mut stderr) = (run.stdout().unwrap(), run.stderr().unwrap());
    let status = run.take_status().unwrap();
    let (out, err, status) = within("the exec's output and status", async {
        let (mut out, mut err) = (String::new(), String::new());
        let (a, b, status) = tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err),
            status
        );
        a?;
        b?;
        anyhow::Ok((out, err, status))
    })
    .await??;
    within("the exec to end", run.join()).await??;
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
    let status = status.ok_or_else(|| anyhow::anyhow!("no status"))?;
    assert_eq!(status.status.as_deref(), Some("Failure"), "{status:?}");
    assert_eq!(
        status.reason.as_deref(),
        Some("NonZeroExitCode"),
        "{status:?}"
    );
    let causes = status
        .details
        .as_ref()
        .and_then(|d| d.causes.clone())
        .unwrap_or_default();
    assert!(
        causes
            .iter()
            .any(|c| c.reason.as_deref() == Some("ExitCode") && c.message.as_deref() == Some("3")),
        "{status:?}"
    );

    // stdin: head ends after the first line; a success has status Success.
    let mut run = pods
        .exec(
            "bb",
            ["head", "-n", "1"],
            &AttachParams::default().stdin(true).stderr(false),
        )
        .await?;
    let mut stdin = run.stdin().unwrap();
    let mut stdout = run.stdout().unwrap();
    let status = run.take_status().unwrap();
    stdin.write_all(b"first line\nsecond line\n").await?;
    stdin.flush().await?;
    let mut out = String::new();
    within("head's output", stdout.read_to_string(&mut out)).await??;
    assert_eq!(out, "first line\n");
    let status = within("head's status", status).await?;
    assert_eq!(status.and_then(|s| s.status).as_deref(), Some("Success"));
    drop(stdin);
    within("the exec to end", run.join()).await??;

    // port-forward: an HTTP request through the stream.
    let mut forwarder = pods.portforward("web", &[8080]).await?;
    let mut stream = forwarder.take_stream(8080).unwrap();
    stream
        .write_all(b"GET /ready HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        .await?;
    let mut raw = String::new();
    within(
        "the answer through the forward",
        stream.read_to_string(&mut raw),
    )
    .await??;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.ends_with("\r\n\r\nready"), "{raw}");
    drop(stream);
    forwarder.abort();
    Ok(())
}
