//! The pod's status as Docker shows it, as a typed [`PodStatus`]: a pure function
//! of the pod, its containers in Docker, what their probes found and the
//! worker's memo. Also when a new status is worth a patch ([`unchanged`]).

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::time::Instant;

use super::init;
use super::plan::{self, ContainerMemo, Phase, RestartPolicy};
use crate::probe::{self, ProbeState};
use crate::runtime::ContainerInfo;

/// Everything the status is made of.
pub struct Observed<'a> {
    pub pod: &'a Pod,
    /// The pod's containers in Docker, every attempt.
    pub containers: &'a [ContainerInfo],
    /// What the probes found, by container ID (only running instances have one).
    pub probes: &'a HashMap<String, ProbeState>,
    pub memo: &'a HashMap<String, ContainerMemo>,
    /// The node's address (`hostIP`).
    pub host_ip: &'a str,
    /// The running sandbox's address: the pod IP (`None`: no sandbox, each
    /// container has its own, for pods from before sandboxes).
    pub sandbox_ip: Option<&'a str>,
    pub start_time: &'a Time,
    /// The monotonic clock the memo's gates use.
    pub now: Instant,
    /// Wall time, for conditions' `lastTransitionTime`.
    pub wall: jiff::Timestamp,
}

/// What one container's status says about the pod.
#[derive(Default)]
struct Seen {
    ready: bool,
    running: bool,
    started: bool,
    /// Ended and not to be restarted: its exit code.
    terminal_exit: Option<i64>,
    ip: Option<String>,
}

/// The status of container `c` under `policy`.
fn container_status(o: &Observed, c: &Container, policy: RestartPolicy) -> (ContainerStatus, Seen) {
    let pod_name = o.pod.metadata.name.as_deref().unwrap_or("");
    let attempts = plan::attempts(o.containers, &c.name);
    let latest = attempts.last().copied();
    let previous = attempts.len().checked_sub(2).map(|i| attempts[i]);
    let memo = o.memo.get(&c.name);
    let image = c.image.clone().unwrap_or_default();
    let mut seen = Seen::default();
    let mut st = ContainerStatus {
        name: c.name.clone(),
        image: image.clone(),
        image_id: String::new(),
        restart_count: 0,
        ready: false,
        started: Some(false),
        ..Default::default()
    };
    // A removed container shows as one being created: the memo's last
    // attempt does not matter here.
    match Phase::of(latest, None, policy) {
        Phase::Waiting | Phase::Removed { .. } => {
            st.state = Some(waiting(image_waiting(memo, &image, o.now)));
        }
        Phase::Created(info) => {
            observed(&mut st, info);
            st.state = Some(waiting(("ContainerCreating".into(), String::new())));
        }
        Phase::Running(info) => {
            observed(&mut st, info);
            seen.running = true;
            st.state = Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: docker_time(info.state.started_at.as_deref()),
                }),
                ..Default::default()
            });
            let probes = probes_of(c, info, o.probes);
            st.ready = probes.ready && probes.started;
            st.started = Some(probes.started);
            seen.ready = st.ready;
            seen.started = true;
            seen.ip = info.ip.clone();
        }
        Phase::Terminated { info, restart } => {
            observed(&mut st, info);
            seen.started = true;
            let ended = ContainerState {
                terminated: Some(terminated_of(info)),
                ..Default::default()
            };
            let waiting_for = memo.map(|m| m.restart.remaining(o.now)).unwrap_or_default();
            if restart && waiting_for.is_zero() {
                // Restarting right now: show how it ended (`Error`) meanwhile.
                st.state = Some(ended);
            } else if restart {
                st.state = Some(waiting((
                    "CrashLoopBackOff".into(),
                    format!(
                        "back-off {} restarting failed container={} pod={pod_name}",
                        human(waiting_for),
                        c.name
                    ),
                )));
                st.last_state = Some(ended);
            } else {
                seen.terminal_exit = Some(info.state.exit_code.unwrap_or(-1));
                st.state = Some(ended);
            }
        }
    }
    if st.last_state.is_none()
        && let Some(prev) = previous
        && !prev.state.running
    {
        st.last_state = Some(ContainerState {
            terminated: Some(terminated_of(prev)),
            ..Default::default()
        });
    }
    if st.last_state.is_none() {
        st.last_state = Some(ContainerState::default());
    }
    (st, seen)
}

