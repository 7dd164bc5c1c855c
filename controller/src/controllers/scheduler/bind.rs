//! Writing the scheduler's decisions: a binding (`spec.nodeName`, then
//! `PodScheduled=True` and a `Scheduled` event) or `PodScheduled=False` for a
//! pod that fits nowhere.

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use tugboat_api::ApiError;
use tugboat_api::resource::PODS;

use crate::controllers::now;
use crate::events::{EventType, Recorder};
use crate::registry::{Registry, Subresource};

fn scheduled(status: &str, reason: Option<&str>, message: Option<&str>) -> PodCondition {
    PodCondition {
        type_: "PodScheduled".to_string(),
        status: status.to_string(),
        reason: reason.map(str::to_string),
        message: message.map(str::to_string),
        last_transition_time: Some(now()),
        ..Default::default()
    }
}

/// Binds `pod` to `node` unless it is bound already (or is another pod of that
/// name now). Returns whether this call bound it.
pub async fn bind(
    registry: &Registry,
    recorder: &Recorder,
    pod: &Pod,
    node: &str,
) -> Result<bool, ApiError> {
    let ns = pod.metadata.namespace.as_deref();
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let uid = pod.metadata.uid.as_deref();
    let mut already = false;
    // One write, as kube-apiserver's binding does: the node and the
    // PodScheduled condition together.
    let condition = scheduled("True", None, None);
    registry
        .update_typed::<Pod>(&PODS, ns, name, Subresource::Binding, |p| {
            let bound = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty());
            if p.metadata.uid.as_deref() != uid || bound {
                already = true;
                return false;
            }
            p.spec.get_or_insert_default().node_name = Some(node.to_string());
            set(p, &condition);
            true
        })
        .await?;
    if already {
        return Ok(false);
    }
    recorder
        .publish(
            pod,
            EventType::Normal,
            "Scheduled",
            &format!(
                "Successfully assigned {}/{name} to {node}",
                ns.unwrap_or("default")
            ),
        )
        .await;
    Ok(true)
}

/// `PodScheduled=False`, reason `Unschedulable`, with the scheduler's message.
pub async fn mark_unschedulable(
    registry: &Registry,
    pod: &Pod,
    message: &str,
) -> Result<(), ApiError> {
    let condition = scheduled("False", Some("Unschedulable"), Some(message));
    match set_condition(registry, pod, condition).await {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

/// Replaces (or adds) the pod's condition of that type in its status; a
/// condition whose status did not change keeps its transition time.
async fn set_condition(
    registry: &Registry,
    pod: &Pod,
    condition: PodCondition,
) -> Result<(), ApiError> {
    registry
        .update_typed::<Pod>(
            &PODS,
            pod.metadata.namespace.as_deref(),
            pod.metadata.name.as_deref().unwrap_or(""),
            Subresource::Status,
            |p| set(p, &condition),
        )
        .await?;
    Ok(())
}

/// Sets `condition` on the pod (its transition time kept when its status is
/// unchanged); whether anything changed.
fn set(p: &mut Pod, condition: &PodCondition) -> bool {
    let conditions = p
        .status
        .get_or_insert_default()
        .conditions
        .get_or_insert_default();
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(c) => {
            let mut new = condition.clone();
            if c.status == new.status {
                new.last_transition_time = c.last_transition_time.clone();
                if *c == new {
                    return false;
                }
            }
            *c = new;
        }
        None => conditions.push(condition.clone()),
    }
    true
}
