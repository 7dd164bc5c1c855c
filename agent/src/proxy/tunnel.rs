//! The agent-to-agent tunnel: how one node's proxy reaches an endpoint on another
//! node without an overlay network or routable pod IPs. The proxy connects to the
//! other agent's tunnel port and names the endpoint; that agent connects to its
//! own pod and answers whether it could, so the caller can try the next endpoint
//! when it could not (retry on refused works across nodes too).
//!
//! The protocol is Tugboat's own and deliberately tiny (no crate speaks "connect me
//! to this local pod, or tell me why not" across a plain TCP stream):
//!
//! ```text
//! caller → agent:  TUG/1 TCP 172.17.0.5:8080\n      (or UDP)
//! agent → caller:  OK\n  |  ERR <reason>\n
//! then, TCP: the connection's bytes both ways;
//!       UDP: datagrams, each as a 2-byte big-endian length and its bytes.
//!
//! caller → agent:  TUG/1 SYNC 1234\n
//! agent → caller:  OK\n once its proxy routes by EndpointSlice revision 1234
//!                  or later (see `drain`), ERR <reason>\n after a few seconds.
//! ```
//!
//! What the tunnel carries is not counted against the endpoint here: the node
//! whose proxy accepted the client has counted it already.
//!
//! An agent connects only to endpoints of Services on its own node (as the
//! EndpointSlices say), never to anything else: the tunnel is not an open proxy.
//! With node credentials the tunnel is TLS both ways: the caller presents its
//! node certificate (anything else is refused in the handshake, and only node
//! certificates are served), and accepts only the certificate of the node it
//! meant to reach.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::table::Protocol;
use super::{CONNECT_TIMEOUT, Shared, UDP_IDLE, copy_tcp};
use crate::tls::NodeTls;

/// A connection's bytes: plain TCP, or TLS over it between agents.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type Stream = Box<dyn Io>;

/// The longest a request line may be.
const MAX_LINE: usize = 128;
/// How long a caller has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The most tunnels open at once on this agent.
pub const MAX_TUNNELS: usize = 4096;
/// How long a SYNC waits for the proxy to reach the revision asked for.
const SYNC_WAIT: Duration = Duration::from_secs(5);
/// The largest UDP datagram relayed.
pub const MAX_DATAGRAM: usize = 65_507;

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("cannot reach the tunnel at {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("the tunnel at {0} did not answer in time")]
    Timeout(SocketAddr),
    #[error("the agent at {0} refused: {1}")]
    Refused(SocketAddr, String),
    #[error("the tunnel at {0} broke: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("TLS with the agent at {0} failed: {1}")]
    Tls(SocketAddr, String),
}

/// Opens a tunnel through the agent of node `peer` at `via` to `target` (on
/// that agent's node), over TLS with `tls`. Returns once that agent has
/// connected to the target (TCP), or has set up the flow (UDP).
pub async fn connect(
    tls: Option<&NodeTls>,
    via: SocketAddr,
    peer: &str,
    protocol: Protocol,
    target: SocketAddr,
    timeout: Duration,
) -> Result<Stream, TunnelError> {
    let line = format!("TUG/1 {} {target}\n", protocol.as_str());
    tokio::time::timeout(timeout, ask(tls, via, peer, &line))
        .await
        .unwrap_or(Err(TunnelError::Timeout(via)))
}

/// Asks the agent of node `peer` at `via` to answer once its proxy routes by
/// EndpointSlice revision `revision` or later.
pub async fn sync(
    tls: Option<&NodeTls>,
    via: SocketAddr,
    peer: &str,
    revision: u64,
    timeout: Duration,
) -> Result<(), TunnelError> {
    let line = format!("TUG/1 SYNC {revision}\n");
    tokio::time::timeout(timeout, ask(tls, via, peer, &line))
        .await
        .unwrap_or(Err(TunnelError::Timeout(via)))
        .map(|_| ())
}

