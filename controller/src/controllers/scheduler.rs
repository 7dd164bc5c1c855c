//! The scheduler: binds pending pods to nodes by setting `spec.nodeName`. A pass
//! looks at every pending pod at once (no round trip per pod): it filters nodes
//! (Ready, schedulable, `nodeSelector`, resource requests, free host ports), scores
//! the rest (spread a controller's pods across nodes, then least allocated), and
//! binds in parallel. A pod that fits nowhere gets `PodScheduled=False` and a
//! `FailedScheduling` event in kubectl's words. Passes run when pods or nodes
//! change, never in a loop of their own.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tugboat_api::resource::{NODES, PODS, ResourceInfo};
use tugboat_api::{ApiError, meta, quantity};

use tugboat_runtime::{Event, watcher};

use crate::events::{self, EventType, Recorder};
use crate::registry::{Registry, Subresource, pod_is_active};

/// How many bindings are written at once.
const BIND_CONCURRENCY: usize = 16;
/// Pods a node takes when its status does not say (Kubernetes' kubelet default).
const DEFAULT_MAX_PODS: i64 = 110;

pub async fn run(registry: Arc<Registry>, shutdown: CancellationToken) {
    let wake = Arc::new(Notify::new());
    for info in [&PODS, &NODES] {
        let registry = registry.clone();
        let wake = wake.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = trigger_on_changes(registry, info, wake) => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
    let recorder = events::recorder(registry.clone(), "default-scheduler");
    let mut last_failure: HashMap<String, String> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            // A safety net for a change the watches missed; cheap when nothing is pending.
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        // Let a burst of changes (a ReplicaSet creating 50 pods) land in one pass.
        tokio::time::sleep(Duration::from_millis(5)).await;
        if let Err(e) = pass(&registry, &recorder, &mut last_failure).await {
            tracing::warn!(error = %e, "scheduling pass failed; retrying on the next change");
            tokio::time::sleep(Duration::from_millis(200)).await;
            wake.notify_one();
        }
    }
}

async fn trigger_on_changes(
    registry: Arc<Registry>,
    info: &'static ResourceInfo,
    wake: Arc<Notify>,
) {
    let config = watcher::Config::new("scheduler")
        .backoff(Duration::from_millis(200), Duration::from_secs(5));
    let mut events = std::pin::pin!(watcher::watch_raw(registry, info, config));
    while let Some(ev) = events.next().await {
        match &ev {
            // The list's objects are looked at together, at its end.
            Event::Init | Event::InitApply(_) => continue,
            // A pod that is already bound changes nothing for pending ones
            // unless it went away (freeing room).
            Event::Apply(object) => {
                let bound = object
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .is_some_and(|n| !n.is_empty());
                if info.kind == "Pod" && bound && pod_is_active(object) {
                    continue;
                }
            }
            Event::InitDone | Event::Delete(_) => {}
        }
        wake.notify_one();
    }
}

/// What a pod asks for.
#[derive(Debug, Default, Clone)]
pub struct Request {
    pub cpu_millis: i64,
    pub memory: i64,
    pub host_ports: Vec<(String, i64)>,
}

