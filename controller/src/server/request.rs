//! What a request carries besides its path: the body, read within bounds and
//! parsed as JSON or YAML, and the options of writes and deletes, from the query
//! and the body.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, header};
use futures::StreamExt;
use serde_json::Value;
use tugboat_api::admission::FieldValidation;
use tugboat_api::limits;
use tugboat_api::resource::ResourceInfo;
use tugboat_api::{ApiError, FieldError};

use super::query::Query;
use crate::registry::{DeleteOptions, FieldManager, Propagation, WriteOptions};

/// Reads the whole body, at most [`limits::MAX_REQUEST_BYTES`] of it and within
/// [`limits::BODY_READ_TIMEOUT_SECS`]; a larger one is a 413 `Status`, as
/// kube-apiserver answers, before it is read into memory.
pub async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
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

pub fn not_allowed(method: &Method, path: &str) -> ApiError {
    ApiError::method_not_allowed(format!(
        "the server does not allow this method on the requested resource ({method} {path})"
    ))
}

pub fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Reads a JSON or YAML body as one object. Keys repeated in one object are
/// treated as kube-apiserver's strict decoding treats them: refused under
/// `fieldValidation=Strict` (the default), named in a warning under `Warn`.
pub fn parse_body(
    info: &ResourceInfo,
    body: &Bytes,
    headers: &HeaderMap,
    opts: &WriteOptions,
) -> Result<(Value, Vec<String>), ApiError> {
    let ct = content_type(headers);
    if ct.split(';').next().unwrap_or("").trim() == tugboat_api::protobuf::MEDIA_TYPE {
        let obj = tugboat_api::protobuf::decode(body).map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {e}",
                info.kind,
                info.api_version(),
                info.kind
            ))
        })?;
        return Ok((obj, Vec::new()));
    }
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

pub fn write_options(query: &Query, headers: &HeaderMap) -> Result<WriteOptions, ApiError> {
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let manager = crate::managed::manager_name(query.get("fieldManager"), user_agent)?
        .map(|name| FieldManager { name, apply: false });
    Ok(WriteOptions {
        field_validation: FieldValidation::parse(query.get("fieldValidation").unwrap_or(""))?,
        dry_run: dry_run(query.get("dryRun"))?,
        manager,
    })
}

pub fn dry_run(value: Option<&str>) -> Result<bool, ApiError> {
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

pub fn delete_options(
    query: &Query,
    body: &Bytes,
    headers: &HeaderMap,
) -> Result<DeleteOptions, ApiError> {
    let protobuf = content_type(headers).split(';').next().unwrap_or("").trim()
        == tugboat_api::protobuf::MEDIA_TYPE;
    let body: Value = if body.is_empty() {
        Value::Null
    } else if protobuf {
        tugboat_api::protobuf::decode(body)
            .map_err(|e| ApiError::bad_request(format!("DeleteOptions: {e}")))?
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
