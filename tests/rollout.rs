//! Rolling updates, end to end: on real Docker, a Deployment behind a NodePort
//! Service is updated while a client opens 50 new connections a second through
//! the node ports, and not one request may fail — pods leave every node's
//! Service traffic before they get SIGTERM — while the rollout keeps within
//! `maxSurge`/`maxUnavailable`; an update to a missing image stalls with the old
//! pods serving until the progress deadline says so. With in-memory agents:
//! proportional scaling in the middle of a rollout, `Recreate`, and a paused
//! Deployment that still scales.
//!
//! Traffic goes only to loopback (the node ports).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tugboat_api::resource::{DEPLOYMENTS, PODS, REPLICASETS};
use tugboat_api::{Client, ListParams, PatchType};
use tugboat_tests::docker::{DockerCluster, sample_deployment};
use tugboat_tests::fake_agent::FakeAgent;
use tugboat_tests::load::{Load, get as request};
use tugboat_tests::{TestController, eventually, eventually_within, tug, within};

/// New connections per second during an update.
const RATE: u64 = 50;

/// The sample behind a readiness probe on /ready checked every second.
fn web(replicas: i64, strategy: Value) -> Value {
    let mut d = sample_deployment("web", replicas);
    d["spec"]["strategy"] = strategy;
    d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = json!(10);
    let c = &mut d["spec"]["template"]["spec"]["containers"][0];
    c["ports"] = json!([{"name": "http", "containerPort": 8080}]);
    c["env"] = json!([{"name": "VERSION", "value": "1"}]);
    c["readinessProbe"] = json!({"httpGet": {"path": "/ready", "port": 8080},
        "periodSeconds": 1, "failureThreshold": 1, "successThreshold": 1});
    d
}

fn node_port_service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    })
}

/// The Deployment's pods as a sampler counts them: not terminating, and of
/// those Ready.
async fn counts(client: &Client, ns: &str) -> Option<(usize, usize)> {
    let params = ListParams {
        label_selector: Some("app=web".into()),
        ..Default::default()
    };
    let list = client.list(&PODS, Some(ns), &params).await.ok()?;
    let live: Vec<&Value> = list["items"]
        .as_array()?
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    let ready = live
        .iter()
        .filter(|p| {
            p["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .count();
    Some((live.len(), ready))
}

/// Samples the pod counts every 100 ms until stopped: the fewest Ready and the
/// most pods seen.
struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, usize, usize)>,
}

impl Sampler {
    fn start(client: Client, ns: String) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let (mut least_ready, mut most, mut samples) = (usize::MAX, 0, 0);
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(180)
                {
                    if let Some((live, ready)) = counts(&client, &ns).await {
                        least_ready = least_ready.min(ready);
                        most = most.max(live);
                        samples += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (least_ready, most, samples)
            }
        });
        Sampler { stop, task }
    }

    async fn finish(self) -> anyhow::Result<(usize, usize, usize)> {
        self.stop.store(true, Ordering::Relaxed);
        Ok(within("the sampler to finish", self.task).await??)
    }
}

/// The Deployment's current template hash (its newest ReplicaSet's).
async fn status(client: &Client, ns: &str) -> anyhow::Result<Value> {
    Ok(client.get(&DEPLOYMENTS, Some(ns), "web").await?)
}

/// Whether the rollout is complete, as `kubectl rollout status` decides.
fn complete(d: &Value) -> bool {
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let s = &d["status"];
    d["metadata"]["generation"].as_i64() <= s["observedGeneration"].as_i64()
        && s["updatedReplicas"].as_i64() == Some(want)
        && s["replicas"].as_i64() == Some(want)
        && s["availableReplicas"].as_i64() == Some(want)
}

async fn update_env(client: &Client, ns: &str, value: &str) -> anyhow::Result<()> {
    client
        .patch(
            &DEPLOYMENTS,
            Some(ns),
            "web",
            &json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "env": [{"name": "VERSION", "value": value}]}]}}}}),
            PatchType::Strategic,
        )
        .await?;
    Ok(())
}

/// Two nodes running `deployment` (4 replicas) behind a NodePort Service, every
/// replica ready and every node answering: the cluster, its namespace and the
/// node port on each node.
async fn serving(
    test: &str,
    first: u8,
    deployment: Value,
) -> anyhow::Result<(DockerCluster, String, Vec<SocketAddr>)> {
    let (c, ips) = DockerCluster::start_loopback_nodes(test, first, &[]).await?;
    let ns = c.namespace.clone();
    c.apply(&deployment).await?;
    let svc = c.apply(&node_port_service()).await?;
    let port = u16::try_from(svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap_or(0))?;
    eventually_within(Duration::from_secs(60), "4 replicas are ready", || async {
        complete(&status(&c.client, &ns).await.ok()?).then_some(())
    })
    .await?;
    let addrs: Vec<SocketAddr> = ips
        .iter()
        .map(|ip| format!("{ip}:{port}").parse())
        .collect::<Result<_, _>>()?;
    // Warm: every node answers before the clock starts.
    for a in &addrs {
        eventually("the node port answers", || async { request(*a).await.ok() }).await?;
    }
    Ok((c, ns, addrs))
}

