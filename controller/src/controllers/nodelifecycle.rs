//! The node lifecycle controller: tells a live node from a lost one and moves the
//! work off a lost one, as Kubernetes' node lifecycle controller and its taint-based
//! eviction do.
//!
//! It hears each node's heartbeats: its Lease in `kube-node-lease` (`spec.renewTime`,
//! renewed by the agent every second) and its Ready condition's `lastHeartbeatTime`
//! (posted every few seconds), both watched so a heartbeat is heard as it is
//! written, and both read again on every check, every [`CHECK_EVERY`]. A heartbeat counts
//! when it *changes*, timed by this controller's own clock, never by the timestamp
//! the agent wrote, so a skewed clock on a node cannot make it look dead or alive.
//!
//! A node not heard from for longer than `node_grace` on two consecutive checks (one
//! late beat under load does not flap it) gets `Ready=Unknown` and a `NodeNotReady`
//! event; `eviction_delay` later its pods are deleted outright (its agent cannot stop
//! them, so nobody would finish a graceful deletion) and their ReplicaSets replace
//! them on the nodes that are left. The scheduler already keeps new pods off a node
//! that is not Ready. When the agent comes back it posts `Ready=True` itself and
//! fences the containers whose pods were moved; this controller records `NodeReady`.
//!
//! At start every node counts as just heard from: heartbeats may look old only
//! because the controller was down, so nothing is evicted in the first `node_grace`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Value, json};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tugboat_api::resource::{LEASES, NODES, PODS, ResourceInfo};
use tugboat_api::{ApiError, meta};
use tugboat_runtime::{Event, WatchParams, watcher};

use crate::Config;
use crate::events::{self, EventType, Recorder};
use crate::registry::{DeleteOptions, Registry, Subresource};

/// How often heartbeats are checked.
pub const CHECK_EVERY: Duration = Duration::from_millis(500);
/// How many consecutive checks must find a node's heartbeat too old.
pub const STALE_CHECKS: u32 = 2;
/// How many pods of lost nodes are deleted at once.
const EVICT_CONCURRENCY: usize = 16;
/// Where agents keep their Leases, as kubelets do.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The component named in this controller's events (Kubernetes' own name).
const COMPONENT: &str = "node-controller";

/// The two knobs, from the controller's [`Config`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// A node not heard from for longer than this is NotReady.
    pub node_grace: Duration,
    /// How long a node is NotReady before its pods are evicted.
    pub eviction_delay: Duration,
}

