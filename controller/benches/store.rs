//! Store write throughput and latency: N concurrent writers, each creating and
//! then updating its own pod-like objects of about 2 KB, on a redb file in a
//! temporary directory (so every write is fsync'd as in production), and, built
//! with `--features etcd`, on a real etcd of one and of three members on
//! loopback in the same run (every write committed to a quorum's disks).
//!
//! `cargo bench -p tugboat-controller --bench store [--features etcd]` prints,
//! for each store and 1, 16 and 256 writers, the writes per second and the
//! p50/p99 latency of one write, then the watch lag: from the start of a write
//! to a watcher of the store receiving it. Every run is bounded in writes and
//! in time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tugboat_controller::store::redb::{History, RedbStore};
use tugboat_controller::store::{Key, Store};

/// Writers per run, and the writes each makes.
const RUNS: [(usize, usize); 3] = [(1, 400), (16, 100), (256, 20)];
/// No run takes longer than this, whatever the disk does: writers stop early.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// A pod as the scheduler and an agent leave it: about 2 KB of JSON.
fn pod(name: &str, generation: usize) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": format!("5f0c8a2e-1b7d-4c1e-9a4f-{:012}", generation),
            "labels": {"app": "web", "pod-template-hash": "7d9f8c6b5", "tier": "frontend"},
            "annotations": {"tugboat.io/restartedAt": "2026-12-06T00:00:00Z"},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8c6b5",
                "uid": "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0", "controller": true,
                "blockOwnerDeletion": true
            }],
            "creationTimestamp": "2026-12-06T00:00:00Z"
        },
        "spec": {
            "nodeName": format!("hollow-{}", generation % 1000),
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "schedulerName": "default-scheduler",
            "containers": [{
                "name": "web", "image": "tugboat/sample:latest", "imagePullPolicy": "IfNotPresent",
                "args": ["serve", "--port", "8080"],
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "env": [{"name": "MODE", "value": "production"}, {"name": "LOG", "value": "info"}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                              "limits": {"cpu": "500m", "memory": "128Mi"}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080},
                                   "periodSeconds": 5, "failureThreshold": 3},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File"
            }],
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ]
        },
        "status": {
            "phase": "Running",
            "hostIP": "10.0.0.1",
            "podIP": "10.244.0.17",
            "startTime": "2026-12-06T00:00:01Z",
            "qosClass": "Burstable",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-12-06T00:00:00Z"},
                {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-12-06T00:00:01Z"},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": "2026-12-06T00:00:02Z"},
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-06T00:00:02Z"}
            ],
            "containerStatuses": [{
                "name": "web", "ready": true, "started": true, "restartCount": 0,
                "image": "tugboat/sample:latest", "imageID": "docker://sha256:0123456789abcdef0123456789abcdef",
                "containerID": format!("docker://{:064x}", generation),
                "state": {"running": {"startedAt": "2026-12-06T00:00:02Z"}}
            }]
        }
    })
}

/// Writes made to measure the watch lag, one at a time.
const LAG_WRITES: usize = 200;

struct Figures {
    writes: usize,
    /// Transactions (so fsyncs) that committed them, where the store tells.
    commits: Option<u64>,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// The stores compared: a fresh one of each per run.
#[derive(Clone, Copy)]
enum Backend {
    Redb,
    #[cfg(feature = "etcd")]
    Etcd(usize),
}

impl Backend {
    fn all() -> Vec<Backend> {
        #[allow(unused_mut)]
        let mut all = vec![Backend::Redb];
        #[cfg(feature = "etcd")]
        all.extend([Backend::Etcd(1), Backend::Etcd(3)]);
        all
    }

