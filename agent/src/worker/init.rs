//! Init containers, as the kubelet runs them: one at a time, in order, each
//! to a successful end (exit 0) before the next and before any app container.
//! A native sidecar (an init container with `restartPolicy: Always`) counts as
//! done once it runs, and keeps running beside the app containers. Pure: from
//! the pod's spec and its containers in Docker.

use k8s_openapi::api::core::v1::{Container, PodSpec};

use super::plan;
use crate::runtime::ContainerInfo;

/// A native sidecar: started in order with the init containers, then kept
/// running (and restarted) with the app containers.
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Whether init container `c` is done: ended with 0, or (a sidecar) running.
fn done(c: &Container, existing: &[ContainerInfo]) -> bool {
    let Some(latest) = plan::attempts(existing, &c.name).last().copied() else {
        return false;
    };
    if is_sidecar(c) {
        // Once started, a sidecar stays "done" through its restarts.
        return true;
    }
    !latest.state.running && latest.state.exit_code == Some(0)
}

/// Whether the pod is past its init containers: each is done, or an app
/// container exists already (an init container removed later is not run again).
pub fn initialized(spec: &PodSpec, existing: &[ContainerInfo]) -> bool {
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    inits.iter().all(|c| done(c, existing))
        || spec
            .containers
            .iter()
            .any(|c| !plan::attempts(existing, &c.name).is_empty())
}

/// The init container to work on now: the first one not done.
pub fn next(spec: &PodSpec, existing: &[ContainerInfo]) -> Option<Container> {
    spec.init_containers
        .iter()
        .flatten()
        .find(|c| !done(c, existing))
        .cloned()
}

/// The sidecars, which run beside the app containers once the pod is initialized.
pub fn sidecars(spec: &PodSpec) -> Vec<Container> {
    spec.init_containers
        .iter()
        .flatten()
        .filter(|c| is_sidecar(c))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::runtime::{ContainerState, LABEL_ATTEMPT, LABEL_CONTAINER_NAME};

    fn spec() -> PodSpec {
        serde_json::from_value(serde_json::json!({
            "initContainers": [{"name": "one"}, {"name": "side", "restartPolicy": "Always"}, {"name": "two"}],
            "containers": [{"name": "app"}]
        }))
        .unwrap()
    }

    fn info(name: &str, status: &str, exit: Option<i64>) -> ContainerInfo {
        ContainerInfo {
            labels: BTreeMap::from([
                (LABEL_CONTAINER_NAME.to_string(), name.to_string()),
                (LABEL_ATTEMPT.to_string(), "0".to_string()),
            ]),
            state: ContainerState {
                running: status == "running",
                status: status.into(),
                exit_code: exit,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn init_containers_run_in_order_each_to_success() {
        let s = spec();
        assert_eq!(next(&s, &[]).unwrap().name, "one");
        assert!(!initialized(&s, &[]));
        let running = [info("one", "running", None)];
        assert_eq!(next(&s, &running).unwrap().name, "one");
        let failed = [info("one", "exited", Some(1))];
        assert_eq!(
            next(&s, &failed).unwrap().name,
            "one",
            "a failure runs it again"
        );
        let first_done = [info("one", "exited", Some(0))];
        assert_eq!(next(&s, &first_done).unwrap().name, "side");
        let side_up = [
            info("one", "exited", Some(0)),
            info("side", "running", None),
        ];
        assert_eq!(
            next(&s, &side_up).unwrap().name,
            "two",
            "a running sidecar lets the next go"
        );
        let all = [
            info("one", "exited", Some(0)),
            info("side", "running", None),
            info("two", "exited", Some(0)),
        ];
        assert!(next(&s, &all).is_none());
        assert!(initialized(&s, &all));
        assert_eq!(sidecars(&s).len(), 1);
    }

    #[test]
    fn a_pod_whose_app_containers_exist_is_initialized() {
        assert!(initialized(&spec(), &[info("app", "running", None)]));
    }
}