/// Rolls `web` (4 replicas, `strategy`) to a new env value under load; checks
/// no request failed and the bounds held; returns a summary line.
async fn update_under_load(
    test: &str,
    first: u8,
    strategy: Value,
    max_unavailable: usize,
    max_surge: usize,
) -> anyhow::Result<String> {
    let (c, ns, addrs) = serving(test, first, web(4, strategy)).await?;
    let load = Load::start(addrs, RATE);
    let sampler = Sampler::start(c.client.clone(), ns.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    update_env(&c.client, &ns, "2").await?;
    // `tug rollout status` follows it and exits 0 when it is complete.
    let said = tug(
        &c.controller.url,
        c.config_dir(),
        &[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            &ns,
            "--timeout",
            "120s",
        ],
    )
    .await?;
    assert!(
        said.trim_end()
            .ends_with("deployment \"web\" successfully rolled out"),
        "{said}"
    );
    let d = status(&c.client, &ns).await?;
    assert!(
        complete(&d) && d["metadata"]["generation"].as_i64() == Some(2),
        "{}",
        d["status"]
    );
    let rolled = started.elapsed();
    // The old pods' containers are gone too.
    let new_hash = eventually("every pod has the new template", || async {
        let pods = c.pods("app=web").await.ok()?;
        let hashes: BTreeSet<String> = pods
            .iter()
            .filter_map(|p| {
                p["metadata"]["labels"]["pod-template-hash"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        (pods.len() == 4 && hashes.len() == 1)
            .then(|| hashes.into_iter().next().unwrap_or_default())
    })
    .await?;
    let pods: BTreeSet<String> = c
        .pods("app=web")
        .await?
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    eventually("only the new pods' containers remain", || async {
        let containers = c.containers(false).ok()?;
        containers
            .iter()
            .all(|k| pods.contains(&k.pod))
            .then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (least_ready, most, samples) = sampler.finish().await?;
    let (answered, failures) = load.finish().await?;
    let rs = c
        .client
        .list(&REPLICASETS, Some(&ns), &ListParams::default())
        .await?;
    assert!(
        rs["items"].as_array().is_some_and(|l| l.iter().any(|r| {
            r["metadata"]["labels"]["pod-template-hash"].as_str() == Some(new_hash.as_str())
        })),
        "the new ReplicaSet is there"
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the rollout: {:?}",
        failures.len(),
        answered + failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(answered >= 100, "only {answered} requests were made");
    assert!(samples >= 10, "only {samples} samples");
    assert!(
        least_ready >= 4 - max_unavailable,
        "only {least_ready} pods were Ready at one point (maxUnavailable {max_unavailable})"
    );
    assert!(
        most <= 4 + max_surge,
        "{most} pods at one point (maxSurge {max_surge})"
    );
    let line = format!(
        "{test}: rolled in {rolled:.1?}, {answered} requests answered, 0 failed; fewest Ready {least_ready}, most pods {most}, {samples} samples"
    );
    eprintln!("{line}");
    Ok(line)
}

#[tokio::test]
async fn a_rolling_update_with_the_default_bounds_drops_no_request() -> anyhow::Result<()> {
    // Kubernetes' defaults: 25 % of 4 is one more pod and one fewer Ready.
    update_under_load("roll-default", 30, json!({"type": "RollingUpdate"}), 1, 1).await?;
    Ok(())
}

#[tokio::test]
async fn a_rolling_update_with_no_unavailable_pod_drops_no_request() -> anyhow::Result<()> {
    update_under_load(
        "roll-surge",
        32,
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}),
        0,
        1,
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn an_update_to_a_missing_image_stalls_with_the_old_pods_serving() -> anyhow::Result<()> {
    let mut d = web(4, json!({"type": "RollingUpdate"}));
    d["spec"]["progressDeadlineSeconds"] = json!(8);
    let (c, ns, addrs) = serving("roll-stall", 34, d).await?;
    let load = Load::start(addrs, RATE);
    c.client
        .patch(
            &DEPLOYMENTS,
            Some(&ns),
            "web",
            &json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "tugboat/missing:never", "imagePullPolicy": "IfNotPresent"}]}}}}),
            PatchType::Strategic,
        )
        .await?;
    let stalled = eventually_within(
        Duration::from_secs(40),
        "Progressing=False with ProgressDeadlineExceeded",
        || async {
            let d = status(&c.client, &ns).await.ok()?;
            d["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Progressing" && c["status"] == "False")
                .filter(|c| c["reason"] == "ProgressDeadlineExceeded")
                .map(|_| d.clone())
        },
    )
    .await?;
    // The old ReplicaSet was never torn down: 3 of 4 (maxUnavailable 1) serve.
    assert!(
        stalled["status"]["availableReplicas"].as_i64() >= Some(3),
        "{}",
        stalled["status"]
    );
    let err = tug(
        &c.controller.url,
        c.config_dir(),
        &[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            &ns,
            "--timeout",
            "20s",
        ],
    )
    .await
    .expect_err("a stalled rollout's status fails");
    assert!(
        err.to_string()
            .contains("deployment \"web\" exceeded its progress deadline"),
        "{err}"
    );
    // Back to the previous template: the stuck pods go.
    let undone = tug(
        &c.controller.url,
        c.config_dir(),
        &["rollout", "undo", "deployment/web", "-n", &ns],
    )
    .await?;
    assert!(undone.contains("rolled back"), "{undone}");
    eventually_within(
        Duration::from_secs(60),
        "the rollback completes",
        || async {
            let d = status(&c.client, &ns).await.ok()?;
            let pods = c.pods("app=web").await.ok()?;
            let stuck = pods
                .iter()
                .any(|p| p["spec"]["containers"][0]["image"] == "tugboat/missing:never");
            (complete(&d) && !stuck).then_some(())
        },
    )
    .await?;
    let (answered, failures) = load.finish().await?;
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        answered + failures.len(),
        &failures[..failures.len().min(10)]
    );
    Ok(())
}

