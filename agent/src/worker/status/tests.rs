//! The pure status function, case by case.

use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::runtime::{ContainerState as DockerState, LABEL_ATTEMPT, LABEL_CONTAINER_NAME};

const HOST: &str = "192.0.2.10";

fn pod(policy: &str, containers: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web-1", "namespace": "team", "uid": "u1"},
        "spec": {"restartPolicy": policy, "containers": containers},
    }))
    .unwrap()
}

fn app() -> serde_json::Value {
    json!([{"name": "app", "image": "tugboat/sample:latest"}])
}

fn container(id: &str, attempt: u32, state: DockerState) -> ContainerInfo {
    ContainerInfo {
        id: id.into(),
        image_id: "sha256:abc".into(),
        labels: BTreeMap::from([
            (LABEL_CONTAINER_NAME.to_string(), "app".to_string()),
            (LABEL_ATTEMPT.to_string(), attempt.to_string()),
        ]),
        ip: state.running.then(|| "10.0.0.7".to_string()),
        state,
        ..Default::default()
    }
}

fn running() -> DockerState {
    DockerState {
        status: "running".into(),
        running: true,
        started_at: Some("2026-01-01T00:00:00.123456789Z".into()),
        ..Default::default()
    }
}

fn exited(code: i64) -> DockerState {
    DockerState {
        status: "exited".into(),
        exit_code: Some(code),
        started_at: Some("2026-01-01T00:00:00Z".into()),
        finished_at: Some("2026-01-01T00:00:05Z".into()),
        ..Default::default()
    }
}

/// Builds the inputs and computes the status.
struct Case {
    pod: Pod,
    containers: Vec<ContainerInfo>,
    probes: HashMap<String, ProbeState>,
    memo: HashMap<String, ContainerMemo>,
    now: Instant,
}

impl Case {
    fn new(pod: Pod, containers: Vec<ContainerInfo>) -> Case {
        Case {
            pod,
            containers,
            probes: HashMap::new(),
            memo: HashMap::new(),
            now: Instant::now(),
        }
    }

    fn memo(&mut self) -> &mut ContainerMemo {
        self.memo
            .entry("app".into())
            .or_insert_with(|| ContainerMemo::new(Duration::from_secs(10), Duration::from_secs(60)))
    }

    fn status(&self) -> PodStatus {
        let start = Time(jiff::Timestamp::from_second(1_767_225_600).unwrap());
        pod_status(&Observed {
            pod: &self.pod,
            containers: &self.containers,
            probes: &self.probes,
            memo: &self.memo,
            host_ip: HOST,
            sandbox_ip: None,
            start_time: &start,
            now: self.now,
            wall: jiff::Timestamp::now(),
        })
    }
}

fn only(status: &PodStatus) -> &ContainerStatus {
    &status.container_statuses.as_ref().unwrap()[0]
}

fn condition<'a>(status: &'a PodStatus, kind: &str) -> &'a PodCondition {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == kind)
        .unwrap()
}

fn waiting_reason(st: &ContainerStatus) -> Option<&str> {
    st.state.as_ref()?.waiting.as_ref()?.reason.as_deref()
}

#[test]
fn a_pod_with_nothing_created_yet_is_pending_and_creating() {
    let status = Case::new(pod("Always", app()), vec![]).status();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let st = only(&status);
    assert_eq!(waiting_reason(st), Some("ContainerCreating"));
    assert_eq!(
        (st.ready, st.started, st.restart_count),
        (false, Some(false), 0)
    );
    assert_eq!(st.last_state, Some(ContainerState::default()));
    assert_eq!(condition(&status, "Ready").status, "False");
    assert_eq!(
        condition(&status, "Ready").reason.as_deref(),
        Some("ContainersNotReady")
    );
    assert_eq!(condition(&status, "PodScheduled").reason, None);
    assert_eq!(status.pod_ip, None);
    assert_eq!(status.host_ip.as_deref(), Some(HOST));
}

