//! `tug rollout`, `tug set`, `tug diff` and `tug apply --wait` against a controller
//! over real HTTPS, as a kubectl user would drive them. No agents: the Deployment
//! and ReplicaSet controllers run and pods stay Pending, which is enough for
//! revisions, rollbacks, pausing and diffs, and for a rollout that never
//! finishes.

use std::path::Path;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use tugboat_api::ListParams;
use tugboat_api::resource::{DEPLOYMENTS, REPLICASETS};
use tugboat_tests::{TestController, eventually, tug, within};

/// A Deployment of one replica; `IMAGE`, `CAUSE`, `REPLICAS` and `NAME` are
/// replaced.
const MANIFEST: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: NAME
  annotations:
    kubernetes.io/change-cause: CAUSE
spec:
  replicas: REPLICAS
  selector:
    matchLabels: {app: NAME}
  template:
    metadata:
      labels: {app: NAME}
    spec:
      containers:
        - name: web
          image: IMAGE
          imagePullPolicy: IfNotPresent
"#;

/// Writes the manifest to `dir/NAME.yaml`; returns its path.
fn manifest(dir: &Path, name: &str, image: &str, cause: &str, replicas: u32) -> String {
    let text = MANIFEST
        .replace("NAME", name)
        .replace("IMAGE", image)
        .replace("CAUSE", cause)
        .replace("REPLICAS", &replicas.to_string());
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).expect("the manifest is written");
    path.to_string_lossy().into_owned()
}

/// The Deployment's ReplicaSets as `(revision, image)`, oldest revision first.
async fn revisions(tc: &TestController, name: &str) -> Vec<(i64, String)> {
    let sets: Vec<ReplicaSet> = tc
        .client
        .list_as(&REPLICASETS, Some("default"), &ListParams::default())
        .await
        .unwrap_or_default();
    let mut out: Vec<(i64, String)> = sets
        .iter()
        .filter(|rs| {
            rs.metadata
                .name
                .as_deref()
                .unwrap_or("")
                .starts_with(&format!("{name}-"))
        })
        .map(|rs| {
            let revision = rs
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("deployment.kubernetes.io/revision")?.parse().ok());
            let image = rs
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.spec.as_ref())
                .and_then(|s| s.containers[0].image.clone())
                .unwrap_or_default();
            (revision.unwrap_or(0), image)
        })
        .collect();
    out.sort();
    out
}

async fn wait_revisions(
    tc: &TestController,
    name: &str,
    want: &[(i64, &str)],
) -> anyhow::Result<()> {
    let want: Vec<(i64, String)> = want.iter().map(|(r, i)| (*r, i.to_string())).collect();
    eventually(&format!("{name} has the revisions {want:?}"), || async {
        (revisions(tc, name).await == want).then_some(())
    })
    .await
}

async fn deployment(tc: &TestController, name: &str) -> anyhow::Result<Deployment> {
    Ok(tc
        .client
        .get_as(&DEPLOYMENTS, Some("default"), name)
        .await?)
}

