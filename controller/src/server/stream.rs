//! `pods/{name}/exec`, `pods/{name}/attach` and `pods/{name}/portforward`: the
//! client's upgrade (WebSocket, or SPDY/3.1 for older clients) is relayed to the
//! agent of the pod's node, as kube-apiserver relays it to the kubelet, and once
//! both sides have switched protocols the two connections are spliced. The
//! session's protocol is the agent's to speak; the controller authorizes, finds
//! the pod's node and container, and checks that what answers is that node's
//! agent (over TLS with its node certificate, as for logs).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use axum::response::Response;
use serde_json::Value;
use tugboat_api::ApiError;
use tugboat_api::resource::{NODES, PODS};

use super::AppState;
use super::logs::{AGENT_HEADER, agent_address};

/// The subresources relayed to agents.
pub const SUBRESOURCES: [&str; 3] = ["exec", "attach", "portforward"];

/// Headers that carry the upgrade, both ways.
const UPGRADE_HEADERS: [&str; 6] = [
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];
const ANSWER_HEADERS: [&str; 5] = [
    "connection",
    "upgrade",
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

use tugboat_api::query::pairs;

/// The container a session is with: the one named, else the pod's
/// `kubectl.kubernetes.io/default-container`, else its only (or first) one.
fn container(pod: &Value, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let containers: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    if let Some(c) = asked.filter(|c| !c.is_empty()) {
        return if containers.contains(&c) {
            Ok(c.to_string())
        } else {
            Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )))
        };
    }
    let default = pod
        .pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container")
        .and_then(Value::as_str)
        .filter(|d| containers.contains(d));
    default
        .or_else(|| containers.first().copied())
        .map(str::to_string)
        .ok_or_else(|| ApiError::bad_request(format!("pod {name} has no containers")))
}

#[allow(clippy::too_many_arguments)]
pub async fn relay(
    state: &Arc<AppState>,
    ns: &str,
    name: &str,
    sub: &str,
    method: &Method,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Result<Response, ApiError> {
    if *method != Method::GET && *method != Method::POST {
        return Err(ApiError::method_not_allowed(format!(
            "pods/{sub} takes GET (WebSocket) or POST (SPDY), not {method}"
        )));
    }
    let Some(on_upgrade) = on_upgrade.filter(|_| headers.contains_key(header::UPGRADE)) else {
        return Err(ApiError::bad_request(format!(
            "pods/{sub} is a stream: upgrade the connection (WebSocket, or SPDY/3.1)"
        )));
    };
    let pod = state.registry.get(&PODS, Some(ns), name).await?;
    let query = pairs(raw_query);
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} is not scheduled to a node yet"
        )));
    }
    let node = state.registry.get(&NODES, None, &node_name).await?;
    let agent = agent_address(&node, &node_name)?;
    let mut url = reqwest::Url::parse(&format!("{}://{agent}/", state.agents.scheme()))
        .map_err(|e| ApiError::internal(format!("the agent URL for node {node_name}: {e}")))?;
    // Only what the agent reads, re-rendered from parsed values.
    let forward: Vec<(String, String)> = if sub == "portforward" {
        url.path_segments_mut()
            .map_err(|_| ApiError::internal("the agent URL cannot take a path"))?
            .clear()
            .extend(["portForward", ns, name]);
        query.into_iter().filter(|(k, _)| k == "ports").collect()
    } else {
        let asked = query
            .iter()
            .find(|(k, _)| k == "container")
            .map(|(_, v)| v.as_str());
        let c = container(&pod, name, asked)?;
        url.path_segments_mut()
            .map_err(|_| ApiError::internal("the agent URL cannot take a path"))?
            .clear()
            .extend([sub, ns, name, c.as_str()]);
        query
            .into_iter()
            .filter(|(k, _)| {
                matches!(
                    k.as_str(),
                    "command" | "stdin" | "stdout" | "stderr" | "tty"
                )
            })
            .collect()
    };
    url.query_pairs_mut().extend_pairs(forward.iter());
    let credential = state.registry.node_credential(&node_name).await?;
    let http = state.agents.for_node(
        &node_name,
        credential.as_ref().map(|c| c.fingerprint.as_str()),
    )?;
    let mut request = http.request(method.clone(), url);
    for name in UPGRADE_HEADERS {
        for value in headers.get_all(name) {
            request = request.header(name, value.clone());
        }
    }
    let resp = request.send().await.map_err(|e| {
        tracing::debug!(node = %node_name, %agent, error = %e, "stream request to the agent failed");
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("cannot reach the agent of node {node_name} at {agent}"),
        )
    })?;
    let is_agent = resp
        .headers()
        .get(AGENT_HEADER)
        .and_then(|v| v.to_str().ok())
        == Some(node_name.as_str());
    if !is_agent {
        return Err(ApiError::new(
            502,
            "ServiceUnavailable",
            format!(
                "the endpoint of node {node_name} at {agent} did not answer as its Tugboat agent"
            ),
        ));
    }
    if resp.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let text: String = text.trim().chars().take(1024).collect();
        return Err(ApiError::new(
            if (400..600).contains(&code) {
                code
            } else {
                502
            },
            match code {
                404 => "NotFound",
                400 => "BadRequest",
                _ => "InternalError",
            },
            text,
        ));
    }
    let mut out = Response::new(Body::empty());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for name in ANSWER_HEADERS {
        for value in resp.headers().get_all(name) {
            out.headers_mut()
                .append(HeaderName::from_static(name), value.clone());
        }
    }
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        let agent_side = resp.upgrade().await;
        let client_side = on_upgrade.await;
        match (agent_side, client_side) {
            (Ok(mut agent_io), Ok(client)) => {
                let mut client_io = hyper_util::rt::TokioIo::new(client);
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    r = tokio::io::copy_bidirectional(&mut client_io, &mut agent_io) => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "stream relay ended");
                        }
                    }
                }
            }
            (Err(e), _) => tracing::debug!(error = %e, "the agent's side of the stream failed"),
            (_, Err(e)) => tracing::debug!(error = %e, "the client's side of the stream failed"),
        }
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_container_is_the_named_the_default_or_the_first() {
        let pod = json!({"metadata": {"annotations": {"kubectl.kubernetes.io/default-container": "b"}},
                         "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(container(&pod, "p", None).unwrap(), "b");
        assert_eq!(container(&pod, "p", Some("a")).unwrap(), "a");
        assert_eq!(container(&pod, "p", Some("zz")).unwrap_err().code, 400);
        let plain = json!({"spec": {"containers": [{"name": "x"}, {"name": "y"}]}});
        assert_eq!(container(&plain, "p", None).unwrap(), "x");
    }
}