#[test]
fn a_running_container_without_probes_makes_the_pod_ready() {
    let status = Case::new(pod("Always", app()), vec![container("c1", 0, running())]).status();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let st = only(&status);
    assert!(st.ready);
    assert_eq!(st.container_id.as_deref(), Some("docker://c1"));
    assert_eq!(st.image_id, "docker-pullable://sha256:abc");
    let started = st.state.as_ref().unwrap().running.as_ref().unwrap();
    assert_eq!(
        started.started_at,
        Some(Time("2026-01-01T00:00:00Z".parse().unwrap())),
        "Docker's nanoseconds cut to seconds"
    );
    assert_eq!(condition(&status, "Ready").status, "True");
    assert_eq!(condition(&status, "Ready").reason, None);
    assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.7"));
    assert_eq!(
        status.pod_ips,
        Some(vec![PodIP {
            ip: "10.0.0.7".into()
        }])
    );
    assert_eq!(status.qos_class.as_deref(), Some("BestEffort"));
}

#[test]
fn readiness_follows_what_the_probes_of_that_instance_found() {
    let probed = json!([{"name": "app", "image": "tugboat/sample:latest",
        "readinessProbe": {"exec": {"command": ["true"]}}}]);
    let mut case = Case::new(pod("Always", probed), vec![container("c1", 0, running())]);
    assert!(!only(&case.status()).ready, "no probe result yet");
    assert_eq!(case.status().phase.as_deref(), Some("Running"));

    case.probes.insert(
        "c1".into(),
        ProbeState {
            started: true,
            ready: true,
            kill: None,
        },
    );
    let status = case.status();
    assert!(only(&status).ready);
    assert_eq!(condition(&status, "ContainersReady").status, "True");

    case.probes.clear();
    case.probes.insert(
        "an-older-instance".into(),
        ProbeState {
            started: true,
            ready: true,
            kill: None,
        },
    );
    assert!(
        !only(&case.status()).ready,
        "another instance's result is not this one's"
    );
}

#[test]
fn the_phase_follows_the_restart_policy_and_the_exit_code() {
    let cases = [
        ("Never", 0, "Succeeded"),
        ("Never", 1, "Failed"),
        ("OnFailure", 0, "Succeeded"),
    ];
    for (policy, code, phase) in cases {
        let status = Case::new(pod(policy, app()), vec![container("c1", 0, exited(code))]).status();
        assert_eq!(status.phase.as_deref(), Some(phase), "{policy} exit {code}");
        let ready = condition(&status, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("PodCompleted"))
        );
        let ended = only(&status)
            .state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap();
        assert_eq!(ended.exit_code, code as i32);
        let reason = if code == 0 { "Completed" } else { "Error" };
        assert_eq!(ended.reason.as_deref(), Some(reason));
    }
}

#[test]
fn a_crash_being_restarted_now_shows_how_it_ended() {
    for (policy, code) in [("Always", 0), ("Always", 1), ("OnFailure", 1)] {
        let status = Case::new(pod(policy, app()), vec![container("c1", 0, exited(code))]).status();
        // Nothing runs and nothing ended for good.
        assert_eq!(
            status.phase.as_deref(),
            Some("Pending"),
            "{policy} exit {code}"
        );
        let st = only(&status);
        assert!(st.state.as_ref().unwrap().terminated.is_some());
    }
}

#[test]
fn a_crash_waiting_for_its_back_off_is_crash_loop_back_off() {
    let mut case = Case::new(pod("Always", app()), vec![container("c2", 3, exited(2))]);
    let now = case.now;
    case.memo().restart.fail(now);
    case.memo().restart.fail(now);
    let status = case.status();
    let st = only(&status);
    assert_eq!(waiting_reason(st), Some("CrashLoopBackOff"));
    let message = st
        .state
        .as_ref()
        .unwrap()
        .waiting
        .as_ref()
        .unwrap()
        .message
        .as_deref();
    assert_eq!(
        message,
        Some("back-off 10s restarting failed container=app pod=web-1")
    );
    assert_eq!(st.restart_count, 3);
    let last = st.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(last.exit_code, 2);
    assert_eq!(last.container_id.as_deref(), Some("docker://c2"));
    assert_eq!(
        last.finished_at,
        Some(Time("2026-01-01T00:00:05Z".parse().unwrap()))
    );
}