fn image_of(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

/// Runs `tug ARGS` in-process, returning the exit status the binary would have
/// and what it printed.
async fn tug_status(
    tc: &TestController,
    dir: &Path,
    args: &[&str],
) -> anyhow::Result<(u8, String)> {
    let (code, out, _) = tugboat_tests::tug_exit(&tc.url, dir, args).await?;
    Ok((code, out))
}

#[tokio::test]
async fn history_and_undo_go_back_to_an_earlier_revision_and_its_replica_set() -> anyhow::Result<()>
{
    let tc = TestController::start().await?;
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let v1 = manifest(d, "web", "tugboat/sample:v1", "deploy v1", 1);
    tug(&tc.url, d, &["apply", "-f", &v1]).await?;
    wait_revisions(&tc, "web", &[(1, "tugboat/sample:v1")]).await?;
    let v2 = manifest(d, "web", "tugboat/sample:v2", "deploy v2", 1);
    tug(&tc.url, d, &["apply", "-f", &v2]).await?;
    wait_revisions(
        &tc,
        "web",
        &[(1, "tugboat/sample:v1"), (2, "tugboat/sample:v2")],
    )
    .await?;

    let history = tug(&tc.url, d, &["rollout", "history", "deployment/web"]).await?;
    assert_eq!(
        history,
        "deployment.apps/web\nREVISION  CHANGE-CAUSE\n1         deploy v1\n2         deploy v2\n"
    );
    let one = tug(
        &tc.url,
        d,
        &["rollout", "history", "deploy", "web", "--revision", "1"],
    )
    .await?;
    assert!(
        one.starts_with("deployment.apps/web with revision #1\nPod Template:\n"),
        "{one}"
    );
    for part in [
        "tugboat/sample:v1",
        "kubernetes.io/change-cause: deploy v1",
        "pod-template-hash=",
    ] {
        assert!(one.contains(part), "{part} missing from\n{one}");
    }
    let err = tug(
        &tc.url,
        d,
        &["rollout", "history", "deploy/web", "--revision", "7"],
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("unable to find the specified revision"),
        "{err}"
    );

    // Back to revision 1: its template, its change-cause, its ReplicaSet with the next revision.
    let undone = tug(&tc.url, d, &["rollout", "undo", "deployment/web"]).await?;
    assert_eq!(undone, "deployment.apps/web rolled back\n");
    let live = deployment(&tc, "web").await?;
    assert_eq!(image_of(&live), "tugboat/sample:v1");
    let labels = live
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone();
    assert!(!labels.unwrap_or_default().contains_key("pod-template-hash"));
    assert_eq!(
        live.metadata
            .annotations
            .unwrap_or_default()
            .get("kubernetes.io/change-cause")
            .map(String::as_str),
        Some("deploy v1")
    );
    wait_revisions(
        &tc,
        "web",
        &[(2, "tugboat/sample:v2"), (3, "tugboat/sample:v1")],
    )
    .await?;
    let history = tug(&tc.url, d, &["rollout", "history", "deployment/web"]).await?;
    assert!(
        history.ends_with("2         deploy v2\n3         deploy v1\n"),
        "{history}"
    );

    // Undoing to the template it already runs is skipped; unknown revisions refused.
    let skipped = tug(
        &tc.url,
        d,
        &["rollout", "undo", "deployment/web", "--to-revision", "3"],
    )
    .await?;
    assert_eq!(
        skipped,
        "deployment.apps/web skipped rollback (current template already matches revision 3)\n"
    );
    let err = tug(
        &tc.url,
        d,
        &["rollout", "undo", "deployment/web", "--to-revision", "9"],
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("unable to find specified revision 9 in history"),
        "{err}"
    );

    // A Deployment with a single revision has nothing to go back to.
    let solo = manifest(d, "solo", "tugboat/sample:v1", "only", 1);
    tug(&tc.url, d, &["apply", "-f", &solo]).await?;
    wait_revisions(&tc, "solo", &[(1, "tugboat/sample:v1")]).await?;
    let err = tug(&tc.url, d, &["rollout", "undo", "deployment/solo"])
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no rollout history found for deployment \"solo\""),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn set_image_and_env_patch_the_template_by_container_name() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let web = manifest(d, "web", "tugboat/sample:v1", "first", 1);
    tug(&tc.url, d, &["apply", "-f", &web]).await?;
    wait_revisions(&tc, "web", &[(1, "tugboat/sample:v1")]).await?;

    let out = tug(
        &tc.url,
        d,
        &["set", "image", "deployment/web", "web=tugboat/sample:v2"],
    )
    .await?;
    assert_eq!(out, "deployment.apps/web image updated\n");
    assert_eq!(
        image_of(&deployment(&tc, "web").await?),
        "tugboat/sample:v2"
    );
    wait_revisions(
        &tc,
        "web",
        &[(1, "tugboat/sample:v1"), (2, "tugboat/sample:v2")],
    )
    .await?;
    let history = tug(&tc.url, d, &["rollout", "history", "deployment/web"]).await?;
    assert!(
        history.contains("\n1         first\n2         first\n"),
        "{history}"
    );

    // Nothing to change: nothing sent, nothing printed (kubectl's way).
    let out = tug(
        &tc.url,
        d,
        &["set", "image", "deploy/web", "*=tugboat/sample:v2"],
    )
    .await?;
    assert_eq!(out, "");
    let err = tug(
        &tc.url,
        d,
        &["set", "image", "deployment/web", "db=postgres:16"],
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("unable to find container named \"db\""),
        "{err}"
    );
    assert_eq!(
        image_of(&deployment(&tc, "web").await?),
        "tugboat/sample:v2"
    );

    let out = tug(
        &tc.url,
        d,
        &["set", "env", "deployment/web", "A=1", "B=two"],
    )
    .await?;
    assert_eq!(out, "deployment.apps/web env updated\n");
    let out = tug(
        &tc.url,
        d,
        &["set", "env", "deployment/web", "-c", "web", "A-", "B=2"],
    )
    .await?;
    assert_eq!(out, "deployment.apps/web env updated\n");
    let live = deployment(&tc, "web").await?;
    let env: Vec<(String, Option<String>)> = live.spec.unwrap().template.spec.unwrap().containers
        [0]
    .env
    .clone()
    .unwrap_or_default()
    .into_iter()
    .map(|e| (e.name, e.value))
    .collect();
    assert_eq!(env, vec![("B".to_string(), Some("2".to_string()))]);
    let err = tug(
        &tc.url,
        d,
        &["set", "env", "deployment/web", "-c", "db", "X=1"],
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("does not have any containers matching \"db\""),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn a_paused_deployment_rolls_out_nothing_until_resumed() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let web = manifest(d, "web", "tugboat/sample:v1", "first", 1);
    tug(&tc.url, d, &["apply", "-f", &web]).await?;
    wait_revisions(&tc, "web", &[(1, "tugboat/sample:v1")]).await?;

    assert_eq!(
        tug(&tc.url, d, &["rollout", "pause", "deployment/web"]).await?,
        "deployment.apps/web paused\n"
    );
    let err = tug(&tc.url, d, &["rollout", "pause", "deployment/web"])
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("deployments.apps \"web\" is already paused"),
        "{err}"
    );

    tug(
        &tc.url,
        d,
        &["set", "image", "deployment/web", "web=tugboat/sample:v2"],
    )
    .await?;
    // The controller has seen the change (observedGeneration caught up) and made
    // no ReplicaSet for it.
    let generation = deployment(&tc, "web").await?.metadata.generation;
    eventually("the controller observes the paused change", || async {
        let d = deployment(&tc, "web").await.ok()?;
        (d.status?.observed_generation >= generation).then_some(())
    })
    .await?;
    assert_eq!(
        revisions(&tc, "web").await,
        vec![(1, "tugboat/sample:v1".to_string())]
    );

    let err = tug(
        &tc.url,
        d,
        &["rollout", "undo", "deployment/web", "--to-revision", "1"],
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains(
            "you cannot rollback a paused deployment; resume it first with 'kubectl rollout resume deployment/web' and try again"
        ),
        "{err}"
    );
    let err = tug(&tc.url, d, &["rollout", "restart", "deployment/web"])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("can't restart paused deployment"),
        "{err}"
    );

    assert_eq!(
        tug(&tc.url, d, &["rollout", "resume", "deployment/web"]).await?,
        "deployment.apps/web resumed\n"
    );
    let err = tug(&tc.url, d, &["rollout", "resume", "deployment/web"])
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("deployments.apps \"web\" is not paused"),
        "{err}"
    );
    wait_revisions(
        &tc,
        "web",
        &[(1, "tugboat/sample:v1"), (2, "tugboat/sample:v2")],
    )
    .await?;

    // A restart is a new template: a third revision, annotated with when.
    assert_eq!(
        tug(&tc.url, d, &["rollout", "restart", "deployment/web"]).await?,
        "deployment.apps/web restarted\n"
    );
    let annotations = deployment(&tc, "web")
        .await?
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations;
    assert!(
        annotations
            .unwrap_or_default()
            .contains_key("kubectl.kubernetes.io/restartedAt")
    );
    eventually("the restart makes a third revision", || async {
        (revisions(&tc, "web").await.len() == 3).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn diff_exits_1_with_the_change_and_0_once_applied() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let web = manifest(d, "web", "tugboat/sample:v1", "first", 1);

    // Not there yet: the whole object is new, as the server would create it.
    let (code, out) = tug_status(&tc, d, &["diff", "-f", &web]).await?;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with(
            "diff -u -N LIVE/apps.v1.Deployment.default.web MERGED/apps.v1.Deployment.default.web\n"
        ),
        "{out}"
    );
    assert!(out.contains("\n+kind: Deployment\n"), "{out}");
    // Server defaults show: the dry run went through admission.
    assert!(out.contains("+  revisionHistoryLimit: 10\n"), "{out}");
    let missing = tc.client.get(&DEPLOYMENTS, Some("default"), "web").await;
    assert!(
        missing.is_err_and(|e| e.is_not_found()),
        "a dry run stores nothing"
    );

    tug(&tc.url, d, &["apply", "-f", &web]).await?;
    let (code, out) = tug_status(&tc, d, &["diff", "-f", &web]).await?;
    assert_eq!((code, out.as_str()), (0, ""));

    let three = manifest(d, "web", "tugboat/sample:v1", "first", 3);
    let (code, out) = tug_status(&tc, d, &["diff", "-f", &three]).await?;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("\n-  replicas: 1\n+  replicas: 3\n"), "{out}");
    assert!(!out.contains("resourceVersion"), "{out}");
    assert_eq!(
        deployment(&tc, "web").await?.spec.unwrap().replicas,
        Some(1)
    );
    // Through the shared helper a diff with differences is an error carrying it.
    let err = tug(&tc.url, d, &["diff", "-f", &three])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("differences found (exit status 1)") && err.contains("+  replicas: 3"),
        "{err}"
    );

    tug(&tc.url, d, &["apply", "-f", &three]).await?;
    let (code, out) = tug_status(&tc, d, &["diff", "-f", &three]).await?;
    assert_eq!((code, out.as_str()), (0, ""));

    // An error is greater than 1.
    let bad = d.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: bad}\nspec: {replicas: -1}\n",
    )?;
    let (code, _) = tug_status(&tc, d, &["diff", "-f", &bad.to_string_lossy()]).await?;
    assert_eq!(code, 2);
    let (code, _) = tug_status(&tc, d, &["diff", "-f", "/no/such/file.yaml"]).await?;
    assert_eq!(code, 2);
    Ok(())
}

