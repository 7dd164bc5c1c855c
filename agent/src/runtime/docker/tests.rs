//! The Docker runtime's tests: the conversions, and (ignored unless asked) a
//! whole container life on the engine this host has.

use bytes::Bytes;

use super::convert::*;
use super::*;
use crate::runtime::PortMapping;

#[tokio::test]
async fn connecting_to_a_missing_socket_names_it() {
    let error = DockerRuntime::connect(Some("unix:///nonexistent/docker.sock"))
        .await
        .unwrap_err();
    assert!(matches!(error, RuntimeError::Connect(_)), "{error:?}");
    assert!(
        error.to_string().contains("/nonexistent/docker.sock"),
        "{error}"
    );
}

#[tokio::test]
async fn connecting_to_a_closed_port_says_so() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let uri = format!("tcp://{closed}");
    let error = tokio::time::timeout(Duration::from_secs(10), DockerRuntime::connect(Some(&uri)))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(error, RuntimeError::Connect(_)), "{error:?}");
    assert!(error.to_string().contains("Connection refused"), "{error}");
}

#[tokio::test]
async fn an_unknown_scheme_is_refused() {
    let error = DockerRuntime::connect(Some("ftp://example"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("ftp://example"), "{error}");
}

#[test]
fn references_split_into_repository_and_tag() {
    assert_eq!(
        split_reference("tugboat/sample:latest"),
        ("tugboat/sample", "latest")
    );
    assert_eq!(split_reference("nginx"), ("nginx", "latest"));
    assert_eq!(
        split_reference("localhost:5000/app"),
        ("localhost:5000/app", "latest")
    );
    assert_eq!(
        split_reference("localhost:5000/app:v1"),
        ("localhost:5000/app", "v1")
    );
    assert_eq!(split_reference("app@sha256:abc"), ("app@sha256:abc", ""));
}

#[test]
fn since_is_seconds_dot_nanoseconds() {
    assert_eq!(
        since_param(1_700_000_000_000_000_001),
        "1700000000.000000001"
    );
    assert_eq!(since_param(5), "0.000000005");
}

#[test]
fn a_spec_maps_to_entrypoint_cmd_env_ports_and_limits() {
    let spec = ContainerSpec {
        name: "tug_default_web_web_0".into(),
        image: "tugboat/sample:latest".into(),
        command: Some(vec!["/tug-sample".into()]),
        args: Some(vec!["serve".into()]),
        env: vec![("A".into(), "1".into())],
        ports: vec![
            PortMapping {
                container_port: 8080,
                host_port: Some(18080),
                protocol: "tcp".into(),
                host_ip: None,
            },
            PortMapping {
                container_port: 53,
                host_port: None,
                protocol: "udp".into(),
                host_ip: None,
            },
        ],
        memory_limit_bytes: Some(64 << 20),
        nano_cpus: Some(500_000_000),
        network: Some("tugboat".into()),
        ..Default::default()
    };
    let body = create_body(&spec);
    assert_eq!(body.entrypoint, Some(vec!["/tug-sample".to_owned()]));
    assert_eq!(body.cmd, Some(vec!["serve".to_owned()]));
    assert_eq!(body.env, Some(vec!["A=1".to_owned()]));
    assert_eq!(
        body.exposed_ports,
        Some(vec!["8080/tcp".to_owned(), "53/udp".to_owned()])
    );
    let host = body.host_config.unwrap();
    assert_eq!(host.memory, Some(64 << 20));
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.network_mode.as_deref(), Some("tugboat"));
    let bindings = host.port_bindings.unwrap();
    assert_eq!(bindings.len(), 1);
    assert_eq!(
        bindings["8080/tcp"].as_ref().unwrap()[0]
            .host_port
            .as_deref(),
        Some("18080")
    );
}

#[test]
fn the_ip_comes_from_the_attached_network_first() {
    let networks = || {
        vec![
            ("a".to_owned(), Some("10.0.0.2".to_owned())),
            ("b".to_owned(), Some("10.0.1.2".to_owned())),
        ]
        .into_iter()
    };
    assert_eq!(ip_of(networks(), Some("b")).as_deref(), Some("10.0.1.2"));
    assert_eq!(
        ip_of(networks(), Some("default")).as_deref(),
        Some("10.0.0.2")
    );
    assert_eq!(
        ip_of(
            vec![("bridge".to_owned(), Some(String::new()))].into_iter(),
            None
        ),
        None
    );
}

