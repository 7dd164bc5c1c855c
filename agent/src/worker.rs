//! One pod's worker: makes Docker match the pod and reports what it sees. Each
//! sync is level-triggered: it reads the pod's containers from Docker by label,
//! creates what is missing (pulling the image per `imagePullPolicy`), restarts what
//! died per `restartPolicy` with back-off, and patches the pod's status when it
//! changed. A deleted pod's containers are stopped (SIGTERM, then SIGKILL after the
//! grace period) and removed, then the pod object is released.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tugboat_api::resource::PODS;
use tugboat_api::{PatchType, meta, quantity};

use crate::AgentCtx;
use crate::probe::{self, ProbeState, Prober};
use crate::runtime::{
    ContainerInfo, ContainerSpec, LABEL_ATTEMPT, LABEL_CONTAINER_NAME, LABEL_NODE, LABEL_POD_NAME,
    LABEL_POD_NAMESPACE, LABEL_POD_UID, PortMapping, RuntimeError,
};

/// What the pod manager tells a worker.
#[derive(Debug)]
pub enum Msg {
    /// The pod as it is now in the API.
    Update(Arc<Value>),
    /// The pod is gone from the API (or bound elsewhere): stop everything.
    Gone,
    /// Docker reported something about one of its containers: look again now.
    Poke,
}

/// When a failed container (or image pull) may be retried: the first failure at
/// once, then the shared [`tugboat_runtime::Backoff`] sequence (doubling from
/// `initial` to `max`), reset after a long enough good run.
#[derive(Clone, Debug)]
pub struct RetryGate {
    pub initial: Duration,
    pub max: Duration,
    failures: u32,
    pub not_before: Option<Instant>,
}

impl RetryGate {
    pub fn new(initial: Duration, max: Duration) -> Self {
        RetryGate {
            initial,
            max,
            failures: 0,
            not_before: None,
        }
    }

    /// Records a failure now; the first one may retry at once.
    pub fn fail(&mut self, now: Instant) -> Duration {
        let delay = if self.failures == 0 {
            Duration::ZERO
        } else {
            tugboat_runtime::Backoff::nth(self.initial, self.max, self.failures - 1)
        };
        self.failures = self.failures.saturating_add(1);
        self.not_before = Some(now + delay);
        delay
    }

    pub fn reset(&mut self) {
        self.failures = 0;
        self.not_before = None;
    }

    pub fn ready(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|t| now >= t)
    }
}

/// What the worker remembers about one container between syncs.
#[derive(Debug)]
struct ContainerMemo {
    restart: RetryGate,
    pull: RetryGate,
    /// The last image problem: (reason, message).
    image_problem: Option<(String, String)>,
    /// The exit of the last attempt we already counted for back-off.
    counted_exit: Option<String>,
    /// The newest attempt seen, so a container removed from outside is recreated
    /// as the next attempt (its restart counted) rather than as attempt 0.
    last_attempt: Option<u32>,
}

pub struct Worker {
    ctx: Arc<AgentCtx>,
    pod: Arc<Value>,
    rx: mpsc::Receiver<Msg>,
    memo: HashMap<String, ContainerMemo>,
    /// Probes of the running containers, by container name.
    probers: HashMap<String, Prober>,
    /// The worker's own inbox, for probes to wake it.
    poke: mpsc::Sender<Msg>,
    last_status: Option<Value>,
    start_time: String,
}

/// How often a worker looks again when nothing tells it to.
const RESYNC: Duration = Duration::from_secs(10);
/// A container that ran this long has its crash back-off reset.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);

impl Worker {
    pub fn new(
        ctx: Arc<AgentCtx>,
        pod: Arc<Value>,
        rx: mpsc::Receiver<Msg>,
        poke: mpsc::Sender<Msg>,
    ) -> Self {
        let start_time = pod
            .pointer("/status/startTime")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(meta::now_rfc3339);
        Worker {
            ctx,
            pod,
            rx,
            memo: HashMap::new(),
            probers: HashMap::new(),
            poke,
            last_status: None,
            start_time,
        }
    }

