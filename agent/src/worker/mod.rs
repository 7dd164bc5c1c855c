//! One pod's worker: makes Docker match the pod and reports what it sees. Each
//! sync is level-triggered: it reads the pod's containers from Docker by label,
//! creates what is missing (pulling the image per `imagePullPolicy`), restarts what
//! died per `restartPolicy` with back-off, and patches the pod's status when it
//! changed. A deleted pod's containers are stopped (SIGTERM, then SIGKILL after the
//! grace period) and removed, then the pod object is released.
//!
//! - [`plan`]: each container's [`Phase`] and the next step (pure);
//! - [`status`]: the pod's typed status from what was observed (pure);
//! - [`act`]: the steps carried out through the container runtime (I/O);
//! - [`gate`]: the retry back-off of restarts and image pulls.
//!
//! This module is the task loop: messages from the pod manager, probes' news,
//! the sync that ties the three together, and deletion.

pub mod act;
pub mod gate;
pub mod plan;
pub mod status;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use self::act::Act;
pub use self::gate::RetryGate;
use self::plan::{ContainerMemo, Phase, Step};
use self::status::Observed;
use crate::AgentCtx;
use crate::probe::{self, ProbeState, Prober};

/// The longest a deleted pod waits for the nodes' proxies to stop sending it
/// new connections (usually milliseconds), within its grace period.
pub const DRAIN_WAIT: Duration = Duration::from_secs(10);
use crate::runtime::{ContainerInfo, LABEL_NODE, LABEL_POD_UID, RuntimeError};

/// What the pod manager tells a worker.
#[derive(Debug)]
pub enum Msg {
    /// The pod as it is now in the API.
    Update(Arc<Pod>),
    /// The pod is gone from the API (or bound elsewhere): stop everything.
    Gone,
    /// Docker reported something about one of its containers: look again now.
    Poke,
}

pub struct Worker {
    ctx: Arc<AgentCtx>,
    pod: Arc<Pod>,
    rx: mpsc::Receiver<Msg>,
    memo: HashMap<String, ContainerMemo>,
    /// Probes of the running containers, by container name.
    probers: HashMap<String, Prober>,
    /// Notified by the probes when what they found changes.
    probed: Arc<Notify>,
    /// Where the probes (and other helpers) run: the agent's tasks.
    tracker: TaskTracker,
    last_status: Option<PodStatus>,
    start_time: Time,
}

/// How often a worker looks again when nothing tells it to.
const RESYNC: Duration = Duration::from_secs(10);

