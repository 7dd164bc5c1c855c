//! The server side of `kubectl port-forward` over SPDY/3.1 (the
//! `portforward.k8s.io` protocol as client-go's `tools/portforward` and
//! moby/spdystream speak it), on any byte stream: an upgraded HTTP connection,
//! or WebSocket binary messages turned back into bytes.
//!
//! For each local connection kubectl opens two streams sharing a `requestid`
//! header: `streamtype: error` first (it waits for our SYN_REPLY, half-closes
//! it and then only reads it), then `streamtype: data`. Both carry the pod
//! `port`. Once both are here the port is dialled and bytes are copied:
//! client DATA → pod, pod → DATA frames of at most [`CHUNK`] bytes. The pod's
//! EOF is a FIN on the data stream then on the error stream; a failure is a
//! message on the error stream, which kubectl prints.
//!
//! One task writes (it owns the header compression context and the write half,
//! fed frames through a queue, so frames reach the wire in the order they were
//! queued — every SYN_REPLY before any DATA of its stream, which spdystream
//! requires), the caller's task reads and dispatches, and one task per
//! forwarded connection. SPDY/3.1 flow control is not used: spdystream never
//! sends WINDOW_UPDATE, so waiting for one would stall; a pod that stops reading
//! pushes back on the whole session, as with spdystream itself.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadHalf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::spdy::{self, Decoder, Encoder, Frame, Limits, SpdyError, header};

/// Most streams open at once in one session (two per forwarded connection).
pub const MAX_STREAMS: usize = 256;
/// Largest DATA frame sent towards the client (what Go's `io.Copy` uses too).
pub const CHUNK: usize = 32 * 1024;
/// How long one stream of a pair waits for the other before both are reset
/// (kubectl sends them back to back).
pub const PAIR_TIMEOUT: Duration = Duration::from_secs(30);
/// How long dialling the pod's port may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the writer may take to flush what was queued once the session ends.
pub const LINGER: Duration = Duration::from_secs(5);

/// Frames queued for the writer.
const FRAME_QUEUE: usize = 64;
/// Chunks of client data queued for one pod connection.
const INBOUND_QUEUE: usize = 16;
/// One read from the transport.
const READ_BUF: usize = 64 * 1024;
/// The writer batches queued frames up to about this many bytes per write.
const WRITE_BATCH: usize = 256 * 1024;

/// How a session runs; `Options::default()` has the constants above.
#[derive(Clone, Debug)]
pub struct Options {
    /// Frame and header block bounds for what the client sends.
    pub limits: Limits,
    pub max_streams: usize,
    pub pair_timeout: Duration,
    pub dial_timeout: Duration,
    pub linger: Duration,
    /// Names the pod in error messages (`namespace/name`), as the kubelet does.
    pub pod: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            limits: Limits::default(),
            max_streams: MAX_STREAMS,
            pair_timeout: PAIR_TIMEOUT,
            dial_timeout: DIAL_TIMEOUT,
            linger: LINGER,
            pod: None,
        }
    }
}

/// Serves one port-forward session on `io` until the client sends GOAWAY or
/// closes it, or `shutdown`. `dial(port)` opens a connection to the pod's port.
/// Pod connections are closed when the session ends. An error is a broken
/// transport or a client that does not speak SPDY/3 (it is sent a GOAWAY).
pub async fn serve<T, D, F, S>(io: T, dial: D, shutdown: CancellationToken) -> Result<(), SpdyError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    D: Fn(u16) -> F + Send + Sync + 'static,
    F: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_with(io, dial, Options::default(), shutdown).await
}

/// [`serve`] with explicit [`Options`].
pub async fn serve_with<T, D, F, S>(
    io: T,
    dial: D,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), SpdyError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    D: Fn(u16) -> F + Send + Sync + 'static,
    F: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let dial: Dial = Arc::new(move |port| {
        let connecting = dial(port);
        Box::pin(async move { connecting.await.map(|s| Box::new(s) as Box<dyn Conn>) })
    });
    let (read, write) = tokio::io::split(io);
    // `session` stops the reader and the forwards; `hard_stop` the writer too
    // (on shutdown at once, else after the linger).
    let session = shutdown.child_token();
    let hard_stop = shutdown.child_token();
    let (frames_tx, frames_rx) = mpsc::channel(FRAME_QUEUE);
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let mut writer = tokio::spawn(write_frames(
        write,
        frames_rx,
        session.clone(),
        hard_stop.clone(),
    ));
    let tracker = TaskTracker::new();
    let linger = options.linger;
    let reader = Session {
        shared: Arc::new(Shared {
            dial,
            options,
            frames: frames_tx,
            events: events_tx,
            session: session.clone(),
        }),
        tracker: tracker.clone(),
        streams: HashMap::new(),
        pairs: HashMap::new(),
        next_serial: 0,
        last_good: 0,
    };
    let read_result = reader.run(read, events_rx).await;
    session.cancel();
    tracker.close();
    tracker.wait().await;
    // Every sender is gone now: the writer ends once it has written the rest.
    let write_result = match tokio::time::timeout(linger, &mut writer).await {
        Ok(joined) => joined,
        Err(_) => {
            tracing::debug!(
                "port-forward: the client does not take the last frames; dropping them"
            );
            hard_stop.cancel();
            writer.await
        }
    }
    .unwrap_or_else(|e| Err(SpdyError::Io(io::Error::other(e))));
    read_result.and(write_result)
}

