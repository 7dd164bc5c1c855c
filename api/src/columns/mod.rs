//! The columns of `kubectl get` and `tug get`, computed the way kube-apiserver's
//! printers compute them (the server answers `as=Table` with them): a
//! deployment's READY, a pod's STATUS and RESTARTS, a node's STATUS and ROLES, an
//! event's LAST SEEN and OBJECT, a service's PORT(S) and EXTERNAL-IP. One
//! submodule per area (workloads, batch, config, rbac, …) holds its kinds' column
//! definitions and rows; this module dispatches on the kind. A kind Kubernetes has
//! no printer for (LimitRange, Role, ClusterRole) gets kube-apiserver's default
//! table: NAME and CREATED AT.

mod apiservice;
mod batch;
mod config;
mod hpa;
mod pod;
mod rbac;
mod service;
mod workloads;

use std::collections::{BTreeMap, BTreeSet};

use crate::ResourceInfo;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, Node};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::duration::{since_micro, since_time};

pub use batch::job_status;
pub use config::quota_usage;
pub use pod::{PodSummary, pod_summary};
pub use rbac::subjects_strings;
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

/// What a Table column holds, as `meta.k8s.io/v1` `TableColumnDefinition.type`
/// names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellType {
    String,
    Integer,
    /// Printed as `True`/`False` (or `<unset>`); the cell is that text, as
    /// kube-apiserver's `printBoolPtr` makes it.
    Boolean,
    /// An RFC 3339 timestamp (the default table's CREATED AT).
    Date,
}

impl CellType {
    pub fn as_str(self) -> &'static str {
        match self {
            CellType::String => "string",
            CellType::Integer => "integer",
            CellType::Boolean => "boolean",
            CellType::Date => "date",
        }
    }
}

/// One column as kube-apiserver's printers define it: the name (kubectl prints it
/// upper-cased), its type, and its priority (1: shown only with `-o wide`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub cell: CellType,
    pub priority: u8,
    pub description: &'static str,
}

const fn col(name: &'static str, description: &'static str) -> Column {
    Column {
        name,
        cell: CellType::String,
        priority: 0,
        description,
    }
}

const fn int(name: &'static str, description: &'static str) -> Column {
    Column {
        name,
        cell: CellType::Integer,
        priority: 0,
        description,
    }
}

const fn boolean(name: &'static str, description: &'static str) -> Column {
    Column {
        name,
        cell: CellType::Boolean,
        priority: 0,
        description,
    }
}

const fn wide(c: Column) -> Column {
    Column { priority: 1, ..c }
}

const NAME: Column = Column {
    name: "Name",
    cell: CellType::String,
    priority: 0,
    description: "Name must be unique within a namespace.",
};
const AGE: Column = col(
    "Age",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);
const CONTAINERS: Column = wide(col(
    "Containers",
    "Names of each container in the template.",
));
const IMAGES: Column = wide(col(
    "Images",
    "Images referenced by each container in the template.",
));
const SELECTOR: Column = wide(col("Selector", "Label selector for pods."));
/// kube-apiserver's default table (a kind without a printer): its name and when
/// it was made.
const DEFAULT_COLUMNS: &[Column] = &[
    NAME,
    Column {
        name: "Created At",
        cell: CellType::Date,
        priority: 0,
        description: "CreationTimestamp is a timestamp representing the server time when this object was created.",
    },
];

