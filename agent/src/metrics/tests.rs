//! The collector's arithmetic on samples and `/proc` text, and the collector on
//! the fake engine under tokio's paused clock: which containers it follows, when,
//! and what it reports.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::host::{self, CpuTimes, HostSample};
use super::*;
use crate::runtime::fake::FakeRuntime;
use crate::runtime::{ContainerSpec, LABEL_ATTEMPT};

const WAIT: Duration = Duration::from_secs(60);
const IMAGE: &str = "tugboat/sample:latest";
const NODE: &str = "n1";

fn at(text: &str) -> jiff::Timestamp {
    text.parse().expect("a timestamp")
}

fn sample(read: &str, cpu_total_ns: u64, memory_working_set: u64) -> ContainerStats {
    ContainerStats {
        read: at(read),
        cpu_total_ns,
        memory_working_set,
    }
}

#[test]
fn cpu_is_the_cpu_time_used_per_second_between_two_samples() {
    let earlier = sample("2026-12-02T10:00:00Z", 1_000_000_000, 10 << 20);
    let later = sample("2026-12-02T10:00:02Z", 1_500_000_000, 12 << 20);
    assert_eq!(
        rate(&earlier, &later),
        Some(Rate {
            timestamp: at("2026-12-02T10:00:02Z"),
            window: Duration::from_secs(2),
            cpu_nano_cores: 250_000_000,
            memory_working_set: 12 << 20,
        })
    );
    // Two CPUs busy for 1.5 s.
    let busy = sample("2026-12-02T10:00:01.5Z", 4_000_000_000, 0);
    assert_eq!(
        rate(&earlier, &busy).map(|r| r.cpu_nano_cores),
        Some(2_000_000_000)
    );
}

#[test]
fn no_rate_comes_from_samples_out_of_order_at_the_same_time_or_with_cpu_gone_back() {
    let earlier = sample("2026-12-02T10:00:00Z", 1_000_000_000, 0);
    assert_eq!(rate(&earlier, &earlier), None);
    assert_eq!(
        rate(&earlier, &sample("2026-12-02T09:59:59Z", 2_000_000_000, 0)),
        None
    );
    assert_eq!(
        rate(&earlier, &sample("2026-12-02T10:00:01Z", 5, 0)),
        None,
        "a counter that went back started over"
    );
}

const PROC_STAT: &str = "\
cpu  984910 0 152422 862046 6247 0 2272 7184 0 0
cpu0 469661 0 73120 458382 2189 0 487 3516 0 0
cpu1 515249 0 79301 403664 4058 0 1785 3667 0 0
intr 123 0 0
ctxt 4567
btime 1700000000
";

#[test]
fn proc_stat_gives_busy_and_total_jiffies_and_the_number_of_cpus() {
    assert_eq!(
        host::parse_proc_stat(PROC_STAT),
        Some(CpuTimes {
            busy: 984_910 + 152_422 + 2_272 + 7_184,
            total: 984_910 + 152_422 + 862_046 + 6_247 + 2_272 + 7_184,
            cpus: 2,
        })
    );
    assert_eq!(host::parse_proc_stat("intr 1\n"), None);
    assert_eq!(host::parse_proc_stat("cpu  1 2 x 4\ncpu0 1 2 3 4\n"), None);
}

#[test]
fn meminfo_gives_total_less_available() {
    let meminfo = "MemTotal:        8000000 kB\nMemFree:          100000 kB\nMemAvailable:    6000000 kB\nBuffers:  1 kB\n";
    assert_eq!(host::parse_meminfo(meminfo), Some(2_000_000 * 1024));
    assert_eq!(host::parse_meminfo("MemTotal: 1 kB\n"), None);
}

#[test]
fn the_hosts_cpu_is_its_busy_share_of_jiffies_times_its_cpus() {
    let reading = |at_: &str, busy, total| HostSample {
        at: at(at_),
        cpu: CpuTimes {
            busy,
            total,
            cpus: 4,
        },
        memory_working_set: 3 << 30,
    };
    // 400 jiffies went by (4 CPUs, 1 s at 100 Hz); 150 of them busy: 1.5 CPUs.
    let r = host::rate(
        &reading("2026-12-02T10:00:00Z", 1000, 10_000),
        &reading("2026-12-02T10:00:01Z", 1150, 10_400),
    )
    .unwrap();
    assert_eq!(r.cpu_nano_cores, 1_500_000_000);
    assert_eq!(r.window, Duration::from_secs(1));
    assert_eq!(r.memory_working_set, 3 << 30);
    assert_eq!(
        host::rate(
            &reading("2026-12-02T10:00:00Z", 1000, 10_000),
            &reading("2026-12-02T10:00:01Z", 1000, 10_000),
        ),
        None,
        "no jiffy went by"
    );
}

