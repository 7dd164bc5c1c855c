//! A pod's READY, STATUS and RESTARTS columns (and its wide ones), computed as
//! kubectl's `printPod` does, init containers and sidecars included.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::{Layout, age, name, or_none};
use crate::duration::since;

/// A pod's READY, STATUS and RESTARTS columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSummary {
    pub ready: String,
    pub status: String,
    pub restarts: String,
}

/// kubectl's `printPod`: STATUS is the pod's phase unless a container has a waiting or
/// terminated reason (the last container's wins, as in kubectl), init containers show
/// `Init:…`, and a pod being deleted shows `Terminating`. RESTARTS adds how long ago
/// the latest restart was.
pub fn pod_summary(pod: &Pod, now: Timestamp) -> PodSummary {
    let spec = pod.spec.as_ref();
    let status = pod.status.clone().unwrap_or_default();
    let total = spec.map_or(0, |s| s.containers.len());
    let phase = status.phase.clone().unwrap_or_default();
    let mut reason = match status.reason.as_deref() {
        Some(r) if !r.is_empty() => r.to_string(),
        _ => phase.clone(),
    };
    let conditions = status.conditions.clone().unwrap_or_default();
    if conditions
        .iter()
        .any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("SchedulingGated"))
    {
        reason = "SchedulingGated".to_string();
    }

    let init_specs = spec
        .and_then(|s| s.init_containers.clone())
        .unwrap_or_default();
    let is_sidecar = |name: &str| {
        init_specs
            .iter()
            .any(|c| c.name == name && c.restart_policy.as_deref() == Some("Always"))
    };
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut ready = 0usize;
    let mut last_restart: Option<Timestamp> = None;
    let mut sidecar_last_restart: Option<Timestamp> = None;
    let mut initializing = false;
    let init_statuses = status.init_container_statuses.clone().unwrap_or_default();
    for (i, c) in init_statuses.iter().enumerate() {
        restarts += i64::from(c.restart_count);
        let finished = last_finished(c);
        last_restart = later(last_restart, finished);
        let sidecar = is_sidecar(&c.name);
        if sidecar {
            sidecar_restarts += i64::from(c.restart_count);
            sidecar_last_restart = later(sidecar_last_restart, finished);
        }
        let state = c.state.clone().unwrap_or_default();
        let terminated = state.terminated.as_ref();
        let waiting_reason = state
            .waiting
            .as_ref()
            .and_then(|w| w.reason.as_deref())
            .unwrap_or("");
        if terminated.is_some_and(|t| t.exit_code == 0) {
            continue;
        }
        if sidecar && c.started == Some(true) {
            if c.ready {
                ready += 1;
            }
            continue;
        }
        initializing = true;
        reason = if let Some(t) = terminated {
            match t.reason.as_deref() {
                Some(r) if !r.is_empty() => format!("Init:{r}"),
                _ => match t.signal {
                    Some(sig) if sig != 0 => format!("Init:Signal:{sig}"),
                    _ => format!("Init:ExitCode:{}", t.exit_code),
                },
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        break;
    }

    let initialized = conditions
        .iter()
        .any(|c| c.type_ == "Initialized" && c.status == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        last_restart = sidecar_last_restart;
        let mut has_running = false;
        for c in status.container_statuses.iter().flatten().rev() {
            restarts += i64::from(c.restart_count);
            last_restart = later(last_restart, last_finished(c));
            let state = c.state.clone().unwrap_or_default();
            let waiting = state
                .waiting
                .as_ref()
                .and_then(|w| w.reason.as_deref())
                .filter(|r| !r.is_empty());
            if let Some(w) = waiting {
                reason = w.to_string();
            } else if let Some(t) = &state.terminated {
                reason = match t.reason.as_deref() {
                    Some(r) if !r.is_empty() => r.to_string(),
                    _ => match t.signal {
                        Some(sig) if sig != 0 => format!("Signal:{sig}"),
                        _ => format!("ExitCode:{}", t.exit_code),
                    },
                };
            } else if c.ready && state.running.is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.to_string();
        }
    }

    if pod.metadata.deletion_timestamp.is_some() {
        if status.reason.as_deref() == Some("NodeLost") {
            reason = "Unknown".to_string();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".to_string();
        }
    }

    let restarts = match last_restart {
        Some(ts) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(ts), now)),
        _ => restarts.to_string(),
    };
    PodSummary {
        ready: format!("{ready}/{total}"),
        status: reason,
        restarts,
    }
}

