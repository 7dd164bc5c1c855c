//! What the node lifecycle controller writes: `Ready=Unknown` on a lost node,
//! and the eviction of its pods.

use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tugboat_api::ApiError;
use tugboat_api::resource::{NODES, PODS};

use super::health::Heartbeat;
use crate::controllers::pod_node;
use crate::events::{EventType, Recorder};
use crate::registry::{DeleteOptions, Registry, Subresource};

/// Sets the node's Ready condition to Unknown, keeping its other conditions and its
/// last heartbeat time. Returns whether it wrote: not when the node posted a new
/// heartbeat since `seen` (its agent is back) or is already Unknown.
pub async fn mark_unknown(
    registry: &Registry,
    name: &str,
    seen: &Heartbeat,
) -> Result<bool, ApiError> {
    let now = crate::controllers::now();
    let result = registry
        .update_typed::<Node>(&NODES, None, name, Subresource::Status, |node| {
            if Heartbeat::of(Some(node), None).status != seen.status {
                return false;
            }
            set_ready_unknown(node, &now)
        })
        .await;
    match result {
        Ok(written) => Ok(written.is_some()),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// The edit `mark_unknown` makes: Ready becomes `Unknown` (added when the node
/// never posted one). False when it already was.
pub fn set_ready_unknown(node: &mut Node, now: &Time) -> bool {
    let conditions = node
        .status
        .get_or_insert_default()
        .conditions
        .get_or_insert_default();
    match conditions.iter_mut().find(|c| c.type_ == "Ready") {
        Some(c) if c.status == "Unknown" => false,
        Some(c) => {
            c.status = "Unknown".to_string();
            c.reason = Some("NodeStatusUnknown".to_string());
            c.message = Some("Kubelet stopped posting node status.".to_string());
            c.last_transition_time = Some(now.clone());
            true
        }
        None => {
            conditions.push(NodeCondition {
                type_: "Ready".to_string(),
                status: "Unknown".to_string(),
                reason: Some("NodeStatusNeverUpdated".to_string()),
                message: Some("Kubelet never posted node status.".to_string()),
                last_heartbeat_time: Some(now.clone()),
                last_transition_time: Some(now.clone()),
            });
            true
        }
    }
}

/// The event message on an evicted pod, in Kubernetes' words.
pub fn eviction_message(ns: &str, name: &str) -> String {
    format!("Marking for deletion Pod {ns}/{name}")
}

/// Deletes `pod` at once (grace 0), as a force deletion: its node's agent is
/// gone, so nobody would finish a graceful one. The uid guards against deleting
/// a same-named pod created since the list.
pub async fn evict(registry: &Registry, recorder: &Recorder, pod: &Pod) -> Result<(), ApiError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let opts = DeleteOptions {
        grace_period_seconds: Some(0),
        precondition_uid: pod.metadata.uid.clone(),
        ..Default::default()
    };
    match registry.delete(&PODS, Some(ns), name, &opts).await {
        Ok(_) => {}
        Err(e) if e.is_not_found() || e.is_conflict() => return Ok(()),
        Err(e) => return Err(e),
    }
    tracing::info!(pod = %format!("{ns}/{name}"), node = pod_node(pod).unwrap_or(""), "evicted a pod from a lost node");
    recorder
        .publish(
            pod,
            EventType::Normal,
            "TaintManagerEviction",
            &eviction_message(ns, name),
        )
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn marking_unknown_keeps_the_other_conditions_and_the_last_heartbeat() {
        let mut node: Node = serde_json::from_value(json!({"metadata": {"name": "n"}, "status": {"conditions": [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": "True", "reason": "KubeletReady",
             "lastHeartbeatTime": "2025-01-01T00:00:00Z", "lastTransitionTime": "2024-12-31T00:00:00Z"},
        ]}}))
        .unwrap();
        assert!(set_ready_unknown(&mut node, &time("2025-01-01T00:00:05Z")));
        let node = serde_json::to_value(&node).unwrap();
        assert_eq!(
            node["status"]["conditions"],
            json!([
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                 "message": "Kubelet stopped posting node status.",
                 "lastHeartbeatTime": "2025-01-01T00:00:00Z", "lastTransitionTime": "2025-01-01T00:00:05Z"},
            ])
        );
        let mut node: Node = serde_json::from_value(node).unwrap();
        assert!(!set_ready_unknown(&mut node, &time("2025-01-01T00:00:06Z")));
    }

    #[test]
    fn a_node_that_never_posted_status_gets_an_unknown_ready_condition() {
        let mut node: Node =
            serde_json::from_value(json!({"metadata": {"name": "n"}, "spec": {}})).unwrap();
        assert!(set_ready_unknown(&mut node, &time("2025-01-01T00:00:05Z")));
        let node = serde_json::to_value(&node).unwrap();
        assert_eq!(node["status"]["conditions"][0]["status"], "Unknown");
        assert_eq!(
            node["status"]["conditions"][0]["reason"],
            "NodeStatusNeverUpdated"
        );
    }

    #[test]
    fn the_eviction_message_uses_kubernetes_words() {
        assert_eq!(
            eviction_message("default", "web-abc"),
            "Marking for deletion Pod default/web-abc"
        );
    }
}
