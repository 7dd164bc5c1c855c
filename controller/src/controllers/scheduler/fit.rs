//! Whether a pod fits a node, and how well: what the pod requests, what each
//! node has left during one pass, and the scheduler's words for a node that
//! does not fit.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Node, Pod};
use tugboat_api::quantity;

use crate::controllers::controller_uid;

/// Pods a node takes when its status does not say (Kubernetes' kubelet default).
const DEFAULT_MAX_PODS: i64 = 110;

/// What a pod asks for.
#[derive(Debug, Default, Clone)]
pub struct Request {
    pub cpu_millis: i64,
    pub memory: i64,
    pub host_ports: Vec<(String, i64)>,
}

pub fn pod_request(pod: &Pod) -> Request {
    let mut r = Request::default();
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        let res = c.resources.as_ref();
        // A limit without a request requests the limit, as in Kubernetes.
        let get = |which: &str| {
            res.and_then(|r| r.requests.as_ref().and_then(|m| m.get(which)))
                .or_else(|| res.and_then(|r| r.limits.as_ref().and_then(|m| m.get(which))))
                .map(|q| q.0.as_str())
        };
        // Saturating: quantities are capped at i64::MAX, and two such requests
        // must add up to "more than any node has", not wrap to a negative.
        r.cpu_millis = r.cpu_millis.saturating_add(
            get("cpu")
                .and_then(quantity::cpu_millis)
                .unwrap_or(0)
                .max(0),
        );
        r.memory = r
            .memory
            .saturating_add(get("memory").and_then(quantity::bytes).unwrap_or(0).max(0));
        for p in c.ports.iter().flatten() {
            if let Some(hp) = p.host_port.filter(|hp| *hp > 0) {
                let proto = p.protocol.clone().unwrap_or_else(|| "TCP".to_string());
                r.host_ports.push((proto, i64::from(hp)));
            }
        }
    }
    r
}

/// A node as the scheduler sees it during one pass.
#[derive(Debug)]
pub struct NodeState {
    pub name: String,
    labels: BTreeMap<String, String>,
    ready: bool,
    unschedulable: bool,
    cpu_millis: i64,
    memory: i64,
    max_pods: i64,
    used_cpu: i64,
    used_memory: i64,
    pods: i64,
    host_ports: HashSet<(String, i64)>,
    /// Pods per owning controller (uid), for spreading.
    per_owner: HashMap<String, i64>,
}

impl NodeState {
    pub fn from_node(node: &Node) -> NodeState {
        let status = node.status.as_ref();
        let alloc = |r: &str| {
            status
                .and_then(|s| s.allocatable.as_ref().and_then(|a| a.get(r)))
                .or_else(|| status.and_then(|s| s.capacity.as_ref().and_then(|c| c.get(r))))
                .map(|q| q.0.as_str())
        };
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        NodeState {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            ready,
            unschedulable: node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true),
            cpu_millis: alloc("cpu")
                .and_then(quantity::cpu_millis)
                .unwrap_or(i64::MAX),
            memory: alloc("memory")
                .and_then(quantity::bytes)
                .unwrap_or(i64::MAX),
            max_pods: alloc("pods")
                .and_then(|q| q.parse().ok())
                .unwrap_or(DEFAULT_MAX_PODS),
            used_cpu: 0,
            used_memory: 0,
            pods: 0,
            host_ports: HashSet::new(),
            per_owner: HashMap::new(),
        }
    }

    pub fn add(&mut self, pod: &Pod, req: &Request) {
        self.used_cpu = self.used_cpu.saturating_add(req.cpu_millis);
        self.used_memory = self.used_memory.saturating_add(req.memory);
        self.pods = self.pods.saturating_add(1);
        self.host_ports.extend(req.host_ports.iter().cloned());
        if let Some(uid) = controller_uid(&pod.metadata) {
            *self.per_owner.entry(uid.to_string()).or_default() += 1;
        }
    }

    /// Why the pod cannot go here, in the scheduler's words; empty if it can.
    pub fn unfit(&self, pod: &Pod, req: &Request) -> Vec<&'static str> {
        let mut why = Vec::new();
        if !self.ready {
            why.push("node(s) were not ready");
            return why;
        }
        if self.unschedulable {
            why.push("node(s) were unschedulable");
            return why;
        }
        let selector_ok = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_selector.as_ref())
            .into_iter()
            .flatten()
            .all(|(k, v)| self.labels.get(k) == Some(v));
        if !selector_ok {
            why.push("node(s) didn't match Pod's node affinity/selector");
            return why;
        }
        if self.pods.saturating_add(1) > self.max_pods {
            why.push("Too many pods");
        }
        if req.cpu_millis > 0 && self.used_cpu.saturating_add(req.cpu_millis) > self.cpu_millis {
            why.push("Insufficient cpu");
        }
        if req.memory > 0 && self.used_memory.saturating_add(req.memory) > self.memory {
            why.push("Insufficient memory");
        }
        if req.host_ports.iter().any(|p| self.host_ports.contains(p)) {
            why.push("node(s) didn't have free ports for the requested pod ports");
        }
        why
    }

    /// Higher is better: first spread a controller's pods, then least allocated.
    pub fn score(&self, pod: &Pod, req: &Request) -> i64 {
        let same_owner = controller_uid(&pod.metadata)
            .and_then(|uid| self.per_owner.get(uid).copied())
            .unwrap_or(0);
        let frac = |used: i64, cap: i64| {
            if cap <= 0 || cap == i64::MAX {
                0.0
            } else {
                (used as f64 / cap as f64).min(1.0)
            }
        };
        let cpu = frac(
            self.used_cpu.saturating_add(req.cpu_millis),
            self.cpu_millis,
        );
        let mem = frac(self.used_memory.saturating_add(req.memory), self.memory);
        let least_allocated = ((2.0 - cpu - mem) / 2.0 * 100.0) as i64;
        same_owner
            .saturating_mul(-1000)
            .saturating_add(least_allocated)
            .saturating_sub(self.pods)
    }
}

