//! Client-side apply's three-way logic, as kubectl does it: the manifest last applied
//! is kept in an annotation, so a field the user removed from the manifest can be told
//! apart from a field the server defaulted, and deleted. Pure functions over JSON.

use serde_json::{Map, Value};

/// The annotation holding the manifest last applied (kubectl's name, so objects
/// applied by kubectl and by `tug` can be re-applied by either).
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What `apply` sends for a manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// The manifest with the last-applied annotation, ready to create.
    pub object: Value,
    /// The annotation's value: the compact manifest without the annotation itself.
    pub annotation: String,
}

/// Adds the last-applied annotation to `manifest` (whose namespace, if any, is already
/// set). Like kubectl, the stored copy keeps an `annotations: {}` when the annotation
/// was the only one, so both tools write identical annotations.
pub fn desired(manifest: &Value) -> Desired {
    let mut object = manifest.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if !annotations.is_object() {
            *annotations = Value::Object(Map::new());
        }
        if let Some(a) = annotations.as_object_mut() {
            a.remove(LAST_APPLIED);
        }
    }
    let annotation = object.to_string();
    if let Some(a) = object
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        a.insert(LAST_APPLIED.to_string(), Value::String(annotation.clone()));
    }
    Desired { object, annotation }
}

/// What to do with a live object.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    Unchanged,
    /// Send this JSON merge patch.
    Patch(Value),
}

/// Compares the desired object with the live one. Unchanged when everything the
/// manifest says is already so (the server adds defaults, so live may hold more), no
/// field applied last time has been dropped from the manifest, and the live annotation
/// is already this manifest's.
pub fn plan(desired: &Desired, live: &Value) -> Plan {
    let live_annotation = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str);
    let last_applied: Option<Value> = live_annotation.and_then(|a| serde_json::from_str(a).ok());
    let unchanged = live_annotation == Some(desired.annotation.as_str())
        && is_subset(&desired.object, live)
        && !last_applied
            .as_ref()
            .is_some_and(|last| has_removed_fields(last, &desired.object));
    if unchanged {
        Plan::Unchanged
    } else {
        Plan::Patch(merge_patch(last_applied.as_ref(), &desired.object))
    }
}

