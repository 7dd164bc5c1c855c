//! Node failure handling and maintenance against an in-process controller with
//! in-process agents on the in-memory runtime: a lost node goes NotReady and its pods
//! run elsewhere, a slow node is not mistaken for a lost one, a restarted controller
//! gives nodes a grace before judging them, and `tug cordon`/`drain`/`uncordon` move
//! pods like kubectl. An agent "dies" when its task is cancelled: its heartbeats stop.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use tugboat_api::resource::{DEPLOYMENTS, EVENTS, NODES, PODS};
use tugboat_api::{Client, ListParams, meta};
use tugboat_tests::fake_agent::FakeAgent;
use tugboat_tests::{TestController, deployment, eventually, tug, within};

const IMAGE: &str = "tugboat/sample:latest";
const NS: &str = "default";

async fn kill_all(agents: Vec<FakeAgent>) -> anyhow::Result<()> {
    for a in agents {
        a.stop().await?;
    }
    Ok(())
}

async fn node(client: &Client, name: &str) -> Option<Value> {
    client.get(&NODES, None, name).await.ok()
}

fn ready_condition(node: &Value) -> Option<&Value> {
    node.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
}

fn ready_status(node: &Value) -> Option<String> {
    ready_condition(node)?["status"]
        .as_str()
        .map(str::to_string)
}

async fn wait_ready_status(client: &Client, name: &str, status: &str) -> anyhow::Result<Value> {
    eventually(&format!("node {name} is Ready={status}"), || async {
        node(client, name)
            .await
            .filter(|n| ready_status(n).as_deref() == Some(status))
    })
    .await
}

async fn pods(client: &Client, app: &str) -> Vec<Value> {
    let params = ListParams {
        label_selector: Some(format!("app={app}")),
        ..Default::default()
    };
    client
        .list(&PODS, Some(NS), &params)
        .await
        .ok()
        .and_then(|l| l["items"].as_array().cloned())
        .unwrap_or_default()
}

