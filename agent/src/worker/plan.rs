//! What to do next with one container of a pod: where it is in its life
//! ([`Phase`], read from Docker and the worker's memo), and one `match` on that
//! deciding the next [`Step`]. Pure: no I/O here; [`super::act`] carries the
//! steps out.

use std::time::Duration;

use k8s_openapi::api::core::v1::PodSpec;
use tokio::time::Instant;

use super::gate::RetryGate;
use crate::runtime::{ContainerInfo, LABEL_CONTAINER_NAME};

/// A container that ran this long has its crash back-off reset.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);

/// The pod's `restartPolicy` (`Always` when unset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn of(spec: &PodSpec) -> RestartPolicy {
        match spec.restart_policy.as_deref() {
            Some("Never") => RestartPolicy::Never,
            Some("OnFailure") => RestartPolicy::OnFailure,
            _ => RestartPolicy::Always,
        }
    }

    /// Whether a container that exited with `exit_code` is started again.
    pub fn restarts(self, exit_code: i64) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// Why the container's image is not there: a kubelet's reason
/// (`ErrImagePull`, `ErrImageNeverPull`) and Docker's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageProblem {
    pub reason: String,
    pub message: String,
}

/// What the worker remembers about one container between syncs.
#[derive(Clone, Debug)]
pub struct ContainerMemo {
    pub restart: RetryGate,
    pub pull: RetryGate,
    /// The last image problem, until an image is there.
    pub image_problem: Option<ImageProblem>,
    /// Why the container cannot be made yet (a missing ConfigMap, Secret or
    /// key): the kubelet's `CreateContainerConfigError` message.
    pub config_problem: Option<String>,
    /// The exit of the last attempt already counted for back-off.
    pub counted_exit: Option<String>,
    /// The newest attempt seen, so a container removed from outside is recreated
    /// as the next attempt (its restart counted) rather than as attempt 0.
    pub last_attempt: Option<u32>,
}

impl ContainerMemo {
    pub fn new(initial: Duration, max: Duration) -> ContainerMemo {
        ContainerMemo {
            restart: RetryGate::new(initial, max),
            pull: RetryGate::new(initial, max),
            image_problem: None,
            config_problem: None,
            counted_exit: None,
            last_attempt: None,
        }
    }

    /// Remembers the newest attempt Docker shows; returns the one seen before.
    pub fn saw(&mut self, latest: Option<&ContainerInfo>) -> Option<u32> {
        let before = self.last_attempt;
        if let Some(l) = latest {
            self.last_attempt = Some(before.map_or(l.attempt(), |a| a.max(l.attempt())));
        }
        before
    }

    /// The attempt number the next container gets.
    pub fn next_attempt(&self) -> u32 {
        self.last_attempt.map(|a| a + 1).unwrap_or(0)
    }
}

/// The attempts of the container `name` in Docker, oldest first.
pub fn attempts<'a>(existing: &'a [ContainerInfo], name: &str) -> Vec<&'a ContainerInfo> {
    let mut attempts: Vec<&ContainerInfo> = existing
        .iter()
        .filter(|i| i.labels.get(LABEL_CONTAINER_NAME).map(String::as_str) == Some(name))
        .collect();
    attempts.sort_by_key(|i| i.attempt());
    attempts
}

/// Where one container of the pod is in its life.
#[derive(Clone, Copy, Debug)]
pub enum Phase<'a> {
    /// Not created yet.
    Waiting,
    /// Removed from outside (`docker rm -f`) after attempt `last` was seen.
    Removed {
        last: u32,
    },
    /// Created but never started (the agent stopped in between).
    Created(&'a ContainerInfo),
    Running(&'a ContainerInfo),
    /// It ended; `restart`: the restart policy starts it again.
    Terminated {
        info: &'a ContainerInfo,
        restart: bool,
    },
}

impl<'a> Phase<'a> {
    /// The phase of a container whose newest attempt in Docker is `latest`.
    pub fn of(
        latest: Option<&'a ContainerInfo>,
        seen_before: Option<u32>,
        policy: RestartPolicy,
    ) -> Phase<'a> {
        match latest {
            None => match seen_before {
                Some(last) => Phase::Removed { last },
                None => Phase::Waiting,
            },
            Some(info) if info.state.running => Phase::Running(info),
            Some(info) if info.state.status == "created" => Phase::Created(info),
            Some(info) => Phase::Terminated {
                info,
                restart: policy.restarts(info.state.exit_code.unwrap_or(-1)),
            },
        }
    }
}