/// A pod connection, whatever the dialer returns.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<C: AsyncRead + AsyncWrite + Unpin + Send> Conn for C {}

type Dial = Arc<
    dyn Fn(u16) -> Pin<Box<dyn Future<Output = io::Result<Box<dyn Conn>>> + Send>> + Send + Sync,
>;

/// What the reader and the forwards share.
struct Shared {
    dial: Dial,
    options: Options,
    frames: mpsc::Sender<Frame>,
    events: mpsc::UnboundedSender<Event>,
    session: CancellationToken,
}

impl Shared {
    /// Queues a frame for the writer; false once the session is over.
    async fn send(&self, frame: Frame) -> bool {
        tokio::select! {
            _ = self.session.cancelled() => false,
            sent = self.frames.send(frame) => sent.is_ok(),
        }
    }

    fn error_message(&self, port: u16, reason: &str) -> String {
        match &self.options.pod {
            Some(pod) => format!("error forwarding port {port} to pod {pod}: {reason}"),
            None => format!("error forwarding port {port} to pod: {reason}"),
        }
    }
}

/// From the forwards and timers back to the reader, which owns the tables.
enum Event {
    /// The forward of a pair ended (its FINs are queued).
    Done { request: String, serial: u64 },
    /// A pair waited too long for its second stream.
    Expired { request: String, serial: u64 },
}

/// Client data for one pod connection.
enum Inbound {
    Data(Bytes),
    Fin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Data,
    Error,
}

struct StreamRef {
    request: String,
    kind: Kind,
    /// The client sent FIN on it.
    fin: bool,
}

/// The data and error streams of one forwarded connection.
struct Pair {
    /// Tells this pair from a later one reusing its request id.
    serial: u64,
    port: Option<u16>,
    error: Option<u32>,
    data: Option<u32>,
    to_pod: mpsc::Sender<Inbound>,
    /// Until the forward starts and takes it.
    from_client: Option<mpsc::Receiver<Inbound>>,
    started: bool,
    cancel: CancellationToken,
}

/// The reader: decodes the client's frames and owns the stream tables.
struct Session {
    shared: Arc<Shared>,
    tracker: TaskTracker,
    streams: HashMap<u32, StreamRef>,
    pairs: HashMap<String, Pair>,
    next_serial: u64,
    /// The highest stream id accepted (for GOAWAY).
    last_good: u32,
}

enum Flow {
    Continue,
    End,
}