#[tokio::test]
async fn this_hosts_proc_reads() {
    let reading = host::read().await.expect("/proc/stat and /proc/meminfo");
    assert!(reading.cpu.cpus > 0 && reading.cpu.busy <= reading.cpu.total);
    assert!(reading.memory_working_set > 0);
}

#[test]
fn a_node_measured_on_its_host_has_no_summary_before_its_first_rate() {
    let (collector, _inbox) = Collector::new(NODE, NodeFigures::Host);
    assert_eq!(collector.summary(Vec::new()), None);
}

/// A container of pod `pod` (uid `uid-POD`) on node `node`.
fn container(node: &str, pod: &str, container: &str, attempt: u32) -> ContainerSpec {
    ContainerSpec {
        name: format!("tug_default_{pod}_{container}_{attempt}"),
        image: IMAGE.into(),
        labels: [
            (LABEL_NODE, node.to_owned()),
            (LABEL_POD_NAMESPACE, "default".to_owned()),
            (LABEL_POD_NAME, pod.to_owned()),
            (LABEL_POD_UID, format!("uid-{pod}")),
            (LABEL_CONTAINER_NAME, container.to_owned()),
            (LABEL_ATTEMPT, attempt.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
        ..Default::default()
    }
}

/// A container's name, nanocores and working set.
type Figures = (String, u64, u64);

/// A collector running on a fake engine, with the engine's events passed on as
/// the pod manager does, or not (`events: false`: as if every event were missed).
struct Rig {
    fake: Arc<FakeRuntime>,
    collector: Arc<Collector>,
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Rig {
    async fn start(fake: Arc<FakeRuntime>, events: bool) -> Rig {
        let (collector, inbox) = Collector::new(NODE, fake.node_figures());
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        if events {
            let mut events = fake.events(&[], None).await.unwrap();
            let (collector, stop) = (collector.clone(), stop.clone());
            tracker.spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        ev = events.next() => match ev {
                            Some(Ok(ev)) => collector.observe(&ev),
                            _ => return,
                        },
                    }
                }
            });
        }
        tracker.spawn(run(
            collector.clone(),
            fake.clone(),
            inbox,
            tracker.clone(),
            stop.clone(),
        ));
        Rig {
            fake,
            collector,
            tracker,
            stop,
        }
    }

    /// Creates and starts a container; returns its ID.
    async fn run_container(&self, spec: ContainerSpec) -> String {
        let id = self.fake.create(&spec).await.unwrap();
        self.fake.start(&id).await.unwrap();
        id
    }

    fn summary(&self) -> Summary {
        self.collector
            .summary(Vec::new())
            .expect("a hollow node always has figures")
    }

    /// Every pod listed, with its containers' figures.
    fn pods(&self) -> Vec<(String, Vec<Figures>)> {
        self.summary()
            .pods
            .into_iter()
            .map(|p| {
                let containers = p
                    .containers
                    .into_iter()
                    .map(|c| (c.name, c.cpu_nano_cores, c.memory_working_set_bytes))
                    .collect();
                (p.name, containers)
            })
            .collect()
    }

    /// Stops the collector and checks every task it started ends.
    async fn finish(self) {
        self.stop.cancel();
        self.tracker.close();
        tokio::time::timeout(WAIT, self.tracker.wait())
            .await
            .expect("every stream ends with the collector");
    }
}

fn fake() -> Arc<FakeRuntime> {
    Arc::new(FakeRuntime::new().with_images(&[IMAGE]))
}

