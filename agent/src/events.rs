//! Events the agent records about pods (`Pulling`, `Pulled`, `Created`, `Started`,
//! `Killing`, `BackOff`, `Failed`…), through the API like a kubelet. Repeats of the
//! same event bump its `count` instead of adding objects.

use std::hash::{Hash, Hasher};

use serde_json::{Value, json};
use tugboat_api::resource::EVENTS;
use tugboat_api::{Client, PatchType, meta};

#[derive(Clone)]
pub struct Recorder {
    client: Client,
    node: String,
}

impl Recorder {
    pub fn new(client: Client, node: &str) -> Self {
        Recorder {
            client,
            node: node.to_string(),
        }
    }

    pub async fn normal(&self, pod: &Value, reason: &str, message: &str) {
        self.record(pod, "Normal", reason, message).await;
    }

    pub async fn warning(&self, pod: &Value, reason: &str, message: &str) {
        self.record(pod, "Warning", reason, message).await;
    }

    /// Failures are logged, not returned: an event is a report, not the work.
    async fn record(&self, pod: &Value, event_type: &str, reason: &str, message: &str) {
        let ns = meta::namespace(pod).unwrap_or("default");
        let pod_name = meta::name(pod).unwrap_or("");
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (meta::uid(pod), event_type, reason, message, &self.node).hash(&mut h);
        let name = format!("{pod_name}.{:016x}", h.finish());
        let now = meta::now_rfc3339();
        // A repeat: bump the count (read, then write with the version read).
        if let Ok(existing) = self.client.get(&EVENTS, Some(ns), &name).await {
            let count = existing["count"].as_i64().unwrap_or(1) + 1;
            let patch = json!({"count": count, "lastTimestamp": now});
            if let Err(e) = self
                .client
                .patch(&EVENTS, Some(ns), &name, &patch, PatchType::Merge)
                .await
            {
                tracing::debug!(error = %e, reason, "cannot update event");
            }
            return;
        }
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": {
                "apiVersion": "v1", "kind": "Pod", "name": pod_name, "namespace": ns,
                "uid": meta::uid(pod), "resourceVersion": meta::resource_version(pod),
            },
            "reason": reason,
            "message": message,
            "type": event_type,
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": "tugboat-agent", "host": self.node},
            "reportingComponent": "tugboat-agent",
            "reportingInstance": self.node,
        });
        if let Err(e) = self.client.create(&EVENTS, Some(ns), &event).await {
            tracing::debug!(error = %e, reason, "cannot record event");
        }
    }
}