#[tokio::test]
async fn rollout_status_waits_while_pods_are_pending_and_names_the_timeout() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let web = manifest(d, "web", "tugboat/sample:v1", "first", 1);
    tug(&tc.url, d, &["apply", "-f", &web]).await?;

    let err = tug(
        &tc.url,
        d,
        &["rollout", "status", "deployment/web", "--timeout", "2s"],
    )
    .await
    .unwrap_err();
    let err = err.to_string();
    assert!(err.contains("timed out waiting for the condition"), "{err}");
    assert!(
        err.contains("deployment \"web\"") && err.contains("--timeout 2s"),
        "{err}"
    );
    assert!(
        err.contains("Waiting for deployment \"web\" rollout to finish"),
        "{err}"
    );

    // --watch=false: the current state once, and success, as kubectl.
    let out = tug(
        &tc.url,
        d,
        &["rollout", "status", "deploy", "web", "--watch=false"],
    )
    .await?;
    assert!(
        out.starts_with("Waiting for deployment \"web\" rollout to finish: "),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");

    let err = tug(&tc.url, d, &["rollout", "status", "deployment/nope"])
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("deployments.apps \"nope\" not found"),
        "{err}"
    );

    // apply --wait fails the same way, naming the deployment.
    let err = tug(
        &tc.url,
        d,
        &["apply", "-f", &web, "--wait", "--timeout", "1s"],
    )
    .await
    .unwrap_err();
    let err = err.to_string();
    assert!(err.contains("deployment.apps/web unchanged"), "{err}");
    assert!(
        err.contains("deployment \"web\" did not finish rolling out within --timeout 1s"),
        "{err}"
    );

    // Nothing to wait for once scaled to zero.
    tug(&tc.url, d, &["scale", "deployment/web", "--replicas", "0"]).await?;
    let out = tug(
        &tc.url,
        d,
        &["rollout", "status", "deployment/web", "--timeout", "15s"],
    )
    .await?;
    assert!(
        out.ends_with("deployment \"web\" successfully rolled out\n"),
        "{out}"
    );
    let zero = manifest(d, "web", "tugboat/sample:v1", "first", 0);
    let out = tug(
        &tc.url,
        d,
        &["apply", "-f", &zero, "--wait", "--timeout", "15s"],
    )
    .await?;
    assert!(
        out.ends_with("deployment \"web\" successfully rolled out\n"),
        "{out}"
    );
    Ok(())
}

