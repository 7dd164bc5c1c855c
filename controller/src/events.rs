//! Events from the controllers: the shared recorder
//! ([`tugboat_runtime::events`]) writing to the registry.

use std::sync::Arc;

use serde_json::{Value, json};
use tugboat_api::resource::EVENTS;
use tugboat_runtime::events::{EventSink, Reporter};
pub use tugboat_runtime::events::{EventType, Recorder, fnv1a};

use crate::registry::{Registry, Subresource, WriteOptions};

/// A recorder for the controller `component` (`default-scheduler`…), writing
/// each event before it returns.
pub fn recorder(registry: Arc<Registry>, component: &str) -> Recorder {
    let mut reporter = Reporter::controller(component);
    if let Some(instance) = registry.instance() {
        reporter.instance = instance.to_string();
    }
    Recorder::new(registry, reporter)
}

#[async_trait::async_trait]
impl EventSink for Registry {
    async fn bump(&self, ns: &str, name: &str, now: &str) -> Result<bool, String> {
        let bumped = self
            .update_with(&EVENTS, Some(ns), name, Subresource::Main, |e| {
                let count = e.get("count").and_then(Value::as_i64).unwrap_or(1);
                e["count"] = json!(count.saturating_add(1));
                e["lastTimestamp"] = json!(now);
                true
            })
            .await;
        match bumped {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn create(&self, ns: &str, event: Value) -> Result<bool, String> {
        match Registry::create(self, &EVENTS, Some(ns), event, WriteOptions::default()).await {
            Ok(_) => Ok(true),
            Err(e) if e.reason == "AlreadyExists" => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }
}