/// The columns of `r`, in kube-apiserver's order (priority-1 columns among them,
/// as Kubernetes' printers list them).
pub fn columns(r: &ResourceInfo) -> &'static [Column] {
    match r.kind {
        "Deployment" => workloads::DEPLOYMENT,
        "ReplicaSet" => workloads::REPLICA_SET,
        "ReplicationController" => workloads::REPLICATION_CONTROLLER,
        "DaemonSet" => workloads::DAEMON_SET,
        "Job" => batch::JOB,
        "CronJob" => batch::CRON_JOB,
        "ConfigMap" => config::CONFIG_MAP,
        "Secret" => config::SECRET,
        "ServiceAccount" => config::SERVICE_ACCOUNT,
        "ResourceQuota" => config::RESOURCE_QUOTA,
        "RoleBinding" | "ClusterRoleBinding" => rbac::ROLE_BINDING,
        "APIService" => apiservice::API_SERVICE,
        "Pod" => {
            const {
                &[
                    NAME,
                    col(
                        "Ready",
                        "The aggregate readiness state of this pod for accepting traffic.",
                    ),
                    col(
                        "Status",
                        "The aggregate status of the containers in this pod.",
                    ),
                    col(
                        "Restarts",
                        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
                    ),
                    AGE,
                    wide(col(
                        "IP",
                        "IP address allocated to the pod. Routable at least within the cluster.",
                    )),
                    wide(col("Node", "Name of the node this pod is bound to.")),
                    wide(col(
                        "Nominated Node",
                        "Name of the node where the pod is nominated to be bound.",
                    )),
                    wide(col(
                        "Readiness Gates",
                        "Readiness gates the pod's readiness depends on.",
                    )),
                ]
            }
        }
        "Node" => {
            const {
                &[
                    NAME,
                    col("Status", "The status of the node"),
                    col("Roles", "The roles of the node"),
                    AGE,
                    col("Version", "Kubelet Version reported by the node."),
                    wide(col("Internal-IP", "List of internal IPs of the node.")),
                    wide(col("External-IP", "List of external IPs of the node.")),
                    wide(col(
                        "OS-Image",
                        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
                    )),
                    wide(col(
                        "Kernel-Version",
                        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
                    )),
                    wide(col(
                        "Container-Runtime",
                        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
                    )),
                ]
            }
        }
        "Event" => {
            const {
                &[
                    col("Last Seen", "The time the event was last seen"),
                    col(
                        "Type",
                        "Type of this event (Normal, Warning), new types could be added in the future.",
                    ),
                    col(
                        "Reason",
                        "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
                    ),
                    col("Object", "The object that this event is about."),
                    wide(col(
                        "Subobject",
                        "The subobject (container) that this event is about.",
                    )),
                    wide(col(
                        "Source",
                        "The component reporting this event. Should be a short machine understandable string.",
                    )),
                    col(
                        "Message",
                        "A human-readable description of the status of this operation.",
                    ),
                    wide(col(
                        "First Seen",
                        "The time at which the event was first recorded.",
                    )),
                    wide(int("Count", "The number of times this event has occurred.")),
                    wide(NAME),
                ]
            }
        }
        "Namespace" => const { &[NAME, col("Status", "The status of the namespace"), AGE] },
        "Service" => {
            const {
                &[
                    NAME,
                    col("Type", "The type of the service."),
                    col("Cluster-IP", "The cluster IP of the service."),
                    col("External-IP", "The external IP of the service."),
                    col("Port(s)", "The ports of the service."),
                    AGE,
                    wide(col(
                        "Selector",
                        "Route service traffic to pods with label keys and values matching this selector.",
                    )),
                ]
            }
        }
        "Endpoints" => const { &[NAME, col("Endpoints", "Endpoints of the service."), AGE] },
        "EndpointSlice" => {
            const {
                &[
                    NAME,
                    col(
                        "AddressType",
                        "The type of address held in the EndpointSlice.",
                    ),
                    col("Ports", "The ports of the endpoint slice."),
                    col("Endpoints", "The endpoints of the endpoint slice."),
                    AGE,
                ]
            }
        }
        "HorizontalPodAutoscaler" => {
            const {
                &[
                    NAME,
                    col("Reference", "The reference to the autoscaled resource."),
                    col("Targets", "The current and target metric values."),
                    col(
                        "MinPods",
                        "Lower limit for the number of pods that can be set by the autoscaler, default 1.",
                    ),
                    int(
                        "MaxPods",
                        "Upper limit for the number of pods that can be set by the autoscaler; cannot be smaller than MinReplicas.",
                    ),
                    int(
                        "Replicas",
                        "Current number of replicas of pods managed by this autoscaler.",
                    ),
                    AGE,
                ]
            }
        }
        "Lease" => const { &[NAME, col("Holder", "The holder of the lease."), AGE] },
        _ => DEFAULT_COLUMNS,
    }
}

/// The header row for `r`: the columns' names upper-cased, as kubectl prints
/// them; priority-1 columns only with `-o wide`.
pub fn header(r: &ResourceInfo, layout: &Layout) -> Vec<String> {
    let mut cols: Vec<String> = Vec::new();
    if layout.all_namespaces && r.namespaced {
        cols.push("NAMESPACE".into());
    }
    cols.extend(
        columns(r)
            .iter()
            .filter(|c| layout.wide || c.priority == 0)
            .map(|c| c.name.to_uppercase()),
    );
    if layout.show_labels {
        cols.push("LABELS".into());
    }
    cols
}

