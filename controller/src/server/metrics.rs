//! `metrics.k8s.io/v1beta1`, as metrics-server serves it, from the readings the
//! controller scrapes from the agents ([`crate::metrics`]): `NodeMetrics` and
//! `PodMetrics`, one or a list (with `labelSelector`), so `kubectl top` and
//! `tug top` work. Read-only and never stored; authorized like any namespaced
//! or cluster-scoped read (admins, and API tokens in their namespace).

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tugboat_api::resource::{NODES, PODS, ResourceInfo};
use tugboat_api::selector::Selector;
use tugboat_api::{ApiError, meta};

use super::{ApiResponse, AppState, json_response};
use crate::auth::User;
use crate::auth::authorize::{self, Attributes, Decision, Verb};
use crate::metrics::{NodeUsage, PodUsage};

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";

/// The two kinds, for authorization and discovery (not stored, so not in the
/// resource table).
pub const NODE_METRICS: ResourceInfo = ResourceInfo {
    group: GROUP,
    version: VERSION,
    kind: "NodeMetrics",
    plural: "nodes",
    singular: "",
    namespaced: false,
    short_names: &[],
    has_status: false,
    has_scale: false,
    has_spec: false,
};

pub const POD_METRICS: ResourceInfo = ResourceInfo {
    group: GROUP,
    version: VERSION,
    kind: "PodMetrics",
    plural: "pods",
    singular: "",
    namespaced: true,
    short_names: &[],
    has_status: false,
    has_scale: false,
    has_spec: false,
};

/// The APIResourceList of `metrics.k8s.io/v1beta1`.
pub fn resource_list() -> Value {
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/{VERSION}"),
    "resources": [
        {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
        {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]},
    ]})
}

fn allowed(
    user: Option<&User>,
    info: &'static ResourceInfo,
    verb: Verb,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<(), ApiError> {
    let user = user.ok_or_else(|| ApiError::new(401, "Unauthorized", "Unauthorized"))?;
    let attrs = Attributes {
        verb,
        info,
        namespace,
        name,
        subresource: None,
    };
    match authorize::authorize(user, &attrs) {
        Decision::Allow => Ok(()),
        Decision::Deny(reason) => Err(authorize::forbidden(user, &attrs, reason.as_deref())),
        Decision::AllowIf(_) => Err(authorize::forbidden(user, &attrs, None)),
    }
}

/// Kubernetes' quantity for nanocores: `123456n`.
fn cpu(nanocores: u64) -> String {
    format!("{nanocores}n")
}

/// Kubernetes' quantity for bytes, as metrics-server writes it: `12345Ki`.
fn memory(bytes: u64) -> String {
    format!("{}Ki", bytes / 1024)
}

/// The sample's time to the second, as metrics-server writes it.
fn timestamp(t: jiff::Timestamp) -> String {
    jiff::Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

fn window(seconds: f64) -> String {
    let ms = (seconds * 1000.0).round().max(0.0) as u64;
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}.{:03}s", ms / 1000, ms % 1000)
    }
}

fn node_metrics(n: &NodeUsage, node: &Value) -> Value {
    json!({
        "kind": "NodeMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {"name": n.name, "creationTimestamp": meta::now_rfc3339(),
            "labels": node.pointer("/metadata/labels").cloned().unwrap_or(json!({}))},
        "timestamp": timestamp(n.timestamp), "window": window(n.window.as_secs_f64()),
        "usage": {"cpu": cpu(n.cpu_nano_cores), "memory": memory(n.memory_working_set_bytes)},
    })
}

fn pod_metrics(p: &PodUsage, pod: &Value) -> Value {
    let containers: Vec<Value> = p
        .containers
        .iter()
        .map(|c| {
            json!({"name": c.name, "usage": {"cpu": cpu(c.cpu_nano_cores),
                "memory": memory(c.memory_working_set_bytes)}})
        })
        .collect();
    json!({
        "kind": "PodMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {"name": p.name, "namespace": p.namespace, "creationTimestamp": meta::now_rfc3339(),
            "labels": pod.pointer("/metadata/labels").cloned().unwrap_or(json!({}))},
        "timestamp": timestamp(p.timestamp), "window": window(p.window.as_secs_f64()),
        "containers": containers,
    })
}

fn respond(result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(v) => json_response(StatusCode::OK, &v, &[]),
        Err(e) => ApiResponse(e).into_response(),
    }
}

