//! The installed `kubectl` itself against Tugboat, on the real Docker engine: each
//! test starts a controller with Docker agents, runs `kubectl` with the admin
//! kubeconfig the controller wrote and a discovery cache of its own, and asserts on
//! what kubectl prints and how it exits, as a user would read them. Also `tug
//! exec`, `port-forward` and `cp`, and `tug get -o wide` beside kubectl's.
//!
//! Every kubectl run has a time limit and is killed when it passes (or when the
//! test fails); long-running ones (`get -w`, `logs -f`, `port-forward`) are killed
//! by their process id. The clusters remove their containers on drop.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWriteExt as _, BufReader};
use tokio::sync::mpsc;
use tugboat_tests::docker::{BUSYBOX_IMAGE, DockerCluster, busybox_image, http_get};
use tugboat_tests::{eventually, tug, tug_binary, within};

/// The longest one kubectl (or tug) run may take; `rollout status` and `wait` get
/// a `--timeout` shorter than this, so kubectl reports the failure itself.
const RUN_LIMIT: Duration = Duration::from_secs(90);

/// A Deployment of the sample image (HTTP on 8080) and a Service in front of it
/// (port 80). `NAME` and `REPLICAS` are replaced.
const APP: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: NAME
spec:
  replicas: REPLICAS
  selector:
    matchLabels: {app: NAME}
  template:
    metadata:
      labels: {app: NAME}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: web
          image: tugboat/sample:latest
          imagePullPolicy: IfNotPresent
          ports:
            - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: NAME
spec:
  selector: {app: NAME}
  ports:
    - port: 80
      targetPort: 8080
"#;

/// Writes [`APP`] for `name` with `replicas` to `dir/FILE`; returns the path.
fn write_app(dir: &Path, file: &str, name: &str, replicas: u32) -> anyhow::Result<String> {
    let path = dir.join(file);
    let text = APP
        .replace("NAME", name)
        .replace("REPLICAS", &replicas.to_string());
    std::fs::write(&path, text)?;
    Ok(path.to_string_lossy().into_owned())
}

/// What one run printed and how it exited.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Fails (with everything it printed) unless it exited 0; returns stdout.
    fn ok(self, what: &str) -> anyhow::Result<String> {
        anyhow::ensure!(
            self.code == 0,
            "{what} exited {}\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        Ok(self.stdout)
    }
}

/// Runs `cmd` to the end with `stdin` fed to it, killing it after [`RUN_LIMIT`].
async fn run(mut cmd: tokio::process::Command, what: &str, stdin: &[u8]) -> anyhow::Result<Run> {
    cmd.kill_on_drop(true)
        .stdin(if stdin.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {what}: {e}"))?;
    // Fed while its output is read, then closed (a process that stops reading
    // early only makes the feeding end).
    let input = child.stdin.take();
    let feed = async {
        if let Some(mut input) = input {
            let _ = input.write_all(stdin).await;
        }
    };
    let (_, out) = tokio::time::timeout(RUN_LIMIT, async {
        tokio::join!(feed, child.wait_with_output())
    })
    .await
    .map_err(|_| anyhow::anyhow!("{what} did not finish within {RUN_LIMIT:?}"))?;
    let out = out?;
    Ok(Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `kubectl` with a cluster's admin kubeconfig, a discovery cache of its own and
/// the cluster's namespace.
struct Kubectl {
    kubeconfig: PathBuf,
    namespace: String,
    cache: tempfile::TempDir,
}

impl Kubectl {
    fn new(c: &DockerCluster) -> anyhow::Result<Self> {
        Ok(Kubectl {
            kubeconfig: c.controller.kubeconfig(),
            namespace: c.namespace.clone(),
            cache: tempfile::tempdir()?,
        })
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(["--namespace", &self.namespace])
            .args(args)
            .env_remove("KUBECONFIG");
        cmd
    }

    async fn run(&self, args: &[&str]) -> anyhow::Result<Run> {
        self.run_with_stdin(args, b"").await
    }

    async fn run_with_stdin(&self, args: &[&str], stdin: &[u8]) -> anyhow::Result<Run> {
        let what = format!("kubectl {}", args.join(" "));
        run(self.command(args), &what, stdin).await
    }

    /// Runs kubectl, failing unless it exits 0; returns its stdout.
    async fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        self.run(args)
            .await?
            .ok(&format!("kubectl {}", args.join(" ")))
    }

    /// Starts a kubectl that runs until killed (`get -w`, `logs -f`,
    /// `port-forward`).
    fn spawn(&self, args: &[&str]) -> anyhow::Result<Background> {
        Background::spawn(self.command(args), &format!("kubectl {}", args.join(" ")))
    }

    /// `kubectl wait --for=condition=Available` on Deployment `name`.
    async fn wait_available(&self, name: &str) -> anyhow::Result<()> {
        let out = self
            .ok(&[
                "wait",
                "--for=condition=Available",
                &format!("deployment/{name}"),
                "--timeout=60s",
            ])
            .await?;
        assert_eq!(out.trim(), format!("deployment.apps/{name} condition met"));
        Ok(())
    }

    /// The names of the pods selected by `app=APP`, sorted.
    async fn pods_of(&self, app: &str) -> anyhow::Result<Vec<String>> {
        let out = self
            .ok(&[
                "get",
                "pods",
                "-l",
                &format!("app={app}"),
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ])
            .await?;
        let mut names: Vec<String> = out.split_whitespace().map(str::to_string).collect();
        names.sort();
        Ok(names)
    }

    /// Runs a busybox pod `name` (`kubectl run`) with `command` (none: the image's
    /// `sleep`), and waits until it is Ready.
    async fn run_busybox(&self, name: &str, command: &[&str]) -> anyhow::Result<()> {
        let image = format!("--image={BUSYBOX_IMAGE}");
        let mut args = vec!["run", name, &image];
        if !command.is_empty() {
            args.push("--");
            args.extend(command);
        }
        let out = self.ok(&args).await?;
        assert_eq!(out.trim(), format!("pod/{name} created"));
        let out = self
            .ok(&[
                "wait",
                "--for=condition=Ready",
                &format!("pod/{name}"),
                "--timeout=60s",
            ])
            .await?;
        assert_eq!(out.trim(), format!("pod/{name} condition met"));
        Ok(())
    }
}

/// A process that runs until killed, its output lines (stderr's marked
/// `stderr: `) collected as they come. Killed on drop.
struct Background {
    what: String,
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Background {
    fn spawn(mut cmd: tokio::process::Command, what: &str) -> anyhow::Result<Self> {
        cmd.kill_on_drop(true)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {what}: {e}"))?;
        let (tx, lines) = mpsc::unbounded_channel();
        fn forward(
            stream: Option<impl AsyncRead + Unpin + Send + 'static>,
            prefix: &'static str,
            tx: mpsc::UnboundedSender<String>,
        ) {
            if let Some(stream) = stream {
                tokio::spawn(async move {
                    let mut lines = BufReader::new(stream).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if tx.send(format!("{prefix}{line}")).is_err() {
                            break;
                        }
                    }
                });
            }
        }
        forward(child.stdout.take(), "", tx.clone());
        forward(child.stderr.take(), "stderr: ", tx);
        Ok(Background {
            what: what.to_string(),
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// Waits (at most 30 s) for an output line `wanted` accepts, one already
    /// printed included; returns it.
    async fn line(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        if let Some(line) = self.seen.iter().find(|l| wanted(l)) {
            return Ok(line.clone());
        }
        let limit = Duration::from_secs(30);
        let found = tokio::time::timeout(limit, async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line.clone());
                if wanted(&line) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => Ok(line),
            Ok(None) => anyhow::bail!(
                "{} ended before printing {what}; it printed:\n{}",
                self.what,
                self.seen.join("\n")
            ),
            Err(_) => anyhow::bail!(
                "{} did not print {what} within {limit:?}; it printed:\n{}",
                self.what,
                self.seen.join("\n")
            ),
        }
    }

    /// The local address of a `port-forward`'s `Forwarding from 127.0.0.1:PORT ->
    /// REMOTE` line.
    async fn forwarded(&mut self, remote: u16) -> anyhow::Result<SocketAddr> {
        let suffix = format!(" -> {remote}");
        let line = self
            .line("its IPv4 forwarding line", |l| {
                l.starts_with("Forwarding from 127.0.0.1:") && l.ends_with(&suffix)
            })
            .await?;
        let addr = line
            .trim_start_matches("Forwarding from ")
            .trim_end_matches(&suffix);
        Ok(addr.parse()?)
    }

    /// Stops the process by its id (SIGTERM, as Ctrl-C would) and waits (with a
    /// limit) until it is gone; if it does not go, dropping it SIGKILLs it.
    async fn kill(mut self) -> anyhow::Result<()> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow::anyhow!("{} already exited", self.what))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid)?),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        within(&format!("{} to exit", self.what), self.child.wait()).await??;
        Ok(())
    }
}