impl Session {
    async fn run<T: AsyncRead>(
        mut self,
        mut read: ReadHalf<T>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) -> Result<(), SpdyError> {
        let mut decoder = Decoder::with_limits(self.shared.options.limits);
        let mut buf = vec![0u8; READ_BUF];
        loop {
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => {
                        if let Flow::End = self.on_frame(frame).await {
                            return Ok(());
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "port-forward: the client's frames cannot be read; ending the session");
                        let _ = self.shared.frames.try_send(Frame::GoAway {
                            last_good: self.last_good,
                            status: spdy::GOAWAY_PROTOCOL_ERROR,
                        });
                        return Err(e);
                    }
                }
            }
            tokio::select! {
                _ = self.shared.session.cancelled() => return Ok(()),
                Some(event) = events.recv() => self.on_event(event).await,
                read = read.read(&mut buf) => match read {
                    Ok(0) => return Ok(()),
                    Ok(n) => decoder.push(&buf[..n]),
                    Err(e) => return Err(e.into()),
                },
            }
        }
    }

    async fn on_frame(&mut self, frame: Frame) -> Flow {
        match frame {
            Frame::SynStream {
                stream_id,
                fin,
                headers,
                ..
            } => self.on_syn_stream(stream_id, fin, &headers).await,
            Frame::Data {
                stream_id,
                fin,
                data,
            } => self.on_data(stream_id, fin, data).await,
            Frame::Headers {
                stream_id,
                fin: true,
                ..
            } => self.on_data(stream_id, true, Bytes::new()).await,
            Frame::RstStream { stream_id, status } => {
                if let Some(s) = self.streams.get(&stream_id) {
                    tracing::debug!(stream_id, status, request = %s.request, "port-forward: the client reset a stream");
                    let request = s.request.clone();
                    self.drop_pair(&request, None).await;
                }
            }
            // Odd ids are the client's; even ones would answer ours (we send none).
            Frame::Ping { id } if id % 2 == 1 => {
                self.shared.send(Frame::Ping { id }).await;
            }
            Frame::GoAway { last_good, status } => {
                tracing::debug!(
                    last_good,
                    status,
                    "port-forward: the client ends the session"
                );
                return Flow::End;
            }
            Frame::SynReply { stream_id, .. } => {
                tracing::debug!(
                    stream_id,
                    "port-forward: SYN_REPLY for a stream we never opened; ignored"
                );
            }
            Frame::Ping { .. }
            | Frame::Headers { .. }
            | Frame::Settings
            | Frame::WindowUpdate { .. }
            | Frame::Unknown { .. } => {}
        }
        Flow::Continue
    }

    async fn reset(&self, stream_id: u32, status: u32) {
        self.shared
            .send(Frame::RstStream { stream_id, status })
            .await;
    }

    async fn on_syn_stream(&mut self, id: u32, fin: bool, headers: &[(String, String)]) {
        if id.is_multiple_of(2) {
            tracing::debug!(
                stream_id = id,
                "port-forward: the client opened an even stream id"
            );
            return self.reset(id, spdy::PROTOCOL_ERROR).await;
        }
        if self.streams.contains_key(&id) {
            return self.reset(id, spdy::STREAM_IN_USE).await;
        }
        if self.streams.len() >= self.shared.options.max_streams {
            tracing::warn!(
                stream_id = id,
                limit = self.shared.options.max_streams,
                "port-forward: too many streams in one session; refusing one"
            );
            return self.reset(id, spdy::REFUSED_STREAM).await;
        }
        let kind = match header(headers, "streamtype") {
            Some("data") => Kind::Data,
            Some("error") => Kind::Error,
            other => {
                tracing::debug!(stream_id = id, streamtype = ?other, "port-forward: unknown stream type");
                return self.reset(id, spdy::PROTOCOL_ERROR).await;
            }
        };
        let request = match header(headers, "requestid") {
            Some(r) => r.to_string(),
            // Clients before the header existed (as the kubelet guesses): a
            // pair's streams are consecutive odd ids, error first.
            None => match kind {
                Kind::Error => id.to_string(),
                Kind::Data => id.saturating_sub(2).to_string(),
            },
        };
        let raw_port = header(headers, "port");
        let Some(port) = raw_port
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p > 0)
        else {
            tracing::debug!(stream_id = id, port = ?raw_port, "port-forward: missing or invalid port");
            self.reset(id, spdy::PROTOCOL_ERROR).await;
            if kind == Kind::Data {
                self.report_bad_port(&request, raw_port.unwrap_or("")).await;
            }
            return;
        };
        if let Some(pair) = self.pairs.get(&request) {
            let taken = match kind {
                Kind::Data => pair.data.is_some(),
                Kind::Error => pair.error.is_some(),
            };
            if taken {
                tracing::debug!(stream_id = id, %request, "port-forward: a second stream of the same type for one request");
                return self.reset(id, spdy::PROTOCOL_ERROR).await;
            }
        }
        if !self
            .shared
            .send(Frame::SynReply {
                stream_id: id,
                fin: false,
                headers: Vec::new(),
            })
            .await
        {
            return;
        }
        self.last_good = self.last_good.max(id);
        self.streams.insert(
            id,
            StreamRef {
                request: request.clone(),
                kind,
                fin,
            },
        );
        if !self.pairs.contains_key(&request) {
            self.new_pair(&request);
        }
        let Some(pair) = self.pairs.get_mut(&request) else {
            return;
        };
        match kind {
            Kind::Data => {
                pair.data = Some(id);
                pair.port = Some(port);
                if fin {
                    // The queue is new and empty: this cannot fail.
                    let _ = pair.to_pod.try_send(Inbound::Fin);
                }
            }
            Kind::Error => pair.error = Some(id),
        }
        tracing::debug!(stream_id = id, %request, ?kind, port, "port-forward: stream opened");
        if pair.data.is_some() && pair.error.is_some() {
            self.start(&request);
        }
    }

    /// A data stream came with a bad port: its error stream, if already here,
    /// says so and is closed (the data stream was reset).
    async fn report_bad_port(&mut self, request: &str, raw: &str) {
        let Some(pair) = self.pairs.get(request) else {
            return;
        };
        if pair.started {
            return;
        }
        if let Some(error_id) = pair.error {
            let message = format!("error forwarding port {raw:?}: invalid port");
            self.shared
                .send(Frame::Data {
                    stream_id: error_id,
                    fin: true,
                    data: Bytes::from(message),
                })
                .await;
        }
        self.drop_pair(request, None).await;
    }

    fn new_pair(&mut self, request: &str) {
        let (to_pod, from_client) = mpsc::channel(INBOUND_QUEUE);
        let serial = self.next_serial;
        self.next_serial += 1;
        let cancel = self.shared.session.child_token();
        // The expiry timer; ignored once the pair has started.
        let timer_cancel = cancel.clone();
        let events = self.shared.events.clone();
        let timeout = self.shared.options.pair_timeout;
        let timer_request = request.to_string();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = timer_cancel.cancelled() => {}
                _ = tokio::time::sleep(timeout) => {
                    let _ = events.send(Event::Expired { request: timer_request, serial });
                }
            }
        });
        self.pairs.insert(
            request.to_string(),
            Pair {
                serial,
                port: None,
                error: None,
                data: None,
                to_pod,
                from_client: Some(from_client),
                started: false,
                cancel,
            },
        );
    }

    fn start(&mut self, request: &str) {
        let Some(pair) = self.pairs.get_mut(request) else {
            return;
        };
        let (Some(port), Some(data_id), Some(error_id), Some(from_client)) =
            (pair.port, pair.data, pair.error, pair.from_client.take())
        else {
            return;
        };
        pair.started = true;
        let job = Job {
            request: request.to_string(),
            serial: pair.serial,
            port,
            data_id,
            error_id,
            from_client,
            cancel: pair.cancel.clone(),
        };
        self.tracker.spawn(forward(self.shared.clone(), job));
    }

    async fn on_data(&mut self, id: u32, fin: bool, data: Bytes) {
        let Some(stream) = self.streams.get_mut(&id) else {
            // Late frames of a connection already done: nothing to do.
            tracing::trace!(stream_id = id, "port-forward: data for no open stream");
            return;
        };
        if stream.fin {
            if !data.is_empty() {
                tracing::debug!(stream_id = id, "port-forward: data after FIN; dropped");
            }
            return;
        }
        stream.fin = fin;
        // The client only half-closes the error stream; what it would send there
        // means nothing.
        if stream.kind == Kind::Error {
            return;
        }
        let request = stream.request.clone();
        let Some(pair) = self.pairs.get(&request) else {
            return;
        };
        let (to_pod, started) = (pair.to_pod.clone(), pair.started);
        let mut messages = Vec::with_capacity(2);
        if !data.is_empty() {
            messages.push(Inbound::Data(data));
        }
        if fin {
            messages.push(Inbound::Fin);
        }
        for message in messages {
            if started {
                // Closed: the pod side is done; the data has nowhere to go.
                tokio::select! {
                    _ = self.shared.session.cancelled() => return,
                    _ = to_pod.send(message) => {}
                }
            } else if to_pod.try_send(message).is_err() {
                tracing::warn!(stream_id = id, %request, "port-forward: data before the stream pair is complete overflows its queue; resetting");
                return self
                    .drop_pair(&request, Some(spdy::FLOW_CONTROL_ERROR))
                    .await;
            }
        }
    }

    /// Forgets a pair, stopping its forward (closing the pod connection), and
    /// resets its streams with `status` if given.
    async fn drop_pair(&mut self, request: &str, status: Option<u32>) {
        let Some(pair) = self.pairs.remove(request) else {
            return;
        };
        pair.cancel.cancel();
        for id in [pair.error, pair.data].into_iter().flatten() {
            self.streams.remove(&id);
            if let Some(status) = status {
                self.reset(id, status).await;
            }
        }
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Done { request, serial } => {
                if self.pairs.get(&request).is_some_and(|p| p.serial == serial) {
                    self.drop_pair(&request, None).await;
                }
            }
            Event::Expired { request, serial } => {
                if self
                    .pairs
                    .get(&request)
                    .is_some_and(|p| p.serial == serial && !p.started)
                {
                    tracing::debug!(%request, "port-forward: the other stream of a pair never came; resetting");
                    self.drop_pair(&request, Some(spdy::CANCEL)).await;
                }
            }
        }
    }
}

