//! The store's secondary indexes, behind [`Store::list_by`](super::Store::list_by):
//! objects by their controller, and pods by node.
//!
//! A ReplicaSet's reconcile wants the pods it owns, and runs at every change of
//! any of them; an agent lists the pods bound to its node whenever its watch
//! starts over. Filtering every pod for either made their cost grow with the
//! cluster: at 30,000 pods the owner scans were most of the controller's CPU,
//! and 1,000 agents relisting at once scanned 30 million pods.
//! kube-controller-manager keeps informer indexes for the first, and
//! kube-apiserver's watch cache an index on `spec.nodeName` for the second; a
//! backend that mirrors its objects in memory keeps these beside the mirror,
//! under the same lock, so they are never behind a write.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;
use tugboat_api::meta;

/// What a list can be narrowed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By<'a> {
    /// Objects whose controller (the owner reference marked `controller:
    /// true`) has this uid: what a ReplicaSet, Job or Deployment reconciles.
    /// Only the controller is indexed (a pod has one), so the answer needs no
    /// further filtering, and an object with other owners costs nothing more.
    Controller(&'a str),
    /// Pods whose `spec.nodeName` is this (`""`: not yet scheduled).
    Node(&'a str),
}

impl By<'_> {
    /// Does `object`, of `resource`, belong under this key?
    pub fn matches(&self, resource: &str, object: &Value) -> bool {
        match *self {
            By::Controller(uid) => controller_uid(object) == Some(uid),
            By::Node(node) => resource == "pods" && node_of(object) == node,
        }
    }
}

/// `spec.nodeName`, `""` when unset.
fn controller_uid(object: &Value) -> Option<&str> {
    meta::controller_of(object).map(|(_, _, uid)| uid)
}

