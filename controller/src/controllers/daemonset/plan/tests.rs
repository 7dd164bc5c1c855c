//! The DaemonSet plan on hand-built nodes and pods.

use std::collections::BTreeMap;

use super::*;
use k8s_openapi::api::apps::v1::{DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeCondition, NodeSelector, NodeSpec, NodeStatus, PodCondition,
    PodSpec, PodStatus, PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

const NEW: &str = "new";
const OLD: &str = "old";

fn now() -> jiff::Timestamp {
    "2026-12-02T12:00:00Z".parse().unwrap()
}

fn ds(strategy: Option<(&str, i32, i32)>) -> DaemonSet {
    DaemonSet {
        metadata: ObjectMeta {
            name: Some("agent".into()),
            generation: Some(2),
            ..Default::default()
        },
        spec: Some(DaemonSetSpec {
            template: PodTemplateSpec {
                spec: Some(PodSpec::default()),
                ..Default::default()
            },
            update_strategy: strategy.map(|(t, unavailable, surge)| DaemonSetUpdateStrategy {
                type_: Some(t.into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(unavailable)),
                    max_surge: Some(IntOrString::Int(surge)),
                }),
            }),
            ..Default::default()
        }),
        status: None,
    }
}

fn node(name: &str, ready: bool) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: None,
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "Unknown" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fn labelled(mut n: Node, k: &str, v: &str) -> Node {
    n.metadata
        .labels
        .get_or_insert_default()
        .insert(k.into(), v.into());
    n
}

fn pod(name: &str, node: &str, revision: &str, ready: bool) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(REVISION_LABEL.into(), revision.into())])),
            creation_timestamp: Some(Time("2026-12-02T11:00:00Z".parse().unwrap())),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                last_transition_time: Some(Time("2026-12-02T11:00:00Z".parse().unwrap())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn every_ready_node_without_a_pod_gets_one() {
    let nodes = [node("a", true), node("b", true), node("c", false)];
    let p = plan(&ds(None), &nodes, &[pod("x", "a", NEW, true)], NEW, now());
    assert_eq!(p.create, ["b"], "a has one; c is not ready");
    assert!(p.delete.is_empty());
    assert_eq!(p.status.desired_number_scheduled, 2);
    assert_eq!(p.status.current_number_scheduled, 1);
    assert_eq!(p.status.number_ready, 1);
    assert_eq!(p.status.updated_number_scheduled, Some(1));
    assert_eq!(p.status.observed_generation, Some(2));
}

#[test]
fn a_cordoned_node_keeps_and_gets_its_pod_and_a_not_ready_one_keeps_it() {
    let mut cordoned = node("a", true);
    cordoned.spec = Some(NodeSpec {
        unschedulable: Some(true),
        ..Default::default()
    });
    let nodes = [cordoned, node("b", false)];
    let p = plan(&ds(None), &nodes, &[pod("x", "b", NEW, true)], NEW, now());
    assert_eq!(p.create, ["a"], "unschedulable is tolerated");
    assert!(p.delete.is_empty(), "the NotReady node keeps its pod");
    assert_eq!(p.status.number_misscheduled, 1, "as Kubernetes counts it");
}

#[test]
fn the_node_selector_and_required_affinity_pick_the_nodes() {
    let mut d = ds(None);
    let spec = d.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    spec.node_selector = Some(BTreeMap::from([("disk".into(), "ssd".into())]));
    let nodes = [
        labelled(node("a", true), "disk", "ssd"),
        node("b", true),
        labelled(labelled(node("c", true), "disk", "ssd"), "zone", "x"),
    ];
    let p = plan(&d, &nodes, &[pod("on-b", "b", NEW, true)], NEW, now());
    assert_eq!(sorted(p.create), ["a", "c"]);
    assert_eq!(p.delete, ["on-b"], "b no longer matches: its pod goes");

    let spec = d.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    spec.affinity = Some(Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: "zone".into(),
                        operator: "NotIn".into(),
                        values: Some(vec!["x".into()]),
                    }]),
                    match_fields: None,
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let p = plan(&d, &nodes, &[], NEW, now());
    assert_eq!(p.create, ["a"], "c is in zone x");
}

#[test]
fn a_node_being_deleted_or_gone_loses_its_pod() {
    let mut leaving = node("a", true);
    leaving.metadata.deletion_timestamp = Some(Time(now()));
    let pods = [
        pod("on-a", "a", NEW, true),
        pod("on-gone", "gone", NEW, true),
    ];
    let p = plan(&ds(None), &[leaving], &pods, NEW, now());
    assert_eq!(sorted(p.delete), ["on-a", "on-gone"]);
    assert!(p.create.is_empty());
}

