//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and Kubernetes'
//! strategic merge patch, which merges lists of named things (containers, env,
//! ports…) element by element instead of replacing them, so `kubectl apply` and
//! `kubectl patch` work on built-in kinds.

use serde_json::{Map, Value};
use tugboat_api::{ApiError, limits};

#[derive(Clone, Debug)]
pub enum Patch {
    Merge(Value),
    Strategic(Value),
    Json(json_patch::Patch),
    /// A server-side apply of this object by this manager.
    Apply {
        applied: Value,
        manager: String,
        force: bool,
    },
}

impl Patch {
    /// Reads a body by its `Content-Type`. The body is read with the API's JSON
    /// bounds ([`tugboat_api::json`]): nested no deeper than the store allows, a JSON
    /// patch of at most [`limits::MAX_JSON_PATCH_OPERATIONS`] operations.
    pub fn parse(content_type: &str, body: &[u8]) -> Result<Patch, ApiError> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        let value = |what: &str| -> Result<Value, ApiError> {
            tugboat_api::json::parse(body)
                .map(|p| p.value)
                .map_err(|e| ApiError::bad_request(format!("the {what} is not valid JSON: {e}")))
        };
        match media {
            "application/merge-patch+json" => Ok(Patch::Merge(value("patch")?)),
            "application/strategic-merge-patch+json" => Ok(Patch::Strategic(value("patch")?)),
            "application/json-patch+json" => {
                let v = value("JSON patch")?;
                let count = v.as_array().map(Vec::len).unwrap_or(0);
                if count > limits::MAX_JSON_PATCH_OPERATIONS {
                    return Err(ApiError::too_large(format!(
                        "The allowed maximum operations in a JSON patch is {}, got {count}",
                        limits::MAX_JSON_PATCH_OPERATIONS
                    )));
                }
                serde_json::from_value(v)
                    .map(Patch::Json)
                    .map_err(|e| ApiError::bad_request(format!("the JSON patch is invalid: {e}")))
            }
            "application/apply-patch+yaml" => Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                "server-side apply (application/apply-patch+yaml) is not supported yet; use client-side apply (`tug apply`, `kubectl apply`) or a merge patch",
            )),
            other => Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format ({other:?}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json"
                ),
            )),
        }
    }

    /// The `metadata.resourceVersion` the patch carries (a precondition), if any.
    pub fn resource_version(&self) -> Option<String> {
        match self {
            Patch::Merge(v) | Patch::Strategic(v) | Patch::Apply { applied: v, .. } => v
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string),
            Patch::Json(_) => None,
        }
    }

    pub fn apply(&self, target: &Value) -> Result<Value, ApiError> {
        match self {
            Patch::Apply {
                applied,
                manager,
                force,
            } => crate::managed::apply(Some(target), applied, manager, *force),
            Patch::Merge(p) => {
                if !p.is_object() {
                    return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                }
                let mut out = target.clone();
                json_patch::merge(&mut out, p);
                Ok(out)
            }
            Patch::Strategic(p) => {
                if !p.is_object() {
                    return Err(ApiError::bad_request(
                        "a strategic merge patch must be a JSON object",
                    ));
                }
                Ok(strategic_merge(target, p, ""))
            }
            Patch::Json(p) => apply_json_patch(target, p),
        }
    }
}

