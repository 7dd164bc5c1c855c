//! The write path's pieces: the object to admit from the old one and the
//! incoming one, the namespace a write goes to, the bounds, and its errors.

use serde_json::{Map, Value, json};
use tugboat_api::resource::ResourceInfo;
use tugboat_api::{ApiError, FieldError, limits, meta};

use super::Subresource;
use crate::store::StoreError;

/// Builds the object to admit: a status write takes only the status from `incoming`;
/// a main write keeps the old status (when the kind has a status subresource) and the
/// server-owned metadata.
pub(super) fn merge_for_write(
    info: &ResourceInfo,
    old: &Value,
    incoming: Value,
    sub: Subresource,
) -> Result<Value, ApiError> {
    if !incoming.is_object() {
        return Err(ApiError::bad_request(format!(
            "expected a {} object",
            info.kind
        )));
    }
    let mut new = match sub {
        Subresource::Status => {
            let mut new = old.clone();
            match incoming.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            new
        }
        // The binding's status is the old one with its condition set.
        Subresource::Binding => incoming,
        Subresource::Main => {
            let mut new = incoming;
            if super::strategy::of(info).status_is_subresource(info) {
                let obj = new.as_object_mut().expect("checked to be an object above");
                match old.get("status") {
                    Some(s) => {
                        obj.insert("status".into(), s.clone());
                    }
                    None => {
                        obj.remove("status");
                    }
                }
            }
            new
        }
    };
    set_type(info, &mut new);
    let old_meta: Map<String, Value> = old
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let m = meta::metadata_mut(&mut new);
    for server_owned in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "namespace",
        "name",
        // Tugboat tracks no field managers yet (no server-side apply), so what a
        // client sends here is not kept: storing arbitrary JSON that nothing reads
        // is how a client could nest an object too deep to load again.
        "managedFields",
    ] {
        match old_meta.get(server_owned) {
            Some(v) => {
                m.insert(server_owned.into(), v.clone());
            }
            None => {
                m.remove(server_owned);
            }
        }
    }
    if let Some(rv) = old_meta.get("resourceVersion") {
        m.insert("resourceVersion".into(), rv.clone());
    }
    Ok(new)
}

/// Equal but for `resourceVersion` (a no-op write is not stored again).
pub(super) fn admitted_equal(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        v
    };
    strip(a) == strip(b)
}

pub(super) fn set_type(info: &ResourceInfo, body: &mut Value) {
    if let Some(obj) = body.as_object_mut() {
        obj.insert("apiVersion".into(), json!(info.api_version()));
        obj.insert("kind".into(), json!(info.kind));
    }
}

/// The namespace a write goes to: the URL's, checked against the body's.
pub(super) fn namespace_for(
    info: &ResourceInfo,
    url_ns: Option<&str>,
    body: &Value,
) -> Result<Option<String>, ApiError> {
    if !info.namespaced {
        return Ok(None);
    }
    let body_ns = meta::namespace(body).filter(|n| !n.is_empty());
    match (url_ns, body_ns) {
        (Some(u), Some(b)) if u != b => Err(ApiError::bad_request(format!(
            "the namespace of the provided object ({b}) does not match the namespace sent on the request ({u})"
        ))),
        (Some(u), _) => Ok(Some(u.to_string())),
        (None, Some(b)) => Ok(Some(b.to_string())),
        (None, None) => Ok(Some("default".to_string())),
    }
}

pub(super) fn conflict(info: &ResourceInfo, name: &str) -> ApiError {
    ApiError::conflict(
        &info.store_name(),
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    )
}

pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Gone {
            requested,
            compacted,
        } => ApiError::gone(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        StoreError::NotFound(key) => ApiError::not_found(&key.resource, &key.name),
        StoreError::AlreadyExists(key) => ApiError::already_exists(&key.resource, &key.name),
        StoreError::Conflict { key, .. } => ApiError::conflict(
            &key.resource,
            &key.name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ),
        StoreError::Limit(key, e) => limit_error(&key.resource, &key.name, &e),
        StoreError::Backend(msg) => ApiError::internal(format!("storage error: {msg}")),
        // Nothing was written: clients may send it again, to this server or
        // another (Retry-After, as kube-apiserver's 503s carry).
        StoreError::Unavailable(msg) => {
            let mut e = ApiError::new(
                503,
                "ServiceUnavailable",
                format!("the store cannot be reached; nothing was written: {msg}"),
            );
            e.retry_after_seconds = Some(1);
            e
        }
    }
}

/// An object outside the bounds, answered as kube-apiserver would: 413 for its
/// size, 422 naming the field for its depth.
pub fn limit_error(resource: &str, name: &str, e: &limits::LimitError) -> ApiError {
    match e {
        limits::LimitError::TooLarge { .. } => ApiError::too_large(format!(
            "Request entity too large: {resource} \"{name}\": {e}"
        )),
        limits::LimitError::TooDeep { path } => {
            let mut err = ApiError::new(
                422,
                "Invalid",
                format!("{resource} \"{name}\" is invalid: {e}"),
            );
            err.causes.push(FieldError {
                reason: "FieldValueInvalid",
                field: path.clone(),
                message: format!(
                    "Invalid value: nested more than {} levels deep",
                    limits::MAX_DEPTH
                ),
            });
            err
        }
    }
}

pub(super) fn check_depth(info: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    limits::check_depth(obj)
        .map_err(|e| limit_error(&info.store_name(), meta::name(obj).unwrap_or(""), &e))
}

pub(super) fn check_limits(info: &ResourceInfo, name: &str, obj: &Value) -> Result<(), ApiError> {
    limits::check_object(obj).map_err(|e| limit_error(&info.store_name(), name, &e))
}

/// The warning for `managedFields` a client sent that are not kept.
pub(super) fn managed_fields_warning(incoming: &Value, old: Option<&Value>) -> Vec<String> {
    let sent = incoming.pointer("/metadata/managedFields");
    let had = old.and_then(|o| o.pointer("/metadata/managedFields"));
    match sent {
        Some(Value::Array(a)) if !a.is_empty() && sent != had => vec![
            "metadata.managedFields: ignored: Tugboat does not track field managers yet (server-side apply is not supported)".to_string(),
        ],
        _ => Vec::new(),
    }
}

/// Five characters from Kubernetes' alphabet for generated names (no vowels, so no words).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// Is this a pod that still needs a node or is still running?
pub fn pod_is_active(pod: &Value) -> bool {
    !meta::is_deleting(pod)
        && !matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        )
}
