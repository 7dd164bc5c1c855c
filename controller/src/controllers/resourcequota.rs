//! The ResourceQuota controller: keeps each quota's `status.hard` (its
//! `spec.hard`) and `status.used` (what the namespace holds now: its pods'
//! requests and limits, and object counts) current, as Kubernetes'
//! resourcequota controller. Admission does not rely on this status (it counts
//! from the store, see `registry::policy`); it is what `tug describe quota` and
//! `kubectl get quota` show.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ResourceQuota, ResourceQuotaStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tokio_util::sync::CancellationToken;
use tugboat_api::resource::{
    self, CONFIGMAPS, PODS, REPLICATIONCONTROLLERS, RESOURCEQUOTAS, SECRETS, SERVICES,
};
use tugboat_api::{meta, quota};
use tugboat_runtime::ObjectRef;
use tugboat_runtime::controller::{Action, Controller, backoff_policy};

use super::Error;
use crate::registry::Registry;

/// Counts of kinds that are not watched are refreshed this often (Kubernetes
/// resyncs quotas every 5 minutes).
const RESYNC: Duration = Duration::from_secs(60);

pub async fn run(registry: Arc<Registry>, concurrency: usize, shutdown: CancellationToken) {
    let (quotas, reflect) =
        super::reflector::<ResourceQuota>(&registry, &RESOURCEQUOTAS, "resourcequota controller");
    // A change in a namespace looks at that namespace's quotas again.
    let in_namespace = Arc::new(move |obj: &serde_json::Value| {
        let ns = meta::namespace(obj);
        quotas
            .state()
            .iter()
            .filter(|q| q.metadata.namespace.as_deref() == ns)
            .map(|q| {
                ObjectRef::new(
                    q.metadata.namespace.as_deref(),
                    q.metadata.name.as_deref().unwrap_or(""),
                )
            })
            .collect::<Vec<_>>()
    });
    let mut controller = Controller::new("resourcequota", registry.clone(), &RESOURCEQUOTAS);
    for info in [
        &PODS,
        &SERVICES,
        &CONFIGMAPS,
        &SECRETS,
        &REPLICATIONCONTROLLERS,
    ] {
        controller = controller.watches(info, in_namespace.clone());
    }
    let controller =
        controller
            .concurrency(concurrency)
            .run(reconcile, backoff_policy, registry, shutdown);
    tokio::select! {
        _ = controller => {}
        _ = reflect => {}
    }
}

pub async fn reconcile(q: Arc<ResourceQuota>, registry: Arc<Registry>) -> Result<Action, Error> {
    if q.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = q.metadata.namespace.as_deref().unwrap_or("default");
    let name = q.metadata.name.as_deref().unwrap_or("");
    let hard = q
        .spec
        .as_ref()
        .and_then(|s| s.hard.clone())
        .unwrap_or_default();
    let mut usage = quota::Usage::new();
    for info in resource::ALL.iter().copied().filter(|r| r.namespaced) {
        let counted = quota::count_names(info);
        let pods = *info == PODS && hard.keys().any(|k| quota::is_pod_resource(k));
        if pods || hard.keys().any(|k| counted.contains(k)) {
            quota::add(&mut usage, &registry.usage(info, ns).await?);
        }
    }
    let used = quota::used_status(&q, &usage);
    let status = ResourceQuotaStatus {
        hard: Some(hard),
        used: Some(used.into_iter().map(|(k, v)| (k, Quantity(v))).collect()),
    };
    registry
        .write_status(&RESOURCEQUOTAS, Some(ns), name, &status)
        .await?;
    Ok(Action::requeue(RESYNC))
}