/// Connects to the tunnel at `via` (TLS with `tls`, expecting `peer`'s
/// certificate), sends `line` and reads the answer; the stream after an `OK`.
async fn ask(
    tls: Option<&NodeTls>,
    via: SocketAddr,
    peer: &str,
    line: &str,
) -> Result<Stream, TunnelError> {
    let tcp = TcpStream::connect(via)
        .await
        .map_err(|e| TunnelError::Connect(via, e))?;
    let _ = tcp.set_nodelay(true);
    let mut stream: Stream = match tls {
        None => Box::new(tcp),
        Some(tls) => {
            let connector = tls
                .connector(peer)
                .map_err(|e| TunnelError::Tls(via, e.to_string()))?;
            let name =
                rustls_pki_types::ServerName::try_from(tugboat_tls::identity::node_dns_name(peer))
                    .map_err(|e| TunnelError::Tls(via, e.to_string()))?;
            Box::new(
                connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| TunnelError::Tls(via, e.to_string()))?,
            )
        }
    };
    stream
        .write_all(line.as_bytes())
        .await
        .map_err(|e| TunnelError::Io(via, e))?;
    // Read the answer a byte at a time: whatever follows it belongs to the
    // connection (the server may speak first), so nothing may be buffered.
    let mut answer = Vec::with_capacity(16);
    loop {
        let b = stream
            .read_u8()
            .await
            .map_err(|e| TunnelError::Io(via, e))?;
        if b == b'\n' {
            break;
        }
        if answer.len() >= MAX_LINE {
            return Err(TunnelError::Refused(via, "answer too long".into()));
        }
        answer.push(b);
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    match answer.strip_prefix("ERR ") {
        _ if answer == "OK" => Ok(stream),
        Some(why) => Err(TunnelError::Refused(via, why.to_string())),
        None => Err(TunnelError::Refused(
            via,
            format!("unexpected answer {answer:?}"),
        )),
    }
}

/// Serves the tunnel on `listener` until `shutdown` (over TLS, taking only
/// other nodes, when `shared` holds the node's credential).
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let acceptor = shared
        .tls
        .as_ref()
        .map(|t| tokio_rustls::TlsAcceptor::from(t.server_config()));
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_TUNNELS));
    loop {
        let (conn, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "the proxy tunnel cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = MAX_TUNNELS, "too many tunnels open; refusing one");
            continue;
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let acceptor = acceptor.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let _ = conn.set_nodelay(true);
            let conn: Stream = match acceptor {
                None => Box::new(conn),
                Some(acceptor) => match accept_node(acceptor, conn, peer).await {
                    Some(s) => s,
                    None => return,
                },
            };
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = handle(conn, peer, shared) => {}
            }
        });
    }
}

/// The TLS handshake of a tunnel: the client must hold a node's certificate.
async fn accept_node(
    acceptor: tokio_rustls::TlsAcceptor,
    conn: TcpStream,
    peer: SocketAddr,
) -> Option<Stream> {
    let stream = match tokio::time::timeout(REQUEST_TIMEOUT, acceptor.accept(conn)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "a tunnel's TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "a tunnel's TLS handshake timed out");
            return None;
        }
    };
    let node = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| crate::tls::node_of(c));
    if node.is_none() {
        tracing::debug!(%peer, "refused a tunnel from a certificate that is not a node's");
        return None;
    }
    Some(Box::new(stream))
}

async fn handle(conn: Stream, peer: SocketAddr, shared: Arc<Shared>) {
    let mut reader = BufReader::new(conn);
    let mut line = Vec::new();
    let read = tokio::time::timeout(
        REQUEST_TIMEOUT,
        (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line),
    )
    .await;
    if !matches!(read, Ok(Ok(_))) || line.last() != Some(&b'\n') {
        tracing::debug!(%peer, "a tunnel request was not a line in time");
        return;
    }
    // Whatever the caller sent after its line (it should wait for our answer)
    // goes to the target first.
    let early = reader.buffer().to_vec();
    let mut conn = reader.into_inner();
    let request = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
    let (protocol, target) = match parse(&request) {
        Ok(Request::Connect(p, t)) => (p, t),
        Ok(Request::Sync(revision)) => {
            let mut applied = shared.applied();
            let reached =
                tokio::time::timeout(SYNC_WAIT, applied.wait_for(|a| a.revision >= revision))
                    .await
                    .is_ok_and(|r| r.is_ok());
            let _ = match reached {
                true => conn.write_all(b"OK\n").await,
                false => {
                    let at = shared.applied().borrow().revision;
                    refuse(
                        &mut conn,
                        &format!("not at revision {revision} within {SYNC_WAIT:?} (at {at})"),
                    )
                    .await
                }
            };
            return;
        }
        Err(why) => {
            let _ = refuse(&mut conn, &why).await;
            return;
        }
    };
    if !shared.is_local_endpoint(protocol, target) {
        let _ = refuse(
            &mut conn,
            &format!("{target} is not an endpoint of a Service on this node"),
        )
        .await;
        return;
    }
    match protocol {
        Protocol::Tcp => {
            let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    shared.mark_failed(target);
                    let _ = refuse(&mut conn, &format!("connecting to {target}: {e}")).await;
                    return;
                }
                Err(_) => {
                    shared.mark_failed(target);
                    let _ = refuse(&mut conn, &format!("connecting to {target}: timed out")).await;
                    return;
                }
            };
            let mut upstream = upstream;
            let _ = upstream.set_nodelay(true);
            // Open while it lasts, so a pod being stopped waits for it.
            let _carried = shared.carrying(target.ip());
            if conn.write_all(b"OK\n").await.is_err()
                || (!early.is_empty() && upstream.write_all(&early).await.is_err())
            {
                return;
            }
            copy_tcp(conn, upstream).await;
        }
        Protocol::Udp => {
            let socket = match udp_to(target).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = refuse(&mut conn, &format!("UDP to {target}: {e}")).await;
                    return;
                }
            };
            if conn.write_all(b"OK\n").await.is_err() {
                return;
            }
            relay_framed(conn, socket).await;
        }
    }
}