/// kubectl's words: `0/3 nodes are available: 2 Insufficient memory, 1 node(s) didn't
/// match Pod's node affinity/selector.`
pub fn unschedulable_message(total: usize, reasons: &BTreeMap<&'static str, usize>) -> String {
    if total == 0 {
        return "no nodes available to schedule pods".to_string();
    }
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    format!("0/{total} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn typed<K: serde::de::DeserializeOwned>(v: Value) -> K {
        serde_json::from_value(v).expect("a valid object")
    }

    fn node_json(name: &str, cpu: &str, mem: &str, labels: Value) -> Value {
        json!({"metadata": {"name": name, "labels": labels}, "status": {
            "allocatable": {"cpu": cpu, "memory": mem, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]}})
    }

    fn node(name: &str, cpu: &str, mem: &str, labels: Value) -> Node {
        typed(node_json(name, cpu, mem, labels))
    }

    fn pod_json(cpu: &str, mem: &str) -> Value {
        json!({"metadata": {"name": "p", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true}]},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}})
    }

    fn pod(cpu: &str, mem: &str) -> Pod {
        typed(pod_json(cpu, mem))
    }

    #[test]
    fn requests_too_large_to_add_up_saturate_and_fit_no_node() {
        let huge = "9223372036854775807m";
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": huge, "memory": "8Ei"}}},
            {"name": "b", "resources": {"requests": {"cpu": huge, "memory": "8Ei"}}}
        ]}});
        let r = pod_request(&typed(pod));
        assert_eq!((r.cpu_millis, r.memory), (i64::MAX, i64::MAX));
    }

    #[test]
    fn requests_are_summed_and_limits_stand_in_for_missing_requests() {
        let p = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
            {"name": "b", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}, "ports": [{"containerPort": 80, "hostPort": 8080}]}
        ]}});
        let r = pod_request(&typed(p));
        assert_eq!(r.cpu_millis, 1250);
        assert_eq!(r.memory, 64 * 1024 * 1024 + 1024 * 1024 * 1024);
        assert_eq!(r.host_ports, vec![("TCP".to_string(), 8080)]);
    }

    #[test]
    fn a_node_without_room_says_why() {
        let mut n = NodeState::from_node(&node("n1", "1", "1Gi", json!({})));
        let big = pod("2", "2Gi");
        assert_eq!(
            n.unfit(&big, &pod_request(&big)),
            vec!["Insufficient cpu", "Insufficient memory"]
        );
        let small = pod("500m", "512Mi");
        assert!(n.unfit(&small, &pod_request(&small)).is_empty());
        n.add(&small, &pod_request(&small));
        let again = pod("600m", "100Mi");
        assert_eq!(
            n.unfit(&again, &pod_request(&again)),
            vec!["Insufficient cpu"]
        );
    }

    #[test]
    fn node_selectors_and_readiness_filter_nodes() {
        let mut p = pod_json("0", "0");
        p["spec"]["nodeSelector"] = json!({"disk": "ssd"});
        let p: Pod = typed(p);
        let ssd = NodeState::from_node(&node("a", "1", "1Gi", json!({"disk": "ssd"})));
        let hdd = NodeState::from_node(&node("b", "1", "1Gi", json!({"disk": "hdd"})));
        assert!(ssd.unfit(&p, &pod_request(&p)).is_empty());
        assert_eq!(
            hdd.unfit(&p, &pod_request(&p)),
            vec!["node(s) didn't match Pod's node affinity/selector"]
        );
        let mut not_ready = node_json("c", "1", "1Gi", json!({"disk": "ssd"}));
        not_ready["status"]["conditions"][0]["status"] = json!("Unknown");
        assert_eq!(
            NodeState::from_node(&typed(not_ready)).unfit(&p, &pod_request(&p)),
            vec!["node(s) were not ready"]
        );
    }

    #[test]
    fn the_same_controllers_pods_spread_before_packing() {
        let mut a = NodeState::from_node(&node("a", "4", "4Gi", json!({})));
        let b = NodeState::from_node(&node("b", "4", "4Gi", json!({})));
        let p = pod("100m", "64Mi");
        a.add(&p, &pod_request(&p));
        assert!(b.score(&p, &pod_request(&p)) > a.score(&p, &pod_request(&p)));
    }

    #[test]
    fn the_message_reads_like_kubectl() {
        let mut reasons = BTreeMap::new();
        reasons.insert("Insufficient memory", 2);
        reasons.insert("node(s) didn't match Pod's node affinity/selector", 1);
        assert_eq!(
            unschedulable_message(3, &reasons),
            "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient memory."
        );
        assert_eq!(
            unschedulable_message(0, &BTreeMap::new()),
            "no nodes available to schedule pods"
        );
    }
}
