//! Whether a Deployment has rolled out, in kubectl's words (its
//! `DeploymentStatusViewer`): the spec must have been observed, a `Progressing`
//! condition with reason `ProgressDeadlineExceeded` is a failure, and otherwise
//! it waits for new replicas to be made, old ones to go and new ones to be
//! available. Also the one-line progress bar drawn on a terminal instead.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;

/// The reason kubectl takes for a rollout that stopped making progress.
pub const TIMED_OUT_REASON: &str = "ProgressDeadlineExceeded";

/// Where a rollout stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not done: kubectl's waiting line.
    Waiting(String),
    /// `deployment "web" successfully rolled out`.
    Done(String),
    /// It will not finish by itself: `deployment "web" exceeded its progress deadline`.
    Failed(String),
}

/// kubectl's verdict on `d` (`rollout_status.go`, without the pods' warning:
/// see [`pod_warning`]).
pub fn verdict(d: &Deployment) -> Verdict {
    let name = d.metadata.name.as_deref().unwrap_or("");
    let status = d.status.clone().unwrap_or_default();
    if d.metadata.generation.unwrap_or(0) > status.observed_generation.unwrap_or(0) {
        return Verdict::Waiting("Waiting for deployment spec update to be observed...".into());
    }
    let progressing = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing");
    if progressing.is_some_and(|c| c.reason.as_deref() == Some(TIMED_OUT_REASON)) {
        return Verdict::Failed(format!(
            "deployment {name:?} exceeded its progress deadline"
        ));
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let waiting = |what: String| {
        Verdict::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {what}..."
        ))
    };
    if let Some(want) = d.spec.as_ref().and_then(|s| s.replicas)
        && updated < want
    {
        return waiting(format!(
            "{updated} out of {want} new replicas have been updated"
        ));
    }
    if replicas > updated {
        return waiting(format!(
            "{} old replicas are pending termination",
            replicas - updated
        ));
    }
    if available < updated {
        return waiting(format!(
            "{available} of {updated} updated replicas are available"
        ));
    }
    Verdict::Done(format!("deployment {name:?} successfully rolled out"))
}

/// What kubectl appends to a waiting line when one of the Deployment's pods
/// cannot be scheduled or its container cannot start: the first such pod's
/// reason.
pub fn pod_warning(pods: &[Pod]) -> Option<String> {
    const STUCK: [&str; 5] = [
        "ImagePullBackOff",
        "ErrImagePull",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
    ];
    for pod in pods {
        let Some(status) = &pod.status else { continue };
        let unschedulable = status.conditions.iter().flatten().find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        });
        if let Some(c) = unschedulable {
            return Some(c.message.clone().unwrap_or_default());
        }
        for cs in status.container_statuses.iter().flatten() {
            let waiting = cs.state.as_ref().and_then(|s| s.waiting.as_ref());
            if let Some(w) = waiting
                && let Some(reason) = w.reason.as_deref().filter(|r| STUCK.contains(r))
            {
                return Some(format!("{reason} - {}", w.message.as_deref().unwrap_or("")));
            }
        }
    }
    None
}

/// `line (Warning: …)`, as kubectl words it.
pub fn with_warning(line: &str, warning: Option<&str>) -> String {
    match warning {
        Some(w) => format!("{line} (Warning: {w})"),
        None => line.to_string(),
    }
}

/// The counts a progress bar shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// `spec.replicas`.
    pub desired: i32,
    /// Pods of the current template.
    pub updated: i32,
    /// Available pods, old and new.
    pub available: i32,
    /// Pods of earlier templates still there.
    pub old: i32,
}

impl Progress {
    pub fn of(d: &Deployment) -> Progress {
        let s = d.status.clone().unwrap_or_default();
        let updated = s.updated_replicas.unwrap_or(0);
        Progress {
            desired: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            updated,
            available: s.available_replicas.unwrap_or(0),
            old: (s.replicas.unwrap_or(0) - updated).max(0),
        }
    }

