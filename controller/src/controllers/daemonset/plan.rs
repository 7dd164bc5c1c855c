//! What a DaemonSet should do now, as a pure function of the DaemonSet, the
//! nodes and its pods: which nodes need a pod, which pods must go (wrong node,
//! duplicates, failed, or replaced by a rolling update), and its status —
//! Kubernetes' daemon controller (`pkg/controller/daemon`: `manage`,
//! `rollingUpdate`, `updateDaemonSetStatus`) without the I/O.
//!
//! Eligibility follows `NodeShouldRunDaemonPod`: the pod's `nodeSelector` and
//! required node affinity must match the node, and the node must not be
//! being deleted. Daemon pods tolerate `node.kubernetes.io/unschedulable`, so a
//! cordoned node keeps and gets its pod; they tolerate not-ready and unreachable
//! only for `NoExecute`, so a NotReady node keeps its pod (`shouldContinueRunning`)
//! but gets no new one (`shouldRun` is false there, as the node's
//! `not-ready:NoSchedule` taint is not tolerated).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::controllers::{pod_is_finished, pod_node, pod_ready_since};

/// The label carrying the revision (template hash) a daemon pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// Whether the DaemonSet wants a pod on a node: may one be created there, and
/// may an existing one stay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eligibility {
    pub should_run: bool,
    pub should_continue: bool,
}

/// Kubernetes' `NodeShouldRunDaemonPod` for the constraints Tugboat knows.
pub fn eligibility(ds: &DaemonSet, node: &Node) -> Eligibility {
    let no = Eligibility {
        should_run: false,
        should_continue: false,
    };
    if node.metadata.deletion_timestamp.is_some() {
        return no;
    }
    let spec = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .cloned()
        .unwrap_or_default();
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let name = node.metadata.name.as_deref().unwrap_or("");
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let affinity_ok = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_none_or(|required| {
            // Terms are ORed; an empty list matches nothing, as in Kubernetes.
            required
                .node_selector_terms
                .iter()
                .any(|t| term_matches(t, labels, name))
        });
    if !(selector_ok && affinity_ok) {
        return no;
    }
    Eligibility {
        should_run: node_ready(node),
        should_continue: true,
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// A node selector term: every expression on labels and fields must hold
/// (an empty term matches nothing).
fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>, name: &str) -> bool {
    let exprs = term.match_expressions.iter().flatten();
    let fields = term.match_fields.iter().flatten();
    let mut any = false;
    for e in exprs {
        any = true;
        if !requirement_matches(e, labels.get(&e.key).map(String::as_str)) {
            return false;
        }
    }
    for f in fields {
        any = true;
        let value = (f.key == "metadata.name").then_some(name);
        if !requirement_matches(f, value) {
            return false;
        }
    }
    any
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(number),
                values.first().and_then(|b| number(b)),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// The revision a pod was made from.
pub fn revision_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .map(String::as_str)
}

/// Whether the pod has been ready for `min_ready_seconds` at `now`; if it is
/// ready but not for long enough, how long until it will be available.
fn availability(pod: &Pod, min_ready: i64, now: jiff::Timestamp) -> (bool, Option<Duration>) {
    match pod_ready_since(pod) {
        None => (false, None),
        Some(since) => {
            let ready_for = since
                .map(|s| now.duration_since(s).as_secs())
                .unwrap_or(i64::MAX);
            if ready_for >= min_ready {
                (true, None)
            } else {
                let wait = Duration::from_secs((min_ready - ready_for).max(1) as u64);
                (false, Some(wait))
            }
        }
    }
}

/// What to do now.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Nodes to create a pod of the current revision on.
    pub create: Vec<String>,
    /// Pods to delete, by name.
    pub delete: Vec<String>,
    pub status: DaemonSetStatus,
    /// When to look again for a pod that becomes available after `minReadySeconds`.
    pub recheck: Option<Duration>,
}

/// Resolves an int-or-percent against `total` (percentages of the desired
/// number of nodes; `round_up` as Kubernetes does for surge).
fn resolve(v: Option<&IntOrString>, total: i64, round_up: bool) -> i64 {
    match v {
        Some(IntOrString::Int(i)) => i64::from(*i).max(0),
        Some(IntOrString::String(s)) => {
            let p: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let x = p * total;
            if round_up { (x + 99) / 100 } else { x / 100 }
        }
        None => 0,
    }
}