/// Whether everything `new` says holds in `live`: maps recursively (live may have more
/// keys), arrays of equal length element by element, scalars equal. A `null`, empty map
/// or empty list in `new` is satisfied by an absent key, since servers drop those; a
/// number is satisfied by the same number as a string, since quantities like
/// `cpu: 1` come back as `"1"`.
pub fn is_subset(new: &Value, live: &Value) -> bool {
    match (new, live) {
        (Value::Object(n), Value::Object(l)) => n.iter().all(|(k, nv)| match l.get(k) {
            Some(lv) => is_subset(nv, lv),
            None => is_empty(nv),
        }),
        (Value::Array(n), Value::Array(l)) => {
            n.len() == l.len() && n.iter().zip(l).all(|(nv, lv)| is_subset(nv, lv))
        }
        (Value::Number(n), Value::Number(l)) => {
            n == l || matches!((n.as_f64(), l.as_f64()), (Some(a), Some(b)) if a == b)
        }
        (Value::Number(n), Value::String(l)) => n.to_string() == *l,
        (n, Value::Null) => is_empty(n),
        (n, l) => n == l,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Whether some field of `last` (the manifest applied before) is gone from `new`,
/// looking into maps and into lists of the same length.
pub fn has_removed_fields(last: &Value, new: &Value) -> bool {
    match (last, new) {
        (Value::Object(l), Value::Object(n)) => l.iter().any(|(k, lv)| match n.get(k) {
            Some(nv) => has_removed_fields(lv, nv),
            None => !lv.is_null(),
        }),
        (Value::Array(l), Value::Array(n)) => {
            l.len() != n.len() || l.iter().zip(n).any(|(lv, nv)| has_removed_fields(lv, nv))
        }
        _ => false,
    }
}

/// The JSON merge patch (RFC 7386) taking live to `new`: `new` itself, maps merged
/// recursively, with `null` for every map key `last` had and `new` has not (so fields the
/// user removed are deleted while fields the server defaulted stay). Lists are
/// replaced whole, as merge patches do.
pub fn merge_patch(last: Option<&Value>, new: &Value) -> Value {
    match (last, new) {
        (Some(Value::Object(l)), Value::Object(n)) => {
            let mut patch = Map::new();
            for (k, nv) in n {
                patch.insert(k.clone(), merge_patch(l.get(k), nv));
            }
            for k in l.keys() {
                if !n.contains_key(k) {
                    patch.insert(k.clone(), Value::Null);
                }
            }
            Value::Object(patch)
        }
        (_, n) => n.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest(replicas: i64) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx"}]}
                }
            }
        })
    }

    /// What the server would hold after creating `desired`: the object plus defaults
    /// and status.
    fn live_after_create(desired: &Desired) -> Value {
        let mut live = desired.object.clone();
        live["metadata"]["uid"] = json!("1234");
        live["metadata"]["resourceVersion"] = json!("7");
        live["spec"]["strategy"] = json!({"type": "RollingUpdate"});
        live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!("Always");
        live["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        live["status"] = json!({"replicas": 3});
        live
    }

    #[test]
    fn the_annotation_is_the_compact_manifest_without_itself() {
        let d = desired(&manifest(3));
        let stored: Value = serde_json::from_str(&d.annotation).unwrap();
        assert_eq!(stored["spec"]["replicas"], 3);
        assert_eq!(stored["metadata"]["annotations"], json!({}));
        assert!(!d.annotation.contains('\n'));
        assert_eq!(
            d.object["metadata"]["annotations"][LAST_APPLIED],
            json!(d.annotation)
        );
    }

    #[test]
    fn reapplying_an_old_annotation_does_not_nest_it() {
        let first = desired(&manifest(3));
        let again = desired(&first.object);
        assert_eq!(first, again);
    }

    #[test]
    fn the_same_manifest_over_a_defaulted_live_object_is_unchanged() {
        let d = desired(&manifest(3));
        let live = live_after_create(&d);
        assert_eq!(plan(&d, &live), Plan::Unchanged);
    }

    #[test]
    fn changed_replicas_are_patched_with_the_new_annotation() {
        let live = live_after_create(&desired(&manifest(3)));
        let d = desired(&manifest(5));
        let Plan::Patch(patch) = plan(&d, &live) else {
            panic!("expected a patch");
        };
        assert_eq!(patch["spec"]["replicas"], 5);
        assert_eq!(
            patch["metadata"]["annotations"][LAST_APPLIED],
            json!(d.annotation)
        );
        // Defaults the server added are not touched.
        assert!(patch["spec"].get("strategy").is_none());
    }

    #[test]
    fn a_field_removed_from_the_manifest_is_deleted_with_null() {
        let live = live_after_create(&desired(&manifest(3)));
        let mut m = manifest(3);
        m["metadata"].as_object_mut().unwrap().remove("labels");
        let d = desired(&m);
        let Plan::Patch(patch) = plan(&d, &live) else {
            panic!("expected a patch");
        };
        assert_eq!(patch["metadata"]["labels"], Value::Null);
        assert_eq!(patch["spec"]["replicas"], 3);
    }

    #[test]
    fn a_field_removed_inside_a_list_replaces_the_list() {
        let mut m = manifest(3);
        m["spec"]["template"]["spec"]["containers"][0]["env"] =
            json!([{"name": "A", "value": "1"}]);
        let live = live_after_create(&desired(&m));
        let d = desired(&manifest(3));
        let Plan::Patch(patch) = plan(&d, &live) else {
            panic!("expected a patch");
        };
        assert_eq!(
            patch["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "nginx"}])
        );
    }

    #[test]
    fn an_object_changed_by_someone_else_is_configured_again() {
        let d = desired(&manifest(3));
        let mut live = live_after_create(&d);
        live["spec"]["replicas"] = json!(10);
        assert!(matches!(plan(&d, &live), Plan::Patch(_)));
    }

    #[test]
    fn an_object_never_applied_gets_the_annotation_by_patch() {
        let d = desired(&manifest(3));
        let mut live = live_after_create(&d);
        live["metadata"]["annotations"] = json!({});
        let Plan::Patch(patch) = plan(&d, &live) else {
            panic!("expected a patch");
        };
        assert_eq!(patch, d.object);
    }

    #[test]
    fn subset_treats_absent_as_empty_and_numbers_as_quantities() {
        assert!(is_subset(&json!({"a": {}, "b": null, "c": []}), &json!({})));
        assert!(is_subset(&json!({"cpu": 1}), &json!({"cpu": "1"})));
        assert!(is_subset(&json!({"n": 1}), &json!({"n": 1.0})));
        assert!(!is_subset(&json!({"a": [1, 2]}), &json!({"a": [1]})));
        assert!(!is_subset(&json!({"a": "x"}), &json!({"a": "y"})));
        assert!(!is_subset(&json!({"a": 1}), &json!({})));
    }

    #[test]
    fn removed_fields_are_found_in_maps_and_lists() {
        assert!(has_removed_fields(
            &json!({"a": 1, "b": 2}),
            &json!({"a": 1})
        ));
        assert!(has_removed_fields(
            &json!({"l": [{"x": 1, "y": 2}]}),
            &json!({"l": [{"x": 1}]})
        ));
        assert!(!has_removed_fields(
            &json!({"a": 1}),
            &json!({"a": 2, "b": 3})
        ));
    }
}