impl Worker {
    pub fn new(
        ctx: Arc<AgentCtx>,
        pod: Arc<Pod>,
        rx: mpsc::Receiver<Msg>,
        tracker: TaskTracker,
    ) -> Self {
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.clone())
            .unwrap_or_else(|| Time(status::seconds(jiff::Timestamp::now())));
        Worker {
            ctx,
            pod,
            rx,
            memo: HashMap::new(),
            probers: HashMap::new(),
            probed: Arc::new(Notify::new()),
            tracker,
            last_status: None,
            start_time,
        }
    }

    fn label(&self) -> String {
        format!(
            "{}/{}",
            self.pod.metadata.namespace.as_deref().unwrap_or(""),
            self.pod.metadata.name.as_deref().unwrap_or("")
        )
    }

    /// Runs until the pod is gone (its containers removed) or the agent stops (its
    /// containers left running).
    pub async fn run(self, shutdown: CancellationToken) {
        let span = tracing::info_span!(
            "pod",
            pod = %self.label(),
            uid = self.pod.metadata.uid.as_deref().unwrap_or("")
        );
        self.run_loop(shutdown).instrument(span).await
    }

    async fn run_loop(mut self, shutdown: CancellationToken) {
        let mut next = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                msg = self.rx.recv() => match msg {
                    Some(Msg::Update(pod)) => { self.pod = pod; next = Instant::now(); }
                    Some(Msg::Poke) => next = Instant::now(),
                    Some(Msg::Gone) | None => {
                        self.terminate(None).await;
                        return;
                    }
                },
                _ = self.probed.notified() => next = Instant::now(),
                _ = tokio::time::sleep_until(next) => {
                    if self.pod.metadata.deletion_timestamp.is_some() {
                        let grace = self.pod.metadata.deletion_grace_period_seconds;
                        self.shut_down(grace).await;
                        self.release().await;
                        return;
                    }
                    next = match self.sync().await {
                        Ok(wake) => wake,
                        Err(e) => {
                            tracing::warn!(pod = %self.label(), error = %e, "sync failed; retrying");
                            Instant::now() + Duration::from_secs(1)
                        }
                    };
                }
            }
        }
    }

    async fn containers(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let uid = self.pod.metadata.uid.clone().unwrap_or_default();
        self.ctx
            .runtime
            .list(&[
                (LABEL_NODE.to_string(), self.ctx.node.clone()),
                (LABEL_POD_UID.to_string(), uid),
            ])
            .await
    }

    /// One level-triggered pass; returns when to look again.
    async fn sync(&mut self) -> Result<Instant, RuntimeError> {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let policy = plan::RestartPolicy::of(&spec);
        let now = Instant::now();
        let wall = jiff::Timestamp::now();
        let mut wake = now + RESYNC;
        let existing = self.containers().await?;
        for c in &spec.containers {
            let attempts = plan::attempts(&existing, &c.name);
            let latest = attempts.last().copied();
            let (initial, max) = (self.ctx.backoff_initial, self.ctx.backoff_max);
            let memo = self
                .memo
                .entry(c.name.clone())
                .or_insert_with(|| ContainerMemo::new(initial, max));
            let seen_before = memo.saw(latest);
            let next_attempt = memo.next_attempt();
            let phase = Phase::of(latest, seen_before, policy);
            let decision = plan::decide(&phase, memo, now, wall);
            if !matches!(phase, Phase::Running(_)) {
                self.probers.remove(&c.name);
            }
            let act = Act::new(&self.ctx, &self.pod);
            if decision.backing_off {
                act.warning(
                    "BackOff",
                    &format!(
                        "Back-off restarting failed container {} in pod {}",
                        c.name,
                        self.label()
                    ),
                )
                .await;
            }
            match (decision.step, phase) {
                (Step::Wait(until), _) => wake = wake.min(until.unwrap_or(wake)),
                (Step::StartCreated(id), _) => act.start_created(c, &id).await,
                (Step::Supervise, Phase::Running(info)) => {
                    if self.supervise(c, info, &act).await {
                        wake = Instant::now();
                    }
                }
                (Step::Supervise, _) => {}
                (Step::Create, _) => {
                    if let Err(problem) = act.ensure_image(c).await {
                        let memo = self.memo_mut(&c.name);
                        memo.pull.fail(now);
                        memo.pull.fail(now); // image pulls back off from the first failure
                        wake = wake.min(memo.pull.not_before.unwrap_or(wake));
                        memo.image_problem = Some(problem.clone());
                        act.image_failed(c, &problem).await;
                        continue;
                    }
                    let memo = self.memo_mut(&c.name);
                    memo.pull.reset();
                    memo.image_problem = None;
                    self.restart(c, latest, &attempts, &existing, next_attempt, &act)
                        .await?;
                    wake = Instant::now();
                }
            }
        }
        let existing = self.containers().await?;
        let status = self.status(&existing);
        self.post_status(status).await;
        Ok(wake)
    }

    fn memo_mut(&mut self, name: &str) -> &mut ContainerMemo {
        let (initial, max) = (self.ctx.backoff_initial, self.ctx.backoff_max);
        self.memo
            .entry(name.to_string())
            .or_insert_with(|| ContainerMemo::new(initial, max))
    }

    /// Creates and starts the next attempt of `c`. Says how the old one ended
    /// while the new one starts, so watchers see the crash (the write runs
    /// alongside the restart, not before it); the attempts before the one that
    /// just ended are removed afterwards.
    async fn restart(
        &mut self,
        c: &Container,
        latest: Option<&ContainerInfo>,
        attempts: &[&ContainerInfo],
        existing: &[ContainerInfo],
        attempt: u32,
        act: &Act,
    ) -> Result<(), RuntimeError> {
        let crash_status = latest
            .filter(|l| !l.state.running)
            .map(|_| self.status(existing));
        let stale: Vec<String> = attempts
            .iter()
            .rev()
            .skip(1)
            .map(|a| a.id.clone())
            .collect();
        let report = async {
            let status = crash_status?;
            act.ctx.sink.patch_status(&act.pod, &status).await.ok()?
        };
        let (reported, started) = tokio::join!(report, act.start_container(c, attempt));
        if let Some(updated) = reported {
            self.pod = Arc::new(updated);
        }
        started?;
        // The one that just ended stays (for `lastState` and `logs --previous`);
        // older ones go, after the new one runs, off the healing path.
        if !stale.is_empty() {
            let runtime = self.ctx.runtime.clone();
            self.tracker.spawn(async move {
                for id in stale {
                    let _ = runtime.remove(&id).await;
                }
            });
        }
        Ok(())
    }

    /// Keeps the probes of running container `c` going: records their failures
    /// and stops the container when they ask for a restart. True when it did.
    async fn supervise(&mut self, c: &Container, info: &ContainerInfo, act: &Act) -> bool {
        if !probe::has_probes(c) {
            return false;
        }
        let stale = self
            .probers
            .get(&c.name)
            .is_none_or(|p| p.container_id != info.id);
        if stale {
            let target = probe::Target {
                container: c.clone(),
                container_id: info.id.clone(),
                ip: info.ip.clone(),
                runtime: self.ctx.runtime.clone(),
                http: self.ctx.http.clone(),
            };
            let prober = Prober::start(target, self.probed.clone(), &self.tracker);
            self.probers.insert(c.name.clone(), prober);
        }
        let Some(prober) = self.probers.get(&c.name) else {
            return false;
        };
        for f in prober.take_failures() {
            act.warning(
                "Unhealthy",
                &format!("{} probe failed: {}", f.kind.name(), f.message),
            )
            .await;
        }
        let Some(why) = prober.state().kill else {
            return false;
        };
        self.probers.remove(&c.name);
        act.kill_unhealthy(c, info, &why).await;
        true
    }

    /// The pod's status as Docker shows it now.
    fn status(&self, existing: &[ContainerInfo]) -> PodStatus {
        let probes: HashMap<String, ProbeState> = self
            .probers
            .values()
            .map(|p| (p.container_id.clone(), p.state()))
            .collect();
        status::pod_status(&Observed {
            pod: &self.pod,
            containers: existing,
            probes: &probes,
            memo: &self.memo,
            host_ip: &self.ctx.address,
            start_time: &self.start_time,
            now: Instant::now(),
            wall: jiff::Timestamp::now(),
        })
    }

    /// Patches the pod's status if it changed (ignoring transition times, which are
    /// carried over from the stored conditions when the status did not flip).
    async fn post_status(&mut self, mut status: PodStatus) {
        let old = self.pod.status.clone().unwrap_or_default();
        status::carry_transition_times(&mut status, &old);
        if self.last_status.as_ref() == Some(&status) || status::unchanged(&old, &status) {
            self.last_status = Some(status);
            return;
        }
        match self.ctx.sink.patch_status(&self.pod, &status).await {
            Ok(Some(updated)) => {
                self.pod = Arc::new(updated);
                self.last_status = Some(status);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(pod = %self.label(), error = %e, "cannot report pod status; will retry")
            }
        }
    }

    /// Stops and removes every container of the pod: SIGTERM, SIGKILL after `grace`
    /// (the pod's `terminationGracePeriodSeconds` when `None`).
    pub async fn terminate(&self, grace: Option<i64>) {
        let grace = self.grace(grace);
        let Ok(containers) = self.containers().await else {
            return;
        };
        Act::new(&self.ctx, &self.pod)
            .stop_and_remove(&containers, grace)
            .await;
        tracing::info!(pod = %self.label(), containers = containers.len(), "pod's containers removed");
    }

    /// A deleted pod's end, in the order that drops no request: out of every
    /// node's Service traffic first (acknowledged, at most [`DRAIN_WAIT`]),
    /// then each container's `preStop` hook, then SIGTERM, and SIGKILL when the
    /// grace period (counted from the start) runs out.
    pub async fn shut_down(&self, grace: Option<i64>) {
        let grace = self.grace(grace);
        let started = Instant::now();
        let deadline = started + Duration::from_secs(u64::try_from(grace).unwrap_or(0));
        let Ok(containers) = self.containers().await else {
            return;
        };
        let running = containers.iter().any(|c| c.state.running);
        let ip = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok());
        if let Some(ip) = ip.filter(|_| running && grace > 0) {
            let drained = crate::proxy::drain::drain(
                &self.ctx.proxy,
                ip,
                (started + DRAIN_WAIT).min(deadline),
            )
            .await;
            tracing::info!(
                pod = %self.label(),
                revision = drained.revision,
                local = drained.local,
                acknowledged = drained.acknowledged,
                asked = drained.asked,
                still_open = drained.still_open,
                took_ms = drained.took.as_millis() as u64,
                "out of every node's Service traffic"
            );
        }
        let act = Act::new(&self.ctx, &self.pod);
        act.pre_stop(&containers, deadline).await;
        // The hooks may have ended their containers already.
        let containers = self.containers().await.unwrap_or(containers);
        act.stop_and_remove_within(
            &containers,
            deadline.saturating_duration_since(Instant::now()),
        )
        .await;
        tracing::info!(pod = %self.label(), containers = containers.len(), "pod's containers removed");
    }

    /// The grace period in seconds: the deletion's, else the pod's
    /// `terminationGracePeriodSeconds`, else 30.
    fn grace(&self, grace: Option<i64>) -> i64 {
        grace
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30)
            .max(0)
    }

    /// Tells the API the pod's containers are gone, so the object can go.
    async fn release(&self) {
        if let Err(e) = self.ctx.sink.release(&self.pod).await {
            tracing::warn!(pod = %self.label(), error = %e, "cannot release the deleted pod")
        }
    }
}