/// The pods of one node that are not terminating, oldest first.
struct OnNode<'a> {
    live: Vec<&'a Pod>,
}

/// The plan for `ds` at `now`, its current revision being `hash`. `pods` are
/// the pods it owns (terminating ones too).
pub fn plan(
    ds: &DaemonSet,
    nodes: &[Node],
    pods: &[Pod],
    hash: &str,
    now: jiff::Timestamp,
) -> Plan {
    let spec = ds.spec.clone().unwrap_or_default();
    let min_ready = i64::from(spec.min_ready_seconds.unwrap_or(0).max(0));
    let mut recheck: Option<Duration> = None;
    let mut available = |p: &Pod| {
        let (ok, wait) = availability(p, min_ready, now);
        if let Some(w) = wait {
            recheck = Some(recheck.map_or(w, |r: Duration| r.min(w)));
        }
        ok
    };
    let mut by_node: BTreeMap<&str, OnNode> = BTreeMap::new();
    let mut delete: Vec<String> = Vec::new();
    let name_of = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    let mut sorted: Vec<&Pod> = pods.iter().collect();
    sorted.sort_by_key(|p| {
        (
            p.metadata.creation_timestamp.clone(),
            p.metadata.name.clone(),
        )
    });
    for p in sorted {
        let Some(node) = pod_node(p) else {
            // Ours are created bound; an unbound one is not of our making.
            if p.metadata.deletion_timestamp.is_none() {
                delete.push(name_of(p));
            }
            continue;
        };
        // A node with only terminating pods is in the map: it gets its new
        // pod once they are gone (no two pods with the same host ports).
        let entry = by_node.entry(node).or_insert(OnNode { live: Vec::new() });
        if p.metadata.deletion_timestamp.is_none() {
            entry.live.push(p);
        }
    }
    let eligible: BTreeMap<&str, Eligibility> = nodes
        .iter()
        .map(|n| (n.metadata.name.as_deref().unwrap_or(""), eligibility(ds, n)))
        .collect();
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let on_delete = strategy.type_.as_deref() == Some("OnDelete");
    let desired = eligible.values().filter(|e| e.should_run).count() as i64;
    let rolling = strategy.rolling_update.clone().unwrap_or_default();
    let max_surge = if on_delete {
        0
    } else {
        resolve(rolling.max_surge.as_ref(), desired, true)
    };
    let mut max_unavailable = resolve(rolling.max_unavailable.as_ref(), desired, false);
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }

    // manage: the right number of pods on the right nodes.
    let mut create: Vec<String> = Vec::new();
    for (node, e) in &eligible {
        let on = by_node.get(*node);
        match on {
            None if e.should_run => create.push((*node).to_string()),
            None => {}
            Some(on) if !e.should_continue => {
                delete.extend(on.live.iter().map(|p| name_of(p)));
            }
            Some(on) => {
                let mut running: Vec<&Pod> = Vec::new();
                for p in &on.live {
                    if pod_is_finished(p) {
                        // Failed (or exited): Kubernetes deletes it and makes
                        // another.
                        delete.push(name_of(p));
                    } else {
                        running.push(p);
                    }
                }
                if running.len() > 1 {
                    // A surge may hold one old and one new pod; otherwise keep
                    // the oldest (Kubernetes keeps the oldest too).
                    let surging = max_surge > 0
                        && running.len() == 2
                        && (revision_of(running[0]) == Some(hash))
                            != (revision_of(running[1]) == Some(hash));
                    if !surging {
                        delete.extend(running[1..].iter().map(|p| name_of(p)));
                    }
                }
            }
        }
    }
    // Pods on nodes that no longer exist.
    for (node, on) in &by_node {
        if !eligible.contains_key(node) {
            delete.extend(on.live.iter().map(|p| name_of(p)));
        }
    }

    // rollingUpdate: replace old pods within maxUnavailable / maxSurge.
    if !on_delete {
        let (more_delete, more_create) = rolling_update(
            &by_node,
            &eligible,
            hash,
            max_surge,
            max_unavailable,
            &mut available,
        );
        for d in more_delete {
            if !delete.contains(&d) {
                delete.push(d);
            }
        }
        for c in more_create {
            if !create.contains(&c) {
                create.push(c);
            }
        }
    }

    // Status, from the pods as they are before this plan acts.
    let mut status = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        ..Default::default()
    };
    let (mut current, mut misscheduled, mut ready, mut avail, mut updated) = (0, 0, 0, 0, 0);
    for (node, e) in &eligible {
        let first = by_node.get(*node).and_then(|on| on.live.first());
        if e.should_run {
            let Some(pod) = first else { continue };
            current += 1;
            if pod_ready_since(pod).is_some() {
                ready += 1;
                if available(pod) {
                    avail += 1;
                }
            }
            if revision_of(pod) == Some(hash) {
                updated += 1;
            }
        } else if first.is_some() {
            misscheduled += 1;
        }
    }
    let n = |v: i64| i32::try_from(v).unwrap_or(i32::MAX);
    status.desired_number_scheduled = n(desired);
    status.current_number_scheduled = n(current);
    status.number_misscheduled = n(misscheduled);
    status.number_ready = n(ready);
    status.number_available = Some(n(avail));
    status.number_unavailable = Some(n((desired - avail).max(0)));
    status.updated_number_scheduled = Some(n(updated));
    Plan {
        create,
        delete,
        status,
        recheck,
    }
}

