//! Manifests from the Kubernetes documentation, applied unchanged
//! (`tests/fixtures/kubernetes-docs/`), run on real Docker with stand-in
//! images: a Deployment reading a ConfigMap volume, one whose two containers
//! share an emptyDir (the page they serve follows a ConfigMap edit), the Job
//! computing π, and the fluentd DaemonSet, whose still unsupported fields
//! are named in warnings.

use std::time::Duration;

use serde_json::{Value, json};
use tugboat_api::resource::{CONFIGMAPS, DAEMONSETS, JOBS, PODS};
use tugboat_api::{ListParams, PatchType, manifest};
use tugboat_tests::docker::DockerCluster;
use tugboat_tests::standin::{self, ALPINE, FLUENTD, NGINX, PERL};
use tugboat_tests::{eventually_within, tug};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/kubernetes-docs");

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

fn running(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["containerStatuses"]
            .as_array()
            .is_some_and(|s| !s.is_empty() && s.iter().all(|c| c["ready"] == true))
}

async fn running_pods(c: &DockerCluster, selector: &str, n: usize) -> anyhow::Result<Vec<Value>> {
    eventually_within(
        Duration::from_secs(90),
        &format!("{n} pods of {selector} running"),
        || async {
            let pods = c.pods(selector).await.ok()?;
            let live: Vec<Value> = pods
                .into_iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .collect();
            (live.len() == n && live.iter().all(running)).then_some(live)
        },
    )
    .await
}

async fn config_map(c: &DockerCluster, name: &str, key: &str, value: &str) -> anyhow::Result<()> {
    c.apply(&json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name}, "data": {key: value}}))
        .await?;
    Ok(())
}

/// GET / of the pod at `ip` port 80.
async fn page(ip: &str) -> Option<String> {
    let addr = format!("{ip}:80").parse().ok()?;
    let (status, body) = tugboat_tests::docker::http_get(addr, "/").await.ok()?;
    (status == 200).then_some(body)
}

#[tokio::test]
async fn manifests_from_the_kubernetes_docs_apply_unchanged_and_run() -> anyhow::Result<()> {
    for s in [&PERL, &ALPINE, &NGINX, &FLUENTD] {
        standin::ensure(s).await?;
    }
    let c = DockerCluster::start("docs", 2).await?;
    let (url, dir, ns) = (&c.controller.url, c.config_dir(), c.namespace.as_str());

    // "Updating Configuration via a ConfigMap": the sport, read from a volume.
    config_map(&c, "sport", "sport", "football").await?;
    let volume = fixture("deployment-with-configmap-as-volume.yaml");
    tug(url, dir, &["apply", "-f", &volume, "-n", ns]).await?;
    let pods = running_pods(&c, "app.kubernetes.io/name=configmap-volume", 3).await?;
    let pod = pods[0]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    eventually_within(
        Duration::from_secs(30),
        "the pod to log its preferred sport",
        || async {
            let logs = tug(url, dir, &["logs", &pod, "-n", ns]).await.ok()?;
            logs.contains("My preferred sport is football")
                .then_some(())
        },
    )
    .await?;

    // Two containers sharing an emptyDir: one writes the page, one serves it;
    // the page follows an edit of the ConfigMap, mounted as a volume.
    config_map(&c, "color", "color", "red").await?;
    let two = fixture("deployment-with-configmap-two-containers.yaml");
    tug(url, dir, &["apply", "-f", &two, "-n", ns]).await?;
    let pods = running_pods(&c, "app.kubernetes.io/name=configmap-two-containers", 3).await?;
    let ip = pods[0]["status"]["podIP"]
        .as_str()
        .unwrap_or("")
        .to_string();
    eventually_within(Duration::from_secs(30), "the page to say red", || async {
        page(&ip)
            .await?
            .contains("My preferred color is red")
            .then_some(())
    })
    .await?;
    c.client
        .patch(
            &CONFIGMAPS,
            Some(ns),
            "color",
            &json!({"data": {"color": "blue"}}),
            PatchType::Merge,
        )
        .await?;
    // The kubelet's sync and the writer's 10 s loop: well within a minute.
    eventually_within(Duration::from_secs(60), "the page to say blue", || async {
        page(&ip)
            .await?
            .contains("My preferred color is blue")
            .then_some(())
    })
    .await?;

    // The Job computing π.
    tug(url, dir, &["apply", "-f", &fixture("job.yaml"), "-n", ns]).await?;
    eventually_within(
        Duration::from_secs(90),
        "the Job pi to complete",
        || async {
            let job = c.client.get(&JOBS, Some(ns), "pi").await.ok()?;
            job["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Complete" && c["status"] == "True")
                .then_some(())
        },
    )
    .await?;
    let logs = tug(url, dir, &["logs", "job/pi", "-n", ns]).await?;
    assert!(
        logs.trim()
            .starts_with("3.14159265358979323846264338327950288419716939937510"),
        "{logs}"
    );
    assert_eq!(logs.trim().len(), 1001, "1000 digits and the point: {logs}");

    // The fluentd DaemonSet, in kube-system as written: one pod per node, and
    // what Tugboat does not act on yet named in warnings.
    let text = std::fs::read_to_string(fixture("daemonset.yaml"))?;
    let ds = manifest::parse_documents(&text)?.remove(0);
    c.client.take_warnings();
    c.client
        .create(&DAEMONSETS, Some("kube-system"), &ds)
        .await?;
    let warnings = c.client.take_warnings();
    assert!(
        warnings.iter().any(|w| w.contains("tolerations")),
        "{warnings:?}"
    );
    let result = eventually_within(
        Duration::from_secs(90),
        "a fluentd pod running on each of the test's nodes",
        || async {
            let params = ListParams {
                label_selector: Some("name=fluentd-elasticsearch".into()),
                ..Default::default()
            };
            let list = c
                .client
                .list(&PODS, Some("kube-system"), &params)
                .await
                .ok()?;
            let mut nodes: Vec<String> = list["items"]
                .as_array()?
                .iter()
                .filter(|p| running(p))
                .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
                .filter(|n| c.nodes.contains(n))
                .collect();
            nodes.sort();
            (nodes == c.nodes).then_some(())
        },
    )
    .await;
    // kube-system is shared with other tests' nodes: remove the DaemonSet
    // (and so its pods) whatever happened.
    let _ = c
        .client
        .delete(&DAEMONSETS, Some("kube-system"), "fluentd-elasticsearch")
        .await;
    result
}
