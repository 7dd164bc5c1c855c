//! Autoscaling, end to end on real Docker: the agents measure the sample's
//! containers and count the connections their proxies open; the controller
//! serves that as metrics.k8s.io and runs HorizontalPodAutoscalers on it.
//!
//! - CPU: a bounded burn in the one pod scales the Deployment up to its
//!   maximum and never past it; once the burn ends it comes back down after the
//!   (shortened) stabilization window; events and `tug get hpa` show each step.
//! - Request rate: a bounded load of new connections through the node ports
//!   scales the Deployment out, and the load spreads over the new replicas.
//! - Scale to zero: an idle Deployment goes to 0 replicas; one request through
//!   the node port is held, the Deployment scaled to 1 and the request answered.
//! - `kubectl top pods` and `tug top pods` agree with `docker stats`.
//!
//! The controller reads the agents every 2 s and evaluates every 2 s here (15 s
//! each by default). Traffic goes only to loopback (the node ports).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tugboat_api::resource::{EVENTS, HORIZONTALPODAUTOSCALERS};
use tugboat_api::{Client, ListParams};
use tugboat_tests::autoscale::{
    burn, connections_hpa, cpu_hpa, held_get, node_ports, ready_pods, replicas, service, web,
};
use tugboat_tests::docker::{DockerCluster, docker};
use tugboat_tests::load::{Load, get_from};
use tugboat_tests::{eventually, eventually_within, tug};

/// How often the controller reads the agents and evaluates autoscalers here.
const PERIOD: Duration = Duration::from_secs(2);

async fn cluster(test: &str, first: u8) -> anyhow::Result<(DockerCluster, Vec<String>)> {
    tugboat_tests::autoscale::cluster(test, first, PERIOD).await
}

/// Records the highest `spec.replicas` seen every 200 ms until dropped.
struct Highest {
    stop: Arc<AtomicBool>,
    seen: Arc<AtomicI64>,
}

