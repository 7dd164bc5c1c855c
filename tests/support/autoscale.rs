//! What the autoscaling tests and benchmark share: a two-node loopback cluster
//! with the metrics and autoscaler periods chosen, the sample with a CPU request
//! behind a NodePort Service, HorizontalPodAutoscalers on CPU and on the
//! Service's connection rate, and the requests that drive them.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tugboat_api::resource::{DEPLOYMENTS, PODS};
use tugboat_api::{Client, ListParams};

use crate::docker::{DockerCluster, sample_deployment};

/// Two loopback nodes (127.0.0.`first` and the next) whose controller reads the
/// agents' metrics and evaluates autoscalers every `period`, with scale to zero
/// allowed.
pub async fn cluster(
    test: &str,
    first: u8,
    period: Duration,
) -> anyhow::Result<(DockerCluster, Vec<String>)> {
    DockerCluster::start_loopback_nodes_tuned(test, first, &[], |c| {
        c.metrics_interval = period;
        c.hpa.sync_period = period;
        c.hpa.scale_to_zero = true;
    })
    .await
}

/// The sample as Deployment `web` with a CPU request, ready once `/ready`
/// answers (probed every second).
pub fn web(replicas: i64, cpu_request: &str) -> Value {
    let mut d = sample_deployment("web", replicas);
    let c = &mut d["spec"]["template"]["spec"]["containers"][0];
    c["ports"] = json!([{"name": "http", "containerPort": 8080}]);
    c["resources"] = json!({"requests": {"cpu": cpu_request}});
    c["readinessProbe"] = json!({"httpGet": {"path": "/ready", "port": 8080},
        "periodSeconds": 1, "failureThreshold": 1, "successThreshold": 1});
    d
}

/// NodePort Service `web` in front of [`web`].
pub fn service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    })
}

/// HPA `web` on Deployment `web`: CPU utilization at `percent` of the request.
pub fn cpu_hpa(min: i64, max: i64, percent: i64, scale_down_window: u64) -> Value {
    json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": min, "maxReplicas": max,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": percent}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": scale_down_window}},
        },
    })
}

/// HPA `web` on Deployment `web`: `per_pod` new connections a second per
/// replica to Service `web` (an Object metric, so `min` may be 0).
pub fn connections_hpa(min: i64, max: i64, per_pod: &str, scale_down_window: u64) -> Value {
    json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": min, "maxReplicas": max,
            "metrics": [{"type": "Object", "object": {
                "describedObject": {"apiVersion": "v1", "kind": "Service", "name": "web"},
                "metric": {"name": "connections_per_second"},
                "target": {"type": "AverageValue", "averageValue": per_pod}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": scale_down_window}},
        },
    })
}

/// The node port of `svc` on each node.
pub fn node_ports(svc: &Value, ips: &[String]) -> anyhow::Result<Vec<SocketAddr>> {
    let port = u16::try_from(svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap_or(0))?;
    Ok(ips
        .iter()
        .map(|ip| format!("{ip}:{port}").parse())
        .collect::<Result<_, _>>()?)
}

/// `spec.replicas` of Deployment `web`.
pub async fn replicas(client: &Client, ns: &str) -> Option<i64> {
    let d = client.get(&DEPLOYMENTS, Some(ns), "web").await.ok()?;
    d["spec"]["replicas"].as_i64()
}

/// The names of Deployment `web`'s pods that are Ready and not terminating.
pub async fn ready_pods(client: &Client, ns: &str) -> Option<Vec<String>> {
    let params = ListParams {
        label_selector: Some("app=web".into()),
        ..Default::default()
    };
    let list = client.list(&PODS, Some(ns), &params).await.ok()?;
    Some(
        list["items"]
            .as_array()?
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| {
                p["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
            .collect(),
    )
}

/// `POST /burn` through a node port: one pod burns `millicores` of CPU for
/// `seconds`.
pub async fn burn(addr: SocketAddr, seconds: u64, millicores: u64) -> anyhow::Result<String> {
    let mut c = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await??;
    let req = format!(
        "POST /burn?seconds={seconds}&millicores={millicores} HTTP/1.1\r\nHost: web\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    c.write_all(req.as_bytes()).await?;
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut raw)).await??;
    anyhow::ensure!(raw.starts_with("HTTP/1.1 200"), "burn answered {raw:?}");
    Ok(raw)
}

/// One `GET /` on a new connection that may be held (a Service scaled to
/// zero): the whole answer, or an error after `limit`.
pub async fn held_get(addr: SocketAddr, limit: Duration) -> anyhow::Result<String> {
    tokio::time::timeout(limit, async {
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        conn.write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
            .await?;
        let mut raw = String::new();
        conn.read_to_string(&mut raw).await?;
        anyhow::Ok(raw)
    })
    .await
    .map_err(|_| anyhow::anyhow!("no answer within {limit:?}"))?
}