#[test]
fn the_previous_attempt_is_the_last_state_of_a_running_one() {
    let containers = vec![
        container("c1", 0, exited(137)),
        container("c2", 1, running()),
    ];
    let status = Case::new(pod("Always", app()), containers).status();
    let st = only(&status);
    assert_eq!(st.restart_count, 1);
    assert_eq!(st.container_id.as_deref(), Some("docker://c2"));
    let last = st.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(
        (last.exit_code, last.reason.as_deref()),
        (137, Some("Error"))
    );
}

#[test]
fn an_image_that_cannot_be_pulled_is_err_image_pull_then_back_off() {
    let mut case = Case::new(pod("Always", app()), vec![]);
    case.memo().image_problem = Some(pull_denied());
    assert_eq!(waiting_reason(only(&case.status())), Some("ErrImagePull"));

    let now = case.now;
    case.memo().pull.fail(now);
    case.memo().pull.fail(now);
    let status = case.status();
    let waiting = only(&status)
        .state
        .as_ref()
        .unwrap()
        .waiting
        .as_ref()
        .unwrap();
    assert_eq!(waiting.reason.as_deref(), Some("ImagePullBackOff"));
    assert_eq!(
        waiting.message.as_deref(),
        Some("Back-off pulling image \"tugboat/sample:latest\": pull access denied")
    );

    case.memo().image_problem = Some(plan::ImageProblem {
        reason: "ErrImageNeverPull".into(),
        message: "not present".into(),
    });
    assert_eq!(
        waiting_reason(only(&case.status())),
        Some("ErrImageNeverPull"),
        "only pull errors back off"
    );
}

fn pull_denied() -> plan::ImageProblem {
    plan::ImageProblem {
        reason: "ErrImagePull".into(),
        message: "pull access denied".into(),
    }
}

#[test]
fn the_qos_class_follows_requests_and_limits() {
    let spec = |resources: serde_json::Value| -> PodSpec {
        serde_json::from_value(json!({"containers": [{"name": "a", "resources": resources}]}))
            .unwrap()
    };
    assert_eq!(qos_class(&spec(json!({}))), "BestEffort");
    assert_eq!(
        qos_class(&spec(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
        "Guaranteed"
    );
    assert_eq!(
        qos_class(&spec(json!({"requests": {"cpu": "1"}}))),
        "Burstable"
    );
}

#[test]
fn a_status_read_back_is_unchanged_and_flips_keep_their_own_times() {
    let case = Case::new(pod("Always", app()), vec![container("c1", 0, running())]);
    let sent = case.status();
    // What the API stores and sends back: the JSON of the typed status.
    let stored: PodStatus = serde_json::from_value(serde_json::to_value(&sent).unwrap()).unwrap();
    let mut again = case.status();
    carry_transition_times(&mut again, &stored);
    assert!(unchanged(&stored, &again));

    let mut reordered = stored.clone();
    reordered.conditions.as_mut().unwrap().reverse();
    assert!(
        unchanged(&reordered, &again),
        "conditions compare in any order"
    );

    let mut old = stored.clone();
    let long_ago = Time("2020-01-01T00:00:00Z".parse().unwrap());
    for c in old.conditions.as_mut().unwrap() {
        c.last_transition_time = Some(long_ago.clone());
        if c.type_ == "Ready" {
            c.status = "False".into();
        }
    }
    let mut new = case.status();
    carry_transition_times(&mut new, &old);
    assert_eq!(
        condition(&new, "Initialized").last_transition_time,
        Some(long_ago.clone())
    );
    assert_ne!(
        condition(&new, "Ready").last_transition_time,
        Some(long_ago),
        "a flipped condition keeps its new time"
    );
    assert!(!unchanged(&old, &new));
}

#[test]
fn docker_times_become_kubernetes_times_and_zero_is_none() {
    assert_eq!(
        docker_time(Some("2026-11-21T23:27:50.123456789Z")),
        Some(Time("2026-11-21T23:27:50Z".parse().unwrap()))
    );
    assert_eq!(docker_time(Some("0001-01-01T00:00:00Z")), None);
    assert_eq!(docker_time(None), None);
}