/// The pod's status.
pub fn pod_status(o: &Observed) -> PodStatus {
    let spec = o.pod.spec.clone().unwrap_or_default();
    let policy = RestartPolicy::of(&spec);
    let init_policy = match policy {
        RestartPolicy::Never => RestartPolicy::Never,
        _ => RestartPolicy::OnFailure,
    };
    let initialized = init::initialized(&spec, o.containers);
    let mut init_statuses = Vec::new();
    let mut init_failed = false;
    for c in spec.init_containers.iter().flatten() {
        let sidecar = init::is_sidecar(c);
        let p = if sidecar {
            RestartPolicy::Always
        } else {
            init_policy
        };
        let (mut st, seen) = container_status(o, c, p);
        if !sidecar {
            // An init container is never "ready" or "started" the way app
            // containers are; the kubelet reports ready once it succeeded.
            st.ready = seen.terminal_exit == Some(0);
            st.started = Some(seen.running);
        }
        if !sidecar && matches!(seen.terminal_exit, Some(code) if code != 0) {
            init_failed = true;
        }
        init_statuses.push(st);
    }
    let mut statuses = Vec::new();
    let mut all_ready = true;
    let mut any_running = false;
    let mut all_started = true;
    let mut terminal_exits: Vec<i64> = Vec::new();
    let mut pod_ip: Option<String> = o.sandbox_ip.map(str::to_string);
    for c in &spec.containers {
        let (mut st, seen) = container_status(o, c, policy);
        if !initialized
            && st
                .state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref())
                == Some("ContainerCreating")
        {
            st.state = Some(waiting(("PodInitializing".into(), String::new())));
        }
        all_ready &= seen.ready;
        any_running |= seen.running;
        all_started &= seen.started;
        if let Some(code) = seen.terminal_exit {
            terminal_exits.push(code);
        }
        if pod_ip.is_none() {
            pod_ip = seen.ip;
        }
        statuses.push(st);
    }
    let total = spec.containers.len();
    let phase = if init_failed && policy == RestartPolicy::Never {
        "Failed"
    } else if !initialized {
        "Pending"
    } else if terminal_exits.len() == total && total > 0 {
        if terminal_exits.iter().all(|e| *e == 0) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if any_running || (all_started && (!terminal_exits.is_empty() || total == 0)) {
        "Running"
    } else {
        "Pending"
    };
    let now = Time(seconds(o.wall));
    let ready = all_ready && any_running && phase == "Running";
    let not_ready_reason = if phase == "Succeeded" || phase == "Failed" {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let cond = |kind: &str, ok: bool, reason: Option<&str>| PodCondition {
        type_: kind.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        last_transition_time: Some(now.clone()),
        reason: reason.filter(|_| !ok).map(str::to_string),
        ..Default::default()
    };
    let pod_ip = pod_ip.or_else(|| o.pod.status.as_ref().and_then(|s| s.pod_ip.clone()));
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(vec![
            cond("PodReadyToStartContainers", true, None),
            cond("Initialized", initialized, Some("ContainersNotInitialized")),
            cond("Ready", ready, Some(not_ready_reason)),
            cond("ContainersReady", ready, Some(not_ready_reason)),
            cond("PodScheduled", true, None),
        ]),
        host_ip: Some(o.host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: o.host_ip.to_string(),
        }]),
        start_time: Some(o.start_time.clone()),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        qos_class: Some(qos_class(&spec).to_string()),
        pod_ips: pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        pod_ip,
        ..Default::default()
    }
}

/// Fills in what Docker says of the container instance shown.
fn observed(st: &mut ContainerStatus, info: &ContainerInfo) {
    st.container_id = Some(format!("docker://{}", info.id));
    st.image_id = format!("docker-pullable://{}", info.image_id);
    st.restart_count = i32::try_from(info.attempt()).unwrap_or(i32::MAX);
}

