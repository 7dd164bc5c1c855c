//! The verbs on resources: get, list, watch, create, update, patch, delete, and the
//! `status` and `scale` subresources, answered the way the Kubernetes API server
//! answers them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use tugboat_api::admission::FieldValidation;
use tugboat_api::resource::ResourceInfo;
use tugboat_api::selector::{FieldSelector, Selector};
use tugboat_api::{ApiError, meta};

use super::path::{self, Target};
use super::{ApiResponse, AppState, discovery, json_response};
use crate::patch::Patch;
use crate::registry::{DeleteOptions, Propagation, Subresource, WriteOptions};

pub type Query = HashMap<String, String>;

pub async fn dispatch(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query: Query = uri
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    Some((decode(k)?, decode(v)?))
                })
                .collect()
        })
        .unwrap_or_default();
    let span = tracing::debug_span!("request", %method, path = uri.path());
    let _enter = span.enter();
    match handle(&state, &method, uri.path(), &query, &headers, &body).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(code = e.code, reason = %e.reason, message = %e.message, "request failed");
            ApiResponse(e).into_response()
        }
    }
}

fn decode(s: &str) -> Option<String> {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

async fn handle(
    state: &Arc<AppState>,
    method: &Method,
    path: &str,
    query: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let target = path::parse(path)?;
    let registry = &state.registry;
    match target {
        Target::Group { group } => match discovery::group(&group) {
            Some(doc) if method == Method::GET => Ok(json_response(StatusCode::OK, &doc, &[])),
            _ => Err(ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({path})"),
            )),
        },
        Target::GroupVersion { group, version } => match discovery::resource_list(&group, &version)
        {
            Some(doc) if method == Method::GET => Ok(json_response(StatusCode::OK, &doc, &[])),
            _ => Err(ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({path})"),
            )),
        },
        Target::Collection { info, namespace } => {
            let ns = namespace.as_deref();
            match *method {
                Method::GET if is_true(query.get("watch")) => watch(state, info, ns, query).await,
                Method::GET => list(state, info, ns, query).await,
                Method::POST => {
                    if namespace.is_none() && info.namespaced {
                        return Err(ApiError::method_not_allowed(format!(
                            "create {} needs a namespace: POST to {}",
                            info.plural,
                            info.collection_path(Some("NAMESPACE"))
                        )));
                    }
                    let obj = parse_body(body, headers)?;
                    let written = registry
                        .create(info, ns, obj, write_options(query)?)
                        .await?;
                    Ok(json_response(
                        StatusCode::CREATED,
                        &written.object,
                        &written.warnings,
                    ))
                }
                _ => Err(not_allowed(method, path)),
            }
        }
        Target::Object {
            info,
            namespace,
            name,
            subresource,
        } => {
            let ns = namespace.as_deref();
            let sub = subresource.as_deref();
            match (sub, method.clone()) {
                (None | Some("status"), Method::GET) => {
                    let obj = registry.get(info, ns, &name).await?;
                    Ok(json_response(StatusCode::OK, &obj, &[]))
                }
                (None | Some("status"), Method::PUT) => {
                    let obj = parse_body(body, headers)?;
                    let written = registry
                        .update(
                            info,
                            ns,
                            &name,
                            obj,
                            subresource_of(info, sub)?,
                            write_options(query)?,
                        )
                        .await?;
                    Ok(json_response(
                        StatusCode::OK,
                        &written.object,
                        &written.warnings,
                    ))
                }
                (None | Some("status"), Method::PATCH) => {
                    let patch = Patch::parse(content_type(headers), body)?;
                    let written = registry
                        .patch(
                            info,
                            ns,
                            &name,
                            &patch,
                            subresource_of(info, sub)?,
                            write_options(query)?,
                        )
                        .await?;
                    Ok(json_response(
                        StatusCode::OK,
                        &written.object,
                        &written.warnings,
                    ))
                }
                (None, Method::DELETE) => {
                    let opts = delete_options(query, body)?;
                    let obj = registry.delete(info, ns, &name, &opts).await?;
                    let code = if meta::is_deleting(&obj) {
                        StatusCode::ACCEPTED
                    } else {
                        StatusCode::OK
                    };
                    Ok(json_response(code, &obj, &[]))
                }
                (Some("log"), Method::GET) if info.kind == "Pod" => {
                    super::logs::pod_log(state, ns.unwrap_or("default"), &name, query).await
                }
                (Some("scale"), m) if info.has_scale => {
                    scale(state, info, ns, &name, &m, query, headers, body).await
                }
                (Some(other), _) if other != "status" && other != "scale" => Err(ApiError::new(
                    404,
                    "NotFound",
                    format!(
                        "{} has no subresource \"{other}\" here yet",
                        info.store_name()
                    ),
                )),
                _ => Err(not_allowed(method, path)),
            }
        }
    }
}

fn subresource_of(info: &ResourceInfo, sub: Option<&str>) -> Result<Subresource, ApiError> {
    match sub {
        None => Ok(Subresource::Main),
        Some("status") if info.has_status => Ok(Subresource::Status),
        Some(other) => Err(ApiError::new(
            404,
            "NotFound",
            format!("{} has no subresource \"{other}\"", info.store_name()),
        )),
    }
}

