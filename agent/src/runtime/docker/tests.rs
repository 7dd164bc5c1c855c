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
    runtime.remove(&name).await.expect("removing the container");
    let options = bollard::query_parameters::RemoveImageOptionsBuilder::default()
        .force(true)
        .build();
    match runtime
        .docker()
        .remove_image(TAG, Some(options), None)
        .await
    {
        Err(e) if status_of(&e) != Some(404) => panic!("removing {TAG}: {e}"),
        _ => {}
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
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
    let impatient = DockerRuntime {
        docker: runtime.docker.clone().with_timeout(Duration::from_secs(1)),
    };
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
