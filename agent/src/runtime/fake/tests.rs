//! The fake's own tests: it behaves like Docker where the agent can tell.

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::names::signal_exit_code;
use super::*;
use crate::runtime::{ContainerRuntime, EventStream, LogOptions};

const WAIT: Duration = Duration::from_secs(5);
const IMAGE: &str = "tugboat/sample:latest";

fn spec(name: &str, labels: &[(&str, &str)]) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: IMAGE.into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn next<T>(stream: &mut (impl Stream<Item = Result<T, RuntimeError>> + Unpin)) -> T {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an item within the timeout")
        .expect("the stream goes on")
        .expect("no error")
}

/// The actions the stream yields until (and including) `last`.
async fn actions_until(stream: &mut EventStream, last: &str) -> Vec<(String, RuntimeEvent)> {
    let mut seen = Vec::new();
    loop {
        let event = next(stream).await;
        let done = event.action == last;
        seen.push((event.action.clone(), event));
        if done {
            return seen;
        }
    }
}

#[tokio::test]
async fn a_created_container_starts_running_with_an_address() {
    let fake = FakeRuntime::new().with_images(&[IMAGE]);
    let id = fake.create(&spec("web", &[])).await.unwrap();
    let created = fake.inspect(&id).await.unwrap().unwrap();
    assert_eq!(created.state.status, "created");
    assert!(!created.state.running);
    assert_eq!(created.name, "web");
    assert!(created.image_id.starts_with("sha256:"));

    fake.start(&id).await.unwrap();
    let running = fake.inspect("web").await.unwrap().unwrap();
    assert_eq!(running.state.status, "running");
    assert!(running.state.running);
    assert!(running.state.started_at.is_some());
    assert_eq!(running.state.exit_code, None);
    assert!(running.ip.unwrap().starts_with("10."));
    assert_eq!(fake.container_count(), 1);
}

#[tokio::test]
async fn killing_emits_kill_and_die_with_the_exit_code() {
    let fake = FakeRuntime::new().with_images(&[IMAGE]);
    let mut events = fake.events(&[], None).await.unwrap();
    let id = fake.create(&spec("web", &[])).await.unwrap();
    fake.start(&id).await.unwrap();
    fake.kill(&id, "SIGKILL").await.unwrap();

    let seen = actions_until(&mut events, "die").await;
    let actions: Vec<&str> = seen.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["create", "start", "kill", "die"]);
    let die = &seen[3].1;
    assert_eq!(die.container_id, id);
    assert_eq!(die.labels["exitCode"], "137");
    let state = fake.inspect(&id).await.unwrap().unwrap().state;
    assert_eq!(
        (state.status.as_str(), state.running, state.exit_code),
        ("exited", false, Some(137))
    );
    assert!(state.finished_at.is_some());
}

#[tokio::test]
async fn stopping_exits_143_and_stopping_again_is_fine() {
    let fake = FakeRuntime::new().with_images(&[IMAGE]);
    let id = fake.create(&spec("web", &[])).await.unwrap();
    fake.start(&id).await.unwrap();
    fake.stop(&id, Duration::from_secs(30)).await.unwrap();
    fake.stop(&id, Duration::from_secs(30)).await.unwrap();
    fake.stop("missing", Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        fake.inspect(&id).await.unwrap().unwrap().state.exit_code,
        Some(143)
    );
}

#[tokio::test(start_paused = true)]
async fn a_workload_ignoring_sigterm_is_killed_after_the_grace() {
    let fake = FakeRuntime::new()
        .with_images(&[IMAGE])
        .with_sigterm_ignored();
    let id = fake.create(&spec("web", &[])).await.unwrap();
    fake.start(&id).await.unwrap();
    let mut events = fake.events(&[], None).await.unwrap();
    let started = tokio::time::Instant::now();
    fake.stop(&id, Duration::from_secs(30)).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(30),
        "waited the grace"
    );
    let seen = actions_until(&mut events, "stop").await;
    let actions: Vec<&str> = seen.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["kill", "kill", "die", "stop"]);
    assert_eq!(seen[0].1.labels["signal"], "15");
    assert_eq!(seen[1].1.labels["signal"], "9");
    let state = fake.inspect(&id).await.unwrap().unwrap().state;
    assert_eq!(state.exit_code, Some(137));
    assert_eq!(fake.stops(), [(id, Duration::from_secs(30))]);
}