/// One forwarded connection.
struct Job {
    request: String,
    serial: u64,
    port: u16,
    data_id: u32,
    error_id: u32,
    from_client: mpsc::Receiver<Inbound>,
    cancel: CancellationToken,
}

async fn forward(shared: Arc<Shared>, job: Job) {
    let (request, serial, cancel) = (job.request.clone(), job.serial, job.cancel.clone());
    if cancel
        .run_until_cancelled(pump(&shared, job))
        .await
        .is_none()
    {
        tracing::debug!(%request, "port-forward: connection stopped");
    }
    let _ = shared.events.send(Event::Done { request, serial });
}

/// Dials the pod and copies until the pod's side ends.
async fn pump(shared: &Shared, job: Job) {
    let Job {
        port,
        data_id,
        error_id,
        mut from_client,
        ..
    } = job;
    let conn = match tokio::time::timeout(shared.options.dial_timeout, (shared.dial)(port)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return fail(shared, port, data_id, error_id, &e.to_string()).await,
        Err(_) => {
            let reason = format!(
                "timed out connecting after {}s",
                shared.options.dial_timeout.as_secs()
            );
            return fail(shared, port, data_id, error_id, &reason).await;
        }
    };
    tracing::debug!(port, data_id, "port-forward: connected to the pod");
    let (mut pod_read, mut pod_write) = tokio::io::split(conn);
    // Client → pod. When done (FIN, the session's queue closed, or the pod
    // refusing writes) it stops taking data and waits: only the pod's EOF ends
    // the connection, as the kubelet's copy does.
    let up = async move {
        while let Some(message) = from_client.recv().await {
            match message {
                Inbound::Data(data) => {
                    if let Err(e) = pod_write.write_all(&data).await {
                        tracing::debug!(port, error = %e, "port-forward: the pod does not take data");
                        break;
                    }
                }
                Inbound::Fin => {
                    let _ = pod_write.shutdown().await;
                    break;
                }
            }
        }
        drop(from_client);
        std::future::pending::<()>().await
    };
    // Pod → client.
    let down = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = pod_read.read(&mut buf).await?;
            if n == 0 {
                return Ok(true);
            }
            let frame = Frame::Data {
                stream_id: data_id,
                fin: false,
                data: Bytes::copy_from_slice(&buf[..n]),
            };
            if !shared.send(frame).await {
                return Ok(false);
            }
        }
    };
    let outcome: io::Result<bool> = tokio::select! {
        outcome = down => outcome,
        () = up => Ok(false),
    };
    match outcome {
        Ok(true) => {
            close(shared, data_id).await;
            close(shared, error_id).await;
        }
        Ok(false) => {}
        Err(e) => {
            tracing::debug!(port, error = %e, "port-forward: reading from the pod failed");
            fail(shared, port, data_id, error_id, &e.to_string()).await;
        }
    }
}

