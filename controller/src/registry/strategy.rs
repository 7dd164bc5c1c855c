//! What differs by kind around storage, kept out of the generic write path the
//! way kube-apiserver keeps `pkg/registry/<kind>/strategy.go`: which parts a
//! create resets, whether status is a subresource, how a delete goes, and what
//! may be written into a terminating namespace.

use serde_json::{Value, json};
use tugboat_api::ApiError;
use tugboat_api::resource::ResourceInfo;

use super::{DeleteOptions, SYSTEM_NAMESPACES};

/// How a DELETE of one object goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// Removed now.
    Now,
    /// Marked with `deletionTimestamp` and finished by whoever owns it (a
    /// finalizer, the namespace controller).
    Mark,
    /// A running pod: marked with `deletionGracePeriodSeconds` so its node stops
    /// it within that many seconds, then released.
    Graceful { grace_seconds: i64 },
}

pub trait Strategy: Sync {
    /// Status is written only through `/status`: creates drop it and main
    /// writes keep the stored one.
    fn status_is_subresource(&self, info: &ResourceInfo) -> bool {
        info.has_status
    }

    /// Sets what a new object of this kind starts with (after the server-set
    /// metadata, before admission).
    fn prepare_for_create(&self, _obj: &mut Value) {}

    /// May objects of this kind be created in a namespace being terminated?
    fn allowed_in_terminating_namespace(&self) -> bool {
        false
    }

    /// Refuses deletes this kind never allows.
    fn validate_delete(&self, _name: &str) -> Result<(), ApiError> {
        Ok(())
    }

    /// How deleting `obj` goes; objects with finalizers are always marked.
    fn deletion(&self, obj: &Value, _opts: &DeleteOptions) -> Deletion {
        if has_finalizers(obj) {
            Deletion::Mark
        } else {
            Deletion::Now
        }
    }

    /// Edits an object being marked for deletion (beyond `deletionTimestamp`).
    fn prepare_for_mark(&self, _obj: &mut Value) {}
}

pub fn has_finalizers(obj: &Value) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// Kinds with no rules of their own.
struct Plain;
impl Strategy for Plain {}

/// Pods start Pending; a pod bound to a node and not finished is deleted
/// gracefully (its agent stops the containers, then releases it).
struct Pods;
impl Strategy for Pods {
    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({ "phase": "Pending" });
    }

    fn deletion(&self, obj: &Value, opts: &DeleteOptions) -> Deletion {
        let bound = obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let finished = matches!(
            obj.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        );
        if bound && !finished && opts.grace_period_seconds != Some(0) {
            let grace_seconds = opts.grace_period_seconds.unwrap_or_else(|| {
                obj.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(30)
            });
            return Deletion::Graceful { grace_seconds };
        }
        Plain.deletion(obj, opts)
    }
}

/// Namespaces are always marked `Terminating` and emptied by the namespace
/// controller; the system namespaces may not be deleted.
struct Namespaces;
impl Strategy for Namespaces {
    fn validate_delete(&self, name: &str) -> Result<(), ApiError> {
        if SYSTEM_NAMESPACES.contains(&name) {
            let mut e = ApiError::forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            ));
            e.kind = Some("namespaces".into());
            e.name = Some(name.to_string());
            return Err(e);
        }
        Ok(())
    }

    fn deletion(&self, _obj: &Value, _opts: &DeleteOptions) -> Deletion {
        Deletion::Mark
    }

    fn prepare_for_mark(&self, obj: &mut Value) {
        obj["status"]["phase"] = json!("Terminating");
    }
}

/// A node's agent registers it with its status and writes both together, so a
/// node's status is not a subresource on create or main writes.
struct Nodes;
impl Strategy for Nodes {
    fn status_is_subresource(&self, _info: &ResourceInfo) -> bool {
        false
    }
}

/// Events may still be recorded in a terminating namespace (about the objects
/// being deleted there).
struct Events;
impl Strategy for Events {
    fn allowed_in_terminating_namespace(&self) -> bool {
        true
    }
}

/// The strategy of `info`'s kind.
pub fn of(info: &ResourceInfo) -> &'static dyn Strategy {
    match info.kind {
        "Pod" => &Pods,
        "Namespace" => &Namespaces,
        "Node" => &Nodes,
        "Event" => &Events,
        _ => &Plain,
    }
}

#[cfg(test)]
mod tests {
    use tugboat_api::resource::{DEPLOYMENTS, EVENTS, NAMESPACES, NODES, PODS};

    use super::*;

    #[test]
    fn a_running_pod_is_deleted_gracefully_and_a_pending_or_finished_one_at_once() {
        let pods = of(&PODS);
        let opts = DeleteOptions::default();
        let running = json!({"spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 7},
            "status": {"phase": "Running"}});
        assert_eq!(
            pods.deletion(&running, &opts),
            Deletion::Graceful { grace_seconds: 7 }
        );
        let shorter = DeleteOptions {
            grace_period_seconds: Some(2),
            ..Default::default()
        };
        assert_eq!(
            pods.deletion(&running, &shorter),
            Deletion::Graceful { grace_seconds: 2 }
        );
        let now = DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        assert_eq!(pods.deletion(&running, &now), Deletion::Now);
        let pending = json!({"spec": {}, "status": {"phase": "Pending"}});
        assert_eq!(pods.deletion(&pending, &opts), Deletion::Now);
        let done = json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Succeeded"}});
        assert_eq!(pods.deletion(&done, &opts), Deletion::Now);
        let held = json!({"metadata": {"finalizers": ["x"]}, "spec": {}});
        assert_eq!(pods.deletion(&held, &opts), Deletion::Mark);
    }

    #[test]
    fn each_kind_keeps_its_own_rules() {
        assert!(of(&NAMESPACES).validate_delete("kube-system").is_err());
        assert!(of(&NAMESPACES).validate_delete("team-a").is_ok());
        assert_eq!(
            of(&NAMESPACES).deletion(&json!({}), &DeleteOptions::default()),
            Deletion::Mark
        );
        let mut ns = json!({"metadata": {"name": "team-a"}});
        of(&NAMESPACES).prepare_for_mark(&mut ns);
        assert_eq!(ns["status"]["phase"], "Terminating");
        assert!(!of(&NODES).status_is_subresource(&NODES));
        assert!(of(&DEPLOYMENTS).status_is_subresource(&DEPLOYMENTS));
        assert!(of(&EVENTS).allowed_in_terminating_namespace());
        assert!(!of(&PODS).allowed_in_terminating_namespace());
        let mut pod = json!({"metadata": {"name": "p"}});
        of(&PODS).prepare_for_create(&mut pod);
        assert_eq!(pod["status"]["phase"], "Pending");
    }
}
