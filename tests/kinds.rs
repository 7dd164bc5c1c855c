//! The newly served kinds through the installed `kubectl` and through `tug`, as a
//! user meets them: `kubectl create configmap|secret|job` (protobuf bodies),
//! `kubectl get` of every new kind at once (the server's Tables with kubectl's
//! headers), RBAC and APIService manifests applied and read back, server-side
//! apply, `kubectl explain`, and describe of a Secret showing sizes, never values.
//! No pods need running, so the controller runs without agents.
//!
//! Every kubectl run has a time limit and is killed when it passes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tugboat_tests::{TestController, tug};

/// The longest one kubectl run may take.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// `kubectl` with the controller's admin kubeconfig and a discovery cache of its
/// own (kubectl caches discovery; a shared cache would mix servers).
struct Kubectl {
    kubeconfig: PathBuf,
    cache: tempfile::TempDir,
}

impl Kubectl {
    fn new(tc: &TestController) -> anyhow::Result<Self> {
        Ok(Kubectl {
            kubeconfig: tc.kubeconfig(),
            cache: tempfile::tempdir()?,
        })
    }

    /// Runs kubectl to the end (killed after [`RUN_LIMIT`]); fails unless it
    /// exits 0, with everything it printed. Returns stdout.
    async fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let what = format!("kubectl {}", args.join(" "));
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .env_remove("KUBECONFIG")
            .kill_on_drop(true)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {what}: {e}"))?;
        let out = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
            .await
            .map_err(|_| anyhow::anyhow!("{what} did not finish within {RUN_LIMIT:?}"))??;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        anyhow::ensure!(
            out.status.success(),
            "{what} exited {:?}\nstdout:\n{stdout}\nstderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(stdout)
    }
}

/// RBAC, an APIService, and one object of each new workload and policy kind.
const MANIFEST: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: pod-reader
rules:
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: read-pods
subjects:
  - kind: User
    name: jane
    apiGroup: rbac.authorization.k8s.io
