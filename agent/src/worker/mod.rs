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
//! - [`gate`]: the retry back-off of restarts and image pulls;
//! - [`sandbox`]: the pod's sandbox (its network namespace), decided purely;
//! - [`env`]: containers' environment and `$(VAR)` expansion (pure);
//! - [`volumes`]: the pod's volumes on the host and the containers' mounts;
//! - [`init`]: which init container runs next (pure);
//! - [`images`]: which images the engine is known to hold.
//!
//! This module is the task loop: messages from the pod manager, probes' news,
//! the sync that ties the three together, and deletion.

pub mod act;
pub mod env;
pub mod gate;
pub mod images;
pub mod init;
pub mod plan;
pub mod sandbox;
pub mod status;
#[cfg(test)]
mod tests;
pub mod volumes;

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

use self::act::{Act, ContainerSetup};
use self::env::{Fetched, PodFacts};
pub use self::gate::RetryGate;
use self::plan::{ContainerMemo, Phase, Step};
use self::sandbox::SandboxPlan;
use self::status::Observed;
use crate::AgentCtx;
use crate::probe::{self, ProbeState, Prober};

/// The longest a deleted pod waits for the nodes' proxies to stop sending it
/// new connections (usually milliseconds), within its grace period.
pub const DRAIN_WAIT: Duration = Duration::from_secs(10);
use crate::runtime::{
    ContainerInfo, LABEL_NODE, LABEL_POD_UID, MountSource, RuntimeError, VolumeSpec,
};

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
    /// The running sandbox's address (the pod IP), as of the last sync.
    sandbox_ip: Option<String>,
    /// The ConfigMaps and Secrets as last read (kept when the API is away).
    fetched: Fetched,
    /// The engine's host, read once (what unset limits read as).
    host: Option<crate::runtime::HostInfo>,
    /// The last `FailedMount` / `FailedCreatePodSandBox` reported, so each is
    /// reported once rather than at every sync.
    mount_problem: Option<String>,
    sandbox_problem: Option<String>,
}

/// What the containers of one sync are made with.
struct Prep {
    sandbox: Option<String>,
    /// Where the volumes are (`None`: not all could be set up).
    sources: Option<volumes::Sources>,
    fetched: Fetched,
    facts: PodFacts,
    net: act::PodNet,
    /// False while the sandbox cannot be made, or must not be.
    may_create: bool,
}

