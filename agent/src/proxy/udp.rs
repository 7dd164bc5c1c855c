//! A UDP socket for one Service port. UDP has no connection, so a flow per client
//! address is kept (its endpoint chosen as a TCP connection's would be, without a
//! refusal to retry on) and forgotten after [`UDP_IDLE`] without a datagram.
//! Replies go back from the Service's own socket, so the client sees the address
//! it sent to. A flow is counted against its endpoint once it is set up (the
//! socket to a local pod, or the tunnel to another node's), until it ends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::table::{Protocol, Route};
use super::tunnel::{self, MAX_DATAGRAM};
use super::{Shared, Slot, TUNNEL_TIMEOUT, UDP_IDLE};

/// The most client flows one Service port keeps; datagrams of new clients beyond
/// it are dropped (and logged) until flows expire.
pub const MAX_FLOWS: usize = 4096;
/// Datagrams queued towards one endpoint before more are dropped.
const QUEUE: usize = 256;

type Flows = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>;

pub async fn serve(
    socket: UdpSocket,
    slot: Arc<Slot>,
    shared: Arc<Shared>,
    external: bool,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let socket = Arc::new(socket);
    let flows: Flows = Arc::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = tokio::select! {
            _ = stop.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "a UDP Service port could not receive");
                    continue;
                }
            },
        };
        let datagram = buf[..n].to_vec();
        let existing = flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&client)
            .cloned();
        let tx = match existing {
            Some(tx) if !tx.is_closed() => tx,
            _ => {
                let len = flows.lock().unwrap_or_else(|e| e.into_inner()).len();
                if len >= MAX_FLOWS {
                    tracing::warn!(%client, limit = MAX_FLOWS, "too many UDP flows; dropping a datagram");
                    continue;
                }
                let (tx, rx) = mpsc::channel(QUEUE);
                flows
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(client, tx.clone());
                tracker.spawn(flow(
                    client,
                    rx,
                    socket.clone(),
                    slot.clone(),
                    shared.clone(),
                    flows.clone(),
                    external,
                    stop.clone(),
                ));
                tx
            }
        };
        let _ = tx.try_send(datagram);
    }
}

/// One client's flow: picks an endpoint, relays until idle, then forgets itself.
#[allow(clippy::too_many_arguments)]
async fn flow(
    client: SocketAddr,
    rx: mpsc::Receiver<Vec<u8>>,
    socket: Arc<UdpSocket>,
    slot: Arc<Slot>,
    shared: Arc<Shared>,
    flows: Flows,
    external: bool,
    stop: CancellationToken,
) {
    let (frontend, candidates) = slot.pick(client.ip(), external, &shared);
    if let Some(endpoint) = candidates.first() {
        if let Some(timeout) = frontend.affinity {
            slot.remember(client.ip(), endpoint.addr, timeout);
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = relay(client, rx, &socket, endpoint.addr, &endpoint.route, &shared) => {}
        }
    } else {
        tracing::debug!(service = %frontend.key, %client, "no ready endpoint for a UDP flow");
    }
    flows
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&client);
}

async fn relay(
    client: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
    socket: &UdpSocket,
    target: SocketAddr,
    route: &Route,
    shared: &Shared,
) {
    match route {
        Route::Local => {
            let Ok(upstream) = tunnel::udp_to(target).await else {
                return;
            };
            let _counted = shared.opened(target.ip());
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                tokio::select! {
                    d = tokio::time::timeout(UDP_IDLE, rx.recv()) => {
                        let Ok(Some(d)) = d else { return };
                        let _ = upstream.send(&d).await;
                    }
                    n = tokio::time::timeout(UDP_IDLE, upstream.recv(&mut buf)) => {
                        let Ok(Ok(n)) = n else { return };
                        let _ = socket.send_to(&buf[..n], client).await;
                    }
                }
            }
        }
        Route::Via { addr, node } => {
            let Ok(stream) = tunnel::connect(
                shared.tls.as_deref(),
                *addr,
                node,
                Protocol::Udp,
                target,
                TUNNEL_TIMEOUT,
            )
            .await
            else {
                return;
            };
            let _counted = shared.opened(target.ip());
            let (mut rd, mut wr) = tokio::io::split(stream);
            let mut frame = vec![0u8; MAX_DATAGRAM];
            loop {
                tokio::select! {
                    d = tokio::time::timeout(UDP_IDLE, rx.recv()) => {
                        let Ok(Some(d)) = d else { return };
                        let Ok(len) = u16::try_from(d.len()) else { continue };
                        let mut out = Vec::with_capacity(d.len() + 2);
                        out.extend_from_slice(&len.to_be_bytes());
                        out.extend_from_slice(&d);
                        if wr.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                    len = tokio::time::timeout(UDP_IDLE, tokio::io::AsyncReadExt::read_u16(&mut rd)) => {
                        let Ok(Ok(len)) = len else { return };
                        let len = usize::from(len);
                        if tokio::io::AsyncReadExt::read_exact(&mut rd, &mut frame[..len]).await.is_err() {
                            return;
                        }
                        let _ = socket.send_to(&frame[..len], client).await;
                    }
                }
            }
        }
    }
}
