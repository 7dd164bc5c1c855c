//! A node: roles, taints, conditions, addresses, capacity, system info, the pods on
//! it with their requests and limits, and the totals allocated.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{Writer, annotations, cell, events, labels, time};
use crate::columns::node_roles;
use crate::duration::since_time;

/// A Kubernetes quantity as a number (`250m` → 0.25, `64Mi` → 67108864).
pub use tugboat_api::quantity::parse as parse_quantity;

/// CPU as kubectl prints sums: `250m`, or whole cores.
pub fn format_cpu(cores: f64) -> String {
    let millis = (cores * 1000.0).round() as i64;
    if millis % 1000 == 0 {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// Memory in the largest binary unit that divides it exactly (`192Mi`), else bytes.
pub fn format_memory(bytes: f64) -> String {
    let bytes = bytes.round() as i64;
    if bytes == 0 {
        return "0".to_string();
    }
    for (suffix, power) in [
        ("Ei", 6),
        ("Pi", 5),
        ("Ti", 4),
        ("Gi", 3),
        ("Mi", 2),
        ("Ki", 1),
    ] {
        let unit = 1i64 << (10 * power);
        if bytes % unit == 0 {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

/// Sums of a pod's container requests and limits: (cpu req, cpu lim, mem req, mem lim).
fn pod_resources(p: &Pod) -> [f64; 4] {
    let mut sums = [0.0; 4];
    for c in p
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
    {
        let r = c.resources.clone().unwrap_or_default();
        let get = |list: &Option<BTreeMap<String, Quantity>>, key: &str| {
            list.as_ref()
                .and_then(|l| l.get(key))
                .and_then(|q| parse_quantity(&q.0))
                .unwrap_or(0.0)
        };
        sums[0] += get(&r.requests, "cpu");
        sums[1] += get(&r.limits, "cpu");
        sums[2] += get(&r.requests, "memory");
        sums[3] += get(&r.limits, "memory");
    }
    sums
}

fn percent(value: f64, total: Option<f64>) -> i64 {
    match total {
        Some(t) if t > 0.0 => (value * 100.0 / t) as i64,
        _ => 0,
    }
}

pub fn node(n: &Node, pods: &[Pod], evs: &[Event], now: Timestamp) -> String {
    let mut w = Writer::default();
    let m = &n.metadata;
    let spec = n.spec.clone().unwrap_or_default();
    let status = n.status.clone().unwrap_or_default();
    w.line(0, &format!("Name:\t{}", m.name.as_deref().unwrap_or("")));
    w.line(0, &format!("Roles:\t{}", node_roles(n)));
    labels(&mut w, "Labels", m.labels.as_ref());
    annotations(&mut w, "Annotations", m.annotations.as_ref());
    w.line(
        0,
        &format!(
            "CreationTimestamp:\t{}",
            time(m.creation_timestamp.as_ref())
        ),
    );
    let taints = spec.taints.clone().unwrap_or_default();
    w.raw(0, "Taints:\t");
    if taints.is_empty() {
        w.text.push_str("<none>\n");
    }
    for (i, t) in taints.iter().enumerate() {
        if i > 0 {
            w.raw(0, "\t");
        }
        let value = t
            .value
            .as_deref()
            .map(|v| format!("={v}"))
            .unwrap_or_default();
        w.text.push_str(&format!("{}{value}:{}\n", t.key, t.effect));
    }
    w.line(
        0,
        &format!("Unschedulable:\t{}", spec.unschedulable.unwrap_or(false)),
    );
    if let Some(conditions) = status.conditions.as_ref().filter(|c| !c.is_empty()) {
        w.line(0, "Conditions:");
        w.line(
            1,
            "Type\tStatus\tLastHeartbeatTime\tLastTransitionTime\tReason\tMessage",
        );
        w.line(
            1,
            "----\t------\t-----------------\t------------------\t------\t-------",
        );
        for c in conditions {
            w.line(
                1,
                &format!(
                    "{} \t{} \t{} \t{} \t{} \t{}",
                    c.type_,
                    c.status,
                    time(c.last_heartbeat_time.as_ref()),
                    time(c.last_transition_time.as_ref()),
                    cell(c.reason.as_deref().unwrap_or("")),
                    cell(c.message.as_deref().unwrap_or("")),
                ),
            );
        }
    }
    w.line(0, "Addresses:");
    for a in status.addresses.iter().flatten() {
        w.line(1, &format!("{}:\t{}", a.type_, a.address));
    }
    for (title, list) in [
        ("Capacity", &status.capacity),
        ("Allocatable", &status.allocatable),
    ] {
        if let Some(list) = list.as_ref().filter(|l| !l.is_empty()) {
            w.line(0, &format!("{title}:"));
            for (k, q) in list {
                w.line(1, &format!("{k}:\t{}", q.0));
            }
        }
    }
    let info = status.node_info.clone().unwrap_or_default();
    w.line(0, "System Info:");
    for (label, value) in [
        ("Machine ID", &info.machine_id),
        ("System UUID", &info.system_uuid),
        ("Boot ID", &info.boot_id),
        ("Kernel Version", &info.kernel_version),
        ("OS Image", &info.os_image),
        ("Operating System", &info.operating_system),
        ("Architecture", &info.architecture),
        ("Container Runtime Version", &info.container_runtime_version),
        ("Kubelet Version", &info.kubelet_version),
    ] {
        w.line(1, &format!("{label}:\t{value}"));
    }
    if let Some(cidr) = spec.pod_cidr.as_deref().filter(|c| !c.is_empty()) {
        w.line(0, &format!("PodCIDR:\t{cidr}"));
    }

    let allocatable = |key: &str| {
        status
            .allocatable
            .as_ref()
            .and_then(|a| a.get(key))
            .and_then(|q| parse_quantity(&q.0))
    };
    let (cpu, memory) = (allocatable("cpu"), allocatable("memory"));
    let running: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .collect();
    w.line(
        0,
        &format!("Non-terminated Pods:\t({} in total)", running.len()),
    );
    w.line(
        1,
        "Namespace\tName\t\tCPU Requests\tCPU Limits\tMemory Requests\tMemory Limits\tAge",
    );
    w.line(
        1,
        "---------\t----\t\t------------\t----------\t---------------\t-------------\t---",
    );
    let mut totals = [0.0; 4];
    for p in &running {
        let r = pod_resources(p);
        for (t, v) in totals.iter_mut().zip(r) {
            *t += v;
        }
        w.line(
            1,
            &format!(
                "{}\t{}\t\t{} ({}%)\t{} ({}%)\t{} ({}%)\t{} ({}%)\t{}",
                p.metadata.namespace.as_deref().unwrap_or(""),
                p.metadata.name.as_deref().unwrap_or(""),
                format_cpu(r[0]),
                percent(r[0], cpu),
                format_cpu(r[1]),
                percent(r[1], cpu),
                format_memory(r[2]),
                percent(r[2], memory),
                format_memory(r[3]),
                percent(r[3], memory),
                since_time(p.metadata.creation_timestamp.as_ref(), now),
            ),
        );
    }
    w.line(0, "Allocated resources:");
    w.line(
        1,
        "(Total limits may be over 100 percent, i.e., overcommitted.)",
    );
    w.line(1, "Resource\tRequests\tLimits");
    w.line(1, "--------\t--------\t------");
    w.line(
        1,
        &format!(
            "cpu\t{} ({}%)\t{} ({}%)",
            format_cpu(totals[0]),
            percent(totals[0], cpu),
            format_cpu(totals[1]),
            percent(totals[1], cpu)
        ),
    );
    w.line(
        1,
        &format!(
            "memory\t{} ({}%)\t{} ({}%)",
            format_memory(totals[2]),
            percent(totals[2], memory),
            format_memory(totals[3]),
            percent(totals[3], memory)
        ),
    );
    events(&mut w, evs, now);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_in_decimal_and_binary_units() {
        assert_eq!(parse_quantity("250m"), Some(0.25));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("64Mi"), Some(64.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("lots"), None);
        assert_eq!(format_cpu(0.25 + 0.5), "750m");
        assert_eq!(format_cpu(2.0), "2");
        assert_eq!(format_memory(192.0 * 1024.0 * 1024.0), "192Mi");
        assert_eq!(format_memory(1000.0), "1000");
    }

    #[test]
    fn a_node_lists_its_conditions_pods_and_allocated_resources() {
        let n: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "node-1", "labels": {"node-role.kubernetes.io/worker": ""}},
            "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                "allocatable": {"cpu": "2", "memory": "1Gi"},
                "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "6.1",
                             "osImage": "Debian", "containerRuntimeVersion": "docker://20.10",
                             "kubeletVersion": "v1.32.0", "kubeProxyVersion": "", "operatingSystem": "linux",
                             "architecture": "amd64"}
            }
        }))
        .unwrap();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "default"},
            "spec": {"containers": [{"name": "web", "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}}}]},
            "status": {"phase": "Running"}
        }))
        .unwrap();
        let now = "2026-01-01T12:00:00Z".parse().unwrap();
        let text = node(&n, &[pod], &[], now);
        for expected in [
            "Roles:              worker\n",
            "Taints:             dedicated=db:NoSchedule\n",
            "  Ready   True    ",
            "  InternalIP:  10.0.0.1\n",
            "Non-terminated Pods:",
            "(1 in total)",
            "default",
            "500m (25%)",
            "256Mi (25%)",
            "  cpu       500m (25%)   0 (0%)\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }
}
