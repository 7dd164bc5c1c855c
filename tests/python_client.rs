//! The official Python client (`kubernetes` from PyPI) against Tugboat on the real
//! Docker engine: small scripts, each run with a time limit against a controller
//! with Docker agents, create, list, watch, patch and delete a Deployment, keep an
//! informer in sync, exec and port-forward into pods, and create objects from a
//! multi-document YAML file. The scripts assert as they go and print what they
//! saw; the tests assert on those lines.
//!
//! The client lives in a virtualenv made once (in the temp directory, under a
//! lock, reused by later runs while it holds the pinned version). Making it needs
//! PyPI; without it the tests fail and say so.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tugboat_tests::docker::{BUSYBOX_IMAGE, DockerCluster, busybox_image};

/// The pinned version of the `kubernetes` package.
const KUBERNETES: &str = "37.0.2";

/// How long one script may run.
const SCRIPT_LIMIT: Duration = Duration::from_secs(120);

/// Runs `cmd` with a time limit; fails with what it printed unless it exits 0.
async fn output(
    mut cmd: tokio::process::Command,
    what: &str,
    limit: Duration,
) -> anyhow::Result<String> {
    cmd.kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .map_err(|_| anyhow::anyhow!("{what} did not finish within {limit:?}"))?
        .map_err(|e| anyhow::anyhow!("cannot run {what}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "{what} failed ({})\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

/// The virtualenv's python with `kubernetes==KUBERNETES` installed, made once per
/// process. Test binaries running at once wait for each other on a lock file.
async fn python() -> anyhow::Result<PathBuf> {
    static PYTHON: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    PYTHON.get_or_try_init(make_venv).await.cloned()
}

async fn make_venv() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("tugboat-pyclient-kubernetes-{KUBERNETES}"));
    let _lock = lock(&PathBuf::from(format!("{}.lock", dir.display()))).await?;
    let python = dir.join("bin").join("python");
    let check = || {
        let mut cmd = tokio::process::Command::new(&python);
        cmd.args(["-c", "import kubernetes; print(kubernetes.__version__)"]);
        output(cmd, "importing kubernetes", Duration::from_secs(60))
    };
    if check().await.is_ok_and(|v| v.trim() == KUBERNETES) {
        return Ok(python);
    }
    // Absent, or half made by a run that was stopped: start again.
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let mut venv = tokio::process::Command::new("python3");
    venv.args(["-m", "venv"]).arg(&dir);
    output(venv, "python3 -m venv", Duration::from_secs(120))
        .await
        .map_err(|e| {
            anyhow::anyhow!("{e}\n(the Python client tests need python3 with venv: Debian's python3-venv; .ci/run installs it)")
        })?;
    let mut pip = tokio::process::Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--timeout",
        "30",
        &format!("kubernetes=={KUBERNETES}"),
    ]);
    if let Err(e) = output(pip, "pip install", Duration::from_secs(600)).await {
        let _ = std::fs::remove_dir_all(&dir);
        anyhow::bail!(
            "could not install the Python client kubernetes=={KUBERNETES} from PyPI \
             (the Python client tests need network access to PyPI): {e}"
        );
    }
    let version = check().await?;
    anyhow::ensure!(
        version.trim() == KUBERNETES,
        "pip installed kubernetes {version}, not {KUBERNETES}"
    );
    Ok(python)
}

/// An exclusive lock on `path` (flock), waited for at most 10 minutes: held by
/// another test binary making the same virtualenv.
async fn lock(path: &Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let limit = Duration::from_secs(600);
    let deadline = Instant::now() + limit;
    loop {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err((_, e)) => anyhow::bail!("cannot lock {} within {limit:?}: {e}", path.display()),
        }
    }
}

/// What every script starts with: the client configured from the cluster's admin
/// kubeconfig, the test's namespace, and `until`, a poll with a time limit.
const PRELUDE: &str = r#"
import os, sys, threading, time
from kubernetes import client, config, watch

