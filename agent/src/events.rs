//! Events the agent records about pods (`Pulling`, `Pulled`, `Created`, `Started`,
//! `Killing`, `BackOff`, `Failed`…), through the API like a kubelet. Repeats of the
//! same event bump its `count` instead of adding objects.
//!
//! Recording never delays the work it reports: events are queued and written, in
//! order, by one background task (a restart does not wait for three API writes).

use std::hash::{Hash, Hasher};

use serde_json::{Value, json};
use tugboat_api::resource::EVENTS;
use tugboat_api::{Client, PatchType, meta};

/// Events waiting to be written; past this many, new ones are dropped (and logged).
const QUEUE: usize = 1024;

struct Pending {
    pod: Value,
    event_type: &'static str,
    reason: String,
    message: String,
}

#[derive(Clone)]
pub struct Recorder {
    tx: tokio::sync::mpsc::Sender<Pending>,
}

struct Writer {
    client: Client,
    node: String,
}

impl Recorder {
    /// Starts the background writer (it stops when the last `Recorder` is dropped).
    pub fn new(client: Client, node: &str) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Pending>(QUEUE);
        let writer = Writer {
            client,
            node: node.to_string(),
        };
        tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                writer
                    .record(&p.pod, p.event_type, &p.reason, &p.message)
                    .await;
            }
        });
        Recorder { tx }
    }

    pub async fn normal(&self, pod: &Value, reason: &str, message: &str) {
        self.enqueue(pod, "Normal", reason, message);
    }

    pub async fn warning(&self, pod: &Value, reason: &str, message: &str) {
        self.enqueue(pod, "Warning", reason, message);
    }

    fn enqueue(&self, pod: &Value, event_type: &'static str, reason: &str, message: &str) {
        let pending = Pending {
            pod: pod.clone(),
            event_type,
            reason: reason.to_string(),
            message: message.to_string(),
        };
        if self.tx.try_send(pending).is_err() {
            tracing::debug!(reason, "event queue full or closed; event dropped");
        }
    }
}

impl Writer {
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
