//! The columns of the pod-owning workloads kubectl's printers know: Deployments
//! (READY), ReplicaSets and ReplicationControllers (DESIRED CURRENT READY), and
//! DaemonSets (one pod per node: DESIRED … NODE SELECTOR); all of them with
//! CONTAINERS, IMAGES and SELECTOR under `-o wide`.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Container, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{
    AGE, CONTAINERS, Column, IMAGES, Layout, NAME, SELECTOR, age, col, int, labels_string, name,
    or_none, selector_string,
};

pub(super) const DEPLOYMENT: &[Column] = &[
    NAME,
    col("Ready", "Number of the pod with ready state"),
    int(
        "Up-to-date",
        "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
    ),
    int(
        "Available",
        "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

pub(super) const REPLICA_SET: &[Column] = &[
    NAME,
    int("Desired", "Replicas is the number of desired replicas."),
    int(
        "Current",
        "Replicas is the most recently observed number of replicas.",
    ),
    int(
        "Ready",
        "The number of ready replicas for this replica set.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

pub(super) const REPLICATION_CONTROLLER: &[Column] = &[
    NAME,
    int(
        "Desired",
        "Replicas is the number of desired replicas. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1.",
    ),
    int(
        "Current",
        "Replicas is the most recently observed number of replicas.",
    ),
    int(
        "Ready",
        "The number of ready replicas for this replication controller.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

pub(super) const DAEMON_SET: &[Column] = &[
    NAME,
    int(
        "Desired",
        "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod).",
    ),
    int(
        "Current",
        "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
    ),
    int(
        "Ready",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.",
    ),
    int(
        "Up-to-date",
        "The total number of nodes that are running updated daemon pod",
    ),
    int(
        "Available",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
    ),
    col(
        "Node Selector",
        "NodeSelector is a selector which must be true for the pod to fit on a node.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

pub(super) fn deployment_row(d: &Deployment, layout: &Layout) -> Vec<String> {
    let spec = d.spec.as_ref();
    let status = d.status.clone().unwrap_or_default();
    let desired = spec.and_then(|s| s.replicas).unwrap_or(1);
    let mut cells = vec![
        name(&d.metadata),
        format!("{}/{}", status.ready_replicas.unwrap_or(0), desired),
        status.updated_replicas.unwrap_or(0).to_string(),
        status.available_replicas.unwrap_or(0).to_string(),
        age(&d.metadata, layout),
    ];
    if layout.wide {
        cells.extend(template_columns(
            spec.map(|s| &s.template),
            spec.map(|s| &s.selector),
        ));
    }
    cells
}

pub(super) fn replica_set_row(rs: &ReplicaSet, layout: &Layout) -> Vec<String> {
    let spec = rs.spec.as_ref();
    let status = rs.status.clone().unwrap_or_default();
    let mut cells = vec![
        name(&rs.metadata),
        spec.and_then(|s| s.replicas).unwrap_or(1).to_string(),
        status.replicas.to_string(),
        status.ready_replicas.unwrap_or(0).to_string(),
        age(&rs.metadata, layout),
    ];
    if layout.wide {
        cells.extend(template_columns(
            spec.and_then(|s| s.template.as_ref()),
            spec.map(|s| &s.selector),
        ));
    }
    cells
}

/// A ReplicationController's selector is a plain label map, printed as
/// `app=web` (`<none>` when empty).
pub(super) fn replication_controller_row(
    rc: &ReplicationController,
    layout: &Layout,
) -> Vec<String> {
    let spec = rc.spec.as_ref();
    let status = rc.status.clone().unwrap_or_default();
    let mut cells = vec![
        name(&rc.metadata),
        spec.and_then(|s| s.replicas).unwrap_or(1).to_string(),
        status.replicas.to_string(),
        status.ready_replicas.unwrap_or(0).to_string(),
        age(&rc.metadata, layout),
    ];
    if layout.wide {
        let [names, images] = container_columns(spec.and_then(|s| s.template.as_ref()));
        let selector = labels_string(spec.and_then(|s| s.selector.as_ref()));
        cells.extend([names, images, or_none(Some(&selector))]);
    }
    cells
}

pub(super) fn daemon_set_row(ds: &DaemonSet, layout: &Layout) -> Vec<String> {
    let spec = ds.spec.as_ref();
    let status = ds.status.clone().unwrap_or_default();
    let node_selector = labels_string(
        spec.and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.node_selector.as_ref()),
    );
    let mut cells = vec![
        name(&ds.metadata),
        status.desired_number_scheduled.to_string(),
        status.current_number_scheduled.to_string(),
        status.number_ready.to_string(),
        status.updated_number_scheduled.unwrap_or(0).to_string(),
        status.number_available.unwrap_or(0).to_string(),
        or_none(Some(&node_selector)),
        age(&ds.metadata, layout),
    ];
    if layout.wide {
        cells.extend(template_columns(
            spec.map(|s| &s.template),
            spec.map(|s| &s.selector),
        ));
    }
    cells
}

/// CONTAINERS and IMAGES: every container's name and image, comma-separated.
pub(super) fn container_columns(template: Option<&PodTemplateSpec>) -> [String; 2] {
    let containers: &[Container] = template
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    let images: Vec<&str> = containers
        .iter()
        .map(|c| c.image.as_deref().unwrap_or(""))
        .collect();
    [names.join(","), images.join(",")]
}

/// CONTAINERS, IMAGES and SELECTOR of a workload.
pub(super) fn template_columns(
    template: Option<&PodTemplateSpec>,
    selector: Option<&LabelSelector>,
) -> [String; 3] {
    let [names, images] = container_columns(template);
    [
        names,
        images,
        or_none(selector.map(selector_string).as_deref()),
    ]
}

#[cfg(test)]
mod tests {
    use crate::columns::tests::layout;
    use crate::columns::{header, row};
    use crate::resource::{DAEMONSETS, REPLICATIONCONTROLLERS};
    use serde_json::json;

    #[test]
    fn a_replication_controller_prints_desired_current_ready_and_its_label_selector() {
        let rc = json!({
            "metadata": {"name": "old", "creationTimestamp": "2026-01-01T11:00:00Z"},
            "spec": {"replicas": 3, "selector": {"app": "old"},
                     "template": {"spec": {"containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "nginx"}]}}},
            "status": {"replicas": 2, "readyReplicas": 1}
        });
        let mut l = layout();
        assert_eq!(
            header(&REPLICATIONCONTROLLERS, &l),
            ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
        );
        assert_eq!(
            row(&REPLICATIONCONTROLLERS, &rc, &l).unwrap(),
            ["old", "3", "2", "1", "60m"]
        );
        l.wide = true;
        assert_eq!(
            header(&REPLICATIONCONTROLLERS, &l)[5..],
            ["CONTAINERS", "IMAGES", "SELECTOR"]
        );
        assert_eq!(
            row(&REPLICATIONCONTROLLERS, &rc, &l).unwrap()[5..],
            ["a,b", "busybox,nginx", "app=old"]
        );
        // No status yet, no replicas given: the default of one is desired.
        let bare = json!({"metadata": {"name": "new"}, "spec": {"selector": {}}});
        assert_eq!(
            row(&REPLICATIONCONTROLLERS, &bare, &l).unwrap()[1..4],
            ["1", "0", "0"]
        );
        assert_eq!(
            row(&REPLICATIONCONTROLLERS, &bare, &l).unwrap()[7],
            "<none>"
        );
    }

    #[test]
    fn a_daemon_set_prints_its_node_counts_and_node_selector() {
        let ds = json!({
            "metadata": {"name": "agent", "creationTimestamp": "2026-01-01T11:59:00Z"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "template": {"spec": {"nodeSelector": {"disk": "ssd", "arch": "amd64"},
                                           "containers": [{"name": "agent", "image": "agent:1"}]}}},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                       "updatedNumberScheduled": 1, "numberAvailable": 2, "numberMisscheduled": 0}
        });
        let mut l = layout();
        assert_eq!(
            header(&DAEMONSETS, &l),
            [
                "NAME",
                "DESIRED",
                "CURRENT",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "NODE SELECTOR",
                "AGE"
            ]
        );
        assert_eq!(
            row(&DAEMONSETS, &ds, &l).unwrap(),
            [
                "agent",
                "3",
                "3",
                "2",
                "1",
                "2",
                "arch=amd64,disk=ssd",
                "60s"
            ]
        );
        l.wide = true;
        assert_eq!(
            row(&DAEMONSETS, &ds, &l).unwrap()[8..],
            ["agent", "agent:1", "app=agent"]
        );
        let bare = json!({"metadata": {"name": "x"},
                          "spec": {"selector": {}, "template": {"spec": {"containers": []}}}});
        assert_eq!(row(&DAEMONSETS, &bare, &l).unwrap()[6], "<none>");
    }
}
