//! Services on the real Docker engine, two nodes sharing this host as separate
//! nodes (each agent on its own loopback address): node ports answer on every
//! node and spread over every ready replica, scaling changes who answers,
//! readiness decides traffic, a killed replica costs no request, UDP and
//! `ClientIP` affinity work, and a deleted Service stops answering.
//!
//! Traffic goes only to loopback (the node ports) and to the test's own
//! containers (their pod IPs, to flip readiness).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tugboat_api::resource::{DEPLOYMENTS, SERVICES};
use tugboat_tests::docker::{DockerCluster, docker, sample_deployment};
use tugboat_tests::{eventually, within};

/// How long one request may take.
const REQUEST: Duration = Duration::from_secs(5);

async fn two_nodes(test: &str, first: u8) -> anyhow::Result<(DockerCluster, Vec<String>)> {
    DockerCluster::start_loopback_nodes(test, first, &[]).await
}

/// The sample behind a readiness probe on /ready checked every second.
pub fn web(name: &str, replicas: i64, extra_args: &[&str]) -> Value {
    let mut d = sample_deployment(name, replicas);
    let c = &mut d["spec"]["template"]["spec"]["containers"][0];
    c["ports"] = json!([{"name": "http", "containerPort": 8080},
        {"name": "echo", "containerPort": 9090, "protocol": "UDP"}]);
    c["readinessProbe"] = json!({"httpGet": {"path": "/ready", "port": 8080},
        "periodSeconds": 1, "failureThreshold": 1, "successThreshold": 1});
    let mut args = vec!["--udp", ":9090"];
    args.extend_from_slice(extra_args);
    c["args"] = json!(args);
    d
}

fn node_port_service(name: &str, extra: Value) -> Value {
    let mut s = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "type": "NodePort",
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    });
    if let (Some(spec), Some(extra)) = (s["spec"].as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    s
}

/// The node port the controller gave the Service's port `i`.
fn node_port(svc: &Value, i: usize) -> anyhow::Result<u16> {
    let p = svc["spec"]["ports"][i]["nodePort"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no nodePort allocated: {svc}"))?;
    Ok(u16::try_from(p)?)
}

/// `GET /` on a fresh connection: who answered (the pod's hostname is its name).
async fn who(addr: SocketAddr) -> anyhow::Result<String> {
    let attempt = async {
        let mut c = TcpStream::connect(addr).await?;
        c.write_all(b"GET / HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n")
            .await?;
        let mut raw = Vec::new();
        c.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("not an HTTP answer: {text:?}"))?;
        anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "answered {head:?}");
        let v: Value = serde_json::from_str(body)?;
        Ok::<_, anyhow::Error>(v["hostname"].as_str().unwrap_or("").to_string())
    };
    tokio::time::timeout(REQUEST, attempt)
        .await
        .map_err(|_| anyhow::anyhow!("GET {addr} timed out"))?
}

/// Who answered `n` sequential requests, and how often.
async fn spread(addr: SocketAddr, n: usize) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut seen = BTreeMap::new();
    for i in 0..n {
        let pod = who(addr)
            .await
            .map_err(|e| anyhow::anyhow!("request {i} of {n} to {addr}: {e}"))?;
        *seen.entry(pod).or_insert(0) += 1;
    }
    Ok(seen)
}

async fn ready_pods(c: &DockerCluster, svc: &str) -> BTreeSet<String> {
    c.slice_endpoints(svc)
        .await
        .into_iter()
        .filter(|(_, r)| *r)
        .map(|(p, _)| p)
        .collect()
}

async fn wait_ready(c: &DockerCluster, svc: &str, n: usize) -> anyhow::Result<BTreeSet<String>> {
    eventually(
        &format!("{svc} has exactly {n} ready endpoints"),
        || async {
            let ready = ready_pods(c, svc).await;
            (ready.len() == n).then_some(ready)
        },
    )
    .await
}

/// Waits until `addr` answers from every one of `pods`: the API shows them
/// ready first, and the node's proxy follows the EndpointSlice through its
/// watch a moment later (as kube-proxy does).
async fn warm(addr: SocketAddr, pods: &BTreeSet<String>) -> anyhow::Result<()> {
    eventually(
        &format!("{addr} answers from every ready replica"),
        || async {
            let seen = spread(addr, 10 * pods.len()).await.ok()?;
            pods.iter().all(|p| seen.contains_key(p)).then_some(())
        },
    )
    .await
}

async fn scale(c: &DockerCluster, name: &str, replicas: i32) -> anyhow::Result<()> {
    c.client
        .scale(&DEPLOYMENTS, Some(&c.namespace), name, replicas)
        .await?;
    Ok(())
}

