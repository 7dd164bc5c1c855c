//! Hollow nodes (kubemark's idea): many real agents in this process, each with
//! its own node credential, its own watch of its pods and its own heartbeats,
//! whose container engine is the in-memory one. The control plane they talk to
//! is a real `tug controller` process over HTTPS, so what is measured is the
//! controller's work at a node count no machine here could hold containers for.
//!
//! What a hollow node leaves out: the Service data plane (kube-proxy's share,
//! `Config::service_proxy` off) — the nodes simulate the kubelet only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tugboat_agent::runtime::fake::FakeRuntime;
use tugboat_api::resource::NODES;
use tugboat_api::{Client, ListParams};

use crate::TestController;

/// The image every hollow engine holds.
pub const IMAGE: &str = "tugboat/sample:latest";

/// How hollow nodes behave.
#[derive(Clone, Copy, Debug)]
pub struct HollowConfig {
    /// How long a container takes to start (the Docker engine here: about 0.1 s).
    pub start_delay: Duration,
    /// How often a node renews its Lease (the kubelet's default: 10 s).
    pub heartbeat: Duration,
    /// Pods a node takes.
    pub max_pods: i64,
    /// How many nodes join at once.
    pub join_parallelism: usize,
}

impl Default for HollowConfig {
    fn default() -> Self {
        HollowConfig {
            start_delay: Duration::from_millis(100),
            heartbeat: Duration::from_secs(10),
            max_pods: 110,
            join_parallelism: 16,
        }
    }
}

/// Hollow nodes `<prefix>-0` … `<prefix>-(n-1)`, stopped on drop.
pub struct HollowNodes {
    pub names: Vec<String>,
    pub runtimes: Vec<Arc<FakeRuntime>>,
    token: CancellationToken,
    handles: Vec<JoinHandle<()>>,
    /// The nodes' state directories, removed on drop.
    state: tempfile::TempDir,
}

impl HollowNodes {
    /// Joins `n` nodes to `tc` (each with its own credential, as `tug agent
    /// --token` joins) and runs their agents; returns once they all run (not
    /// yet Ready: see [`wait_ready`]).
    pub async fn start(
        tc: &TestController,
        prefix: &str,
        n: usize,
        hc: HollowConfig,
    ) -> anyhow::Result<HollowNodes> {
        let token = CancellationToken::new();
        let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
        let configs: Vec<anyhow::Result<tugboat_agent::Config>> =
            futures::stream::iter(names.iter().map(|name| tc.agent_config(name)))
                .buffered(hc.join_parallelism.max(1))
                .collect()
                .await;
        let mut nodes = HollowNodes {
            names: names.clone(),
            runtimes: Vec::with_capacity(n),
            token,
            handles: Vec::with_capacity(n),
            state: tempfile::tempdir()?,
        };
        for config in configs {
            let mut config = config?;
            config.heartbeat = hc.heartbeat;
            config.max_pods = hc.max_pods;
            config.service_proxy = false;
            config.state_dir = Some(nodes.state.path().join(&config.node_name));
            // Big enough for any pod count the runs ask for.
            config.cpus_override = Some(64);
            config.memory_override = Some(256 << 30);
            let runtime = Arc::new(
                FakeRuntime::new()
                    .with_images(&[IMAGE])
                    .with_start_delay(hc.start_delay),
            );
            nodes.runtimes.push(runtime.clone());
            let shutdown = nodes.token.clone();
            nodes.handles.push(tokio::spawn(async move {
                let node = config.node_name.clone();
                if let Err(e) = tugboat_agent::run(config, runtime, shutdown).await {
                    eprintln!("hollow node {node} failed: {e}");
                }
            }));
        }
        Ok(nodes)
    }

    /// Containers running on all nodes together (sandboxes included).
    pub fn containers(&self) -> usize {
        self.runtimes.iter().map(|r| r.container_count()).sum()
    }

    /// Container lists asked of all nodes' engines so far (each pod sync lists
    /// its pod's containers: what a sync costs a real engine).
    pub fn engine_lists(&self) -> usize {
        self.runtimes.iter().map(|r| r.lists()).sum()
    }

    /// Stops every node's agent and waits for them (at most `limit`).
    pub async fn stop(mut self, limit: Duration) {
        self.token.cancel();
        let handles = std::mem::take(&mut self.handles);
        let _ = tokio::time::timeout(limit, futures::future::join_all(handles)).await;
    }
}

impl Drop for HollowNodes {
    fn drop(&mut self) {
        self.token.cancel();
        for h in &self.handles {
            h.abort();
        }
    }
}

/// Waits until `n` Nodes whose names start with `prefix-` are Ready, at most
/// `limit`; how long it took.
pub async fn wait_ready(
    client: &Client,
    prefix: &str,
    n: usize,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let want = format!("{prefix}-");
    loop {
        // A busy controller may drop a connection now and then: asked again.
        let list = match client.list(&NODES, None, &ListParams::default()).await {
            Ok(list) => list,
            Err(_) if start.elapsed() < limit => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let ready = list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|n| {
                        n.pointer("/metadata/name")
                            .and_then(|v| v.as_str())
                            .is_some_and(|name| name.starts_with(&want))
                            && n.pointer("/status/conditions")
                                .and_then(|c| c.as_array())
                                .is_some_and(|c| {
                                    c.iter()
                                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                                })
                    })
                    .count()
            })
            .unwrap_or(0);
        if ready >= n {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            anyhow::bail!("only {ready} of {n} hollow nodes Ready after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A Deployment of `replicas` hollow pods (no probes, no resources: a pod's
/// cost to the control plane, not to an engine).
pub fn deployment(name: &str, replicas: i64) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "app", "image": IMAGE}],
                },
            },
        },
    })
}

/// CPU seconds (user + system) process `pid` has used, from `/proc`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // The fields after the command name, which is in parentheses and may hold spaces.
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / clock_ticks()
}

/// The kernel's clock ticks per second for `/proc` times (USER_HZ: 100 on Linux
/// everywhere that matters; `getconf CLK_TCK` says for sure).
fn clock_ticks() -> f64 {
    crate::bench::output_of("getconf", &["CLK_TCK"])
        .parse()
        .unwrap_or(100.0)
}

/// The peak resident memory of process `pid` in MB (VmHWM).
pub fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// The bytes of every file under `dir`.
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}