    fn label(&self) -> String {
        format!(
            "{}/{}",
            meta::namespace(&self.pod).unwrap_or(""),
            meta::name(&self.pod).unwrap_or("")
        )
    }

    /// Runs until the pod is gone (its containers removed) or the agent stops (its
    /// containers left running).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let span = tracing::info_span!("pod", pod = %self.label(), uid = meta::uid(&self.pod).unwrap_or(""));
        let _enter = span.enter();
        drop(_enter);
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
                _ = tokio::time::sleep_until(next) => {
                    if meta::is_deleting(&self.pod) {
                        let grace = self.pod.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64);
                        self.terminate(grace).await;
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

    fn pod_spec(&self) -> Option<Pod> {
        serde_json::from_value((*self.pod).clone()).ok()
    }

    async fn containers(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let uid = meta::uid(&self.pod).unwrap_or("").to_string();
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
        let Some(pod) = self.pod_spec() else {
            return Ok(Instant::now() + RESYNC);
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let now = Instant::now();
        let mut wake = now + RESYNC;
        let pod_label = self.label();
        let existing = self.containers().await?;
        for c in &spec.containers {
            let memo = self
                .memo
                .entry(c.name.clone())
                .or_insert_with(|| ContainerMemo {
                    restart: RetryGate::new(self.ctx.backoff_initial, self.ctx.backoff_max),
                    pull: RetryGate::new(self.ctx.backoff_initial, self.ctx.backoff_max),
                    image_problem: None,
                    counted_exit: None,
                    last_attempt: None,
                });
            let mut attempts: Vec<&ContainerInfo> = existing
                .iter()
                .filter(|i| i.labels.get(LABEL_CONTAINER_NAME) == Some(&c.name))
                .collect();
            attempts.sort_by_key(|i| attempt_of(i));
            let latest = attempts.last().copied();
            let seen_before = memo.last_attempt;
            if let Some(l) = latest {
                memo.last_attempt = Some(
                    memo.last_attempt
                        .map_or(attempt_of(l), |a| a.max(attempt_of(l))),
                );
            }
            let next_attempt = memo.last_attempt.map(|a| a + 1).unwrap_or(0);
            if !latest.is_some_and(|l| l.state.running) {
                self.probers.remove(&c.name);
            }
            let start = match latest {
                // Removed from outside (`docker rm -f`): recreate, counting a restart.
                None if seen_before.is_some() => {
                    let marker = format!("removed:{}", seen_before.unwrap_or(0));
                    if memo.counted_exit.as_deref() != Some(&marker) {
                        memo.counted_exit = Some(marker);
                        memo.restart.fail(now);
                    }
                    if memo.restart.ready(now) {
                        true
                    } else {
                        wake = wake.min(memo.restart.not_before.unwrap_or(wake));
                        false
                    }
                }
                None => true,
                Some(info) if info.state.running => {
                    if ran_for(info) >= BACKOFF_RESET_AFTER {
                        memo.restart.reset();
                    }
                    if probe::has_probes(c) {
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
                            self.probers
                                .insert(c.name.clone(), Prober::start(target, self.poke.clone()));
                        }
                        if let Some(prober) = self.probers.get(&c.name) {
                            for f in prober.take_failures() {
                                self.ctx
                                    .events
                                    .warning(
                                        &self.pod,
                                        "Unhealthy",
                                        &format!("{} probe failed: {}", f.kind.name(), f.message),
                                    )
                                    .await;
                            }
                            if let Some(why) = prober.state().kill {
                                self.ctx.events.normal(&self.pod, "Killing", &why).await;
                                let grace =
                                    spec.termination_grace_period_seconds.unwrap_or(30).max(0)
                                        as u64;
                                self.probers.remove(&c.name);
                                if let Err(e) = self
                                    .ctx
                                    .runtime
                                    .stop(&info.id, Duration::from_secs(grace))
                                    .await
                                {
                                    tracing::warn!(pod = %pod_label, container = %c.name, error = %e, "cannot stop an unhealthy container");
                                }
                                wake = Instant::now();
                            }
                        }
                    }
                    false
                }
                Some(info) if info.state.status == "created" => {
                    // Created but never started (the agent stopped in between): start it.
                    match self.ctx.runtime.start(&info.id).await {
                        Ok(()) => {
                            self.ctx
                                .events
                                .normal(
                                    &self.pod,
                                    "Started",
                                    &format!("Started container {}", c.name),
                                )
                                .await
                        }
                        Err(e) => {
                            tracing::warn!(container = %c.name, error = %e, "cannot start container")
                        }
                    }
                    false
                }
                Some(info) => {
                    let exit = info.state.exit_code.unwrap_or(-1);
                    let restart = match policy.as_str() {
                        "Never" => false,
                        "OnFailure" => exit != 0,
                        _ => true,
                    };
                    if restart {
                        let finished = info.state.finished_at.clone().unwrap_or_default();
                        if memo.counted_exit.as_deref() != Some(&format!("{}:{finished}", info.id))
                        {
                            memo.counted_exit = Some(format!("{}:{finished}", info.id));
                            if ran_for(info) >= BACKOFF_RESET_AFTER {
                                memo.restart.reset();
                            }
                            let delay = memo.restart.fail(now);
                            if !delay.is_zero() {
                                self.ctx
                                    .events
                                    .warning(&self.pod, "BackOff", &format!("Back-off restarting failed container {} in pod {pod_label}", c.name))
                                    .await;
                            }
                        }
                        if memo.restart.ready(now) {
                            true
                        } else {
                            wake = wake.min(memo.restart.not_before.unwrap_or(wake));
                            false
                        }
                    } else {
                        false
                    }
                }
            };
            if !start {
                continue;
            }
            if !memo.pull.ready(now) {
                wake = wake.min(memo.pull.not_before.unwrap_or(wake));
                continue;
            }
            match self.ensure_image(c).await {
                Ok(()) => {
                    let memo = self.memo.get_mut(&c.name).expect("inserted above");
                    memo.pull.reset();
                    memo.image_problem = None;
                }
                Err((reason, message)) => {
                    let memo = self.memo.get_mut(&c.name).expect("inserted above");
                    memo.pull.fail(now);
                    memo.pull.fail(now); // image pulls back off from the first failure
                    memo.image_problem = Some((reason.clone(), message.clone()));
                    wake = wake.min(memo.pull.not_before.unwrap_or(wake));
                    self.ctx
                        .events
                        .warning(
                            &self.pod,
                            "Failed",
                            &format!(
                                "Failed to pull image \"{}\": {message}",
                                c.image.as_deref().unwrap_or("")
                            ),
                        )
                        .await;
                    self.ctx
                        .events
                        .warning(&self.pod, "Failed", &format!("Error: {reason}"))
                        .await;
                    continue;
                }
            }
            // Say how the old one ended while the new one starts, so watchers see the
            // crash; the write runs alongside the restart, not before it.
            let crash_status = latest
                .filter(|l| !l.state.running)
                .map(|_| self.status(&spec, &existing, &policy));
            let stale: Vec<String> = attempts
                .iter()
                .rev()
                .skip(1)
                .map(|a| a.id.clone())
                .collect();
            let report = {
                let client = self.ctx.client.clone();
                let ns = meta::namespace(&self.pod).unwrap_or("default").to_string();
                let name = meta::name(&self.pod).unwrap_or("").to_string();
                async move {
                    let status = crash_status?;
                    client
                        .patch_status(
                            &PODS,
                            Some(&ns),
                            &name,
                            &json!({"status": status}),
                            PatchType::Merge,
                        )
                        .await
                        .ok()
                }
            };
            let (reported, started) =
                tokio::join!(report, self.start_container(c, &spec, next_attempt));
            if let Some(updated) = reported {
                self.pod = Arc::new(updated);
            }
            started?;
            // The one that just ended stays (for `lastState` and `logs --previous`);
            // older ones go, after the new one runs, off the healing path.
            let runtime = self.ctx.runtime.clone();
            tokio::spawn(async move {
                for id in stale {
                    let _ = runtime.remove(&id).await;
                }
            });
            wake = Instant::now();
        }
        let existing = self.containers().await?;
        let status = self.status(&spec, &existing, &policy);
        self.post_status(status).await;
        Ok(wake)
    }

    /// Image present, or pulled per policy. On failure: (reason, Docker's message).
    async fn ensure_image(&self, c: &Container) -> Result<(), (String, String)> {
        let image = c.image.clone().unwrap_or_default();
        let policy = c
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| tugboat_api::defaults::image_pull_policy(&image).to_string());
        let present = self
            .ctx
            .runtime
            .image_id(&image)
            .await
            .map_err(|e| ("ErrImagePull".to_string(), e.to_string()))?
            .is_some();
        match policy.as_str() {
            "Never" if !present => Err((
                "ErrImageNeverPull".into(),
                format!("Container image \"{image}\" is not present with pull policy of Never"),
            )),
            "IfNotPresent" | "Never" if present => {
                self.ctx
                    .events
                    .normal(
                        &self.pod,
                        "Pulled",
                        &format!("Container image \"{image}\" already present on machine"),
                    )
                    .await;
                Ok(())
            }
            _ => {
                self.ctx
                    .events
                    .normal(&self.pod, "Pulling", &format!("Pulling image \"{image}\""))
                    .await;
                let started = std::time::Instant::now();
                match self.ctx.runtime.pull_image(&image).await {
                    Ok(()) => {
                        self.ctx
                            .events
                            .normal(
                                &self.pod,
                                "Pulled",
                                &format!(
                                    "Successfully pulled image \"{image}\" in {:.3}s",
                                    started.elapsed().as_secs_f64()
                                ),
                            )
                            .await;
                        Ok(())
                    }
                    // No registry here is the normal case: a local image will do, as
                    // Docker Swarm does when it cannot resolve a digest.
                    Err(e) if present => {
                        self.ctx
                            .events
                            .warning(
                                &self.pod,
                                "Pulled",
                                &format!(
                                    "Could not pull image \"{image}\" ({e}); using the local image"
                                ),
                            )
                            .await;
                        Ok(())
                    }
                    Err(RuntimeError::Pull { message, .. }) => {
                        Err(("ErrImagePull".into(), message))
                    }
                    Err(e) => Err(("ErrImagePull".into(), e.to_string())),
                }
            }
        }
    }

