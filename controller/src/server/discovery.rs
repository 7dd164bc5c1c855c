//! Discovery documents (`/api`, `/apis`, `/api/v1`, `/apis/apps/v1`) and `/version`,
//! which kubectl and client libraries read before anything else.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tugboat_api::resource::{self, ResourceInfo};

use super::accept;

/// We answer as Kubernetes 1.32, the kubectl installed here: kubectl's dispatcher
/// picks its own version from this answer.
pub async fn version() -> Json<Value> {
    Json(json!({
        "major": "1",
        "minor": "32",
        "gitVersion": format!("v1.32.0+tugboat-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    }))
}

pub async fn api_versions(headers: HeaderMap) -> Response {
    if accept::wants_aggregated_discovery(&headers) {
        return aggregated_response(vec![aggregated_group("")]);
    }
    Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }))
    .into_response()
}

/// The media type aggregated discovery is answered with; clients read the body
/// as the classic documents unless the response says exactly this.
const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn aggregated_response(items: Vec<Value>) -> Response {
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    });
    let mut resp = Json(body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(AGGREGATED));
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    resp
}

/// One group's `APIGroupDiscovery` (the core group is `""`), built from the same
/// resource lists the classic documents show.
fn aggregated_group(group: &str) -> Value {
    let versions = versions_of(group);
    let versions: Vec<Value> = versions
        .into_iter()
        .filter_map(|v| {
            let list = resource_list(group, v)?;
            let entries = list["resources"].as_array().cloned().unwrap_or_default();
            let kind_of = |e: &Value| {
                json!({
                    "group": e.get("group").and_then(Value::as_str).unwrap_or(group),
                    "version": e.get("version").and_then(Value::as_str).unwrap_or(v),
                    "kind": e["kind"],
                })
            };
            let resources: Vec<Value> = entries
                .iter()
                .filter(|e| !e["name"].as_str().unwrap_or("").contains('/'))
                .map(|e| {
                    let name = e["name"].as_str().unwrap_or("");
                    let subresources: Vec<Value> = entries
                        .iter()
                        .filter_map(|s| {
                            let sub = s["name"].as_str()?.strip_prefix(name)?.strip_prefix('/')?;
                            Some(json!({"subresource": sub, "responseKind": kind_of(s), "verbs": s["verbs"]}))
                        })
                        .collect();
                    let mut r = json!({
                        "resource": name,
                        "responseKind": kind_of(e),
                        "scope": if e["namespaced"] == true { "Namespaced" } else { "Cluster" },
                        "singularResource": e["singularName"],
                        "verbs": e["verbs"],
                    });
                    for field in ["shortNames", "categories"] {
                        if let Some(v) = e.get(field).filter(|v| !v.is_null()) {
                            r[field] = v.clone();
                        }
                    }
                    if !subresources.is_empty() {
                        r["subresources"] = Value::Array(subresources);
                    }
                    r
                })
                .collect();
            Some(json!({"version": v, "resources": resources, "freshness": "Current"}))
        })
        .collect();
    json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
}

fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&str> = resource::ALL
        .iter()
        .map(|r| r.group)
        .filter(|g| !g.is_empty())
        .collect();
    groups.dedup();
    // Served from memory, not the store (see `metrics`).
    groups.push(super::metrics::GROUP);
    groups
}

/// The versions of `group` we serve, preferred first.
fn versions_of(group: &str) -> Vec<&'static str> {
    let mut versions: Vec<&str> = resource::ALL
        .iter()
        .filter(|r| r.group == group)
        .map(|r| r.version)
        .collect();
    if group == super::metrics::GROUP {
        versions.push(super::metrics::VERSION);
    }
    versions.dedup();
    versions
}

fn group_doc(group: &str) -> Value {
    let versions = versions_of(group);
    let gvs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = gvs.first().cloned().unwrap_or_default();
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": gvs, "preferredVersion": preferred})
}

pub async fn api_groups(headers: HeaderMap) -> Response {
    if accept::wants_aggregated_discovery(&headers) {
        return aggregated_response(groups().into_iter().map(aggregated_group).collect());
    }
    Json(json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": groups().into_iter().map(group_doc).collect::<Vec<_>>(),
    }))
    .into_response()
}

pub fn group(group: &str) -> Option<Value> {
    groups().contains(&group).then(|| group_doc(group))
}

fn verbs(r: &ResourceInfo) -> Vec<&'static str> {
    vec![
        "create", "delete", "get", "list", "patch", "update", "watch",
    ]
    .into_iter()
    .filter(|v| !(r.kind == "Namespace" && *v == "deletecollection"))
    .collect()
}

/// `kubectl get all` lists the kinds in category `all`, as Kubernetes puts them.
fn categories(r: &ResourceInfo) -> Vec<&'static str> {
    match r.kind {
        "Pod"
        | "Service"
        | "Deployment"
        | "ReplicaSet"
        | "HorizontalPodAutoscaler"
        | "DaemonSet"
        | "Job"
        | "CronJob"
        | "ReplicationController" => {
            vec!["all"]
        }
        _ => Vec::new(),
    }
}

/// The `APIResourceList` of one group version, or `None` if we serve none of it.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if group == super::metrics::GROUP && version == super::metrics::VERSION {
        return Some(super::metrics::resource_list());
    }
    let mut resources = Vec::new();
    for r in resource::ALL
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        resources.push(json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": verbs(r), "shortNames": r.short_names,
            "categories": categories(r),
        }));
        if r.has_status {
            resources.push(json!({
                "name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced,
                "kind": r.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        if r.has_scale {
            resources.push(json!({
                "name": format!("{}/scale", r.plural), "singularName": "", "namespaced": r.namespaced,
                "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}
