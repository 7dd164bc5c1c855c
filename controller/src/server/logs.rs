//! `GET /api/v1/namespaces/{ns}/pods/{name}/log`: the container's output, fetched
//! from the agent of the pod's node (its address and port are in the Node's status)
//! and streamed through, as the Kubernetes API server does with the kubelet:
//! over TLS, presenting the controller's client certificate and accepting only
//! the node's own serving certificate.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use serde_json::Value;
use tugboat_api::ApiError;
use tugboat_api::resource::{NODES, PODS};

use super::AppState;
use super::query::Query;

/// The header an agent answers with, naming its node: how the controller knows
/// that what answers at a Node's address is that node's agent.
pub use tugboat_api::limits::AGENT_HEADER;

/// The agent's address from the Node's status: its `InternalIP`, which must be an
/// IP address (admission checks that too), and its port, which must be a port.
pub(crate) fn agent_address(node: &Value, node_name: &str) -> Result<SocketAddr, ApiError> {
    let unavailable = |why: String| ApiError::new(503, "ServiceUnavailable", why);
    let ip = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .ok_or_else(|| unavailable(format!("node {node_name} publishes no InternalIP address")))?;
    let ip: IpAddr = ip.parse().map_err(|_| {
        unavailable(format!(
            "node {node_name} publishes an InternalIP that is not an IP address: {ip:?}"
        ))
    })?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            unavailable(format!(
                "node {node_name} does not publish an agent endpoint for logs"
            ))
        })?;
    Ok(SocketAddr::new(ip, port))
}

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
    let container = match query.get("container") {
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
    let agent = agent_address(&node, node_name)?;
    // Only what the agent's log endpoint reads, re-rendered from parsed values, so
    // nothing a client sends reaches the agent's URL unchecked.
    let mut forward: Vec<(&str, String)> = Vec::new();
    for key in ["follow", "previous", "timestamps"] {
        if query.flag(key)? {
            forward.push((key, "true".to_string()));
        }
    }
    for key in ["tailLines", "sinceSeconds", "limitBytes"] {
        if let Some(n) = query.count(key)? {
            forward.push((key, n.to_string()));
        }
    }
    let mut url = reqwest::Url::parse(&format!("{}://{agent}/", state.agents.scheme()))
        .map_err(|e| ApiError::internal(format!("the agent URL for node {node_name}: {e}")))?;
    url.path_segments_mut()
        .map_err(|_| ApiError::internal("the agent URL cannot take a path"))?
        .clear()
        .extend(["containerLogs", ns, name, container.as_str()]);
    url.query_pairs_mut().extend_pairs(forward.iter());
    let unreachable = || {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("cannot reach the agent of node {node_name} at {agent}"),
        )
    };
    let credential = state.registry.node_credential(node_name).await?;
    let http = state.agents.for_node(
        node_name,
        credential.as_ref().map(|c| c.fingerprint.as_str()),
    )?;
    let resp = http.get(url).send().await.map_err(|e| {
        tracing::debug!(node = %node_name, %agent, error = %e, "log request to the agent failed");
        unreachable()
    })?;
    // Whatever answers at a Node's address is relayed only if it is that node's
    // agent: over TLS the agent's certificate must name the node (see
    // `agents`); the header is the check left with --insecure-http. The
    // controller must not become a way to read other services (redirects are
    // not followed either).
    let is_agent = resp
        .headers()
        .get(AGENT_HEADER)
        .and_then(|v| v.to_str().ok())
        == Some(node_name);
    if !is_agent {
        return Err(ApiError::new(
            502,
            "ServiceUnavailable",
            format!(
                "the endpoint of node {node_name} at {agent} did not answer as its Tugboat agent"
            ),
        ));
    }
    let code = resp.status().as_u16();
    if !resp.status().is_success() {
        let text = resp.text().await.unwrap_or_default();
        let text: String = text.trim().chars().take(1024).collect();
        return Err(ApiError::new(
            if (400..600).contains(&code) {
                code
            } else {
                502
            },
            if code == 404 {
                "NotFound"
            } else {
                "InternalError"
            },
            text,
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
