//! The columns of `tug get`, computed the way kubectl's printers compute them: a
//! deployment's READY, a pod's STATUS and RESTARTS, a node's STATUS and ROLES, an
//! event's LAST SEEN and OBJECT, a service's PORT(S) and EXTERNAL-IP.

mod hpa;
mod pod;
mod service;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context as _;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Container, Event, Namespace, Node, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tugboat_api::ResourceInfo;

use crate::duration::{since_micro, since_time};

pub use pod::{PodSummary, pod_summary};
pub use service::{endpoints_string, external_ip, load_balancer_string, port_string};

/// How a table is laid out: `-o wide` adds columns, `-A` puts NAMESPACE first.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub wide: bool,
    pub all_namespaces: bool,
    /// `--show-labels`: a LABELS column last.
    pub show_labels: bool,
    pub now: Timestamp,
}

/// The header row for `r`.
pub fn header(r: &ResourceInfo, layout: &Layout) -> Vec<String> {
    let (normal, wide): (&[&str], &[&str]) = match r.kind {
        "Deployment" => (
            &["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
            &["CONTAINERS", "IMAGES", "SELECTOR"],
        ),
        "ReplicaSet" => (
            &["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
            &["CONTAINERS", "IMAGES", "SELECTOR"],
        ),
        "Pod" => (
            &["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
            &["IP", "NODE", "NOMINATED NODE", "READINESS GATES"],
        ),
        "Node" => (
            &["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
            &[
                "INTERNAL-IP",
                "EXTERNAL-IP",
                "OS-IMAGE",
                "KERNEL-VERSION",
                "CONTAINER-RUNTIME",
            ],
        ),
        "Event" if layout.wide => (
            &[
                "LAST SEEN",
                "TYPE",
                "REASON",
                "OBJECT",
                "SUBOBJECT",
                "SOURCE",
                "MESSAGE",
                "FIRST SEEN",
                "COUNT",
                "NAME",
            ],
            &[],
        ),
        "Event" => (&["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], &[]),
        "Namespace" => (&["NAME", "STATUS", "AGE"], &[]),
        "Service" => (
            &[
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE",
            ],
            &["SELECTOR"],
        ),
        "Endpoints" => (&["NAME", "ENDPOINTS", "AGE"], &[]),
        "EndpointSlice" => (&["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"], &[]),
        "HorizontalPodAutoscaler" => (
            &[
                "NAME",
                "REFERENCE",
                "TARGETS",
                "MINPODS",
                "MAXPODS",
                "REPLICAS",
                "AGE",
            ],
            &[],
        ),
        _ => (&["NAME", "AGE"], &[]),
    };
    let mut cols: Vec<String> = Vec::new();
    if layout.all_namespaces && r.namespaced {
        cols.push("NAMESPACE".into());
    }
    cols.extend(normal.iter().map(|c| c.to_string()));
    if layout.wide {
        cols.extend(wide.iter().map(|c| c.to_string()));
    }
    if layout.show_labels {
        cols.push("LABELS".into());
    }
    cols
}

/// One object's row, matching [`header`].
pub fn row(r: &ResourceInfo, obj: &Value, layout: &Layout) -> anyhow::Result<Vec<String>> {
    let mut cells = match r.kind {
        "Deployment" => deployment_row(&decode(obj)?, layout),
        "ReplicaSet" => replica_set_row(&decode(obj)?, layout),
        "Pod" => pod::pod_row(&decode(obj)?, layout),
        "Node" => node_row(&decode(obj)?, layout),
        "Event" => event_row(&decode(obj)?, layout),
        "Namespace" => namespace_row(&decode(obj)?, layout),
        "Service" => service::service_row(&decode(obj)?, layout),
        "Endpoints" => service::endpoints_row(&decode(obj)?, layout),
        "EndpointSlice" => service::endpoint_slice_row(&decode(obj)?, layout),
        "HorizontalPodAutoscaler" => hpa::hpa_row(&decode(obj)?, layout),
        _ => {
            let meta: ObjectMeta = obj
                .get("metadata")
                .cloned()
                .map(serde_json::from_value)
                .transpose()?
                .unwrap_or_default();
            vec![
                name(&meta),
                since_time(meta.creation_timestamp.as_ref(), layout.now),
            ]
        }
    };
    if layout.all_namespaces && r.namespaced {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        cells.insert(0, ns.to_string());
    }
    if layout.show_labels {
        let labels: Option<BTreeMap<String, String>> = obj
            .pointer("/metadata/labels")
            .and_then(|l| serde_json::from_value(l.clone()).ok());
        cells.push(or_none(Some(&labels_string(labels.as_ref()))));
    }
    Ok(cells)
}

fn decode<T: DeserializeOwned>(obj: &Value) -> anyhow::Result<T> {
    serde_json::from_value(obj.clone()).with_context(|| {
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("object");
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?");
        format!("the server sent a {kind} {name:?} this version of tug cannot read")
    })
}

fn name(meta: &ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

fn age(meta: &ObjectMeta, layout: &Layout) -> String {
    since_time(meta.creation_timestamp.as_ref(), layout.now)
}

fn or_none(s: Option<&str>) -> String {
    match s {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => "<none>".to_string(),
    }
}

fn deployment_row(d: &Deployment, layout: &Layout) -> Vec<String> {
    let spec = d.spec.as_ref();
    let status = d.status.clone().unwrap_or_default();
    let desired = spec.and_then(|s| s.replicas).unwrap_or(1);
    let mut cells = vec![
        name(&d.metadata),
        format!("{}/{}", status.ready_replicas.unwrap_or(0), desired),
        status.updated_replicas.unwrap_or(0).to_string(),
        status.available_replicas.unwrap_or(0).to_string(),
        age(&d.metadata, layout),
    ];
    if layout.wide {
        cells.extend(template_columns(
            spec.map(|s| &s.template),
            spec.map(|s| &s.selector),
        ));
    }
    cells
}

fn replica_set_row(rs: &ReplicaSet, layout: &Layout) -> Vec<String> {
    let spec = rs.spec.as_ref();
    let status = rs.status.clone().unwrap_or_default();
    let mut cells = vec![
        name(&rs.metadata),
        spec.and_then(|s| s.replicas).unwrap_or(1).to_string(),
        status.replicas.to_string(),
        status.ready_replicas.unwrap_or(0).to_string(),
        age(&rs.metadata, layout),
    ];
    if layout.wide {
        cells.extend(template_columns(
            spec.and_then(|s| s.template.as_ref()),
            spec.map(|s| &s.selector),
        ));
    }
    cells
}

/// CONTAINERS, IMAGES and SELECTOR of a workload.
fn template_columns(
    template: Option<&PodTemplateSpec>,
    selector: Option<&LabelSelector>,
) -> [String; 3] {
    let containers: &[Container] = template
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    let images: Vec<&str> = containers
        .iter()
        .map(|c| c.image.as_deref().unwrap_or(""))
        .collect();
    [
        names.join(","),
        images.join(","),
        or_none(selector.map(selector_string).as_deref()),
    ]
}

/// A label selector as apimachinery prints it: `app=web,tier in (a,b),!legacy`,
/// requirements sorted by key.
pub fn selector_string(sel: &LabelSelector) -> String {
    let mut reqs: Vec<(String, String)> = Vec::new();
    for (k, v) in sel.match_labels.iter().flatten() {
        reqs.push((k.clone(), format!("{k}={v}")));
    }
    for e in sel.match_expressions.iter().flatten() {
        let mut values = e.values.clone().unwrap_or_default();
        values.sort();
        let k = &e.key;
        let text = match e.operator.as_str() {
            "In" => format!("{k} in ({})", values.join(",")),
            "NotIn" => format!("{k} notin ({})", values.join(",")),
            "Exists" => k.clone(),
            "DoesNotExist" => format!("!{k}"),
            op => format!("{k} {op} ({})", values.join(",")),
        };
        reqs.push((k.clone(), text));
    }
    reqs.sort();
    reqs.into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(",")
}

/// A map of labels as `k=v,k=v`, for describe.
pub fn labels_string(labels: Option<&BTreeMap<String, String>>) -> String {
    labels
        .map(|l| {
            l.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// `Ready`, `NotReady` or `Unknown` from the Ready condition, plus
/// `SchedulingDisabled` for a cordoned node.
pub fn node_status(node: &Node) -> String {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    let mut parts = vec![match ready {
        Some(c) if c.status == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        parts.push("SchedulingDisabled");
    }
    parts.join(",")
}

/// Roles from `node-role.kubernetes.io/ROLE` labels and `kubernetes.io/role`.
pub fn node_roles(node: &Node) -> String {
    let mut roles = BTreeSet::new();
    for (k, v) in node.metadata.labels.iter().flatten() {
        if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
            if !role.is_empty() {
                roles.insert(role.to_string());
            }
        } else if k == "kubernetes.io/role" && !v.is_empty() {
            roles.insert(v.clone());
        }
    }
    if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    }
}

fn node_row(node: &Node, layout: &Layout) -> Vec<String> {
    let status = node.status.as_ref();
    let info = status.and_then(|s| s.node_info.as_ref());
    let mut cells = vec![
        name(&node.metadata),
        node_status(node),
        node_roles(node),
        age(&node.metadata, layout),
        info.map(|i| i.kubelet_version.clone()).unwrap_or_default(),
    ];
    if layout.wide {
        let address = |t: &str| {
            status
                .and_then(|s| s.addresses.as_ref())
                .and_then(|a| a.iter().find(|a| a.type_ == t))
                .map(|a| a.address.clone())
        };
        let unknown = |s: Option<&String>| match s {
            Some(s) if !s.is_empty() => s.clone(),
            _ => "<unknown>".to_string(),
        };
        cells.push(or_none(address("InternalIP").as_deref()));
        cells.push(or_none(address("ExternalIP").as_deref()));
        cells.push(unknown(info.map(|i| &i.os_image)));
        cells.push(unknown(info.map(|i| &i.kernel_version)));
        cells.push(unknown(info.map(|i| &i.container_runtime_version)));
    }
    cells
}

/// An event's LAST SEEN: the series' last observation, else lastTimestamp, else the
/// first time it was seen.
pub fn event_last_seen(e: &Event, now: Timestamp) -> String {
    if let Some(series) = &e.series {
        return since_micro(series.last_observed_time.as_ref(), now);
    }
    match &e.last_timestamp {
        Some(t) => since_time(Some(t), now),
        None => event_first_seen(e, now),
    }
}

fn event_first_seen(e: &Event, now: Timestamp) -> String {
    match &e.first_timestamp {
        Some(t) => since_time(Some(t), now),
        None => since_micro(e.event_time.as_ref(), now),
    }
}

/// When an event was last seen, for sorting.
pub fn event_time(e: &Event) -> Option<Timestamp> {
    e.series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| t.0)
        .or_else(|| e.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
}

/// `pod/web-abc`: the involved object with its kind lower-cased.
pub fn event_object(e: &Event) -> String {
    let kind = e
        .involved_object
        .kind
        .as_deref()
        .unwrap_or("")
        .to_lowercase();
    match e.involved_object.name.as_deref() {
        Some(n) if !n.is_empty() => format!("{kind}/{n}"),
        _ => kind,
    }
}

/// Who reported an event: `kubelet, node-1`, or the reporting controller.
pub fn event_source(e: &Event) -> String {
    let component = e
        .source
        .as_ref()
        .and_then(|s| s.component.clone())
        .unwrap_or_default();
    let host = e
        .source
        .as_ref()
        .and_then(|s| s.host.clone())
        .unwrap_or_default();
    let (component, host) = if component.is_empty() {
        (
            e.reporting_component.clone().unwrap_or_default(),
            e.reporting_instance.clone().unwrap_or_default(),
        )
    } else {
        (component, host)
    };
    if host.is_empty() {
        component
    } else {
        format!("{component}, {host}")
    }
}

fn event_row(e: &Event, layout: &Layout) -> Vec<String> {
    let message = e.message.as_deref().unwrap_or("").trim().to_string();
    let kind = e.type_.clone().unwrap_or_default();
    let reason = e.reason.clone().unwrap_or_default();
    if layout.wide {
        let count = match &e.series {
            Some(s) => s.count.unwrap_or(1),
            None => e.count.filter(|c| *c != 0).unwrap_or(1),
        };
        vec![
            event_last_seen(e, layout.now),
            kind,
            reason,
            event_object(e),
            e.involved_object.field_path.clone().unwrap_or_default(),
            event_source(e),
            message,
            event_first_seen(e, layout.now),
            count.to_string(),
            name(&e.metadata),
        ]
    } else {
        vec![
            event_last_seen(e, layout.now),
            kind,
            reason,
            event_object(e),
            message,
        ]
    }
}

fn namespace_row(ns: &Namespace, layout: &Layout) -> Vec<String> {
    let phase = ns
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    vec![name(&ns.metadata), phase, age(&ns.metadata, layout)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tugboat_api::resource::{DEPLOYMENTS, EVENTS, NODES};

    pub(crate) fn now() -> Timestamp {
        "2026-01-01T12:00:00Z".parse().unwrap()
    }

    pub(crate) fn layout() -> Layout {
        Layout {
            wide: false,
            all_namespaces: false,
            show_labels: false,
            now: now(),
        }
    }

    #[test]
    fn deployment_ready_is_ready_replicas_over_desired() {
        let d = json!({
            "metadata": {"name": "web", "creationTimestamp": "2026-01-01T11:59:50Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        let mut l = layout();
        assert_eq!(
            row(&DEPLOYMENTS, &d, &l).unwrap(),
            ["web", "2/3", "3", "2", "10s"]
        );
        l.wide = true;
        assert_eq!(
            row(&DEPLOYMENTS, &d, &l).unwrap()[5..],
            [
                "web".to_string(),
                "nginx".to_string(),
                "app=web".to_string()
            ]
        );
        l.show_labels = true;
        assert_eq!(
            row(&DEPLOYMENTS, &d, &l)
                .unwrap()
                .last()
                .map(String::as_str),
            Some("<none>")
        );
        assert_eq!(
            header(&DEPLOYMENTS, &l).last().map(String::as_str),
            Some("LABELS")
        );
    }

    #[test]
    fn node_status_comes_from_the_ready_condition_and_cordoning() {
        let node = |ready: Option<&str>, unschedulable: bool| -> Node {
            let conditions: Vec<Value> = ready
                .into_iter()
                .map(|s| json!({"type": "Ready", "status": s}))
                .collect();
            serde_json::from_value(json!({
                "metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": ""}},
                "spec": {"unschedulable": unschedulable},
                "status": {"conditions": conditions}
            }))
            .unwrap()
        };
        assert_eq!(node_status(&node(Some("True"), false)), "Ready");
        assert_eq!(
            node_status(&node(Some("False"), true)),
            "NotReady,SchedulingDisabled"
        );
        assert_eq!(node_status(&node(Some("Unknown"), false)), "NotReady");
        assert_eq!(node_status(&node(None, false)), "Unknown");
        assert_eq!(node_roles(&node(None, false)), "control-plane,worker");
        let bare: Node = serde_json::from_value(json!({"metadata": {"name": "n2"}})).unwrap();
        assert_eq!(node_roles(&bare), "<none>");
        assert_eq!(
            row(&NODES, &json!({"metadata": {"name": "n2"}}), &layout()).unwrap()[1],
            "Unknown"
        );
    }

    #[test]
    fn events_name_their_object_by_lower_case_kind() {
        let e = json!({
            "metadata": {"name": "web-abc.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-abc"},
            "type": "Warning", "reason": "BackOff", "message": " Back-off restarting ",
            "firstTimestamp": "2026-01-01T11:50:00Z", "lastTimestamp": "2026-01-01T11:59:30Z", "count": 4
        });
        assert_eq!(
            row(&EVENTS, &e, &layout()).unwrap(),
            [
                "30s",
                "Warning",
                "BackOff",
                "pod/web-abc",
                "Back-off restarting"
            ]
        );
    }

    #[test]
    fn selectors_print_like_apimachinery() {
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "legacy", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        assert_eq!(selector_string(&sel), "app=web,!legacy,tier in (a,b)");
    }
}