/// Why a container not created yet waits: its image problem (backing off, if
/// the pull gate is closed), or being created.
fn image_waiting(memo: Option<&ContainerMemo>, image: &str, now: Instant) -> (String, String) {
    let Some(m) = memo else {
        return ("ContainerCreating".into(), String::new());
    };
    if let Some(p) = &m.config_problem {
        return ("CreateContainerConfigError".into(), p.clone());
    }
    match &m.image_problem {
        Some(p) if p.reason == "ErrImagePull" && !m.pull.ready(now) => (
            "ImagePullBackOff".to_string(),
            format!("Back-off pulling image \"{image}\": {}", p.message),
        ),
        Some(p) => (p.reason.clone(), p.message.clone()),
        None => ("ContainerCreating".into(), String::new()),
    }
}

fn waiting((reason, message): (String, String)) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason),
            message: (!message.is_empty()).then_some(message),
        }),
        ..Default::default()
    }
}

/// What the probes of this running instance found; a container without probes
/// is started and ready, one whose probes have not reported yet neither.
fn probes_of(
    c: &Container,
    info: &ContainerInfo,
    probes: &HashMap<String, ProbeState>,
) -> ProbeState {
    if !probe::has_probes(c) {
        return ProbeState {
            started: true,
            ready: true,
            kill: None,
        };
    }
    probes.get(&info.id).cloned().unwrap_or_default()
}

/// How an attempt ended.
pub fn terminated_of(info: &ContainerInfo) -> ContainerStateTerminated {
    let exit = info.state.exit_code.unwrap_or(-1);
    let reason = if info.state.oom_killed {
        "OOMKilled"
    } else if exit == 0 {
        "Completed"
    } else {
        "Error"
    };
    ContainerStateTerminated {
        exit_code: i32::try_from(exit).unwrap_or(-1),
        reason: Some(reason.to_string()),
        started_at: docker_time(info.state.started_at.as_deref()),
        finished_at: docker_time(info.state.finished_at.as_deref()),
        container_id: Some(format!("docker://{}", info.id)),
        ..Default::default()
    }
}

/// Docker's RFC 3339 with nanoseconds → Kubernetes' seconds; Docker's zero time → none.
pub fn docker_time(t: Option<&str>) -> Option<Time> {
    match t.and_then(|t| t.parse::<jiff::Timestamp>().ok()) {
        Some(ts) if ts.as_second() > 0 => Some(Time(seconds(ts))),
        _ => None,
    }
}

/// `ts` cut to whole seconds, as Kubernetes writes times (so a status read back
/// compares equal to the one written).
pub fn seconds(ts: jiff::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_second(ts.as_second()).unwrap_or(ts)
}

fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{}ms", d.as_millis())
    } else if s < 60.0 {
        format!("{}s", s.ceil() as u64)
    } else {
        format!("{}m{}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

pub fn qos_class(spec: &PodSpec) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for c in &spec.containers {
        let r = c.resources.clone().unwrap_or_default();
        let limits = r.limits.unwrap_or_default();
        let requests = r.requests.unwrap_or_default();
        if !limits.is_empty() || !requests.is_empty() {
            any = true;
        }
        for res in ["cpu", "memory"] {
            match (limits.get(res), requests.get(res)) {
                (Some(l), Some(q)) if l == q => {}
                (Some(_), None) => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Keeps each condition's `lastTransitionTime` from the stored status when the
/// condition did not flip.
pub fn carry_transition_times(new: &mut PodStatus, old: &PodStatus) {
    let (Some(new_conds), Some(old_conds)) = (new.conditions.as_mut(), old.conditions.as_ref())
    else {
        return;
    };
    for c in new_conds.iter_mut() {
        if let Some(prev) = old_conds.iter().find(|o| o.type_ == c.type_)
            && prev.status == c.status
        {
            c.last_transition_time = prev.last_transition_time.clone();
        }
    }
}

/// Whether `new` says nothing `old` does not (conditions compared in any order).
pub fn unchanged(old: &PodStatus, new: &PodStatus) -> bool {
    fn sorted(s: &PodStatus) -> PodStatus {
        let mut s = s.clone();
        if let Some(conds) = s.conditions.as_mut() {
            conds.sort_by(|a, b| a.type_.cmp(&b.type_));
        }
        s
    }
    sorted(old) == sorted(new)
}

#[cfg(test)]
mod tests;