/// The pod IP of `pod`.
async fn pod_ip(c: &DockerCluster, pod: &str) -> anyhow::Result<String> {
    let pods = c.pods("app").await?;
    pods.iter()
        .find(|p| p["metadata"]["name"] == pod)
        .and_then(|p| p["status"]["podIP"].as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("pod {pod} has no IP"))
}

async fn post(addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(
            format!("POST {path} HTTP/1.1\r\nHost: pod\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        anyhow::ensure!(
            raw.starts_with(b"HTTP/1.1 200"),
            "POST {path} answered {raw:?}"
        );
        Ok(())
    };
    tokio::time::timeout(REQUEST, attempt)
        .await
        .map_err(|_| anyhow::anyhow!("POST {addr}{path} timed out"))?
}

#[tokio::test]
async fn a_node_port_answers_on_every_node_from_every_ready_replica() -> anyhow::Result<()> {
    let (c, ips) = two_nodes("svc-spread", 20).await?;
    c.apply(&web("web", 3, &[])).await?;
    let svc = c.apply(&node_port_service("web", json!({}))).await?;
    let port = node_port(&svc, 0)?;
    let three = wait_ready(&c, "web", 3).await?;
    let nodes: BTreeSet<String> = c
        .pods("app=web")
        .await?
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
        .collect();
    assert_eq!(nodes.len(), 2, "the replicas run on both nodes");

    // 300 sequential requests to each node's port: all answered, by every replica.
    for ip in &ips {
        let addr: SocketAddr = format!("{ip}:{port}").parse()?;
        eventually(&format!("{addr} answers"), || async {
            who(addr).await.ok()
        })
        .await?;
        let seen = spread(addr, 300).await?;
        eprintln!("node port {addr}: {seen:?}");
        let answered: BTreeSet<String> = seen.keys().cloned().collect();
        assert_eq!(answered, three, "every replica answers through {addr}");
    }

    // Scaled to 6: the new replicas answer once Ready.
    scale(&c, "web", 6).await?;
    let six = wait_ready(&c, "web", 6).await?;
    let became_ready = Instant::now();
    let addr: SocketAddr = format!("{}:{port}", ips[0]).parse()?;
    let mut answered = BTreeSet::new();
    let all_answered = within("all six replicas answer", async {
        while answered != six {
            answered.insert(who(addr).await?);
        }
        Ok::<_, anyhow::Error>(became_ready.elapsed())
    })
    .await??;
    eprintln!("scaled to 6: every new replica answered {all_answered:?} after all were Ready");

    // Scaled to 1: only it answers, once the nodes' proxies have the slice the
    // API shows (they follow it within moments, through their watches).
    scale(&c, "web", 1).await?;
    let one = wait_ready(&c, "web", 1).await?;
    for ip in &ips {
        let addr: SocketAddr = format!("{ip}:{port}").parse()?;
        let mut last = BTreeSet::new();
        let converged = eventually(
            &format!("only the last replica answers through {addr}"),
            || async {
                let seen = spread(addr, 20).await.ok()?;
                let answered: BTreeSet<String> = seen.keys().cloned().collect();
                (answered == one).then_some(())
            },
        )
        .await;
        if converged.is_err() {
            last = spread(addr, 20).await?.keys().cloned().collect();
        }
        assert!(
            converged.is_ok(),
            "through {addr}, {last:?} answer, not only {one:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn readiness_decides_traffic() -> anyhow::Result<()> {
    let (c, ips) = two_nodes("svc-ready", 22).await?;
    c.apply(&web("web", 3, &[])).await?;
    let svc = c.apply(&node_port_service("web", json!({}))).await?;
    let addr: SocketAddr = format!("{}:{}", ips[0], node_port(&svc, 0)?).parse()?;
    let three = wait_ready(&c, "web", 3).await?;
    let victim = three.iter().next().cloned().unwrap_or_default();
    let ip = pod_ip(&c, &victim).await?;
    post(format!("{ip}:8080").parse()?, "/unready").await?;
    let started = Instant::now();
    wait_ready(&c, "web", 2).await?;
    eprintln!(
        "{victim} left the ready endpoints {:?} after /unready",
        started.elapsed()
    );
    // The EndpointSlice changes first; the node's proxy follows it through
    // its watch a moment later (as kube-proxy does). From then on the replica
    // gets nothing.
    eventually(
        &format!("the proxy on {addr} stops sending to {victim}"),
        || async {
            let seen = spread(addr, 30).await.ok()?;
            (!seen.contains_key(&victim)).then_some(())
        },
    )
    .await?;
    eprintln!(
        "the proxy stopped sending to {victim} {:?} after /unready",
        started.elapsed()
    );
    let seen = spread(addr, 60).await?;
    assert!(
        !seen.contains_key(&victim),
        "a replica that is not Ready gets no request: {seen:?}"
    );
    assert_eq!(seen.len(), 2, "{seen:?}");

    post(format!("{ip}:8080").parse()?, "/ready").await?;
    wait_ready(&c, "web", 3).await?;
    eventually(
        &format!("a replica Ready again gets requests again through {addr}"),
        || async {
            let seen = spread(addr, 30).await.ok()?;
            seen.contains_key(&victim).then_some(())
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_killed_replica_costs_no_request() -> anyhow::Result<()> {
    let (c, ips) = two_nodes("svc-kill", 24).await?;
    c.apply(&web("web", 3, &[])).await?;
    let svc = c.apply(&node_port_service("web", json!({}))).await?;
    let addr: SocketAddr = format!("{}:{}", ips[0], node_port(&svc, 0)?).parse()?;
    let three = wait_ready(&c, "web", 3).await?;
    warm(addr, &three).await?;
    let victim = c
        .containers(true)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no running container"))?;

    // 100 new connections a second for 10 s; the replica is killed after 2 s.
    let (mut ok, mut failed) = (0usize, Vec::new());
    let start = tokio::time::Instant::now();
    let mut killed = false;
    for i in 0..1000u32 {
        tokio::time::sleep_until(start + Duration::from_millis(10) * i).await;
        if !killed && start.elapsed() >= Duration::from_secs(2) {
            docker(&["kill", &victim.id])?;
            killed = true;
        }
        match who(addr).await {
            Ok(_) => ok += 1,
            Err(e) => failed.push(format!("request {i}: {e}")),
        }
    }
    eprintln!(
        "killed {} under load: {ok} answered, {} failed {:?}",
        victim.pod,
        failed.len(),
        failed
    );
    assert!(killed);
    assert!(failed.is_empty(), "every request succeeds: {failed:?}");
    Ok(())
}

#[tokio::test]
async fn udp_and_client_ip_affinity() -> anyhow::Result<()> {
    let (c, ips) = two_nodes("svc-udp", 26).await?;
    c.apply(&web("web", 3, &[])).await?;
    let svc = c
        .apply(&node_port_service(
            "web",
            json!({"sessionAffinity": "ClientIP",
                "ports": [{"name": "http", "port": 80, "targetPort": "http"},
                    {"name": "echo", "port": 53, "targetPort": "echo", "protocol": "UDP"}]}),
        ))
        .await?;
    let three = wait_ready(&c, "web", 3).await?;
    for ip in &ips {
        // ClientIP affinity: one client, one replica.
        let addr: SocketAddr = format!("{ip}:{}", node_port(&svc, 0)?).parse()?;
        eventually(&format!("{addr} answers"), || async {
            who(addr).await.ok()
        })
        .await?;
        let seen = spread(addr, 30).await?;
        assert_eq!(seen.len(), 1, "one client stays on one replica: {seen:?}");
        // UDP round trip through the node port, answered by a replica.
        let udp: SocketAddr = format!("{ip}:{}", node_port(&svc, 1)?).parse()?;
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let answer = within("a UDP answer", async {
            let mut buf = [0u8; 1500];
            // Datagrams may be lost: send again until one comes back.
            loop {
                socket.send_to(b"ping", udp).await?;
                if let Ok(Ok((n, _))) =
                    tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf))
                        .await
                {
                    return Ok::<_, anyhow::Error>(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        })
        .await??;
        let (pod, data) = answer.split_once(' ').unwrap_or_default();
        assert_eq!(data, "ping");
        assert!(three.contains(pod), "{pod} is a replica of {three:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_deleted_service_stops_answering() -> anyhow::Result<()> {
    let (c, ips) = two_nodes("svc-delete", 28).await?;
    c.apply(&web("web", 1, &[])).await?;
    let svc = c.apply(&node_port_service("web", json!({}))).await?;
    let addr: SocketAddr = format!("{}:{}", ips[1], node_port(&svc, 0)?).parse()?;
    wait_ready(&c, "web", 1).await?;
    eventually("the node port answers", || async { who(addr).await.ok() }).await?;
    c.client
        .delete(&SERVICES, Some(&c.namespace), "web")
        .await?;
    eventually("the node port is closed", || async {
        TcpStream::connect(addr).await.is_err().then_some(())
    })
    .await?;
    Ok(())
}
