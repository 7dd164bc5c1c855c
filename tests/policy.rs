//! Namespace policy and the older workload kinds over the API, against an
//! in-process controller with no agents (pods stay Pending, which is all these
//! need): a new namespace gets its `default` ServiceAccount (again when it is
//! deleted), pods run as an account that must exist, LimitRange defaults land
//! on pods, a ResourceQuota refuses the pod that would exceed it with 403
//! naming it and reports its usage, and a ReplicationController from an old
//! manifest gets its pods and scales with `tug scale`.

use serde_json::{Value, json};
use tugboat_api::resource::{
    LIMITRANGES, NAMESPACES, PODS, REPLICATIONCONTROLLERS, RESOURCEQUOTAS, SERVICEACCOUNTS,
};
use tugboat_api::{Client, ListParams, meta};
use tugboat_tests::{TestController, eventually, tug};

async fn namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    client
        .create(
            &NAMESPACES,
            None,
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        )
        .await?;
    Ok(())
}

fn pod(name: &str, resources: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "tugboat/sample:latest",
            "resources": resources}]}
    })
}

#[tokio::test]
async fn every_namespace_has_a_default_service_account_that_pods_run_as() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    namespace(c, "team-a").await?;
    c.get(&SERVICEACCOUNTS, Some("team-a"), "default").await?;
    let p = c
        .create(&PODS, Some("team-a"), &pod("p", json!({})))
        .await?;
    assert_eq!(p["spec"]["serviceAccountName"], "default", "{p}");
    assert_eq!(p["spec"]["serviceAccount"], "default", "{p}");

    let err = c
        .create(
            &PODS,
            Some("team-a"),
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q"},
                "spec": {"serviceAccountName": "robot",
                    "containers": [{"name": "c", "image": "x"}]}}),
        )
        .await
        .expect_err("a missing account is refused");
    let err = err.api().expect("a Status").clone();
    assert_eq!(err.code, 403, "{err:?}");
    assert_eq!(
        err.message,
        "pods \"q\" is forbidden: error looking up service account team-a/robot: serviceaccount \"robot\" not found"
    );

    // Deleted, it comes back (the serviceaccounts controller).
    c.delete(&SERVICEACCOUNTS, Some("team-a"), "default")
        .await?;
    eventually("the default service account to be made again", || async {
        c.get(&SERVICEACCOUNTS, Some("team-a"), "default")
            .await
            .ok()
    })
    .await?;
    tc.stop().await
}

#[tokio::test]
async fn limit_range_defaults_land_on_pods_and_limits_refuse_them() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    namespace(c, "limited").await?;
    c.create(
        &LIMITRANGES,
        Some("limited"),
        &json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "defaults"},
            "spec": {"limits": [{"type": "Container",
                "default": {"cpu": "500m", "memory": "256Mi"},
                "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
                "min": {"cpu": "50m"}}]}}),
    )
    .await?;
    c.create(&PODS, Some("limited"), &pod("bare", json!({})))
        .await?;
    let p = c.get(&PODS, Some("limited"), "bare").await?;
    let res = &p["spec"]["containers"][0]["resources"];
    assert_eq!(res["requests"]["cpu"], "100m", "{p}");
    assert_eq!(res["requests"]["memory"], "128Mi", "{p}");
    assert_eq!(res["limits"]["cpu"], "500m", "{p}");
    assert_eq!(
        p["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c"
    );
    let err = c
        .create(
            &PODS,
            Some("limited"),
            &pod("tiny", json!({"requests": {"cpu": "10m"}})),
        )
        .await
        .expect_err("below the minimum");
    let err = err.api().expect("a Status").clone();
    assert_eq!(err.code, 403);
    assert_eq!(
        err.message,
        "pods \"tiny\" is forbidden: minimum cpu usage per Container is 50m, but request is 10m"
    );
    tc.stop().await
}