async fn sleep(millis: u64) {
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

fn cores(millicores: u64) -> u64 {
    millicores * 1_000_000
}

#[tokio::test(start_paused = true)]
async fn a_container_is_followed_from_its_start_event_to_its_die_event() {
    let rig = Rig::start(fake(), true).await;
    sleep(100).await;
    let id = rig.run_container(container(NODE, "web", "app", 0)).await;
    rig.fake.set_usage(&id, 250, 64 << 20).unwrap();
    // Well before the next relist: the start event did it.
    sleep(1500).await;
    assert_eq!(rig.collector.following(), 1);
    assert_eq!(
        rig.pods(),
        [("web".into(), vec![("app".into(), cores(250), 64 << 20)])]
    );
    let pod = &rig.summary().pods[0];
    assert_eq!(
        (pod.namespace.as_str(), pod.uid.as_str()),
        ("default", "uid-web")
    );
    assert_eq!(pod.window, Duration::from_secs(1));

    rig.fake.kill(&id, "SIGKILL").await.unwrap();
    sleep(10).await;
    assert_eq!(
        rig.collector.following(),
        0,
        "a stopped container is dropped"
    );
    assert!(rig.pods().is_empty());
    rig.finish().await;
}

#[tokio::test(start_paused = true)]
async fn containers_the_events_did_not_announce_are_found_by_the_relist_and_dropped_when_their_stream_ends()
 {
    let fake = fake();
    let before = fake
        .create(&container(NODE, "early", "app", 0))
        .await
        .unwrap();
    fake.start(&before).await.unwrap();
    fake.set_usage("default/early", 100, 1 << 20).unwrap();
    fake.set_usage("default/late", 300, 2 << 20).unwrap();
    let rig = Rig::start(fake, false).await;
    sleep(1500).await;
    assert_eq!(
        rig.pods(),
        [("early".into(), vec![("app".into(), cores(100), 1 << 20)])],
        "running before the collector: found by its first list"
    );

    let late = rig.run_container(container(NODE, "late", "app", 0)).await;
    sleep(1500).await;
    assert_eq!(rig.collector.following(), 1, "no event told of it yet");
    sleep(RELIST.as_millis() as u64).await;
    assert_eq!(rig.collector.following(), 2, "the relist found it");
    assert_eq!(rig.pods().len(), 2);

    // No event says it went: its stream ends, and it is forgotten.
    rig.fake.remove(&late).await.unwrap();
    sleep(10).await;
    assert_eq!(rig.collector.following(), 1);
    assert_eq!(rig.pods()[0].0, "early");
    rig.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_pod_is_listed_once_every_running_container_of_it_has_two_samples() {
    let rig = Rig::start(fake(), true).await;
    sleep(100).await;
    rig.fake.set_usage("default/web", 200, 4 << 20).unwrap();
    rig.run_container(container(NODE, "web", "app", 0)).await;
    sleep(500).await;
    assert!(rig.pods().is_empty(), "one sample is no rate");
    sleep(1000).await;
    assert_eq!(rig.pods()[0].1.len(), 1);

    rig.run_container(container(NODE, "web", "sidecar", 0))
        .await;
    sleep(500).await;
    assert!(
        rig.pods().is_empty(),
        "the sidecar has one sample: the pod's figures would fall short"
    );
    sleep(1000).await;
    assert_eq!(
        rig.pods(),
        [(
            "web".into(),
            vec![
                ("app".into(), cores(200), 4 << 20),
                ("sidecar".into(), cores(200), 4 << 20)
            ]
        )]
    );
    rig.finish().await;
}

#[tokio::test(start_paused = true)]
async fn only_this_nodes_pod_containers_are_followed() {
    let rig = Rig::start(fake(), true).await;
    sleep(100).await;
    rig.run_container(container("n2", "elsewhere", "app", 0))
        .await;
    let mut sandbox = container(NODE, "sandbox", "pause", 0);
    sandbox
        .labels
        .insert(LABEL_ROLE.to_owned(), "sandbox".to_owned());
    rig.run_container(sandbox).await;
    let mut no_pod = container(NODE, "x", "app", 0);
    no_pod.labels.remove(LABEL_POD_UID);
    rig.run_container(no_pod).await;
    sleep(RELIST.as_millis() as u64 + 1500).await;
    assert_eq!(rig.collector.following(), 0);
    rig.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_hollow_nodes_figures_are_the_sum_of_its_pods() {
    let rig = Rig::start(fake(), true).await;
    sleep(100).await;
    let idle = rig.summary().node;
    assert_eq!(
        (
            idle.name.as_str(),
            idle.cpu_nano_cores,
            idle.memory_working_set_bytes
        ),
        (NODE, 0, 0)
    );
    rig.fake.set_usage("default/a", 250, 100 << 20).unwrap();
    rig.fake.set_usage("default/b", 500, 50 << 20).unwrap();
    rig.run_container(container(NODE, "a", "app", 0)).await;
    rig.run_container(container(NODE, "b", "app", 0)).await;
    rig.run_container(container(NODE, "b", "sidecar", 0)).await;
    sleep(1500).await;
    let summary = rig.summary();
    assert_eq!(summary.pods.len(), 2);
    assert_eq!(summary.node.cpu_nano_cores, cores(250 + 500 + 500));
    assert_eq!(summary.node.memory_working_set_bytes, 200 << 20);
    assert_eq!(summary.node.window, Duration::from_secs(1));
    rig.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_restarted_container_is_followed_anew() {
    let rig = Rig::start(fake(), true).await;
    sleep(100).await;
    rig.fake.set_usage("default/web", 100, 1 << 20).unwrap();
    let first = rig.run_container(container(NODE, "web", "app", 0)).await;
    sleep(1500).await;
    rig.fake.crash(&first, 1).unwrap();
    rig.fake.set_usage("default/web", 700, 7 << 20).unwrap();
    rig.run_container(container(NODE, "web", "app", 1)).await;
    sleep(1500).await;
    assert_eq!(rig.collector.following(), 1);
    assert_eq!(
        rig.pods(),
        [("web".into(), vec![("app".into(), cores(700), 7 << 20)])]
    );
    rig.finish().await;
}