    fn name(&self) -> String {
        match self {
            Backend::Redb => "redb".to_string(),
            #[cfg(feature = "etcd")]
            Backend::Etcd(n) => format!("etcd x{n}"),
        }
    }
}

/// A fresh store of `backend`, what keeps it alive, and (for redb) itself for
/// its commit count.
async fn open(
    backend: Backend,
) -> (
    Arc<dyn Store>,
    Box<dyn std::any::Any + Send>,
    Option<Arc<RedbStore>>,
) {
    match backend {
        Backend::Redb => {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let store = Arc::new(
                RedbStore::open_with(&dir.path().join("bench.redb"), History::default())
                    .expect("a store file"),
            );
            (store.clone(), Box::new(dir), Some(store))
        }
        #[cfg(feature = "etcd")]
        Backend::Etcd(members) => {
            use tugboat_controller::store::etcd::{EtcdConfig, EtcdStore, testing::EtcdCluster};
            let etcd = EtcdCluster::start(members).await.expect("an etcd cluster");
            let store = EtcdStore::connect(EtcdConfig::new(etcd.endpoints()))
                .await
                .expect("a store on etcd");
            (Arc::new(store), Box::new(etcd), None)
        }
    }
}

async fn run(backend: Backend, writers: usize, writes_each: usize) -> Figures {
    let (store, keep, redb) = open(backend).await;
    let deadline = Instant::now() + RUN_LIMIT;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(writes_each);
            for i in 0..writes_each {
                if Instant::now() >= deadline {
                    break;
                }
                // Half creates of new pods, half updates of the writer's last one.
                let name = format!("w{writer}-p{}", i / 2);
                let key = Key::new("pods", Some("default"), name.as_str());
                let object = pod(&name, writer * writes_each + i);
                let t = Instant::now();
                let result = if i % 2 == 0 {
                    store.create(&key, object).await
                } else {
                    store.update(&key, object, None).await
                };
                result.expect("a write the benchmark expects to succeed");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("a writer task"));
    }
    let elapsed = started.elapsed();
    let commits = redb.map(|r| r.commits());
    drop(store);
    drop(keep);
    Figures {
        writes: latencies.len(),
        commits,
        elapsed,
        latencies,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// From the start of each write to a watcher receiving its event: one writer,
/// [`LAG_WRITES`] creates one after another.
async fn watch_lag(backend: Backend) -> Vec<Duration> {
    let (store, keep, _) = open(backend).await;
    let started: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let mut events = store
        .watch("pods", None, store.revision())
        .await
        .expect("a watch");
    let marks = started.clone();
    let watcher = tokio::spawn(async move {
        let mut lags = Vec::new();
        while lags.len() < LAG_WRITES {
            let Ok(Some(Ok(event))) = tokio::time::timeout(RUN_LIMIT, events.next()).await else {
                break;
            };
            let at = Instant::now();
            if let Some(t) = marks.lock().expect("marks").get(&event.key.name) {
                lags.push(at - *t);
            }
        }
        lags
    });
    for i in 0..LAG_WRITES {
        let name = format!("lag-{i}");
        started
            .lock()
            .expect("marks")
            .insert(name.clone(), Instant::now());
        store
            .create(
                &Key::new("pods", Some("default"), name.as_str()),
                pod(&name, i),
            )
            .await
            .expect("a write the benchmark expects to succeed");
    }
    let lags = watcher.await.expect("the watcher");
    drop(store);
    drop(keep);
    lags
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let size = serde_json::to_vec(&pod("w0-p0", 0)).map_or(0, |v| v.len());
    println!(
        "store writes: redb file in a temp dir, etcd members on loopback (with --features etcd); pod objects of {size} bytes"
    );
    println!(
        "{:>9} {:>8} {:>8} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "store", "writers", "writes", "seconds", "writes/s", "p50 ms", "p99 ms", "writes/fsync"
    );
    for backend in Backend::all() {
        for (writers, writes_each) in RUNS {
            let mut f = runtime.block_on(run(backend, writers, writes_each));
            f.latencies.sort_unstable();
            let secs = f.elapsed.as_secs_f64();
            println!(
                "{:>9} {:>8} {:>8} {:>10.2} {:>10.0} {:>10.2} {:>10.2} {:>12}",
                backend.name(),
                writers,
                f.writes,
                secs,
                f.writes as f64 / secs,
                percentile(&f.latencies, 50.0).as_secs_f64() * 1e3,
                percentile(&f.latencies, 99.0).as_secs_f64() * 1e3,
                f.commits.map_or("-".to_string(), |c| format!(
                    "{:.1}",
                    f.writes as f64 / c.max(1) as f64
                )),
            );
        }
    }
    println!();
    println!(
        "watch lag: from a write's start to a watcher of the store receiving it ({LAG_WRITES} writes, one at a time)"
    );
    println!(
        "{:>9} {:>8} {:>10} {:>10} {:>10}",
        "store", "events", "p50 ms", "p99 ms", "max ms"
    );
    for backend in Backend::all() {
        let mut lags = runtime.block_on(watch_lag(backend));
        lags.sort_unstable();
        println!(
            "{:>9} {:>8} {:>10.2} {:>10.2} {:>10.2}",
            backend.name(),
            lags.len(),
            percentile(&lags, 50.0).as_secs_f64() * 1e3,
            percentile(&lags, 99.0).as_secs_f64() * 1e3,
            lags.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        );
    }
}
