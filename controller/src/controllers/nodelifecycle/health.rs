//! What the node lifecycle controller knows of one node between looks: the
//! heartbeats it last saw, when it heard them by its own clock, and the verdict
//! of each check (one late heartbeat is not a lost node).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition};
use tokio::time::Instant;

/// How many consecutive checks must find a node's heartbeat too old.
pub const STALE_CHECKS: u32 = 2;

/// The node's Ready condition, if it posted one.
pub fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// What a node last published about itself: any change is a sign of life.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// The Lease's `spec.renewTime`.
    pub lease: Option<String>,
    /// The Ready condition's `lastHeartbeatTime`.
    pub status: Option<String>,
}

impl Heartbeat {
    pub fn of(node: Option<&Node>, lease: Option<&Lease>) -> Heartbeat {
        Heartbeat {
            lease: lease
                .and_then(|l| l.spec.as_ref())
                .and_then(|s| s.renew_time.as_ref())
                .map(|t| t.0.to_string()),
            status: node
                .and_then(ready_condition)
                .and_then(|c| c.last_heartbeat_time.as_ref())
                .map(|t| t.0.to_string()),
        }
    }
}

/// One check's finding about a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Heard from within the grace period.
    Alive,
    /// Not heard from for longer than the grace period on this check only: one slow
    /// heartbeat is not a lost node.
    Late,
    /// Not heard from on [`STALE_CHECKS`] consecutive checks: the node is lost.
    Lost,
}

/// What the controller knows of one node between checks.
#[derive(Clone, Debug)]
pub struct Health {
    heartbeat: Heartbeat,
    /// When this controller saw `heartbeat` change (or first saw the node).
    heard_at: Instant,
    /// Consecutive checks that found the heartbeat older than the grace period.
    stale_checks: u32,
    /// When the node was found lost (this episode); evictions count from here.
    lost_since: Option<Instant>,
    /// Whether the current loss has had its first eviction pass.
    evicted: bool,
    /// The Ready condition's status at the last check (`None`: not seen yet).
    ready: Option<String>,
}

impl Health {
    /// A node first seen at `now` counts as just heard from.
    pub fn new(heartbeat: Heartbeat, now: Instant) -> Health {
        Health {
            heartbeat,
            heard_at: now,
            stale_checks: 0,
            lost_since: None,
            evicted: false,
            ready: None,
        }
    }

    /// Takes in what the node publishes at `now`: a value that moved is a heartbeat
    /// heard now (a value that vanished is not). Returns whether it was one.
    pub fn observe(&mut self, heartbeat: &Heartbeat, now: Instant) -> bool {
        let mut heard = false;
        if heartbeat.lease.is_some() && heartbeat.lease != self.heartbeat.lease {
            self.heartbeat.lease.clone_from(&heartbeat.lease);
            heard = true;
        }
        if heartbeat.status.is_some() && heartbeat.status != self.heartbeat.status {
            self.heartbeat.status.clone_from(&heartbeat.status);
            heard = true;
        }
        if heard {
            self.heard_at = now;
        }
        heard
    }

    /// When the node's silence outlasts the grace period, if nothing is heard.
    pub fn grace_ends(&self, grace: Duration) -> Instant {
        self.heard_at + grace
    }