fn not_allowed(method: &Method, path: &str) -> ApiError {
    ApiError::method_not_allowed(format!(
        "the server does not allow this method on the requested resource ({method} {path})"
    ))
}

fn is_true(v: Option<&String>) -> bool {
    matches!(v.map(String::as_str), Some("true" | "1"))
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn parse_body(body: &Bytes, headers: &HeaderMap) -> Result<Value, ApiError> {
    let ct = content_type(headers);
    if ct.contains("yaml") {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
        let mut docs = tugboat_api::manifest::parse_documents(text)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        return match docs.len() {
            1 => Ok(docs.remove(0)),
            n => Err(ApiError::bad_request(format!(
                "expected one object in the body, got {n}"
            ))),
        };
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a valid JSON object: {e}")))
}

fn write_options(query: &Query) -> Result<WriteOptions, ApiError> {
    Ok(WriteOptions {
        field_validation: FieldValidation::parse(
            query
                .get("fieldValidation")
                .map(String::as_str)
                .unwrap_or(""),
        )?,
        dry_run: match query.get("dryRun").map(String::as_str) {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
                )));
            }
        },
    })
}

fn delete_options(query: &Query, body: &Bytes) -> Result<DeleteOptions, ApiError> {
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("DeleteOptions: {e}")))?
    };
    let policy = query
        .get("propagationPolicy")
        .cloned()
        .or_else(|| {
            body.get("propagationPolicy")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .or_else(|| {
            body.get("orphanDependents")
                .and_then(Value::as_bool)
                .filter(|o| *o)
                .map(|_| "Orphan".to_string())
        });
    let propagation = match policy.as_deref() {
        None | Some("Background") => Propagation::Background,
        Some("Foreground") => Propagation::Foreground,
        Some("Orphan") => Propagation::Orphan,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Background\", \"Foreground\", \"Orphan\""
            )));
        }
    };
    let grace = match query.get("gracePeriodSeconds") {
        Some(g) => Some(g.parse::<i64>().map_err(|_| {
            ApiError::bad_request(format!(
                "gracePeriodSeconds: Invalid value: \"{g}\": must be a whole number of seconds"
            ))
        })?),
        None => body.get("gracePeriodSeconds").and_then(Value::as_i64),
    };
    if grace.is_some_and(|g| g < 0) {
        return Err(ApiError::bad_request(
            "gracePeriodSeconds: must be greater than or equal to 0",
        ));
    }
    Ok(DeleteOptions {
        propagation,
        grace_period_seconds: grace,
        precondition_uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        precondition_resource_version: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

fn selectors(query: &Query) -> Result<(Selector, FieldSelector), ApiError> {
    let labels = match query.get("labelSelector") {
        Some(s) => Selector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => Selector::everything(),
    };
    let fields = match query.get("fieldSelector") {
        Some(s) => FieldSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => FieldSelector::default(),
    };
    Ok((labels, fields))
}

async fn list(
    state: &Arc<AppState>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    query: &Query,
) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(query)?;
    let (items, rev) = state.registry.list(info, ns, &labels, &fields).await?;
    let items: Vec<&Value> = items.iter().map(|i| &**i).collect();
    let body = json!({
        "kind": info.list_kind(),
        "apiVersion": info.api_version(),
        "metadata": {"resourceVersion": rev.to_string()},
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &body, &[]))
}

async fn watch(
    state: &Arc<AppState>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    query: &Query,
) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(query)?;
    let from = match query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion: Invalid value: \"{rv}\": must be a decimal revision"
            ))
        })?),
    };
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let events = state.registry.watch(info, ns, labels, fields, from).await?;
    let shutdown = state.shutdown.clone();
    let lines = events
        .map(|item| {
            let line = match item {
                Ok(item) => json!({"type": item.event_type, "object": &*item.object}),
                Err(e) => {
                    let mut status = serde_json::to_value(e.to_status()).unwrap_or_default();
                    status["kind"] = "Status".into();
                    status["apiVersion"] = "v1".into();
                    json!({"type": "ERROR", "object": status})
                }
            };
            let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
            bytes.push(b'\n');
            Ok::<_, std::convert::Infallible>(Bytes::from(bytes))
        })
        .take_until(async move { shutdown.cancelled().await });
    let body = match timeout {
        Some(t) => Body::from_stream(lines.take_until(tokio::time::sleep(t))),
        None => Body::from_stream(lines),
    };
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("static header"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        "no-cache, private".parse().expect("static header"),
    );
    Ok(resp)
}

/// The `autoscaling/v1` Scale view of a Deployment or ReplicaSet.
fn scale_of(obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector")
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
        .unwrap_or_default();
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

#[allow(clippy::too_many_arguments)]
async fn scale(
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
        Method::PUT => parse_body(body, headers)?,
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
        None | Some(Value::Null) => 0,
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
            write_options(query)?,
        )
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &scale_of(&written.object),
        &[],
    ))
}