#[test]
fn duplicates_and_failed_pods_are_deleted_and_terminating_ones_waited_for() {
    let mut second = pod("second", "a", NEW, true);
    second.metadata.creation_timestamp = Some(Time("2026-12-02T11:30:00Z".parse().unwrap()));
    let mut failed = pod("failed", "b", NEW, false);
    failed.status.as_mut().unwrap().phase = Some("Failed".into());
    let mut going = pod("going", "c", NEW, true);
    going.metadata.deletion_timestamp = Some(Time(now()));
    let nodes = [node("a", true), node("b", true), node("c", true)];
    let pods = [second, pod("first", "a", NEW, true), failed, going];
    let p = plan(&ds(None), &nodes, &pods, NEW, now());
    assert_eq!(sorted(p.delete), ["failed", "second"], "the oldest stays");
    assert!(
        p.create.is_empty(),
        "b gets its pod after the failed one is gone, c after the terminating one: {:?}",
        p.create
    );
}

#[test]
fn a_rolling_update_replaces_at_most_max_unavailable_at_once() {
    let nodes = [node("a", true), node("b", true), node("c", true)];
    let pods = [
        pod("pa", "a", OLD, true),
        pod("pb", "b", OLD, true),
        pod("pc", "c", OLD, true),
    ];
    let p = plan(
        &ds(Some(("RollingUpdate", 1, 0))),
        &nodes,
        &pods,
        NEW,
        now(),
    );
    assert_eq!(p.delete.len(), 1, "{:?}", p.delete);
    assert_eq!(p.status.updated_number_scheduled, Some(0));
    let p = plan(
        &ds(Some(("RollingUpdate", 2, 0))),
        &nodes,
        &pods,
        NEW,
        now(),
    );
    assert_eq!(p.delete.len(), 2);
    // One node is already being replaced (its new pod not ready yet): no more.
    let pods = [
        pod("pa", "a", NEW, false),
        pod("pb", "b", OLD, true),
        pod("pc", "c", OLD, true),
    ];
    let p = plan(
        &ds(Some(("RollingUpdate", 1, 0))),
        &nodes,
        &pods,
        NEW,
        now(),
    );
    assert!(p.delete.is_empty(), "{:?}", p.delete);
    // An old pod that is not available anyway is replaced at once.
    let pods = [
        pod("pa", "a", NEW, false),
        pod("pb", "b", OLD, false),
        pod("pc", "c", OLD, true),
    ];
    let p = plan(
        &ds(Some(("RollingUpdate", 1, 0))),
        &nodes,
        &pods,
        NEW,
        now(),
    );
    assert_eq!(p.delete, ["pb"]);
}

#[test]
fn a_surge_creates_the_new_pod_before_deleting_the_old_one() {
    let nodes = [node("a", true), node("b", true)];
    let strategy = Some(("RollingUpdate", 0, 1));
    let pods = [pod("pa", "a", OLD, true), pod("pb", "b", OLD, true)];
    let p = plan(&ds(strategy), &nodes, &pods, NEW, now());
    assert_eq!(p.create.len(), 1, "one node at a time: {:?}", p.create);
    assert!(p.delete.is_empty());
    // The new pod on a is not available yet: both stay, nothing else starts.
    let pods = [
        pod("pa", "a", OLD, true),
        pod("na", "a", NEW, false),
        pod("pb", "b", OLD, true),
    ];
    let p = plan(&ds(strategy), &nodes, &pods, NEW, now());
    assert!(p.create.is_empty() && p.delete.is_empty(), "{p:?}");
    // Once it is, the old one goes.
    let pods = [
        pod("pa", "a", OLD, true),
        pod("na", "a", NEW, true),
        pod("pb", "b", OLD, true),
    ];
    let p = plan(&ds(strategy), &nodes, &pods, NEW, now());
    assert_eq!(p.delete, ["pa"]);
}

#[test]
fn on_delete_leaves_old_pods_alone() {
    let nodes = [node("a", true)];
    let pods = [pod("pa", "a", OLD, true)];
    let p = plan(&ds(Some(("OnDelete", 1, 0))), &nodes, &pods, NEW, now());
    assert!(p.delete.is_empty() && p.create.is_empty());
    assert_eq!(p.status.updated_number_scheduled, Some(0));
}

#[test]
fn min_ready_seconds_delays_availability_and_asks_to_look_again() {
    let mut d = ds(None);
    d.spec.as_mut().unwrap().min_ready_seconds = Some(7200);
    let p = plan(
        &d,
        &[node("a", true)],
        &[pod("pa", "a", NEW, true)],
        NEW,
        now(),
    );
    assert_eq!(p.status.number_ready, 1);
    assert_eq!(p.status.number_available, Some(0));
    assert_eq!(p.status.number_unavailable, Some(1));
    assert_eq!(p.recheck, Some(Duration::from_secs(3600)));
}

#[test]
fn percentages_resolve_against_the_desired_nodes() {
    assert_eq!(
        resolve(Some(&IntOrString::String("50%".into())), 3, false),
        1
    );
    assert_eq!(
        resolve(Some(&IntOrString::String("50%".into())), 3, true),
        2
    );
}
