//! The agent's Node: registered with the machine's capacity (from Docker), kept
//! Ready by a Lease renewed every heartbeat (as kubelets do) and a status refresh
//! now and then, so the controller can tell a live node from a lost one.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tugboat_api::resource::{LEASES, NODES};
use tugboat_api::{Client, ClientError, PatchType, meta};

use crate::runtime::HostInfo;

/// The Kubernetes version agents report (the API's, so clients are at home).
pub const KUBELET_VERSION: &str = "v1.32.0-tugboat";
/// How often the Node's status is refreshed even when nothing changed.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// What the Node publishes about this agent.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    pub name: String,
    /// The address the controller reaches this agent (and its containers) at.
    pub address: String,
    /// The agent's port for logs.
    pub port: u16,
    /// The agent's Service tunnel port (published as an annotation).
    pub proxy_port: u16,
    pub host: HostInfo,
    pub max_pods: i64,
    /// Held back from pods (for the system): CPU in millicores, memory in bytes.
    pub reserved_cpu_millis: i64,
    pub reserved_memory: i64,
}

impl NodeIdentity {
    fn capacity(&self) -> Value {
        json!({
            "cpu": self.host.cpus.to_string(),
            "memory": format!("{}Ki", self.host.memory_bytes / 1024),
            "pods": self.max_pods.to_string(),
        })
    }

    /// Capacity less what is reserved: what the scheduler may hand out.
    fn allocatable(&self) -> Value {
        let cpu = (self.host.cpus * 1000 - self.reserved_cpu_millis).max(0);
        let memory = (self.host.memory_bytes - self.reserved_memory).max(0);
        json!({
            "cpu": format!("{cpu}m"),
            "memory": format!("{}Ki", memory / 1024),
            "pods": self.max_pods.to_string(),
        })
    }

    fn status(&self) -> Value {
        let now = meta::now_rfc3339();
        json!({
            "capacity": self.capacity(),
            "allocatable": self.allocatable(),
            "addresses": [
                {"type": "InternalIP", "address": self.address},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "",
                "containerRuntimeVersion": self.host.runtime_version,
                "osImage": self.host.os_image,
                "kernelVersion": self.host.kernel_version,
                "architecture": self.host.architecture,
                "operatingSystem": self.host.operating_system,
                "machineID": "", "systemUUID": "", "bootID": "",
            },
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "tugboat agent is posting ready status",
                "lastHeartbeatTime": now, "lastTransitionTime": now,
            }],
        })
    }

    fn annotations(&self) -> Value {
        json!({ crate::proxy::table::PROXY_PORT_ANNOTATION: self.proxy_port.to_string() })
    }

    fn labels(&self) -> Value {
        json!({
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": self.host.operating_system,
            "kubernetes.io/arch": arch(&self.host.architecture),
            "beta.kubernetes.io/os": self.host.operating_system,
            "beta.kubernetes.io/arch": arch(&self.host.architecture),
        })
    }
}

fn arch(docker_arch: &str) -> &str {
    match docker_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Creates the Node, or takes it over (labels merged, status replaced) if it exists.
pub async fn register(client: &Client, id: &NodeIdentity) -> Result<(), ClientError> {
    match client.get(&NODES, None, &id.name).await {
        Ok(_) => {
            let patch =
                json!({"metadata": {"labels": id.labels(), "annotations": id.annotations()}});
            client
                .patch(&NODES, None, &id.name, &patch, PatchType::Merge)
                .await?;
        }
        Err(e) if e.is_not_found() => {
            let node = json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": id.name, "labels": id.labels(),
                    "annotations": id.annotations()},
                "spec": {},
                "status": id.status(),
            });
            match client.create(&NODES, None, &node).await {
                Ok(_) => {}
                Err(e) if e.api().is_some_and(|a| a.reason == "AlreadyExists") => {}
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    }
    post_status(client, id).await
}

/// Writes the Node's status: Ready, with a fresh heartbeat. Keeps the Ready
/// condition's transition time when it was already Ready.
pub async fn post_status(client: &Client, id: &NodeIdentity) -> Result<(), ClientError> {
    let mut status = id.status();
    if let Ok(node) = client.get(&NODES, None, &id.name).await {
        let was_ready = node
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready");
        if let Some(c) = was_ready.filter(|c| c["status"] == "True") {
            status["conditions"][0]["lastTransitionTime"] = c["lastTransitionTime"].clone();
        }
    }
    client
        .patch_status(
            &NODES,
            None,
            &id.name,
            &json!({"status": status}),
            PatchType::Merge,
        )
        .await?;
    Ok(())
}

/// Renews the node's Lease in `kube-node-lease` every `every`, and its status every
/// few seconds, until `shutdown`. Failures are retried on the next beat: the agent
/// keeps its containers running whatever the controller does (fail-static).
pub async fn heartbeat(
    client: Client,
    id: NodeIdentity,
    every: Duration,
    shutdown: CancellationToken,
) {
    let lease_seconds = (every.as_secs_f64() * 40.0).ceil().max(10.0) as i64;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_status = tokio::time::Instant::now();
    let mut last_ok = tokio::time::Instant::now();
    let mut failing = false;
    // A beat that takes longer than this counts as failed: a cut network makes
    // requests hang rather than fail, and the node must say Ready again at once
    // when it is back.
    let beat_limit = (every * 2).max(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // After a gap (a partition, a stall), post Ready with the first beat: the
        // controller may have marked the node NotReady meanwhile.
        let after_gap = last_ok.elapsed() > every * 2 + Duration::from_millis(500);
        let beat = async {
            renew_lease(&client, &id.name, lease_seconds).await?;
            if last_status.elapsed() >= STATUS_EVERY || failing || after_gap {
                post_status(&client, &id).await?;
                last_status = tokio::time::Instant::now();
            }
            Ok::<_, ClientError>(())
        };
        let result = match tokio::time::timeout(beat_limit, beat).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {beat_limit:?}")),
        };
        match result {
            Ok(()) => {
                if failing {
                    tracing::info!(node = %id.name, "heartbeat restored");
                    failing = false;
                }
                last_ok = tokio::time::Instant::now();
            }
            Err(e) if !failing => {
                tracing::warn!(node = %id.name, error = %e, "heartbeat failed; containers keep running, retrying");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

async fn renew_lease(client: &Client, node: &str, lease_seconds: i64) -> Result<(), ClientError> {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let patch = json!({"spec": {"holderIdentity": node, "leaseDurationSeconds": lease_seconds, "renewTime": now}});
    match client
        .patch(
            &LEASES,
            Some("kube-node-lease"),
            node,
            &patch,
            PatchType::Merge,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => {
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": node, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": node, "leaseDurationSeconds": lease_seconds, "renewTime": now},
            });
            client
                .create(&LEASES, Some("kube-node-lease"), &lease)
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    }
}
