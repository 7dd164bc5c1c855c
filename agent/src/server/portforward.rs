//! `kubectl port-forward`, as the kubelet serves it: connections to a pod's port,
//! opened from inside the pod's network namespace (so a port bound to the pod's
//! 127.0.0.1 is reachable, as in Kubernetes), carried in one of the wire forms
//! clients speak:
//! - SPDY/3.1 streams, tunnelled in WebSocket binary messages (subprotocol
//!   `SPDY/3.1+portforward.k8s.io`, kubectl 1.31+) or on a raw `Upgrade: SPDY/3.1`
//!   connection (older kubectl, and kubectl's fallback), see
//!   [`crate::stream::portforward_spdy`];
//! - WebSocket channels (`v4.channel.k8s.io`, `portforward.k8s.io`: the Python
//!   client, kube-rs), the ports named in `?ports=`: port *i* has data channel 2*i*
//!   and error channel 2*i*+1, each opened by a message of the channel byte and the
//!   port, little-endian.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::AgentCtx;
use crate::runtime::{LABEL_NODE, LABEL_POD_NAME, LABEL_POD_NAMESPACE};

pub const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
const CHANNEL_PROTOCOLS: [&str; 2] = ["v4.channel.k8s.io", "portforward.k8s.io"];
/// How long opening a connection to the pod may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Ports one WebSocket session may forward.
const MAX_PORTS: usize = 32;

/// Opens a connection to `port` of pod `ns/pod` on this node, from inside the
/// network namespace of one of its running containers.
async fn dial(
    ctx: Arc<AgentCtx>,
    ns: String,
    pod: String,
    port: u16,
) -> std::io::Result<TcpStream> {
    let labels = vec![
        (LABEL_NODE.to_string(), ctx.node.clone()),
        (LABEL_POD_NAMESPACE.to_string(), ns.clone()),
        (LABEL_POD_NAME.to_string(), pod.clone()),
    ];
    let found = ctx
        .runtime
        .list(&labels)
        .await
        .map_err(std::io::Error::other)?;
    let mut last = std::io::Error::other(format!(
        "pod {ns}/{pod} has no running container on node {}",
        ctx.node
    ));
    for c in found.iter().filter(|c| c.state.running) {
        let Some(pid) = c.pid.filter(|p| *p > 0) else {
            continue;
        };
        let opened = tokio::task::spawn_blocking(move || {
            crate::proxy::netns::run_in(pid, move || {
                std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                    DIAL_TIMEOUT,
                )
            })
        })
        .await
        .map_err(std::io::Error::other)?;
        match opened {
            Ok(Ok(stream)) => {
                stream.set_nonblocking(true)?;
                return TcpStream::from_std(stream);
            }
            Ok(Err(e)) => last = e,
            Err(e) => last = std::io::Error::other(e.to_string()),
        }
    }
    Err(last)
}

/// Serves one port-forward request for pod `ns/pod`, in whichever form it came.
pub async fn serve(
    ctx: Arc<AgentCtx>,
    ns: String,
    pod: String,
    request: Request,
    shutdown: CancellationToken,
) -> Response {
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let ports: Vec<String> = super::exec::query_pairs(request.uri().query())
        .into_iter()
        .filter(|(k, _)| k == "ports")
        .flat_map(|(_, v)| {
            v.split(',')
                .map(str::trim)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|p| !p.is_empty())
        .collect();
    let dialer = {
        let (ctx, ns, pod) = (ctx.clone(), ns.clone(), pod.clone());
        move |port: u16| dial(ctx.clone(), ns.clone(), pod.clone(), port)
    };
    if upgrade.starts_with("spdy/3.1") {
        // The raw SPDY form: a 101, then SPDY frames on the connection itself.
        let mut request = request;
        let on_upgrade = hyper::upgrade::on(&mut request);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let io = hyper_util::rt::TokioIo::new(upgraded);
                    if let Err(e) = crate::stream::portforward_spdy::serve(io, dialer, stop).await {
                        tracing::debug!(error = %e, "port-forward session ended");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "port-forward upgrade failed"),
            }
        });
        let mut resp = Response::new(axum::body::Body::empty());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        h.insert(
            "X-Stream-Protocol-Version",
            HeaderValue::from_static("portforward.k8s.io"),
        );
        return resp;
    }
    let (mut parts, _) = request.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(e) => return e.into_response(),
    };
    let mut offered = vec![SPDY_TUNNEL];
    offered.extend(CHANNEL_PROTOCOLS);
    let ws = ws.protocols(offered);
    match ws.selected_protocol().and_then(|p| p.to_str().ok()) {
        Some(SPDY_TUNNEL) => ws.on_upgrade(move |socket| async move {
            let io = tunnel(socket, shutdown.clone());
            if let Err(e) = crate::stream::portforward_spdy::serve(io, dialer, shutdown).await {
                tracing::debug!(error = %e, "port-forward session ended");
            }
        }),
        Some(_) => {
            let mut parsed = Vec::new();
            for p in &ports {
                match p.parse::<u16>() {
                    Ok(n) if n > 0 => parsed.push(n),
                    _ => {
                        return (
                            StatusCode::BAD_REQUEST,
                            format!("invalid port {p:?}: a port is a number from 1 to 65535\n"),
                        )
                            .into_response();
                    }
                }
            }
            if parsed.is_empty() || parsed.len() > MAX_PORTS {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("name from 1 to {MAX_PORTS} ports in ?ports=\n"),
                )
                    .into_response();
            }
            ws.on_upgrade(move |socket| channels(socket, parsed, dialer, shutdown))
        }
        None => (
            StatusCode::BAD_REQUEST,
            format!(
                "port-forward speaks the WebSocket subprotocols {SPDY_TUNNEL}, {}\n",
                CHANNEL_PROTOCOLS.join(", ")
            ),
        )
            .into_response(),
    }
}

