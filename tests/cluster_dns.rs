//! ClusterIPs and cluster DNS, tried from inside a pod on the real Docker engine
//! with two nodes: the three name forms resolve to the ClusterIP and answer from
//! replicas on both nodes, a headless Service resolves to its ready pods, SRV
//! answers, an outside name is forwarded, and the Service variables are set.
//!
//! The client pod does the lookups and requests itself (`tug-sample`'s `/resolve`
//! and `/fetch`, with the pod's resolver and routes); the test talks to its pod
//! IP. Outside names go to a DNS server this test runs on loopback, and the SRV
//! query is sent from inside the client pod's network namespace.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tugboat_tests::docker::{DockerCluster, docker, sample_deployment};
use tugboat_tests::eventually;

/// What the test's own upstream resolver answers for every name.
const OUTSIDE: &str = "192.0.2.7";

/// A DNS server on loopback answering every A query with [`OUTSIDE`].
async fn fake_upstream(stop: CancellationToken) -> anyhow::Result<SocketAddr> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let (n, from) = tokio::select! {
                _ = stop.cancelled() => return,
                r = socket.recv_from(&mut buf) => match r { Ok(r) => r, Err(_) => continue },
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut reply = q.clone();
            reply.set_message_type(hickory_proto::op::MessageType::Response);
            if let Some(query) = q.queries().first()
                && query.query_type() == RecordType::A
            {
                reply.add_answer(Record::from_rdata(
                    query.name().clone(),
                    5,
                    RData::A(A(OUTSIDE.parse().unwrap())),
                ));
            }
            if let Ok(bytes) = reply.to_vec() {
                let _ = socket.send_to(&bytes, from).await;
            }
        }
    });
    Ok(addr)
}

async fn get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let attempt = async {
        let mut c = TcpStream::connect(addr).await?;
        c.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut raw = Vec::new();
        c.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("not HTTP: {text:?}"))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok::<_, anyhow::Error>((status, body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .map_err(|_| anyhow::anyhow!("GET {addr}{path} timed out"))?
}

/// `/resolve?name=` on the client pod: the addresses, or the error.
async fn resolve(client: &str, name: &str) -> anyhow::Result<BTreeSet<String>> {
    let (status, body) = get(client, &format!("/resolve?name={name}")).await?;
    anyhow::ensure!(
        status == 200,
        "resolving {name} in the pod: {status} {body}"
    );
    Ok(body.split_whitespace().map(str::to_string).collect())
}

fn service(name: &str, app: &str, cluster_ip: Option<&str>) -> Value {
    let mut s = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"selector": {"app": app},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    });
    if let Some(ip) = cluster_ip {
        s["spec"]["clusterIP"] = json!(ip);
    }
    s
}

/// A DNS query sent from inside the network namespace of process `pid`.
fn query_in(pid: i64, server: SocketAddr, name: &str, t: RecordType) -> anyhow::Result<Message> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    let name = name.to_string();
    std::thread::spawn(move || -> anyhow::Result<Message> {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut q = Message::new();
        q.set_id(42)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(&name)?, t));
        s.send_to(&q.to_vec()?, server)?;
        let mut buf = [0u8; 4096];
        let n = s.recv(&mut buf)?;
        Ok(Message::from_vec(&buf[..n])?)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the query thread panicked"))?
}