pub fn pod_request(pod: &Value) -> Request {
    let mut r = Request::default();
    for c in pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let res = c.get("resources");
        // A limit without a request requests the limit, as in Kubernetes.
        let get = |which: &str| {
            res.and_then(|r| r.pointer(&format!("/requests/{which}")))
                .or_else(|| res.and_then(|r| r.pointer(&format!("/limits/{which}"))))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        // Saturating: quantities are capped at i64::MAX, and two such requests
        // must add up to "more than any node has", not wrap to a negative.
        r.cpu_millis = r.cpu_millis.saturating_add(
            get("cpu")
                .and_then(|q| quantity::cpu_millis(&q))
                .unwrap_or(0)
                .max(0),
        );
        r.memory = r.memory.saturating_add(
            get("memory")
                .and_then(|q| quantity::bytes(&q))
                .unwrap_or(0)
                .max(0),
        );
        for p in c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(hp) = p
                .get("hostPort")
                .and_then(Value::as_i64)
                .filter(|hp| *hp > 0)
            {
                let proto = p
                    .get("protocol")
                    .and_then(Value::as_str)
                    .unwrap_or("TCP")
                    .to_string();
                r.host_ports.push((proto, hp));
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
    pub fn from_node(node: &Value) -> NodeState {
        let alloc = |r: &str| {
            node.pointer(&format!("/status/allocatable/{r}"))
                .or_else(|| node.pointer(&format!("/status/capacity/{r}")))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let ready = node
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        NodeState {
            name: meta::name(node).unwrap_or("").to_string(),
            labels: meta::labels(node)
                .map(|l| {
                    l.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
            ready,
            unschedulable: node.pointer("/spec/unschedulable").and_then(Value::as_bool)
                == Some(true),
            cpu_millis: alloc("cpu")
                .and_then(|q| quantity::cpu_millis(&q))
                .unwrap_or(i64::MAX),
            memory: alloc("memory")
                .and_then(|q| quantity::bytes(&q))
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

    pub fn add(&mut self, pod: &Value, req: &Request) {
        self.used_cpu = self.used_cpu.saturating_add(req.cpu_millis);
        self.used_memory = self.used_memory.saturating_add(req.memory);
        self.pods = self.pods.saturating_add(1);
        self.host_ports.extend(req.host_ports.iter().cloned());
        if let Some((_, _, uid)) = meta::controller_of(pod) {
            *self.per_owner.entry(uid.to_string()).or_default() += 1;
        }
    }

    /// Why the pod cannot go here, in the scheduler's words; `None` if it can.
    pub fn unfit(&self, pod: &Value, req: &Request) -> Vec<&'static str> {
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
            .pointer("/spec/nodeSelector")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .all(|(k, v)| self.labels.get(k).map(String::as_str) == v.as_str());
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
    pub fn score(&self, pod: &Value, req: &Request) -> i64 {
        let same_owner = meta::controller_of(pod)
            .and_then(|(_, _, uid)| self.per_owner.get(uid).copied())
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

async fn pass(
    registry: &Arc<Registry>,
    recorder: &Recorder,
    last_failure: &mut HashMap<String, String>,
) -> Result<(), ApiError> {
    let pods = registry.list_all(&PODS, None).await?;
    let mut pending: Vec<&Arc<Value>> = pods
        .iter()
        .filter(|p| {
            pod_is_active(p)
                && p.pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                && p.pointer("/spec/schedulerName")
                    .and_then(Value::as_str)
                    .is_none_or(|s| s == "default-scheduler")
        })
        .collect();
    if pending.is_empty() {
        last_failure.clear();
        return Ok(());
    }
    pending.sort_by_key(|p| {
        p.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    });
    let nodes = registry.list_all(&NODES, None).await?;
    let mut states: Vec<NodeState> = nodes.iter().map(|n| NodeState::from_node(n)).collect();
    let index: HashMap<String, usize> = states
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.clone(), i))
        .collect();
    for p in pods.iter().filter(|p| pod_is_active(p)) {
        if let Some(i) = p
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .and_then(|n| index.get(n))
        {
            states[*i].add(p, &pod_request(p));
        }
    }
    let mut bindings = Vec::new();
    let mut failures = Vec::new();
    for pod in pending {
        let req = pod_request(pod);
        let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut best: Option<(i64, usize)> = None;
        for (i, node) in states.iter().enumerate() {
            let why = node.unfit(pod, &req);
            if why.is_empty() {
                let score = node.score(pod, &req);
                if best.is_none_or(|(s, _)| score > s) {
                    best = Some((score, i));
                }
            } else {
                for w in why {
                    *reasons.entry(w).or_default() += 1;
                }
            }
        }
        match best {
            Some((_, i)) => {
                states[i].add(pod, &req);
                bindings.push((pod.clone(), states[i].name.clone()));
            }
            None => failures.push((pod.clone(), unschedulable_message(states.len(), &reasons))),
        }
    }
    let results: Vec<Result<(), ApiError>> = futures::stream::iter(bindings)
        .map(|(pod, node)| {
            let registry = registry.clone();
            let recorder = recorder.clone();
            async move { bind(&registry, &recorder, &pod, &node).await }
        })
        .buffer_unordered(BIND_CONCURRENCY)
        .collect()
        .await;
    let mut seen = HashSet::new();
    for (pod, message) in failures {
        let key = format!(
            "{}/{}",
            meta::namespace(&pod).unwrap_or(""),
            meta::name(&pod).unwrap_or("")
        );
        seen.insert(key.clone());
        if last_failure.get(&key) == Some(&message) {
            continue;
        }
        tracing::info!(pod = %key, %message, "pod is unschedulable");
        mark_unschedulable(registry, &pod, &message).await?;
        recorder
            .record(&pod, EventType::Warning, "FailedScheduling", &message)
            .await;
        last_failure.insert(key, message);
    }
    last_failure.retain(|k, _| seen.contains(k));
    for r in results {
        match r {
            Ok(()) => {}
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn bind(
    registry: &Registry,
    recorder: &Recorder,
    pod: &Value,
    node: &str,
) -> Result<(), ApiError> {
    let ns = meta::namespace(pod);
    let name = meta::name(pod).unwrap_or("");
    let uid = meta::uid(pod).unwrap_or("").to_string();
    let mut already = false;
    registry
        .update_with(&PODS, ns, name, Subresource::Main, |p| {
            if meta::uid(p) != Some(uid.as_str()) {
                already = true;
                return false;
            }
            match p.pointer("/spec/nodeName").and_then(Value::as_str) {
                Some(n) if !n.is_empty() => {
                    already = true;
                    false
                }
                _ => {
                    p["spec"]["nodeName"] = json!(node);
                    true
                }
            }
        })
        .await?;
    if already {
        return Ok(());
    }
    set_condition(registry, pod, json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": meta::now_rfc3339()})).await?;
    recorder
        .record(
            pod,
            EventType::Normal,
            "Scheduled",
            &format!(
                "Successfully assigned {}/{name} to {node}",
                ns.unwrap_or("default")
            ),
        )
        .await;
    Ok(())
}

async fn mark_unschedulable(
    registry: &Registry,
    pod: &Value,
    message: &str,
) -> Result<(), ApiError> {
    let condition = json!({
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
        "lastProbeTime": null, "lastTransitionTime": meta::now_rfc3339(),
    });
    match set_condition(registry, pod, condition).await {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

/// Replaces (or adds) the pod's condition of that type in its status.
async fn set_condition(registry: &Registry, pod: &Value, condition: Value) -> Result<(), ApiError> {
    let kind = condition["type"].clone();
    registry
        .update_with(
            &PODS,
            meta::namespace(pod),
            meta::name(pod).unwrap_or(""),
            Subresource::Status,
            |p| {
                let conditions = p["status"]["conditions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let mut out: Vec<Value> = Vec::new();
                let mut replaced = false;
                for c in conditions {
                    if c["type"] == kind {
                        let mut new = condition.clone();
                        if c["status"] == new["status"] {
                            new["lastTransitionTime"] = c["lastTransitionTime"].clone();
                            if c == new {
                                return false;
                            }
                        }
                        out.push(new);
                        replaced = true;
                    } else {
                        out.push(c);
                    }
                }
                if !replaced {
                    out.push(condition.clone());
                }
                p["status"]["conditions"] = Value::Array(out);
                true
            },
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpu: &str, mem: &str, labels: Value) -> Value {
        json!({"metadata": {"name": name, "labels": labels}, "status": {
            "allocatable": {"cpu": cpu, "memory": mem, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]}})
    }

    fn pod(cpu: &str, mem: &str) -> Value {
        json!({"metadata": {"name": "p", "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true}]},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}})
    }

    #[test]
    fn requests_too_large_to_add_up_saturate_and_fit_no_node() {
        let huge = "9223372036854775807m";
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": huge, "memory": "8Ei"}}},
            {"name": "b", "resources": {"requests": {"cpu": huge, "memory": "8Ei"}}}
        ]}});
        let r = pod_request(&pod);
        assert_eq!((r.cpu_millis, r.memory), (i64::MAX, i64::MAX));
    }

    #[test]
    fn requests_are_summed_and_limits_stand_in_for_missing_requests() {
        let p = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
            {"name": "b", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}, "ports": [{"containerPort": 80, "hostPort": 8080}]}
        ]}});
        let r = pod_request(&p);
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
        let mut p = pod("0", "0");
        p["spec"]["nodeSelector"] = json!({"disk": "ssd"});
        let ssd = NodeState::from_node(&node("a", "1", "1Gi", json!({"disk": "ssd"})));
        let hdd = NodeState::from_node(&node("b", "1", "1Gi", json!({"disk": "hdd"})));
        assert!(ssd.unfit(&p, &pod_request(&p)).is_empty());
        assert_eq!(
            hdd.unfit(&p, &pod_request(&p)),
            vec!["node(s) didn't match Pod's node affinity/selector"]
        );
        let mut not_ready = node("c", "1", "1Gi", json!({"disk": "ssd"}));
        not_ready["status"]["conditions"][0]["status"] = json!("Unknown");
        assert_eq!(
            NodeState::from_node(&not_ready).unfit(&p, &pod_request(&p)),
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
