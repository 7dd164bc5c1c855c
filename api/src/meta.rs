//! Small accessors for object metadata on untyped objects (`serde_json::Value`),
//! which is how the store and the API server carry every kind.

use serde_json::{Map, Value};

/// `metadata.<key>`, like `Value::pointer` without its allocations: `pointer`
/// unescapes every segment into a new `String`, and these accessors run for
/// every object of every list, watch and reconcile.
fn meta_field<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    obj.get("metadata")?.get(key)
}

pub fn name(obj: &Value) -> Option<&str> {
    meta_field(obj, "name").and_then(Value::as_str)
}

pub fn namespace(obj: &Value) -> Option<&str> {
    meta_field(obj, "namespace").and_then(Value::as_str)
}

pub fn uid(obj: &Value) -> Option<&str> {
    meta_field(obj, "uid").and_then(Value::as_str)
}

pub fn resource_version(obj: &Value) -> Option<&str> {
    meta_field(obj, "resourceVersion").and_then(Value::as_str)
}

pub fn labels(obj: &Value) -> Option<&Map<String, Value>> {
    meta_field(obj, "labels").and_then(Value::as_object)
}

pub fn is_deleting(obj: &Value) -> bool {
    meta_field(obj, "deletionTimestamp").is_some_and(|v| !v.is_null())
}

/// The `metadata` map, created if missing (or if not a map).
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let map = obj.as_object_mut().expect("made an object above");
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("made an object above")
}

/// The owner reference marked `controller: true`, if any: `(kind, name, uid)`.
pub fn controller_of(obj: &Value) -> Option<(&str, &str, &str)> {
    obj.get("metadata")?
        .get("ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|r| {
            Some((
                r.get("kind")?.as_str()?,
                r.get("name")?.as_str()?,
                r.get("uid")?.as_str()?,
            ))
        })
}

/// The uids of all owners.
pub fn owner_uids(obj: &Value) -> Vec<&str> {
    // `get`, not `pointer`: the store calls this on every write, and a pointer
    // allocates to unescape its path.
    obj.get("metadata")
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

/// The current time as Kubernetes writes it (`2026-11-21T23:27:50Z`).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