/// What the worker does next with a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing now; look again by this time at the latest (`None`: at the next
    /// resync).
    Wait(Option<Instant>),
    /// Make sure of the image, then create and start the next attempt.
    Create,
    /// Start the container that was created but never started.
    StartCreated(String),
    /// It runs: keep its probes going and act on what they found.
    Supervise,
}

/// A [`Step`], and whether a back-off began (a `BackOff` warning to record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub step: Step,
    pub backing_off: bool,
}

/// The next step for a container in `phase`, counting a new exit (or removal)
/// against its restart back-off in `memo`. `now` is the monotonic clock for the
/// gates, `wall` the clock Docker's times are read against.
pub fn decide(
    phase: &Phase,
    memo: &mut ContainerMemo,
    now: Instant,
    wall: jiff::Timestamp,
) -> Decision {
    let mut backing_off = false;
    let step = match *phase {
        Phase::Waiting => pull_gate(memo, now),
        Phase::Removed { last } => {
            let marker = format!("removed:{last}");
            if memo.counted_exit.as_deref() != Some(&marker) {
                memo.counted_exit = Some(marker);
                memo.restart.fail(now);
            }
            restart_gate(memo, now)
        }
        Phase::Created(info) => Step::StartCreated(info.id.clone()),
        Phase::Running(info) => {
            if ran_for(info, wall) >= BACKOFF_RESET_AFTER {
                memo.restart.reset();
            }
            Step::Supervise
        }
        Phase::Terminated { restart: false, .. } => Step::Wait(None),
        Phase::Terminated {
            info,
            restart: true,
        } => {
            let finished = info.state.finished_at.as_deref().unwrap_or_default();
            let marker = format!("{}:{finished}", info.id);
            if memo.counted_exit.as_deref() != Some(&marker) {
                memo.counted_exit = Some(marker);
                if ran_for(info, wall) >= BACKOFF_RESET_AFTER {
                    memo.restart.reset();
                }
                backing_off = !memo.restart.fail(now).is_zero();
            }
            restart_gate(memo, now)
        }
    };
    Decision { step, backing_off }
}

/// Create once the restart back-off allows (then the pull back-off).
fn restart_gate(memo: &ContainerMemo, now: Instant) -> Step {
    if memo.restart.ready(now) {
        pull_gate(memo, now)
    } else {
        Step::Wait(memo.restart.not_before)
    }
}

fn pull_gate(memo: &ContainerMemo, now: Instant) -> Step {
    if memo.pull.ready(now) {
        Step::Create
    } else {
        Step::Wait(memo.pull.not_before)
    }
}

