//! The DaemonSet controller: one pod per eligible node, rolled to a new
//! template node by node, as Kubernetes' daemon controller.
//!
//! Daemon pods are created already bound (`spec.nodeName`), as Kubernetes did
//! before 1.12: the scheduler never sees them, so a cordoned node keeps and gets
//! its daemon pod without the scheduler learning an exception, and a NotReady
//! node keeps its pod (the node lifecycle controller does not evict daemon
//! pods, as their `NoExecute` tolerations spare them in Kubernetes). What to do
//! is decided by the pure [`plan`]; here it is read, done and recorded.
//!
//! Pods carry `controller-revision-hash`, the hash of the template (the
//! Deployment controller's pod-template hash), which tells old pods from new
//! during a rolling update. Kubernetes also keeps ControllerRevisions for
//! `rollout undo`; Tugboat does not serve them yet.

pub mod plan;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio_util::sync::CancellationToken;
use tugboat_api::resource::{DAEMONSETS, NODES, PODS};
use tugboat_runtime::controller::{Action, Controller, backoff_policy};
use tugboat_runtime::object::ObjectRef;

use super::deployment::template_hash;
use super::{Error, controller_ref, delete_pods};
use crate::events::{self, EventType, Recorder};
use crate::registry::Registry;
use crate::registry::typed::encode;
use plan::REVISION_LABEL;

/// At most this many pod creations or deletions in flight per DaemonSet.
const BURST: usize = 16;

pub struct Ctx {
    registry: Arc<Registry>,
    recorder: Recorder,
}

pub async fn run(registry: Arc<Registry>, concurrency: usize, shutdown: CancellationToken) {
    let ctx = Arc::new(Ctx {
        registry: registry.clone(),
        recorder: events::recorder(registry.clone(), "daemonset-controller"),
    });
    let (daemonsets, reflect) =
        super::reflector::<DaemonSet>(&registry, &DAEMONSETS, "daemonset controller");
    // Any node change (a new node, a label, readiness, a deletion) can change
    // where every DaemonSet should run.
    let every = Arc::new(move |_: &serde_json::Value| {
        daemonsets
            .state()
            .iter()
            .map(|ds| {
                ObjectRef::new(
                    ds.metadata.namespace.as_deref(),
                    ds.metadata.name.as_deref().unwrap_or(""),
                )
            })
            .collect()
    });
    let controller = Controller::new("daemonset", registry, &DAEMONSETS)
        .owns(&PODS)
        .watches(&NODES, every)
        .concurrency(concurrency)
        .run(reconcile, backoff_policy, ctx, shutdown);
    tokio::select! {
        _ = controller => {}
        _ = reflect => {}
    }
}

/// The tolerations Kubernetes adds to every daemon pod
/// (`pkg/controller/daemon/util.AddOrUpdateDaemonPodTolerations`), so the pod
/// reads as it would there; Tugboat's own eligibility rules mirror them.
fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.to_string()),
        operator: Some("Exists".to_string()),
        effect: Some(effect.to_string()),
        ..Default::default()
    };
    let mut out = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        out.push(t("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    out
}

/// A pod of `ds` at revision `hash`, bound to `node`.
fn pod_for(ds: &DaemonSet, hash: &str, node: &str) -> Pod {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut metadata = template.metadata.unwrap_or_default();
    metadata
        .labels
        .get_or_insert_default()
        .insert(REVISION_LABEL.to_string(), hash.to_string());
    let mut spec = template.spec.unwrap_or_default();
    spec.node_name = Some(node.to_string());
    let host_network = spec.host_network == Some(true);
    let tolerations = spec.tolerations.get_or_insert_default();
    for t in daemon_tolerations(host_network) {
        if !tolerations
            .iter()
            .any(|x| x.key == t.key && x.effect == t.effect)
        {
            tolerations.push(t);
        }
    }
    Pod {
        metadata: ObjectMeta {
            name: None,
            generate_name: Some(format!("{}-", ds.metadata.name.as_deref().unwrap_or("ds"))),
            owner_references: Some(vec![controller_ref(ds)]),
            ..metadata
        },
        spec: Some(spec),
        status: None,
    }
}

pub async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(spec) = ds.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let ns = ds.metadata.namespace.as_deref().unwrap_or("default");
    let name = ds.metadata.name.as_deref().unwrap_or("");
    let uid = ds.metadata.uid.as_deref().unwrap_or("");
    let hash = template_hash(&encode(&DAEMONSETS, &spec.template)?);
    let nodes: Vec<Node> = ctx.registry.list_typed(&NODES, None).await?;
    let pods: Vec<Pod> = ctx
        .registry
        .list_controlled_typed::<Pod>(&PODS, Some(ns), uid)
        .await?;
    let plan = plan::plan(&ds, &nodes, &pods, &hash, jiff::Timestamp::now());

    let created: Vec<_> = futures::stream::iter(plan.create.iter().cloned())
        .map(|node| {
            let pod = pod_for(&ds, &hash, &node);
            let ns = ns.to_string();
            let registry = ctx.registry.clone();
            async move { registry.create_typed(&PODS, Some(&ns), &pod).await }
        })
        .buffer_unordered(BURST)
        .collect()
        .await;
    let mut failure = None;
    for r in created {
        match r {
            Ok(pod) => {
                let pod_name = pod.metadata.name.as_deref().unwrap_or("");
                ctx.recorder
                    .publish(
                        &*ds,
                        EventType::Normal,
                        "SuccessfulCreate",
                        &format!("Created pod: {pod_name}"),
                    )
                    .await;
            }
            Err(e) => {
                ctx.recorder
                    .publish(
                        &*ds,
                        EventType::Warning,
                        "FailedCreate",
                        &format!("Error creating: {}", e.message),
                    )
                    .await;
                failure = Some(e);
            }
        }
    }
    if let Err(e) = delete_pods(&ctx.registry, &ctx.recorder, &*ds, ns, plan.delete.clone()).await {
        failure = Some(e);
    }
    ctx.registry
        .write_status(&DAEMONSETS, Some(ns), name, &plan.status)
        .await?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    // A status written from the pods before this pass acted is refreshed by
    // the pod events its writes cause.
    Ok(match plan.recheck {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}