/// Applies a JSON patch one operation at a time, checking before each one what it
/// would do to the object's size and depth, so that a patch of copies that double
/// the object, or nest it into itself, is refused before it is built (each copy
/// would otherwise double the memory it takes, and a deep enough result overflows
/// the stack of whatever walks it next). Copies may add at most
/// [`limits::MAX_JSON_PATCH_COPY_BYTES`] in all (kube-apiserver bounds them the
/// same way, by the object limit).
fn apply_json_patch(target: &Value, patch: &json_patch::Patch) -> Result<Value, ApiError> {
    let mut out = target.clone();
    let mut copied: usize = 0;
    for (i, op) in patch.0.iter().enumerate() {
        let (verb, from, path, added) = match op {
            json_patch::PatchOperation::Add(o) => ("add", None, o.path.as_str(), Some(&o.value)),
            json_patch::PatchOperation::Replace(o) => {
                ("replace", None, o.path.as_str(), Some(&o.value))
            }
            json_patch::PatchOperation::Copy(o) => {
                ("copy", Some(o.from.as_str()), o.path.as_str(), None)
            }
            json_patch::PatchOperation::Move(o) => {
                ("move", Some(o.from.as_str()), o.path.as_str(), None)
            }
            json_patch::PatchOperation::Remove(_) | json_patch::PatchOperation::Test(_) => {
                ("", None, "", None)
            }
        };
        let describe = || match from {
            Some(f) => format!(
                "the JSON patch operation {i} ({verb} from {} to {})",
                field_path(f),
                field_path(path)
            ),
            None => format!(
                "the JSON patch operation {i} ({verb} at {})",
                field_path(path)
            ),
        };
        let moved = match (added, from) {
            (Some(v), _) => Some(v),
            // A missing source is reported by the patch itself below.
            (None, Some(f)) => out.pointer(f),
            (None, None) => None,
        };
        if let Some(v) = moved {
            let at = path.matches('/').count();
            let room = limits::MAX_DEPTH.saturating_sub(at);
            if let Err(e) = limits::check_depth_within(v, room) {
                let inner = match e.field() {
                    "(root)" => String::new(),
                    f => format!(".{f}"),
                };
                return Err(invalid_patch(
                    path,
                    format!(
                        "{} would nest {}{inner} more than {} levels deep",
                        describe(),
                        field_path(path),
                        limits::MAX_DEPTH
                    ),
                ));
            }
            if verb == "copy" {
                let budget = limits::MAX_JSON_PATCH_COPY_BYTES.saturating_sub(copied);
                copied = copied.saturating_add(limits::encoded_len(v, budget));
                if copied > limits::MAX_JSON_PATCH_COPY_BYTES {
                    return Err(invalid_patch(
                        path,
                        format!(
                            "{} would make the copies of this patch add more than {} bytes in all",
                            describe(),
                            limits::MAX_JSON_PATCH_COPY_BYTES
                        ),
                    ));
                }
            }
        }
        // Unsafe only in that a failed patch leaves `out` half-patched; `out` is a
        // copy that is dropped on error.
        json_patch::patch_unsafe(&mut out, std::slice::from_ref(op)).map_err(|e| {
            let at = match op {
                json_patch::PatchOperation::Copy(o)
                    if matches!(e.kind, json_patch::PatchErrorKind::InvalidFromPointer) =>
                {
                    o.from.as_str().to_string()
                }
                json_patch::PatchOperation::Move(o)
                    if matches!(e.kind, json_patch::PatchErrorKind::InvalidFromPointer) =>
                {
                    o.from.as_str().to_string()
                }
                _ => e.path.as_str().to_string(),
            };
            invalid_patch(
                &at,
                format!(
                    "the JSON patch operation {i} could not be applied at {}: {}",
                    field_path(&at),
                    e.kind
                ),
            )
        })?;
    }
    Ok(out)
}

/// A 422 for a patch operation, naming the field it is about.
fn invalid_patch(pointer: &str, message: String) -> ApiError {
    let mut e = ApiError::new(422, "Invalid", message.clone());
    e.causes.push(tugboat_api::FieldError {
        reason: "FieldValueInvalid",
        field: field_path(pointer),
        message,
    });
    e
}

/// A JSON pointer (`/metadata/managedFields/0/fieldsV1`) as the field path
/// Kubernetes' messages use (`metadata.managedFields[0].fieldsV1`), shortened
/// when very long.
pub fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    let mut tokens = pointer.split('/').skip(1).peekable();
    if tokens.peek().is_none() {
        return "(root)".to_string();
    }
    for (n, t) in tokens.enumerate() {
        if n >= 16 {
            out.push('…');
            break;
        }
        let t = t.replace("~1", "/").replace("~0", "~");
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) || t == "-" {
            out.push_str(&format!("[{t}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&t);
        }
    }
    out
}

/// The key by which Kubernetes merges the elements of a list at this field.
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => Some("name"),
        "ports" => Some("containerPort"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        _ => None,
    }
}

fn strategic_merge(target: &Value, patch: &Value, field: &str) -> Value {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            if p.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut p = p.clone();
                p.remove("$patch");
                return Value::Object(strip_directives(&p));
            }
            let mut out = t.clone();
            for (k, v) in p {
                if k.starts_with('$') {
                    continue;
                }
                if v.is_null() {
                    out.remove(k);
                    continue;
                }
                let merged = match out.get(k) {
                    Some(existing) => strategic_merge(existing, v, k),
                    None => strip_value(v),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(t), Value::Array(p)) => match merge_key(field) {
            Some(key)
                if p.iter()
                    .all(|e| e.get(key).is_some() || e.get("$patch").is_some()) =>
            {
                let mut out = t.clone();
                for item in p {
                    let Some(id) = item.get(key) else { continue };
                    let pos = out.iter().position(|e| e.get(key) == Some(id));
                    let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                    match (pos, delete) {
                        (Some(i), true) => {
                            out.remove(i);
                        }
                        (None, true) => {}
                        (Some(i), false) => out[i] = strategic_merge(&out[i], item, ""),
                        (None, false) => out.push(strip_value(item)),
                    }
                }
                Value::Array(out)
            }
            _ => strip_value(patch),
        },
        _ => strip_value(patch),
    }
}

fn strip_directives(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
        .map(|(k, v)| (k.clone(), strip_value(v)))
        .collect()
}

