//! The reconcilers: Deployment → ReplicaSets, ReplicaSet → Pods, the scheduler
//! (Pods → nodes), the garbage collector (dependents of deleted owners) and the
//! namespace lifecycle.

pub mod deployment;
pub mod eventttl;
pub mod gc;
pub mod namespace;
pub mod nodelifecycle;
pub mod replicaset;
pub mod scheduler;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Config;
use crate::registry::Registry;

/// Starts every controller on `tracker`; they stop when `shutdown` is cancelled.
pub fn spawn_all(
    tracker: &TaskTracker,
    registry: Arc<Registry>,
    config: &Config,
    shutdown: CancellationToken,
) {
    tracker.spawn(deployment::run(
        registry.clone(),
        config.concurrency,
        shutdown.clone(),
    ));
    tracker.spawn(replicaset::run(
        registry.clone(),
        config.concurrency,
        shutdown.clone(),
    ));
    tracker.spawn(gc::run(registry.clone(), shutdown.clone()));
    tracker.spawn(scheduler::run(registry.clone(), shutdown.clone()));
    tracker.spawn(nodelifecycle::run(
        registry.clone(),
        config.into(),
        shutdown.clone(),
    ));
    tracker.spawn(eventttl::run(
        registry.clone(),
        config.event_ttl,
        shutdown.clone(),
    ));
    tracker.spawn(namespace::run(registry, shutdown));
}

/// Why a reconcile failed; `error_policy` backs off on every kind alike for now.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] tugboat_api::ApiError),
    #[error("encoding {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// `metadata.ownerReferences` entry naming `owner` as the controller.
pub fn controller_ref(owner: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": owner.get("apiVersion"),
        "kind": owner.get("kind"),
        "name": tugboat_api::meta::name(owner),
        "uid": tugboat_api::meta::uid(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Is the pod's `Ready` condition true, and since when?
pub fn pod_ready_since(pod: &serde_json::Value) -> Option<Option<jiff::Timestamp>> {
    let conditions = pod.pointer("/status/conditions")?.as_array()?;
    let ready = conditions
        .iter()
        .find(|c| c.get("type").and_then(|t| t.as_str()) == Some("Ready"))?;
    if ready.get("status").and_then(|s| s.as_str()) != Some("True") {
        return None;
    }
    Some(
        ready
            .get("lastTransitionTime")
            .and_then(|t| t.as_str())
            .and_then(|t| t.parse().ok()),
    )
}
