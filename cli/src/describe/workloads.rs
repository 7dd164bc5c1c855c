//! Deployments, replica sets, replication controllers and daemon sets: replicas (or
//! nodes), strategy, the pod template, conditions, and which replica sets or pods
//! belong to them.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::template::{int_or_string, pod_template};
use super::{Writer, annotations, controlled_by, events, labels, none_if_empty, time};
use crate::columns::{labels_string, selector_string};

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
    conditions(
        &mut w,
        status
            .conditions
            .iter()
            .flatten()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_deref())),
    );
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
    conditions(
        &mut w,
        status
            .conditions
            .iter()
            .flatten()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_deref())),
    );
    events(&mut w, evs, now);
    w.finish()
}

/// A ReplicationController: a replica set with a plain label selector.
pub fn replication_controller(
    rc: &ReplicationController,
    pods: &[Pod],
    evs: &[Event],
    now: Timestamp,
) -> String {
    let mut w = Writer::default();
    let m = &rc.metadata;
    let spec = rc.spec.clone().unwrap_or_default();
    let status = rc.status.clone().unwrap_or_default();
    w.line(0, &format!("Name:\t{}", m.name.as_deref().unwrap_or("")));
    w.line(
        0,
        &format!("Namespace:\t{}", m.namespace.as_deref().unwrap_or("")),
    );
    w.line(
        0,
        &format!(
            "Selector:\t{}",
            none_if_empty(&labels_string(spec.selector.as_ref()))
        ),
    );
    labels(&mut w, "Labels", m.labels.as_ref());
    annotations(&mut w, "Annotations", m.annotations.as_ref());
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
    conditions(
        &mut w,
        status
            .conditions
            .iter()
            .flatten()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_deref())),
    );
    events(&mut w, evs, now);
    w.finish()
}

/// A DaemonSet: its node selector and how many nodes run its pod.
pub fn daemon_set(ds: &DaemonSet, pods: &[Pod], evs: &[Event], now: Timestamp) -> String {
    let mut w = Writer::default();
    let m = &ds.metadata;
    let spec = ds.spec.clone().unwrap_or_default();
    let status = ds.status.clone().unwrap_or_default();
    w.line(0, &format!("Name:\t{}", m.name.as_deref().unwrap_or("")));
    w.line(
        0,
        &format!(
            "Selector:\t{}",
            none_if_empty(&selector_string(&spec.selector))
        ),
    );
    let node_selector = labels_string(
        spec.template
            .spec
            .as_ref()
            .and_then(|s| s.node_selector.as_ref()),
    );
    w.line(
        0,
        &format!("Node-Selector:\t{}", none_if_empty(&node_selector)),
    );
    labels(&mut w, "Labels", m.labels.as_ref());
    annotations(&mut w, "Annotations", m.annotations.as_ref());
    // kubectl writes these without a tab: they stand apart from the aligned block.
    w.line(
        0,
        &format!(
            "Desired Number of Nodes Scheduled: {}",
            status.desired_number_scheduled
        ),
    );
    w.line(
        0,
        &format!(
            "Current Number of Nodes Scheduled: {}",
            status.current_number_scheduled
        ),
    );
    w.line(
        0,
        &format!(
            "Number of Nodes Scheduled with Up-to-date Pods: {}",
            status.updated_number_scheduled.unwrap_or(0)
        ),
    );
    w.line(
        0,
        &format!(
            "Number of Nodes Scheduled with Available Pods: {}",
            status.number_available.unwrap_or(0)
        ),
    );
    w.line(
        0,
        &format!(
            "Number of Nodes Misscheduled: {}",
            status.number_misscheduled
        ),
    );
    w.line(
        0,
        &format!("Pods Status:\t{}", pods_status(pods, m.uid.as_deref())),
    );
    pod_template(&mut w, Some(&spec.template));
    events(&mut w, evs, now);
    w.finish()
}

/// The `Conditions:` table of a workload (type, status, reason), when it has any.
fn conditions<'a>(w: &mut Writer, rows: impl Iterator<Item = (&'a str, &'a str, Option<&'a str>)>) {
    let mut rows = rows.peekable();
    if rows.peek().is_none() {
        return;
    }
    w.line(0, "Conditions:");
    w.line(1, "Type\tStatus\tReason");
    w.line(1, "----\t------\t------");
    for (type_, status, reason) in rows {
        w.line(1, &format!("{type_} \t{status}\t{}", reason.unwrap_or("")));
    }
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

    fn pod(name: &str, owner: &str, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default",
                         "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": owner, "controller": true}]},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn a_daemon_set_says_how_many_nodes_run_it() {
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "default", "uid": "ds1"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "template": {"metadata": {"labels": {"app": "agent"}},
                                  "spec": {"nodeSelector": {"disk": "ssd"},
                                           "containers": [{"name": "agent", "image": "agent:1"}]}}},
            "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1,
                       "updatedNumberScheduled": 2, "numberAvailable": 1, "numberMisscheduled": 0}
        }))
        .unwrap();
        let pods = [
            pod("agent-a", "ds1", "Running"),
            pod("agent-b", "ds1", "Pending"),
            pod("other", "zz", "Running"),
        ];
        let text = daemon_set(&ds, &pods, &[], now());
        for expected in [
            "Name:           agent\n",
            "Selector:       app=agent\n",
            "Node-Selector:  disk=ssd\n",
            "Desired Number of Nodes Scheduled: 2\n",
            "Number of Nodes Scheduled with Available Pods: 1\n",
            "Number of Nodes Misscheduled: 0\n",
            "Pods Status:  1 Running / 1 Waiting / 0 Succeeded / 0 Failed\n",
            "    Image:         agent:1\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }

    #[test]
    fn a_replication_controller_reads_like_a_replica_set() {
        let rc: ReplicationController = serde_json::from_value(json!({
            "metadata": {"name": "old", "namespace": "default", "uid": "rc1"},
            "spec": {"replicas": 2, "selector": {"app": "old"},
                     "template": {"metadata": {"labels": {"app": "old"}},
                                  "spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
            "status": {"replicas": 1}
        }))
        .unwrap();
        let text = replication_controller(&rc, &[pod("old-a", "rc1", "Running")], &[], now());
        for expected in [
            "Selector:     app=old\n",
            "Replicas:     1 current / 2 desired\n",
            "Pods Status:  1 Running / 0 Waiting / 0 Succeeded / 0 Failed\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }
}
