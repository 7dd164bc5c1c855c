//! The verbs on resources: get, list, watch, create, update, patch, delete, and the
//! `status` and `scale` subresources, answered the way the Kubernetes API server
//! answers them.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use tugboat_api::admission::FieldValidation;
use tugboat_api::limits;
use tugboat_api::resource::ResourceInfo;
use tugboat_api::{ApiError, FieldError, meta};

use super::path::{self, Target};
pub use super::query::Query;
use super::{ApiResponse, AppState, discovery, json_response};
use crate::patch::Patch;
use crate::registry::{DeleteOptions, ListOptions, Propagation, Subresource, WriteOptions};

pub async fn dispatch(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let method = parts.method;
    let uri = parts.uri;
    let headers = parts.headers;
    let span = tracing::debug_span!("request", %method, path = uri.path());
    let _enter = span.enter();
    let result = async {
        let query = Query::parse(uri.query())?;
        let body = read_body(&headers, body).await?;
        handle(&state, &method, uri.path(), &query, &headers, &body).await
    }
    .await;
    match result {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(code = e.code, reason = %e.reason, message = %e.message, "request failed");
            ApiResponse(e).into_response()
        }
    }
}

/// Reads the whole body, at most [`limits::MAX_REQUEST_BYTES`] of it and within
/// [`limits::BODY_READ_TIMEOUT_SECS`]; a larger one is a 413 `Status`, as
/// kube-apiserver answers, before it is read into memory.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::too_large(format!(
            "Request entity too large: limit is {}",
            limits::MAX_REQUEST_BYTES
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits::MAX_REQUEST_BYTES as u64) {
        return Err(too_large());
    }
    let read = async {
        let mut out = Vec::new();
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
            if out.len() + chunk.len() > limits::MAX_REQUEST_BYTES {
                return Err(too_large());
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    };
    tokio::time::timeout(Duration::from_secs(limits::BODY_READ_TIMEOUT_SECS), read)
        .await
        .map_err(|_| {
            ApiError::new(
                408,
                "Timeout",
                format!(
                    "the request body did not arrive within {} s",
                    limits::BODY_READ_TIMEOUT_SECS
                ),
            )
        })?
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
                Method::GET if query.flag("watch")? => watch(state, info, ns, query).await,
                Method::GET => list(state, info, ns, query).await,
                Method::POST => {
                    if namespace.is_none() && info.namespaced {
                        return Err(ApiError::method_not_allowed(format!(
                            "create {} needs a namespace: POST to {}",
                            info.plural,
                            info.collection_path(Some("NAMESPACE"))
                        )));
                    }
                    let opts = write_options(query)?;
                    let (obj, mut warnings) = parse_body(info, body, headers, opts)?;
                    let written = registry.create(info, ns, obj, opts).await?;
                    warnings.extend(written.warnings);
                    Ok(json_response(
                        StatusCode::CREATED,
                        &written.object,
                        &warnings,
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
                    let opts = write_options(query)?;
                    let (obj, mut warnings) = parse_body(info, body, headers, opts)?;
                    let written = registry
                        .update(info, ns, &name, obj, subresource_of(info, sub)?, opts)
                        .await?;
                    warnings.extend(written.warnings);
                    Ok(json_response(StatusCode::OK, &written.object, &warnings))
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

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Reads a JSON or YAML body as one object. Keys repeated in one object are
/// treated as kube-apiserver's strict decoding treats them: refused under
/// `fieldValidation=Strict` (the default), named in a warning under `Warn`.
fn parse_body(
    info: &ResourceInfo,
    body: &Bytes,
    headers: &HeaderMap,
    opts: WriteOptions,
) -> Result<(Value, Vec<String>), ApiError> {
    let ct = content_type(headers);
    if ct.contains("yaml") {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
        // The YAML reader refuses duplicate keys itself.
        let mut docs = tugboat_api::manifest::parse_documents(text)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        return match docs.len() {
            1 => Ok((docs.remove(0), Vec::new())),
            n => Err(ApiError::bad_request(format!(
                "expected one object in the body, got {n}"
            ))),
        };
    }
    let parsed = tugboat_api::json::parse(body).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            info.kind,
            info.api_version(),
            info.kind
        ))
    })?;
    let duplicates: Vec<String> = parsed
        .duplicates
        .iter()
        .map(|f| format!("duplicate field \"{f}\""))
        .collect();
    match opts.field_validation {
        FieldValidation::Strict if !duplicates.is_empty() => Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            info.kind,
            info.api_version(),
            info.kind,
            duplicates.join(", ")
        ))),
        FieldValidation::Warn => Ok((parsed.value, duplicates)),
        _ => Ok((parsed.value, Vec::new())),
    }
}

