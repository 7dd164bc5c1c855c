//! The HTTP API server: Kubernetes REST conventions over axum, so `tug`, `kubectl`
//! and the official client libraries work against it. Routing by URL shape lives in
//! `path`, resource verbs in `handlers`, discovery documents in `discovery`;
//! query parameters in `query`, bodies and write options in `request`, the
//! `scale` subresource in `scale` and pod logs in `logs` (through `agents`);
//! joining nodes and tokens in `join`. Every request is authenticated first
//! ([`crate::auth`]) and authorized per resource in `handlers`.

mod accept;
mod activate;
pub mod agents;
mod discovery;
mod handlers;
pub mod join;
mod logs;
pub mod metrics;
pub(crate) mod openapi;
mod path;
pub mod priority;
mod query;
mod request;
mod scale;
mod stream;
mod table;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tugboat_api::ApiError;

use crate::registry::Registry;

pub(crate) use logs::agent_address;
pub use tugboat_serve::ConnLimits;

/// What every handler shares.
pub struct AppState {
    pub registry: Arc<Registry>,
    /// Who is asking.
    pub auth: Arc<crate::auth::Auth>,
    /// For proxying pod logs from the agents (and scraping their metrics).
    pub agents: Arc<agents::AgentClients>,
    /// The latest readings of nodes' and pods' usage.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Connections that arrived for Services scaled to zero.
    pub activations: Arc<crate::controllers::hpa::Activations>,
    /// HTTPS, unless `--insecure-http`.
    pub tls: tugboat_serve::Tls,
    /// Cancelled on shutdown: ends open watches so the server can stop.
    pub shutdown: CancellationToken,
    /// Bounds on client connections.
    pub conn_limits: ConnLimits,
    /// The slots writes wait for (node heartbeats do not).
    pub write_slots: Arc<priority::WriteSlots>,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(ok))
        .route("/livez", get(ok))
        .route("/readyz", get(readyz))
        .route("/version", get(discovery::version))
        .route("/api", get(discovery::api_versions))
        .route("/apis", get(discovery::api_groups))
        .route("/cacerts", get(join::cacerts))
        .route("/openapi/v2", get(openapi::v2))
        .route("/openapi/v3", get(openapi::index))
        .route("/openapi/v3/{*path}", get(openapi::document))
        .route("/apis/metrics.k8s.io/v1beta1/nodes", get(metrics::nodes))
        .route(
            "/apis/metrics.k8s.io/v1beta1/nodes/{name}",
            get(metrics::node),
        )
        .route("/apis/metrics.k8s.io/v1beta1/pods", get(metrics::all_pods))
        .route(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods",
            get(metrics::pods),
        )
        .route(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{name}",
            get(metrics::pod),
        )
        .route(join::JOIN_PATH, post(join::join))
        .route(activate::ACTIVATE_PATH, post(activate::activate))
        .route(
            join::TOKENS_PATH,
            get(join::list_tokens).post(join::create_token),
        )
        .route(
            &format!("{}/{{id}}", join::TOKENS_PATH),
            delete(join::delete_token),
        )
        .fallback(handlers::dispatch)
        // Inside authentication (a layer added later wraps the ones before):
        // it needs to know who is asking.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            priority::middleware,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::middleware,
        ))
        // Every controller serves API writes, leader or not.
        .layer(axum::middleware::from_fn(exempt_from_fence))
        .with_state(state)
}

async fn exempt_from_fence(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    crate::store::fence::exempt(next.run(request)).await
}

async fn ok() -> &'static str {
    "ok"
}

/// `/readyz`, as kube-apiserver answers it: `ok`, or 500 with the failed
/// check (`[-]etcd failed`) when the store cannot be reached, so a load
/// balancer in front of several controllers passes this one over.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.registry.store().check().await {
        Ok(()) => "ok".into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readyz: the store cannot serve");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n",
            )
                .into_response()
        }
    }
}

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, state: Arc<AppState>) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    let limits = state.conn_limits;
    let tls = state.tls.clone();
    tugboat_serve::serve(listener, router(state), limits, tls, shutdown).await
}

/// An `ApiError` answered as a Kubernetes `Status` object.
pub struct ApiResponse(pub ApiError);

impl From<ApiError> for ApiResponse {
    fn from(e: ApiError) -> Self {
        ApiResponse(e)
    }
}

impl IntoResponse for ApiResponse {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.0.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut status = serde_json::to_value(self.0.to_status()).unwrap_or_default();
        status["kind"] = "Status".into();
        status["apiVersion"] = "v1".into();
        let mut response = json_response(code, &status, &[]);
        // As kube-apiserver's error writer: a Status that says when to retry
        // says it in the header too, where clients look for it.
        if let Some(seconds) = self.0.retry_after_seconds.filter(|s| *s > 0) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub fn json_response(code: StatusCode, body: &serde_json::Value, warnings: &[String]) -> Response {
    respond(code, body, warnings, false)
}

/// A JSON body encoded already (an object as the store keeps it).
pub fn respond_json(code: StatusCode, body: bytes::Bytes) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `body` as protobuf when `protobuf` and its kind has a message, else as JSON.
pub fn respond(
    code: StatusCode,
    body: &serde_json::Value,
    warnings: &[String],
    protobuf: bool,
) -> Response {
    let encoded = if protobuf {
        match tugboat_api::protobuf::encode(body) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                tracing::debug!(error = %e, "answering in JSON: the object has no protobuf form");
                None
            }
        }
    } else {
        None
    };
    let (bytes, media) = match encoded {
        Some(bytes) => (bytes, tugboat_api::protobuf::MEDIA_TYPE),
        None => (
            serde_json::to_vec(body).unwrap_or_default(),
            "application/json",
        ),
    };
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = code;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    for w in warnings {
        // RFC 7234 warning: code 299, agent "-", quoted text.
        let text = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append("Warning", v);
        }
    }
    resp
}
