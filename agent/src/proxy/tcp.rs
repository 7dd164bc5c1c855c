//! A TCP listener for one Service port: each accepted connection is sent to the
//! first endpoint of [`Frontend::candidates`](super::table::Frontend::candidates)
//! that accepts it, and its bytes are copied both ways. The connection is counted
//! against that endpoint while it lasts (not the ones that refused it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tokio::io::AsyncWriteExt as _;

use super::table::{Activator, Endpoint, Frontend};
use super::{ACTIVATE_EVERY, ACTIVATION_HOLD, MAX_TRIES, Shared, Slot, connect, copy_tcp};

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

async fn proxy(
    mut conn: TcpStream,
    peer: SocketAddr,
    slot: &Slot,
    shared: &Shared,
    external: bool,
) {
    let _ = conn.set_nodelay(true);
    let (frontend, candidates) = slot.pick(peer.ip(), external, shared);
    if let Some((endpoint, upstream)) = first_accepting(&frontend, &candidates, shared).await {
        return forward(conn, upstream, peer, &frontend, &endpoint, slot, shared).await;
    }
    // No ready endpoint, or none accepted (the last replica of a Service being
    // scaled to zero may still be listed for a moment after it stopped).
    let Some(activator) = frontend.activator.clone() else {
        if candidates.is_empty() {
            tracing::debug!(service = %frontend.key, %peer, "no ready endpoint; closing the connection");
        } else {
            tracing::warn!(service = %frontend.key, %peer, tried = candidates.len().min(MAX_TRIES), "no endpoint accepted the connection");
        }
        return;
    };
    if let Some((frontend, endpoint, upstream)) =
        hold(peer, slot, shared, external, &activator).await
    {
        return forward(conn, upstream, peer, &frontend, &endpoint, slot, shared).await;
    }
    if activator.http {
        let body = format!(
            "no replica of Service {}/{} became ready within {}s\n",
            activator.namespace,
            activator.service,
            ACTIVATION_HOLD.as_secs()
        );
        let reply = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nretry-after: 5\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ =
            tokio::time::timeout(Duration::from_secs(2), conn.write_all(reply.as_bytes())).await;
    }
}

/// The first of `candidates` (at most [`MAX_TRIES`]) that accepts a connection.
async fn first_accepting(
    frontend: &Frontend,
    candidates: &[Endpoint],
    shared: &Shared,
) -> Option<(Endpoint, super::tunnel::Stream)> {
    for endpoint in candidates.iter().take(MAX_TRIES) {
        match connect(endpoint, shared).await {
            Ok(upstream) => return Some((endpoint.clone(), upstream)),
            Err(e) => {
                tracing::debug!(service = %frontend.key, endpoint = %endpoint.addr, error = %e, "endpoint refused; trying the next");
            }
        }
    }
    None
}

/// Copies `conn` to `upstream` and back, counted against `endpoint` while it
/// lasts.
async fn forward(
    conn: TcpStream,
    upstream: super::tunnel::Stream,
    peer: SocketAddr,
    frontend: &Frontend,
    endpoint: &Endpoint,
    slot: &Slot,
    shared: &Shared,
) {
    if let Some(timeout) = frontend.affinity {
        slot.remember(peer.ip(), endpoint.addr, timeout);
    }
    let _counted = shared.opened(endpoint.addr.ip());
    copy_tcp(conn, upstream).await;
}

/// How often a held connection tries again endpoints that are listed but did
/// not accept, when the table has not changed meanwhile.
const RETRY_LISTED: Duration = Duration::from_millis(250);

/// Holds a connection to a Service scaled to zero: asks the controller to
/// scale it up (again every [`ACTIVATE_EVERY`] while waiting) and waits, up to
/// [`ACTIVATION_HOLD`], until an endpoint this node's proxy routes to accepts
/// it. `None` when nothing scales the Service or nothing accepted in time.
async fn hold(
    peer: SocketAddr,
    slot: &Slot,
    shared: &Shared,
    external: bool,
    activator: &Activator,
) -> Option<(Arc<Frontend>, Endpoint, super::tunnel::Stream)> {
    let started = tokio::time::Instant::now();
    let deadline = started + ACTIVATION_HOLD;
    let mut applied = shared.applied();
    tracing::debug!(service = %activator.service, namespace = %activator.namespace, %peer, "holding a connection while the Service scales up from zero");
    loop {
        if !shared.activate(activator).await {
            return None;
        }
        let ask_again = tokio::time::Instant::now() + ACTIVATE_EVERY;
        loop {
            let (frontend, candidates) = slot.pick(peer.ip(), external, shared);
            if let Some((endpoint, upstream)) =
                first_accepting(&frontend, &candidates, shared).await
            {
                tracing::info!(service = %activator.service, namespace = %activator.namespace, waited_ms = started.elapsed().as_millis() as u64, "a held connection goes to the first ready replica");
                return Some((frontend, endpoint, upstream));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                tracing::warn!(service = %activator.service, namespace = %activator.namespace, "no replica became ready while a connection was held");
                return None;
            }
            // Listed endpoints that refused are tried again shortly even if
            // the table does not change; otherwise wait for it to.
            let wake = if candidates.is_empty() {
                deadline.min(ask_again)
            } else {
                deadline.min(ask_again).min(now + RETRY_LISTED)
            };
            tokio::select! {
                changed = applied.changed() => if changed.is_err() { return None },
                _ = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= ask_again {
                        break;
                    }
                }
            }
        }
    }
}
