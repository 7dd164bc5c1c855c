//! The worker against the in-memory [`FakeRuntime`] and an in-memory
//! [`PodSink`]: restart policies and exit codes, crash back-off, image pulls,
//! probes, and deletion with grace. Time is paused (tokio's test clock), so
//! back-offs and grace periods take no real time; every wait has a timeout.

use std::future::Future;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition};
use serde_json::json;
use tugboat_runtime::events::EventType;

use super::*;
use crate::runtime::fake::FakeRuntime;
use crate::runtime::{ContainerRuntime, ExecOutput};
use crate::sink::{PodSink, SinkError};

const IMAGE: &str = "tugboat/sample:1.0";
const HOST: &str = "192.0.2.10";
/// The crash back-off's first delay (doubling to 8s).
const BACKOFF: Duration = Duration::from_secs(1);
/// Long for a test, short for anything that should happen.
const WAIT: Duration = Duration::from_secs(120);

/// What the worker wrote: every status patch, releases and events.
#[derive(Default)]
struct MemorySink {
    patches: Mutex<Vec<PodStatus>>,
    released: Mutex<Vec<String>>,
    events: Mutex<Vec<(EventType, String, String)>>,
}

#[async_trait::async_trait]
impl PodSink for MemorySink {
    async fn patch_status(&self, pod: &Pod, status: &PodStatus) -> Result<Option<Pod>, SinkError> {
        lock(&self.patches).push(status.clone());
        let mut stored = pod.clone();
        stored.status = Some(status.clone());
        Ok(Some(stored))
    }

    async fn release(&self, pod: &Pod) -> Result<(), SinkError> {
        lock(&self.released).push(pod.metadata.name.clone().unwrap_or_default());
        Ok(())
    }

    async fn event(&self, _pod: &Pod, event_type: EventType, reason: &str, message: &str) {
        lock(&self.events).push((event_type, reason.to_string(), message.to_string()));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemorySink {
    fn reasons(&self) -> Vec<String> {
        lock(&self.events)
            .iter()
            .map(|(_, r, _)| r.clone())
            .collect()
    }

    fn messages(&self, reason: &str) -> Vec<String> {
        lock(&self.events)
            .iter()
            .filter(|(_, r, _)| r == reason)
            .map(|(_, _, m)| m.clone())
            .collect()
    }
}

/// A pod fixture: one container `app` of [`IMAGE`], built up field by field.
struct PodBuilder(serde_json::Value);

impl PodBuilder {
    fn new() -> PodBuilder {
        PodBuilder(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "team", "uid": "uid-1"},
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": IMAGE}]},
        }))
    }

    fn restart_policy(mut self, policy: &str) -> Self {
        self.0["spec"]["restartPolicy"] = json!(policy);
        self
    }

    fn image(mut self, image: &str) -> Self {
        self.0["spec"]["containers"][0]["image"] = json!(image);
        self
    }

    fn probe(mut self, kind: &str, probe: serde_json::Value) -> Self {
        self.0["spec"]["containers"][0][kind] = probe;
        self
    }

    fn grace(mut self, seconds: i64) -> Self {
        self.0["spec"]["terminationGracePeriodSeconds"] = json!(seconds);
        self
    }

    fn build(self) -> Pod {
        serde_json::from_value(self.0).expect("a valid pod")
    }
}

/// A worker on a fake node, driven one sync at a time.
struct Harness {
    fake: Arc<FakeRuntime>,
    sink: Arc<MemorySink>,
    tracker: TaskTracker,
    worker: Worker,
    tx: mpsc::Sender<Msg>,
}