/// One table kubectl (or tug) printed: its column names, and its rows as cells
/// under those names. Columns are found where the header's words start after two
/// or more spaces (a header may hold one space: `NOMINATED NODE`).
#[derive(Debug)]
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn parse(block: &str) -> Table {
        let mut lines = block.lines().filter(|l| !l.trim().is_empty());
        let head = lines.next().unwrap_or("");
        let bytes = head.as_bytes();
        let starts: Vec<usize> = (0..bytes.len())
            .filter(|&i| {
                bytes[i] != b' '
                    && (i == 0 || (i >= 2 && bytes[i - 1] == b' ' && bytes[i - 2] == b' '))
            })
            .collect();
        let cells = |line: &str| -> Vec<String> {
            starts
                .iter()
                .enumerate()
                .map(|(k, &start)| {
                    let end = starts
                        .get(k + 1)
                        .copied()
                        .unwrap_or(line.len())
                        .min(line.len());
                    line.get(start.min(end)..end)
                        .unwrap_or("")
                        .trim()
                        .to_string()
                })
                .collect()
        };
        Table {
            header: cells(head),
            rows: lines.map(cells).collect(),
        }
    }

    /// Every table in `output` (kubectl separates kinds by a blank line).
    fn all(output: &str) -> Vec<Table> {
        output
            .split("\n\n")
            .filter(|b| !b.trim().is_empty())
            .map(Table::parse)
            .collect()
    }

    /// The table whose rows are named `prefix…` (`pod/`, `deployment.apps/`).
    fn of<'a>(tables: &'a [Table], prefix: &str) -> anyhow::Result<&'a Table> {
        tables
            .iter()
            .find(|t| t.rows.first().is_some_and(|r| r[0].starts_with(prefix)))
            .ok_or_else(|| anyhow::anyhow!("no table of {prefix}… in {tables:#?}"))
    }

    fn column(&self, name: &str) -> anyhow::Result<usize> {
        self.header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| anyhow::anyhow!("no column {name} in {:?}", self.header))
    }

    /// The cell of column `name` in the row named `row`.
    fn cell(&self, row: &str, name: &str) -> anyhow::Result<&str> {
        let k = self.column(name)?;
        self.rows
            .iter()
            .find(|r| r[0] == row)
            .map(|r| r[k].as_str())
            .ok_or_else(|| anyhow::anyhow!("no row {row} in {self:#?}"))
    }
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn kubectl_creates_runs_applies_validates_diffs_explains_and_deletes() -> anyhow::Result<()> {
    busybox_image().await?;
    let c = DockerCluster::start("kubectl-apply", 1).await?;
    let k = Kubectl::new(&c)?;
    let dir = tempfile::tempdir()?;

    // `create namespace|deployment|service` send protobuf bodies (kubectl -v=8
    // logs the request's headers).
    let extra = format!("{}-extra", c.namespace);
    let created = k.run(&["create", "namespace", &extra, "-v=8"]).await?;
    assert!(
        created
            .stderr
            .contains("Content-Type: application/vnd.kubernetes.protobuf"),
        "{created:?}"
    );
    let out = created.ok("kubectl create namespace")?;
    assert_eq!(out.trim(), format!("namespace/{extra} created"));
    let phase = k
        .ok(&["get", "namespace", &extra, "-o", "jsonpath={.status.phase}"])
        .await?;
    assert_eq!(phase, "Active");
    let out = k
        .ok(&[
            "create",
            "deployment",
            "made",
            "--image=tugboat/sample:latest",
            "--replicas=1",
            "--port=8080",
        ])
        .await?;
    assert_eq!(out.trim(), "deployment.apps/made created");
    let out = k
        .ok(&["create", "service", "clusterip", "made", "--tcp=80:8080"])
        .await?;
    assert_eq!(out.trim(), "service/made created");
    let image = k
        .ok(&[
            "get",
            "deployment",
            "made",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image} {.spec.replicas}",
        ])
        .await?;
    assert_eq!(image, "tugboat/sample:latest 1");
    let ports = k
        .ok(&[
            "get",
            "service",
            "made",
            "-o",
            "jsonpath={.spec.ports[0].port}:{.spec.ports[0].targetPort}",
        ])
        .await?;
    assert_eq!(ports, "80:8080");
    k.wait_available("made").await?;

    // `run`: a pod of its own.
    k.run_busybox("solo", &[]).await?;
    let phase = k
        .ok(&["get", "pod", "solo", "-o", "jsonpath={.status.phase}"])
        .await?;
    assert_eq!(phase, "Running");

    // apply: created, unchanged, configured (kubectl's default --validate=strict
    // reads the OpenAPI v3 documents).
    let manifest = write_app(dir.path(), "app.yaml", "app", 1)?;
    let out = k.ok(&["apply", "-f", &manifest]).await?;
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["deployment.apps/app created", "service/app created"]
    );
    let out = k.ok(&["apply", "-f", &manifest]).await?;
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["deployment.apps/app unchanged", "service/app unchanged"]
    );

    // diff: exit 0 and nothing printed without a change, 1 and the change with one.
    let same = k.run(&["diff", "-f", &manifest]).await?;
    assert_eq!(same.code, 0, "{same:?}");
    assert_eq!(same.stdout, "", "{same:?}");
    let manifest = write_app(dir.path(), "app.yaml", "app", 2)?;
    let changed = k.run(&["diff", "-f", &manifest]).await?;
    assert_eq!(changed.code, 1, "{changed:?}");
    assert!(
        changed.stdout.contains("-  replicas: 1") && changed.stdout.contains("+  replicas: 2"),
        "{changed:?}"
    );
    let out = k.ok(&["apply", "-f", &manifest]).await?;
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["deployment.apps/app configured", "service/app unchanged"]
    );
    let replicas = k
        .ok(&[
            "get",
            "deployment",
            "app",
            "-o",
            "jsonpath={.spec.replicas}",
        ])
        .await?;
    assert_eq!(replicas, "2");
    let after = k.run(&["diff", "-f", &manifest]).await?;
    assert_eq!(after.code, 0, "{after:?}");

    // An unknown field is refused by strict field validation, naming it: on a
    // create and on a patch of an existing object.
    let bad = write_app(dir.path(), "bad.yaml", "bad", 1)?;
    let text = std::fs::read_to_string(&bad)?.replacen(
        "  replicas: 1\n",
        "  replicas: 1\n  bogusField: 1\n",
        1,
    );
    std::fs::write(&bad, text)?;
    let refused = k.run(&["apply", "-f", &bad]).await?;
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains(r#"strict decoding error: unknown field "spec.bogusField""#),
        "{refused:?}"
    );
    assert!(
        refused.stderr.contains("error when creating"),
        "{refused:?}"
    );
    let missing = k.run(&["get", "deployment", "bad"]).await?;
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(
        missing
            .stderr
            .contains(r#"deployments.apps "bad" not found"#),
        "{missing:?}"
    );
    let text = std::fs::read_to_string(&manifest)?.replacen(
        "  replicas: 2\n",
        "  replicas: 2\n  bogusField: 1\n",
        1,
    );
    let bad_patch = dir.path().join("bad-patch.yaml");
    std::fs::write(&bad_patch, text)?;
    let refused = k
        .run(&["apply", "-f", &bad_patch.to_string_lossy()])
        .await?;
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains(r#"strict decoding error: unknown field "spec.bogusField""#),
        "{refused:?}"
    );

    // explain reads the OpenAPI v3 document.
    let out = k.ok(&["explain", "deployment.spec.replicas"]).await?;
    assert!(out.contains("KIND:       Deployment"), "{out}");
    assert!(out.contains("VERSION:    v1"), "{out}");
    assert!(out.contains("FIELD: replicas <integer>"), "{out}");
    assert!(out.contains("Number of desired pods"), "{out}");

    // delete -f, then wait --for=delete.
    let out = k.ok(&["delete", "-f", &manifest, "--wait=false"]).await?;
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            r#"deployment.apps "app" deleted"#,
            r#"service "app" deleted"#
        ]
    );
    let waited = k
        .run(&["wait", "--for=delete", "deployment/app", "--timeout=60s"])
        .await?;
    assert_eq!(waited.code, 0, "{waited:?}");
    let gone = k.run(&["get", "deployment,service", "app"]).await?;
    assert_eq!(gone.code, 1, "{gone:?}");
    assert!(gone.stderr.contains("NotFound"), "{gone:?}");
    let out = k.ok(&["delete", "namespace", &extra]).await?;
    assert_eq!(out.trim(), format!(r#"namespace "{extra}" deleted"#));
    Ok(())
}

#[tokio::test]
async fn kubectl_get_prints_wide_tables_yaml_json_jsonpath_and_watches() -> anyhow::Result<()> {
    let c = DockerCluster::start("kubectl-get", 2).await?;
    let k = Kubectl::new(&c)?;
    let dir = tempfile::tempdir()?;
    let manifest = write_app(dir.path(), "app.yaml", "app", 2)?;
    k.ok(&["apply", "-f", &manifest]).await?;
    k.wait_available("app").await?;
    let pods = k.pods_of("app").await?;
    assert_eq!(pods.len(), 2, "{pods:?}");

    // Server-side printing: the columns Kubernetes prints, filled in.
    let out = k.ok(&["get", "deploy,po,rs,svc,no", "-o", "wide"]).await?;
    let tables = Table::all(&out);
    let deploys = Table::of(&tables, "deployment.apps/")?;
    assert_eq!(
        deploys.header,
        strings(&[
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]),
        "{out}"
    );
    let d = "deployment.apps/app";
    assert_eq!(deploys.cell(d, "READY")?, "2/2", "{out}");
    assert_eq!(deploys.cell(d, "UP-TO-DATE")?, "2", "{out}");
    assert_eq!(deploys.cell(d, "AVAILABLE")?, "2", "{out}");
    assert_eq!(deploys.cell(d, "CONTAINERS")?, "web", "{out}");
    assert_eq!(deploys.cell(d, "IMAGES")?, "tugboat/sample:latest", "{out}");
    assert_eq!(deploys.cell(d, "SELECTOR")?, "app=app", "{out}");

    let po = Table::of(&tables, "pod/")?;
    assert_eq!(
        po.header,
        strings(&[
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES"
        ]),
        "{out}"
    );
    for pod in &pods {
        let row = format!("pod/{pod}");
        assert_eq!(po.cell(&row, "READY")?, "1/1", "{out}");
        assert_eq!(po.cell(&row, "STATUS")?, "Running", "{out}");
        assert_eq!(po.cell(&row, "RESTARTS")?, "0", "{out}");
        let ip: std::net::IpAddr = po.cell(&row, "IP")?.parse()?;
        assert!(ip.is_ipv4(), "{out}");
        assert!(
            c.nodes
                .iter()
                .any(|n| n == po.cell(&row, "NODE").unwrap_or("")),
            "{out}"
        );
    }

    let rs = Table::of(&tables, "replicaset.apps/")?;
    assert_eq!(
        rs.header,
        strings(&[
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]),
        "{out}"
    );
    assert_eq!(rs.rows.len(), 1, "{out}");
    assert_eq!(rs.rows[0][rs.column("DESIRED")?], "2", "{out}");
    assert_eq!(rs.rows[0][rs.column("READY")?], "2", "{out}");

    let svc = Table::of(&tables, "service/")?;
    assert_eq!(
        svc.header,
        strings(&[
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
            "SELECTOR"
        ]),
        "{out}"
    );
    assert_eq!(svc.cell("service/app", "TYPE")?, "ClusterIP", "{out}");
    let cluster_ip: std::net::IpAddr = svc.cell("service/app", "CLUSTER-IP")?.parse()?;
    assert!(cluster_ip.is_ipv4(), "{out}");
    assert_eq!(svc.cell("service/app", "PORT(S)")?, "80/TCP", "{out}");
    assert_eq!(svc.cell("service/app", "SELECTOR")?, "app=app", "{out}");

    let no = Table::of(&tables, "node/")?;
    assert_eq!(
        no.header,
        strings(&[
            "NAME",
            "STATUS",
            "ROLES",
            "AGE",
            "VERSION",
            "INTERNAL-IP",
            "EXTERNAL-IP",
            "OS-IMAGE",
            "KERNEL-VERSION",
            "CONTAINER-RUNTIME"
        ]),
        "{out}"
    );
    for node in &c.nodes {
        let row = format!("node/{node}");
        assert_eq!(no.cell(&row, "STATUS")?, "Ready", "{out}");
        let ip: std::net::IpAddr = no.cell(&row, "INTERNAL-IP")?.parse()?;
        assert!(ip.is_ipv4(), "{out}");
        assert!(
            no.cell(&row, "CONTAINER-RUNTIME")?.starts_with("docker://"),
            "{out}"
        );
    }

    // -o yaml, json, jsonpath, name.
    let yaml = k.ok(&["get", "deployment", "app", "-o", "yaml"]).await?;
    for line in [
        "apiVersion: apps/v1",
        "kind: Deployment",
        "  name: app",
        "  replicas: 2",
        "  readyReplicas: 2",
    ] {
        assert!(yaml.lines().any(|l| l == line), "no {line:?} in\n{yaml}");
    }
    let json: Value =
        serde_json::from_str(&k.ok(&["get", "deployment", "app", "-o", "json"]).await?)?;
    assert_eq!(json["kind"], "Deployment");
    assert_eq!(json["metadata"]["namespace"], c.namespace.as_str());
    assert_eq!(json["spec"]["replicas"], 2);
    assert_eq!(json["status"]["availableReplicas"], 2);
    let list: Value = serde_json::from_str(
        &k.ok(&["get", "pods", "-l", "app=app", "-o", "json"])
            .await?,
    )?;
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2), "{list}");
    let images = k
        .ok(&[
            "get",
            "pods",
            "-l",
            "app=app",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name}={.spec.containers[0].image}{"\n"}{end}"#,
        ])
        .await?;
    let want: Vec<String> = pods
        .iter()
        .map(|p| format!("{p}=tugboat/sample:latest"))
        .collect();
    let mut got: Vec<String> = images.lines().map(str::to_string).collect();
    got.sort();
    assert_eq!(got, want);
    let names = k.ok(&["get", "deploy,svc", "-o", "name"]).await?;
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        ["deployment.apps/app", "service/app"]
    );

    // get -w: the table, then the rows as the Deployment changes.
    let mut watch = k.spawn(&["get", "deployment", "app", "-w"])?;
    watch
        .line("the header", |l| {
            l.starts_with("NAME") && l.contains("UP-TO-DATE")
        })
        .await?;
    watch
        .line("app at 2/2", |l| {
            l.split_whitespace().take(2).eq(["app", "2/2"])
        })
        .await?;
    let out = k.ok(&["scale", "deployment/app", "--replicas=3"]).await?;
    assert_eq!(out.trim(), "deployment.apps/app scaled");
    watch
        .line("app at 3/3", |l| {
            l.split_whitespace().take(2).eq(["app", "3/3"])
        })
        .await?;
    watch.kill().await?;
    Ok(())
}

