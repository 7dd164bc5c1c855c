//! `GET /api/v1/namespaces/{ns}/pods/{name}/log`: the container's output, fetched
//! from the agent of the pod's node (its address and port are in the Node's status)
//! and streamed through, as the Kubernetes API server does with the kubelet.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use serde_json::Value;
use tugboat_api::ApiError;
use tugboat_api::resource::{NODES, PODS};

use super::AppState;
use super::handlers::Query;

pub async fn pod_log(
    state: &Arc<AppState>,
    ns: &str,
    name: &str,
    query: &Query,
) -> Result<Response, ApiError> {
    let pod = state.registry.get(&PODS, Some(ns), name).await?;
    let containers: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    let container = match query.get("container").map(String::as_str) {
        Some(c) if containers.contains(&c) => c.to_string(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        None if containers.len() == 1 => containers[0].to_string(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: the pod is not scheduled to a node yet"
        )));
    }
    let node = state.registry.get(&NODES, None, node_name).await?;
    let address = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .unwrap_or("127.0.0.1");
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            ApiError::new(
                503,
                "ServiceUnavailable",
                format!("node {node_name} does not publish an agent endpoint for logs"),
            )
        })?;
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_string()
    };
    let url = format!("http://{host}:{port}/containerLogs/{ns}/{name}/{container}");
    let mut forward: Vec<(&str, String)> = Vec::new();
    for key in [
        "follow",
        "tailLines",
        "previous",
        "timestamps",
        "sinceSeconds",
        "limitBytes",
    ] {
        if let Some(v) = query.get(key) {
            forward.push((key, v.clone()));
        }
    }
    let resp = state
        .http
        .get(&url)
        .query(&forward)
        .send()
        .await
        .map_err(|e| {
            ApiError::new(
                503,
                "ServiceUnavailable",
                format!("cannot reach the agent of node {node_name} at {url}: {e}"),
            )
        })?;
    let code = resp.status().as_u16();
    if !resp.status().is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(ApiError::new(
            code,
            if code == 404 {
                "NotFound"
            } else {
                "InternalError"
            },
            text.trim().to_string(),
        ));
    }
    let shutdown = state.shutdown.clone();
    let body = resp
        .bytes_stream()
        .map(|chunk| chunk.map_err(std::io::Error::other))
        .take_until(async move { shutdown.cancelled().await });
    let mut out = Response::new(Body::from_stream(body));
    *out.status_mut() = StatusCode::OK;
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        "text/plain".parse().expect("static header"),
    );
    Ok(out)
}