config.load_kube_config(config_file=os.environ["KUBECONFIG"])
NS = os.environ["NS"]
core = client.CoreV1Api()
apps = client.AppsV1Api()


def until(what, check, timeout=45):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting until %s" % (timeout, what))
        time.sleep(0.2)


def deployment(name, replicas, labels=None):
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{
                        "name": "web",
                        "image": "tugboat/sample:latest",
                        "imagePullPolicy": "IfNotPresent",
                        "ports": [{"containerPort": 8080}],
                    }],
                },
            },
        },
    }


def running(selector, n):
    pods = core.list_namespaced_pod(NS, label_selector=selector).items
    live = [p for p in pods if p.metadata.deletion_timestamp is None]
    ready = [
        p for p in live
        if p.status.phase == "Running"
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]
    return len(live) == n and len(ready) == n
"#;

/// Runs `script` (after [`PRELUDE`]) with `python` against the cluster; returns
/// what it printed.
async fn run_script(
    python: &Path,
    c: &DockerCluster,
    name: &str,
    script: &str,
) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    // Not `NAME.py`: a script named like a module (`yaml.py`) would shadow it.
    let path = dir.path().join(format!("script_{name}.py"));
    std::fs::write(&path, format!("{PRELUDE}\n{script}"))?;
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg("-u")
        .arg(&path)
        .current_dir(dir.path())
        .env("KUBECONFIG", c.controller.kubeconfig())
        .env("NS", &c.namespace)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    output(cmd, &format!("the Python script {name}"), SCRIPT_LIMIT).await
}

/// The line of `out` that starts with `prefix`, without it.
fn line<'a>(out: &'a str, prefix: &str) -> anyhow::Result<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .ok_or_else(|| anyhow::anyhow!("no line {prefix:?} in\n{out}"))
}

#[tokio::test]
async fn python_client_creates_lists_watches_patches_and_deletes_a_deployment() -> anyhow::Result<()>
{
    // The client first: without PyPI, fail before starting a cluster.
    let python = python().await?;
    let c = DockerCluster::start("py-crud", 1).await?;
    let out = run_script(
        &python,
        &c,
        "crud",
        r#"
rv = apps.list_namespaced_deployment(NS).metadata.resource_version
events = []
done = threading.Event()


def watcher():
    w = watch.Watch()
    stream = w.stream(apps.list_namespaced_deployment, NS, resource_version=rv,
                      timeout_seconds=60, _request_timeout=90)
    for ev in stream:
        obj = ev["object"]
        if obj.metadata.name != "web":
            continue
        events.append((ev["type"], obj.spec.replicas, obj.metadata.labels or {}))
        if ev["type"] == "DELETED":
            w.stop()
    done.set()


threading.Thread(target=watcher, daemon=True).start()

created = apps.create_namespaced_deployment(NS, deployment("web", 1))
print("created", created.metadata.name, created.metadata.generation)
got = apps.read_namespaced_deployment("web", NS)
assert got.spec.replicas == 1 and got.spec.template.spec.containers[0].image == "tugboat/sample:latest"
listed = apps.list_namespaced_deployment(NS, label_selector="tier=front")
print("before labelling", len(listed.items))
until("one pod runs", lambda: running("app=web", 1))

# A strategic merge patch (a dict), then a JSON patch (a list).
patched = apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"tier": "front"}}})
print("labelled", patched.metadata.labels["tier"])
listed = apps.list_namespaced_deployment(NS, label_selector="tier=front")
print("listed", " ".join(d.metadata.name for d in listed.items))
patched = apps.patch_namespaced_deployment(
    "web", NS, [{"op": "replace", "path": "/spec/replicas", "value": 2}])
print("patched", patched.spec.replicas, patched.metadata.generation)
print("scale", apps.read_namespaced_deployment_scale("web", NS).spec.replicas)
until("two pods run", lambda: running("app=web", 2))