    /// How long the node has been silent at `now`.
    pub fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.heard_at)
    }

    pub fn evicted(&self) -> bool {
        self.evicted
    }

    pub fn set_evicted(&mut self) {
        self.evicted = true;
    }

    pub fn set_ready(&mut self, status: &str) {
        self.ready = Some(status.to_string());
    }

    /// One check at `now`: how long since the node was last heard from.
    pub fn check(&mut self, now: Instant, grace: Duration) -> Verdict {
        if now.saturating_duration_since(self.heard_at) > grace {
            self.stale_checks = self.stale_checks.saturating_add(1);
        } else {
            self.stale_checks = 0;
        }
        if self.stale_checks >= STALE_CHECKS {
            self.lost_since.get_or_insert(now);
            Verdict::Lost
        } else {
            self.lost_since = None;
            self.evicted = false;
            if self.stale_checks == 0 {
                Verdict::Alive
            } else {
                Verdict::Late
            }
        }
    }

    /// When the pods of a lost node are to be evicted first (`None`: not lost).
    pub fn eviction_due(&self, delay: Duration) -> Option<Instant> {
        self.lost_since.map(|since| since + delay)
    }

    /// Remembers the Ready status seen now; true when the node just became Ready
    /// again after having been seen not Ready.
    pub fn ready_seen(&mut self, status: Option<&str>) -> bool {
        let came_back = status == Some("True")
            && self
                .ready
                .as_deref()
                .is_some_and(|previous| previous != "True");
        self.ready = status.map(str::to_string);
        came_back
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::nodelifecycle::CHECK_EVERY;

    const GRACE: Duration = Duration::from_secs(3);

    fn beat(renew: &str) -> Heartbeat {
        Heartbeat {
            lease: Some(renew.to_string()),
            status: Some("2025-01-01T00:00:00Z".to_string()),
        }
    }

    /// Observes `heartbeat` at `at`, then checks.
    fn step(health: &mut Health, heartbeat: Heartbeat, at: Instant) -> Verdict {
        health.observe(&heartbeat, at);
        health.check(at, GRACE)
    }

    /// Checks every [`CHECK_EVERY`] from `start` for `duration`, the heartbeat
    /// changing at the given offsets; returns the verdicts.
    fn checks(beats_at: &[Duration], duration: Duration) -> Vec<(Duration, Verdict)> {
        let start = Instant::now();
        let mut health = Health::new(beat("0"), start);
        let mut out = Vec::new();
        let mut t = Duration::ZERO;
        while t <= duration {
            let n = beats_at.iter().filter(|b| **b <= t).count();
            out.push((t, step(&mut health, beat(&n.to_string()), start + t)));
            t += CHECK_EVERY;
        }
        out
    }

    fn first_lost(verdicts: &[(Duration, Verdict)]) -> Option<Duration> {
        verdicts
            .iter()
            .find(|(_, v)| *v == Verdict::Lost)
            .map(|(t, _)| *t)
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_node_beating_every_second_stays_alive() {
        let beats: Vec<Duration> = (1..20).map(|s| secs(f64::from(s))).collect();
        let verdicts = checks(&beats, secs(20.0));
        assert!(verdicts.iter().all(|(_, v)| *v == Verdict::Alive));
    }

    #[test]
    fn a_silent_node_is_lost_after_the_grace_and_a_second_stale_check() {
        let verdicts = checks(&[], secs(6.0));
        // Older than 3 s first at 3.5 s (late), still at 4 s: lost.
        assert_eq!(
            verdicts.iter().find(|(_, v)| *v != Verdict::Alive),
            Some(&(secs(3.5), Verdict::Late))
        );
        assert_eq!(first_lost(&verdicts), Some(secs(4.0)));
        assert!(
            verdicts
                .iter()
                .filter(|(t, _)| *t >= secs(4.0))
                .all(|(_, v)| *v == Verdict::Lost)
        );
    }

    #[test]
    fn one_late_heartbeat_does_not_flap_the_node() {
        // Heard at 1 s, then nothing until 4.7 s: the check at 4.5 s finds it late,
        // the one at 5 s sees the new beat.
        let verdicts = checks(&[secs(1.0), secs(4.7), secs(5.7), secs(6.7)], secs(8.0));
        assert_eq!(
            verdicts
                .iter()
                .filter(|(_, v)| *v == Verdict::Late)
                .map(|(t, _)| *t)
                .collect::<Vec<_>>(),
            vec![secs(4.5)]
        );
        assert_eq!(first_lost(&verdicts), None);
    }

    #[test]
    fn a_node_that_comes_back_is_alive_at_once_and_lost_again_only_after_a_new_grace() {
        let verdicts = checks(&[secs(6.0)], secs(12.0));
        assert_eq!(first_lost(&verdicts), Some(secs(4.0)));
        let after: Vec<_> = verdicts.iter().filter(|(t, _)| *t >= secs(6.0)).collect();
        assert_eq!(after[0].1, Verdict::Alive);
        assert_eq!(
            after
                .iter()
                .find(|(_, v)| *v == Verdict::Lost)
                .map(|(t, _)| *t),
            Some(secs(10.0))
        );
    }

    #[test]
    fn either_heartbeat_keeps_a_node_alive() {
        let start = Instant::now();
        let mut health = Health::new(Heartbeat::default(), start);
        for i in 1..=10u32 {
            let hb = Heartbeat {
                lease: None,
                status: Some(format!("2025-01-01T00:00:{i:02}Z")),
            };
            let v = step(&mut health, hb, start + secs(f64::from(i)));
            assert_eq!(v, Verdict::Alive);
        }
    }

    #[test]
    fn a_heartbeat_timestamp_from_a_skewed_clock_still_counts_when_it_changes() {
        // The agent's clock is an hour behind: what matters is that the value moved.
        let start = Instant::now();
        let mut health = Health::new(beat("2020-01-01T00:00:00.000000Z"), start);
        let v = step(
            &mut health,
            beat("2020-01-01T00:00:01.000000Z"),
            start + secs(2.5),
        );
        assert_eq!(v, Verdict::Alive);
        let v = step(
            &mut health,
            beat("2020-01-01T00:00:01.000000Z"),
            start + secs(6.0),
        );
        assert_eq!(v, Verdict::Late);
    }

    #[test]
    fn after_a_restart_nothing_is_lost_within_the_first_grace() {
        // Heartbeats far in the past (the controller was down): first seen now.
        let start = Instant::now();
        let mut health = Health::new(beat("2000-01-01T00:00:00Z"), start);
        let mut t = Duration::ZERO;
        while t <= GRACE {
            let v = step(&mut health, beat("2000-01-01T00:00:00Z"), start + t);
            assert_eq!(v, Verdict::Alive, "at {t:?}");
            assert_eq!(health.eviction_due(Duration::from_secs(1)), None);
            t += CHECK_EVERY;
        }
    }

    #[test]
    fn eviction_is_due_a_delay_after_the_node_was_found_lost() {
        let start = Instant::now();
        let mut health = Health::new(beat("a"), start);
        let delay = Duration::from_secs(1);
        let mut t = Duration::ZERO;
        while step(&mut health, beat("a"), start + t) != Verdict::Lost {
            assert_eq!(health.eviction_due(delay), None);
            t += CHECK_EVERY;
        }
        assert_eq!(health.eviction_due(delay), Some(start + t + delay));
        // Still lost later: the due time does not move.
        step(&mut health, beat("a"), start + t + CHECK_EVERY);
        assert_eq!(health.eviction_due(delay), Some(start + t + delay));
        // Back: nothing is due.
        step(&mut health, beat("b"), start + t + 2 * CHECK_EVERY);
        assert_eq!(health.eviction_due(delay), None);
    }

    #[test]
    fn a_heartbeat_heard_between_checks_counts_from_when_it_was_heard() {
        // The lease watch hears a renewal at 0.2 s; the checks run on the half second.
        let start = Instant::now();
        let mut health = Health::new(beat("0"), start);
        health.observe(&beat("1"), start + secs(0.2));
        assert_eq!(health.check(start + secs(3.0), GRACE), Verdict::Alive);
        assert_eq!(health.check(start + secs(3.5), GRACE), Verdict::Late);
        assert_eq!(health.check(start + secs(4.0), GRACE), Verdict::Lost);
    }

    #[test]
    fn a_vanished_lease_is_no_heartbeat() {
        let start = Instant::now();
        let mut health = Health::new(beat("1"), start);
        let gone = Heartbeat {
            lease: None,
            status: beat("1").status,
        };
        assert_eq!(
            step(&mut health, gone.clone(), start + secs(3.5)),
            Verdict::Late
        );
        assert_eq!(step(&mut health, gone, start + secs(4.0)), Verdict::Lost);
    }

    #[test]
    fn ready_again_is_reported_only_after_having_been_seen_not_ready() {
        let mut health = Health::new(Heartbeat::default(), Instant::now());
        assert!(!health.ready_seen(Some("True")), "first sight is no change");
        assert!(!health.ready_seen(Some("True")));
        assert!(!health.ready_seen(Some("Unknown")));
        assert!(health.ready_seen(Some("True")));
        assert!(!health.ready_seen(Some("True")));
    }
}