impl From<&Config> for Settings {
    fn from(config: &Config) -> Self {
        Settings {
            node_grace: config.node_grace,
            eviction_delay: config.eviction_delay,
        }
    }
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
    pub fn of(node: &Value, lease: Option<&Value>) -> Heartbeat {
        Heartbeat {
            lease: lease
                .and_then(|l| l.pointer("/spec/renewTime"))
                .and_then(Value::as_str)
                .map(str::to_string),
            status: ready_condition(node)
                .and_then(|c| c.get("lastHeartbeatTime"))
                .and_then(Value::as_str)
                .map(str::to_string),
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
    /// heard now (a value that vanished is not).
    pub fn observe(&mut self, heartbeat: &Heartbeat, now: Instant) {
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

/// Runs until `shutdown`.
pub async fn run(registry: Arc<Registry>, settings: Settings, shutdown: CancellationToken) {
    let mut controller = NodeLifecycle {
        recorder: events::recorder(registry.clone(), COMPONENT),
        registry,
        settings,
        nodes: HashMap::new(),
    };
    tracing::debug!(?settings, "node lifecycle controller starting");
    let mut leases = Writes::new(controller.registry.clone(), &LEASES, Some(LEASE_NAMESPACE));
    let mut nodes = Writes::new(controller.registry.clone(), &NODES, None);
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // A first eviction goes out when it is due, not at the next check.
        let first_eviction = controller.next_first_eviction();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = controller.check(Instant::now()).await {
                    tracing::warn!(error = %e, "node health check failed; retrying at the next check");
                }
            }
            _ = sleep_until(first_eviction) => {}
            lease = leases.next() => {
                controller.heard(&Heartbeat::of(&Value::Null, Some(&lease)), &lease, Instant::now());
                continue;
            }
            node = nodes.next() => {
                controller.heard(&Heartbeat::of(&node, None), &node, Instant::now());
                continue;
            }
        }
        if let Err(e) = controller.evict_due(Instant::now()).await {
            tracing::warn!(error = %e, "evicting pods of lost nodes failed; retrying at the next check");
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => futures::future::pending().await,
    }
}

/// Node Leases (or Nodes) as they are written, so a heartbeat is heard when it
/// happens rather than at the next check. The checks list them too, so a watch that
/// is down for a while costs precision, never a false alarm.
struct Writes {
    events: BoxStream<'static, Event<Arc<Value>>>,
}

impl Writes {
    fn new(
        registry: Arc<Registry>,
        info: &'static ResourceInfo,
        namespace: Option<&'static str>,
    ) -> Self {
        let config = watcher::Config::new("node lifecycle")
            .params(WatchParams {
                namespace: namespace.map(str::to_string),
                ..Default::default()
            })
            .backoff(Duration::from_secs(1), Duration::from_secs(5));
        Writes {
            events: watcher::watch_raw(registry, info, config).boxed(),
        }
    }

    /// The next object written (or listed). Cancel-safe: the watch keeps its
    /// place when a `next` is dropped.
    async fn next(&mut self) -> Arc<Value> {
        loop {
            match self.events.next().await {
                Some(Event::InitApply(o) | Event::Apply(o)) => return o,
                Some(_) => {}
                None => futures::future::pending::<()>().await,
            }
        }
    }
}

struct NodeLifecycle {
    registry: Arc<Registry>,
    recorder: Recorder,
    settings: Settings,
    nodes: HashMap<String, Health>,
}

impl NodeLifecycle {
    fn next_first_eviction(&self) -> Option<Instant> {
        self.nodes
            .values()
            .filter(|h| !h.evicted)
            .filter_map(|h| h.eviction_due(self.settings.eviction_delay))
            .min()
    }

    /// A node's Lease or the Node itself was written: a heartbeat if it moved.
    fn heard(&mut self, heartbeat: &Heartbeat, object: &Value, now: Instant) {
        if let Some(health) = meta::name(object).and_then(|n| self.nodes.get_mut(n)) {
            health.observe(heartbeat, now);
        }
    }

    /// Reads every node's heartbeats and marks the lost ones NotReady.
    async fn check(&mut self, now: Instant) -> Result<(), ApiError> {
        let nodes = self.registry.list_all(&NODES, None).await?;
        let leases = self
            .registry
            .list_all(&LEASES, Some(LEASE_NAMESPACE))
            .await?;
        let leases: HashMap<&str, &Value> = leases
            .iter()
            .filter_map(|l| Some((meta::name(l)?, &**l)))
            .collect();
        let mut present = HashSet::new();
        for node in &nodes {
            let Some(name) = meta::name(node) else {
                continue;
            };
            present.insert(name.to_string());
            let heartbeat = Heartbeat::of(node, leases.get(name).copied());
            let health = self
                .nodes
                .entry(name.to_string())
                .or_insert_with(|| Health::new(heartbeat.clone(), now));
            let ready = ready_condition(node)
                .and_then(|c| c.get("status"))
                .and_then(Value::as_str);
            if health.ready_seen(ready) {
                tracing::info!(node = name, "node is Ready again");
                self.recorder
                    .record(
                        node,
                        EventType::Normal,
                        "NodeReady",
                        &format!("Node {name} status is now: NodeReady"),
                    )
                    .await;
            }
            health.observe(&heartbeat, now);
            let verdict = health.check(now, self.settings.node_grace);
            if verdict != Verdict::Alive {
                tracing::debug!(node = name, ?verdict, silent_for = ?now.saturating_duration_since(health.heard_at), "node heartbeat is late");
            }
            if verdict != Verdict::Lost || ready == Some("Unknown") {
                continue;
            }
            match mark_unknown(&self.registry, name, &heartbeat).await {
                Ok(false) => {}
                Ok(true) => {
                    tracing::warn!(node = name, grace = ?self.settings.node_grace, "node stopped posting its heartbeat; it is NotReady");
                    health.ready = Some("Unknown".to_string());
                    self.recorder
                        .record(
                            node,
                            EventType::Warning,
                            "NodeNotReady",
                            &format!("Node {name} status is now: NodeNotReady"),
                        )
                        .await;
                }
                Err(e) => {
                    tracing::warn!(node = name, error = %e, "cannot mark the lost node NotReady; retrying at the next check");
                }
            }
        }
        // A node deleted from the API: nothing to do but forget it.
        self.nodes.retain(|name, _| present.contains(name));
        Ok(())
    }

    /// Deletes the pods of every node lost for longer than the eviction delay.
    async fn evict_due(&mut self, now: Instant) -> Result<(), ApiError> {
        let delay = self.settings.eviction_delay;
        let lost: HashSet<String> = self
            .nodes
            .iter()
            .filter(|(_, h)| h.eviction_due(delay).is_some_and(|due| due <= now))
            .map(|(name, _)| name.clone())
            .collect();
        if lost.is_empty() {
            return Ok(());
        }
        // Whatever happens below, later passes ride on the regular checks.
        for name in &lost {
            if let Some(h) = self.nodes.get_mut(name) {
                h.evicted = true;
            }
        }
        let pods = self.registry.list_all(&PODS, None).await?;
        let victims: Vec<&Value> = pods
            .iter()
            .map(|p| &**p)
            .filter(|p| bound_node(p).is_some_and(|n| lost.contains(n)) && !has_finished(p))
            .collect();
        for chunk in victims.chunks(EVICT_CONCURRENCY) {
            let evictions: Vec<_> = chunk.iter().map(|p| self.evict(p)).collect();
            for result in futures::future::join_all(evictions).await {
                result?;
            }
        }
        Ok(())
    }

    async fn evict(&self, pod: &Value) -> Result<(), ApiError> {
        let ns = meta::namespace(pod).unwrap_or("default");
        let name = meta::name(pod).unwrap_or("");
        // Deleted at once (grace 0), as a force deletion: the node's agent is gone,
        // so nobody would finish a graceful one. The uid guards against deleting a
        // same-named pod created since the list.
        let opts = DeleteOptions {
            grace_period_seconds: Some(0),
            precondition_uid: meta::uid(pod).map(str::to_string),
            ..Default::default()
        };
        match self.registry.delete(&PODS, Some(ns), name, &opts).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() || e.is_conflict() => return Ok(()),
            Err(e) => return Err(e),
        }
        tracing::info!(pod = %format!("{ns}/{name}"), node = bound_node(pod).unwrap_or(""), "evicted a pod from a lost node");
        self.recorder
            .record(
                pod,
                EventType::Normal,
                "TaintManagerEviction",
                &eviction_message(ns, name),
            )
            .await;
        Ok(())
    }
}

/// The event message on an evicted pod, in Kubernetes' words.
pub fn eviction_message(ns: &str, name: &str) -> String {
    format!("Marking for deletion Pod {ns}/{name}")
}

fn ready_condition(node: &Value) -> Option<&Value> {
    node.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
}

fn bound_node(pod: &Value) -> Option<&str> {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
}

fn has_finished(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// Sets the node's Ready condition to Unknown, keeping its other conditions and its
/// last heartbeat time. Returns whether it wrote: not when the node posted a new
/// heartbeat since `seen` (its agent is back) or is already Unknown.
async fn mark_unknown(registry: &Registry, name: &str, seen: &Heartbeat) -> Result<bool, ApiError> {
    let result = registry
        .update_with(&NODES, None, name, Subresource::Status, |node| {
            if Heartbeat::of(node, None).status != seen.status {
                return false;
            }
            set_ready_unknown(node, &meta::now_rfc3339())
        })
        .await;
    match result {
        Ok(written) => Ok(written.is_some()),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// The edit [`mark_unknown`] makes: Ready becomes `Unknown` (added when the node
/// never posted one). False when it already was.
pub fn set_ready_unknown(node: &mut Value, now: &str) -> bool {
    if !node.get("status").is_some_and(Value::is_object) {
        node["status"] = json!({});
    }
    let status = &mut node["status"];
    if !status.get("conditions").is_some_and(Value::is_array) {
        status["conditions"] = json!([]);
    }
    let Some(conditions) = status["conditions"].as_array_mut() else {
        return false;
    };
    match conditions.iter_mut().find(|c| c["type"] == "Ready") {
        Some(c) if c["status"] == "Unknown" => false,
        Some(c) => {
            c["status"] = json!("Unknown");
            c["reason"] = json!("NodeStatusUnknown");
            c["message"] = json!("Kubelet stopped posting node status.");
            c["lastTransitionTime"] = json!(now);
            true
        }
        None => {
            conditions.push(json!({
                "type": "Ready", "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                "message": "Kubelet never posted node status.",
                "lastHeartbeatTime": now, "lastTransitionTime": now,
            }));
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn marking_unknown_keeps_the_other_conditions_and_the_last_heartbeat() {
        let mut node = json!({"status": {"conditions": [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": "True", "reason": "KubeletReady",
             "lastHeartbeatTime": "2025-01-01T00:00:00Z", "lastTransitionTime": "2024-12-31T00:00:00Z"},
        ]}});
        assert!(set_ready_unknown(&mut node, "2025-01-01T00:00:05Z"));
        assert_eq!(
            node["status"]["conditions"],
            json!([
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                 "message": "Kubelet stopped posting node status.",
                 "lastHeartbeatTime": "2025-01-01T00:00:00Z", "lastTransitionTime": "2025-01-01T00:00:05Z"},
            ])
        );
        assert!(!set_ready_unknown(&mut node, "2025-01-01T00:00:06Z"));
    }

    #[test]
    fn a_node_that_never_posted_status_gets_an_unknown_ready_condition() {
        let mut node = json!({"metadata": {"name": "n"}, "spec": {}});
        assert!(set_ready_unknown(&mut node, "2025-01-01T00:00:05Z"));
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