apps.delete_namespaced_deployment("web", NS)
assert done.wait(60), "the watch never saw DELETED: %r" % events
until("the pods are gone", lambda: not core.list_namespaced_pod(NS, label_selector="app=web").items)
try:
    apps.read_namespaced_deployment("web", NS)
    raise AssertionError("still there")
except client.exceptions.ApiException as e:
    print("read after delete", e.status)

types = [t for t, _, _ in events]
print("watched", " ".join(dict.fromkeys(types)))
assert types[0] == "ADDED" and types[-1] == "DELETED", types
assert any(t == "MODIFIED" and r == 2 for t, r, _ in events), events
assert any(t == "MODIFIED" and labels.get("tier") == "front" for t, _, labels in events), events
print("ok")
"#,
    )
    .await?;
    assert_eq!(line(&out, "created ")?, "web 1", "{out}");
    assert_eq!(line(&out, "before labelling ")?, "0", "{out}");
    assert_eq!(line(&out, "labelled ")?, "front", "{out}");
    assert_eq!(line(&out, "listed ")?, "web", "{out}");
    assert_eq!(line(&out, "patched ")?, "2 2", "{out}");
    assert_eq!(line(&out, "scale ")?, "2", "{out}");
    assert_eq!(line(&out, "read after delete ")?, "404", "{out}");
    assert_eq!(line(&out, "watched ")?, "ADDED MODIFIED DELETED", "{out}");
    assert!(out.ends_with("ok\n"), "{out}");
    Ok(())
}

#[tokio::test]
async fn python_informer_stays_in_sync_through_creates_updates_and_deletes() -> anyhow::Result<()> {
    // The client first: without PyPI, fail before starting a cluster.
    let python = python().await?;
    let c = DockerCluster::start("py-informer", 1).await?;
    let out = run_script(
        &python,
        &c,
        "informer",
        r#"
SELECTOR = "set=informer"
seen = {"ADDED": 0, "MODIFIED": 0, "DELETED": 0}

try:
    from kubernetes.informer import SharedInformer
except ImportError:
    SharedInformer = None


class ListWatch:
    """List, then watch from the list's version; list again when the watch ends
    with an error (410 Gone among them)."""

    def __init__(self):
        self.items = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def start(self):
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while not self.stopped.is_set():
            listed = apps.list_namespaced_deployment(NS, label_selector=SELECTOR)
            with self.lock:
                self.items = {d.metadata.name: d for d in listed.items}
            rv = listed.metadata.resource_version
            try:
                w = watch.Watch()
                for ev in w.stream(apps.list_namespaced_deployment, NS, label_selector=SELECTOR,
                                   resource_version=rv, timeout_seconds=5):
                    obj = ev["object"]
                    seen[ev["type"]] = seen.get(ev["type"], 0) + 1
                    with self.lock:
                        if ev["type"] == "DELETED":
                            self.items.pop(obj.metadata.name, None)
                        elif ev["type"] in ("ADDED", "MODIFIED"):
                            self.items[obj.metadata.name] = obj
            except Exception:  # an expired version (410), a dropped connection
                time.sleep(0.2)

    def names(self):
        with self.lock:
            return sorted(self.items)

    def get(self, name):
        with self.lock:
            return self.items.get(name)

    def stop(self):
        self.stopped.set()


if SharedInformer is not None:
    inf = SharedInformer(apps.list_namespaced_deployment, namespace=NS,
                         label_selector=SELECTOR, resync_period=5)
    for kind in ("ADDED", "MODIFIED", "DELETED"):
        inf.add_event_handler(kind, lambda obj, kind=kind: seen.__setitem__(kind, seen[kind] + 1))
    inf.start()
    names = lambda: sorted(o.metadata.name for o in inf.cache.list())
    cached = lambda name: next((o for o in inf.cache.list() if o.metadata.name == name), None)
    print("informer SharedInformer")
else:
    inf = ListWatch()
    inf.start()
    names = inf.names
    cached = inf.get
    print("informer list+watch")


def live():
    return sorted(d.metadata.name for d in
                  apps.list_namespaced_deployment(NS, label_selector=SELECTOR).items)


def in_sync(want):
    return names() == want and live() == want


for name in ("alpha", "beta", "gamma"):
    apps.create_namespaced_deployment(NS, deployment(name, 0, {"set": "informer"}))
until("the cache holds the three", lambda: in_sync(["alpha", "beta", "gamma"]))
print("synced", " ".join(names()))

apps.patch_namespaced_deployment("beta", NS, {"metadata": {"annotations": {"step": "2"}}})
until("the cache sees beta's update",
      lambda: ((cached("beta").metadata.annotations or {}).get("step") == "2"))
print("updated beta", cached("beta").metadata.annotations["step"])

# An object leaving the selector is gone for the cache, as a delete.
apps.patch_namespaced_deployment("gamma", NS, {"metadata": {"labels": {"set": "other"}}})
apps.delete_namespaced_deployment("alpha", NS)
until("the cache drops alpha and gamma", lambda: in_sync(["beta"]))
apps.create_namespaced_deployment(NS, deployment("delta", 0, {"set": "informer"}))
until("the cache holds beta and delta", lambda: in_sync(["beta", "delta"]))
print("synced", " ".join(names()))

# Versions match the server's: the cache is not just the right names.
for name in names():
    server = apps.read_namespaced_deployment(name, NS).metadata.resource_version
    until("%s's cached version is the server's" % name,
          lambda: cached(name).metadata.resource_version == server)
print("versions match")
assert seen["ADDED"] >= 4 and seen["DELETED"] >= 2 and seen["MODIFIED"] >= 1, seen
print("events", seen["ADDED"] >= 4, seen["MODIFIED"] >= 1, seen["DELETED"] >= 2)
inf.stop()
print("ok")
"#,
    )
    .await?;
    let kind = line(&out, "informer ")?;
    assert!(["SharedInformer", "list+watch"].contains(&kind), "{out}");
    let synced: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("synced "))
        .collect();
    assert_eq!(synced, ["alpha beta gamma", "beta delta"], "{out}");
    assert_eq!(line(&out, "updated beta ")?, "2", "{out}");
    assert!(out.contains("\nversions match\n"), "{out}");
    assert_eq!(line(&out, "events ")?, "True True True", "{out}");
    assert!(out.ends_with("ok\n"), "{out}");
    Ok(())
}