/// How long the container ran (until now, if it still runs), by Docker's times.
pub fn ran_for(info: &ContainerInfo, wall: jiff::Timestamp) -> Duration {
    let Some(started) = info
        .state
        .started_at
        .as_deref()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
    else {
        return Duration::ZERO;
    };
    let end = info
        .state
        .finished_at
        .as_deref()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .filter(|f| *f > started)
        .unwrap_or(wall);
    Duration::from_secs(end.duration_since(started).as_secs().max(0) as u64)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::runtime::{ContainerState, LABEL_ATTEMPT};

    fn exited(id: &str, attempt: u32, code: i64, finished: &str) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            labels: BTreeMap::from([
                (LABEL_CONTAINER_NAME.to_string(), "app".to_string()),
                (LABEL_ATTEMPT.to_string(), attempt.to_string()),
            ]),
            state: ContainerState {
                status: "exited".into(),
                exit_code: Some(code),
                started_at: Some("2026-01-01T00:00:00Z".into()),
                finished_at: Some(finished.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn memo() -> ContainerMemo {
        ContainerMemo::new(Duration::from_secs(1), Duration::from_secs(8))
    }

    #[test]
    fn each_policy_restarts_the_exits_it_should() {
        let cases = [
            (RestartPolicy::Always, 0, true),
            (RestartPolicy::Always, 1, true),
            (RestartPolicy::OnFailure, 0, false),
            (RestartPolicy::OnFailure, 1, true),
            (RestartPolicy::Never, 0, false),
            (RestartPolicy::Never, 1, false),
        ];
        for (policy, code, restarts) in cases {
            assert_eq!(policy.restarts(code), restarts, "{policy:?} exit {code}");
        }
        let spec = PodSpec {
            restart_policy: Some("OnFailure".into()),
            ..Default::default()
        };
        assert_eq!(RestartPolicy::of(&spec), RestartPolicy::OnFailure);
        assert_eq!(
            RestartPolicy::of(&PodSpec::default()),
            RestartPolicy::Always
        );
    }

    #[test]
    fn the_first_crash_restarts_at_once_and_the_second_backs_off() {
        let (now, wall) = (Instant::now(), jiff::Timestamp::now());
        let mut m = memo();
        let first = exited("a", 0, 1, "2026-01-01T00:00:01Z");
        let phase = Phase::of(Some(&first), None, RestartPolicy::Always);
        let d = decide(&phase, &mut m, now, wall);
        assert_eq!((d.step, d.backing_off), (Step::Create, false));
        // The same exit, seen again, is not counted twice.
        assert_eq!(decide(&phase, &mut m, now, wall).step, Step::Create);

        let second = exited("b", 1, 1, "2026-01-01T00:00:02Z");
        let phase = Phase::of(Some(&second), Some(0), RestartPolicy::Always);
        let d = decide(&phase, &mut m, now, wall);
        assert_eq!(d.step, Step::Wait(Some(now + Duration::from_secs(1))));
        assert!(d.backing_off);
        let later = now + Duration::from_secs(1);
        assert_eq!(decide(&phase, &mut m, later, wall).step, Step::Create);
    }

    #[test]
    fn a_finished_container_that_is_not_restarted_waits() {
        let done = exited("a", 0, 0, "2026-01-01T00:00:01Z");
        let phase = Phase::of(Some(&done), None, RestartPolicy::OnFailure);
        assert!(matches!(phase, Phase::Terminated { restart: false, .. }));
        let d = decide(&phase, &mut memo(), Instant::now(), jiff::Timestamp::now());
        assert_eq!(d.step, Step::Wait(None));
    }

    #[test]
    fn a_container_removed_from_outside_is_recreated_as_the_next_attempt() {
        let mut m = memo();
        let seen = exited("a", 3, 0, "2026-01-01T00:00:01Z");
        m.saw(Some(&seen));
        let before = m.saw(None);
        assert_eq!(m.next_attempt(), 4);
        let phase = Phase::of(None, before, RestartPolicy::Always);
        assert!(matches!(phase, Phase::Removed { last: 3 }));
        let d = decide(&phase, &mut m, Instant::now(), jiff::Timestamp::now());
        assert_eq!(d.step, Step::Create, "the first failure retries at once");
    }

    #[test]
    fn an_image_pull_back_off_holds_the_creation() {
        let now = Instant::now();
        let mut m = memo();
        m.pull.fail(now);
        m.pull.fail(now);
        let d = decide(&Phase::Waiting, &mut m, now, jiff::Timestamp::now());
        assert_eq!(d.step, Step::Wait(Some(now + Duration::from_secs(1))));
    }

    #[test]
    fn the_newest_attempt_comes_last() {
        let existing = vec![
            exited("b", 2, 0, "x"),
            exited("a", 0, 0, "x"),
            exited("c", 10, 0, "x"),
        ];
        let ids: Vec<&str> = attempts(&existing, "app")
            .iter()
            .map(|i| i.id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert!(attempts(&existing, "other").is_empty());
    }
}
