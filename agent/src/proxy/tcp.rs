//! A TCP listener for one Service port: each accepted connection is sent to the
//! first endpoint of [`Frontend::candidates`](super::table::Frontend::candidates)
//! that accepts it, and its bytes are copied both ways.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{MAX_TRIES, Shared, Slot, connect, copy_tcp};

/// The most connections one Service port proxies at once on this node.
pub const MAX_CONNECTIONS: usize = 16_384;

/// Accepts on `listener` until `stop`. `external`: the node port (the external
/// traffic policy applies), else the ClusterIP (the internal one).
pub async fn serve(
    listener: TcpListener,
    slot: Arc<Slot>,
    shared: Arc<Shared>,
    external: bool,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (conn, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "a Service port cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = MAX_CONNECTIONS, "too many connections on one Service port; refusing one");
            continue;
        };
        let slot = slot.clone();
        let shared = shared.clone();
        tracker.spawn(async move {
            let _permit = permit;
            proxy(conn, peer, &slot, &shared, external).await;
        });
    }
}

async fn proxy(conn: TcpStream, peer: SocketAddr, slot: &Slot, shared: &Shared, external: bool) {
    let _ = conn.set_nodelay(true);
    let (frontend, candidates) = slot.pick(peer.ip(), external, shared);
    if candidates.is_empty() {
        tracing::debug!(service = %frontend.key, %peer, "no ready endpoint; closing the connection");
        return;
    }
    for endpoint in candidates.iter().take(MAX_TRIES) {
        match connect(endpoint, shared).await {
            Ok(upstream) => {
                if let Some(timeout) = frontend.affinity {
                    slot.remember(peer.ip(), endpoint.addr, timeout);
                }
                copy_tcp(conn, upstream).await;
                return;
            }
            Err(e) => {
                tracing::debug!(service = %frontend.key, endpoint = %endpoint.addr, error = %e, "endpoint refused; trying the next");
            }
        }
    }
    tracing::warn!(service = %frontend.key, %peer, tried = candidates.len().min(MAX_TRIES), "no endpoint accepted the connection");
}