#[tokio::test]
async fn a_rollout_past_its_progress_deadline_fails_status_and_apply_wait() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let path = manifest(d, "slow", "tugboat/sample:v1", "first", 1);
    let text = std::fs::read_to_string(&path)?.replace(
        "spec:\n  replicas",
        "spec:\n  progressDeadlineSeconds: 1\n  replicas",
    );
    std::fs::write(&path, text)?;

    let err = tug(
        &tc.url,
        d,
        &["apply", "-f", &path, "--wait", "--timeout", "15s"],
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("deployment \"slow\" exceeded its progress deadline"),
        "{err}"
    );
    let err = tug(&tc.url, d, &["rollout", "status", "deployment/slow"])
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("deployment \"slow\" exceeded its progress deadline"),
        "{err}"
    );
    Ok(())
}

/// `tug up -d` as a process, with its own HOME and XDG directories, never
/// touching Docker: its background `tug up` is pointed at a socket that does not
/// exist, so the start fails, and must say why (from its log) and leave no pid
/// behind. (A start that succeeds runs agents named `node-1…`, which fence the
/// containers of any local cluster of the same names on this engine: not for a
/// test.)
#[tokio::test]
async fn up_detached_reports_a_background_start_that_failed_and_down_finds_nothing_to_stop()
-> anyhow::Result<()> {
    let tug_bin = tugboat_tests::tug_binary()?;
    let home = tempfile::tempdir()?;
    let data = home.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let run = |args: Vec<String>| {
        let mut cmd = tokio::process::Command::new(&tug_bin);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("XDG_DATA_HOME", home.path().join("share"))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd
    };
    let data_arg = data.to_string_lossy().into_owned();
    let up = run(vec![
        "up".into(),
        "-d".into(),
        "--agents".into(),
        "1".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        data_arg.clone(),
        "--docker".into(),
        "unix:///nonexistent/docker.sock".into(),
        "--no-kubeconfig".into(),
    ])
    .output();
    let out = within("tug up -d", up).await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("tug up stopped"), "{stderr}");
    assert!(stderr.contains("before the cluster was ready"), "{stderr}");
    assert!(stderr.contains("cannot connect to Docker"), "{stderr}");
    assert!(data.join("tug-up.log").exists());
    assert!(
        !data.join("tug-up.pid").exists(),
        "the failed tug up released its pid file"
    );

    let down = run(vec!["down".into(), "--data-dir".into(), data_arg]).output();
    let out = within("tug down", down).await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("no tug up is running on "), "{stdout}");
    Ok(())
}