#[tokio::test]
async fn kubectl_scales_rolls_out_undoes_describes_and_waits() -> anyhow::Result<()> {
    busybox_image().await?;
    let c = DockerCluster::start("kubectl-rollout", 1).await?;
    let k = Kubectl::new(&c)?;
    let dir = tempfile::tempdir()?;
    let manifest = write_app(dir.path(), "app.yaml", "app", 1)?;
    k.ok(&["apply", "-f", &manifest]).await?;

    let out = k.ok(&["scale", "deployment/app", "--replicas=2"]).await?;
    assert_eq!(out.trim(), "deployment.apps/app scaled");
    let out = k
        .ok(&["rollout", "status", "deployment/app", "--timeout=60s"])
        .await?;
    assert!(
        out.trim_end()
            .ends_with(r#"deployment "app" successfully rolled out"#),
        "{out}"
    );
    let ready = k
        .ok(&[
            "get",
            "deployment",
            "app",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ])
        .await?;
    assert_eq!(ready, "2");

    // A new revision, then back to the first.
    let out = k
        .ok(&[
            "set",
            "image",
            "deployment/app",
            &format!("web={BUSYBOX_IMAGE}"),
        ])
        .await?;
    assert_eq!(out.trim(), "deployment.apps/app image updated");
    let out = k
        .ok(&["rollout", "status", "deployment/app", "--timeout=60s"])
        .await?;
    assert!(out.contains("successfully rolled out"), "{out}");
    let history = k.ok(&["rollout", "history", "deployment/app"]).await?;
    assert_eq!(revisions(&history), ["1", "2"], "{history}");
    let second = k
        .ok(&["rollout", "history", "deployment/app", "--revision=2"])
        .await?;
    assert!(second.contains(BUSYBOX_IMAGE), "{second}");
    let out = k.ok(&["rollout", "undo", "deployment/app"]).await?;
    assert_eq!(out.trim(), "deployment.apps/app rolled back");
    let out = k
        .ok(&["rollout", "status", "deployment/app", "--timeout=60s"])
        .await?;
    assert!(out.contains("successfully rolled out"), "{out}");
    let image = k
        .ok(&[
            "get",
            "deployment",
            "app",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .await?;
    assert_eq!(image, "tugboat/sample:latest");
    let history = k.ok(&["rollout", "history", "deployment/app"]).await?;
    assert_eq!(revisions(&history), ["2", "3"], "{history}");
    k.wait_available("app").await?;

    // describe: the Deployment, its ReplicaSets and its events.
    let out = k.ok(&["describe", "deployment", "app"]).await?;
    let field = |name: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or("")
            .trim()
            .to_string()
    };
    assert_eq!(field("Name:"), "app", "{out}");
    assert_eq!(field("Namespace:"), c.namespace, "{out}");
    assert_eq!(field("Selector:"), "app=app", "{out}");
    assert!(
        field("Replicas:").starts_with("2 desired | 2 updated | 2 total | 2 available"),
        "{out}"
    );
    assert!(field("OldReplicaSets:").starts_with("app-"), "{out}");
    assert!(
        field("NewReplicaSet:").starts_with("app-")
            && field("NewReplicaSet:").ends_with("(2/2 replicas created)"),
        "{out}"
    );
    assert!(
        out.lines()
            .map(str::trim)
            .any(|l| l.starts_with("Image:") && l.ends_with(" tugboat/sample:latest")),
        "{out}"
    );
    let events = out
        .split_once("\nEvents:")
        .map(|(_, e)| e)
        .ok_or_else(|| anyhow::anyhow!("no Events section in\n{out}"))?;
    assert!(events.contains("ScalingReplicaSet"), "{out}");
    assert!(events.contains("deployment-controller"), "{out}");

    // wait --for=delete: the Deployment, then its pods.
    let out = k
        .ok(&["delete", "deployment", "app", "--wait=false"])
        .await?;
    assert_eq!(out.trim(), r#"deployment.apps "app" deleted"#);
    let waited = k
        .run(&["wait", "--for=delete", "deployment/app", "--timeout=60s"])
        .await?;
    assert_eq!(waited.code, 0, "{waited:?}");
    let waited = k
        .run(&[
            "wait",
            "--for=delete",
            "pods",
            "-l",
            "app=app",
            "--timeout=60s",
        ])
        .await?;
    assert_eq!(waited.code, 0, "{waited:?}");
    let left = k
        .ok(&["get", "pods", "-l", "app=app", "-o", "name"])
        .await?;
    assert_eq!(left, "");
    Ok(())
}

/// The revision numbers of `kubectl rollout history`'s table.
fn revisions(history: &str) -> Vec<String> {
    history
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn kubectl_logs_execs_and_copies() -> anyhow::Result<()> {
    busybox_image().await?;
    let c = DockerCluster::start("kubectl-exec", 1).await?;
    let k = Kubectl::new(&c)?;
    let dir = tempfile::tempdir()?;

    // logs, --tail, -f: a pod printing a numbered line every 200 ms.
    k.run_busybox(
        "logger",
        &[
            "sh",
            "-c",
            "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done",
        ],
    )
    .await?;
    let numbers = |text: &str| -> Vec<u64> {
        text.lines()
            .filter_map(|l| l.strip_prefix("line ")?.parse().ok())
            .collect()
    };
    let printed = eventually("the logger printed 5 lines", || async {
        let out = k.ok(&["logs", "logger"]).await.ok()?;
        (numbers(&out).len() >= 5).then_some(out)
    })
    .await?;
    let all = numbers(&printed);
    assert_eq!(all, (0..all.len() as u64).collect::<Vec<_>>(), "{printed}");
    let tail = k.ok(&["logs", "logger", "--tail=2"]).await?;
    let last = numbers(&tail);
    assert_eq!(tail.lines().count(), 2, "{tail}");
    assert_eq!(last.len(), 2, "{tail}");
    assert_eq!(last[1], last[0] + 1, "{tail}");
    assert!(last[1] >= all[all.len() - 1], "{tail} after {printed}");
    let mut follow = k.spawn(&["logs", "-f", "logger", "--tail=1"])?;
    let beyond = last[1] + 3;
    follow
        .line(&format!("line {beyond} (written after it started)"), |l| {
            l == format!("line {beyond}")
        })
        .await?;
    follow.kill().await?;

    // logs deployment/NAME: one of its pods.
    let manifest = write_app(dir.path(), "app.yaml", "app", 1)?;
    k.ok(&["apply", "-f", &manifest]).await?;
    k.wait_available("app").await?;
    let logs = eventually("the sample logged its start", || async {
        let out = k.ok(&["logs", "deployment/app"]).await.ok()?;
        out.contains("tug-sample listening on").then_some(out)
    })
    .await?;
    assert!(logs.contains("0.0.0.0:8080"), "{logs}");

    // exec: output, stderr, stdin, exit codes.
    k.run_busybox("bb", &[]).await?;
    let out = k
        .run(&["exec", "bb", "--", "echo", "hello from", "busybox"])
        .await?;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "hello from busybox\n"),
        "{out:?}"
    );
    let out = k
        .run(&[
            "exec",
            "bb",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ])
        .await?;
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(out.stdout, "out\n", "{out:?}");
    assert!(out.stderr.starts_with("err\n"), "{out:?}");
    assert!(
        out.stderr.contains("command terminated with exit code 3"),
        "{out:?}"
    );
    let out = k
        .run_with_stdin(
            &[
                "exec",
                "-i",
                "bb",
                "--",
                "sh",
                "-c",
                "wc -l; cat /etc/hostname",
            ],
            b"a\nb\nc\n",
        )
        .await?;
    assert_eq!((out.code, out.stdout.as_str()), (0, "3\nbb\n"), "{out:?}");
    let out = k.run(&["exec", "bb", "--", "no-such-command"]).await?;
    assert_ne!(out.code, 0, "{out:?}");

    // cp both ways, a file large enough to span many frames.
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let up = dir.path().join("up.bin");
    std::fs::write(&up, &payload)?;
    let out = k
        .run(&["cp", &up.to_string_lossy(), "bb:/tmp/up.bin"])
        .await?;
    assert_eq!(out.code, 0, "{out:?}");
    let size = k
        .ok(&["exec", "bb", "--", "wc", "-c", "/tmp/up.bin"])
        .await?;
    assert_eq!(size.split_whitespace().next(), Some("300000"), "{size}");
    let down = dir.path().join("down.bin");
    let out = k
        .run(&["cp", "bb:/tmp/up.bin", &down.to_string_lossy()])
        .await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(std::fs::read(&down)? == payload, "the copy back differs");
    k.ok(&[
        "exec",
        "bb",
        "--",
        "sh",
        "-c",
        "mkdir -p /tmp/made && echo made in the pod > /tmp/made/note.txt",
    ])
    .await?;
    let local = dir.path().join("made");
    let out = k
        .run(&["cp", "bb:/tmp/made", &local.to_string_lossy()])
        .await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        std::fs::read_to_string(local.join("note.txt"))?,
        "made in the pod\n"
    );
    Ok(())
}

#[tokio::test]
async fn kubectl_port_forwards_to_a_pod_and_a_service() -> anyhow::Result<()> {
    let c = DockerCluster::start("kubectl-pf", 1).await?;
    let k = Kubectl::new(&c)?;
    let dir = tempfile::tempdir()?;
    let manifest = write_app(dir.path(), "app.yaml", "app", 1)?;
    k.ok(&["apply", "-f", &manifest]).await?;
    k.wait_available("app").await?;
    let pods = k.pods_of("app").await?;
    let [pod] = pods.as_slice() else {
        anyhow::bail!("expected one pod: {pods:?}");
    };

    for (target, remote) in [(format!("pod/{pod}"), 8080), ("svc/app".to_string(), 80)] {
        let mut pf = k.spawn(&["port-forward", &target, &format!(":{remote}")])?;
        let addr = pf.forwarded(8080).await?;
        assert!(addr.ip().is_loopback(), "{addr}");
        let (status, body) = http_get(addr, "/ready").await?;
        assert_eq!((status, body.as_str()), (200, "ready"), "through {target}");
        // A second connection through the same forward: who answered.
        let (status, body) = http_get(addr, "/").await?;
        assert_eq!(status, 200, "{body}");
        let who: Value = serde_json::from_str(&body)?;
        assert_eq!(who["hostname"], pod.as_str(), "{body}");
        pf.line("kubectl's note of the connection", |l| {
            l == format!("Handling connection for {}", addr.port())
        })
        .await?;
        pf.kill().await?;
    }
    Ok(())
}

#[tokio::test]
async fn server_side_apply_creates_is_idempotent_and_conflicts() -> anyhow::Result<()> {
    let c = DockerCluster::start("kubectl-ssa", 1).await?;
    let k = Kubectl::new(&c)?;
    let dir = tempfile::tempdir()?;
    // The Deployment and the Service of APP, in files of their own.
    let split = |file: &str, replicas: u32| -> anyhow::Result<(String, String)> {
        let both = std::fs::read_to_string(write_app(dir.path(), file, "app", replicas)?)?;
        let (deployment, service) = both
            .split_once("---\n")
            .ok_or_else(|| anyhow::anyhow!("APP has two documents"))?;
        let paths = [("deployment", deployment), ("service", service)].map(|(kind, text)| {
            let path = dir.path().join(format!("{kind}-{file}"));
            std::fs::write(&path, text).map(|_| path.to_string_lossy().into_owned())
        });
        let [d, s] = paths;
        Ok((d?, s?))
    };
    let (deployment, service) = split("app.yaml", 1)?;
    let managers = || async {
        let out = k
            .ok(&[
                "get",
                "deployment",
                "app",
                "-o",
                r#"jsonpath={range .metadata.managedFields[*]}{.manager}/{.operation}{"\n"}{end}"#,
            ])
            .await?;
        anyhow::Ok(out.lines().map(str::to_string).collect::<BTreeSet<_>>())
    };

    let out = k.ok(&["apply", "--server-side", "-f", &deployment]).await?;
    assert_eq!(out.trim(), "deployment.apps/app serverside-applied");
    assert!(managers().await?.contains("kubectl/Apply"));

    // The same configuration again changes nothing: not the generation, the
    // spec, nor the appliers' entries (status is the controllers' to write).
    let state = || async {
        let json = k
            .ok(&[
                "get",
                "deployment",
                "app",
                "-o",
                "json",
                "--show-managed-fields",
            ])
            .await?;
        let d: Value = serde_json::from_str(&json)?;
        let applied: Vec<Value> = d["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["operation"] == "Apply")
            .cloned()
            .collect();
        anyhow::Ok(serde_json::json!({
            "generation": d["metadata"]["generation"],
            "spec": d["spec"],
            "applied": applied,
        }))
    };
    let before = state().await?;
    assert_eq!(
        before["applied"].as_array().map(Vec::len),
        Some(1),
        "kubectl's Apply entry: {before}"
    );
    let out = k.ok(&["apply", "--server-side", "-f", &deployment]).await?;
    assert_eq!(out.trim(), "deployment.apps/app serverside-applied");
    let after = state().await?;
    // The spec first: what changed there is why the generation moved.
    let change = difference(&before["spec"], &after["spec"], "/spec".into())
        .or_else(|| difference(&before, &after, String::new()));
    if let Some(change) = change {
        panic!("a no-op server-side apply changed the Deployment: {change}");
    }

    // A second manager setting a field kubectl owns to another value conflicts…
    let (other, _) = split("other.yaml", 3)?;
    let refused = k
        .run(&[
            "apply",
            "--server-side",
            "--field-manager=other",
            "-f",
            &other,
        ])
        .await?;
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(
        refused.stderr.contains(r#"conflict with "kubectl""#)
            && refused.stderr.contains(".spec.replicas"),
        "{refused:?}"
    );
    assert!(refused.stderr.contains("--force-conflicts"), "{refused:?}");
    let replicas = k
        .ok(&[
            "get",
            "deployment",
            "app",
            "-o",
            "jsonpath={.spec.replicas}",
        ])
        .await?;
    assert_eq!(replicas, "1");

    // …and takes it over with --force-conflicts.
    let out = k
        .ok(&[
            "apply",
            "--server-side",
            "--field-manager=other",
            "--force-conflicts",
            "-f",
            &other,
        ])
        .await?;
    assert_eq!(out.trim(), "deployment.apps/app serverside-applied");
    let replicas = k
        .ok(&[
            "get",
            "deployment",
            "app",
            "-o",
            "jsonpath={.spec.replicas}",
        ])
        .await?;
    assert_eq!(replicas, "3");
    assert!(managers().await?.contains("other/Apply"));

    // A Service: created with its one port, then left as it is (no controller
    // writes to a ClusterIP Service, so its resource version must not move).
    let out = k.ok(&["apply", "--server-side", "-f", &service]).await?;
    assert_eq!(out.trim(), "service/app serverside-applied");
    let svc = || async {
        k.ok(&[
            "get",
            "service",
            "app",
            "-o",
            "jsonpath={.metadata.resourceVersion} {.spec.ports[*].port}:{.spec.ports[*].targetPort}",
        ])
        .await
    };
    let first = svc().await?;
    assert!(first.ends_with(" 80:8080"), "{first}");
    let out = k.ok(&["apply", "--server-side", "-f", &service]).await?;
    assert_eq!(out.trim(), "service/app serverside-applied");
    assert_eq!(svc().await?, first);
    Ok(())
}

/// The first place where `a` and `b` differ, as `PATH: A -> B`.
fn difference(a: &Value, b: &Value, path: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                difference(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    format!("{path}/{k}"),
                )
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (x, y))| difference(x, y, format!("{path}/{i}"))),
        _ => (a != b).then(|| format!("{path}: {a} -> {b}")),
    }
}