fn node_of(object: &Value) -> &str {
    object
        .get("spec")
        .and_then(|s| s.get("nodeName"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Term {
    Controller(String),
    Node(String),
}

impl Term {
    fn of(by: By<'_>) -> Term {
        match by {
            By::Controller(u) => Term::Controller(u.to_string()),
            By::Node(n) => Term::Node(n.to_string()),
        }
    }
}

/// The terms an object of `resource` is indexed under.
fn terms(resource: &str, object: Option<&Value>) -> Vec<Term> {
    let Some(object) = object else {
        return Vec::new();
    };
    let mut terms: Vec<Term> = controller_uid(object)
        .map(|u| Term::Controller(u.to_string()))
        .into_iter()
        .collect();
    if resource == "pods" {
        terms.push(Term::Node(node_of(object).to_string()));
    }
    terms
}

/// `(resource, term)` → the storage keys (`resource/namespace/name`) of the
/// objects indexed under it.
#[derive(Debug, Default)]
pub struct Indexes(HashMap<(String, Term), BTreeSet<String>>);

impl Indexes {
    /// Records that the object at `row` changed from `old` to `new` (`None`:
    /// absent). A write that changes neither its owners nor its node costs only
    /// the comparison.
    pub fn replace(&mut self, row: &str, old: Option<&Value>, new: Option<&Value>) {
        let resource = row.split('/').next().unwrap_or("");
        let before = terms(resource, old);
        let after = terms(resource, new);
        if before == after {
            return;
        }
        for term in before.iter().filter(|t| !after.contains(t)) {
            let key = (resource.to_string(), term.clone());
            if let Some(rows) = self.0.get_mut(&key) {
                rows.remove(row);
                if rows.is_empty() {
                    self.0.remove(&key);
                }
            }
        }
        for term in after.into_iter().filter(|t| !before.contains(t)) {
            self.0
                .entry((resource.to_string(), term))
                .or_default()
                .insert(row.to_string());
        }
    }

    /// The keys of the objects of `resource` under `by`, in key order.
    pub fn rows(&self, resource: &str, by: By<'_>) -> impl Iterator<Item = &String> {
        self.0
            .get(&(resource.to_string(), Term::of(by)))
            .into_iter()
            .flatten()
    }

    /// How many (resource, term) pairs it holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uids: &[&str], node: Option<&str>) -> Value {
        // The first is the controller; the others are owners only.
        let refs: Vec<Value> = uids
            .iter()
            .enumerate()
            .map(
                |(i, u)| json!({"uid": u, "kind": "ReplicaSet", "name": "x", "controller": i == 0}),
            )
            .collect();
        let mut p = json!({"metadata": {"name": "p", "ownerReferences": refs}, "spec": {}});
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        p
    }

    fn rows(d: &Indexes, resource: &str, by: By<'_>) -> Vec<String> {
        d.rows(resource, by).cloned().collect()
    }

    #[test]
    fn follows_controllers_and_nodes_through_changes() {
        let mut d = Indexes::default();
        d.replace("pods/a/p1", None, Some(&pod(&["u1"], None)));
        d.replace("pods/a/p2", None, Some(&pod(&["u1", "u2"], Some("n1"))));
        d.replace("replicasets/a/r", None, Some(&pod(&["u1"], Some("n1"))));
        assert_eq!(
            rows(&d, "pods", By::Controller("u1")),
            ["pods/a/p1", "pods/a/p2"]
        );
        assert!(
            rows(&d, "pods", By::Controller("u2")).is_empty(),
            "an owner that is not the controller is not indexed"
        );
        assert_eq!(
            rows(&d, "replicasets", By::Controller("u1")),
            ["replicasets/a/r"]
        );
        assert_eq!(rows(&d, "pods", By::Node("")), ["pods/a/p1"]);
        assert_eq!(rows(&d, "pods", By::Node("n1")), ["pods/a/p2"]);
        assert!(
            rows(&d, "replicasets", By::Node("n1")).is_empty(),
            "only pods are indexed by node"
        );

        // Bound, orphaned, adopted by another, deleted.
        d.replace(
            "pods/a/p1",
            Some(&pod(&["u1"], None)),
            Some(&pod(&[], Some("n1"))),
        );
        d.replace(
            "pods/a/p2",
            Some(&pod(&["u1", "u2"], Some("n1"))),
            Some(&pod(&["u3"], Some("n1"))),
        );
        assert!(rows(&d, "pods", By::Controller("u1")).is_empty());
        assert!(rows(&d, "pods", By::Controller("u2")).is_empty());
        assert!(rows(&d, "pods", By::Node("")).is_empty());
        assert_eq!(rows(&d, "pods", By::Controller("u3")), ["pods/a/p2"]);
        assert_eq!(rows(&d, "pods", By::Node("n1")), ["pods/a/p1", "pods/a/p2"]);
        d.replace("pods/a/p2", Some(&pod(&["u3"], Some("n1"))), None);
        d.replace("pods/a/p1", Some(&pod(&[], Some("n1"))), None);
        d.replace("replicasets/a/r", Some(&pod(&["u1"], Some("n1"))), None);
        assert!(d.is_empty(), "nothing is kept for terms without objects");
    }

    #[test]
    fn matches_agrees_with_the_index() {
        let p = pod(&["u1"], Some("n1"));
        assert!(By::Controller("u1").matches("pods", &p));
        assert!(!By::Controller("u2").matches("pods", &p));
        assert!(By::Node("n1").matches("pods", &p));
        assert!(!By::Node("n1").matches("replicasets", &p));
        assert!(By::Node("").matches("pods", &pod(&[], None)));
    }

    #[test]
    fn objects_without_owners_cost_nothing() {
        let mut d = Indexes::default();
        d.replace(
            "configmaps/a/c",
            None,
            Some(&json!({"metadata": {"name": "c"}})),
        );
        d.replace(
            "configmaps/a/c",
            Some(&json!({})),
            Some(&json!({"metadata": 7})),
        );
        assert!(d.is_empty());
    }
}