#[tokio::test]
async fn python_client_execs_and_port_forwards() -> anyhow::Result<()> {
    // The client first: without PyPI, fail before starting a cluster.
    let python = python().await?;
    busybox_image().await?;
    let c = DockerCluster::start("py-stream", 1).await?;
    let script = r#"
from kubernetes.stream import portforward, stream

BUSYBOX = "BUSYBOX_IMAGE"
core.create_namespaced_pod(NS, {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "bb", "labels": {"app": "bb"}},
    "spec": {"terminationGracePeriodSeconds": 1,
             "containers": [{"name": "bb", "image": BUSYBOX}]},
})
core.create_namespaced_pod(NS, {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {"terminationGracePeriodSeconds": 1,
             "containers": [{"name": "web", "image": "tugboat/sample:latest",
                             "imagePullPolicy": "IfNotPresent",
                             "ports": [{"containerPort": 8080}]}]},
})
until("both pods run", lambda: running("app=bb", 1) and running("app=web", 1))

# The simple form: stdout as a string.
out = stream(core.connect_get_namespaced_pod_exec, "bb", NS,
             command=["cat", "/etc/hostname"], stderr=True, stdin=False, stdout=True, tty=False)
print("hostname", out.strip())

# The streaming form: stdout, stderr and the exit code apart.
resp = stream(core.connect_get_namespaced_pod_exec, "bb", NS,
              command=["sh", "-c", "echo out; echo err >&2; exit 3"],
              stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
resp.run_forever(timeout=30)
print("stdout", repr(resp.read_stdout()))
print("stderr", repr(resp.read_stderr()))
print("returncode", resp.returncode)
resp.close()

# stdin: head exits after the first line.
resp = stream(core.connect_get_namespaced_pod_exec, "bb", NS, command=["head", "-n", "1"],
              stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False)
resp.write_stdin("first line\nsecond line\n")
resp.run_forever(timeout=30)
print("stdin echoed", repr(resp.read_stdout()), resp.returncode)
resp.close()

# port-forward: an HTTP request through the socket.
pf = portforward(core.connect_get_namespaced_pod_portforward, "web", NS, ports="8080")
sock = pf.socket(8080)
sock.settimeout(20)
sock.sendall(b"GET /ready HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
data = b""
while True:
    chunk = sock.recv(4096)
    if not chunk:
        break
    data += chunk
sock.close()
head, _, body = data.decode().partition("\r\n\r\n")
print("forwarded", head.splitlines()[0], body)
print("forward error", pf.error(8080))
pf.close()
print("ok")
"#
    .replace("BUSYBOX_IMAGE", BUSYBOX_IMAGE);
    let out = run_script(&python, &c, "stream", &script).await?;
    assert_eq!(line(&out, "hostname ")?, "bb", "{out}");
    assert_eq!(line(&out, "stdout ")?, "'out\\n'", "{out}");
    assert_eq!(line(&out, "stderr ")?, "'err\\n'", "{out}");
    assert_eq!(line(&out, "returncode ")?, "3", "{out}");
    assert_eq!(line(&out, "stdin echoed ")?, "'first line\\n' 0", "{out}");
    assert_eq!(line(&out, "forwarded ")?, "HTTP/1.1 200 OK ready", "{out}");
    assert_eq!(line(&out, "forward error ")?, "None", "{out}");
    assert!(out.ends_with("ok\n"), "{out}");
    Ok(())
}

#[tokio::test]
async fn python_create_from_yaml_creates_every_document() -> anyhow::Result<()> {
    // The client first: without PyPI, fail before starting a cluster.
    let python = python().await?;
    let c = DockerCluster::start("py-yaml", 1).await?;
    let out = run_script(
        &python,
        &c,
        "yaml",
        r#"
from kubernetes import utils

with open("app.yaml", "w") as f:
    f.write("""apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
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
  name: web
spec:
  selector: {app: web}
  ports:
    - name: http
      port: 80
      targetPort: 8080
""")

created = utils.create_from_yaml(client.ApiClient(), "app.yaml", namespace=NS)
flat = []
for item in created:
    flat.extend(item if isinstance(item, list) else [item])
print("created", " ".join("%s/%s" % (o.kind, o.metadata.name) for o in flat))

svc = core.read_namespaced_service("web", NS)
port = svc.spec.ports[0]
print("service", svc.spec.type, port.port, port.target_port, bool(svc.spec.cluster_ip))
until("two pods run", lambda: running("app=web", 2))
d = until("the deployment is available",
          lambda: (lambda d: d if d.status.available_replicas == 2 else None)(
              apps.read_namespaced_deployment("web", NS)))
print("deployment", d.status.available_replicas)

try:
    utils.create_from_yaml(client.ApiClient(), "app.yaml", namespace=NS)
    raise AssertionError("created twice")
except utils.FailToCreateError as e:
    print("again", " ".join(str(x.status) for x in e.api_exceptions))
print("ok")
"#,
    )
    .await?;
    assert_eq!(
        line(&out, "created ")?,
        "Deployment/web Service/web",
        "{out}"
    );
    assert_eq!(line(&out, "service ")?, "ClusterIP 80 8080 True", "{out}");
    assert_eq!(line(&out, "deployment ")?, "2", "{out}");
    assert_eq!(line(&out, "again ")?, "409 409", "{out}");
    assert!(out.ends_with("ok\n"), "{out}");
    Ok(())
}