#[tokio::test]
async fn tug_and_kubectl_print_the_same_wide_columns() -> anyhow::Result<()> {
    let c = DockerCluster::start("kubectl-tugget", 2).await?;
    let k = Kubectl::new(&c)?;
    let dir = tempfile::tempdir()?;
    let manifest = write_app(dir.path(), "app.yaml", "app", 2)?;
    k.ok(&["apply", "-f", &manifest]).await?;
    k.wait_available("app").await?;

    let args = ["get", "deploy,po", "-o", "wide"];
    let theirs = k.ok(&args).await?;
    let ours = tug(
        &c.controller.url,
        dir.path(),
        &["-n", &c.namespace, "get", "deploy,po", "-o", "wide"],
    )
    .await?;
    let (theirs_t, ours_t) = (Table::all(&theirs), Table::all(&ours));
    for prefix in ["deployment.apps/", "pod/"] {
        let (a, b) = (Table::of(&theirs_t, prefix)?, Table::of(&ours_t, prefix)?);
        assert_eq!(a.header, b.header, "kubectl:\n{theirs}\ntug:\n{ours}");
        let key = |t: &Table| -> anyhow::Result<BTreeSet<(String, String)>> {
            let ready = t.column("READY")?;
            Ok(t.rows
                .iter()
                .map(|r| (r[0].clone(), r[ready].clone()))
                .collect())
        };
        assert_eq!(key(a)?, key(b)?, "kubectl:\n{theirs}\ntug:\n{ours}");
        for column in ["IMAGES", "SELECTOR", "STATUS", "NODE"] {
            if let Ok(i) = a.column(column) {
                let cells =
                    |t: &Table| t.rows.iter().map(|r| r[i].clone()).collect::<BTreeSet<_>>();
                assert_eq!(
                    cells(a),
                    cells(b),
                    "{column}: kubectl:\n{theirs}\ntug:\n{ours}"
                );
            }
        }
    }
    Ok(())
}