#[tokio::test]
async fn a_crash_emits_die_with_its_exit_code() {
    let fake = FakeRuntime::new().with_images(&[IMAGE]);
    let id = fake.create(&spec("web", &[])).await.unwrap();
    fake.start(&id).await.unwrap();
    let mut events = fake.events(&[], None).await.unwrap();
    fake.crash(&id, 3).unwrap();
    let die = next(&mut events).await;
    assert_eq!(
        (die.action.as_str(), die.labels["exitCode"].as_str()),
        ("die", "3")
    );
    assert!(
        fake.crash(&id, 3).is_err(),
        "an exited container cannot crash again"
    );
}

#[tokio::test]
async fn removing_emits_destroy_and_forgets_the_container() {
    let fake = FakeRuntime::new().with_images(&[IMAGE]);
    let id = fake.create(&spec("web", &[])).await.unwrap();
    fake.start(&id).await.unwrap();
    let mut events = fake.events(&[], None).await.unwrap();
    fake.remove(&id).await.unwrap();
    let seen = actions_until(&mut events, "destroy").await;
    let actions: Vec<&str> = seen.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["kill", "die", "destroy"]);
    assert_eq!(fake.inspect(&id).await.unwrap(), None);
    assert_eq!(fake.container_count(), 0);
    fake.remove(&id).await.unwrap();
}

#[tokio::test]
async fn list_and_events_honour_label_filters() {
    let fake = FakeRuntime::new().with_images(&[IMAGE]);
    let mine = labels(&[("io.tugboat.node", "a")]);
    let mut events = fake.events(&mine, None).await.unwrap();
    let a = fake
        .create(&spec("web-a", &[("io.tugboat.node", "a"), ("app", "web")]))
        .await
        .unwrap();
    fake.create(&spec("web-b", &[("io.tugboat.node", "b")]))
        .await
        .unwrap();
    let a2 = fake
        .create(&spec("web-a2", &[("io.tugboat.node", "a")]))
        .await
        .unwrap();

    let listed: Vec<String> = fake
        .list(&mine)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(
        listed,
        [a2.clone(), a.clone()],
        "newest first, only node a's"
    );
    let both = labels(&[("io.tugboat.node", "a"), ("app", "web")]);
    assert_eq!(fake.list(&both).await.unwrap().len(), 1);
    assert_eq!(fake.list(&[]).await.unwrap().len(), 3);

    assert_eq!(next(&mut events).await.container_id, a);
    assert_eq!(
        next(&mut events).await.container_id,
        a2,
        "b's create is filtered out"
    );
}

#[tokio::test]
async fn events_since_a_time_replay_what_came_after_it() {
    let fake = FakeRuntime::new().with_images(&[IMAGE]);
    let id = fake.create(&spec("web", &[])).await.unwrap();
    let mut all = fake.events(&[], Some(0)).await.unwrap();
    let create = next(&mut all).await;
    assert_eq!(create.action, "create");
    fake.start(&id).await.unwrap();
    let start = next(&mut all).await;

    let mut resumed = fake.events(&[], Some(create.time_nanos + 1)).await.unwrap();
    assert_eq!(next(&mut resumed).await, start);
}

#[tokio::test]
async fn pulling_an_unknown_image_fails_like_docker() {
    let fake = FakeRuntime::new().with_pullable(&["nginx"]);
    let error = fake.pull_image("tugboat/nope:1.0").await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "pulling image tugboat/nope:1.0: pull access denied for tugboat/nope, \
         repository does not exist or may require 'docker login'"
    );
    assert_eq!(fake.image_id("nginx:latest").await.unwrap(), None);
    fake.pull_image("docker.io/library/nginx").await.unwrap();
    assert!(fake.image_id("nginx").await.unwrap().is_some());
    assert_eq!(
        fake.pulls(),
        ["tugboat/nope:1.0", "docker.io/library/nginx"]
    );
}

