//! The ReplicaSet controller: keeps the number of live pods owned by each
//! ReplicaSet equal to `spec.replicas`, and reports how many are ready and available.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tugboat_api::meta;
use tugboat_api::resource::{PODS, REPLICASETS};
use tugboat_api::selector::Selector;

use super::{Error, controller_ref, pod_ready_since};
use crate::events::{self, EventType, Recorder};
use crate::registry::{DeleteOptions, Registry, Subresource, WriteOptions, pod_is_active};
use crate::runtime::{Action, Controller, backoff_policy};

/// At most this many pod creations or deletions in flight per ReplicaSet.
const BURST: usize = 16;

pub struct Ctx {
    registry: Arc<Registry>,
    recorder: Recorder,
}

pub async fn run(registry: Arc<Registry>, concurrency: usize, shutdown: CancellationToken) {
    let ctx = Arc::new(Ctx {
        registry: registry.clone(),
        recorder: events::recorder(registry.clone(), "replicaset-controller"),
    });
    Controller::new("replicaset", registry, &REPLICASETS)
        .owns(&PODS)
        .concurrency(concurrency)
        .run(reconcile, backoff_policy::<Error>, ctx, shutdown)
        .await;
}

pub async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let rs_value = serde_json::to_value(&*rs).map_err(|source| Error::Encode {
        what: "replicaset",
        source,
    })?;
    if meta::is_deleting(&rs_value) {
        return Ok(Action::await_change());
    }
    let ns = meta::namespace(&rs_value).unwrap_or("default").to_string();
    let name = meta::name(&rs_value).unwrap_or("").to_string();
    let Some(spec) = rs.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let desired = spec.replicas.unwrap_or(1).max(0) as usize;

    let pods = owned_pods(&ctx.registry, &rs_value, &ns).await?;
    let active: Vec<&Arc<Value>> = pods.iter().filter(|p| pod_is_active(p)).collect();
    let mut changed = false;
    if active.len() < desired {
        let missing = desired - active.len();
        let template = pod_from_template(&rs_value, spec.template.as_ref())?;
        let results: Vec<_> = futures::stream::iter(0..missing)
            .map(|_| {
                ctx.registry
                    .create(&PODS, Some(&ns), template.clone(), WriteOptions::default())
            })
            .buffer_unordered(BURST)
            .collect()
            .await;
        for r in results {
            match r {
                Ok(w) => {
                    let pod_name = meta::name(&w.object).unwrap_or("");
                    ctx.recorder
                        .record(
                            &rs_value,
                            EventType::Normal,
                            "SuccessfulCreate",
                            &format!("Created pod: {pod_name}"),
                        )
                        .await;
                    changed = true;
                }
                Err(e) => {
                    ctx.recorder
                        .record(
                            &rs_value,
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
            .map(|p| meta::name(p).unwrap_or("").to_string())
            .collect();
        let results: Vec<_> = futures::stream::iter(names)
            .map(|pod_name| {
                let registry = ctx.registry.clone();
                let ns = ns.clone();
                async move {
                    let r = registry
                        .delete(&PODS, Some(&ns), &pod_name, &DeleteOptions::default())
                        .await;
                    (pod_name, r)
                }
            })
            .buffer_unordered(BURST)
            .collect()
            .await;
        for (pod_name, r) in results {
            match r {
                Ok(_) => {
                    ctx.recorder
                        .record(
                            &rs_value,
                            EventType::Normal,
                            "SuccessfulDelete",
                            &format!("Deleted pod: {pod_name}"),
                        )
                        .await;
                    changed = true;
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let pods = if changed {
        owned_pods(&ctx.registry, &rs_value, &ns).await?
    } else {
        pods
    };
    let (status, recheck) = status_of(
        &rs_value,
        &pods,
        spec.min_ready_seconds.unwrap_or(0),
        spec.template.as_ref(),
    );
    ctx.registry
        .update_with(&REPLICASETS, Some(&ns), &name, Subresource::Status, |o| {
            if o.get("status") == Some(&status) {
                return false;
            }
            o["status"] = status.clone();
            true
        })
        .await?;
    Ok(match recheck {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

async fn owned_pods(registry: &Registry, rs: &Value, ns: &str) -> Result<Vec<Arc<Value>>, Error> {
    let uid = meta::uid(rs).unwrap_or("");
    Ok(registry
        .list_all(&PODS, Some(ns))
        .await?
        .into_iter()
        .filter(|p| meta::controller_of(p).is_some_and(|(_, _, u)| u == uid))
        .collect())
}

/// Kubernetes' order for scaling down: unscheduled before scheduled, pending before
/// running, not ready before ready, newest first.
fn deletion_rank(pod: &Value) -> (u8, u8, u8, std::cmp::Reverse<String>) {
    let scheduled = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = match pod.pointer("/status/phase").and_then(Value::as_str) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let ready = pod_ready_since(pod).is_some();
    let created = pod
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    (
        u8::from(scheduled),
        phase,
        u8::from(ready),
        std::cmp::Reverse(created),
    )
}

fn pod_from_template(
    rs: &Value,
    template: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>,
) -> Result<Value, Error> {
    let template = template.cloned().unwrap_or_default();
    let metadata =
        serde_json::to_value(template.metadata.unwrap_or_default()).map_err(|source| {
            Error::Encode {
                what: "pod template metadata",
                source,
            }
        })?;
    let spec = serde_json::to_value(template.spec.unwrap_or_default()).map_err(|source| {
        Error::Encode {
            what: "pod template spec",
            source,
        }
    })?;
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec});
    let m = meta::metadata_mut(&mut pod);
    m.remove("name");
    m.insert(
        "generateName".into(),
        json!(format!("{}-", meta::name(rs).unwrap_or("pod"))),
    );
    m.insert("ownerReferences".into(), json!([controller_ref(rs)]));
    Ok(pod)
}

/// The ReplicaSet's status from its pods, and when to look again for a pod that
/// becomes available once it has been ready for `minReadySeconds`.
fn status_of(
    rs: &Value,
    pods: &[Arc<Value>],
    min_ready_seconds: i32,
    template: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>,
) -> (Value, Option<Duration>) {
    let active: Vec<&Arc<Value>> = pods.iter().filter(|p| pod_is_active(p)).collect();
    let template_labels = Selector::from_label_selector(
        &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_labels: template
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.clone()),
            match_expressions: None,
        },
    );
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
        .filter(|p| template_labels.matches_object(p))
        .count();
    let status = json!({
        "replicas": active.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": rs.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0),
    });
    (status, recheck)
}
