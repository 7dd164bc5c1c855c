//! The `scale` subresource of Deployments, ReplicaSets and ReplicationControllers
//! (whose selector is a plain label map): their `autoscaling/v1`
//! Scale view, read, replaced or patched, written back as a change of
//! `spec.replicas`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use tugboat_api::admission::FieldValidation;
use tugboat_api::resource::ResourceInfo;
use tugboat_api::{ApiError, meta};

use super::query::Query;
use super::request::{content_type, not_allowed, write_options};
use super::{AppState, json_response};
use crate::patch::Patch;
use crate::registry::Subresource;

/// The `autoscaling/v1` Scale view of a Deployment, ReplicaSet or ReplicationController.
fn scale_of(obj: &Value) -> Value {
    let selector = obj.pointer("/spec/selector");
    // A ReplicationController's selector is `{key: value}`, not a LabelSelector.
    let plain = (obj.get("kind").and_then(Value::as_str) == Some("ReplicationController"))
        .then(|| selector.and_then(Value::as_object))
        .flatten()
        .map(|m| {
            let mut parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            parts.sort();
            parts.join(",")
        });
    let selector = plain.unwrap_or_else(|| label_selector_string(selector));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta::name(obj),
            "namespace": meta::namespace(obj),
            "uid": meta::uid(obj),
            "resourceVersion": meta::resource_version(obj),
            "creationTimestamp": obj.pointer("/metadata/creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

/// A LabelSelector in the label-selector syntax (`app=web,tier in (a,b)`).
fn label_selector_string(selector: Option<&Value>) -> String {
    selector
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .map(
            |s: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector| {
                let mut parts: Vec<String> = s
                    .match_labels
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                for e in s.match_expressions.unwrap_or_default() {
                    let values = e.values.unwrap_or_default().join(",");
                    parts.push(match e.operator.as_str() {
                        "In" => format!("{} in ({values})", e.key),
                        "NotIn" => format!("{} notin ({values})", e.key),
                        "Exists" => e.key.clone(),
                        _ => format!("!{}", e.key),
                    });
                }
                parts.join(",")
            },
        )
        .unwrap_or_default()
}
#[allow(clippy::too_many_arguments)]
pub async fn scale(
    state: &Arc<AppState>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    name: &str,
    method: &Method,
    query: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let registry = &state.registry;
    let current = registry.get(info, ns, name).await?;
    let new_scale = match *method {
        Method::GET => return Ok(json_response(StatusCode::OK, &scale_of(&current), &[])),
        Method::PUT => {
            let parsed = tugboat_api::json::parse(body).map_err(|e| {
                ApiError::bad_request(format!(
                    "Scale in version \"v1\" cannot be handled as a Scale: {e}"
                ))
            })?;
            if !parsed.duplicates.is_empty()
                && write_options(query, headers)?.field_validation == FieldValidation::Strict
            {
                return Err(ApiError::bad_request(format!(
                    "Scale in version \"v1\" cannot be handled as a Scale: strict decoding error: duplicate field \"{}\"",
                    parsed.duplicates[0]
                )));
            }
            let v = parsed.value;
            if let Some(kind) = v.get("kind").and_then(Value::as_str)
                && kind != "Scale"
            {
                return Err(ApiError::bad_request(format!(
                    "expected a Scale (autoscaling/v1), got a {kind}"
                )));
            }
            if let Some(body_name) = v.pointer("/metadata/name").and_then(Value::as_str)
                && body_name != name
            {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
            v
        }
        Method::PATCH => {
            // The patch applies to the Scale as it is; only a resourceVersion the
            // patch itself sets is a precondition.
            let mut base = scale_of(&current);
            meta::metadata_mut(&mut base).remove("resourceVersion");
            Patch::parse(content_type(headers), body)?.apply(&base)?
        }
        _ => return Err(not_allowed(method, &info.object_path(ns, name))),
    };
    let replicas = match new_scale.pointer("/spec/replicas") {
        Some(Value::Number(n)) => {
            n.as_i64()
                .and_then(|r| i32::try_from(r).ok())
                .ok_or_else(|| {
                    ApiError::invalid(
                        "Scale",
                        "autoscaling",
                        name,
                        vec![tugboat_api::FieldError::invalid(
                            "spec.replicas",
                            n,
                            "must be a 32-bit integer",
                        )],
                    )
                })?
        }
        // Kubernetes' Scale defaults a missing count to 0; scaling a workload to
        // nothing because a client sent `{}` is never what was meant.
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(
                "Scale",
                "autoscaling",
                name,
                vec![tugboat_api::FieldError::required("spec.replicas")],
            ));
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Scale in version \"v1\" cannot be handled as a Scale: spec.replicas: expected an integer, got {other}"
            )));
        }
    };
    if replicas < 0 {
        return Err(ApiError::invalid(
            "Scale",
            "autoscaling",
            name,
            vec![tugboat_api::FieldError::invalid(
                "spec.replicas",
                replicas,
                "must be greater than or equal to 0",
            )],
        ));
    }
    // Written as a merge patch of the object, so a write without a precondition is
    // retried on conflict with whatever else changed meanwhile (status, labels).
    let mut change = json!({"spec": {"replicas": replicas}});
    if let Some(rv) = new_scale
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|rv| !rv.is_empty())
    {
        change["metadata"] = json!({"resourceVersion": rv});
    }
    let written = registry
        .patch(
            info,
            ns,
            name,
            &Patch::Merge(change),
            Subresource::Main,
            write_options(query, headers)?,
            None,
        )
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &scale_of(&written.object),
        &[],
    ))
}
