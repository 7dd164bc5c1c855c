//! Discovery documents (`/api`, `/apis`, `/api/v1`, `/apis/apps/v1`) and `/version`,
//! which kubectl and client libraries read before anything else.

use axum::Json;
use serde_json::{Value, json};
use tugboat_api::resource::{self, ResourceInfo};

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

pub async fn api_versions() -> Json<Value> {
    Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }))
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

fn group_doc(group: &str) -> Value {
    let mut versions: Vec<&str> = resource::ALL
        .iter()
        .filter(|r| r.group == group)
        .map(|r| r.version)
        .collect();
    if group == super::metrics::GROUP {
        versions.push(super::metrics::VERSION);
    }
    versions.dedup();
    let gvs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = gvs.first().cloned().unwrap_or_default();
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": gvs, "preferredVersion": preferred})
}

pub async fn api_groups() -> Json<Value> {
    Json(json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": groups().into_iter().map(group_doc).collect::<Vec<_>>(),
    }))
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