/// The sizes of the Deployment's ReplicaSets, by image.
async fn sizes(client: &Client) -> Option<Vec<(String, i64)>> {
    let rs = client
        .list(&REPLICASETS, Some("default"), &ListParams::default())
        .await
        .ok()?;
    let mut out: Vec<(String, i64)> = rs["items"]
        .as_array()?
        .iter()
        .map(|r| {
            (
                r["spec"]["template"]["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                r["spec"]["replicas"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    out.sort();
    Some(out)
}

#[tokio::test]
async fn replicas_changed_mid_rollout_are_spread_in_proportion() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let agent = FakeAgent::start(&tc, "n1").await?;
    let c = &tc.client;
    // Kubernetes' documented example: 10 replicas, maxSurge 3, maxUnavailable 2,
    // updated to an image that never pulls: the old ReplicaSet at 8, the new at 5.
    let mut d = tugboat_tests::deployment("web", "default", 10);
    d["spec"]["strategy"] = json!({"type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}});
    c.create(&DEPLOYMENTS, Some("default"), &d).await?;
    eventually_within(Duration::from_secs(30), "10 replicas available", || async {
        let d = c.get(&DEPLOYMENTS, Some("default"), "web").await.ok()?;
        (d["status"]["availableReplicas"] == 10).then_some(())
    })
    .await?;
    c.patch(
        &DEPLOYMENTS,
        Some("default"),
        "web",
        &json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "missing:1"}]}}}}),
        PatchType::Strategic,
    )
    .await?;
    let old = tugboat_tests::fake_agent::IMAGE.to_string();
    let stalled = vec![("missing:1".to_string(), 5), (old.clone(), 8)];
    eventually("the rollout stalls at 8 old and 5 new", || async {
        (sizes(c).await? == stalled).then_some(())
    })
    .await?;
    // Scaled to 15 (most pods 18): 3 more to the old, 2 to the new.
    c.scale(&DEPLOYMENTS, Some("default"), "web", 15).await?;
    let spread = vec![("missing:1".to_string(), 7), (old.clone(), 11)];
    eventually("15 replicas spread in proportion", || async {
        (sizes(c).await? == spread).then_some(())
    })
    .await?;
    // A paused Deployment still scales, and rolls nothing.
    c.patch(
        &DEPLOYMENTS,
        Some("default"),
        "web",
        &json!({"spec": {"paused": true}}),
        PatchType::Merge,
    )
    .await?;
    c.scale(&DEPLOYMENTS, Some("default"), "web", 10).await?;
    eventually("scaled down in proportion while paused", || async {
        let s = sizes(c).await?;
        let total: i64 = s.iter().map(|(_, n)| n).sum();
        (total == 13 && s.iter().all(|(_, n)| *n > 0)).then_some(())
    })
    .await?;
    let d = c.get(&DEPLOYMENTS, Some("default"), "web").await?;
    let progressing = d["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Progressing").cloned())
        .unwrap_or_default();
    assert_eq!(progressing["reason"], "DeploymentPaused", "{progressing}");
    agent.stop().await?;
    tc.stop().await
}

