//! Serving an axum router with connection bounds, which `axum::serve` does not
//! set, for the controller's API and the agent's log server alike: a client
//! must send its request headers within a time limit (a client dribbling one byte
//! every few seconds is cut off instead of held for ever), a connection with no
//! request in flight is closed after an idle time, and one client address may
//! hold only so many connections (so one client cannot use up the server's file
//! descriptors). Connections are served by hyper directly, with the same axum
//! router.
//!
//! With a rustls configuration the connection is TLS: the handshake must finish
//! within the header timeout, and the client's certificate chain (when it sent
//! one, already verified by the configuration's client verifier) rides on every
//! request as a [`PeerCertificates`] extension for the router to authenticate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tugboat_api::limits;

/// The verified certificate chain a TLS client presented, leaf first; on every
/// request of its connection.
#[derive(Clone, Debug)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

/// Plain TCP, or TLS with this configuration.
pub type Tls = Option<Arc<rustls::ServerConfig>>;

/// The bounds on connections. `Default` holds [`limits`]' values.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// How long a connection with no request in flight stays open.
    pub idle_timeout: Duration,
    /// Connections one client address may hold at once.
    pub per_client: usize,
    /// Connections in all.
    pub total: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_read_timeout: Duration::from_secs(limits::HEADER_READ_TIMEOUT_SECS),
            idle_timeout: Duration::from_secs(limits::IDLE_TIMEOUT_SECS),
            per_client: limits::MAX_CONNECTIONS_PER_CLIENT,
            total: limits::MAX_CONNECTIONS,
        }
    }
}

/// Open connections, by client address and in all.
#[derive(Default)]
struct Counts {
    by_client: Mutex<HashMap<IpAddr, usize>>,
    total: AtomicUsize,
}

/// One admitted connection; gives its place back when dropped.
struct Slot {
    counts: Arc<Counts>,
    client: IpAddr,
}

impl Slot {
    fn take(counts: &Arc<Counts>, client: IpAddr, limits: &ConnLimits) -> Option<Slot> {
        let mut by_client = counts.by_client.lock().unwrap_or_else(|e| e.into_inner());
        let mine = by_client.entry(client).or_insert(0);
        if *mine >= limits.per_client || counts.total.load(Ordering::Relaxed) >= limits.total {
            if *mine == 0 {
                by_client.remove(&client);
            }
            return None;
        }
        *mine += 1;
        counts.total.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            counts: counts.clone(),
            client,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut by_client = self
            .counts
            .by_client
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                by_client.remove(&self.client);
            }
        }
        self.counts.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a connection is doing: requests in flight (counted until their response
/// body is fully sent, so a long watch is not "idle") and when it last finished one.
struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    fn idle_for(&self) -> Option<Duration> {
        (self.in_flight.load(Ordering::Acquire) == 0).then(|| {
            self.last
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed()
        })
    }
}

/// Marks a request in flight until dropped (with its response body).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(a: &Arc<Activity>) -> InFlight {
        a.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until it is done.
struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `app` on `listener` until `shutdown`, within `limits`; then lets open
/// requests finish for a short while.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    tls: Tls,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let counts = Arc::new(Counts::default());
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait a little instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = Slot::take(&counts, peer.ip(), &limits) else {
            tracing::debug!(client = %peer, "too many connections from this client; closing the new one");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let shutdown = shutdown.clone();
        let acceptor = tls.clone().map(tokio_rustls::TlsAcceptor::from);
        tracker.spawn(async move {
            let _slot = slot;
            let Some(acceptor) = acceptor else {
                return serve_connection(stream, None, app, limits, peer, shutdown, false).await;
            };
            let handshake = tokio::select! {
                _ = shutdown.cancelled() => return,
                h = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)) => h,
            };
            let stream = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(client = %peer, "TLS handshake timed out");
                    return;
                }
            };
            // HTTP/2 when the client asked for it by ALPN (and the
            // configuration offers it): one connection per client, however
            // many requests and watches it has going.
            let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            let certs = stream
                .get_ref()
                .1
                .peer_certificates()
                .filter(|c| !c.is_empty())
                .map(|c| {
                    PeerCertificates(Arc::new(c.iter().map(|c| c.clone().into_owned()).collect()))
                });
            serve_connection(stream, certs, app, limits, peer, shutdown, http2).await;
        });
    }
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open 5 s after shutdown; leaving them");
    }
    Ok(())
}