/// `tug ARGS` as its own process, with this cluster's kubeconfig and namespace.
fn tug_command(c: &DockerCluster, args: &[&str]) -> anyhow::Result<tokio::process::Command> {
    let mut cmd = tokio::process::Command::new(tug_binary()?);
    cmd.arg("--server")
        .arg(&c.controller.url)
        .arg("--kubeconfig")
        .arg(c.controller.kubeconfig())
        .arg("--config")
        .arg(c.config_dir().join("tug-cli.json"))
        .args(["-n", &c.namespace])
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("TUG_SERVER");
    Ok(cmd)
}

#[tokio::test]
async fn tug_execs_port_forwards_and_copies() -> anyhow::Result<()> {
    busybox_image().await?;
    let c = DockerCluster::start("tug-exec", 1).await?;
    let k = Kubectl::new(&c)?;
    let dir = tempfile::tempdir()?;
    let manifest = write_app(dir.path(), "app.yaml", "app", 1)?;
    k.ok(&["apply", "-f", &manifest]).await?;
    k.run_busybox("bb", &[]).await?;

    // exec: output and the command's exit code as tug's own.
    let out = run(
        tug_command(
            &c,
            &[
                "exec",
                "bb",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 4",
            ],
        )?,
        "tug exec",
        b"",
    )
    .await?;
    assert_eq!(out.code, 4, "{out:?}");
    assert_eq!(out.stdout, "out\n", "{out:?}");
    assert!(out.stderr.contains("err"), "{out:?}");
    let out = run(
        tug_command(&c, &["exec", "-i", "bb", "--", "cat"])?,
        "tug exec -i",
        b"through stdin\n",
    )
    .await?;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "through stdin\n"),
        "{out:?}"
    );

    // cp both ways.
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 253) as u8).collect();
    let up = dir.path().join("up.bin");
    std::fs::write(&up, &payload)?;
    run(
        tug_command(&c, &["cp", &up.to_string_lossy(), "bb:/tmp/up.bin"])?,
        "tug cp up",
        b"",
    )
    .await?
    .ok("tug cp up")?;
    let size = k
        .ok(&["exec", "bb", "--", "wc", "-c", "/tmp/up.bin"])
        .await?;
    assert_eq!(size.split_whitespace().next(), Some("200000"), "{size}");
    let down = dir.path().join("down.bin");
    run(
        tug_command(&c, &["cp", "bb:/tmp/up.bin", &down.to_string_lossy()])?,
        "tug cp down",
        b"",
    )
    .await?
    .ok("tug cp down")?;
    assert!(std::fs::read(&down)? == payload, "the copy back differs");

    // port-forward to a Deployment's pod.
    k.wait_available("app").await?;
    let mut pf = Background::spawn(
        tug_command(&c, &["port-forward", "deploy/app", ":8080"])?,
        "tug port-forward",
    )?;
    let addr = pf.forwarded(8080).await?;
    let (status, body) = http_get(addr, "/ready").await?;
    assert_eq!((status, body.as_str()), (200, "ready"));
    let pods = k.pods_of("app").await?;
    let (_, body) = http_get(addr, "/").await?;
    let who: Value = serde_json::from_str(&body)?;
    assert_eq!(
        Some(who["hostname"].as_str().unwrap_or("")),
        pods.first().map(String::as_str)
    );
    pf.kill().await?;
    Ok(())
}
