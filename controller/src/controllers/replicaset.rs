//! The ReplicaSet controller: keeps the number of live pods owned by each
//! ReplicaSet equal to `spec.replicas`, and reports how many are ready and available.
//!
//! The same reconcile serves ReplicationControllers (their v1 predecessor, whose
//! selector is a plain label map): what differs between the two kinds is the
//! [`Replicated`] trait, implemented for both in `replicationcontroller.rs`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use tokio_util::sync::CancellationToken;
use tugboat_api::resource::{PODS, REPLICASETS};
use tugboat_api::selector::Selector;
use tugboat_runtime::controller::{Action, Controller, backoff_policy};

use super::{Error, controller_ref, delete_pods, pod_is_active, pod_node, pod_ready_since};
use crate::events::{self, EventType, Recorder};
use crate::registry::Registry;

/// At most this many pod creations or deletions in flight per ReplicaSet.
const BURST: usize = 16;

pub struct Ctx {
    registry: Arc<Registry>,
    recorder: Recorder,
    decoded: Decoded,
}

/// The pods each ReplicaSet owned at its last reconcile, decoded, with the
/// stored object each was decoded from: a reconcile decodes only the pods
/// written since (a ReplicaSet of 1,000 pods is reconciled at every change of
/// any of them, and decoding them all each time was most of its cost).
#[derive(Default)]
struct Decoded(std::sync::Mutex<std::collections::HashMap<String, PodsOf>>);

/// A ReplicaSet's pods decoded, by the address of the stored object they were
/// decoded from: the store hands out the same `Arc` until the pod changes, and
/// the entry holds that `Arc`, so its address cannot be reused while cached.
/// (Keyed by name, the lookups' name reads were a fifth of a reconcile.)
type PodsOf = std::collections::HashMap<usize, (Arc<serde_json::Value>, Arc<Pod>)>;

impl Ctx {
    /// A context whose events are reported by `component`.
    pub fn new(registry: Arc<Registry>, component: &str) -> Ctx {
        Ctx {
            recorder: events::recorder(registry.clone(), component),
            registry,
            decoded: Decoded::default(),
        }
    }
}

pub async fn run(registry: Arc<Registry>, concurrency: usize, shutdown: CancellationToken) {
    let ctx = Arc::new(Ctx::new(registry.clone(), "replicaset-controller"));
    Controller::new("replicaset", registry, &REPLICASETS)
        .owns(&PODS)
        .concurrency(concurrency)
        .run(reconcile::<ReplicaSet>, backoff_policy, ctx, shutdown)
        .await;
}

/// What the reconcile needs of a kind that keeps `replicas` copies of a pod
/// template: ReplicaSet and ReplicationController.
pub trait Replicated:
    k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta> + Send + Sync
{
    /// Where it is stored, for its status writes.
    const INFO: &'static tugboat_api::resource::ResourceInfo;
    /// `spec.replicas`, or `None` when it has no spec.
    fn replicas(&self) -> Option<i32>;
    fn template(&self) -> Option<&PodTemplateSpec>;
    fn min_ready_seconds(&self) -> i32;
    /// The kind's status from the counts a ReplicaSet reports.
    fn status_value(status: ReplicaSetStatus) -> serde_json::Value;
}

impl Replicated for ReplicaSet {
    const INFO: &'static tugboat_api::resource::ResourceInfo = &REPLICASETS;
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
    fn status_value(status: ReplicaSetStatus) -> serde_json::Value {
        serde_json::to_value(status).unwrap_or_default()
    }
}