/// Streams one HTTP/2 connection may have open at once (Go's and so
/// kube-apiserver's default).
const HTTP2_MAX_STREAMS: u32 = 250;

/// The most header bytes (decoded) one HTTP/2 request may carry.
const HTTP2_MAX_HEADER_LIST: u32 = 1024 * 1024;

/// The router as a hyper service for one connection: each request carries the
/// client's certificates and counts as in flight until its body is sent.
fn service(
    app: Router,
    certs: Option<PeerCertificates>,
    activity: &Arc<Activity>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = hyper::Response<Body>,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<Output = Result<hyper::Response<Body>, std::convert::Infallible>>
             + Send
             + 'static,
> + Clone
+ Send
+ 'static {
    let per_request = activity.clone();
    hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let in_flight = InFlight::start(&per_request);
        let app = app.clone();
        let mut req = req.map(Body::new);
        if let Some(c) = &certs {
            req.extensions_mut().insert(c.clone());
        }
        async move {
            let resp = app.oneshot(req).await?;
            Ok::<_, std::convert::Infallible>(resp.map(|inner| {
                Body::new(TrackedBody {
                    inner,
                    _in_flight: in_flight,
                })
            }))
        }
    })
}

fn new_activity() -> Arc<Activity> {
    Arc::new(Activity {
        in_flight: AtomicUsize::new(0),
        last: Mutex::new(Instant::now()),
    })
}

/// Drives `$conn` (a pinned hyper connection: HTTP/1.1 and HTTP/2 connections
/// share no trait for `graceful_shutdown`, hence a macro) until it ends, its
/// `$activity` has had nothing in flight for the idle time, or `$shutdown`;
/// then shuts it down gracefully (HTTP/2: GOAWAY) and lets what is in flight
/// finish.
macro_rules! drive {
    ($conn:ident, $activity:expr, $limits:expr, $peer:expr, $shutdown:expr) => {{
        let mut check = tokio::time::interval(idle_check_period($limits.idle_timeout));
        loop {
            tokio::select! {
                result = $conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(client = %$peer, error = %e, "connection ended");
                    }
                    return;
                }
                _ = $shutdown.cancelled() => break,
                _ = check.tick() => {
                    if $activity.idle_for().is_some_and(|d| d >= $limits.idle_timeout) {
                        tracing::debug!(client = %$peer, "closing an idle connection");
                        break;
                    }
                }
            }
        }
        $conn.as_mut().graceful_shutdown();
        let _ = $conn.await;
    }};
}

/// Serves one connection's requests (HTTP/2 streams when `http2`) until it
/// ends, idles out or `shutdown`.
async fn serve_connection<S>(
    stream: S,
    certs: Option<PeerCertificates>,
    app: Router,
    limits: ConnLimits,
    peer: std::net::SocketAddr,
    shutdown: CancellationToken,
    http2: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = new_activity();
    let service = service(app, certs, &activity);
    let io = TokioIo::new(stream);
    if http2 {
        let mut builder =
            hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(HTTP2_MAX_STREAMS)
            .max_header_list_size(HTTP2_MAX_HEADER_LIST);
        let conn = builder.serve_connection(io, service);
        tokio::pin!(conn);
        drive!(conn, activity, limits, peer, shutdown);
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true);
        let conn = builder.serve_connection(io, service).with_upgrades();
        tokio::pin!(conn);
        drive!(conn, activity, limits, peer, shutdown);
    }
}

fn idle_check_period(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5))
}