/// Says why on the error stream, then closes both.
async fn fail(shared: &Shared, port: u16, data_id: u32, error_id: u32, reason: &str) {
    let message = shared.error_message(port, reason);
    tracing::debug!(%message, "port-forward: connection failed");
    let sent = shared
        .send(Frame::Data {
            stream_id: error_id,
            fin: false,
            data: Bytes::from(message),
        })
        .await;
    if sent {
        close(shared, error_id).await;
        close(shared, data_id).await;
    }
}

/// An empty DATA frame with FIN.
async fn close(shared: &Shared, stream_id: u32) -> bool {
    shared
        .send(Frame::Data {
            stream_id,
            fin: true,
            data: Bytes::new(),
        })
        .await
}

/// The writer: encodes queued frames in order (one compression context) and
/// writes them, batching what is already queued into one write. Ends when every
/// sender is gone (then closes its side of the transport) or on `hard_stop`; a
/// write failure ends the session.
async fn write_frames<W: AsyncWrite + Unpin>(
    mut write: W,
    mut frames: mpsc::Receiver<Frame>,
    session: CancellationToken,
    hard_stop: CancellationToken,
) -> Result<(), SpdyError> {
    let work = async {
        let mut encoder = Encoder::new()?;
        let mut out = BytesMut::new();
        while let Some(frame) = frames.recv().await {
            encoder.encode_into(&frame, &mut out)?;
            while out.len() < WRITE_BATCH {
                let Ok(frame) = frames.try_recv() else {
                    break;
                };
                encoder.encode_into(&frame, &mut out)?;
            }
            write.write_all(&out).await?;
            out.clear();
            write.flush().await?;
        }
        let _ = write.shutdown().await;
        Ok(())
    };
    let result = tokio::select! {
        _ = hard_stop.cancelled() => Ok(()),
        result = work => result,
    };
    if let Err(e) = &result {
        tracing::debug!(error = %e, "port-forward: writing to the client failed");
        session.cancel();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{DuplexStream, WriteHalf};
    use tokio::net::{TcpListener, TcpStream};

    const WAIT: Duration = Duration::from_secs(10);

    struct ClientTx {
        w: WriteHalf<DuplexStream>,
        enc: Encoder,
    }

    struct ClientRx {
        r: ReadHalf<DuplexStream>,
        dec: Decoder,
    }

    impl ClientTx {
        async fn send(&mut self, frame: Frame) {
            let bytes = self.enc.encode(&frame).unwrap();
            self.w.write_all(&bytes).await.unwrap();
        }

        async fn syn(&mut self, id: u32, kind: &str, port: &str, request: &str) {
            self.send(Frame::SynStream {
                stream_id: id,
                assoc: 0,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers: vec![
                    ("streamtype".into(), kind.into()),
                    ("port".into(), port.into()),
                    ("requestid".into(), request.into()),
                ],
            })
            .await;
        }

        async fn data(&mut self, id: u32, fin: bool, data: &[u8]) {
            self.send(Frame::Data {
                stream_id: id,
                fin,
                data: Bytes::copy_from_slice(data),
            })
            .await;
        }
    }

    impl ClientRx {
        /// The next frame, `None` on EOF.
        async fn recv(&mut self) -> Option<Frame> {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                if let Some(frame) = self.dec.next_frame().unwrap() {
                    return Some(frame);
                }
                let n = tokio::time::timeout(WAIT, self.r.read(&mut buf))
                    .await
                    .expect("a frame in time")
                    .unwrap();
                if n == 0 {
                    return None;
                }
                self.dec.push(&buf[..n]);
            }
        }

        async fn expect(&mut self) -> Frame {
            self.recv().await.expect("a frame, not EOF")
        }

        async fn expect_reply(&mut self, id: u32) {
            assert_eq!(
                self.expect().await,
                Frame::SynReply {
                    stream_id: id,
                    fin: false,
                    headers: vec![]
                }
            );
        }

        /// Reads until every stream in `ids` had FIN; what each carried. Checks
        /// no DATA frame exceeds CHUNK.
        async fn until_fins(&mut self, ids: &[u32]) -> HashMap<u32, Vec<u8>> {
            let mut got: HashMap<u32, Vec<u8>> = HashMap::new();
            let mut open: Vec<u32> = ids.to_vec();
            while !open.is_empty() {
                match self.expect().await {
                    Frame::Data {
                        stream_id,
                        fin,
                        data,
                    } => {
                        assert!(data.len() <= CHUNK);
                        got.entry(stream_id).or_default().extend_from_slice(&data);
                        if fin {
                            open.retain(|i| *i != stream_id);
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            got
        }
    }

    type Server = tokio::task::JoinHandle<Result<(), SpdyError>>;

    fn dial_local(port: u16) -> impl Future<Output = io::Result<TcpStream>> + Send {
        TcpStream::connect(("127.0.0.1", port))
    }

    fn start(options: Options) -> (ClientTx, ClientRx, Server, CancellationToken) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let token = CancellationToken::new();
        let handle = tokio::spawn(serve_with(server, dial_local, options, token.clone()));
        let (r, w) = tokio::io::split(client);
        (
            ClientTx {
                w,
                enc: Encoder::new().unwrap(),
            },
            ClientRx {
                r,
                dec: Decoder::new(),
            },
            handle,
            token,
        )
    }

    /// An echo server: each connection's bytes back, then its EOF back.
    async fn echo_pod() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = conn.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        port
    }

    /// A pod that reports when its (single) connection is closed by the peer.
    async fn watching_pod() -> (u16, tokio::sync::oneshot::Receiver<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            while let Ok(n) = conn.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            let _ = tx.send(());
        });
        (port, rx)
    }

    async fn finished(server: Server) -> Result<(), SpdyError> {
        tokio::time::timeout(WAIT, server)
            .await
            .expect("the session ends")
            .expect("no panic")
    }

    /// kubectl's order: error stream, its reply, its FIN, then the data stream.
    async fn open_pair(tx: &mut ClientTx, rx: &mut ClientRx, first: u32, port: u16, req: &str) {
        tx.syn(first, "error", &port.to_string(), req).await;
        rx.expect_reply(first).await;
        tx.data(first, true, b"").await;
        tx.syn(first + 2, "data", &port.to_string(), req).await;
        rx.expect_reply(first + 2).await;
    }

    #[tokio::test]
    async fn forwards_bytes_and_closes_both_streams() {
        let port = echo_pod().await;
        let (mut tx, mut rx, server, _token) = start(Options::default());
        open_pair(&mut tx, &mut rx, 1, port, "0").await;
        tx.data(3, false, b"hello").await;
        assert_eq!(
            rx.expect().await,
            Frame::Data {
                stream_id: 3,
                fin: false,
                data: Bytes::from_static(b"hello")
            }
        );
        // Client FIN → pod sees EOF → echo closes → FIN on data, then on error.
        tx.data(3, true, b" world").await;
        let got = rx.until_fins(&[3, 1]).await;
        assert_eq!(got[&3], b" world");
        assert!(got[&1].is_empty());
        // The session goes on; then EOF ends it cleanly.
        tx.send(Frame::Ping { id: 1 }).await;
        assert_eq!(rx.expect().await, Frame::Ping { id: 1 });
        tx.w.shutdown().await.unwrap();
        finished(server).await.unwrap();
        assert_eq!(rx.recv().await, None, "the server closes its side");
    }

    #[tokio::test]
    async fn pairs_a_data_stream_that_comes_first() {
        let port = echo_pod().await;
        let (mut tx, mut rx, _server, _token) = start(Options::default());
        tx.syn(1, "data", &port.to_string(), "7").await;
        rx.expect_reply(1).await;
        tx.data(1, false, b"early").await;
        tx.syn(3, "error", &port.to_string(), "7").await;
        rx.expect_reply(3).await;
        tx.data(1, true, b"").await;
        let got = rx.until_fins(&[1, 3]).await;
        assert_eq!(got[&1], b"early");
    }

    #[tokio::test]
    async fn two_request_ids_at_once() {
        let port = echo_pod().await;
        let (mut tx, mut rx, _server, _token) = start(Options::default());
        let p = port.to_string();
        tx.syn(1, "error", &p, "0").await;
        tx.syn(3, "error", &p, "1").await;
        tx.syn(5, "data", &p, "1").await;
        tx.syn(7, "data", &p, "0").await;
        for id in [1, 3, 5, 7] {
            rx.expect_reply(id).await;
        }
        tx.data(7, false, b"for zero").await;
        tx.data(5, false, b"for one").await;
        tx.data(7, true, b"").await;
        tx.data(5, true, b"").await;
        let got = rx.until_fins(&[1, 3, 5, 7]).await;
        assert_eq!(got[&7], b"for zero");
        assert_eq!(got[&5], b"for one");
    }

    #[tokio::test]
    async fn large_transfer_in_bounded_chunks() {
        let port = echo_pod().await;
        let (mut tx, mut rx, _server, _token) = start(Options::default());
        open_pair(&mut tx, &mut rx, 1, port, "0").await;
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            for chunk in sent.chunks(50_000) {
                tx.data(3, false, chunk).await;
            }
            tx.data(3, true, b"").await;
            tx
        });
        let got = rx.until_fins(&[3, 1]).await;
        assert_eq!(got[&3].len(), payload.len());
        assert!(got[&3] == payload);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_dial_failure_is_told_on_the_error_stream() {
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port()
        };
        let (mut tx, mut rx, _server, _token) = start(Options {
            pod: Some("default/web".into()),
            ..Options::default()
        });
        open_pair(&mut tx, &mut rx, 1, closed, "0").await;
        let got = rx.until_fins(&[1, 3]).await;
        let message = String::from_utf8(got[&1].clone()).unwrap();
        assert!(
            message.starts_with(&format!(
                "error forwarding port {closed} to pod default/web: "
            )),
            "{message}"
        );
        assert!(got.get(&3).is_none_or(Vec::is_empty));
    }

    #[tokio::test]
    async fn pings_are_echoed_and_noise_ignored() {
        let (mut tx, mut rx, _server, _token) = start(Options::default());
        tx.send(Frame::Settings).await;
        tx.send(Frame::WindowUpdate {
            stream_id: 0,
            delta: 1000,
        })
        .await;
        tx.send(Frame::Ping { id: 2 }).await; // a reply to nothing: ignored
        tx.send(Frame::Data {
            stream_id: 99,
            fin: false,
            data: Bytes::from_static(b"stray"),
        })
        .await;
        tx.send(Frame::RstStream {
            stream_id: 41,
            status: spdy::CANCEL,
        })
        .await;
        tx.send(Frame::Ping { id: 5 }).await;
        assert_eq!(rx.expect().await, Frame::Ping { id: 5 });
    }

    #[tokio::test]
    async fn invalid_streams_are_reset_and_the_session_goes_on() {
        let port = echo_pod().await;
        let (mut tx, mut rx, _server, _token) = start(Options::default());
        let p = port.to_string();
        let rst = |stream_id, status| Frame::RstStream { stream_id, status };
        tx.syn(1, "bogus", &p, "0").await;
        assert_eq!(rx.expect().await, rst(1, spdy::PROTOCOL_ERROR));
        tx.syn(3, "data", "0", "0").await;
        assert_eq!(rx.expect().await, rst(3, spdy::PROTOCOL_ERROR));
        tx.syn(5, "data", "70000", "0").await;
        assert_eq!(rx.expect().await, rst(5, spdy::PROTOCOL_ERROR));
        tx.syn(7, "error", "http", "0").await;
        assert_eq!(rx.expect().await, rst(7, spdy::PROTOCOL_ERROR));
        tx.syn(8, "error", &p, "0").await;
        assert_eq!(rx.expect().await, rst(8, spdy::PROTOCOL_ERROR));
        // A second error stream for one request.
        tx.syn(9, "error", &p, "0").await;
        rx.expect_reply(9).await;
        tx.syn(11, "error", &p, "0").await;
        assert_eq!(rx.expect().await, rst(11, spdy::PROTOCOL_ERROR));
        // A bad port on the data stream is also told on its error stream.
        tx.syn(13, "data", "x", "0").await;
        assert_eq!(rx.expect().await, rst(13, spdy::PROTOCOL_ERROR));
        match rx.expect().await {
            Frame::Data {
                stream_id: 9,
                fin: true,
                data,
            } => assert!(String::from_utf8_lossy(&data).contains("invalid port")),
            other => panic!("unexpected {other:?}"),
        }
        // And a good pair still works.
        open_pair(&mut tx, &mut rx, 15, port, "1").await;
        tx.data(17, true, b"ok").await;
        assert_eq!(rx.until_fins(&[17, 15]).await[&17], b"ok");
    }

    #[tokio::test]
    async fn a_client_reset_closes_the_pod_connection() {
        let (port, closed) = watching_pod().await;
        let (mut tx, mut rx, _server, _token) = start(Options::default());
        open_pair(&mut tx, &mut rx, 1, port, "0").await;
        tx.data(3, false, b"hi").await;
        tx.send(Frame::RstStream {
            stream_id: 3,
            status: spdy::CANCEL,
        })
        .await;
        tokio::time::timeout(WAIT, closed)
            .await
            .expect("the pod connection is closed")
            .unwrap();
    }

    #[tokio::test]
    async fn goaway_ends_the_session_and_its_connections() {
        let (port, closed) = watching_pod().await;
        let (mut tx, mut rx, server, _token) = start(Options::default());
        open_pair(&mut tx, &mut rx, 1, port, "0").await;
        tx.send(Frame::GoAway {
            last_good: 0,
            status: spdy::GOAWAY_OK,
        })
        .await;
        finished(server).await.unwrap();
        tokio::time::timeout(WAIT, closed).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn shutdown_ends_the_session() {
        let (port, closed) = watching_pod().await;
        let (mut tx, mut rx, server, token) = start(Options::default());
        open_pair(&mut tx, &mut rx, 1, port, "0").await;
        token.cancel();
        finished(server).await.unwrap();
        tokio::time::timeout(WAIT, closed).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn garbage_is_an_error_and_a_goaway() {
        let (mut tx, mut rx, server, _token) = start(Options::default());
        tx.w.write_all(&[0xff; 64]).await.unwrap();
        assert!(matches!(
            finished(server).await,
            Err(SpdyError::Version(0x7fff))
        ));
        assert_eq!(
            rx.expect().await,
            Frame::GoAway {
                last_good: 0,
                status: spdy::GOAWAY_PROTOCOL_ERROR
            }
        );
        assert_eq!(rx.recv().await, None);

        // A header block that is not zlib.
        let (mut tx, _rx, server, _token) = start(Options::default());
        tx.w.write_all(&[
            0x80, 3, 0, 1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6,
        ])
        .await
        .unwrap();
        assert!(matches!(
            finished(server).await,
            Err(SpdyError::Compression(_))
        ));
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_refused() {
        let (mut tx, _rx, server, _token) = start(Options {
            limits: Limits {
                max_frame_len: 1024,
                max_header_block: 1024,
            },
            ..Options::default()
        });
        // A data frame announcing 4096 bytes; the header alone is refused.
        tx.w.write_all(&[0, 0, 0, 1, 0, 0, 0x10, 0]).await.unwrap();
        assert!(matches!(
            finished(server).await,
            Err(SpdyError::FrameTooLarge {
                len: 4096,
                max: 1024
            })
        ));
    }

    #[tokio::test]
    async fn the_stream_limit_refuses_then_frees() {
        let port = echo_pod().await;
        let (mut tx, mut rx, _server, _token) = start(Options {
            max_streams: 2,
            ..Options::default()
        });
        open_pair(&mut tx, &mut rx, 1, port, "0").await;
        tx.syn(5, "error", &port.to_string(), "1").await;
        assert_eq!(
            rx.expect().await,
            Frame::RstStream {
                stream_id: 5,
                status: spdy::REFUSED_STREAM
            }
        );
        tx.data(3, true, b"").await;
        rx.until_fins(&[3, 1]).await;
        // The finished pair's streams are released (the reader may see the
        // forward's end a moment after its FINs).
        let mut next = 7;
        loop {
            tx.syn(next, "error", &port.to_string(), "1").await;
            match rx.expect().await {
                Frame::SynReply { stream_id, .. } if stream_id == next => break,
                Frame::RstStream { stream_id, .. } if stream_id == next => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    next += 2;
                    assert!(next < 400, "streams never released");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_lone_data_stream_cannot_queue_without_bound() {
        let (mut tx, mut rx, _server, _token) = start(Options::default());
        tx.syn(1, "data", "8080", "0").await;
        rx.expect_reply(1).await;
        for _ in 0..=INBOUND_QUEUE {
            tx.data(1, false, b"x").await;
        }
        assert_eq!(
            rx.expect().await,
            Frame::RstStream {
                stream_id: 1,
                status: spdy::FLOW_CONTROL_ERROR
            }
        );
        // The stream is gone: more data for it is ignored, the session lives.
        tx.data(1, false, b"x").await;
        tx.send(Frame::Ping { id: 3 }).await;
        assert_eq!(rx.expect().await, Frame::Ping { id: 3 });
    }

    #[tokio::test]
    async fn a_lone_stream_expires() {
        let (mut tx, mut rx, _server, _token) = start(Options {
            pair_timeout: Duration::from_millis(100),
            ..Options::default()
        });
        tx.syn(1, "error", "8080", "0").await;
        rx.expect_reply(1).await;
        assert_eq!(
            rx.expect().await,
            Frame::RstStream {
                stream_id: 1,
                status: spdy::CANCEL
            }
        );
    }

    #[tokio::test]
    async fn legacy_clients_without_request_ids_are_paired_by_stream_id() {
        let port = echo_pod().await;
        let (mut tx, mut rx, _server, _token) = start(Options::default());
        let headers = |kind: &str| -> spdy::Headers {
            vec![
                ("streamtype".into(), kind.into()),
                ("port".into(), port.to_string()),
            ]
        };
        for (id, kind) in [(1, "error"), (3, "data")] {
            tx.send(Frame::SynStream {
                stream_id: id,
                assoc: 0,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers: headers(kind),
            })
            .await;
            rx.expect_reply(id).await;
        }
        tx.data(3, true, b"old").await;
        assert_eq!(rx.until_fins(&[3, 1]).await[&3], b"old");
    }
}
