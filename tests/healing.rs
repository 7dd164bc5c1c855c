//! Self-healing on the real Docker engine: a killed or removed container comes
//! back, crash loops back off, liveness restarts, readiness gates Ready, restart
//! policies behave as in Kubernetes, and `tug get pods -w` shows it happening.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tugboat_api::ListParams;
use tugboat_api::resource::{DEPLOYMENTS, EVENTS};
use tugboat_tests::docker::{DockerCluster, sample_deployment};
use tugboat_tests::{eventually, eventually_within};

fn with_args(mut d: Value, args: &[&str]) -> Value {
    d["spec"]["template"]["spec"]["containers"][0]["args"] = json!(args);
    d
}

fn container_status(pod: &Value) -> Value {
    pod["status"]["containerStatuses"][0].clone()
}

async fn one_pod(c: &DockerCluster, app: &str) -> Option<Value> {
    c.pods(&format!("app={app}")).await.ok()?.into_iter().next()
}

async fn events_for(c: &DockerCluster, pod: &str) -> Vec<Value> {
    let params = ListParams {
        field_selector: Some(format!("involvedObject.name={pod}")),
        ..Default::default()
    };
    c.client
        .list(&EVENTS, Some(&c.namespace), &params)
        .await
        .ok()
        .and_then(|l| l["items"].as_array().cloned())
        .unwrap_or_default()
}

fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("docker").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[tokio::test]
async fn a_killed_container_is_replaced_and_the_restart_is_recorded() -> anyhow::Result<()> {
    let c = DockerCluster::start("kill", 1).await?;
    c.apply(&sample_deployment("web", 1)).await?;
    let pod = eventually("the pod runs", || async {
        let p = one_pod(&c, "web").await?;
        (container_status(&p)["state"]["running"].is_object()).then_some(p)
    })
    .await?;
    let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    let first = container_status(&pod)["containerID"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("docker://")
        .to_string();
    docker(&["kill", &first])?;
    let after = eventually("a new container runs with restartCount 1", || async {
        let p = one_pod(&c, "web").await?;
        let s = container_status(&p);
        (s["restartCount"] == 1
            && s["state"]["running"].is_object()
            && s["containerID"].as_str()? != format!("docker://{first}"))
        .then_some(s)
    })
    .await?;
    assert_eq!(after["lastState"]["terminated"]["exitCode"], 137, "{after}");
    assert_eq!(after["lastState"]["terminated"]["reason"], "Error");
    assert!(after["lastState"]["terminated"]["finishedAt"].is_string());
    let running = c.containers(true)?;
    assert_eq!(running.len(), 1, "exactly one container runs: {running:?}");
    let events = eventually("Started is recorded twice", || async {
        let ev = events_for(&c, &name).await;
        ev.iter()
            .any(|e| e["reason"] == "Started" && e["count"].as_i64() >= Some(2))
            .then_some(ev)
    })
    .await?;
    assert!(
        events.iter().any(|e| e["reason"] == "Created"),
        "{events:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_container_removed_from_outside_is_recreated() -> anyhow::Result<()> {
    let c = DockerCluster::start("rmf", 1).await?;
    c.apply(&sample_deployment("web", 1)).await?;
    let pod = eventually("the pod runs", || async {
        let p = one_pod(&c, "web").await?;
        (container_status(&p)["state"]["running"].is_object()).then_some(p)
    })
    .await?;
    let first = container_status(&pod)["containerID"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("docker://")
        .to_string();
    docker(&["rm", "-f", &first])?;
    eventually(
        "a new container runs and the restart is counted",
        || async {
            let p = one_pod(&c, "web").await?;
            let s = container_status(&p);
            let id = s["containerID"]
                .as_str()?
                .trim_start_matches("docker://")
                .to_string();
            (s["state"]["running"].is_object()
                && id != first
                && s["restartCount"] == 1
                && c.containers(true).ok()?.len() == 1)
                .then_some(())
        },
    )
    .await?;
    Ok(())
}

/// Docker's view of one pod's container lifecycle: (action, unix seconds) from
/// `docker events` between two instants.
fn lifecycle(ns: &str, since: f64, until: f64) -> anyhow::Result<Vec<(String, f64)>> {
    let out = docker(&[
        "events",
        "--since",
        &format!("{since:.3}"),
        "--until",
        &format!("{until:.3}"),
        "--filter",
        &format!("label=io.kubernetes.pod.namespace={ns}"),
        "--filter",
        "type=container",
        "--filter",
        "event=start",
        "--filter",
        "event=die",
        "--format",
        "{{.Action}} {{.TimeNano}}",
    ])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (a, t) = l.split_once(' ')?;
            Some((a.to_string(), t.parse::<f64>().ok()? / 1e9))
        })
        .collect())
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_crash_loop_backs_off_with_growing_intervals() -> anyhow::Result<()> {
    let c = DockerCluster::start("crashloop", 1).await?;
    let since = now_secs();
    c.apply(&with_args(
        sample_deployment("crash", 1),
        &["serve", "--exit-after", "0.3", "--exit-code", "3"],
    ))
    .await?;
    let reasons = Mutex::new(BTreeSet::new());
    // The agent here backs off 0.5 s doubling to 4 s: 0, 0.5, 1, 2 s between restarts.
    eventually_within(Duration::from_secs(40), "4 restarts", || async {
        let p = one_pod(&c, "crash").await?;
        let s = container_status(&p);
        if let Some(r) = s["state"]["waiting"]["reason"].as_str() {
            reasons
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(r.to_string());
        }
        (s["restartCount"].as_i64()? >= 4).then_some(())
    })
    .await?;
    let seen = reasons.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(
        seen.contains("CrashLoopBackOff"),
        "CrashLoopBackOff was shown between restarts: {seen:?}"
    );
    let events = lifecycle(&c.namespace, since, now_secs())?;
    // Gap between each death and the next start, in order.
    let mut gaps = Vec::new();
    let mut last_die = None;
    for (action, t) in &events {
        match action.as_str() {
            "die" => last_die = Some(*t),
            "start" => {
                if let Some(d) = last_die.take() {
                    gaps.push(t - d);
                }
            }
            _ => {}
        }
    }
    assert!(
        gaps.len() >= 4,
        "at least 4 restarts in docker's events: {events:?}"
    );
    // The first restart is immediate; after that each wait is longer than the one before.
    for w in gaps.windows(2).skip(1).take(2) {
        assert!(w[1] > w[0] + 0.2, "restart intervals grow: {gaps:?}");
    }
    let name = one_pod(&c, "crash")
        .await
        .and_then(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .unwrap_or_default();
    let ev = events_for(&c, &name).await;
    assert!(
        ev.iter().any(|e| e["reason"] == "BackOff"),
        "a BackOff event: {ev:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_failing_liveness_probe_restarts_the_container() -> anyhow::Result<()> {
    let c = DockerCluster::start("liveness", 1).await?;
    let mut d = with_args(
        sample_deployment("sick", 1),
        &["serve", "--unhealthy-after", "1"],
    );
    d["spec"]["template"]["spec"]["containers"][0]["livenessProbe"] = json!({"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1, "failureThreshold": 2});
    c.apply(&d).await?;
    let pod = eventually_within(
        Duration::from_secs(30),
        "the container is restarted",
        || async {
            let p = one_pod(&c, "sick").await?;
            (container_status(&p)["restartCount"].as_i64()? >= 1).then_some(p)
        },
    )
    .await?;
    let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    let events = eventually("Unhealthy and Killing events", || async {
        let ev = events_for(&c, &name).await;
        (ev.iter().any(|e| e["reason"] == "Unhealthy")
            && ev.iter().any(|e| e["reason"] == "Killing"))
        .then_some(ev)
    })
    .await?;
    let unhealthy = events
        .iter()
        .find(|e| e["reason"] == "Unhealthy")
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .unwrap_or_default();
    assert!(
        unhealthy.starts_with("Liveness probe failed: HTTP probe failed with statuscode: 500"),
        "{unhealthy}"
    );
    Ok(())
}

#[tokio::test]
async fn readiness_gates_the_ready_condition_and_the_deployment_follows() -> anyhow::Result<()> {
    let c = DockerCluster::start("readiness", 1).await?;
    let mut d = with_args(
        sample_deployment("slow", 1),
        &["serve", "--ready-after", "3"],
    );
    d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] =
        json!({"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1});
    c.apply(&d).await?;
    let running_not_ready = eventually("the container runs but is not ready", || async {
        let p = one_pod(&c, "slow").await?;
        let s = container_status(&p);
        s["state"]["running"].is_object().then_some(s)
    })
    .await?;
    assert_eq!(
        running_not_ready["ready"], false,
        "not ready before --ready-after: {running_not_ready}"
    );
    let dep = c
        .client
        .get(&DEPLOYMENTS, Some(&c.namespace), "slow")
        .await?;
    assert_ne!(
        dep["status"]["readyReplicas"], 1,
        "the deployment does not count it yet"
    );
    eventually(
        "the pod becomes Ready and the deployment counts it",
        || async {
            let p = one_pod(&c, "slow").await?;
            let ready = p["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            let dep = c
                .client
                .get(&DEPLOYMENTS, Some(&c.namespace), "slow")
                .await
                .ok()?;
            (ready
                && dep["status"]["readyReplicas"] == 1
                && dep["status"]["availableReplicas"] == 1)
                .then_some(())
        },
    )
    .await?;
    Ok(())
}

fn bare_pod(name: &str, policy: &str, exit_code: i32) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "restartPolicy": policy,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "job",
                "image": "tugboat/sample:latest",
                "imagePullPolicy": "IfNotPresent",
                "args": ["serve", "--exit-after", "0.5", "--exit-code", exit_code.to_string()]
            }]
        }
    })
}

#[tokio::test]
async fn restart_policies_behave_as_in_kubernetes() -> anyhow::Result<()> {
    let c = DockerCluster::start("policy", 1).await?;
    for (name, policy, code) in [
        ("never-ok", "Never", 0),
        ("never-fail", "Never", 1),
        ("onfailure-ok", "OnFailure", 0),
        ("onfailure-fail", "OnFailure", 1),
    ] {
        c.apply(&bare_pod(name, policy, code)).await?;
    }
    let phase_of = |name: &'static str| {
        let c = &c;
        async move {
            one_pod(c, name)
                .await
                .and_then(|p| p["status"]["phase"].as_str().map(str::to_string))
        }
    };
    eventually("the one-shot pods finish", || async {
        (phase_of("never-ok").await.as_deref() == Some("Succeeded")
            && phase_of("never-fail").await.as_deref() == Some("Failed")
            && phase_of("onfailure-ok").await.as_deref() == Some("Succeeded"))
        .then_some(())
    })
    .await?;
    for name in ["never-ok", "never-fail", "onfailure-ok"] {
        let p = one_pod(&c, name).await.unwrap_or_default();
        assert_eq!(
            container_status(&p)["restartCount"],
            0,
            "{name} was not restarted"
        );
        assert!(
            container_status(&p)["state"]["terminated"].is_object(),
            "{name}: {p}"
        );
    }
    let failed = one_pod(&c, "never-fail").await.unwrap_or_default();
    assert_eq!(
        container_status(&failed)["state"]["terminated"]["exitCode"],
        1
    );
    eventually("OnFailure restarts a failing container", || async {
        let p = one_pod(&c, "onfailure-fail").await?;
        (container_status(&p)["restartCount"].as_i64()? >= 1 && p["status"]["phase"] != "Failed")
            .then_some(())
    })
    .await?;
    Ok(())
}