fn last_finished(c: &ContainerStatus) -> Option<Timestamp> {
    c.last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.finished_at.as_ref())
        .map(|t| t.0)
}

fn later(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

pub(super) fn pod_row(pod: &Pod, layout: &Layout) -> Vec<String> {
    let s = pod_summary(pod, layout.now);
    let mut cells = vec![
        name(&pod.metadata),
        s.ready,
        s.status,
        s.restarts,
        age(&pod.metadata, layout),
    ];
    if layout.wide {
        let status = pod.status.as_ref();
        let ip = status
            .and_then(|s| s.pod_ips.as_ref())
            .and_then(|ips| ips.first())
            .map(|ip| ip.ip.clone())
            .or_else(|| status.and_then(|s| s.pod_ip.clone()));
        let gates = pod
            .spec
            .as_ref()
            .and_then(|s| s.readiness_gates.as_ref())
            .filter(|g| !g.is_empty())
            .map(|gates| {
                let conditions = status.and_then(|s| s.conditions.as_ref());
                let met = gates
                    .iter()
                    .filter(|g| {
                        conditions
                            .into_iter()
                            .flatten()
                            .any(|c| c.type_ == g.condition_type && c.status == "True")
                    })
                    .count();
                format!("{met}/{}", gates.len())
            });
        cells.push(or_none(ip.as_deref()));
        cells.push(or_none(
            pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        ));
        cells.push(or_none(
            status.and_then(|s| s.nominated_node_name.as_deref()),
        ));
        cells.push(or_none(gates.as_deref()));
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columns::tests::{layout, now};
    use crate::columns::{header, row};
    use crate::resource::PODS;
    use k8s_openapi::api::core::v1::Container;
    use serde_json::{Value, json};

    fn pod(status: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "default", "creationTimestamp": "2026-01-01T11:57:00Z"},
            "spec": {"containers": [{"name": "web", "image": "nginx"}, {"name": "side", "image": "busybox"}]},
            "status": status,
        }))
        .unwrap()
    }

    fn running(name: &str, ready: bool) -> Value {
        json!({"name": name, "ready": ready, "restartCount": 0, "image": "x", "imageID": "",
               "state": {"running": {"startedAt": "2026-01-01T11:58:00Z"}}})
    }

    #[test]
    fn a_running_pod_shows_its_phase_and_ready_containers() {
        let p = pod(
            json!({"phase": "Running", "containerStatuses": [running("web", true), running("side", false)]}),
        );
        let s = pod_summary(&p, now());
        assert_eq!(s.ready, "1/2");
        assert_eq!(s.status, "Running");
        assert_eq!(s.restarts, "0");
    }

    #[test]
    fn a_waiting_reason_replaces_the_phase_and_restarts_say_how_long_ago() {
        let crashing = json!({
            "name": "web", "ready": false, "restartCount": 5, "image": "x", "imageID": "",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2026-01-01T11:59:55Z"}}
        });
        let p = pod(
            json!({"phase": "Running", "containerStatuses": [crashing, running("side", true)]}),
        );
        let s = pod_summary(&p, now());
        assert_eq!(s.status, "CrashLoopBackOff");
        assert_eq!(s.restarts, "5 (5s ago)");
        assert_eq!(s.ready, "1/2");
    }

    #[test]
    fn a_terminated_container_shows_its_reason_or_exit_code() {
        let done = |name: &str, reason: Option<&str>, code: i32| {
            json!({"name": name, "ready": false, "restartCount": 0, "image": "x", "imageID": "",
                   "state": {"terminated": {"exitCode": code, "reason": reason}}})
        };
        let p = pod(
            json!({"phase": "Succeeded", "containerStatuses": [done("web", Some("Completed"), 0), done("side", Some("Completed"), 0)]}),
        );
        assert_eq!(pod_summary(&p, now()).status, "Completed");
        let p = pod(
            json!({"phase": "Failed", "containerStatuses": [done("web", None, 3), done("side", Some("Completed"), 0)]}),
        );
        // The first container is looked at last, so its state wins, as in kubectl.
        assert_eq!(pod_summary(&p, now()).status, "ExitCode:3");
        let p = pod(
            json!({"phase": "Running", "containerStatuses": [running("web", true), done("side", Some("Error"), 1)]}),
        );
        assert_eq!(pod_summary(&p, now()).status, "Error");
    }

    #[test]
    fn image_pull_failures_show_as_the_waiting_reason() {
        let pulling = json!({"name": "web", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
                             "state": {"waiting": {"reason": "ErrImagePull"}}});
        let p = pod(json!({"phase": "Pending", "containerStatuses": [pulling]}));
        assert_eq!(pod_summary(&p, now()).status, "ErrImagePull");
    }

    #[test]
    fn a_pod_being_deleted_is_terminating() {
        let mut p = pod(
            json!({"phase": "Running", "containerStatuses": [running("web", true), running("side", true)]}),
        );
        p.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
        assert_eq!(pod_summary(&p, now()).status, "Terminating");
    }

    #[test]
    fn a_pod_without_status_is_pending_with_nothing_ready() {
        let p = pod(json!({"phase": "Pending"}));
        let s = pod_summary(&p, now());
        assert_eq!(
            (s.ready.as_str(), s.status.as_str(), s.restarts.as_str()),
            ("0/2", "Pending", "0")
        );
    }

    #[test]
    fn init_containers_show_their_progress() {
        let mut p = pod(json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "init", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
             "state": {"running": {}}}
        ]}));
        p.spec.as_mut().unwrap().init_containers = Some(vec![Container {
            name: "init".into(),
            ..Default::default()
        }]);
        assert_eq!(pod_summary(&p, now()).status, "Init:0/1");
        let failing = |state: Value| {
            let mut p = pod(json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "init", "ready": false, "restartCount": 2, "image": "x", "imageID": "",
                 "state": state}
            ]}));
            p.spec.as_mut().unwrap().init_containers = Some(vec![Container {
                name: "init".into(),
                ..Default::default()
            }]);
            pod_summary(&p, now()).status
        };
        assert_eq!(
            failing(json!({"waiting": {"reason": "CrashLoopBackOff"}})),
            "Init:CrashLoopBackOff"
        );
        assert_eq!(
            failing(json!({"terminated": {"exitCode": 1, "reason": "Error"}})),
            "Init:Error"
        );
        assert_eq!(
            failing(json!({"terminated": {"exitCode": 3}})),
            "Init:ExitCode:3"
        );
    }

    #[test]
    fn pod_rows_have_the_age_and_wide_columns() {
        let p = json!({
            "metadata": {"name": "web-abc", "namespace": "default", "creationTimestamp": "2026-01-01T11:57:00Z"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "web"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [running("web", true)]}
        });
        let mut l = layout();
        l.wide = true;
        l.all_namespaces = true;
        assert_eq!(
            row(&PODS, &p, &l).unwrap(),
            [
                "default", "web-abc", "1/1", "Running", "0", "3m", "10.0.0.5", "node-1", "<none>",
                "<none>"
            ]
        );
        assert_eq!(header(&PODS, &l)[0], "NAMESPACE");
    }
}