/// What a caller asks.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// A connection or flow to one of this node's endpoints.
    Connect(Protocol, SocketAddr),
    /// An answer once the proxy routes by this EndpointSlice revision.
    Sync(u64),
}

fn parse(request: &str) -> Result<Request, String> {
    let mut parts = request.split(' ');
    if parts.next() != Some("TUG/1") {
        return Err("expected a request line starting with TUG/1".into());
    }
    let protocol = match parts.next() {
        Some("TCP") => Protocol::Tcp,
        Some("UDP") => Protocol::Udp,
        Some("SYNC") => {
            let revision = parts
                .next()
                .and_then(|r| r.parse::<u64>().ok())
                .ok_or_else(|| "expected a revision after SYNC".to_string())?;
            if parts.next().is_some() {
                return Err("unexpected text after the revision".into());
            }
            return Ok(Request::Sync(revision));
        }
        other => return Err(format!("protocol {other:?}: expected TCP, UDP or SYNC")),
    };
    let target = parts
        .next()
        .and_then(|t| t.parse::<SocketAddr>().ok())
        .ok_or_else(|| "expected an IP:port target".to_string())?;
    if parts.next().is_some() {
        return Err("unexpected text after the target".into());
    }
    Ok(Request::Connect(protocol, target))
}

async fn refuse<W: AsyncWrite + Unpin>(w: &mut W, why: &str) -> std::io::Result<()> {
    let why: String = why.chars().filter(|c| *c != '\n').take(MAX_LINE).collect();
    w.write_all(format!("ERR {why}\n").as_bytes()).await
}

/// A UDP socket connected to `target`, from an ephemeral port.
pub async fn udp_to(target: SocketAddr) -> std::io::Result<UdpSocket> {
    let bind: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(target).await?;
    Ok(socket)
}

/// Relays framed datagrams on `stream` to and from the connected `socket` until
/// either side ends or nothing passed for [`UDP_IDLE`].
pub async fn relay_framed(stream: Stream, socket: UdpSocket) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut frame = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            n = tokio::time::timeout(UDP_IDLE, socket.recv(&mut buf)) => {
                let Ok(Ok(n)) = n else { return };
                let Ok(len) = u16::try_from(n) else { continue };
                let mut out = Vec::with_capacity(n + 2);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&buf[..n]);
                if wr.write_all(&out).await.is_err() {
                    return;
                }
            }
            len = rd.read_u16() => {
                let Ok(len) = len else { return };
                let len = usize::from(len);
                if rd.read_exact(&mut frame[..len]).await.is_err() {
                    return;
                }
                let _ = socket.send(&frame[..len]).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_parsed_strictly() {
        assert_eq!(
            parse("TUG/1 TCP 10.0.0.1:80"),
            Ok(Request::Connect(
                Protocol::Tcp,
                "10.0.0.1:80".parse().unwrap()
            ))
        );
        assert_eq!(
            parse("TUG/1 UDP 10.0.0.1:53"),
            Ok(Request::Connect(
                Protocol::Udp,
                "10.0.0.1:53".parse().unwrap()
            ))
        );
        assert_eq!(parse("TUG/1 SYNC 42"), Ok(Request::Sync(42)));
        assert!(parse("TUG/1 SYNC x").is_err());
        assert!(parse("TUG/1 SYNC 1 2").is_err());
        assert!(parse("TUG/2 TCP 10.0.0.1:80").is_err());
        assert!(
            parse("TUG/1 SCTP 10.0.0.1:80")
                .unwrap_err()
                .contains("SCTP")
        );
        assert!(parse("TUG/1 TCP example.com:80").is_err());
        assert!(parse("TUG/1 TCP 10.0.0.1:80 extra").is_err());
    }
}