/// The WebSocket as a byte stream: what the SPDY session reads is the binary
/// messages' bytes in order, what it writes goes out in binary messages.
fn tunnel(socket: WebSocket, shutdown: CancellationToken) -> tokio::io::DuplexStream {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut read_half, mut write_half) = tokio::io::split(theirs);
    let (mut sink, mut stream) = socket.split();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                msg = stream.next() => match msg {
                    Some(Ok(Message::Binary(b))) => {
                        if write_half.write_all(&b).await.is_err() { break; }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
            }
        }
        let _ = write_half.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                n = read_half.read(&mut buf) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sink.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                            break;
                        }
                    }
                },
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    });
    ours
}

/// The WebSocket channel form.
async fn channels<D, F>(socket: WebSocket, ports: Vec<u16>, dial: D, shutdown: CancellationToken)
where
    D: Fn(u16) -> F,
    F: std::future::Future<Output = std::io::Result<TcpStream>>,
{
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<(usize, Option<Bytes>)>(64);
    let mut writers = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let (data, error) = ((2 * i) as u8, (2 * i + 1) as u8);
        let [lo, hi] = port.to_le_bytes();
        for ch in [data, error] {
            if sink
                .send(Message::Binary(Bytes::from(vec![ch, lo, hi])))
                .await
                .is_err()
            {
                return;
            }
        }
        match dial(*port).await {
            Ok(conn) => {
                let (mut r, w) = conn.into_split();
                writers.push(Some(w));
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    loop {
                        match r.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if tx
                                    .send((i, Some(Bytes::copy_from_slice(&buf[..n]))))
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                            }
                        }
                    }
                    let _ = tx.send((i, None)).await;
                });
            }
            Err(e) => {
                writers.push(None);
                let text = format!("error forwarding port {port}: {e}");
                let mut msg = vec![error];
                msg.extend_from_slice(text.as_bytes());
                let _ = sink.send(Message::Binary(Bytes::from(msg))).await;
            }
        }
    }
    drop(tx);
    let mut open = writers.iter().filter(|w| w.is_some()).count();
    while open > 0 {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            item = rx.recv() => match item {
                Some((i, Some(bytes))) => {
                    let mut msg = Vec::with_capacity(bytes.len() + 1);
                    msg.push((2 * i) as u8);
                    msg.extend_from_slice(&bytes);
                    if sink.send(Message::Binary(Bytes::from(msg))).await.is_err() { break; }
                }
                Some((i, None)) => {
                    writers[i] = None;
                    open -= 1;
                }
                None => break,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    let Some((&ch, payload)) = b.split_first() else { continue };
                    let i = usize::from(ch / 2);
                    if ch % 2 == 0 && !payload.is_empty()
                        && let Some(Some(w)) = writers.get_mut(i)
                        && w.write_all(payload).await.is_err()
                    {
                        writers[i] = None;
                        open -= 1;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = sink.send(Message::Close(None)).await;
}
