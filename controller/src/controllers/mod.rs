//! The reconcilers: Deployment → ReplicaSets, ReplicaSet (and
//! ReplicationController) → Pods, DaemonSet → a pod per node, the scheduler
//! (Pods → nodes), endpoints (Services → EndpointSlices and Endpoints), the
//! service load balancer (LoadBalancer Services → their nodes' addresses), the
//! garbage collector (dependents of deleted owners), the namespace lifecycle,
//! each namespace's `default` ServiceAccount, ResourceQuotas' usage, and
//! batch: Jobs → Pods run to completion, CronJobs → Jobs on a schedule.

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod eventttl;
pub mod gc;
pub mod hpa;
pub mod job;
pub mod namespace;
pub mod nodelifecycle;
pub mod replicaset;
pub mod replicationcontroller;
pub mod resourcequota;
pub mod scheduler;
pub mod serviceaccounts;
pub mod servicelb;

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Config;
use crate::registry::Registry;

/// Starts every controller on `tracker`; they stop when `shutdown` is cancelled.
pub fn spawn_all(
    tracker: &TaskTracker,
    registry: Arc<Registry>,
    config: &Config,
    autoscaling: Autoscaling,
    shutdown: CancellationToken,
) {
    tracker.spawn(hpa::run(
        registry.clone(),
        autoscaling.metrics,
        autoscaling.activations,
        config.hpa,
        config.concurrency,
        shutdown.clone(),
    ));
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
    tracker.spawn(replicationcontroller::run(
        registry.clone(),
        config.concurrency,
        shutdown.clone(),
    ));
    tracker.spawn(daemonset::run(
        registry.clone(),
        config.concurrency,
        shutdown.clone(),
    ));
    tracker.spawn(endpoints::run(
        registry.clone(),
        config.concurrency,
        shutdown.clone(),
    ));
    tracker.spawn(servicelb::run(
        registry.clone(),
        config.concurrency,
        shutdown.clone(),
    ));
    tracker.spawn(job::run(
        registry.clone(),
        config.job,
        config.concurrency,
        shutdown.clone(),
    ));
    tracker.spawn(cronjob::run(
        registry.clone(),
        config.cronjob,
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
    tracker.spawn(serviceaccounts::run(registry.clone(), shutdown.clone()));
    tracker.spawn(resourcequota::run(
        registry.clone(),
        config.concurrency,
        shutdown.clone(),
    ));
    tracker.spawn(namespace::run(registry, shutdown));
}

/// Every Service, kept by a reflector, for mappers that turn another kind's
/// events into the Services they concern. The future drives the reflector's
/// watch: run it beside the controller, in the same task, so it stops with it.
pub fn services_reflector(
    registry: &Arc<Registry>,
    name: &str,
) -> (
    tugboat_runtime::reflector::Store<k8s_openapi::api::core::v1::Service>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    reflector(registry, &tugboat_api::resource::SERVICES, name)
}

/// Every object of `info`, kept by a reflector; the future drives its watch
/// (see [`services_reflector`]).
pub fn reflector<K>(
    registry: &Arc<Registry>,
    info: &'static tugboat_api::resource::ResourceInfo,
    name: &str,
) -> (
    tugboat_runtime::reflector::Store<K>,
    impl std::future::Future<Output = ()> + Send + 'static,
)
where
    K: serde::de::DeserializeOwned + tugboat_runtime::object::Object + Send + Sync + 'static,
{
    use futures::StreamExt as _;
    let writer = tugboat_runtime::reflector::Writer::new();
    let store = writer.store();
    let config = tugboat_runtime::watcher::Config::new(name).backoff(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(5),
    );
    let objects = tugboat_runtime::reflector::reflector(
        writer,
        tugboat_runtime::watcher::watch::<K, _>(registry.clone(), info, config),
    );
    let drive = async move {
        let mut objects = std::pin::pin!(objects);
        while objects.next().await.is_some() {}
    };
    (store, drive)
}

/// What the autoscalers share with the API server: the readings it serves and
/// the activations of Services scaled to zero it takes in.
#[derive(Clone)]
pub struct Autoscaling {
    pub metrics: Arc<crate::metrics::Metrics>,
    pub activations: Arc<hpa::Activations>,
}

/// Why a reconcile failed; `error_policy` backs off on every kind alike for now.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] tugboat_api::ApiError),
}

/// Now, as a Kubernetes `Time`, to the second (as times are stored, so a value
/// read back compares equal to the one written).
pub fn now() -> Time {
    let now = jiff::Timestamp::now();
    Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// The `ownerReferences` entry naming `owner` as the controller.
pub fn controller_ref<K>(owner: &K) -> OwnerReference
where
    K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    let m = owner.metadata();
    OwnerReference {
        api_version: K::API_VERSION.to_string(),
        kind: K::KIND.to_string(),
        name: m.name.clone().unwrap_or_default(),
        uid: m.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The uid of the object's controller (its `controller: true` owner reference).
pub fn controller_uid(m: &ObjectMeta) -> Option<&str> {
    m.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str())
}

/// Is the pod's `Ready` condition true, and since when?
pub fn pod_ready_since(pod: &Pod) -> Option<Option<jiff::Timestamp>> {
    let ready = pod
        .status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")?;
    if ready.status != "True" {
        return None;
    }
    Some(ready.last_transition_time.as_ref().map(|t| t.0))
}

/// Is this a pod that still needs a node or is still running?
pub fn pod_is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !pod_is_finished(pod)
}

/// Has the pod succeeded or failed (for good)?
pub fn pod_is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The node a pod is bound to, if any.
pub fn pod_node(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// At most this many pod creations or deletions in flight per owner.
pub const POD_BURST: usize = 16;

/// Deletes the pods `names` of `owner` in `ns`, [`POD_BURST`] at a time,
/// recording `SuccessfulDelete` for each as Kubernetes' controllers do. Every
/// deletion is tried; returns how many pods went, or the first error (a pod
/// already gone is not one).
pub async fn delete_pods<K>(
    registry: &Arc<Registry>,
    recorder: &crate::events::Recorder,
    owner: &K,
    ns: &str,
    names: Vec<String>,
) -> Result<usize, tugboat_api::ApiError>
where
    K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    use futures::StreamExt as _;
    let results: Vec<_> = futures::stream::iter(names)
        .map(|pod_name| async move {
            let r = registry
                .delete(
                    &tugboat_api::resource::PODS,
                    Some(ns),
                    &pod_name,
                    &crate::registry::DeleteOptions::default(),
                )
                .await;
            (pod_name, r)
        })
        .buffer_unordered(POD_BURST)
        .collect()
        .await;
    let (mut deleted, mut failure) = (0, None);
    for (pod_name, r) in results {
        match r {
            Ok(_) => {
                deleted += 1;
                recorder
                    .publish(
                        owner,
                        crate::events::EventType::Normal,
                        "SuccessfulDelete",
                        &format!("Deleted pod: {pod_name}"),
                    )
                    .await;
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(deleted),
    }
}
