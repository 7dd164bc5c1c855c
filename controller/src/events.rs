//! Recording `v1` Events about objects, as Kubernetes' event recorder does: one
//! Event per (object, type, reason, message), its `count` and `lastTimestamp`
//! bumped on repeats instead of a new object each time.

use std::sync::Arc;

use serde_json::{Value, json};
use tugboat_api::meta;
use tugboat_api::resource::EVENTS;

use crate::registry::{Registry, Subresource, WriteOptions};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

#[derive(Clone)]
pub struct Recorder {
    registry: Arc<Registry>,
    component: String,
}

impl Recorder {
    pub fn new(registry: Arc<Registry>, component: impl Into<String>) -> Self {
        Recorder {
            registry,
            component: component.into(),
        }
    }

    /// Records an event about `object`. Failures are logged, never returned: an
    /// event is a report, not part of the work.
    pub async fn record(&self, object: &Value, event_type: EventType, reason: &str, message: &str) {
        if let Err(e) = self.try_record(object, event_type, reason, message).await {
            tracing::debug!(error = %e, reason, "cannot record event");
        }
    }

    async fn try_record(
        &self,
        object: &Value,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), tugboat_api::ApiError> {
        let ns = meta::namespace(object).unwrap_or("default").to_string();
        let obj_name = meta::name(object).unwrap_or("");
        let uid = meta::uid(object).unwrap_or("");
        let key = format!(
            "{}|{uid}|{}|{reason}|{message}",
            self.component,
            event_type.as_str()
        );
        let name = format!("{obj_name}.{:016x}", fnv1a(key.as_bytes()));
        let now = meta::now_rfc3339();
        let bumped = self
            .registry
            .update_with(&EVENTS, Some(&ns), &name, Subresource::Main, |e| {
                let count = e.get("count").and_then(Value::as_i64).unwrap_or(1);
                e["count"] = json!(count + 1);
                e["lastTimestamp"] = json!(now);
                true
            })
            .await;
        match bumped {
            Ok(_) => return Ok(()),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": {
                "apiVersion": object.get("apiVersion"),
                "kind": object.get("kind"),
                "name": obj_name,
                "namespace": meta::namespace(object),
                "uid": uid,
                "resourceVersion": meta::resource_version(object),
            },
            "reason": reason,
            "message": message,
            "type": event_type.as_str(),
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.component,
        });
        match self
            .registry
            .create(&EVENTS, Some(&ns), event, WriteOptions::default())
            .await
        {
            Ok(_) => Ok(()),
            // Raced with another recorder of the same event: count it there next time.
            Err(e) if e.reason == "AlreadyExists" => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// FNV-1a: a stable hash (unlike `DefaultHasher`, the same across runs and builds).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
