//! The agent's own small HTTP server: container logs for the controller's
//! `pods/{name}/log` proxy (`GET /containerLogs/{ns}/{pod}/{container}`), the
//! node's usage figures for its metrics API and autoscaler (`GET /stats/summary`,
//! [`tugboat_api::metrics::Summary`]), and `/healthz`. Listens on 127.0.0.1
//! unless told otherwise.
//!
//! With the node's credential it serves HTTPS with that certificate and takes
//! only clients whose certificate the cluster CA signed (the TLS handshake
//! refuses the rest), and of those answers only the controller: logs are the
//! controller's to relay, under its own authorization of the user asking, and
//! usage figures its to publish.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::AgentCtx;
use crate::runtime::{
    ContainerInfo, LABEL_CONTAINER_NAME, LABEL_NODE, LABEL_POD_NAME, LABEL_POD_NAMESPACE,
    LogOptions,
};

pub async fn serve(
    listener: TcpListener,
    ctx: Arc<AgentCtx>,
    limits: tugboat_serve::ConnLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let node = header::HeaderValue::from_str(&ctx.node).ok();
    let tls = ctx.tls.as_ref().map(|t| t.server_config());
    let only_controller = tls.is_some();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
        .route("/exec/{ns}/{pod}/{container}", get(exec).post(exec))
        .route("/attach/{ns}/{pod}/{container}", get(attach).post(attach))
        .route(
            "/portForward/{ns}/{pod}",
            get(port_forward).post(port_forward),
        )
        .route(tugboat_api::metrics::SUMMARY_PATH, get(stats_summary))
        .with_state((ctx, shutdown.clone()))
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| async move {
                if only_controller {
                    let caller = req
                        .extensions()
                        .get::<tugboat_serve::PeerCertificates>()
                        .and_then(|c| c.0.first().cloned());
                    if !caller.is_some_and(|c| crate::tls::is_controller(&c)) {
                        return (
                            StatusCode::FORBIDDEN,
                            "only the controller may use this agent's endpoints\n",
                        )
                            .into_response();
                    }
                }
                next.run(req).await
            },
        ))
        // Names this node on every answer: the controller relays only answers
        // that carry it (see the controller's logs proxy).
        .layer(axum::middleware::map_response(move |mut resp: Response| {
            let node = node.clone();
            async move {
                if let Some(n) = node {
                    resp.headers_mut()
                        .insert(tugboat_api::limits::AGENT_HEADER, n);
                }
                resp
            }
        }));
    tugboat_serve::serve(listener, app, limits, tls, shutdown).await
}

async fn stats_summary(State((ctx, _)): State<(Arc<AgentCtx>, CancellationToken)>) -> Response {
    match ctx.metrics.summary(ctx.proxy.endpoint_connections()) {
        Some(summary) => Json(summary).into_response(),
        // Only in the agent's first second or so.
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            format!(
                "node {} has no CPU figure yet: a rate needs two readings of the host, a second apart\n",
                ctx.node
            ),
        )
            .into_response(),
    }
}

type Ctx = State<(Arc<AgentCtx>, CancellationToken)>;

/// Every attempt at a pod's container on this node, oldest first.
async fn attempts(
    ctx: &AgentCtx,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<Vec<ContainerInfo>, Response> {
    let labels = vec![
        (LABEL_NODE.to_string(), ctx.node.clone()),
        (LABEL_POD_NAMESPACE.to_string(), ns.to_string()),
        (LABEL_POD_NAME.to_string(), pod.to_string()),
        (LABEL_CONTAINER_NAME.to_string(), container.to_string()),
    ];
    let mut found = ctx
        .runtime
        .list(&labels)
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())?;
    found.sort_by_key(ContainerInfo::attempt);
    Ok(found)
}

async fn exec(
    state: Ctx,
    path: Path<(String, String, String)>,
    query: RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    session(state, path, query, ws, true).await
}

async fn attach(
    state: Ctx,
    path: Path<(String, String, String)>,
    query: RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    session(state, path, query, ws, false).await
}

/// An exec or attach session with the pod's running container.
async fn session(
    State((ctx, shutdown)): Ctx,
    Path((ns, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    is_exec: bool,
) -> Response {
    let Ok(ws) = ws else {
        return (
            StatusCode::BAD_REQUEST,
            "exec and attach are served over WebSocket (v5.channel.k8s.io, v4.channel.k8s.io)\n",
        )
            .into_response();
    };
    let pairs = exec::query_pairs(query.as_deref());
    let req = match exec::stream_request(&pairs, is_exec) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let found = match attempts(&ctx, &ns, &pod, &container).await {
        Ok(found) => found,
        Err(resp) => return resp,
    };
    match found.last() {
        Some(c) if c.state.running => exec::upgrade(ctx.clone(), ws, c.id.clone(), req, shutdown),
        Some(_) => (
            StatusCode::BAD_REQUEST,
            format!("container {container} in pod {pod} is not running\n"),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!(
                "container {container:?} in pod {pod:?} not found on node {}\n",
                ctx.node
            ),
        )
            .into_response(),
    }
}

async fn port_forward(
    State((ctx, shutdown)): Ctx,
    Path((ns, pod)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Response {
    portforward::serve(ctx, ns, pod, request, shutdown).await
}

async fn container_logs(
    State((ctx, shutdown)): State<(Arc<AgentCtx>, CancellationToken)>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let found = match attempts(&ctx, &ns, &pod, &container).await {
        Ok(found) => found,
        Err(resp) => return resp,
    };
    let previous = q.get("previous").is_some_and(|p| p == "true");
    let target = if previous {
        found.iter().rev().nth(1)
    } else {
        found.last()
    };
    let Some(target) = target else {
        let what = if previous {
            "previous terminated container"
        } else {
            "container"
        };
        return (
            StatusCode::NOT_FOUND,
            format!(
                "{what} \"{container}\" in pod \"{pod}\" not found on node {}",
                ctx.node
            ),
        )
            .into_response();
    };
    let opts = LogOptions {
        follow: q.get("follow").is_some_and(|f| f == "true"),
        tail: q.get("tailLines").and_then(|t| t.parse().ok()),
        timestamps: q.get("timestamps").is_some_and(|t| t == "true"),
    };
    match ctx.runtime.logs(&target.id, &opts).await {
        Ok(stream) => {
            let body = stream
                .map(|chunk| chunk.map_err(std::io::Error::other))
                .take_until(async move { shutdown.cancelled().await });
            let mut resp = Response::new(Body::from_stream(body));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                "text/plain".parse().expect("static header"),
            );
            resp
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

mod exec;
mod portforward;

#[cfg(test)]
mod tests;
