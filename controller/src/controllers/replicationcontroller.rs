//! The ReplicationController controller: a ReplicationController is managed
//! exactly like a ReplicaSet (Kubernetes runs the same code for both), so this
//! is the ReplicaSet reconcile over the [`Replicated`] view of the older kind.
//! Its selector is a plain label map, which owned pods already match: pods are
//! found by owner reference, as for ReplicaSets.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSetStatus;
use k8s_openapi::api::core::v1::{
    PodTemplateSpec, ReplicationController, ReplicationControllerStatus,
};
use tokio_util::sync::CancellationToken;
use tugboat_api::resource::{PODS, REPLICATIONCONTROLLERS};
use tugboat_runtime::controller::{Controller, backoff_policy};

use super::replicaset::{Ctx, Replicated, reconcile};
use crate::registry::Registry;

impl Replicated for ReplicationController {
    const INFO: &'static tugboat_api::resource::ResourceInfo = &REPLICATIONCONTROLLERS;
    fn replicas(&self) -> Option<i32> {
        self.spec.as_ref().map(|s| s.replicas.unwrap_or(1))
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn status_value(s: ReplicaSetStatus) -> serde_json::Value {
        serde_json::to_value(ReplicationControllerStatus {
            replicas: s.replicas,
            fully_labeled_replicas: s.fully_labeled_replicas,
            ready_replicas: s.ready_replicas,
            available_replicas: s.available_replicas,
            observed_generation: s.observed_generation,
            conditions: None,
        })
        .unwrap_or_default()
    }
}

pub async fn run(registry: Arc<Registry>, concurrency: usize, shutdown: CancellationToken) {
    let ctx = Arc::new(Ctx::new(registry.clone(), "replication-controller"));
    Controller::new("replicationcontroller", registry, &REPLICATIONCONTROLLERS)
        .owns(&PODS)
        .concurrency(concurrency)
        .run(
            reconcile::<ReplicationController>,
            backoff_policy,
            ctx,
            shutdown,
        )
        .await;
}