    /// `deployment "web" [███▒▒░░░░░] 2/3 updated, 1 available, 1 old pending
    /// termination`: `█` a pod of the new template known to be available, `▒`
    /// one made, `░` one still to make; `width` cells in all. Availability is
    /// counted over old and new pods alike, so new pods are known available only
    /// once the old ones are gone.
    pub fn bar(&self, name: &str, width: usize) -> String {
        let desired = self.desired.max(0) as usize;
        let cells = |n: i32| -> usize {
            let n = (n.max(0) as usize).min(desired);
            (n * width).checked_div(desired).unwrap_or(0)
        };
        let ready = if self.old == 0 {
            cells(self.available.min(self.updated))
        } else {
            0
        };
        let made = cells(self.updated).max(ready);
        let mut bar = String::with_capacity(width * 3);
        for i in 0..width {
            bar.push(if desired == 0 || i < ready {
                '█'
            } else if i < made {
                '▒'
            } else {
                '░'
            });
        }
        let mut line = format!(
            "deployment {name:?} [{bar}] {}/{} updated, {} available",
            self.updated, self.desired, self.available
        );
        if self.old > 0 {
            line.push_str(&format!(", {} old pending termination", self.old));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus,
    };

    use super::super::fixtures::deployment;
    use super::*;

    fn with_status(replicas: i32, updated: i32, available: i32) -> Deployment {
        let mut d = deployment("a:1");
        d.status = Some(DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            available_replicas: Some(available),
            ..Default::default()
        });
        d
    }

    fn waiting(what: &str) -> Verdict {
        Verdict::Waiting(format!(
            "Waiting for deployment \"web\" rollout to finish: {what}..."
        ))
    }

    #[test]
    fn an_unobserved_spec_is_waited_for_first() {
        let mut d = with_status(3, 3, 3);
        d.metadata.generation = Some(2);
        assert_eq!(
            verdict(&d),
            Verdict::Waiting("Waiting for deployment spec update to be observed...".into())
        );
    }

    #[test]
    fn waiting_lines_follow_kubectls_order() {
        assert_eq!(
            verdict(&with_status(3, 1, 3)),
            waiting("1 out of 3 new replicas have been updated")
        );
        assert_eq!(
            verdict(&with_status(5, 3, 3)),
            waiting("2 old replicas are pending termination")
        );
        assert_eq!(
            verdict(&with_status(3, 3, 1)),
            waiting("1 of 3 updated replicas are available")
        );
        assert_eq!(
            verdict(&with_status(3, 3, 3)),
            Verdict::Done("deployment \"web\" successfully rolled out".into())
        );
    }

    #[test]
    fn a_passed_progress_deadline_fails_the_rollout() {
        let mut d = with_status(3, 1, 0);
        d.status.as_mut().unwrap().conditions = Some(vec![DeploymentCondition {
            type_: "Progressing".into(),
            status: "False".into(),
            reason: Some(TIMED_OUT_REASON.into()),
            ..Default::default()
        }]);
        assert_eq!(
            verdict(&d),
            Verdict::Failed("deployment \"web\" exceeded its progress deadline".into())
        );
    }

    #[test]
    fn a_scaled_to_zero_deployment_is_rolled_out() {
        let mut d = with_status(0, 0, 0);
        d.spec.as_mut().unwrap().replicas = Some(0);
        assert!(matches!(verdict(&d), Verdict::Done(_)));
    }

    fn pod(status: PodStatus) -> Pod {
        Pod {
            status: Some(status),
            ..Default::default()
        }
    }

    #[test]
    fn unschedulable_and_stuck_pods_are_warned_about() {
        let unschedulable = pod(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("0/2 nodes are available".into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let backoff = pod(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "web".into(),
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("ImagePullBackOff".into()),
                        message: Some("no such image".into()),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert_eq!(pod_warning(&[]), None);
        assert_eq!(pod_warning(&[pod(PodStatus::default())]), None);
        assert_eq!(
            pod_warning(&[backoff.clone(), unschedulable]).as_deref(),
            Some("ImagePullBackOff - no such image")
        );
        assert_eq!(
            with_warning("Waiting...", pod_warning(&[backoff]).as_deref()),
            "Waiting... (Warning: ImagePullBackOff - no such image)"
        );
    }

    #[test]
    fn the_bar_shows_available_updated_and_missing_pods() {
        let p = Progress::of(&with_status(4, 2, 1));
        assert_eq!(
            p,
            Progress {
                desired: 3,
                updated: 2,
                available: 1,
                old: 2
            }
        );
        // Old pods still there: whose the available ones are is not known.
        assert_eq!(
            p.bar("web", 6),
            "deployment \"web\" [▒▒▒▒░░] 2/3 updated, 1 available, 2 old pending termination"
        );
        let almost = Progress::of(&with_status(3, 3, 2));
        assert_eq!(
            almost.bar("web", 3),
            "deployment \"web\" [██▒] 3/3 updated, 2 available"
        );
    }
}