impl Harness {
    fn new(pod: Pod, fake: FakeRuntime) -> Harness {
        let fake = Arc::new(fake);
        let sink = Arc::new(MemorySink::default());
        let ctx = Arc::new(AgentCtx {
            node: "n1".into(),
            address: HOST.into(),
            // Never called: the worker writes through the sink.
            client: tugboat_api::Client::new("http://127.0.0.1:9").expect("a client"),
            runtime: fake.clone(),
            sink: sink.clone(),
            backoff_initial: BACKOFF,
            backoff_max: Duration::from_secs(8),
            network: None,
            host_port_ip: None,
            http: {
                tugboat_tls::install_default_provider();
                reqwest::Client::new()
            },
            tls: None,
            proxy: Arc::new(crate::proxy::Shared::default()),
            metrics: crate::metrics::Collector::new("n1", crate::runtime::NodeFigures::SumOfPods).0,
            cluster: Arc::new(crate::proxy::cluster::ClusterNet::new(
                None,
                tugboat_runtime::reflector::Writer::new().store(),
            )),
            pod_infra: crate::worker::sandbox::PodInfra::default(),
            objects: Arc::new(crate::objects::MemoryObjects::default()),
            pods_dir: std::env::temp_dir().join("tugboat-agent-unit-tests"),
            images: Default::default(),
            host: Default::default(),
        });
        let tracker = TaskTracker::new();
        let (tx, rx) = mpsc::channel(8);
        let worker = Worker::new(ctx, Arc::new(pod), rx, tracker.clone());
        Harness {
            fake,
            sink,
            tracker,
            worker,
            tx,
        }
    }

    async fn sync(&mut self) -> Instant {
        within(self.worker.sync()).await.expect("a sync")
    }

    /// The status as last written.
    fn status(&self) -> PodStatus {
        self.worker
            .pod
            .status
            .clone()
            .expect("a status was written")
    }

    fn phase(&self) -> String {
        self.status().phase.unwrap_or_default()
    }

    fn container_status(&self) -> ContainerStatus {
        self.status()
            .container_statuses
            .expect("container statuses")[0]
            .clone()
    }

    fn condition(&self, kind: &str) -> PodCondition {
        let status = self.status();
        status
            .conditions
            .into_iter()
            .flatten()
            .find(|c| c.type_ == kind)
            .expect("the condition")
    }

    /// The pod's containers in the fake, oldest attempt first.
    async fn containers(&self) -> Vec<ContainerInfo> {
        let mut all = within(self.fake.list(&[])).await.expect("a list");
        all.retain(|c| !sandbox::is_sandbox(c));
        all.sort_by_key(ContainerInfo::attempt);
        all
    }

    async fn latest(&self) -> ContainerInfo {
        self.containers().await.pop().expect("a container")
    }

    /// Ends the worker and checks that everything it spawned ends too.
    async fn finish(self) {
        drop(self.worker);
        self.tracker.close();
        within(self.tracker.wait()).await;
    }
}

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .expect("done within the timeout")
}

fn fake() -> FakeRuntime {
    FakeRuntime::new().with_images(&[IMAGE, crate::proxy::sandbox::SANDBOX_IMAGE])
}

fn exec_answers(fake: &FakeRuntime, exit_code: i64) {
    fake.set_exec_result(ExecOutput {
        exit_code,
        output: String::new(),
    });
}

