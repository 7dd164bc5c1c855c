//! `tug` against a controller over real HTTP: the user's path from a manifest to
//! pods, and back.

use std::path::Path;

use tugboat_api::ListParams;
use tugboat_api::resource::{PODS, REPLICASETS};
use tugboat_tests::{TestController, eventually, tug};

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: REPLICAS
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
          image: tugboat/sample:latest
          imagePullPolicy: IfNotPresent
          ports:
            - containerPort: 8080
"#;

fn write_manifest(dir: &Path, replicas: u32) -> anyhow::Result<String> {
    let path = dir.join("web.yaml");
    std::fs::write(&path, WEB.replace("REPLICAS", &replicas.to_string()))?;
    Ok(path.to_string_lossy().to_string())
}

async fn pod_count(tc: &TestController) -> usize {
    let params = ListParams {
        label_selector: Some("app=web".into()),
        ..Default::default()
    };
    tc.client
        .list(&PODS, Some("default"), &params)
        .await
        .ok()
        .and_then(|l| l["items"].as_array().map(Vec::len))
        .unwrap_or(usize::MAX)
}

async fn wait_pods(tc: &TestController, n: usize) -> anyhow::Result<()> {
    eventually(&format!("{n} web pods exist"), || async {
        (pod_count(tc).await == n).then_some(())
    })
    .await
}

#[tokio::test]
async fn apply_scale_and_delete_drive_pods_like_kubectl() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let dir = tempfile::tempdir()?;
    let file = write_manifest(dir.path(), 3)?;
    let s = tc.url.as_str();

    assert_eq!(
        tug(s, dir.path(), &["apply", "-f", &file]).await?,
        "deployment.apps/web created\n"
    );
    wait_pods(&tc, 3).await?;
    let rs = tc
        .client
        .list(&REPLICASETS, Some("default"), &ListParams::default())
        .await?;
    assert_eq!(rs["items"].as_array().map(Vec::len), Some(1));

    let pods = tug(s, dir.path(), &["get", "pods"]).await?;
    let lines: Vec<&str> = pods.lines().collect();
    assert_eq!(lines.len(), 4, "{pods}");
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("READY   STATUS    RESTARTS   AGE"),
        "{pods}"
    );
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.starts_with("web-") && l.contains("0/1") && l.contains("Pending")),
        "{pods}"
    );

    assert_eq!(
        tug(s, dir.path(), &["apply", "-f", &file]).await?,
        "deployment.apps/web unchanged\n"
    );

    let file = write_manifest(dir.path(), 5)?;
    assert_eq!(
        tug(s, dir.path(), &["apply", "-f", &file]).await?,
        "deployment.apps/web configured\n"
    );
    wait_pods(&tc, 5).await?;

    assert_eq!(
        tug(
            s,
            dir.path(),
            &["scale", "deployment/web", "--replicas", "2"]
        )
        .await?,
        "deployment.apps/web scaled\n"
    );
    wait_pods(&tc, 2).await?;
    assert_eq!(
        tug(
            s,
            dir.path(),
            &["scale", "deployment", "web", "--replicas=4"]
        )
        .await?,
        "deployment.apps/web scaled\n"
    );
    wait_pods(&tc, 4).await?;

    let deploy = eventually("get deploy shows 4 replicas", || async {
        let out = tug(s, dir.path(), &["get", "deploy"]).await.ok()?;
        out.contains("0/4").then_some(out)
    })
    .await?;
    assert!(
        deploy.starts_with("NAME   READY   UP-TO-DATE   AVAILABLE   AGE\n"),
        "{deploy}"
    );
    assert!(
        tug(s, dir.path(), &["get", "rs", "-o", "name"])
            .await?
            .starts_with("replicaset.apps/web-")
    );

    let described = tug(s, dir.path(), &["describe", "deployment", "web"]).await?;
    assert!(described.contains("Replicas:"), "{described}");
    assert!(
        described.contains("ScalingReplicaSet"),
        "describe ends with the events: {described}"
    );

    assert_eq!(
        tug(s, dir.path(), &["delete", "-f", &file]).await?,
        "deployment.apps \"web\" deleted\n"
    );
    wait_pods(&tc, 0).await?;
    eventually("the replica set is gone", || async {
        let rs = tc
            .client
            .list(&REPLICASETS, Some("default"), &ListParams::default())
            .await
            .ok()?;
        rs["items"].as_array()?.is_empty().then_some(())
    })
    .await?;
    tc.stop().await
}

#[tokio::test]
async fn apply_reports_each_invalid_document_and_stores_nothing_of_it() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        format!(
            "{}\n---\n{}",
            WEB.replace("REPLICAS", "-1"),
            WEB.replace("REPLICAS", "1")
                .replace("name: web\nspec", "name: other\nspec")
                .replace("replicas: 1", "replcas: 1")
        ),
    )?;
    let err = tug(
        &tc.url,
        dir.path(),
        &["apply", "-f", &path.to_string_lossy()],
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
        "{err}"
    );
    assert!(err.contains("unknown field \"spec.replcas\""), "{err}");
    let list = tc
        .client
        .list(
            &tugboat_api::resource::DEPLOYMENTS,
            None,
            &ListParams::default(),
        )
        .await?;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0));
    tc.stop().await
}

#[tokio::test]
async fn namespaces_are_created_and_listed_per_namespace_or_across_all() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let dir = tempfile::tempdir()?;
    let s = tc.url.as_str();
    assert_eq!(
        tug(s, dir.path(), &["create", "namespace", "team"]).await?,
        "namespace/team created\n"
    );
    let file = write_manifest(dir.path(), 1)?;
    tug(s, dir.path(), &["apply", "-f", &file, "-n", "team"]).await?;
    let all = tug(s, dir.path(), &["get", "deployments", "-A"]).await?;
    assert!(all.starts_with("NAMESPACE"), "{all}");
    assert!(
        all.lines()
            .any(|l| l.starts_with("team ") && l.contains("web")),
        "{all}"
    );
    let err = tug(s, dir.path(), &["get", "deploy", "web"])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Error from server (NotFound): deployments.apps \"web\" not found"),
        "{err}"
    );
    let json = tug(
        s,
        dir.path(),
        &["get", "deploy", "web", "-n", "team", "-o", "json"],
    )
    .await?;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    assert_eq!(v["metadata"]["namespace"], "team");
    tc.stop().await
}