fn write_options(query: &Query) -> Result<WriteOptions, ApiError> {
    Ok(WriteOptions {
        field_validation: FieldValidation::parse(query.get("fieldValidation").unwrap_or(""))?,
        dry_run: dry_run(query.get("dryRun"))?,
    })
}

fn dry_run(value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => {
            let mut e = ApiError::bad_request(format!(
                "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
            ));
            e.causes
                .push(FieldError::not_supported("dryRun", other, &["All"]));
            Err(e)
        }
    }
}

fn delete_options(query: &Query, body: &Bytes) -> Result<DeleteOptions, ApiError> {
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        tugboat_api::json::parse(body)
            .map(|p| p.value)
            .map_err(|e| ApiError::bad_request(format!("DeleteOptions: {e}")))?
    };
    let policy = query
        .get("propagationPolicy")
        .map(str::to_string)
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
            return Err(ApiError::bad_parameter(
                "propagationPolicy",
                other,
                "supported values: \"Background\", \"Foreground\", \"Orphan\"",
            ));
        }
    };
    let grace = match query.get("gracePeriodSeconds") {
        Some(g) => Some(g.parse::<i64>().map_err(|_| {
            ApiError::bad_parameter("gracePeriodSeconds", g, "must be a whole number of seconds")
        })?),
        None => body.get("gracePeriodSeconds").and_then(Value::as_i64),
    };
    if grace.is_some_and(|g| g < 0) {
        return Err(ApiError::bad_request(
            "gracePeriodSeconds: must be greater than or equal to 0",
        ));
    }
    // `dryRun` comes as a query parameter or as DeleteOptions' list (`["All"]`).
    let mut dry = dry_run(query.get("dryRun"))?;
    match body.get("dryRun") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for v in list {
                dry |= dry_run(Some(v.as_str().unwrap_or("?")))?;
            }
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "DeleteOptions: dryRun: expected a list such as [\"All\"], got {other}"
            )));
        }
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
        dry_run: dry,
    })
}

async fn list(
    state: &Arc<AppState>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    query: &Query,
) -> Result<Response, ApiError> {
    let (labels, fields) = query.selectors(info.kind)?;
    let limit = query.count("limit")?.filter(|l| *l > 0);
    let continue_token = query.get("continue").filter(|c| !c.is_empty());
    let resource_version = query.revision_match()?;
    if continue_token.is_some() && query.resource_version()?.is_some() {
        return Err(ApiError::bad_parameter(
            "resourceVersion",
            query.get("resourceVersion").unwrap_or(""),
            "specifying resource version is not allowed when using continue",
        ));
    }
    query.count("timeoutSeconds")?;
    let opts = ListOptions {
        limit: limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX)),
        continue_token: continue_token.map(str::to_string),
        resource_version,
    };
    let page = state
        .registry
        .list_page(info, ns, &labels, &fields, &opts)
        .await?;
    let items: Vec<&Value> = page.items.iter().map(|i| &**i).collect();
    let mut metadata = json!({"resourceVersion": page.revision.to_string()});
    if let Some(c) = &page.continue_token {
        metadata["continue"] = json!(c);
    }
    if let Some(r) = page.remaining {
        metadata["remainingItemCount"] = json!(r);
    }
    let body = json!({
        "kind": info.list_kind(),
        "apiVersion": info.api_version(),
        "metadata": metadata,
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
    let (labels, fields) = query.selectors(info.kind)?;
    let from = query.resource_version()?;
    query.flag("allowWatchBookmarks")?;
    let timeout = query.count("timeoutSeconds")?.map(Duration::from_secs);
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
        Method::PUT => {
            let parsed = tugboat_api::json::parse(body).map_err(|e| {
                ApiError::bad_request(format!(
                    "Scale in version \"v1\" cannot be handled as a Scale: {e}"
                ))
            })?;
            if !parsed.duplicates.is_empty()
                && write_options(query)?.field_validation == FieldValidation::Strict
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
            write_options(query)?,
        )
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &scale_of(&written.object),
        &[],
    ))
}