#[tokio::test]
async fn recreate_stops_every_old_pod_before_a_new_one_starts() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let agent = FakeAgent::start(&tc, "n1").await?;
    let c = &tc.client;
    let mut d = tugboat_tests::deployment("web", "default", 3);
    d["spec"]["strategy"] = json!({"type": "Recreate"});
    d["metadata"]["annotations"] = json!({"kubernetes.io/change-cause": "first"});
    c.create(&DEPLOYMENTS, Some("default"), &d).await?;
    eventually_within(Duration::from_secs(30), "3 replicas available", || async {
        let d = c.get(&DEPLOYMENTS, Some("default"), "web").await.ok()?;
        (d["status"]["availableReplicas"] == 3).then_some(())
    })
    .await?;
    let old_hash = sizes(c).await.unwrap_or_default();
    assert_eq!(old_hash.len(), 1);
    // Watch every pod change while the template changes.
    let mut seen_both = false;
    c.patch(
        &DEPLOYMENTS,
        Some("default"),
        "web",
        &json!({"metadata": {"annotations": {"kubernetes.io/change-cause": "second"}},
            "spec": {"template": {"metadata": {"annotations": {"v": "2"}}}}}),
        PatchType::Merge,
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pods = c
            .list(&PODS, Some("default"), &ListParams::default())
            .await?;
        let hashes: BTreeSet<&str> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["metadata"]["labels"]["pod-template-hash"].as_str())
            .collect();
        seen_both |= hashes.len() > 1;
        let d = c.get(&DEPLOYMENTS, Some("default"), "web").await?;
        if d["metadata"]["generation"] == d["status"]["observedGeneration"]
            && d["status"]["updatedReplicas"] == 3
            && d["status"]["availableReplicas"] == 3
            && d["status"]["replicas"] == 3
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the Recreate rollout did not finish: {}",
            d["status"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!seen_both, "old and new pods existed at the same time");
    // The change-cause followed the template onto its ReplicaSet.
    let rs = c
        .list(&REPLICASETS, Some("default"), &ListParams::default())
        .await?;
    let causes: BTreeSet<(String, String)> = rs["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                r["metadata"]["annotations"]["kubernetes.io/change-cause"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [("1", "first"), ("2", "second")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(causes, want);
    agent.stop().await?;
    tc.stop().await
}

#[tokio::test]
async fn a_rollout_restart_replaces_every_pod_without_dropping_below_capacity() -> anyhow::Result<()>
{
    let tc = TestController::start().await?;
    let agent = FakeAgent::start(&tc, "n1").await?;
    let c = &tc.client;
    let mut d = tugboat_tests::deployment("web", "default", 4);
    d["spec"]["strategy"] = json!({"type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    c.create(&DEPLOYMENTS, Some("default"), &d).await?;
    eventually_within(Duration::from_secs(30), "4 replicas available", || async {
        let d = c.get(&DEPLOYMENTS, Some("default"), "web").await.ok()?;
        (d["status"]["availableReplicas"] == 4).then_some(())
    })
    .await?;
    let before: BTreeSet<String> = pod_names(c).await?;
    let sampler = Sampler::start(c.clone(), "default".into());
    let dir = tempfile::tempdir()?;
    let said = tug(
        &tc.url,
        dir.path(),
        &["rollout", "restart", "deployment/web"],
    )
    .await?;
    assert_eq!(said, "deployment.apps/web restarted\n");
    tug(
        &tc.url,
        dir.path(),
        &["rollout", "status", "deployment/web", "--timeout", "60s"],
    )
    .await?;
    let after = eventually("only new pods remain", || async {
        let now = pod_names(c).await.ok()?;
        (now.len() == 4 && now.is_disjoint(&before)).then_some(now)
    })
    .await?;
    let (least_ready, most, samples) = sampler.finish().await?;
    assert!(samples >= 3, "{samples} samples");
    assert!(least_ready >= 4, "only {least_ready} Ready at one point");
    assert!(most <= 5, "{most} pods at one point");
    assert!(after.is_disjoint(&before));
    agent.stop().await?;
    tc.stop().await
}

async fn pod_names(c: &Client) -> anyhow::Result<BTreeSet<String>> {
    let pods = c
        .list(
            &PODS,
            Some("default"),
            &ListParams {
                label_selector: Some("app=web".into()),
                ..Default::default()
            },
        )
        .await?;
    Ok(pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect())
}