/// How often a pod with volumes written from ConfigMaps, Secrets or the
/// downward API reads them again, so mounted files follow edits.
const OBJECT_RESYNC: Duration = Duration::from_secs(2);

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
            sandbox_ip: None,
            fetched: Fetched::default(),
            host: None,
            mount_problem: None,
            sandbox_problem: None,
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
                msg = self.rx.recv() => {
                    // Everything already queued is taken before one sync for it
                    // all: a new pod's sandbox and container events arrive in a
                    // burst, and each sync lists the pod's containers.
                    let mut msg = msg;
                    loop {
                        match msg {
                            Some(Msg::Update(pod)) => {
                                if !self.holds(&pod) {
                                    next = Instant::now();
                                }
                                self.pod = pod;
                            }
                            Some(Msg::Poke) => next = Instant::now(),
                            Some(Msg::Gone) | None => {
                                self.terminate(None).await;
                                return;
                            }
                        }
                        match self.rx.try_recv() {
                            Ok(m) => msg = Some(m),
                            Err(_) => break,
                        }
                    }
                }
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

    /// Is `pod` the object this worker holds already (the same
    /// resourceVersion)? The watch echoes every status this worker writes, and
    /// the answer to that write is held already: nothing to look at again.
    fn holds(&self, pod: &Pod) -> bool {
        pod.metadata.resource_version.is_some()
            && pod.metadata.resource_version == self.pod.metadata.resource_version
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
        let mut wake = now + RESYNC;
        let mut existing = self.containers().await?;
        let act = Act::new(&self.ctx, &self.pod);
        // The sandbox first: every container joins its network.
        let mut may_create = true;
        // A pod that has finished is never started again, nor is its sandbox
        // (stopped below once the pod finished, as the kubelet does).
        let finished = pod_finished(self.pod.status.as_ref());
        let sandbox_id = match sandbox::plan(&existing, policy) {
            SandboxPlan::Create { .. } | SandboxPlan::StartCreated(_) if finished => {
                may_create = false;
                None
            }
            SandboxPlan::Ready(s) => Some(s.id.clone()),
            SandboxPlan::StartCreated(s) => {
                let id = s.id.clone();
                self.ctx.runtime.start(&id).await?;
                act.route_services(&id).await;
                existing = self.containers().await?;
                Some(id)
            }
            SandboxPlan::Create {
                attempt,
                kill,
                changed,
            } => {
                let kill: Vec<ContainerInfo> = kill.into_iter().cloned().collect();
                let old: Vec<String> = sandbox::sandboxes(&existing)
                    .iter()
                    .map(|s| s.id.clone())
                    .collect();
                match self.new_sandbox(&act, attempt, changed, &kill).await {
                    Some(id) => {
                        self.sandbox_problem = None;
                        for old in old {
                            let _ = self.ctx.runtime.remove(&old).await;
                        }
                        existing = self.containers().await?;
                        Some(id)
                    }
                    None => {
                        may_create = false;
                        wake = wake.min(now + Duration::from_secs(2));
                        None
                    }
                }
            }
            SandboxPlan::Legacy => None,
            SandboxPlan::Dead => {
                may_create = false;
                None
            }
        };
        self.sandbox_ip = sandbox_id
            .as_ref()
            .and_then(|id| {
                existing
                    .iter()
                    .find(|c| &c.id == id)
                    .and_then(|c| c.ip.clone())
            })
            // A finished pod keeps the address it had, as in Kubernetes.
            .or_else(|| {
                finished
                    .then(|| self.pod.status.as_ref()?.pod_ip.clone())
                    .flatten()
            });
        // Then what the containers are made of: objects, volumes.
        let fetched = self.fetch().await;
        let facts = self.facts().await;
        let sources = match self.setup_volumes(&fetched, &facts).await {
            Ok(sources) => {
                self.mount_problem = None;
                Some(sources)
            }
            Err(e) => {
                let message = e.to_string();
                if self.mount_problem.as_deref() != Some(&message) {
                    act.warning("FailedMount", &message).await;
                    self.mount_problem = Some(message);
                }
                wake = wake.min(now + Duration::from_secs(2));
                None
            }
        };
        if self.follows_objects() {
            wake = wake.min(now + OBJECT_RESYNC);
        }
        let prep = Prep {
            sandbox: sandbox_id,
            sources,
            fetched,
            facts,
            net: act.pod_net(),
            may_create,
        };
        // Init containers one at a time, in order, each to its successful end.
        let init_policy = match policy {
            plan::RestartPolicy::Never => plan::RestartPolicy::Never,
            _ => plan::RestartPolicy::OnFailure,
        };
        let initialized = init::initialized(&spec, &existing);
        if !initialized {
            if let Some(c) = init::next(&spec, &existing) {
                let w = self
                    .step_container(&c, init_policy, &existing, &prep, &act)
                    .await?;
                wake = wake.min(w);
            }
        } else {
            let sidecars = init::sidecars(&spec);
            for c in sidecars.iter().chain(spec.containers.iter()) {
                let policy = if init::is_sidecar(c) {
                    plan::RestartPolicy::Always
                } else {
                    policy
                };
                let w = self
                    .step_container(c, policy, &existing, &prep, &act)
                    .await?;
                wake = wake.min(w);
            }
        }
        let existing = self.containers().await?;
        let status = self.status(&existing);
        let done = pod_finished(Some(&status));
        self.post_status(status).await;
        if done {
            self.stop_sandboxes(&existing).await;
        }
        Ok(wake)
    }

    /// Stops the running sandbox of a pod that has finished: nothing will join
    /// its network again, so it only held an address and a process.
    async fn stop_sandboxes(&self, existing: &[ContainerInfo]) {
        for s in sandbox::sandboxes(existing)
            .into_iter()
            .filter(|s| s.state.running)
        {
            if let Err(e) = self.ctx.runtime.stop(&s.id, Duration::from_secs(1)).await {
                tracing::warn!(pod = %self.label(), error = %e, "cannot stop the finished pod's sandbox");
            }
        }
    }

    /// Makes the pod's sandbox (after stopping the containers of the one that
    /// died); `None` when it cannot be made now (an event says why).
    async fn new_sandbox(
        &mut self,
        act: &Act,
        attempt: u32,
        changed: bool,
        kill: &[ContainerInfo],
    ) -> Option<String> {
        if changed {
            act.normal(
                "SandboxChanged",
                "Pod sandbox changed, it will be killed and re-created.",
            )
            .await;
            let grace = self.grace(None);
            let stops = kill.iter().map(|k| {
                self.ctx.runtime.stop(
                    &k.id,
                    Duration::from_secs(u64::try_from(grace).unwrap_or(0)),
                )
            });
            futures::future::join_all(stops).await;
        }
        let made = match act.ensure_sandbox_image().await {
            Ok(()) => act.start_sandbox(attempt).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match made {
            Ok(id) => Some(id),
            Err(message) => {
                let message = format!("Failed to create pod sandbox: {message}");
                if self.sandbox_problem.as_deref() != Some(&message) {
                    act.warning("FailedCreatePodSandBox", &message).await;
                    tracing::warn!(pod = %self.label(), problem = %message, "cannot make the pod's sandbox; retrying");
                    self.sandbox_problem = Some(message);
                }
                None
            }
        }
    }

    /// The ConfigMaps and Secrets the pod refers to, as the API has them now;
    /// the last ones read when it cannot answer.
    async fn fetch(&mut self) -> Fetched {
        let (cms, secrets) = env::references(&self.pod);
        if cms.is_empty() && secrets.is_empty() {
            return Fetched::default();
        }
        let ns = self
            .pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let mut fetched = Fetched::default();
        for name in cms {
            match self.ctx.objects.config_map(&ns, &name).await {
                Ok(cm) => {
                    fetched.config_maps.insert(name, cm);
                }
                Err(e) => {
                    tracing::warn!(pod = %self.label(), error = %e, "cannot read a configmap; using the last one read");
                    let last = self.fetched.config_maps.get(&name).cloned().flatten();
                    fetched.config_maps.insert(name, last);
                }
            }
        }
        for name in secrets {
            match self.ctx.objects.secret(&ns, &name).await {
                Ok(s) => {
                    fetched.secrets.insert(name, s);
                }
                Err(e) => {
                    tracing::warn!(pod = %self.label(), error = %e, "cannot read a secret; using the last one read");
                    let last = self.fetched.secrets.get(&name).cloned().flatten();
                    fetched.secrets.insert(name, last);
                }
            }
        }
        self.fetched = fetched.clone();
        fetched
    }

    /// What `fieldRef`s and `resourceFieldRef`s read besides the pod.
    async fn facts(&mut self) -> PodFacts {
        if self.host.is_none() {
            // One engine `info` for the agent, not one per pod.
            let runtime = &self.ctx.runtime;
            self.host = self
                .ctx
                .host
                .get_or_try_init(|| runtime.host_info())
                .await
                .ok()
                .cloned();
        }
        PodFacts {
            pod_ip: self
                .sandbox_ip
                .clone()
                .or_else(|| self.pod.status.as_ref().and_then(|s| s.pod_ip.clone())),
            host_ip: self.ctx.address.clone(),
            node_cpu_millis: self.host.as_ref().map(|h| h.cpus * 1000),
            node_memory: self.host.as_ref().map(|h| h.memory_bytes),
        }
    }

    /// Whether the pod has volumes written from objects (followed on resync).
    fn follows_objects(&self) -> bool {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .is_some_and(|vs| vs.iter().any(volumes::is_projected))
    }

    /// Sets up (or refreshes) every volume of the pod; where each is on the host.
    async fn setup_volumes(
        &self,
        fetched: &Fetched,
        facts: &PodFacts,
    ) -> Result<volumes::Sources, volumes::VolumeError> {
        let uid = self.pod.metadata.uid.clone().unwrap_or_default();
        let mut sources = volumes::Sources::new();
        let vols = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        for v in &vols {
            let fail = |message: String| volumes::VolumeError {
                volume: v.name.clone(),
                message,
            };
            if let Some(ed) = &v.empty_dir
                && ed.medium.as_deref() == Some("Memory")
            {
                {
                    let name = volumes::memory_volume_name(&uid, &v.name);
                    let spec = VolumeSpec {
                        name: name.clone(),
                        labels: [
                            (LABEL_POD_UID.to_string(), uid.clone()),
                            (LABEL_NODE.to_string(), self.ctx.node.clone()),
                        ]
                        .into(),
                        size_bytes: ed
                            .size_limit
                            .as_ref()
                            .and_then(|q| tugboat_api::quantity::bytes(&q.0)),
                    };
                    self.ctx
                        .runtime
                        .create_volume(&spec)
                        .await
                        .map_err(|e| fail(e.to_string()))?;
                    sources.insert(v.name.clone(), MountSource::Volume(name));
                    continue;
                }
            }
            if let Some(hp) = &v.host_path {
                let (path, kind) = (hp.path.clone(), hp.type_.clone());
                tokio::task::spawn_blocking(move || {
                    volumes::check_host_path(&path, kind.as_deref())
                })
                .await
                .map_err(|e| fail(e.to_string()))?
                .map_err(fail)?;
                sources.insert(v.name.clone(), MountSource::Bind(hp.path.clone()));
                continue;
            }
            let Some(dir) = volumes::volume_dir(&self.ctx.pods_dir, &uid, v) else {
                continue; // not served here (the API warned of it)
            };
            if volumes::is_projected(v) {
                let files = volumes::desired_files(&self.pod, v, fetched, facts)?;
                let target = dir.clone();
                tokio::task::spawn_blocking(move || volumes::write_atomic(&target, &files))
                    .await
                    .map_err(|e| fail(e.to_string()))?
                    .map_err(|e| fail(format!("writing {}: {e}", dir.display())))?;
            } else {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
                // Any user of any container may write an emptyDir, as in Kubernetes.
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777));
            }
            sources.insert(
                v.name.clone(),
                MountSource::Bind(dir.to_string_lossy().into_owned()),
            );
        }
        Ok(sources)
    }

    /// Removes the pod's volumes (its directory and its named volumes).
    async fn remove_volumes(&self) {
        let uid = self.pod.metadata.uid.clone().unwrap_or_default();
        if uid.is_empty() {
            return;
        }
        for v in self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
        {
            if v.empty_dir.as_ref().and_then(|e| e.medium.as_deref()) == Some("Memory") {
                let name = volumes::memory_volume_name(&uid, &v.name);
                if let Err(e) = self.ctx.runtime.remove_volume(&name).await {
                    tracing::warn!(pod = %self.label(), volume = %name, error = %e, "cannot remove the pod's volume");
                }
            }
        }
        let dir = volumes::pod_dir(&self.ctx.pods_dir, &uid);
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(pod = %self.label(), dir = %dir.display(), error = %e, "cannot remove the pod's volume directory");
        }
    }

    /// The next step for container `c` (init or app) under `policy`; returns
    /// when to look again.
    async fn step_container(
        &mut self,
        c: &Container,
        policy: plan::RestartPolicy,
        existing: &[ContainerInfo],
        prep: &Prep,
        act: &Act,
    ) -> Result<Instant, RuntimeError> {
        let now = Instant::now();
        let wall = jiff::Timestamp::now();
        let mut wake = now + RESYNC;
        let attempts = plan::attempts(existing, &c.name);
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
                if self.supervise(c, info, act).await {
                    wake = Instant::now();
                }
            }
            (Step::Supervise, _) => {}
            (Step::Create, _) => {
                // No sandbox, or volumes not set up (a `FailedMount` said why):
                // the container waits in `ContainerCreating`.
                if !prep.may_create || prep.sources.is_none() {
                    return Ok(wake.min(now + Duration::from_secs(2)));
                }
                let setup = match self.setup_of(c, prep) {
                    Ok(setup) => {
                        self.memo_mut(&c.name).config_problem = None;
                        setup
                    }
                    Err(problem) => {
                        let memo = self.memo_mut(&c.name);
                        if memo.config_problem.as_deref() != Some(&problem) {
                            memo.config_problem = Some(problem.clone());
                            act.warning("Failed", &format!("Error: {problem}")).await;
                        }
                        return Ok(wake.min(now + Duration::from_secs(2)));
                    }
                };
                if let Err(problem) = act.ensure_image(c).await {
                    let memo = self.memo_mut(&c.name);
                    memo.pull.fail(now);
                    memo.pull.fail(now); // image pulls back off from the first failure
                    wake = wake.min(memo.pull.not_before.unwrap_or(wake));
                    memo.image_problem = Some(problem.clone());
                    act.image_failed(c, &problem).await;
                    return Ok(wake);
                }
                let memo = self.memo_mut(&c.name);
                memo.pull.reset();
                memo.image_problem = None;
                self.restart(c, &attempts, existing, next_attempt, act, &setup)
                    .await?;
                wake = Instant::now();
            }
        }
        Ok(wake)
    }

    /// How container `c` is made now: its environment, command, args and
    /// mounts; the kubelet's `CreateContainerConfigError` message when it
    /// cannot be yet.
    fn setup_of(&self, c: &Container, prep: &Prep) -> Result<ContainerSetup, String> {
        let Some(sources) = &prep.sources else {
            return Err("volumes are not set up".to_string());
        };
        let env = env::container_env(
            &self.pod,
            c,
            &prep.fetched,
            &prep.facts,
            &prep.net.service_env,
        )
        .map_err(|e| e.0)?;
        let (command, args) = env::expand_command(c, &env);
        let read_only: std::collections::BTreeSet<String> = self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter(|v| volumes::is_projected(v))
            .map(|v| v.name.clone())
            .collect();
        let mounts = volumes::container_mounts(c, sources, &env, &read_only)?;
        Ok(ContainerSetup {
            sandbox: prep.sandbox.clone(),
            net: prep.net.clone(),
            env,
            command,
            args,
            mounts,
        })
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
        attempts: &[&ContainerInfo],
        existing: &[ContainerInfo],
        attempt: u32,
        act: &Act,
        setup: &ContainerSetup,
    ) -> Result<(), RuntimeError> {
        let latest = attempts.last().copied();
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
        let (reported, started) = tokio::join!(report, act.start_container(c, attempt, setup));
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
                // In a sandbox the container has no address of its own.
                ip: info.ip.clone().or_else(|| self.sandbox_ip.clone()),
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
            sandbox_ip: self.sandbox_ip.as_deref(),
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
        self.remove_volumes().await;
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
        self.remove_volumes().await;
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

/// Whether a pod's status says it has finished (`Succeeded` or `Failed`).
fn pod_finished(status: Option<&PodStatus>) -> bool {
    matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}