roleRef:
  kind: Role
  name: pod-reader
  apiGroup: rbac.authorization.k8s.io
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: node-viewer
rules:
  - apiGroups: [""]
    resources: ["nodes"]
    verbs: ["get", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: view-nodes
subjects:
  - kind: Group
    name: ops
    apiGroup: rbac.authorization.k8s.io
roleRef:
  kind: ClusterRole
  name: node-viewer
  apiGroup: rbac.authorization.k8s.io
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1alpha1.widgets.example.com
spec:
  group: widgets.example.com
  version: v1alpha1
  groupPriorityMinimum: 1000
  versionPriority: 15
  service:
    namespace: default
    name: widgets
    port: 443
  insecureSkipTLSVerify: true
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
            - name: backup
              image: tugboat/busybox:test
              command: ["true"]
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: node-agent
spec:
  selector:
    matchLabels: {app: node-agent}
  template:
    metadata:
      labels: {app: node-agent}
    spec:
      nodeSelector: {kinds-test: "no-such-node"}
      containers:
        - name: agent
          image: tugboat/busybox:test
---
apiVersion: v1
kind: ReplicationController
metadata:
  name: legacy
spec:
  replicas: 0
  selector: {app: legacy}
  template:
    metadata:
      labels: {app: legacy}
    spec:
      containers:
        - name: web
          image: tugboat/busybox:test
---
apiVersion: v1
kind: ResourceQuota
metadata:
  name: team
spec:
  hard:
    pods: "50"
---
apiVersion: v1
kind: LimitRange
metadata:
  name: defaults
spec:
  limits:
    - type: Container
      defaultRequest: {cpu: 10m}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: builder
"#;

/// The header of each table kubectl printed (tables are separated by blank
/// lines), as column names: cells are at least two spaces apart, names such as
/// `NODE SELECTOR` hold one.
fn headers(out: &str) -> Vec<Vec<String>> {
    let mut headers = Vec::new();
    let mut at_start = true;
    for line in out.lines() {
        if line.trim().is_empty() {
            at_start = true;
            continue;
        }
        if at_start {
            headers.push(
                line.split("  ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
            );
        }
        at_start = false;
    }
    headers
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path.to_string_lossy().into_owned())
}

#[tokio::test]
async fn kubectl_and_tug_create_list_apply_explain_and_describe_the_new_kinds() -> anyhow::Result<()>
{
    let tc = TestController::start().await?;
    let kubectl = Kubectl::new(&tc)?;
    let dir = tempfile::tempdir()?;
    let s = tc.url.as_str();

    // kubectl create sends protobuf bodies for each of these.
    let out = kubectl
        .ok(&[
            "create",
            "configmap",
            "app-config",
            "--from-literal=mode=prod",
            "--from-literal=level=debug",
        ])
        .await?;
    assert_eq!(out.trim(), "configmap/app-config created");
    let out = kubectl
        .ok(&[
            "create",
            "secret",
            "generic",
            "db",
            "--from-literal=password=hunter2",
        ])
        .await?;
    assert_eq!(out.trim(), "secret/db created");
    let out = kubectl
        .ok(&["create", "job", "once", "--image=tugboat/busybox:test"])
        .await?;
    assert_eq!(out.trim(), "job.batch/once created");
    let mode = kubectl
        .ok(&["get", "cm", "app-config", "-o", "jsonpath={.data.mode}"])
        .await?;
    assert_eq!(mode, "prod");
    let completions = kubectl
        .ok(&["get", "job", "once", "-o", "jsonpath={.spec.completions}"])
        .await?;
    assert_eq!(completions, "1", "the Job was defaulted");

    // Client-side apply of RBAC, an APIService and the other kinds.
    let manifest = write(dir.path(), "kinds.yaml", MANIFEST)?;
    let out = kubectl.ok(&["apply", "-f", &manifest]).await?;
    for line in [
        "role.rbac.authorization.k8s.io/pod-reader created",
        "rolebinding.rbac.authorization.k8s.io/read-pods created",
        "clusterrole.rbac.authorization.k8s.io/node-viewer created",
        "clusterrolebinding.rbac.authorization.k8s.io/view-nodes created",
        "apiservice.apiregistration.k8s.io/v1alpha1.widgets.example.com created",
        "cronjob.batch/nightly created",
        "daemonset.apps/node-agent created",
        "replicationcontroller/legacy created",
        "resourcequota/team created",
        "limitrange/defaults created",
        "serviceaccount/builder created",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    let verbs = kubectl
        .ok(&[
            "get",
            "role",
            "pod-reader",
            "-o",
            "jsonpath={.rules[0].verbs}",
        ])
        .await?;
    assert_eq!(verbs, r#"["get","list","watch"]"#);
    let role = kubectl
        .ok(&[
            "get",
            "rolebinding",
            "read-pods",
            "-o",
            "jsonpath={.roleRef.name}",
        ])
        .await?;
    assert_eq!(role, "pod-reader");
    let service = kubectl
        .ok(&[
            "get",
            "apiservice",
            "v1alpha1.widgets.example.com",
            "-o",
            "jsonpath={.spec.service.name}",
        ])
        .await?;
    assert_eq!(service, "widgets");
    // Applying again changes nothing.
    let out = kubectl.ok(&["apply", "-f", &manifest]).await?;
    assert!(
        out.contains("role.rbac.authorization.k8s.io/pod-reader unchanged"),
        "{out}"
    );

    // Every new kind in one `get`, through the server's Tables.
    let out = kubectl
        .ok(&[
            "get",
            "cm,secrets,sa,jobs,cronjobs,ds,rc,quota,limits,roles,rolebindings,clusterroles,clusterrolebindings,apiservices",
        ])
        .await?;
    let found = headers(&out);
    for expected in [
        &["NAME", "DATA", "AGE"][..],
        &["NAME", "TYPE", "DATA", "AGE"],
        &["NAME", "SECRETS", "AGE"],
        &["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
        &[
            "NAME",
            "SCHEDULE",
            "TIMEZONE",
            "SUSPEND",
            "ACTIVE",
            "LAST SCHEDULE",
            "AGE",
        ],
        &[
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE SELECTOR",
            "AGE",
        ],
        &["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        &["NAME", "REQUEST", "LIMIT", "AGE"],
        &["NAME", "CREATED AT"],
        &["NAME", "ROLE", "AGE"],
        &["NAME", "SERVICE", "AVAILABLE", "AGE"],
    ] {
        assert!(
            found.iter().any(|h| h == expected),
            "no table with the header {expected:?} in\n{out}"
        );
    }
    let row = |prefix: &str| {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert!(
        row("configmap/app-config ").starts_with("configmap/app-config 2 "),
        "{out}"
    );
    assert!(
        row("secret/db ").starts_with("secret/db Opaque 1 "),
        "{out}"
    );
    assert!(
        row("cronjob.batch/nightly ")
            .starts_with("cronjob.batch/nightly 0 3 * * * <none> False 0 <none> "),
        "{out}"
    );
    assert!(
        row("daemonset.apps/node-agent ").contains(" kinds-test=no-such-node "),
        "{out}"
    );
    // Used counts the Job's pod once the quota controller has seen it.
    let quota = row("resourcequota/team ");
    assert!(
        quota.contains("pods: 0/50") || quota.contains("pods: 1/50"),
        "{out}"
    );
    assert!(
        row("rolebinding.rbac.authorization.k8s.io/read-pods ").contains(" Role/pod-reader "),
        "{out}"
    );
    assert!(
        row("apiservice.apiregistration.k8s.io/v1alpha1.widgets.example.com ")
            .contains(" default/widgets "),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "{out}");
    let wide = kubectl
        .ok(&["get", "clusterrolebinding", "view-nodes", "-o", "wide"])
        .await?;
    assert_eq!(
        headers(&wide)[0],
        ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]
    );
    assert!(wide.contains("ClusterRole/node-viewer"), "{wide}");

    // Server-side apply of a ConfigMap.
    let ssa = write(
        dir.path(),
        "ssa.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa-config\ndata:\n  color: blue\n",
    )?;
    let out = kubectl.ok(&["apply", "--server-side", "-f", &ssa]).await?;
    assert_eq!(out.trim(), "configmap/ssa-config serverside-applied");
    let color = kubectl
        .ok(&["get", "cm", "ssa-config", "-o", "jsonpath={.data.color}"])
        .await?;
    assert_eq!(color, "blue");

    // The OpenAPI document explains the new kinds' fields.
    let out = kubectl.ok(&["explain", "job.spec.completions"]).await?;
    assert!(out.contains("FIELD: completions <integer>"), "{out}");
    assert!(out.contains("DESCRIPTION:"), "{out}");
    assert!(out.contains("successfully finished pods"), "{out}");

    // Describing a Secret shows the sizes of its values, never the values.
    for (who, out) in [
        ("kubectl", kubectl.ok(&["describe", "secret", "db"]).await?),
        (
            "tug",
            tug(s, dir.path(), &["describe", "secret", "db"]).await?,
        ),
    ] {
        assert!(out.contains("password:  7 bytes"), "{who}:\n{out}");
        assert!(out.contains("Opaque"), "{who}:\n{out}");
        for leaked in ["hunter2", "aHVudGVyMg"] {
            assert!(!out.contains(leaked), "{who} printed {leaked}:\n{out}");
        }
    }

    // tug create configmap --from-file, read back by kubectl and tug.
    let conf = "listen 8080\nworkers 4\n";
    let app_conf = write(dir.path(), "app.conf", conf)?;
    let other = write(dir.path(), "other.txt", "second")?;
    let out = tug(
        s,
        dir.path(),
        &[
            "create",
            "configmap",
            "files",
            &format!("--from-file={app_conf}"),
            &format!("--from-file=extra={other}"),
        ],
    )
    .await?;
    assert_eq!(out.trim(), "configmap/files created");
    let back = kubectl
        .ok(&["get", "cm", "files", "-o", r"jsonpath={.data.app\.conf}"])
        .await?;
    assert_eq!(back, conf);
    let extra = kubectl
        .ok(&["get", "cm", "files", "-o", "jsonpath={.data.extra}"])
        .await?;
    assert_eq!(extra, "second");
    let table = tug(s, dir.path(), &["get", "cm", "files"]).await?;
    assert_eq!(headers(&table)[0], ["NAME", "DATA", "AGE"]);
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("2")),
        "{table}"
    );
    let described = tug(s, dir.path(), &["describe", "cm", "files"]).await?;
    assert!(
        described.contains("app.conf:\n----\nlisten 8080\nworkers 4\n"),
        "{described}"
    );

    // tug's own secret and service account verbs, and the new short names.
    let out = tug(
        s,
        dir.path(),
        &[
            "create",
            "secret",
            "generic",
            "api-key",
            "--from-literal=key=s3cret",
        ],
    )
    .await?;
    assert_eq!(out.trim(), "secret/api-key created");
    let out = tug(s, dir.path(), &["create", "sa", "deployer"]).await?;
    assert_eq!(out.trim(), "serviceaccount/deployer created");
    let listed = tug(s, dir.path(), &["get", "secrets,sa,cj,ds,rc,quota,limits"]).await?;
    for name in [
        "secret/api-key",
        "serviceaccount/deployer",
        "cronjob.batch/nightly",
        "daemonset.apps/node-agent",
        "replicationcontroller/legacy",
        "resourcequota/team",
        "limitrange/defaults",
    ] {
        assert!(listed.contains(name), "missing {name} in\n{listed}");
    }
    assert!(!listed.contains("s3cret"), "{listed}");
    let all = tug(s, dir.path(), &["get", "all"]).await?;
    for name in [
        "job.batch/once",
        "cronjob.batch/nightly",
        "daemonset.apps/node-agent",
    ] {
        assert!(all.contains(name), "`get all` lacks {name}:\n{all}");
    }
    Ok(())
}
