//! Deployments and replica sets: replicas, strategy, the pod template, conditions,
//! and which replica sets or pods belong to them.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::template::{int_or_string, pod_template};
use super::{Writer, annotations, controlled_by, events, labels, none_if_empty, time};
use crate::columns::selector_string;

fn replica_sets_summary(sets: &[&ReplicaSet]) -> String {
    if sets.is_empty() {
        return "<none>".to_string();
    }
    sets.iter()
        .map(|rs| {
            format!(
                "{} ({}/{} replicas created)",
                rs.metadata.name.as_deref().unwrap_or(""),
                rs.status.as_ref().map_or(0, |s| s.replicas),
                rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The replica sets a deployment controls, split into the old ones still running pods
/// and the new one (whose template is the deployment's), as kubectl shows them.
pub fn split_replica_sets<'a>(
    d: &Deployment,
    sets: &'a [ReplicaSet],
) -> (Vec<&'a ReplicaSet>, Option<&'a ReplicaSet>) {
    let uid = d.metadata.uid.as_deref();
    let owned: Vec<&ReplicaSet> = sets
        .iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
        })
        .collect();
    let without_hash = |t: Option<&PodTemplateSpec>| {
        let mut t = t.cloned().unwrap_or_default();
        if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove("pod-template-hash");
        }
        serde_json::to_value(t).unwrap_or_default()
    };
    let wanted = without_hash(d.spec.as_ref().map(|s| &s.template));
    let revision = |m: &ObjectMeta| {
        m.annotations
            .as_ref()
            .and_then(|a| a.get("deployment.kubernetes.io/revision"))
            .cloned()
    };
    let new = owned
        .iter()
        .copied()
        .find(|rs| without_hash(rs.spec.as_ref().and_then(|s| s.template.as_ref())) == wanted)
        .or_else(|| {
            let rev = revision(&d.metadata)?;
            owned
                .iter()
                .copied()
                .find(|rs| revision(&rs.metadata).as_ref() == Some(&rev))
        });
    let old = owned
        .into_iter()
        .filter(|rs| new.is_none_or(|n| !std::ptr::eq(*rs, n)))
        .filter(|rs| rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0)
        .collect();
    (old, new)
}

pub fn deployment(
    d: &Deployment,
    replica_sets: &[ReplicaSet],
    evs: &[Event],
    now: Timestamp,
) -> String {
    let mut w = Writer::default();
    let m = &d.metadata;
    let spec = d.spec.clone().unwrap_or_default();
    let status = d.status.clone().unwrap_or_default();
    w.line(0, &format!("Name:\t{}", m.name.as_deref().unwrap_or("")));
    w.line(
        0,
        &format!("Namespace:\t{}", m.namespace.as_deref().unwrap_or("")),
    );
    w.line(
        0,
        &format!(
            "CreationTimestamp:\t{}",
            time(m.creation_timestamp.as_ref())
        ),
    );
    labels(&mut w, "Labels", m.labels.as_ref());
    annotations(&mut w, "Annotations", m.annotations.as_ref());
    w.line(
        0,
        &format!(
            "Selector:\t{}",
            none_if_empty(&selector_string(&spec.selector))
        ),
    );
    w.line(
        0,
        &format!(
            "Replicas:\t{} desired | {} updated | {} total | {} available | {} unavailable",
            spec.replicas.unwrap_or(1),
            status.updated_replicas.unwrap_or(0),
            status.replicas.unwrap_or(0),
            status.available_replicas.unwrap_or(0),
            status.unavailable_replicas.unwrap_or(0),
        ),
    );
    let strategy = spec.strategy.clone().unwrap_or_default();
    w.line(
        0,
        &format!("StrategyType:\t{}", strategy.type_.as_deref().unwrap_or("")),
    );
    w.line(
        0,
        &format!("MinReadySeconds:\t{}", spec.min_ready_seconds.unwrap_or(0)),
    );
    if let Some(ru) = &strategy.rolling_update {
        w.line(
            0,
            &format!(
                "RollingUpdateStrategy:\t{} max unavailable, {} max surge",
                int_or_string(ru.max_unavailable.as_ref()),
                int_or_string(ru.max_surge.as_ref())
            ),
        );
    }
    pod_template(&mut w, Some(&spec.template));
    if let Some(conditions) = status.conditions.as_ref().filter(|c| !c.is_empty()) {
        w.line(0, "Conditions:");
        w.line(1, "Type\tStatus\tReason");
        w.line(1, "----\t------\t------");
        for c in conditions {
            w.line(
                1,
                &format!(
                    "{} \t{}\t{}",
                    c.type_,
                    c.status,
                    c.reason.as_deref().unwrap_or("")
                ),
            );
        }
    }
    let (old, new) = split_replica_sets(d, replica_sets);
    w.line(
        0,
        &format!("OldReplicaSets:\t{}", replica_sets_summary(&old)),
    );
    w.line(
        0,
        &format!(
            "NewReplicaSet:\t{}",
            replica_sets_summary(&new.into_iter().collect::<Vec<_>>())
        ),
    );
    events(&mut w, evs, now);
    w.finish()
}