    async fn start_container(
        &self,
        c: &Container,
        spec: &k8s_openapi::api::core::v1::PodSpec,
        attempt: u32,
    ) -> Result<(), RuntimeError> {
        let ns = meta::namespace(&self.pod).unwrap_or("default");
        let name = meta::name(&self.pod).unwrap_or("");
        let uid = meta::uid(&self.pod).unwrap_or("");
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_POD_NAME.to_string(), name.to_string());
        labels.insert(LABEL_POD_NAMESPACE.to_string(), ns.to_string());
        labels.insert(LABEL_POD_UID.to_string(), uid.to_string());
        labels.insert(LABEL_CONTAINER_NAME.to_string(), c.name.clone());
        labels.insert(LABEL_NODE.to_string(), self.ctx.node.clone());
        labels.insert(LABEL_ATTEMPT.to_string(), attempt.to_string());
        let limits = c
            .resources
            .as_ref()
            .and_then(|r| r.limits.clone())
            .unwrap_or_default();
        let requests = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.clone())
            .unwrap_or_default();
        let container_spec = ContainerSpec {
            name: format!("tug_{ns}_{name}_{}_{attempt}", c.name),
            image: c.image.clone().unwrap_or_default(),
            command: c.command.clone(),
            args: c.args.clone(),
            env: c
                .env
                .iter()
                .flatten()
                .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
                .collect(),
            working_dir: c.working_dir.clone(),
            labels,
            ports: c
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(PortMapping {
                        container_port: u16::try_from(p.container_port).ok()?,
                        host_port: p
                            .host_port
                            .and_then(|h| u16::try_from(h).ok())
                            .filter(|h| *h > 0),
                        protocol: p
                            .protocol
                            .clone()
                            .unwrap_or_else(|| "TCP".into())
                            .to_ascii_lowercase(),
                        host_ip: p.host_ip.clone().or_else(|| self.ctx.host_port_ip.clone()),
                    })
                })
                .collect(),
            memory_limit_bytes: limits.get("memory").and_then(|q| quantity::bytes(&q.0)),
            nano_cpus: limits
                .get("cpu")
                .and_then(|q| quantity::cpu_millis(&q.0))
                .map(|m| m.saturating_mul(1_000_000)),
            cpu_shares: requests
                .get("cpu")
                .and_then(|q| quantity::cpu_millis(&q.0))
                .map(|m| (m.saturating_mul(1024) / 1000).clamp(2, 262_144)),
            hostname: Some(pod_hostname(spec.hostname.as_deref(), name)),
            network: self.ctx.network.clone(),
        };
        let id = match self.ctx.runtime.create(&container_spec).await {
            Ok(id) => id,
            Err(e) => {
                self.ctx
                    .events
                    .warning(&self.pod, "Failed", &format!("Error: {e}"))
                    .await;
                return Err(e);
            }
        };
        self.ctx
            .events
            .normal(
                &self.pod,
                "Created",
                &format!("Created container: {}", c.name),
            )
            .await;
        if let Err(e) = self.ctx.runtime.start(&id).await {
            self.ctx
                .events
                .warning(&self.pod, "Failed", &format!("Error: {e}"))
                .await;
            return Err(e);
        }
        self.ctx
            .events
            .normal(
                &self.pod,
                "Started",
                &format!("Started container {}", c.name),
            )
            .await;
        tracing::info!(pod = %self.label(), container = %c.name, attempt, id = %short(&id), "container started");
        Ok(())
    }

    /// The pod's status as Docker shows it.
    fn status(
        &self,
        spec: &k8s_openapi::api::core::v1::PodSpec,
        existing: &[ContainerInfo],
        policy: &str,
    ) -> Value {
        let mut statuses = Vec::new();
        let mut all_ready = true;
        let mut any_running = false;
        let mut all_started = true;
        let mut terminal_exits: Vec<i64> = Vec::new();
        let mut pod_ip: Option<String> = None;
        for c in &spec.containers {
            let mut attempts: Vec<&ContainerInfo> = existing
                .iter()
                .filter(|i| i.labels.get(LABEL_CONTAINER_NAME) == Some(&c.name))
                .collect();
            attempts.sort_by_key(|i| attempt_of(i));
            let latest = attempts.last().copied();
            let previous = if attempts.len() >= 2 {
                attempts.get(attempts.len() - 2).copied()
            } else {
                None
            };
            let memo = self.memo.get(&c.name);
            let image = c.image.clone().unwrap_or_default();
            let mut st = json!({"name": c.name, "image": image, "imageID": "", "restartCount": 0, "ready": false, "started": false});
            match latest {
                None => {
                    all_started = false;
                    all_ready = false;
                    let (reason, message) = memo
                        .and_then(|m| m.image_problem.clone())
                        .map(|(r, m)| {
                            let pulling_back_off =
                                memo.is_some_and(|m| !m.pull.ready(Instant::now()));
                            if pulling_back_off && r == "ErrImagePull" {
                                (
                                    "ImagePullBackOff".to_string(),
                                    format!("Back-off pulling image \"{image}\": {m}"),
                                )
                            } else {
                                (r, m)
                            }
                        })
                        .unwrap_or_else(|| ("ContainerCreating".to_string(), String::new()));
                    st["state"] = if message.is_empty() {
                        json!({"waiting": {"reason": reason}})
                    } else {
                        json!({"waiting": {"reason": reason, "message": message}})
                    };
                }
                Some(info) => {
                    st["containerID"] = json!(format!("docker://{}", info.id));
                    st["imageID"] = json!(format!("docker-pullable://{}", info.image_id));
                    st["restartCount"] = json!(attempt_of(info));
                    if info.state.running {
                        any_running = true;
                        st["state"] = json!({"running": {"startedAt": docker_time(info.state.started_at.as_deref())}});
                        let probes = self
                            .probers
                            .get(&c.name)
                            .filter(|p| p.container_id == info.id)
                            .map(Prober::state)
                            .unwrap_or(ProbeState {
                                started: !probe::has_probes(c),
                                ready: !probe::has_probes(c),
                                kill: None,
                            });
                        let probes = if probe::has_probes(c) {
                            probes
                        } else {
                            ProbeState {
                                started: true,
                                ready: true,
                                kill: None,
                            }
                        };
                        st["ready"] = json!(probes.ready && probes.started);
                        st["started"] = json!(probes.started);
                        if !(probes.ready && probes.started) {
                            all_ready = false;
                        }
                        if pod_ip.is_none() {
                            pod_ip = info.ip.clone();
                        }
                    } else if info.state.status == "created" {
                        all_ready = false;
                        all_started = false;
                        st["state"] = json!({"waiting": {"reason": "ContainerCreating"}});
                    } else {
                        all_ready = false;
                        let terminated = terminated_of(info);
                        let exit = info.state.exit_code.unwrap_or(-1);
                        let will_restart = match policy {
                            "Never" => false,
                            "OnFailure" => exit != 0,
                            _ => true,
                        };
                        let waiting_for = memo
                            .and_then(|m| m.restart.not_before)
                            .map(|t| t.saturating_duration_since(Instant::now()))
                            .unwrap_or_default();
                        if will_restart && waiting_for.is_zero() {
                            // Restarting right now: show how it ended (`Error`) meanwhile.
                            st["state"] = json!({"terminated": terminated});
                        } else if will_restart {
                            st["state"] = json!({"waiting": {
                                "reason": "CrashLoopBackOff",
                                "message": format!("back-off {} restarting failed container={} pod={}",
                                    human(waiting_for), c.name, meta::name(&self.pod).unwrap_or("")),
                            }});
                            st["lastState"] = json!({"terminated": terminated});
                        } else {
                            terminal_exits.push(exit);
                            st["state"] = json!({"terminated": terminated});
                        }
                    }
                    if st.get("lastState").is_none()
                        && let Some(prev) = previous
                        && !prev.state.running
                    {
                        st["lastState"] = json!({"terminated": terminated_of(prev)});
                    }
                }
            }
            if st.get("lastState").is_none() {
                st["lastState"] = json!({});
            }
            statuses.push(st);
        }
        let total = spec.containers.len();
        let phase = if terminal_exits.len() == total && total > 0 {
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
        let now = meta::now_rfc3339();
        let ready = all_ready && any_running && phase == "Running";
        let cond = |kind: &str, ok: bool, reason: Option<&str>| {
            let mut c = json!({"type": kind, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": now});
            if let (false, Some(r)) = (ok, reason) {
                c["reason"] = json!(r);
            }
            c
        };
        let not_ready_reason = if phase == "Succeeded" || phase == "Failed" {
            "PodCompleted"
        } else {
            "ContainersNotReady"
        };
        let conditions = vec![
            cond("PodReadyToStartContainers", true, None),
            cond("Initialized", true, None),
            cond("Ready", ready, Some(not_ready_reason)),
            cond("ContainersReady", ready, Some(not_ready_reason)),
            cond("PodScheduled", true, None),
        ];
        let mut status = json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": self.ctx.address,
            "hostIPs": [{"ip": self.ctx.address}],
            "startTime": self.start_time,
            "containerStatuses": statuses,
            "qosClass": qos_class(spec),
        });
        if let Some(ip) = pod_ip.or_else(|| {
            self.pod
                .pointer("/status/podIP")
                .and_then(Value::as_str)
                .map(str::to_string)
        }) {
            status["podIP"] = json!(ip);
            status["podIPs"] = json!([{"ip": ip}]);
        }
        status
    }

    /// Patches the pod's status if it changed (ignoring transition times, which are
    /// carried over from the stored conditions when the status did not flip).
    async fn post_status(&mut self, mut status: Value) {
        let old = self.pod.get("status").cloned().unwrap_or(json!({}));
        if let (Some(new_conds), Some(old_conds)) = (
            status["conditions"].as_array_mut(),
            old["conditions"].as_array(),
        ) {
            for c in new_conds.iter_mut() {
                if let Some(prev) = old_conds.iter().find(|o| o["type"] == c["type"])
                    && prev["status"] == c["status"]
                {
                    c["lastTransitionTime"] = prev["lastTransitionTime"].clone();
                }
            }
        }
        if self.last_status.as_ref() == Some(&status) || comparable(&old) == comparable(&status) {
            self.last_status = Some(status);
            return;
        }
        let ns = meta::namespace(&self.pod).unwrap_or("default").to_string();
        let name = meta::name(&self.pod).unwrap_or("").to_string();
        // A merge patch replaces the lists whole: the agent owns every condition
        // and container status it writes.
        let patch = json!({"status": status});
        match self
            .ctx
            .client
            .patch_status(&PODS, Some(&ns), &name, &patch, PatchType::Merge)
            .await
        {
            Ok(updated) => {
                self.pod = Arc::new(updated);
                self.last_status = Some(status);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                tracing::warn!(pod = %self.label(), error = %e, "cannot report pod status; will retry")
            }
        }
    }

    /// Stops and removes every container of the pod: SIGTERM, SIGKILL after `grace`
    /// (the pod's `terminationGracePeriodSeconds` when `None`).
    pub async fn terminate(&self, grace: Option<i64>) {
        let grace = grace
            .or_else(|| {
                self.pod
                    .pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30)
            .max(0);
        let Ok(containers) = self.containers().await else {
            return;
        };
        let stops = containers.iter().map(|info| {
            let runtime = self.ctx.runtime.clone();
            let events = self.ctx.events.clone();
            let pod = self.pod.clone();
            async move {
                if info.state.running {
                    let name = info
                        .labels
                        .get(LABEL_CONTAINER_NAME)
                        .cloned()
                        .unwrap_or_default();
                    events
                        .normal(&pod, "Killing", &format!("Stopping container {name}"))
                        .await;
                    if let Err(e) = runtime
                        .stop(&info.id, Duration::from_secs(grace as u64))
                        .await
                    {
                        tracing::warn!(id = %short(&info.id), error = %e, "cannot stop container");
                    }
                }
                if let Err(e) = runtime.remove(&info.id).await {
                    tracing::warn!(id = %short(&info.id), error = %e, "cannot remove container");
                }
            }
        });
        futures::future::join_all(stops).await;
        tracing::info!(pod = %self.label(), containers = containers.len(), "pod's containers removed");
    }

    /// Tells the API the pod's containers are gone, so the object can go.
    async fn release(&self) {
        let ns = meta::namespace(&self.pod).unwrap_or("default");
        let name = meta::name(&self.pod).unwrap_or("");
        match self
            .ctx
            .client
            .delete_with_grace(&PODS, Some(ns), name, Some(0))
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                tracing::warn!(pod = %self.label(), error = %e, "cannot release the deleted pod")
            }
        }
    }
}

