//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and Kubernetes'
//! strategic merge patch, which merges lists of named things (containers, env,
//! ports…) element by element instead of replacing them, so `kubectl apply` and
//! `kubectl patch` work on built-in kinds.

use serde_json::{Map, Value};
use tugboat_api::ApiError;

#[derive(Clone, Debug)]
pub enum Patch {
    Merge(Value),
    Strategic(Value),
    Json(json_patch::Patch),
}

impl Patch {
    /// Reads a body by its `Content-Type`.
    pub fn parse(content_type: &str, body: &[u8]) -> Result<Patch, ApiError> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        let value = || -> Result<Value, ApiError> {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))
        };
        match media {
            "application/merge-patch+json" => Ok(Patch::Merge(value()?)),
            "application/strategic-merge-patch+json" => Ok(Patch::Strategic(value()?)),
            "application/json-patch+json" => serde_json::from_slice(body)
                .map(Patch::Json)
                .map_err(|e| ApiError::bad_request(format!("the JSON patch is invalid: {e}"))),
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
            Patch::Merge(v) | Patch::Strategic(v) => v
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string),
            Patch::Json(_) => None,
        }
    }

    pub fn apply(&self, target: &Value) -> Result<Value, ApiError> {
        match self {
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
            Patch::Json(p) => {
                let mut out = target.clone();
                json_patch::patch(&mut out, p).map_err(|e| {
                    ApiError::new(
                        422,
                        "Invalid",
                        format!("the JSON patch could not be applied: {e}"),
                    )
                })?;
                Ok(out)
            }
        }
    }
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
}