#[tokio::test(start_paused = true)]
async fn a_new_pod_gets_its_container_running_and_reported() {
    let mut h = Harness::new(PodBuilder::new().build(), fake());
    h.sync().await;
    let c = h.latest().await;
    assert!(c.state.running);
    assert_eq!(c.name, "tug_team_web-1_app_0");
    assert_eq!(h.phase(), "Running");
    assert_eq!(h.condition("Ready").status, "True");
    assert_eq!(h.status().pod_ip, c.ip);
    assert_eq!(h.status().host_ip.as_deref(), Some(HOST));
    assert!(h.status().start_time.is_some());
    assert_eq!(
        h.sink.reasons(),
        ["Pulled", "Created", "Started"],
        "the image was present"
    );
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_status_that_did_not_change_is_not_patched_again() {
    let mut h = Harness::new(PodBuilder::new().build(), fake());
    h.sync().await;
    let patches = lock(&h.sink.patches).len();
    assert!(patches >= 1);
    tokio::time::advance(Duration::from_secs(5)).await;
    h.sync().await;
    h.sync().await;
    assert_eq!(lock(&h.sink.patches).len(), patches, "nothing changed");
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn each_restart_policy_and_exit_code_restarts_or_ends_the_pod() {
    let cases = [
        ("Always", 0, true, "Running"),
        ("Always", 1, true, "Running"),
        ("OnFailure", 0, false, "Succeeded"),
        ("OnFailure", 1, true, "Running"),
        ("Never", 0, false, "Succeeded"),
        ("Never", 1, false, "Failed"),
    ];
    for (policy, code, restarts, phase) in cases {
        let what = format!("{policy}, exit {code}");
        let mut h = Harness::new(PodBuilder::new().restart_policy(policy).build(), fake());
        h.sync().await;
        let first = h.latest().await;
        h.fake.crash(&first.id, code).unwrap();
        h.sync().await;
        let containers = h.containers().await;
        let st = h.container_status();
        if restarts {
            assert_eq!(containers.len(), 2, "{what}: a new attempt");
            assert!(containers[1].state.running, "{what}");
            assert_eq!(st.restart_count, 1, "{what}");
            let last = st.last_state.and_then(|s| s.terminated).expect("lastState");
            assert_eq!(last.exit_code, code as i32, "{what}");
            let crash_reported = lock(&h.sink.patches).iter().any(|p| {
                p.container_statuses.iter().flatten().any(|s| {
                    s.state
                        .as_ref()
                        .and_then(|s| s.terminated.as_ref())
                        .is_some()
                })
            });
            assert!(
                crash_reported,
                "{what}: the crash was reported while restarting"
            );
        } else {
            assert_eq!(containers.len(), 1, "{what}: not restarted");
            let ended = st.state.and_then(|s| s.terminated).expect("terminated");
            assert_eq!(ended.exit_code, code as i32, "{what}");
            assert_eq!(st.restart_count, 0, "{what}");
        }
        assert_eq!(h.phase(), phase, "{what}");
        h.finish().await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_second_crash_waits_for_the_back_off_in_crash_loop_back_off() {
    let mut h = Harness::new(PodBuilder::new().build(), fake());
    h.sync().await;
    h.fake.crash(&h.latest().await.id, 1).unwrap();
    h.sync().await;
    assert_eq!(
        h.containers().await.len(),
        2,
        "the first crash restarts at once"
    );
    assert!(h.sink.messages("BackOff").is_empty());

    h.fake.crash(&h.latest().await.id, 1).unwrap();
    let wake = h.sync().await;
    assert_eq!(h.containers().await.len(), 2, "the second one waits");
    let waiting = h
        .container_status()
        .state
        .and_then(|s| s.waiting)
        .expect("waiting");
    assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
    assert!(
        waiting.message.unwrap_or_default().contains("back-off 1s"),
        "the wait is the first back-off"
    );
    // As before the split: nothing runs and nothing ended for good (Kubernetes
    // would keep `Running` here).
    assert_eq!(h.phase(), "Pending");
    assert_eq!(h.condition("Ready").status, "False");
    assert_eq!(
        h.sink.messages("BackOff"),
        ["Back-off restarting failed container app in pod team/web-1"]
    );
    let now = Instant::now();
    assert!(
        wake > now && wake <= now + BACKOFF,
        "looks again when the back-off ends"
    );

    h.sync().await;
    assert_eq!(h.containers().await.len(), 2, "still backing off");
    tokio::time::advance(BACKOFF).await;
    h.sync().await;
    let latest = h.latest().await;
    assert!(latest.state.running);
    assert_eq!(latest.attempt(), 2);
    assert_eq!(h.container_status().restart_count, 2);
    // The oldest attempt goes once the new one runs; the one before stays.
    within(async {
        // Two attempts and the sandbox.
        while h.fake.container_count() > 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let attempts: Vec<u32> = h.containers().await.iter().map(|c| c.attempt()).collect();
    assert_eq!(attempts, [1, 2]);
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_missing_image_is_err_image_pull_then_image_pull_back_off() {
    let missing = "tugboat/missing:1.0";
    let mut h = Harness::new(PodBuilder::new().image(missing).build(), fake());
    let wake = h.sync().await;
    assert_eq!(
        h.containers().await.len(),
        0,
        "nothing created but the sandbox"
    );
    assert_eq!(h.fake.pulls(), [missing]);
    assert_eq!(
        h.sink.messages("Failed").last().map(String::as_str),
        Some("Error: ErrImagePull")
    );
    let waiting = h
        .container_status()
        .state
        .and_then(|s| s.waiting)
        .expect("waiting");
    assert_eq!(waiting.reason.as_deref(), Some("ImagePullBackOff"));
    let message = waiting.message.unwrap_or_default();
    assert!(
        message.starts_with(&format!("Back-off pulling image \"{missing}\"")),
        "{message}"
    );
    assert!(
        message.contains("pull access denied"),
        "Docker's message: {message}"
    );
    assert_eq!(h.phase(), "Pending");
    assert!(wake <= Instant::now() + BACKOFF);

    h.sync().await;
    assert_eq!(h.fake.pulls().len(), 1, "no pull while backing off");
    tokio::time::advance(BACKOFF).await;
    h.sync().await;
    assert_eq!(h.fake.pulls().len(), 2, "pulled again after the back-off");

    // Each failed round doubles the back-off twice: 1s, then 4s.
    h.fake.add_image(missing);
    tokio::time::advance(Duration::from_secs(4)).await;
    h.sync().await;
    assert!(
        h.latest().await.state.running,
        "runs once the image is there"
    );
    assert_eq!(h.phase(), "Running");
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_liveness_probe_restarts_the_container() {
    let pod = PodBuilder::new()
        .probe(
            "livenessProbe",
            json!({"exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 1, "failureThreshold": 2}),
        )
        .grace(7)
        .build();
    let fake = fake();
    exec_answers(&fake, 1);
    let mut h = Harness::new(pod, fake);
    let wake = h.sync().await;
    assert_eq!(
        wake,
        Instant::now(),
        "a new container is looked at again at once"
    );
    h.sync().await;
    let first = h.latest().await;
    assert!(first.state.running);
    within(h.worker.probed.notified()).await;
    h.sync().await;
    assert_eq!(h.fake.stops(), [(first.id.clone(), Duration::from_secs(7))]);
    assert_eq!(
        h.sink.messages("Killing"),
        [
            "Container app failed liveness probe, will be restarted (command \"cat /tmp/healthy\" exited with 1: )"
        ]
    );
    assert_eq!(
        h.sink.messages("Unhealthy").len(),
        2,
        "one per failed probe"
    );
    h.sync().await;
    let latest = h.latest().await;
    assert_eq!(latest.attempt(), 1, "restarted");
    assert!(latest.state.running);
    let last = h.container_status().last_state.and_then(|s| s.terminated);
    assert_eq!(last.map(|t| t.exit_code), Some(143), "stopped with SIGTERM");
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn readiness_sets_the_ready_condition() {
    let pod = PodBuilder::new()
        .probe(
            "readinessProbe",
            json!({"exec": {"command": ["ready"]}, "periodSeconds": 1, "failureThreshold": 1}),
        )
        .build();
    let fake = fake();
    exec_answers(&fake, 0);
    let mut h = Harness::new(pod, fake);
    h.sync().await;
    h.sync().await;
    assert_eq!(h.phase(), "Running");
    assert_eq!(h.condition("Ready").status, "False", "not probed yet");
    assert!(!h.container_status().ready);

    within(h.worker.probed.notified()).await;
    h.sync().await;
    assert_eq!(h.condition("Ready").status, "True");
    assert_eq!(h.condition("ContainersReady").status, "True");
    assert!(h.container_status().ready);

    exec_answers(&h.fake, 1);
    within(h.worker.probed.notified()).await;
    h.sync().await;
    assert_eq!(h.condition("Ready").status, "False");
    assert_eq!(
        h.condition("Ready").reason.as_deref(),
        Some("ContainersNotReady")
    );
    assert!(h.latest().await.state.running, "not ready is not restarted");
    assert_eq!(h.containers().await.len(), 1);
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_deleted_pod_is_stopped_with_its_grace_then_killed_and_released() {
    let pod = PodBuilder::new().grace(30).build();
    let mut h = Harness::new(pod.clone(), fake().with_sigterm_ignored());
    h.sync().await;
    let id = h.latest().await.id;

    let mut deleting = pod;
    deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
    deleting.metadata.deletion_grace_period_seconds = Some(5);
    h.tx.send(Msg::Update(Arc::new(deleting))).await.unwrap();
    let started = Instant::now();
    let shutdown = CancellationToken::new();
    let Harness {
        fake,
        sink,
        tracker,
        worker,
        tx: _tx,
    } = h;
    within(worker.run(shutdown)).await;
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "waited out the deletion's grace"
    );
    // The app container with the grace, the sandbox after it.
    assert_eq!(fake.stops()[..1], [(id.clone(), Duration::from_secs(5))]);
    assert_eq!(fake.stops().len(), 2);
    assert_eq!(fake.container_count(), 0, "its containers are removed");
    assert_eq!(*lock(&sink.released), ["web-1"]);
    assert_eq!(sink.messages("Killing"), ["Stopping container app"]);
    tracker.close();
    within(tracker.wait()).await;
}

#[tokio::test(start_paused = true)]
async fn a_pod_gone_from_the_api_is_stopped_with_its_own_grace_and_not_released() {
    let mut h = Harness::new(PodBuilder::new().grace(12).build(), fake());
    h.sync().await;
    let id = h.latest().await.id;
    h.tx.send(Msg::Gone).await.unwrap();
    let Harness {
        fake,
        sink,
        tracker,
        worker,
        tx: _tx,
    } = h;
    within(worker.run(CancellationToken::new())).await;
    assert_eq!(fake.stops()[..1], [(id, Duration::from_secs(12))]);
    assert_eq!(fake.stops().len(), 2, "the sandbox after");
    assert_eq!(fake.container_count(), 0);
    assert!(lock(&sink.released).is_empty(), "nothing to release");
    tracker.close();
    within(tracker.wait()).await;
}

#[tokio::test(start_paused = true)]
async fn stopping_the_agent_leaves_the_containers_running() {
    let mut h = Harness::new(PodBuilder::new().build(), fake());
    h.sync().await;
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    let Harness {
        fake,
        tracker,
        worker,
        tx: _tx,
        ..
    } = h;
    within(worker.run(shutdown)).await;
    assert_eq!(fake.container_count(), 2, "the container and its sandbox");
    assert!(fake.stops().is_empty());
    tracker.close();
    within(tracker.wait()).await;
}

#[tokio::test(start_paused = true)]
async fn a_deleted_pods_pre_stop_hook_runs_first_and_its_time_counts_against_the_grace() {
    let pod = PodBuilder::new()
        .grace(10)
        .probe("lifecycle", json!({"preStop": {"sleep": {"seconds": 3}}}))
        .build();
    let mut h = Harness::new(pod.clone(), fake().with_sigterm_ignored());
    h.sync().await;
    let id = h.latest().await.id;
    let mut deleting = pod;
    deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
    deleting.metadata.deletion_grace_period_seconds = Some(10);
    h.tx.send(Msg::Update(Arc::new(deleting))).await.unwrap();
    let started = Instant::now();
    let Harness {
        fake,
        tracker,
        worker,
        tx: _tx,
        ..
    } = h;
    within(worker.run(CancellationToken::new())).await;
    // The hook's 3 s, then SIGTERM with what is left of the 10 s.
    assert_eq!(fake.stops()[..1], [(id, Duration::from_secs(7))]);
    assert!(started.elapsed() >= Duration::from_secs(10));
    tracker.close();
    within(tracker.wait()).await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_pre_stop_exec_is_reported_and_the_pod_still_stops() {
    let pod = PodBuilder::new()
        .grace(5)
        .probe(
            "lifecycle",
            json!({"preStop": {"exec": {"command": ["/bin/drain", "--now"]}}}),
        )
        .build();
    let fake = fake();
    let ran = Arc::new(Mutex::new(Vec::<Vec<String>>::new()));
    let seen = ran.clone();
    fake.set_exec_handler(Arc::new(move |_, cmd| {
        seen.lock().unwrap().push(cmd.to_vec());
        Ok(crate::runtime::ExecOutput {
            exit_code: 1,
            output: "busy".into(),
        })
    }));
    let mut h = Harness::new(pod.clone(), fake);
    h.sync().await;
    let mut deleting = pod;
    deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
    deleting.metadata.deletion_grace_period_seconds = Some(5);
    h.tx.send(Msg::Update(Arc::new(deleting))).await.unwrap();
    let Harness {
        fake,
        sink,
        tracker,
        worker,
        tx: _tx,
    } = h;
    within(worker.run(CancellationToken::new())).await;
    assert_eq!(
        *ran.lock().unwrap(),
        [vec!["/bin/drain".to_string(), "--now".into()]]
    );
    let failed = sink.messages("FailedPreStopHook");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("exited with 1"), "{failed:?}");
    assert_eq!(fake.container_count(), 0);
    tracker.close();
    within(tracker.wait()).await;
}

/// The watch echoes every status the worker writes; an update with the
/// resourceVersion the worker holds is that echo and costs no sync. A burst of
/// pokes queued together costs one sync, not one each.
#[tokio::test(start_paused = true)]
async fn an_echo_of_the_pod_held_costs_no_sync_and_a_burst_costs_one() {
    let mut pod = PodBuilder::new().build();
    pod.metadata.resource_version = Some("5".into());
    let h = Harness::new(pod.clone(), fake());
    let Harness {
        fake,
        sink,
        tracker,
        worker,
        tx,
    } = h;
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    // Running, reported, and quiet (the next resync is 10 s away).
    within(async {
        while !lock(&sink.patches)
            .iter()
            .any(|s| s.phase.as_deref() == Some("Running"))
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let settle = || tokio::time::sleep(Duration::from_millis(100));
    settle().await;
    let quiet = fake.lists();

    // The echo: the same resourceVersion.
    tx.send(Msg::Update(Arc::new(pod.clone()))).await.unwrap();
    settle().await;
    assert_eq!(fake.lists(), quiet, "an echo is not synced");

    // A change: one sync, whose lists are what one sync costs.
    let mut changed = pod.clone();
    changed.metadata.resource_version = Some("6".into());
    tx.send(Msg::Update(Arc::new(changed))).await.unwrap();
    settle().await;
    let per_sync = fake.lists() - quiet;
    assert!(per_sync > 0, "a changed pod is synced");

    // Five pokes queued at once: one sync.
    let before = fake.lists();
    for _ in 0..5 {
        tx.send(Msg::Poke).await.unwrap();
    }
    settle().await;
    assert_eq!(fake.lists() - before, per_sync, "the burst is synced once");

    shutdown.cancel();
    within(run).await.unwrap();
    drop(tx);
    tracker.close();
    within(tracker.wait()).await;
}