fn comparable(status: &Value) -> Value {
    let mut s = status.clone();
    if let Some(conds) = s.get_mut("conditions").and_then(Value::as_array_mut) {
        conds.sort_by_key(|c| c["type"].as_str().unwrap_or("").to_string());
    }
    s
}

pub fn attempt_of(info: &ContainerInfo) -> u32 {
    info.labels
        .get(LABEL_ATTEMPT)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

fn ran_for(info: &ContainerInfo) -> Duration {
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
        .unwrap_or_else(jiff::Timestamp::now);
    Duration::from_secs(end.duration_since(started).as_secs().max(0) as u64)
}

fn terminated_of(info: &ContainerInfo) -> Value {
    let exit = info.state.exit_code.unwrap_or(-1);
    let reason = if info.state.oom_killed {
        "OOMKilled"
    } else if exit == 0 {
        "Completed"
    } else {
        "Error"
    };
    json!({
        "exitCode": exit,
        "reason": reason,
        "startedAt": docker_time(info.state.started_at.as_deref()),
        "finishedAt": docker_time(info.state.finished_at.as_deref()),
        "containerID": format!("docker://{}", info.id),
    })
}

/// Docker's RFC 3339 with nanoseconds → Kubernetes' seconds; Docker's zero time → null.
fn docker_time(t: Option<&str>) -> Value {
    match t.and_then(|t| t.parse::<jiff::Timestamp>().ok()) {
        Some(ts) if ts.as_second() > 0 => json!(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        _ => Value::Null,
    }
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

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn qos_class(spec: &k8s_openapi::api::core::v1::PodSpec) -> &'static str {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_retries_at_once_then_doubles_to_the_cap() {
        let mut b = RetryGate::new(Duration::from_secs(1), Duration::from_secs(4));
        let now = Instant::now();
        let delays: Vec<u64> = (0..5).map(|_| b.fail(now).as_secs()).collect();
        assert_eq!(delays, vec![0, 1, 2, 4, 4]);
        assert!(!b.ready(now));
        b.reset();
        assert!(b.ready(now));
    }

    #[test]
    fn docker_times_become_kubernetes_times_and_zero_is_null() {
        assert_eq!(
            docker_time(Some("2026-11-21T23:27:50.123456789Z")),
            json!("2026-11-21T23:27:50Z")
        );
        assert_eq!(docker_time(Some("0001-01-01T00:00:00Z")), Value::Null);
        assert_eq!(docker_time(None), Value::Null);
    }
}

/// The container's hostname: `spec.hostname`, else the pod's name cut to the 63
/// characters a hostname may have (runc refuses longer ones), without a trailing
/// `-` or `.`, as the kubelet's `truncatePodHostnameIfNeeded` does.
pub fn pod_hostname(hostname: Option<&str>, pod_name: &str) -> String {
    if let Some(h) = hostname.filter(|h| !h.is_empty()) {
        return h.to_string();
    }
    const MAX: usize = 63;
    if pod_name.len() <= MAX {
        return pod_name.to_string();
    }
    // Pod names are ASCII (DNS-1123 subdomains), so a byte cut is a char cut.
    let cut = pod_name.get(..MAX).unwrap_or(pod_name);
    cut.trim_end_matches(['-', '.']).to_string()
}

#[cfg(test)]
mod hostname_tests {
    use super::pod_hostname;

    #[test]
    fn long_pod_names_are_cut_to_a_valid_hostname() {
        assert_eq!(pod_hostname(None, "web-1"), "web-1");
        assert_eq!(pod_hostname(Some("h"), "web-1"), "h");
        let long = format!("{}-{}", "a".repeat(62), "b".repeat(20));
        assert_eq!(pod_hostname(None, &long), "a".repeat(62));
        assert_eq!(pod_hostname(None, &"c".repeat(100)).len(), 63);
    }
}