impl Highest {
    fn start(client: Client, ns: String) -> Highest {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicI64::new(0));
        tokio::spawn({
            let (stop, seen) = (stop.clone(), seen.clone());
            async move {
                // Bounded like every loop here: at most ten minutes.
                let until = Instant::now() + Duration::from_secs(600);
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    if let Some(r) = replicas(&client, &ns).await {
                        seen.fetch_max(r, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
        Highest { stop, seen }
    }

    fn most(&self) -> i64 {
        self.seen.load(Ordering::Relaxed)
    }
}

impl Drop for Highest {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The autoscaler's `SuccessfulRescale` messages, oldest first.
async fn rescales(client: &Client, ns: &str) -> Vec<String> {
    let params = ListParams {
        field_selector: Some("involvedObject.name=web".into()),
        ..Default::default()
    };
    let Ok(list) = client.list(&EVENTS, Some(ns), &params).await else {
        return Vec::new();
    };
    let mut events: Vec<(String, String)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["reason"] == "SuccessfulRescale")
        .filter(|e| e["involvedObject"]["kind"] == "HorizontalPodAutoscaler")
        .map(|e| {
            (
                e["firstTimestamp"].as_str().unwrap_or("").to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    events.sort();
    events.into_iter().map(|(_, m)| m).collect()
}

#[tokio::test]
async fn cpu_load_scales_a_deployment_up_to_its_maximum_and_back_down() -> anyhow::Result<()> {
    let (c, ips) = cluster("hpa-cpu", 50).await?;
    let ns = c.namespace.clone();
    c.apply(&web(1, "100m")).await?;
    let svc = c.apply(&service()).await?;
    let addrs = node_ports(&svc, &ips)?;
    c.apply(&cpu_hpa(1, 3, 50, 10)).await?;
    // Idle: the autoscaler measures the pod (a few percent) and keeps 1.
    let idle = eventually_within(Duration::from_secs(60), "the HPA reports CPU", || async {
        let h = c
            .client
            .get(&HORIZONTALPODAUTOSCALERS, Some(&ns), "web")
            .await
            .ok()?;
        h["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"]
            .as_i64()
            .map(|_| h)
    })
    .await?;
    assert_eq!(idle["status"]["desiredReplicas"], 1, "{}", idle["status"]);
    let active = idle["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "ScalingActive").cloned());
    assert_eq!(
        active.as_ref().map(|c| &c["status"]),
        Some(&json!("True")),
        "{active:?}"
    );
    eventually("a node port answers", || async {
        get_from(addrs[0]).await.ok()
    })
    .await?;

    let highest = Highest::start(c.client.clone(), ns.clone());
    let started = Instant::now();
    // 300m against a request of 100m: 300 %, six times the target; capped at 3.
    burn(addrs[0], 30, 300).await?;
    eventually_within(Duration::from_secs(60), "3 replicas ready", || async {
        (ready_pods(&c.client, &ns).await?.len() == 3).then_some(())
    })
    .await?;
    let up = started.elapsed();
    let listed = tug(
        &c.controller.url,
        c.config_dir(),
        &["get", "hpa", "-n", &ns],
    )
    .await?;
    let header = listed.lines().next().unwrap_or("");
    for col in [
        "NAME",
        "REFERENCE",
        "TARGETS",
        "MINPODS",
        "MAXPODS",
        "REPLICAS",
        "AGE",
    ] {
        assert!(header.contains(col), "no {col} in {listed}");
    }
    let row = listed.lines().nth(1).unwrap_or("");
    assert!(
        row.contains("Deployment/web") && row.contains("/50%") && row.contains("cpu: "),
        "{listed}"
    );

    // The burn ends after 30 s; then 10 s of stabilization and it is back to 1.
    eventually_within(Duration::from_secs(120), "back to 1 replica", || async {
        (replicas(&c.client, &ns).await? == 1).then_some(())
    })
    .await?;
    let down = started.elapsed();
    assert!(
        highest.most() <= 3,
        "scaled to {} past maxReplicas 3",
        highest.most()
    );
    assert_eq!(highest.most(), 3, "never reached maxReplicas 3");
    // The Event is written just after the rescale: wait for it.
    let events = eventually_within(
        Duration::from_secs(30),
        "the rescale to 1 is recorded",
        || async {
            let events = rescales(&c.client, &ns).await;
            events
                .iter()
                .any(|m| m == "New size: 1; reason: All metrics below target")
                .then_some(events)
        },
    )
    .await?;
    assert!(
        events
            .iter()
            .any(|m| m.starts_with("New size: 3; reason: cpu resource utilization")),
        "{events:?}"
    );
    let h = c
        .client
        .get(&HORIZONTALPODAUTOSCALERS, Some(&ns), "web")
        .await?;
    assert!(h["status"]["lastScaleTime"].is_string(), "{}", h["status"]);
    eprintln!(
        "cpu autoscaling: 3 replicas ready {:.1}s after the burn started, back to 1 at {:.1}s; events {events:?}",
        up.as_secs_f64(),
        down.as_secs_f64()
    );
    Ok(())
}

#[tokio::test]
async fn a_rate_of_new_connections_scales_out_and_spreads_over_the_new_replicas()
-> anyhow::Result<()> {
    let (c, ips) = cluster("hpa-rate", 52).await?;
    let ns = c.namespace.clone();
    c.apply(&web(1, "50m")).await?;
    let svc = c.apply(&service()).await?;
    let addrs = node_ports(&svc, &ips)?;
    eventually_within(Duration::from_secs(60), "the pod is ready", || async {
        (ready_pods(&c.client, &ns).await?.len() == 1).then_some(())
    })
    .await?;
    for a in &addrs {
        eventually("the node port answers", || async {
            get_from(*a).await.ok()
        })
        .await?;
    }
    // `tug autoscale` writes the Object metric on the Service in front.
    let said = tug(
        &c.controller.url,
        c.config_dir(),
        &[
            "autoscale",
            "deployment/web",
            "-n",
            &ns,
            "--min",
            "1",
            "--max",
            "3",
            "--connections-per-second",
            "4",
        ],
    )
    .await?;
    assert_eq!(
        said.trim(),
        "horizontalpodautoscaler.autoscaling/web autoscaled"
    );
    let highest = Highest::start(c.client.clone(), ns.clone());
    // 12 new connections a second against 4 per pod: 3 pods.
    let load = Load::start(addrs, 12);
    let started = Instant::now();
    let scaled = eventually_within(Duration::from_secs(90), "3 replicas ready", || async {
        let pods = ready_pods(&c.client, &ns).await?;
        (pods.len() == 3).then_some(pods)
    })
    .await;
    let up = started.elapsed();
    // Then a few seconds of the same load, counted by the pod that answered.
    let _ = load.take_served_by();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let served = load.take_served_by();
    let (answered, failures) = load.finish().await?;
    let pods = scaled?;
    assert!(
        highest.most() <= 3,
        "scaled to {} past maxReplicas 3",
        highest.most()
    );
    assert!(
        failures.is_empty(),
        "{} of {answered} failed: {failures:?}",
        failures.len()
    );
    let serving: BTreeSet<&String> = served.keys().collect();
    let expected: BTreeSet<&String> = pods.iter().collect();
    assert_eq!(serving, expected, "served by {served:?}");
    let total: usize = served.values().sum();
    for (pod, n) in &served {
        // Round-robin per node: a third each, give or take.
        assert!(*n * 6 >= total, "{pod} answered {n} of {total}: {served:?}");
    }
    let h = c
        .client
        .get(&HORIZONTALPODAUTOSCALERS, Some(&ns), "web")
        .await?;
    let current = &h["status"]["currentMetrics"][0]["object"]["current"]["averageValue"];
    assert!(current.is_string(), "{}", h["status"]);
    eprintln!(
        "rate autoscaling: 3 replicas ready {:.1}s after 12 conn/s started; then served {served:?}; metric {current}",
        up.as_secs_f64()
    );
    Ok(())
}

#[tokio::test]
async fn an_idle_deployment_scales_to_zero_and_the_first_request_wakes_it() -> anyhow::Result<()> {
    let (c, ips) = cluster("hpa-zero", 54).await?;
    let ns = c.namespace.clone();
    c.apply(&web(1, "50m")).await?;
    let svc = c.apply(&service()).await?;
    let addrs = node_ports(&svc, &ips)?;
    c.apply(&connections_hpa(0, 2, "5", 6)).await?;
    eventually_within(Duration::from_secs(90), "0 replicas and no pod", || async {
        let none = c.pods("app=web").await.ok()?.is_empty();
        let stopped = c.containers(true).ok()?.is_empty();
        (replicas(&c.client, &ns).await? == 0 && none && stopped).then_some(())
    })
    .await?;
    let marked = c
        .client
        .get(&tugboat_api::resource::SERVICES, Some(&ns), "web")
        .await?;
    assert_eq!(
        marked["metadata"]["annotations"]["autoscaling.tugboat.io/activator"], "web",
        "{}",
        marked["metadata"]
    );
    // Nothing serves now; the proxy holds the request while the Deployment
    // scales up, then it is answered.
    let started = Instant::now();
    // One request, held up to a minute (longer than the loads' 5 s timeout).
    let pod = held_get(addrs[1], Duration::from_secs(90)).await?;
    let cold = started.elapsed();
    assert!(pod.starts_with("HTTP/1.1 200"), "answered {pod:?}");
    assert!(pod.contains("\"hostname\":\"web-"), "{pod}");
    assert_eq!(replicas(&c.client, &ns).await, Some(1));
    // Events are recorded beside the rescale, not before it: wait for them.
    let woke = "New size: 1; reason: a connection to Service web arrived while scaled to zero";
    let found = eventually_within(Duration::from_secs(20), "the rescale events", || async {
        let events = rescales(&c.client, &ns).await;
        let both = events.iter().any(|m| m == woke)
            && events.iter().any(|m| m.starts_with("New size: 0;"));
        both.then_some(events)
    })
    .await;
    assert!(found.is_ok(), "{:?}", rescales(&c.client, &ns).await);
    // Idle again: back to zero, and woken again by the next request.
    eventually_within(Duration::from_secs(60), "0 replicas again", || async {
        let none = c.pods("app=web").await.ok()?.is_empty();
        let stopped = c.containers(true).ok()?.is_empty();
        (replicas(&c.client, &ns).await? == 0 && none && stopped).then_some(())
    })
    .await?;
    let started = Instant::now();
    let again = held_get(addrs[0], Duration::from_secs(90)).await?;
    let cold_again = started.elapsed();
    assert!(again.starts_with("HTTP/1.1 200"), "answered {again:?}");
    // Without the autoscaler, nothing wakes the Service: the next connection
    // is closed instead of held, and the Service loses its mark.
    c.client
        .delete(&HORIZONTALPODAUTOSCALERS, Some(&ns), "web")
        .await?;
    c.client
        .patch(
            &tugboat_api::resource::DEPLOYMENTS,
            Some(&ns),
            "web",
            &json!({"spec": {"replicas": 0}}),
            tugboat_api::PatchType::Merge,
        )
        .await?;
    eventually_within(Duration::from_secs(60), "0 replicas once more", || async {
        let none = c.pods("app=web").await.ok()?.is_empty();
        (replicas(&c.client, &ns).await? == 0 && none).then_some(())
    })
    .await?;
    let refused = held_get(addrs[0], Duration::from_secs(20)).await;
    assert!(
        refused.as_ref().is_ok_and(|r| r.is_empty()) || refused.is_err(),
        "with no autoscaler the connection is closed: {refused:?}"
    );
    eventually_within(
        Duration::from_secs(20),
        "the Service is unmarked",
        || async {
            let s = c
                .client
                .get(&tugboat_api::resource::SERVICES, Some(&ns), "web")
                .await
                .ok()?;
            s["metadata"]["annotations"]["autoscaling.tugboat.io/activator"]
                .is_null()
                .then_some(())
        },
    )
    .await?;
    eprintln!(
        "scale to zero: the first request answered {:.2}s after it was sent (cold start), the next time {:.2}s",
        cold.as_secs_f64(),
        cold_again.as_secs_f64()
    );
    Ok(())
}

/// millicores and MiB from `12m` / `1.5%`-free `docker stats` and top cells.
fn millicores(cell: &str) -> Option<f64> {
    cell.strip_suffix('m')?.parse().ok()
}

fn mib(cell: &str) -> Option<f64> {
    let (n, unit) = cell.split_at(cell.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "B" => n / 1048576.0,
        "KiB" | "kB" => n / 1024.0,
        "MiB" | "Mi" | "MB" => n,
        "GiB" | "Gi" | "GB" => n * 1024.0,
        _ => return None,
    })
}

#[tokio::test]
async fn top_pods_agrees_with_docker_stats() -> anyhow::Result<()> {
    let (c, ips) = cluster("hpa-top", 56).await?;
    let ns = c.namespace.clone();
    c.apply(&web(1, "100m")).await?;
    let svc = c.apply(&service()).await?;
    let addrs = node_ports(&svc, &ips)?;
    let pod = eventually_within(Duration::from_secs(60), "the pod is ready", || async {
        ready_pods(&c.client, &ns).await?.into_iter().next()
    })
    .await?;
    eventually("a node port answers", || async {
        get_from(addrs[0]).await.ok()
    })
    .await?;
    burn(addrs[0], 40, 400).await?;
    // Two readings of the burning pod in a row.
    tokio::time::sleep(PERIOD * 3).await;
    let id = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=io.kubernetes.pod.name={pod}"),
        "--filter",
        &format!("label=io.kubernetes.pod.namespace={ns}"),
        "--filter",
        "label=io.kubernetes.container.name=web",
    ])?;
    anyhow::ensure!(!id.is_empty() && !id.contains('\n'), "containers {id:?}");
    let stats = docker(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.CPUPerc}} {{.MemUsage}}",
        &id,
    ])?;
    let mut parts = stats.split_whitespace();
    let docker_cpu = parts
        .next()
        .and_then(|p| p.strip_suffix('%'))
        .and_then(|p| p.parse::<f64>().ok())
        .map(|p| p * 10.0)
        .ok_or_else(|| anyhow::anyhow!("docker stats: {stats:?}"))?;
    let docker_mem = parts
        .next()
        .and_then(mib)
        .ok_or_else(|| anyhow::anyhow!("docker stats: {stats:?}"))?;

    let ours = tug(
        &c.controller.url,
        c.config_dir(),
        &["top", "pods", "-n", &ns],
    )
    .await?;
    let kubectl = tokio::process::Command::new("kubectl")
        .args(["--kubeconfig"])
        .arg(c.controller.kubeconfig())
        .args(["top", "pods", "-n", &ns, "--containers"])
        .output()
        .await?;
    anyhow::ensure!(
        kubectl.status.success(),
        "kubectl top: {}",
        String::from_utf8_lossy(&kubectl.stderr)
    );
    let kubectl = String::from_utf8(kubectl.stdout)?;
    let row = |table: &str, skip: usize| -> Option<(f64, f64)> {
        let line = table.lines().find(|l| l.starts_with(&pod))?;
        let cells: Vec<&str> = line.split_whitespace().skip(skip).collect();
        Some((millicores(cells.first()?)?, mib(cells.get(1)?)?))
    };
    let (tug_cpu, tug_mem) = row(&ours, 1).ok_or_else(|| anyhow::anyhow!("{ours}"))?;
    let (k_cpu, k_mem) = row(&kubectl, 2).ok_or_else(|| anyhow::anyhow!("{kubectl}"))?;
    eprintln!(
        "burning 400m: docker stats {docker_cpu:.0}m {docker_mem:.1}MiB; tug top {tug_cpu}m {tug_mem}MiB; kubectl top {k_cpu}m {k_mem}MiB"
    );
    // Within the sampling window: the burn is steady at 400m, so every
    // reading is near it; memory is the same working set, rounded to MiB.
    for (who, cpu) in [("tug top", tug_cpu), ("kubectl top", k_cpu)] {
        assert!(
            (cpu - docker_cpu).abs() <= 100.0 && (cpu - 400.0).abs() <= 120.0,
            "{who} says {cpu}m, docker stats {docker_cpu}m"
        );
    }
    for (who, mem) in [("tug top", tug_mem), ("kubectl top", k_mem)] {
        assert!(
            (mem - docker_mem).abs() <= 2.0 + docker_mem * 0.2,
            "{who} says {mem}MiB, docker stats {docker_mem}MiB"
        );
    }
    let nodes = tug(&c.controller.url, c.config_dir(), &["top", "nodes"]).await?;
    for n in &c.nodes {
        assert!(nodes.contains(n.as_str()), "{nodes}");
    }
    Ok(())
}
