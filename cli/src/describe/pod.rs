//! A pod: where it runs, its status and IPs, its owner, each container's state, its
//! conditions and QoS class.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, Pod};

use super::template::{containers, node_selectors_and_tolerations, volumes};
use super::{Writer, annotations, cell, controlled_by, events, labels};
use crate::duration::{rfc1123, since};

/// BestEffort without any requests or limits, Guaranteed when every container's cpu
/// and memory limits are set and requests (if any) equal them, else Burstable.
fn qos_class(pod: &Pod) -> String {
    if let Some(q) = pod.status.as_ref().and_then(|s| s.qos_class.clone()) {
        return q;
    }
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let resources: Vec<_> = containers
        .iter()
        .map(|c| c.resources.clone().unwrap_or_default())
        .collect();
    let any = resources.iter().any(|r| {
        r.limits.as_ref().is_some_and(|l| !l.is_empty())
            || r.requests.as_ref().is_some_and(|l| !l.is_empty())
    });
    if !any {
        return "BestEffort".to_string();
    }
    let guaranteed = resources.iter().all(|r| {
        let limits = r.limits.clone().unwrap_or_default();
        let requests = r.requests.clone().unwrap_or_default();
        ["cpu", "memory"].iter().all(|k| {
            limits.contains_key(*k) && requests.get(*k).is_none_or(|q| Some(q) == limits.get(*k))
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
    .to_string()
}

pub fn pod(p: &Pod, evs: &[Event], now: Timestamp) -> String {
    let mut w = Writer::default();
    let m = &p.metadata;
    let spec = p.spec.as_ref();
    let status = p.status.clone().unwrap_or_default();
    w.line(0, &format!("Name:\t{}", m.name.as_deref().unwrap_or("")));
    w.line(
        0,
        &format!("Namespace:\t{}", m.namespace.as_deref().unwrap_or("")),
    );
    if let Some(priority) = spec.and_then(|s| s.priority) {
        w.line(0, &format!("Priority:\t{priority}"));
    }
    if let Some(sa) = spec
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
    {
        w.line(0, &format!("Service Account:\t{sa}"));
    }
    match spec
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
    {
        Some(node) => w.line(
            0,
            &format!("Node:\t{node}/{}", status.host_ip.as_deref().unwrap_or("")),
        ),
        None => w.line(0, "Node:\t<none>"),
    }
    if let Some(start) = &status.start_time {
        w.line(0, &format!("Start Time:\t{}", rfc1123(start.0)));
    }
    labels(&mut w, "Labels", m.labels.as_ref());
    annotations(&mut w, "Annotations", m.annotations.as_ref());
    let phase = status.phase.clone().unwrap_or_default();
    match &m.deletion_timestamp {
        Some(t) if phase != "Succeeded" && phase != "Failed" => {
            w.line(
                0,
                &format!("Status:\tTerminating (lasts {})", since(Some(now), t.0)),
            );
            if let Some(grace) = m.deletion_grace_period_seconds {
                w.line(0, &format!("Termination Grace Period:\t{grace}s"));
            }
        }
        _ => w.line(0, &format!("Status:\t{phase}")),
    }
    if let Some(reason) = status.reason.as_deref().filter(|r| !r.is_empty()) {
        w.line(0, &format!("Reason:\t{}", cell(reason)));
    }
    if let Some(message) = status.message.as_deref().filter(|r| !r.is_empty()) {
        w.line(0, &format!("Message:\t{}", cell(message)));
    }
    w.line(
        0,
        &format!("IP:\t{}", status.pod_ip.as_deref().unwrap_or("")),
    );
    let ips: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|ip| ip.ip.clone())
        .collect();
    if ips.is_empty() {
        w.line(0, "IPs:\t<none>");
    } else {
        w.line(0, "IPs:");
        for ip in ips {
            w.line(1, &format!("IP:\t{ip}"));
        }
    }
    if let Some(owner) = controlled_by(m) {
        w.line(0, &format!("Controlled By:\t{owner}"));
    }
    if let Some(init) = spec
        .and_then(|s| s.init_containers.as_ref())
        .filter(|i| !i.is_empty())
    {
        containers(
            &mut w,
            "Init Containers",
            init,
            status
                .init_container_statuses
                .as_deref()
                .unwrap_or_default(),
            false,
        );
    }
    containers(
        &mut w,
        "Containers",
        spec.map(|s| s.containers.as_slice()).unwrap_or_default(),
        status.container_statuses.as_deref().unwrap_or_default(),
        false,
    );
    if let Some(conditions) = status.conditions.as_ref().filter(|c| !c.is_empty()) {
        w.line(0, "Conditions:");
        w.line(1, "Type\tStatus");
        for c in conditions {
            w.line(1, &format!("{} \t{} ", c.type_, c.status));
        }
    }
    volumes(&mut w, "", spec);
    w.line(0, &format!("QoS Class:\t{}", qos_class(p)));
    node_selectors_and_tolerations(&mut w, "", spec);
    events(&mut w, evs, now);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe::tests::now;
    use serde_json::json;

    #[test]
    fn a_pod_shows_its_node_containers_states_and_owner() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "default",
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-new", "uid": "x", "controller": true}]},
            "spec": {"nodeName": "node-1", "containers": [{"name": "web", "image": "nginx"}]},
            "status": {"phase": "Running", "hostIP": "10.0.0.1", "podIP": "172.17.0.5", "podIPs": [{"ip": "172.17.0.5"}],
                       "containerStatuses": [{"name": "web", "ready": false, "restartCount": 2, "image": "nginx", "imageID": "sha",
                                              "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                              "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}],
                       "conditions": [{"type": "Ready", "status": "False"}]}
        }))
        .unwrap();
        let text = pod(&p, &[], now());
        for expected in [
            "Node:         node-1/10.0.0.1\n",
            "Status:       Running\n",
            "Controlled By:  ReplicaSet/web-new\n",
            "    State:          Waiting\n      Reason:       CrashLoopBackOff\n",
            "    Last State:     Terminated\n      Reason:       Error\n      Exit Code:    1\n",
            "    Restart Count:  2\n",
            "QoS Class:",
            "BestEffort",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }
}
