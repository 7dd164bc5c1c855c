//! `tug port-forward TARGET [LOCAL:]REMOTE...`: local ports forwarded to a pod's
//! ports through the controller and the pod's node. TARGET is a pod (`web-abc`,
//! `pod/web-abc`), or a Service or Deployment (`svc/web`, `deploy/web`), which
//! picks one of its running pods as kubectl does; a Service's port is mapped to
//! its target port. Each local connection is one WebSocket session in the
//! channel form (`v4.channel.k8s.io`): channel 0 carries the data, channel 1 the
//! errors, each opened by the port in two bytes.

use std::net::SocketAddr;

use anyhow::{Context as _, anyhow, bail};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tugboat_api::Client;
use tugboat_api::resource::{DEPLOYMENTS, PODS, REPLICASETS, SERVICES};

use crate::args::PortForwardArgs;
use crate::context::Context;

const PROTOCOLS: [&str; 1] = ["v4.channel.k8s.io"];

/// The pod a target names: itself, or a running pod its selector picks.
pub async fn pod_for(client: &Client, ns: &str, target: &str) -> anyhow::Result<String> {
    let (kind, name) = target.split_once('/').unwrap_or(("pod", target));
    let selector = match kind {
        "pod" | "pods" | "po" => return Ok(name.to_string()),
        "svc" | "service" | "services" => {
            let svc = client.get(&SERVICES, Some(ns), name).await?;
            svc.pointer("/spec/selector").cloned()
        }
        "deploy" | "deployment" | "deployments" => {
            let d = client.get(&DEPLOYMENTS, Some(ns), name).await?;
            d.pointer("/spec/selector/matchLabels").cloned()
        }
        "rs" | "replicaset" | "replicasets" => {
            let rs = client.get(&REPLICASETS, Some(ns), name).await?;
            rs.pointer("/spec/selector/matchLabels").cloned()
        }
        other => bail!("cannot attach to a {other}: name a pod, service, deployment or replicaset"),
    };
    let labels: Vec<String> = selector
        .as_ref()
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    if labels.is_empty() {
        bail!("{target} has no selector to pick a pod with");
    }
    let params = tugboat_api::ListParams {
        label_selector: Some(labels.join(",")),
        ..Default::default()
    };
    let pods = client.list(&PODS, Some(ns), &params).await?;
    let mut running: Vec<&Value> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p.pointer("/status/phase").and_then(Value::as_str) == Some("Running"))
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .collect();
    running.sort_by_key(|p| {
        p.pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    running
        .first()
        .and_then(|p| p.pointer("/metadata/name").and_then(Value::as_str))
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no running pod selected by {target}"))
}

/// `8080`, `9000:8080` or `:8080` (a free local port).
fn parse_mapping(s: &str) -> anyhow::Result<(u16, String)> {
    let (local, remote) = match s.split_once(':') {
        Some((l, r)) => (l, r),
        None => (s, s),
    };
    let local = if local.is_empty() {
        0
    } else {
        local
            .parse::<u16>()
            .map_err(|_| anyhow!("{s:?}: the local port must be a number from 0 to 65535"))?
    };
    if remote.is_empty() {
        bail!("{s:?}: name the remote port, as in 8080 or 9000:8080");
    }
    Ok((local, remote.to_string()))
}

/// The pod's port for `remote`: a number, or a Service port (by number or name)
/// mapped to its target port, or a container port's name.
async fn remote_port(
    client: &Client,
    ns: &str,
    target: &str,
    pod: &str,
    remote: &str,
) -> anyhow::Result<u16> {
    let pod_obj = client.get(&PODS, Some(ns), pod).await?;
    let named = |name: &str| -> Option<u16> {
        pod_obj
            .pointer("/spec/containers")?
            .as_array()?
            .iter()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
    };
    let (kind, svc) = target.split_once('/').unwrap_or(("pod", target));
    if matches!(kind, "svc" | "service" | "services") {
        let service = client.get(&SERVICES, Some(ns), svc).await?;
        let port = service
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| {
                p["name"] == remote
                    || p["port"].as_u64().map(|n| n.to_string()).as_deref() == Some(remote)
            })
            .ok_or_else(|| anyhow!("service {svc} does not have a service port {remote}"))?;
        return match &port["targetPort"] {
            Value::Number(n) => n
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| anyhow!("service {svc}: bad targetPort {n}")),
            Value::String(name) => {
                named(name).ok_or_else(|| anyhow!("pod {pod} has no container port named {name}"))
            }
            _ => port["port"]
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| anyhow!("service {svc}: bad port")),
        };
    }
    match remote.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => named(remote).ok_or_else(|| anyhow!("pod {pod} has no container port named {remote}")),
    }
}