#[tokio::test]
async fn a_taken_name_is_a_conflict() {
    let fake = FakeRuntime::new().with_images(&[IMAGE]);
    let id = fake
        .create(&spec("tug_default_web_web_0", &[]))
        .await
        .unwrap();
    let error = fake
        .create(&spec("tug_default_web_web_0", &[]))
        .await
        .unwrap_err();
    let RuntimeError::Engine { operation, message } = error else {
        panic!("{error:?}")
    };
    assert_eq!(operation, "create container tug_default_web_web_0");
    assert!(
        message.starts_with(
            "Conflict. The container name \"/tug_default_web_web_0\" is already in use"
        )
    );
    assert!(message.contains(&id));
}

#[tokio::test]
async fn creating_from_a_missing_image_fails() {
    let fake = FakeRuntime::new();
    let error = fake.create(&spec("web", &[])).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "create container web: No such image: tugboat/sample:latest"
    );
}

#[tokio::test]
async fn logs_return_what_was_pushed_and_follow_until_the_container_stops() {
    let fake = FakeRuntime::new().with_images(&[IMAGE]);
    let id = fake.create(&spec("web", &[])).await.unwrap();
    fake.start(&id).await.unwrap();
    fake.push_log(&id, "one\ntwo\nthree\n").unwrap();

    let tail = LogOptions {
        tail: Some(2),
        ..Default::default()
    };
    let got: Vec<Bytes> = fake
        .logs(&id, &tail)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(got, [Bytes::from("two\n"), Bytes::from("three\n")]);

    let follow = LogOptions {
        follow: true,
        tail: Some(0),
        ..Default::default()
    };
    let mut stream = fake.logs(&id, &follow).await.unwrap();
    fake.push_log(&id, "four\n").unwrap();
    assert_eq!(next(&mut stream).await, Bytes::from("four\n"));
    fake.kill(&id, "SIGTERM").await.unwrap();
    let end = tokio::time::timeout(WAIT, stream.next()).await.unwrap();
    assert!(end.is_none(), "follow ends when the container stops");

    let stamped = LogOptions {
        timestamps: true,
        tail: Some(1),
        ..Default::default()
    };
    let line = fake
        .logs(&id, &stamped)
        .await
        .unwrap()
        .next()
        .await
        .unwrap()
        .unwrap();
    assert!(line.ends_with(b" four\n") && line.len() > 20, "{line:?}");
}

#[tokio::test]
async fn exec_answers_what_was_configured_while_running() {
    let fake = FakeRuntime::new().with_images(&[IMAGE]);
    let id = fake.create(&spec("web", &[])).await.unwrap();
    let cmd = vec!["cat".to_owned(), "/tmp/healthy".to_owned()];
    assert!(fake.exec(&id, &cmd, WAIT).await.is_err(), "not running yet");
    fake.start(&id).await.unwrap();
    assert_eq!(fake.exec(&id, &cmd, WAIT).await.unwrap().exit_code, 0);
    fake.set_exec_result(ExecOutput {
        exit_code: 1,
        output: "no such file".into(),
    });
    let out = fake.exec(&id, &cmd, WAIT).await.unwrap();
    assert_eq!((out.exit_code, out.output.as_str()), (1, "no such file"));
}

#[tokio::test]
async fn an_injected_failure_fails_once() {
    let fake = FakeRuntime::new().with_images(&[IMAGE]);
    let id = fake.create(&spec("web", &[])).await.unwrap();
    fake.fail_next(FakeOp::Start, "exec: \"/tug-sample\": permission denied");
    let error = fake.start(&id).await.unwrap_err();
    assert!(error.to_string().contains("permission denied"));
    assert!(
        fake.inspect(&id)
            .await
            .unwrap()
            .unwrap()
            .state
            .error
            .is_some()
    );
    fake.start(&id).await.unwrap();
}