/// The same over TCP (each message with its 2-byte length).
fn query_tcp_in(
    pid: i64,
    server: SocketAddr,
    name: &str,
    t: RecordType,
) -> anyhow::Result<Message> {
    use std::io::{Read, Write};
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    let name = name.to_string();
    std::thread::spawn(move || -> anyhow::Result<Message> {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let mut s = std::net::TcpStream::connect_timeout(&server, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut q = Message::new();
        q.set_id(43)
            .add_query(Query::query(Name::from_ascii(&name)?, t));
        let q = q.to_vec()?;
        let mut out = u16::try_from(q.len())?.to_be_bytes().to_vec();
        out.extend_from_slice(&q);
        s.write_all(&out)?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len)?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf)?;
        Ok(Message::from_vec(&buf)?)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the query thread panicked"))?
}

#[tokio::test]
async fn names_resolve_and_cluster_ips_answer_from_inside_a_pod() -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let _stop_on_drop = stop.clone().drop_guard();
    let upstream = fake_upstream(stop.clone()).await?.to_string();
    let (c, _ips) =
        DockerCluster::start_loopback_nodes("svc-dns", 30, &["--dns-upstream", &upstream]).await?;
    let ns = c.namespace.clone();
    c.apply(&sample_deployment("web", 3)).await?;
    let svc = c.apply(&service("web", "web", None)).await?;
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
    anyhow::ensure!(
        cluster_ip.starts_with("10.96."),
        "a ClusterIP from the range: {svc}"
    );
    c.apply(&service("web-h", "web", Some("None"))).await?;
    eventually("web has 3 ready endpoints", || async {
        (c.ready_endpoints("web").await == 3 && c.ready_endpoints("web-h").await == 3).then_some(())
    })
    .await?;
    // The client starts after the Services exist (it gets their variables).
    c.apply(&sample_deployment("client", 1)).await?;
    let client_pod = eventually("the client pod runs with an IP", || async {
        let p = c.pods("app=client").await.ok()?.into_iter().next()?;
        let running = p["status"]["containerStatuses"][0]["state"]["running"].is_object();
        (running && p["status"]["podIP"].is_string()).then_some(p)
    })
    .await?;
    let client = format!(
        "{}:8080",
        client_pod["status"]["podIP"].as_str().unwrap_or("")
    );
    eventually("the client answers", || async {
        get(&client, "/healthz").await.ok()
    })
    .await?;

    let (_, env) = get(&client, "/env").await?;
    assert!(
        env.lines()
            .any(|l| l == format!("WEB_SERVICE_HOST={cluster_ip}")),
        "the Service variables are set: {env}"
    );
    assert!(env.lines().any(|l| l == "WEB_SERVICE_PORT=80"), "{env}");

    // The three name forms resolve to the ClusterIP…
    let want: BTreeSet<String> = [cluster_ip.clone()].into();
    for name in [
        "web".to_string(),
        format!("web.{ns}"),
        format!("web.{ns}.svc.cluster.local"),
    ] {
        assert_eq!(resolve(&client, &name).await?, want, "{name}");
    }
    // …and answer through it, from replicas on both nodes.
    let pods = c.pods("app=web").await?;
    let nodes: BTreeSet<&str> = pods
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    assert_eq!(nodes.len(), 2, "the replicas run on both nodes");
    let mut answered = BTreeSet::new();
    for _ in 0..30 {
        let (status, body) = get(&client, "/fetch?addr=web:80").await?;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body)?;
        answered.insert(v["hostname"].as_str().unwrap_or("").to_string());
    }
    let all: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(answered, all, "every replica answers through the ClusterIP");

    // A headless Service resolves to the ready pod IPs.
    let pod_ips: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
        .collect();
    assert_eq!(resolve(&client, "web-h").await?, pod_ips);

    // An outside name goes to the node's resolver (here the test's own).
    let outside: BTreeSet<String> = [OUTSIDE.to_string()].into();
    assert_eq!(resolve(&client, "outside.example").await?, outside);

    // SRV, asked from inside the client pod's network namespace.
    let id = c
        .containers(true)?
        .into_iter()
        .find(|x| x.pod == client_pod["metadata"]["name"].as_str().unwrap_or(""))
        .ok_or_else(|| anyhow::anyhow!("no client container"))?
        .id;
    let pid: i64 = docker(&["inspect", "-f", "{{.State.Pid}}", &id])?.parse()?;
    let dns: SocketAddr = "10.96.0.10:53".parse()?;
    let srv_name = format!("_http._tcp.web.{ns}.svc.cluster.local.");
    let m = tokio::task::spawn_blocking(move || query_in(pid, dns, &srv_name, RecordType::SRV))
        .await??;
    let ports: Vec<u16> = m
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::SRV(s) => Some(s.port()),
            _ => None,
        })
        .collect();
    assert_eq!(ports, [80], "SRV answer: {m:?}");
    // DNS over TCP (what a client uses after a truncated UDP answer).
    let a_name = format!("web.{ns}.svc.cluster.local.");
    let m = tokio::task::spawn_blocking(move || query_tcp_in(pid, dns, &a_name, RecordType::A))
        .await??;
    let a: Vec<String> = m
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(a, std::slice::from_ref(&cluster_ip), "A over TCP: {m:?}");

    // Deleted, the Service's ClusterIP stops answering and its name is gone.
    c.client
        .delete(&tugboat_api::resource::SERVICES, Some(&ns), "web")
        .await?;
    let direct = format!("/fetch?addr={cluster_ip}:80");
    eventually("the ClusterIP stops answering", || async {
        let (status, _) = get(&client, &direct).await.ok()?;
        (status != 200).then_some(())
    })
    .await?;
    // (The name then goes on to the upstream, which here answers every name.)
    let (_, body) = get(
        &client,
        &format!("/resolve?name=web.{ns}.svc.cluster.local"),
    )
    .await?;
    assert!(!body.contains(&cluster_ip), "the name is gone: {body}");
    Ok(())
}