/// `3 Running / 0 Waiting / 0 Succeeded / 0 Failed` over the pods a workload controls.
fn pods_status(pods: &[Pod], owner_uid: Option<&str>) -> String {
    let (mut running, mut waiting, mut succeeded, mut failed) = (0, 0, 0, 0);
    for p in pods.iter().filter(|p| {
        p.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == owner_uid)
    }) {
        match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Running") => running += 1,
            Some("Succeeded") => succeeded += 1,
            Some("Failed") => failed += 1,
            _ => waiting += 1,
        }
    }
    format!("{running} Running / {waiting} Waiting / {succeeded} Succeeded / {failed} Failed")
}

pub fn replica_set(rs: &ReplicaSet, pods: &[Pod], evs: &[Event], now: Timestamp) -> String {
    let mut w = Writer::default();
    let m = &rs.metadata;
    let spec = rs.spec.clone().unwrap_or_default();
    let status = rs.status.clone().unwrap_or_default();
    w.line(0, &format!("Name:\t{}", m.name.as_deref().unwrap_or("")));
    w.line(
        0,
        &format!("Namespace:\t{}", m.namespace.as_deref().unwrap_or("")),
    );
    w.line(
        0,
        &format!(
            "Selector:\t{}",
            none_if_empty(&selector_string(&spec.selector))
        ),
    );
    labels(&mut w, "Labels", m.labels.as_ref());
    annotations(&mut w, "Annotations", m.annotations.as_ref());
    if let Some(owner) = controlled_by(m) {
        w.line(0, &format!("Controlled By:\t{owner}"));
    }
    w.line(
        0,
        &format!(
            "Replicas:\t{} current / {} desired",
            status.replicas,
            spec.replicas.unwrap_or(1)
        ),
    );
    w.line(
        0,
        &format!("Pods Status:\t{}", pods_status(pods, m.uid.as_deref())),
    );
    pod_template(&mut w, spec.template.as_ref());
    if let Some(conditions) = status.conditions.as_ref().filter(|c| !c.is_empty()) {
        w.line(0, "Conditions:");
        w.line(1, "Type\tStatus\tReason");
        w.line(1, "----\t------\t------");
        for c in conditions {
            w.line(
                1,
                &format!(
                    "{} \t{}\t{}",
                    c.type_,
                    c.status,
                    c.reason.as_deref().unwrap_or("")
                ),
            );
        }
    }
    events(&mut w, evs, now);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe::tests::{event, now};
    use crate::merge::LAST_APPLIED;
    use serde_json::json;

    fn web_deployment() -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "d1",
                         "creationTimestamp": "2026-01-01T11:00:00Z",
                         "labels": {"app": "web", "tier": "front"},
                         "annotations": {LAST_APPLIED: "{}", "deployment.kubernetes.io/revision": "1"}},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "web", "image": "nginx:1.27",
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "resources": {"limits": {"cpu": "500m"}},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 80}},
                        "env": [{"name": "MODE", "value": "prod"}]
                    }]}
                }
            },
            "status": {"replicas": 3, "updatedReplicas": 3, "availableReplicas": 0, "unavailableReplicas": 3,
                       "conditions": [{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"}]}
        }))
        .unwrap()
    }

    fn replica_set(name: &str, image: &str, replicas: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": name,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "d1", "controller": true}]},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web", "pod-template-hash": name}},
                                  "spec": {"containers": [{
                                      "name": "web", "image": image,
                                      "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                      "resources": {"limits": {"cpu": "500m"}},
                                      "livenessProbe": {"httpGet": {"path": "/healthz", "port": 80}},
                                      "env": [{"name": "MODE", "value": "prod"}]
                                  }]}}},
            "status": {"replicas": replicas}
        }))
        .unwrap()
    }

    #[test]
    fn a_deployment_reads_like_kubectl_describe() {
        let sets = [
            replica_set("web-new", "nginx:1.27", 3),
            replica_set("web-old", "nginx:1.26", 1),
        ];
        let text = deployment(
            &web_deployment(),
            &sets,
            &[event("ScalingReplicaSet", 1)],
            now(),
        );
        for expected in [
            "Name:                   web\n",
            "Namespace:              default\n",
            "Labels:                 app=web\n                        tier=front\n",
            "Annotations:            deployment.kubernetes.io/revision: 1\n",
            "Selector:               app=web\n",
            "Replicas:               3 desired | 3 updated | 3 total | 0 available | 3 unavailable\n",
            "StrategyType:           RollingUpdate\n",
            "RollingUpdateStrategy:  25% max unavailable, 25% max surge\n",
            "Pod Template:\n  Labels:  app=web\n  Containers:\n   web:\n",
            "    Image:      nginx:1.27\n",
            "    Port:       80/TCP\n",
            "    Host Port:  0/TCP\n",
            "    Limits:\n      cpu:     500m\n",
            "    Liveness:  http-get http://:80/healthz delay=0s timeout=1s period=10s #success=1 #failure=3\n",
            "    Environment:\n      MODE:        prod\n",
            "  Available      False   MinimumReplicasUnavailable\n",
            "OldReplicaSets:  web-old (1/1 replicas created)\n",
            "NewReplicaSet:   web-new (3/3 replicas created)\n",
            "Events:\n  Type    Reason             Age   From                   Message\n",
            "  Normal  ScalingReplicaSet  10m   deployment-controller  Scaled up replica set web-new to 3\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains(LAST_APPLIED), "{text}");
    }
}