fn node_of(pod: &Value) -> &str {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn is_running(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running" && !meta::is_deleting(pod)
}

/// Running pods per node, when every pod of `app` is Running and there are `n`.
async fn all_running(client: &Client, app: &str, n: usize) -> Option<BTreeMap<String, usize>> {
    let pods = pods(client, app).await;
    if pods.len() != n || !pods.iter().all(is_running) {
        return None;
    }
    let mut per_node = BTreeMap::new();
    for p in &pods {
        *per_node.entry(node_of(p).to_string()).or_default() += 1;
    }
    Some(per_node)
}

async fn events(client: &Client) -> Vec<Value> {
    client
        .list(&EVENTS, Some(NS), &ListParams::default())
        .await
        .ok()
        .and_then(|l| l["items"].as_array().cloned())
        .unwrap_or_default()
}

fn has_event(events: &[Value], object: &str, reason: &str, message: &str) -> bool {
    events.iter().any(|e| {
        e["involvedObject"]["name"] == object && e["reason"] == reason && e["message"] == message
    })
}

/// Like `eventually`, polling every 20 ms so that the time a change took can be
/// reported closely (reported, never asserted).
async fn timed<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    within(what, async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

async fn start_agents(tc: &TestController, names: &[&str]) -> anyhow::Result<Vec<FakeAgent>> {
    let mut agents = Vec::new();
    for n in names {
        agents.push(FakeAgent::start(tc, n).await?);
    }
    for n in names {
        wait_ready_status(&tc.client, n, "True").await?;
    }
    Ok(agents)
}

#[tokio::test]
async fn a_lost_node_goes_not_ready_and_its_pods_run_on_the_others() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let mut agents = start_agents(&tc, &["node-1", "node-2", "node-3"]).await?;
    tc.client
        .create(&DEPLOYMENTS, Some(NS), &deployment("web", NS, 6))
        .await?;
    let spread = eventually("6 web pods run on all three nodes", || async {
        all_running(&tc.client, "web", 6)
            .await
            .filter(|per_node| per_node.len() == 3)
    })
    .await?;
    eprintln!("before: {spread:?}");
    let victims: Vec<String> = pods(&tc.client, "web")
        .await
        .iter()
        .filter(|p| node_of(p) == "node-3")
        .filter_map(|p| meta::name(p).map(str::to_string))
        .collect();

    let died = Instant::now();
    agents.pop().expect("three agents").stop().await?;
    let lost = timed("node-3 is Ready=Unknown", || async {
        node(&tc.client, "node-3")
            .await
            .filter(|n| ready_status(n).as_deref() == Some("Unknown"))
    })
    .await?;
    let not_ready_after = died.elapsed();
    let ready = ready_condition(&lost).expect("a Ready condition");
    assert_eq!(ready["reason"], "NodeStatusUnknown");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");

    let after = timed("6 web pods run again, none on node-3", || async {
        let per_node = all_running(&tc.client, "web", 6).await?;
        let names: Vec<String> = pods(&tc.client, "web")
            .await
            .iter()
            .filter_map(|p| meta::name(p).map(str::to_string))
            .collect();
        (!per_node.contains_key("node-3") && victims.iter().all(|v| !names.contains(v)))
            .then_some(per_node)
    })
    .await?;
    let recovered_after = died.elapsed();
    eprintln!(
        "node-3 died: NotReady after {not_ready_after:?}, all 6 replicas Running again after {recovered_after:?} ({after:?})"
    );
    assert_eq!(after.keys().collect::<Vec<_>>(), ["node-1", "node-2"]);
    // No false alarms on the survivors; the dead node stays NotReady.
    for survivor in ["node-1", "node-2"] {
        let n = node(&tc.client, survivor).await.expect("survivor exists");
        assert_eq!(ready_status(&n).as_deref(), Some("True"), "{survivor}");
    }
    let n = node(&tc.client, "node-3").await.expect("node-3 exists");
    assert_eq!(ready_status(&n).as_deref(), Some("Unknown"));

    let evs = events(&tc.client).await;
    assert!(has_event(
        &evs,
        "node-3",
        "NodeNotReady",
        "Node node-3 status is now: NodeNotReady"
    ));
    for v in &victims {
        assert!(
            has_event(
                &evs,
                v,
                "TaintManagerEviction",
                &format!("Marking for deletion Pod default/{v}")
            ),
            "no eviction event for {v}"
        );
    }
    assert!(
        evs.iter()
            .filter(|e| e["reason"] == "NodeNotReady")
            .all(|e| e["involvedObject"]["name"] == "node-3"),
        "a survivor was reported NotReady"
    );

    // The agent comes back (same node, a fresh engine): Ready again, nothing returns to it.
    agents.push(FakeAgent::start(&tc, "node-3").await?);
    wait_ready_status(&tc.client, "node-3", "True").await?;
    eventually("a NodeReady event for node-3", || async {
        has_event(
            &events(&tc.client).await,
            "node-3",
            "NodeReady",
            "Node node-3 status is now: NodeReady",
        )
        .then_some(())
    })
    .await?;
    let still = all_running(&tc.client, "web", 6).await;
    assert!(still.is_some(), "6 web pods keep running: {still:?}");

    kill_all(agents).await?;
    tc.stop().await
}

#[tokio::test]
async fn a_slow_but_alive_agent_keeps_its_node_ready() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    // Beats every 2 s, against a grace of 3 s.
    let mut config = tc.agent_config("slow").await?;
    config.heartbeat = Duration::from_secs(2);
    let agent = FakeAgent::start_with(config);
    wait_ready_status(&tc.client, "slow", "True").await?;
    let watched = Instant::now();
    let mut samples = 0;
    while watched.elapsed() < Duration::from_secs(6) {
        let n = node(&tc.client, "slow").await.expect("the node exists");
        assert_eq!(
            ready_status(&n).as_deref(),
            Some("True"),
            "after {:?}",
            watched.elapsed()
        );
        samples += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(samples > 10);
    let evs = events(&tc.client).await;
    assert!(
        !evs.iter().any(|e| e["reason"] == "NodeNotReady"),
        "{evs:?}"
    );

    agent.stop().await?;
    tc.stop().await
}

#[tokio::test]
async fn a_restarted_controller_gives_nodes_a_grace_before_judging_them() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let tc = TestController::start_in(dir.path()).await?;
    let agents = start_agents(&tc, &["node-1"]).await?;
    tc.client
        .create(&DEPLOYMENTS, Some(NS), &deployment("web", NS, 2))
        .await?;
    eventually("2 web pods run", || all_running(&tc.client, "web", 2)).await?;
    // The agent dies while the controller is down: by the restart its heartbeats
    // are older than the grace, but only because nobody was watching.
    kill_all(agents).await?;
    tc.stop().await?;
    tokio::time::sleep(Duration::from_secs(4)).await;

    let tc = TestController::start_in(dir.path()).await?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        let n = node(&tc.client, "node-1").await.expect("the node exists");
        assert_eq!(
            ready_status(&n).as_deref(),
            Some("True"),
            "judged {:?} after the restart",
            started.elapsed()
        );
        assert_eq!(pods(&tc.client, "web").await.len(), 2, "evicted too early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then the grace is over and the node is judged like any other.
    wait_ready_status(&tc.client, "node-1", "Unknown").await?;
    eprintln!(
        "after a controller restart: node-1 NotReady {:?} after the restart",
        started.elapsed()
    );
    eventually("the lost node's pods are evicted", || async {
        pods(&tc.client, "web")
            .await
            .iter()
            .all(|p| node_of(p) != "node-1")
            .then_some(())
    })
    .await?;
    tc.stop().await
}

#[tokio::test]
async fn cordon_drain_and_uncordon_move_pods_like_kubectl() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let agents = start_agents(&tc, &["node-1", "node-2"]).await?;
    let cfg = tempfile::tempdir()?;
    let cli = |args: &'static [&'static str]| tug(&tc.url, cfg.path(), args);
    tc.client
        .create(&DEPLOYMENTS, Some(NS), &deployment("web", NS, 4))
        .await?;
    eventually("4 web pods run on both nodes", || async {
        all_running(&tc.client, "web", 4)
            .await
            .filter(|per_node| per_node.len() == 2)
    })
    .await?;

    // Cordon: new pods avoid the node, running ones stay.
    assert_eq!(cli(&["cordon", "node-1"]).await?, "node/node-1 cordoned\n");
    assert_eq!(
        cli(&["cordon", "node-1"]).await?,
        "node/node-1 already cordoned\n"
    );
    let before: Vec<String> = pods(&tc.client, "web")
        .await
        .iter()
        .filter_map(|p| meta::name(p).map(str::to_string))
        .collect();
    tc.client.scale(&DEPLOYMENTS, Some(NS), "web", 8).await?;
    eventually("8 web pods run", || all_running(&tc.client, "web", 8)).await?;
    for p in pods(&tc.client, "web").await {
        let name = meta::name(&p).unwrap_or("");
        if !before.iter().any(|b| b == name) {
            assert_eq!(
                node_of(&p),
                "node-2",
                "new pod {name} went to the cordoned node"
            );
        }
    }

    // Drain: every pod moves off, the node stays cordoned.
    let out = cli(&["drain", "node-1"]).await?;
    eprintln!("{out}");
    assert!(out.starts_with("node/node-1 already cordoned\n"), "{out}");
    assert!(out.contains("evicting pod default/web-"), "{out}");
    assert!(out.contains(" evicted\n"), "{out}");
    assert!(out.ends_with("node/node-1 drained\n"), "{out}");
    let per_node = eventually("8 web pods run on node-2", || async {
        all_running(&tc.client, "web", 8)
            .await
            .filter(|per_node| per_node.keys().eq(["node-2"]))
    })
    .await?;
    assert_eq!(per_node["node-2"], 8);
    let n = node(&tc.client, "node-1").await.expect("node-1 exists");
    assert_eq!(n["spec"]["unschedulable"], true);

    // Uncordon: schedulable again, and the scheduler's spreading fills it first.
    assert_eq!(
        cli(&["uncordon", "node-1"]).await?,
        "node/node-1 uncordoned\n"
    );
    assert_eq!(
        cli(&["uncordon", "node-1"]).await?,
        "node/node-1 already uncordoned\n"
    );
    let n = node(&tc.client, "node-1").await.expect("node-1 exists");
    assert_ne!(n["spec"]["unschedulable"], true);
    tc.client.scale(&DEPLOYMENTS, Some(NS), "web", 10).await?;
    eventually("new web pods run on node-1", || async {
        all_running(&tc.client, "web", 10)
            .await
            .filter(|per_node| per_node.get("node-1").is_some_and(|n| *n > 0))
    })
    .await?;

    // A pod no controller owns would be lost: drain refuses it without --force.
    let bare = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bare", "labels": {"app": "bare"}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": "node-1"},
            "containers": [{"name": "c", "image": IMAGE, "imagePullPolicy": "IfNotPresent"}],
        },
    });
    tc.client.create(&PODS, Some(NS), &bare).await?;
    eventually("the bare pod runs on node-1", || async {
        all_running(&tc.client, "bare", 1)
            .await
            .filter(|per_node| per_node.contains_key("node-1"))
    })
    .await?;
    let refused = cli(&["drain", "node-1"])
        .await
        .expect_err("drain refuses a bare pod");
    assert!(
        refused.to_string().contains(
            "cannot delete Pods that declare no controller (use --force to override): default/bare"
        ),
        "{refused}"
    );
    assert_eq!(
        pods(&tc.client, "bare").await.len(),
        1,
        "the bare pod was kept"
    );
    let n = node(&tc.client, "node-1").await.expect("node-1 exists");
    assert_eq!(n["spec"]["unschedulable"], true, "the node stays cordoned");

    let out = cli(&["drain", "node-1", "--force"]).await?;
    assert!(
        out.contains("Warning: deleting Pods that declare no controller: default/bare\n"),
        "{out}"
    );
    assert!(out.contains("evicting pod default/bare\n"), "{out}");
    assert!(out.contains("pod/bare evicted\n"), "{out}");
    assert!(out.ends_with("node/node-1 drained\n"), "{out}");
    assert!(pods(&tc.client, "bare").await.is_empty());
    eventually("10 web pods run on node-2", || async {
        all_running(&tc.client, "web", 10)
            .await
            .filter(|per_node| per_node.keys().eq(["node-2"]))
    })
    .await?;
    assert_eq!(
        cli(&["uncordon", "node-1"]).await?,
        "node/node-1 uncordoned\n"
    );

    kill_all(agents).await?;
    tc.stop().await
}