fn strip_value(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(strip_directives(m)),
        Value::Array(a) => Value::Array(a.iter().map(strip_value).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "web", "image": "a:1", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "b:1"}
        ]}}}})
    }

    #[test]
    fn a_merge_patch_replaces_lists_and_nulls_delete() {
        let p = Patch::parse(
            "application/merge-patch+json",
            br#"{"spec":{"replicas":3,"paused":null}}"#,
        )
        .unwrap();
        let out = p.apply(&deployment()).unwrap();
        assert_eq!(out["spec"]["replicas"], 3);
        assert_eq!(out["spec"]["template"], deployment()["spec"]["template"]);
    }

    #[test]
    fn a_strategic_patch_merges_containers_by_name() {
        let p = Patch::parse(
            "application/strategic-merge-patch+json",
            br#"{"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"web"},{"name":"side"}],"containers":[{"name":"web","image":"a:2"}]}}}}"#,
        )
        .unwrap();
        let out = p.apply(&deployment()).unwrap();
        let containers = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 2);
        assert_eq!(containers[0]["image"], "a:2");
        assert_eq!(containers[0]["ports"][0]["containerPort"], 80);
        assert_eq!(containers[1]["image"], "b:1");
        assert!(
            out["spec"]["template"]["spec"]
                .get("$setElementOrder/containers")
                .is_none()
        );
    }

    #[test]
    fn a_strategic_patch_can_delete_a_named_element() {
        let p = Patch::parse(
            "application/strategic-merge-patch+json",
            br#"{"spec":{"template":{"spec":{"containers":[{"name":"side","$patch":"delete"}]}}}}"#,
        )
        .unwrap();
        let out = p.apply(&deployment()).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn a_json_patch_applies_operations_and_reports_failures() {
        let p = Patch::parse(
            "application/json-patch+json",
            br#"[{"op":"replace","path":"/spec/replicas","value":5}]"#,
        )
        .unwrap();
        assert_eq!(p.apply(&deployment()).unwrap()["spec"]["replicas"], 5);
        let bad = Patch::parse(
            "application/json-patch+json",
            br#"[{"op":"remove","path":"/spec/nothing"}]"#,
        )
        .unwrap();
        assert_eq!(bad.apply(&deployment()).unwrap_err().code, 422);
    }

    #[test]
    fn unknown_media_types_are_415() {
        assert_eq!(Patch::parse("text/plain", b"{}").unwrap_err().code, 415);
        assert_eq!(
            Patch::parse("application/merge-patch+json", b"{")
                .unwrap_err()
                .code,
            400
        );
    }

    fn json_patch(ops: &Value) -> Patch {
        Patch::parse(
            "application/json-patch+json",
            &serde_json::to_vec(ops).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn copies_that_double_the_object_are_refused_before_they_are_made() {
        let ops: Vec<Value> = (0..40)
            .map(|i| json!({"op": "copy", "from": "/spec", "path": format!("/spec/x{i}")}))
            .collect();
        let err = json_patch(&json!(ops)).apply(&deployment()).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message.contains("copy from spec to spec.x"),
            "{}",
            err.message
        );
        assert!(err.message.contains("262144 bytes"), "{}", err.message);
    }

    #[test]
    fn copies_that_nest_a_value_into_itself_stop_at_the_depth_limit() {
        // Each copy lands at the deepest point so far, doubling the depth.
        let mut doc = json!({"a": {"b": {}}});
        let mut chain = 0usize;
        let mut refused = None;
        for i in 0..12 {
            let path = format!("/a{}/x", "/x".repeat(chain));
            let p = json_patch(&json!([{"op": "copy", "from": "/a", "path": path}]));
            match p.apply(&doc) {
                Ok(next) => {
                    doc = next;
                    chain = 2 * chain + 1;
                }
                Err(e) => {
                    refused = Some((i, e));
                    break;
                }
            }
        }
        let (i, err) = refused.expect("the nesting was refused");
        assert!(i < 8, "refused only at operation {i}");
        assert!(
            err.message.contains("more than 64 levels deep"),
            "{}",
            err.message
        );
        assert_eq!(err.causes[0].field.split('.').next(), Some("a"));
    }

    #[test]
    fn a_deep_value_added_at_a_deep_path_is_refused_naming_the_path() {
        let mut deep = json!({});
        for _ in 0..60 {
            deep = json!({"n": deep});
        }
        let p =
            json_patch(&json!([{"op": "add", "path": "/spec/template/spec/deep", "value": deep}]));
        let err = p.apply(&deployment()).unwrap_err();
        assert!(
            err.message.contains("spec.template.spec.deep.n.n"),
            "{}",
            err.message
        );
        assert_eq!(err.causes[0].field, "spec.template.spec.deep");
    }

    #[test]
    fn too_many_operations_are_413_and_failures_name_the_field() {
        let ops: Vec<Value> = (0..10_001)
            .map(|_| json!({"op": "test", "path": "/spec", "value": 1}))
            .collect();
        let err = Patch::parse(
            "application/json-patch+json",
            &serde_json::to_vec(&ops).unwrap(),
        )
        .unwrap_err();
        assert_eq!(err.code, 413);
        let p =
            json_patch(&json!([{"op": "copy", "from": "/metadata/managedFields/0", "path": "/x"}]));
        let err = p.apply(&deployment()).unwrap_err();
        assert_eq!(err.causes[0].field, "metadata.managedFields[0]");
    }
}