pub async fn reconcile<R: Replicated>(rs: Arc<R>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let meta = rs.metadata();
    if meta.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = meta.namespace.as_deref().unwrap_or("default");
    let name = meta.name.as_deref().unwrap_or("");
    let Some(replicas) = rs.replicas() else {
        return Ok(Action::await_change());
    };
    let desired = replicas.max(0) as usize;

    let pods = owned_pods(&ctx, meta, ns).await?;
    let active: Vec<&Pod> = pods
        .iter()
        .map(|p| &**p)
        .filter(|p| pod_is_active(p))
        .collect();
    let mut changed = false;
    if active.len() < desired {
        let missing = desired - active.len();
        let template = pod_from_template(&*rs, rs.template());
        let results: Vec<_> = futures::stream::iter(0..missing)
            .map(|_| ctx.registry.create_typed(&PODS, Some(ns), &template))
            .buffer_unordered(BURST)
            .collect()
            .await;
        for r in results {
            match r {
                Ok(pod) => {
                    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
                    ctx.recorder
                        .publish(
                            &*rs,
                            EventType::Normal,
                            "SuccessfulCreate",
                            &format!("Created pod: {pod_name}"),
                        )
                        .await;
                    changed = true;
                }
                Err(e) => {
                    ctx.recorder
                        .publish(
                            &*rs,
                            EventType::Warning,
                            "FailedCreate",
                            &format!("Error creating: {}", e.message),
                        )
                        .await;
                    return Err(e.into());
                }
            }
        }
    } else if active.len() > desired {
        let mut victims = active.clone();
        victims.sort_by_key(|p| deletion_rank(p));
        let excess = active.len() - desired;
        let names: Vec<String> = victims
            .into_iter()
            .take(excess)
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect();
        let deleted = delete_pods(&ctx.registry, &ctx.recorder, &*rs, ns, names).await?;
        changed = deleted > 0;
    }
    let pods = if changed {
        owned_pods(&ctx, meta, ns).await?
    } else {
        pods
    };
    let (status, recheck) = status_of(meta, &pods, rs.min_ready_seconds(), rs.template());
    ctx.registry
        .write_status(R::INFO, Some(ns), name, &R::status_value(status))
        .await?;
    Ok(match recheck {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

async fn owned_pods(ctx: &Ctx, owner: &ObjectMeta, ns: &str) -> Result<Vec<Arc<Pod>>, Error> {
    let uid = owner.uid.as_deref().unwrap_or("");
    let listed = ctx.registry.list_controlled(&PODS, Some(ns), uid).await?;
    let mut all = ctx.decoded.0.lock().unwrap_or_else(|e| e.into_inner());
    let before = all.remove(uid).unwrap_or_default();
    let mut now = PodsOf::with_capacity(before.len());
    let mut pods = Vec::new();
    for object in listed {
        let at = Arc::as_ptr(&object) as usize;
        let pod = match before.get(&at) {
            Some((_, pod)) => pod.clone(),
            None => Arc::new(crate::registry::typed::decode::<Pod>(&PODS, &object)?),
        };
        pods.push(pod.clone());
        now.insert(at, (object, pod));
    }
    // Bounded: a controller that has seen very many ReplicaSets starts over.
    if all.len() >= 10_000 {
        all.clear();
    }
    if !now.is_empty() {
        all.insert(uid.to_string(), now);
    }
    Ok(pods)
}

/// Kubernetes' order for scaling down: unscheduled before scheduled, pending before
/// running, not ready before ready, newest first.
pub(crate) fn deletion_rank(pod: &Pod) -> (u8, u8, u8, std::cmp::Reverse<Option<jiff::Timestamp>>) {
    let phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let ready = pod_ready_since(pod).is_some();
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (
        u8::from(pod_node(pod).is_some()),
        phase,
        u8::from(ready),
        std::cmp::Reverse(created),
    )
}

/// A pod for `rs` from its template: named `<rs>-<random>`, owned by `rs`.
fn pod_from_template<R: Replicated>(rs: &R, template: Option<&PodTemplateSpec>) -> Pod {
    let template = template.cloned().unwrap_or_default();
    let metadata = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            name: None,
            generate_name: Some(format!(
                "{}-",
                rs.metadata().name.as_deref().unwrap_or("pod")
            )),
            owner_references: Some(vec![controller_ref(rs)]),
            ..metadata
        },
        spec: Some(template.spec.unwrap_or_default()),
        status: None,
    }
}

/// The ReplicaSet's status from its pods, and when to look again for a pod that
/// becomes available once it has been ready for `minReadySeconds`.
fn status_of(
    rs: &ObjectMeta,
    pods: &[Arc<Pod>],
    min_ready_seconds: i32,
    template: Option<&PodTemplateSpec>,
) -> (ReplicaSetStatus, Option<Duration>) {
    let active: Vec<&Pod> = pods
        .iter()
        .map(|p| &**p)
        .filter(|p| pod_is_active(p))
        .collect();
    let template_labels = Selector::from_label_selector(&LabelSelector {
        match_labels: template
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone()),
        match_expressions: None,
    });
    let now = jiff::Timestamp::now();
    let mut ready = 0;
    let mut available = 0;
    let mut recheck: Option<Duration> = None;
    for p in &active {
        if let Some(since) = pod_ready_since(p) {
            ready += 1;
            let ready_for = since
                .map(|s| now.duration_since(s).as_secs())
                .unwrap_or(i64::MAX);
            if ready_for >= i64::from(min_ready_seconds) {
                available += 1;
            } else {
                let wait =
                    Duration::from_secs((i64::from(min_ready_seconds) - ready_for).max(1) as u64);
                recheck = Some(recheck.map_or(wait, |r| r.min(wait)));
            }
        }
    }
    let fully_labeled = active
        .iter()
        .filter(|p| {
            template_labels.matches(p.metadata.labels.as_ref().unwrap_or(&Default::default()))
        })
        .count();
    let count = |n: usize| Some(i32::try_from(n).unwrap_or(i32::MAX));
    let status = ReplicaSetStatus {
        replicas: i32::try_from(active.len()).unwrap_or(i32::MAX),
        fully_labeled_replicas: count(fully_labeled),
        ready_replicas: count(ready),
        available_replicas: count(available),
        observed_generation: Some(rs.generation.unwrap_or(0)),
        ..Default::default()
    };
    (status, recheck)
}