pub async fn run(args: PortForwardArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let ns = ctx.namespace().to_string();
    let pod = pod_for(&client, &ns, &args.target).await?;
    let mut listeners = Vec::new();
    for mapping in &args.ports {
        let (local, remote) = parse_mapping(mapping)?;
        let port = remote_port(&client, &ns, &args.target, &pod, &remote).await?;
        let addr: SocketAddr = format!("{}:{local}", args.address)
            .parse()
            .with_context(|| format!("--address {:?} is not an IP address", args.address))?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr()?;
        writeln!(ctx.out, "Forwarding from {bound} -> {port}")?;
        ctx.out.flush()?;
        listeners.push((listener, port));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (listener, port) in listeners {
        let (client, ns, pod, stop) = (
            client.clone(),
            ns.clone(),
            pod.clone(),
            ctx.shutdown.clone(),
        );
        tasks.spawn(async move {
            loop {
                let conn = tokio::select! {
                    _ = stop.cancelled() => return,
                    c = listener.accept() => c,
                };
                let Ok((conn, _)) = conn else { continue };
                let (client, ns, pod) = (client.clone(), ns.clone(), pod.clone());
                tokio::spawn(async move {
                    if let Err(e) = forward(&client, &ns, &pod, port, conn).await {
                        eprintln!("error forwarding port {port} to pod {pod}: {e:#}");
                    }
                });
            }
        });
    }
    ctx.shutdown.cancelled().await;
    tasks.shutdown().await;
    Ok(())
}

/// One local connection, forwarded over its own session.
async fn forward(
    client: &Client,
    ns: &str,
    pod: &str,
    port: u16,
    conn: TcpStream,
) -> anyhow::Result<()> {
    let path = format!("{}/portforward", PODS.object_path(Some(ns), pod));
    let (upgraded, _) = client
        .websocket(&path, &[("ports", port.to_string())], &PROTOCOLS)
        .await?;
    let ws = WebSocketStream::from_raw_socket(upgraded, Role::Client, None).await;
    let (mut sink, mut stream) = ws.split();
    let (mut r, mut w) = conn.into_split();
    // Each channel first says which port it is for.
    let mut opened = [false; 2];
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        tokio::select! {
            n = r.read(&mut buf) => match n {
                // The channel form cannot half-close: the local side is done.
                Ok(0) | Err(_) => {
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
                Ok(n) => {
                    let mut msg = Vec::with_capacity(n + 1);
                    msg.push(0u8);
                    msg.extend_from_slice(&buf[..n]);
                    sink.send(Message::Binary(msg.into())).await?;
                }
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(data))) => {
                    let Some((&ch, payload)) = data.split_first() else { continue };
                    let ch = usize::from(ch);
                    if ch > 1 { continue; }
                    if !opened[ch] {
                        opened[ch] = true;
                        continue;
                    }
                    if ch == 0 {
                        w.write_all(payload).await?;
                    } else if !payload.is_empty() {
                        bail!("{}", String::from_utf8_lossy(payload));
                    }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
            },
        }
    }
    let _ = w.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_read_like_kubectls() {
        assert_eq!(parse_mapping("8080").unwrap(), (8080, "8080".into()));
        assert_eq!(parse_mapping("9000:8080").unwrap(), (9000, "8080".into()));
        assert_eq!(parse_mapping(":http").unwrap(), (0, "http".into()));
        assert!(parse_mapping("x:80").is_err());
        assert!(parse_mapping("80:").is_err());
    }
}