fn selector(q: &std::collections::HashMap<String, String>) -> Result<Selector, ApiError> {
    match q.get("labelSelector").filter(|s| !s.is_empty()) {
        Some(s) => Selector::parse(s)
            .map_err(|e| ApiError::bad_parameter("labelSelector", s, &e.to_string())),
        None => Ok(Selector::everything()),
    }
}

fn labels_match(sel: &Selector, obj: &Value) -> bool {
    sel.matches_object(obj)
}

pub async fn nodes(
    State(state): State<Arc<AppState>>,
    user: Option<Extension<User>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    respond(
        async {
            allowed(user.as_deref(), &NODE_METRICS, Verb::List, None, None)?;
            let sel = selector(&q)?;
            let mut items = Vec::new();
            for n in state.metrics.nodes() {
                let Some(node) = state.registry.try_get(&NODES, None, &n.name).await? else {
                    continue;
                };
                if labels_match(&sel, &node) {
                    items.push(node_metrics(&n, &node));
                }
            }
            items.sort_by(|a, b| {
                a["metadata"]["name"]
                    .as_str()
                    .cmp(&b["metadata"]["name"].as_str())
            });
            Ok(
                json!({"kind": "NodeMetricsList", "apiVersion": format!("{GROUP}/{VERSION}"),
                "metadata": {}, "items": items}),
            )
        }
        .await,
    )
}

pub async fn node(
    State(state): State<Arc<AppState>>,
    user: Option<Extension<User>>,
    Path(name): Path<String>,
) -> Response {
    respond(
        async {
            allowed(user.as_deref(), &NODE_METRICS, Verb::Get, None, Some(&name))?;
            let node = state.registry.get(&NODES, None, &name).await?;
            let n = state
                .metrics
                .node(&name)
                .ok_or_else(|| ApiError::not_found("nodemetrics.metrics.k8s.io", &name))?;
            Ok(node_metrics(&n, &node))
        }
        .await,
    )
}

async fn pod_list(
    state: &AppState,
    user: Option<&User>,
    ns: Option<&str>,
    q: &std::collections::HashMap<String, String>,
) -> Result<Value, ApiError> {
    allowed(user, &POD_METRICS, Verb::List, ns, None)?;
    let sel = selector(q)?;
    let mut items = Vec::new();
    for p in state.metrics.pods(ns) {
        let Some(pod) = state
            .registry
            .try_get(&PODS, Some(&p.namespace), &p.name)
            .await?
        else {
            continue;
        };
        if labels_match(&sel, &pod) {
            items.push(pod_metrics(&p, &pod));
        }
    }
    items.sort_by(|a, b| {
        (
            a["metadata"]["namespace"].as_str(),
            a["metadata"]["name"].as_str(),
        )
            .cmp(&(
                b["metadata"]["namespace"].as_str(),
                b["metadata"]["name"].as_str(),
            ))
    });
    Ok(
        json!({"kind": "PodMetricsList", "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {}, "items": items}),
    )
}

pub async fn all_pods(
    State(state): State<Arc<AppState>>,
    user: Option<Extension<User>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    respond(pod_list(&state, user.as_deref(), None, &q).await)
}

pub async fn pods(
    State(state): State<Arc<AppState>>,
    user: Option<Extension<User>>,
    Path(ns): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    respond(pod_list(&state, user.as_deref(), Some(&ns), &q).await)
}

pub async fn pod(
    State(state): State<Arc<AppState>>,
    user: Option<Extension<User>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    respond(
        async {
            allowed(
                user.as_deref(),
                &POD_METRICS,
                Verb::Get,
                Some(&ns),
                Some(&name),
            )?;
            let pod = state.registry.get(&PODS, Some(&ns), &name).await?;
            let p = state
                .metrics
                .pod(&ns, &name)
                .ok_or_else(|| ApiError::not_found("podmetrics.metrics.k8s.io", &name))?;
            Ok(pod_metrics(&p, &pod))
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_written_as_metrics_server_writes_them() {
        assert_eq!(cpu(1_500_000), "1500000n");
        assert_eq!(memory(10 * 1024 * 1024 + 100), "10240Ki");
        assert_eq!(window(15.0), "15s");
        assert_eq!(window(14.5), "14.500s");
    }
}