/// A `Write` the test can read while `tug get -w` is still writing.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).to_string()
    }
}

#[tokio::test]
async fn tug_get_pods_watch_shows_a_crash_as_it_happens() -> anyhow::Result<()> {
    use clap::Parser as _;
    let c = DockerCluster::start("watch", 1).await?;
    c.apply(&sample_deployment("web", 1)).await?;
    let pod = eventually("the pod runs", || async {
        let p = one_pod(&c, "web").await?;
        (container_status(&p)["state"]["running"].is_object()).then_some(p)
    })
    .await?;
    let config = c.config_dir().join("config.json");
    let kubeconfig = c.controller.kubeconfig();
    let cli = tugboat_cli::Cli::try_parse_from([
        "tug",
        "--server",
        &c.controller.url,
        "--kubeconfig",
        &kubeconfig.to_string_lossy(),
        "--config",
        &config.to_string_lossy(),
        "get",
        "pods",
        "-w",
        "-n",
        &c.namespace,
    ])?;
    let out = Shared::default();
    let stop = CancellationToken::new();
    let watch = tokio::spawn({
        let mut out = out.clone();
        let stop = stop.clone();
        async move { tugboat_cli::execute_with(cli, &mut out, tugboat_cli::Env::default(), stop).await }
    });
    eventually("the watch prints the running pod", || async {
        out.text().contains("Running").then_some(())
    })
    .await?;
    let ip = pod["status"]["podIP"].as_str().unwrap_or("").to_string();
    // Running is not listening yet (no readiness probe): send the crash until
    // a connection is made (curl's exit code 7 is "could not connect").
    let crash = format!("http://{ip}:8080/crash");
    eventually("the pod's server takes the crash request", || async {
        let out = tokio::process::Command::new("curl")
            .args(["-s", "--max-time", "3", "-X", "POST", &crash])
            .output()
            .await
            .ok()?;
        (out.status.code() != Some(7)).then_some(())
    })
    .await?;
    let text = eventually("the watch shows the restart", || async {
        let t = out.text();
        t.lines()
            .any(|l| l.contains("Running") && l.contains(" 1 ("))
            .then_some(t)
    })
    .await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), watch).await;
    let text = text?;
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{text}");
    assert!(lines.len() >= 3, "a line per change: {text}");
    assert!(
        lines.iter().any(|l| l.contains("Error")
            || l.contains("CrashLoopBackOff")
            || l.contains("Completed")),
        "the crash itself is shown: {text}"
    );
    Ok(())
}