#[tokio::test]
async fn an_oom_kill_sets_oom_killed() {
    let fake = FakeRuntime::new().with_images(&[IMAGE]);
    let id = fake.create(&spec("web", &[])).await.unwrap();
    fake.start(&id).await.unwrap();
    let mut events = fake.events(&[], None).await.unwrap();
    fake.oom_kill(&id).unwrap();
    assert_eq!(next(&mut events).await.action, "oom");
    assert_eq!(next(&mut events).await.action, "die");
    let state = fake.inspect(&id).await.unwrap().unwrap().state;
    assert!(state.oom_killed);
    assert_eq!(state.exit_code, Some(137));
}

#[test]
fn signals_give_shell_exit_codes() {
    assert_eq!(signal_exit_code("SIGKILL"), 137);
    assert_eq!(signal_exit_code("TERM"), 143);
    assert_eq!(signal_exit_code("2"), 130);
}

/// The stream's next item, or `None` once it ended (within the timeout).
async fn next_or_end<T>(
    stream: &mut (impl Stream<Item = Result<T, RuntimeError>> + Unpin),
) -> Option<T> {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an item or the end within the timeout")
        .map(|item| item.expect("no error"))
}

const POD: [(&str, &str); 2] = [
    (crate::runtime::LABEL_POD_NAMESPACE, "ns"),
    (crate::runtime::LABEL_POD_NAME, "web-1"),
];

#[tokio::test(start_paused = true)]
async fn a_stats_stream_samples_every_second_with_cpu_accruing_at_the_usage_set() {
    let fake = FakeRuntime::new().with_images(&[IMAGE]);
    let id = fake.create(&spec("web", &POD)).await.unwrap();
    fake.start(&id).await.unwrap();
    assert_eq!(fake.set_usage("web", 250, 64 << 20).unwrap(), 1);
    let mut stats = fake.stats(&id).await.unwrap();
    let first = next(&mut stats).await;
    let second = next(&mut stats).await;
    assert_eq!(
        second.read.duration_since(first.read),
        jiff::SignedDuration::from_secs(1)
    );
    assert_eq!(second.cpu_total_ns - first.cpu_total_ns, 250_000_000);
    assert_eq!(second.memory_working_set, 64 << 20);

    // Half a second in, the pod's usage changes: the next second accrues half at each.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.set_usage("ns/web-1", 1000, 1 << 20).unwrap(), 1);
    let third = next(&mut stats).await;
    assert_eq!(third.cpu_total_ns - second.cpu_total_ns, 625_000_000);
    assert_eq!(third.memory_working_set, 1 << 20);

    fake.kill(&id, "SIGKILL").await.unwrap();
    assert_eq!(
        next_or_end(&mut stats).await,
        None,
        "a stopped container ends its stream"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pods_usage_reaches_containers_created_later_and_stats_need_a_running_one() {
    let fake = FakeRuntime::new().with_images(&[IMAGE]);
    assert_eq!(fake.set_usage("ns/web-1", 500, 10 << 20).unwrap(), 0);
    let id = fake.create(&spec("web", &POD)).await.unwrap();
    let mut created = fake.stats(&id).await.unwrap();
    assert_eq!(
        next_or_end(&mut created).await,
        None,
        "not running: no samples"
    );

    fake.start(&id).await.unwrap();
    let mut stats = fake.stats(&id).await.unwrap();
    let first = next(&mut stats).await;
    let second = next(&mut stats).await;
    assert_eq!(second.cpu_total_ns - first.cpu_total_ns, 500_000_000);
    assert_eq!(second.memory_working_set, 10 << 20);

    fake.remove(&id).await.unwrap();
    assert_eq!(
        next_or_end(&mut stats).await,
        None,
        "a removed container ends its stream"
    );
    assert!(matches!(
        fake.stats(&id).await,
        Err(RuntimeError::NoSuchContainer(_))
    ));
    assert!(matches!(
        fake.set_usage("missing", 1, 1),
        Err(RuntimeError::NoSuchContainer(_))
    ));
    assert_eq!(fake.node_figures(), crate::runtime::NodeFigures::SumOfPods);
}