#[tokio::test]
async fn a_quota_refuses_the_pod_that_would_exceed_it_and_reports_usage() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    namespace(c, "quota").await?;
    c.create(
        &RESOURCEQUOTAS,
        Some("quota"),
        &json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "compute"},
            "spec": {"hard": {"requests.cpu": "1200m", "pods": "5"}}}),
    )
    .await?;
    c.create(
        &PODS,
        Some("quota"),
        &pod("one", json!({"requests": {"cpu": "1"}})),
    )
    .await?;
    let err = c
        .create(
            &PODS,
            Some("quota"),
            &pod("two", json!({"requests": {"cpu": "500m"}})),
        )
        .await
        .expect_err("over the quota");
    let err = err.api().expect("a Status").clone();
    assert_eq!(err.code, 403, "{err:?}");
    assert_eq!(
        err.message,
        "pods \"two\" is forbidden: exceeded quota: compute, requested: requests.cpu=500m, used: requests.cpu=1, limited: requests.cpu=1200m"
    );
    let err = c
        .create(&PODS, Some("quota"), &pod("bare", json!({})))
        .await
        .expect_err("no request");
    let err = err.api().expect("a Status").clone();
    assert_eq!(
        err.message,
        "pods \"bare\" is forbidden: failed quota: compute: must specify requests.cpu for: c"
    );
    c.create(
        &PODS,
        Some("quota"),
        &pod("small", json!({"requests": {"cpu": "200m"}})),
    )
    .await?;
    eventually("the quota's status to show its usage", || async {
        let q = c
            .get(&RESOURCEQUOTAS, Some("quota"), "compute")
            .await
            .ok()?;
        (q["status"]["used"] == json!({"requests.cpu": "1200m", "pods": "2"})
            && q["status"]["hard"]["pods"] == "5")
            .then_some(())
    })
    .await?;
    tc.stop().await
}

#[tokio::test]
async fn a_replication_controller_gets_its_pods_and_scales() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let dir = tempfile::tempdir()?;
    let manifest = dir.path().join("rc.yaml");
    // An old manifest: no selector (defaulted from the template's labels).
    std::fs::write(
        &manifest,
        r#"apiVersion: v1
kind: ReplicationController
metadata:
  name: legacy
spec:
  replicas: 2
  template:
    metadata:
      labels: {app: legacy}
    spec:
      containers:
        - name: web
          image: tugboat/sample:latest
"#,
    )?;
    let cfg = tempfile::tempdir()?;
    tug(
        &tc.url,
        cfg.path(),
        &["apply", "-f", &manifest.to_string_lossy()],
    )
    .await?;
    let count = |n: usize| {
        let c = tc.client.clone();
        async move {
            eventually(
                &format!("{n} pods of the replication controller"),
                || async {
                    let params = ListParams {
                        label_selector: Some("app=legacy".into()),
                        ..Default::default()
                    };
                    let list = c.list(&PODS, Some("default"), &params).await.ok()?;
                    let live = list["items"]
                        .as_array()?
                        .iter()
                        .filter(|p| !meta::is_deleting(p))
                        .count();
                    (live == n).then_some(())
                },
            )
            .await
        }
    };
    count(2).await?;
    let out = tug(
        &tc.url,
        cfg.path(),
        &["scale", "rc/legacy", "--replicas", "3"],
    )
    .await?;
    assert!(out.contains("scaled"), "{out}");
    count(3).await?;
    let rc = tc
        .client
        .get(&REPLICATIONCONTROLLERS, Some("default"), "legacy")
        .await?;
    assert_eq!(rc["spec"]["replicas"], 3);
    eventually("the replication controller's status to count 3", || async {
        let rc = tc
            .client
            .get(&REPLICATIONCONTROLLERS, Some("default"), "legacy")
            .await
            .ok()?;
        (rc["status"]["replicas"] == 3).then_some(())
    })
    .await?;
    tc.stop().await
}