/// The node's new and old pod; `None` when it has more than one of either
/// (the manage pass sorts that out).
fn split<'a>(on: &OnNode<'a>, hash: &str) -> Option<(Option<&'a Pod>, Option<&'a Pod>)> {
    let (mut new, mut old) = (None, None);
    for p in on.live.iter().copied() {
        let slot = if revision_of(p) == Some(hash) {
            &mut new
        } else {
            &mut old
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(p);
    }
    Some((new, old))
}

/// Kubernetes' `rollingUpdate`: pods to delete and nodes to create a new pod
/// on. Without surge, old pods are deleted while no more than
/// `max_unavailable` nodes lack an available pod (the manage pass then creates
/// the new pod once the old one is gone); with surge, a new pod is made beside
/// the old one on up to `max_surge` nodes, and the old one deleted once the new
/// one is available. An old pod that is not available is replaced at once.
fn rolling_update(
    by_node: &BTreeMap<&str, OnNode>,
    eligible: &BTreeMap<&str, Eligibility>,
    hash: &str,
    max_surge: i64,
    max_unavailable: i64,
    available: &mut impl FnMut(&Pod) -> bool,
) -> (Vec<String>, Vec<String>) {
    let name_of = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    let should_run = |node: &str| eligible.get(node).is_some_and(|e| e.should_run);
    let mut delete = Vec::new();
    let mut create = Vec::new();
    if max_surge == 0 {
        let mut unavailable = 0;
        let mut replace_now = Vec::new();
        let mut candidates = Vec::new();
        for on in by_node.values() {
            let Some((new, old)) = split(on, hash) else {
                unavailable += 1;
                continue;
            };
            match (new, old) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (Some(new), None) => {
                    if !available(new) {
                        unavailable += 1;
                    }
                }
                (None, Some(old)) => {
                    if !available(old) {
                        replace_now.push(name_of(old));
                    } else if unavailable < max_unavailable {
                        candidates.push(name_of(old));
                    }
                }
            }
        }
        let room = (max_unavailable - unavailable).clamp(0, candidates.len() as i64) as usize;
        delete.extend(replace_now);
        delete.extend(candidates.into_iter().take(room));
        return (delete, create);
    }
    let mut surge = 0;
    let mut replace_now = Vec::new();
    let mut candidates = Vec::new();
    for (node, on) in by_node {
        let Some((new, old)) = split(on, hash) else {
            surge += 1;
            continue;
        };
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) => {
                if !should_run(node) {
                    // Not a node for it any more: the manage pass or the
                    // next look deletes it; no new pod here.
                    if !available(old) {
                        delete.push(name_of(old));
                    }
                } else if !available(old) {
                    replace_now.push((*node).to_string());
                } else if surge < max_surge {
                    candidates.push((*node).to_string());
                }
            }
            (Some(new), Some(old)) => {
                if available(new) {
                    delete.push(name_of(old));
                } else {
                    surge += 1;
                }
            }
        }
    }
    let room = (max_surge - surge).clamp(0, candidates.len() as i64) as usize;
    create.extend(replace_now);
    create.extend(candidates.into_iter().take(room));
    (delete, create)
}

#[cfg(test)]
mod tests;