/// Every cell of one object's row, priority-1 ones included, in the order of
/// [`columns`]: what the server puts in a Table row.
pub fn cells(r: &ResourceInfo, obj: &Value, now: Timestamp) -> Result<Vec<String>, DecodeError> {
    let layout = Layout {
        wide: true,
        all_namespaces: false,
        show_labels: false,
        now,
    };
    Ok(match r.kind {
        "Deployment" => workloads::deployment_row(&decode(obj)?, &layout),
        "ReplicaSet" => workloads::replica_set_row(&decode(obj)?, &layout),
        "ReplicationController" => workloads::replication_controller_row(&decode(obj)?, &layout),
        "DaemonSet" => workloads::daemon_set_row(&decode(obj)?, &layout),
        "Job" => batch::job_row(&decode(obj)?, &layout),
        "CronJob" => batch::cron_job_row(&decode(obj)?, &layout),
        "ConfigMap" => config::config_map_row(&decode(obj)?, &layout),
        "Secret" => config::secret_row(&decode(obj)?, &layout),
        "ServiceAccount" => config::service_account_row(&decode(obj)?, &layout),
        "ResourceQuota" => config::resource_quota_row(&decode(obj)?, &layout),
        "RoleBinding" => rbac::role_binding_row(&decode(obj)?, &layout),
        "ClusterRoleBinding" => rbac::cluster_role_binding_row(&decode(obj)?, &layout),
        "APIService" => apiservice::api_service_row(&decode(obj)?, &layout),
        "Pod" => pod::pod_row(&decode(obj)?, &layout),
        "Node" => node_row(&decode(obj)?, &layout),
        "Event" => event_row(&decode(obj)?, &layout),
        "Namespace" => namespace_row(&decode(obj)?, &layout),
        "Service" => service::service_row(&decode(obj)?, &layout),
        "Endpoints" => service::endpoints_row(&decode(obj)?, &layout),
        "EndpointSlice" => service::endpoint_slice_row(&decode(obj)?, &layout),
        "HorizontalPodAutoscaler" => hpa::hpa_row(&decode(obj)?, &layout),
        "Lease" => lease_row(&decode(obj)?, &layout),
        _ => {
            let meta: ObjectMeta = match obj.get("metadata") {
                Some(m) => serde_json::from_value(m.clone()).map_err(|e| DecodeError {
                    what: "object".into(),
                    error: e.to_string(),
                })?,
                None => ObjectMeta::default(),
            };
            vec![name(&meta), created_at(&meta)]
        }
    })
}

/// One object's row as `tug get` prints it, matching [`header`].
pub fn row(r: &ResourceInfo, obj: &Value, layout: &Layout) -> Result<Vec<String>, DecodeError> {
    let all = cells(r, obj, layout.now)?;
    let mut cells: Vec<String> = columns(r)
        .iter()
        .zip(all)
        .filter(|(c, _)| layout.wide || c.priority == 0)
        .map(|(_, cell)| cell)
        .collect();
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

/// An object that does not decode as its kind.
#[derive(Debug, thiserror::Error)]
#[error("{what} cannot be read: {error}")]
pub struct DecodeError {
    what: String,
    error: String,
}

fn decode<T: DeserializeOwned>(obj: &Value) -> Result<T, DecodeError> {
    serde_json::from_value(obj.clone()).map_err(|e| {
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("object");
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?");
        DecodeError {
            what: format!("{kind} {name:?}"),
            error: e.to_string(),
        }
    })
}

/// A Lease's HOLDER.
fn lease_row(l: &Lease, layout: &Layout) -> Vec<String> {
    let holder = l
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default();
    vec![name(&l.metadata), holder, age(&l.metadata, layout)]
}

fn name(meta: &ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

fn age(meta: &ObjectMeta, layout: &Layout) -> String {
    since_time(meta.creation_timestamp.as_ref(), layout.now)
}

/// The default table's CREATED AT: the creation time in RFC 3339, UTC.
fn created_at(meta: &ObjectMeta) -> String {
    meta.creation_timestamp
        .as_ref()
        .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn or_none(s: Option<&str>) -> String {
    match s {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => "<none>".to_string(),
    }
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
    use crate::resource::{DEPLOYMENTS, EVENTS, NODES};
    use serde_json::json;

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