/// Drives the sample image through its whole life on the engine this host has:
/// `cargo build -p tugboat-sample && cargo test -p tugboat-agent --lib -- --ignored real_engine`.
/// It builds a throwaway tag and removes it, and the container, whatever happens.
#[tokio::test]
#[ignore = "needs a Docker engine and the tug-sample binary"]
async fn a_real_engine_runs_the_sample_through_its_whole_life() {
    use futures::FutureExt;

    const TAG: &str = "tugboat/sample-selftest:latest";
    let runtime = DockerRuntime::connect(None).await.expect("a Docker engine");
    if std::path::Path::new("/var/run/docker.sock").exists() {
        DockerRuntime::connect(Some("unix:///var/run/docker.sock"))
            .await
            .unwrap();
        DockerRuntime::connect(Some("/var/run/docker.sock"))
            .await
            .unwrap();
    }
    let name = format!("tug_selftest_{}", std::process::id());
    let outcome = std::panic::AssertUnwindSafe(whole_life(&runtime, TAG, &name))
        .catch_unwind()
        .await;
    remove_then_resume(&runtime, &name, TAG, outcome).await;
}

async fn whole_life(runtime: &DockerRuntime, tag: &str, name: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const WAIT: Duration = Duration::from_secs(20);

    let host = runtime.host_info().await.unwrap();
    eprintln!("host: {host:?}");
    assert!(host.cpus > 0 && host.memory_bytes > 0);
    assert!(host.runtime_version.starts_with("docker://"));

    let missing = "tugboat/definitely-missing:none";
    assert_eq!(runtime.image_id(missing).await.unwrap(), None);
    let pull = runtime.pull_image(missing).await.unwrap_err();
    eprintln!("pull: {pull}");
    assert!(matches!(pull, RuntimeError::Pull { .. }));

    let binary = crate::image::require_sample_binary().unwrap();
    let image_id = crate::image::ensure_sample_image(runtime, &binary, tag, true)
        .await
        .unwrap();
    assert_eq!(
        runtime.image_id(tag).await.unwrap().as_deref(),
        Some(image_id.as_str())
    );
    let again = crate::image::ensure_sample_image(runtime, &binary, tag, false)
        .await
        .unwrap();
    assert_eq!(again, image_id);

    let selector = vec![("io.tugboat.selftest".to_owned(), name.to_owned())];
    let mut events = runtime.events(&selector, None).await.unwrap();
    // bollard's request timeout covers only the wait for the answer's headers, which
    // the engine sends at once: a quiet stream outlives it.
    let impatient =
        DockerRuntime::with_docker(runtime.docker.clone().with_timeout(Duration::from_secs(1)));
    let mut quiet = impatient.events(&selector, None).await.unwrap();
    // A test's own helper task: awaited below (with a timeout), never left behind.
    let quiet_first = tokio::spawn(async move { quiet.next().await.map(|e| e.map(|e| e.action)) });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let spec = ContainerSpec {
        name: name.to_owned(),
        image: tag.to_owned(),
        args: Some(vec!["serve".into(), "--listen".into(), ":8080".into()]),
        env: vec![("GREETING".into(), "hello".into())],
        labels: selector.iter().cloned().collect(),
        ports: vec![PortMapping {
            container_port: 8080,
            host_port: None,
            protocol: "tcp".into(),
            host_ip: None,
        }],
        memory_limit_bytes: Some(64 << 20),
        nano_cpus: Some(500_000_000),
        cpu_shares: Some(512),
        hostname: Some("selftest".into()),
        ..Default::default()
    };
    let id = runtime.create(&spec).await.unwrap();
    let quiet_first = tokio::time::timeout(WAIT, quiet_first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(quiet_first.unwrap().unwrap(), "create");
    let conflict = runtime.create(&spec).await.unwrap_err();
    eprintln!("conflict: {conflict}");
    assert!(conflict.to_string().contains("Conflict"), "{conflict}");

    let created = runtime.inspect(&id).await.unwrap().unwrap();
    assert_eq!(
        (created.state.status.as_str(), created.state.exit_code),
        ("created", None)
    );
    assert_eq!((created.name.as_str(), created.image.as_str()), (name, tag));
    assert_eq!(created.image_id, image_id);

    runtime.start(&id).await.unwrap();
    runtime.start(&id).await.unwrap();
    let running = runtime.inspect(name).await.unwrap().unwrap();
    eprintln!("running: {running:?}");
    assert!(running.state.running && running.state.started_at.is_some());
    let ip = running.ip.clone().expect("an address on the bridge");
    let listed = runtime.list(&selector).await.unwrap();
    assert_eq!(listed, vec![running.clone()]);

    let mut answer = String::new();
    for _ in 0..100 {
        if let Ok(mut tcp) = tokio::net::TcpStream::connect((ip.as_str(), 8080)).await {
            tcp.write_all(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            tcp.read_to_string(&mut answer).await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
        "{answer}"
    );

    let version = runtime
        .exec(&id, &["/tug-sample".into(), "version".into()], WAIT)
        .await
        .unwrap();
    eprintln!("exec: {version:?}");
    assert_eq!(version.exit_code, 0);
    assert!(!version.output.is_empty());
    let forever = [
        "/tug-sample".into(),
        "serve".into(),
        "--listen".into(),
        ":9".into(),
    ];
    let timeout = runtime
        .exec(&id, &forever, Duration::from_millis(500))
        .await
        .unwrap_err();
    eprintln!("exec timeout: {timeout}");
    assert!(timeout.to_string().contains("timed out after 500ms"));

    let logs: Vec<Bytes> = runtime
        .logs(&id, &LogOptions::default())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let logs = String::from_utf8_lossy(&logs.concat()).into_owned();
    eprintln!("logs: {logs}");
    assert!(logs.contains("/healthz"), "{logs}");
    let mut follow = runtime
        .logs(
            &id,
            &LogOptions {
                follow: true,
                tail: Some(1),
                timestamps: true,
            },
        )
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, follow.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    eprintln!("followed: {first:?}");

    runtime.kill(&id, "SIGKILL").await.unwrap();
    let mut actions = Vec::new();
    let die = loop {
        let event = tokio::time::timeout(WAIT, events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(event.container_id, id);
        assert_eq!(
            event.labels.get("io.tugboat.selftest").map(String::as_str),
            Some(name)
        );
        actions.push(event.action.clone());
        if event.action == "die" {
            break event;
        }
    };
    eprintln!("events: {actions:?}; die: {die:?}");
    assert_eq!(die.labels.get("exitCode").map(String::as_str), Some("137"));
    let end = tokio::time::timeout(WAIT, async { while follow.next().await.is_some() {} }).await;
    assert!(end.is_ok(), "following logs ends when the container dies");

    let exited = runtime.inspect(&id).await.unwrap().unwrap();
    eprintln!("exited: {exited:?}");
    assert_eq!(
        (exited.state.status.as_str(), exited.state.running),
        ("exited", false)
    );
    assert_eq!(exited.state.exit_code, Some(137));
    assert!(exited.state.finished_at.is_some() && exited.ip.is_none());
    runtime.kill(&id, "SIGKILL").await.unwrap();
    runtime.stop(&id, Duration::from_secs(1)).await.unwrap();

    runtime.start(&id).await.unwrap();
    let started = std::time::Instant::now();
    runtime
        .stop(&id, Duration::from_millis(1500))
        .await
        .unwrap();
    let stopped = runtime.inspect(&id).await.unwrap().unwrap();
    eprintln!("stopped after {:?}: {:?}", started.elapsed(), stopped.state);

    let mut replayed = runtime
        .events(&selector, Some(die.time_nanos))
        .await
        .unwrap();
    let first_replayed = tokio::time::timeout(WAIT, replayed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    eprintln!(
        "replayed from the die: {} at {}",
        first_replayed.action, first_replayed.time_nanos
    );

    runtime.remove(&id).await.unwrap();
    loop {
        let event = tokio::time::timeout(WAIT, events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if event.action == "destroy" {
            break;
        }
    }
    assert_eq!(runtime.inspect(&id).await.unwrap(), None);
    runtime.remove(&id).await.unwrap();
    runtime.stop(&id, Duration::from_secs(1)).await.unwrap();
    runtime.kill(&id, "SIGKILL").await.unwrap();
    assert!(matches!(
        runtime.start(&id).await,
        Err(RuntimeError::NoSuchContainer(_))
    ));
    assert!(matches!(
        runtime.logs(&id, &LogOptions::default()).await,
        Err(RuntimeError::NoSuchContainer(_))
    ));
    assert!(runtime.list(&selector).await.unwrap().is_empty());
}

/// A frame of `GET /containers/{id}/stats` as Docker 20.10 sends it, trimmed to
/// what the sample reads, with memory stats as the cgroup version has them.
fn stats_frame(
    read: &str,
    memory_stats: serde_json::Value,
) -> bollard::models::ContainerStatsResponse {
    serde_json::from_value(serde_json::json!({
        "read": read,
        "preread": "2026-12-02T10:00:00.000000000Z",
        "id": "abc",
        "name": "/tug_default_web_web_0",
        "cpu_stats": {
            "cpu_usage": {"total_usage": 1_234_567_890u64, "usage_in_kernelmode": 1, "usage_in_usermode": 2},
            "system_cpu_usage": 99_000_000_000u64,
            "online_cpus": 2,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}
        },
        "memory_stats": memory_stats,
    }))
    .expect("a stats frame")
}

#[test]
fn the_working_set_under_cgroup_v1_leaves_out_the_hierarchys_inactive_file_pages() {
    let frame = stats_frame(
        "2026-12-02T10:00:01.000000123Z",
        serde_json::json!({
            "usage": 100 << 20,
            "max_usage": 120 << 20,
            "limit": 1u64 << 30,
            // v1 has both: the cgroup's own and the whole hierarchy's.
            "stats": {"inactive_file": 5 << 20, "total_inactive_file": 30 << 20,
                "active_file": 1 << 20, "rss": 60 << 20, "cache": 40 << 20}
        }),
    );
    let sample = stats_sample(&frame).expect("a sample");
    assert_eq!(sample.memory_working_set, 70 << 20);
    assert_eq!(sample.cpu_total_ns, 1_234_567_890);
    assert_eq!(
        sample.read,
        "2026-12-02T10:00:01.000000123Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
    );
}

#[test]
fn the_working_set_under_cgroup_v2_leaves_out_inactive_file_and_never_goes_below_zero() {
    let v2 = |usage: u64, inactive: u64| {
        stats_frame(
            "2026-12-02T10:00:01Z",
            serde_json::json!({
                "usage": usage,
                "limit": 1u64 << 30,
                "stats": {"inactive_file": inactive, "active_file": 1 << 20, "anon": 50 << 20, "file": 40 << 20}
            }),
        )
    };
    assert_eq!(
        stats_sample(&v2(100 << 20, 30 << 20))
            .unwrap()
            .memory_working_set,
        70 << 20
    );
    assert_eq!(
        stats_sample(&v2(10 << 20, 30 << 20))
            .unwrap()
            .memory_working_set,
        0
    );
}

#[test]
fn an_empty_frame_means_the_container_is_not_running() {
    // What Docker streams for a stopped container until it is removed.
    let stopped: bollard::models::ContainerStatsResponse = serde_json::from_value(serde_json::json!({
        "read": "0001-01-01T00:00:00Z",
        "preread": "0001-01-01T00:00:00Z",
        "id": "abc",
        "name": "/tug_default_web_web_0",
        "cpu_stats": {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}},
        "memory_stats": {}
    }))
    .unwrap();
    assert_eq!(stats_sample(&stopped), None);
    assert_eq!(
        stats_sample(&bollard::models::ContainerStatsResponse::default()),
        None
    );
}

/// A sample container kept busy with HTTP requests shows CPU and memory in its
/// stats stream, which ends when the container stops:
/// `cargo build -p tugboat-sample && cargo test -p tugboat-agent --lib -- --ignored real_engine`.
/// The busy work is requests to the sample's `/` (no shell needed in the image).
/// It builds a throwaway tag and removes it, and the container, whatever happens.
#[tokio::test]
#[ignore = "needs a Docker engine and the tug-sample binary"]
async fn a_real_engine_streams_a_busy_containers_usage_until_it_stops() {
    use futures::FutureExt;

    const TAG: &str = "tugboat/sample-statstest:latest";
    let runtime = DockerRuntime::connect(None).await.expect("a Docker engine");
    let name = format!("tug_statstest_{}", std::process::id());
    let outcome = std::panic::AssertUnwindSafe(busy_stats(&runtime, TAG, &name))
        .catch_unwind()
        .await;
    remove_then_resume(&runtime, &name, TAG, outcome).await;
}

async fn busy_stats(runtime: &DockerRuntime, tag: &str, name: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const WAIT: Duration = Duration::from_secs(20);

    let binary = crate::image::require_sample_binary().unwrap();
    crate::image::ensure_sample_image(runtime, &binary, tag, true)
        .await
        .unwrap();
    let spec = ContainerSpec {
        name: name.to_owned(),
        image: tag.to_owned(),
        args: Some(vec!["serve".into(), "--listen".into(), ":8080".into()]),
        // A node of its own, so the collector below follows this container only.
        labels: [
            ("io.tugboat.selftest", name),
            (crate::runtime::LABEL_NODE, name),
            (crate::runtime::LABEL_POD_NAMESPACE, "default"),
            (crate::runtime::LABEL_POD_NAME, "busy"),
            (crate::runtime::LABEL_POD_UID, "uid-busy"),
            (crate::runtime::LABEL_CONTAINER_NAME, "app"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        ..Default::default()
    };
    let id = runtime.create(&spec).await.unwrap();
    let mut not_yet = runtime.stats(&id).await.unwrap();
    assert!(
        not_yet.next().await.is_none(),
        "created, not running: no samples"
    );
    runtime.start(&id).await.unwrap();
    let ip = runtime.inspect(&id).await.unwrap().unwrap().ip.unwrap();

    // Requests one after another until told to stop: the container's CPU.
    let stop = tokio_util::sync::CancellationToken::new();
    let load = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut served = 0u64;
            while !stop.is_cancelled() {
                let Ok(mut tcp) = tokio::net::TcpStream::connect((ip.as_str(), 8080)).await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let mut answer = Vec::new();
                if tcp
                    .write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
                    .await
                    .is_ok()
                    && tcp.read_to_end(&mut answer).await.is_ok()
                    && answer.starts_with(b"HTTP/1.")
                {
                    served += 1;
                }
            }
            served
        }
    });

    let mut stats = runtime.stats(&id).await.unwrap();
    let mut samples = Vec::new();
    for _ in 0..4 {
        let sample = tokio::time::timeout(WAIT, stats.next())
            .await
            .expect("a sample within the timeout")
            .expect("the stream goes on while the container runs")
            .expect("no error");
        eprintln!("sample: {sample:?}");
        samples.push(sample);
    }

    // The collector finds it by its node's label and reads the host.
    let (collector, inbox) = crate::metrics::Collector::new(name, runtime.node_figures());
    let tracker = tokio_util::task::TaskTracker::new();
    tracker.spawn(crate::metrics::run(
        collector.clone(),
        std::sync::Arc::new(runtime.clone()),
        inbox,
        tracker.clone(),
        stop.clone(),
    ));
    let summary = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(s) = collector.summary(Vec::new()).filter(|s| !s.pods.is_empty()) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the busy pod's figures");
    eprintln!("summary: {summary:?}");
    let app = &summary.pods[0].containers[0];
    assert!(app.cpu_nano_cores > 0 && app.memory_working_set_bytes > 0);
    assert!(summary.node.cpu_nano_cores > 0 && summary.node.memory_working_set_bytes > 0);

    stop.cancel();
    tracker.close();
    tokio::time::timeout(WAIT, tracker.wait()).await.unwrap();
    let served = tokio::time::timeout(WAIT, load).await.unwrap().unwrap();
    eprintln!("requests served: {served}");
    let (first, last) = (&samples[0], &samples[3]);
    assert!(last.read > first.read, "samples move on: {samples:?}");
    assert!(
        last.cpu_total_ns > first.cpu_total_ns,
        "a busy container uses CPU: {samples:?}"
    );
    assert!(last.memory_working_set > 0, "{samples:?}");

    runtime.kill(&id, "SIGKILL").await.unwrap();
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(item) = stats.next().await {
            item.expect("no error before the end");
        }
    })
    .await;
    assert!(ended.is_ok(), "a stopped container ends its stats stream");
    assert!(matches!(
        runtime.stats("tug_statstest_missing").await,
        Err(RuntimeError::NoSuchContainer(_))
    ));
}

/// Removes the test's container and throwaway image tag whatever happened, then
/// fails as the test body did, if it did.
async fn remove_then_resume(
    runtime: &DockerRuntime,
    name: &str,
    tag: &str,
    outcome: std::thread::Result<()>,
) {
    runtime.remove(name).await.expect("removing the container");
    let options = bollard::query_parameters::RemoveImageOptionsBuilder::default()
        .force(true)
        .build();
    match runtime
        .docker()
        .remove_image(tag, Some(options), None)
        .await
    {
        Err(e) if status_of(&e) != Some(404) => panic!("removing {tag}: {e}"),
        _ => {}
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
