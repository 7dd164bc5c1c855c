//! The server around the routes: binds the address, arms `--exit-after` and the
//! signal handlers, and accepts connections, at most `MAX_CONNECTIONS` at once, each
//! served by hyper (HTTP/1.1) for one request and then closed.
//!
//! Logging and exiting go through `Process`, so tests run the same server in-process
//! and see its log lines and exit requests instead of losing the test binary.

use std::convert::Infallible;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::body::{Body as _, Incoming};
use hyper::header::{ALLOW, CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::args::ServeArgs;
use crate::routes::{After, Identity, Reply, State, environment, route};

/// Connections served at once; the next waits in the listen backlog.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a client may take to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may take in all: head, body, response.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request head (request line and header fields); larger is answered 431.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields; more are answered 431.
pub const MAX_HEADERS: usize = 100;
/// The largest body read (and thrown away); larger is answered 413.
pub const MAX_BODY: u64 = 16 * 1024 * 1024;

/// What the server does to the process around it.
pub trait Process: Send + Sync {
    /// Writes one line to the log (stdout, which the container runtime keeps).
    fn log(&self, line: &str);
    /// Ends the process with `code`; the real one does not return.
    fn exit(&self, code: i32);
}

/// The real process: logs to stdout, exits for real.
pub struct StdProcess;

impl Process for StdProcess {
    fn log(&self, line: &str) {
        // Not println!: it panics when stdout is gone, and a test server should not.
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    fn exit(&self, code: i32) {
        let _ = io::stdout().flush();
        std::process::exit(code);
    }
}

/// Binds `args.listen`, prints the start-up line, arms `--exit-after` and the signal
/// handlers, and serves until the process exits. Returns only if it cannot listen.
pub async fn serve(args: ServeArgs) -> io::Result<Infallible> {
    let started = Instant::now();
    let listener = TcpListener::bind(args.listen).await.map_err(|err| {
        io::Error::new(
            err.kind(),
            format!("cannot listen on {}: {err}", args.listen),
        )
    })?;
    let address = listener.local_addr()?;
    let state = Arc::new(State::new(
        started,
        Identity::from_process(),
        environment(),
        &args,
    ));
    let process: Arc<dyn Process> = Arc::new(StdProcess);
    process.log(&format!(
        "tug-sample listening on {address} ({})",
        state.identity().label()
    ));
    exit_on_signals(process.clone());
    if let Some(udp) = args.udp {
        let socket = tokio::net::UdpSocket::bind(udp).await.map_err(|err| {
            io::Error::new(err.kind(), format!("cannot listen on UDP {udp}: {err}"))
        })?;
        process.log(&format!(
            "tug-sample answering UDP on {}",
            socket.local_addr()?
        ));
        tokio::spawn(udp_echo(socket, state.identity().hostname.clone()));
    }
    if let Some(after) = args.exit_after {
        let process = process.clone();
        let code = args.exit_code;
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            process.log(&format!(
                "tug-sample: exiting with status {code} after {after:?} (--exit-after)"
            ));
            process.exit(code.into());
        });
    }
    run(listener, state, process).await
}

/// Answers every datagram with "HOSTNAME DATAGRAM", for ever.
async fn udp_echo(socket: tokio::net::UdpSocket, hostname: String) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let mut reply = Vec::with_capacity(hostname.len() + 1 + n);
        reply.extend_from_slice(hostname.as_bytes());
        reply.push(b' ');
        reply.extend_from_slice(&buf[..n]);
        let _ = socket.send_to(&reply, from).await;
    }
}

/// Accepts connections for ever, each served on a task of its own.
pub async fn run(listener: TcpListener, state: Arc<State>, process: Arc<dyn Process>) -> ! {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            unreachable!("the semaphore is never closed");
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, or a connection reset before it was taken:
                // pause instead of spinning, and keep serving.
                process.log(&format!("tug-sample: accepting a connection failed: {err}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (state, process) = (state.clone(), process.clone());
        tokio::spawn(async move {
            let _slot = slot;
            connection(stream, peer, state, process).await;
        });
    }
}

/// The request that asked the process to exit, and the status to exit with.
type ExitRequest = Arc<Mutex<Option<(i32, String)>>>;

/// Serves one request on `stream`, then closes it; exits the process afterwards if
/// the request asked for it and its response went out.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    process: Arc<dyn Process>,
) {
    let _ = stream.set_nodelay(true);
    let exit: ExitRequest = Arc::default();
    let service = {
        let (process, exit) = (process.clone(), exit.clone());
        hyper::service::service_fn(move |req| {
            handle(req, peer, state.clone(), process.clone(), exit.clone())
        })
    };
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .title_case_headers(true)
        .auto_date_header(false)
        .max_header_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(CONNECTION_TIMEOUT, served).await {
        Ok(Ok(())) => {}
        // A malformed request: hyper has answered it (400, 414, 431).
        Ok(Err(err)) if err.is_parse() => {
            process.log(&format!("bad request from {peer}: {err}"));
            return;
        }
        // A read that failed or timed out, or a client that closed mid-request.
        Ok(Err(err)) => {
            process.log(&format!("connection from {peer}: {err}"));
            return;
        }
        Err(_) => {
            process.log(&format!(
                "connection from {peer}: not done after {CONNECTION_TIMEOUT:?}"
            ));
            return;
        }
    }
    let asked = exit.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some((code, request_line)) = asked {
        process.log(&format!(
            "tug-sample: exiting with status {code} as asked by {request_line}"
        ));
        process.exit(code);
    }
}

/// Reads and throws away the body (so that a client waiting on `Expect: 100-continue`
/// gets its interim response, and closing does not reset a client still sending),
/// routes the request and logs it.
async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    state: Arc<State>,
    process: Arc<dyn Process>,
    exit: ExitRequest,
) -> Result<Response<String>, hyper::Error> {
    let (parts, body) = req.into_parts();
    if !discard_body(body).await? {
        process.log(&format!(
            "bad request from {peer}: 413 request body too large"
        ));
        return Ok(response(&Reply::text(413, "request body too large")));
    }
    let checked =
        crate::net::route(parts.method.as_str(), parts.uri.path(), parts.uri.query()).await;
    let (reply, after) = match checked {
        Some(reply) => (reply, After::KeepRunning),
        None => route(
            &state,
            parts.method.as_str(),
            parts.uri.path(),
            parts.uri.query(),
            Instant::now(),
        ),
    };
    let request_line = format!("{} {}", parts.method, parts.uri);
    process.log(&format!("{request_line} {}", reply.status));
    if let After::Exit(code) = after {
        *exit.lock().unwrap_or_else(PoisonError::into_inner) = Some((code, request_line));
    }
    Ok(response(&reply))
}

/// Reads the body to its end; false, without reading, once it is over `MAX_BODY`.
async fn discard_body(mut body: Incoming) -> Result<bool, hyper::Error> {
    if body.size_hint().lower() > MAX_BODY {
        return Ok(false);
    }
    let mut total: u64 = 0;
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        if let Some(data) = frame?.data_ref() {
            total = total.saturating_add(data.len() as u64);
            if total > MAX_BODY {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// The response for `reply`; every one closes the connection. A HEAD request gets
/// the headers a GET would, Content-Length included, and hyper leaves the body out.
fn response(reply: &Reply) -> Response<String> {
    let mut response = Response::new(reply.body.clone());
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    if let Some(allow) = reply.allow {
        headers.insert(ALLOW, HeaderValue::from_static(allow));
    }
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Exits at once on SIGTERM or SIGINT. As PID 1 in a container the process would
/// otherwise ignore them, and every stop would wait out the grace period.
fn exit_on_signals(process: Arc<dyn Process>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            process.log(&format!(
                "tug-sample: cannot handle SIGTERM ({e}); stops will wait for SIGKILL"
            ));
            return;
        }
    };
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        process.log(&format!("tug-sample: exiting on {name}"));
        process.exit(0);
    });
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::args::DEFAULT_LISTEN;

    /// Records log lines and exit requests instead of acting on them.
    struct Recorder {
        lines: Mutex<Vec<String>>,
        exits: tokio::sync::mpsc::UnboundedSender<i32>,
    }

    impl Process for Recorder {
        fn log(&self, line: &str) {
            self.lines.lock().unwrap().push(line.to_string());
        }

        fn exit(&self, code: i32) {
            let _ = self.exits.send(code);
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(5);

    struct Running {
        address: SocketAddr,
        recorder: Arc<Recorder>,
        exits: tokio::sync::mpsc::UnboundedReceiver<i32>,
        server: tokio::task::JoinHandle<()>,
    }

    impl Running {
        fn lines(&self) -> Vec<String> {
            self.recorder.lines.lock().unwrap().clone()
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.server.abort();
        }
    }

    /// Starts `run` on 127.0.0.1:0, stopped when the `Running` is dropped.
    async fn start() -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (send, exits) = tokio::sync::mpsc::unbounded_channel();
        let recorder = Arc::new(Recorder {
            lines: Mutex::new(Vec::new()),
            exits: send,
        });
        let args = ServeArgs {
            listen: DEFAULT_LISTEN,
            exit_after: None,
            exit_code: 0,
            unhealthy_after: None,
            ready_after: None,
            udp: None,
        };
        let identity = Identity {
            hostname: "web-abc".into(),
            pod: Some("web-abc".into()),
            namespace: Some("default".into()),
            greeting: None,
        };
        let state = Arc::new(State::new(Instant::now(), identity, Vec::new(), &args));
        let process: Arc<dyn Process> = recorder.clone();
        let server = tokio::spawn(async move {
            run(listener, state, process).await;
        });
        Running {
            address,
            recorder,
            exits,
            server,
        }
    }

    /// Sends `raw` and reads until the server closes: (status, head, body).
    async fn exchange(address: SocketAddr, raw: &[u8]) -> (u16, String, String) {
        let talk = async {
            let mut stream = TcpStream::connect(address).await.unwrap();
            stream.write_all(raw).await.unwrap();
            let mut out = Vec::new();
            stream.read_to_end(&mut out).await.unwrap();
            out
        };
        let out = tokio::time::timeout(TIMEOUT, talk)
            .await
            .expect("the server answers and closes in time");
        let out = String::from_utf8(out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").expect("a response head");
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
        (status, head.to_string(), body.to_string())
    }

    async fn get(address: SocketAddr, path: &str) -> (u16, String, String) {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: test\r\nUser-Agent: test\r\n\r\n");
        exchange(address, raw.as_bytes()).await
    }

    /// Waits until the log has `line` (it is written as the connection ends).
    async fn logged(server: &Running, line: &str) {
        let wait = async {
            while !server.lines().iter().any(|l| l == line) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        if tokio::time::timeout(TIMEOUT, wait).await.is_err() {
            panic!("{line:?} not logged: {:?}", server.lines());
        }
    }

    #[tokio::test]
    async fn a_real_connection_sees_health_flip_after_fail() {
        let server = start().await;
        let (status, head, body) = get(server.address, "/").await;
        assert_eq!(status, 200);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Type: application/json"), "{head}");
        assert!(head.contains("Connection: close"), "{head}");
        assert!(
            body.starts_with(r#"{"hostname":"web-abc","pod":"web-abc""#),
            "{body}"
        );

        let (status, head, body) = get(server.address, "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok"));
        assert!(
            head.contains("Content-Type: text/plain; charset=utf-8")
                && head.contains("Content-Length: 2"),
            "{head}"
        );
        let (status, _, body) = exchange(
            server.address,
            b"POST /fail HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\n\r\nboom",
        )
        .await;
        assert_eq!((status, body.as_str()), (200, "ok"));
        let (status, _, body) = get(server.address, "/healthz").await;
        assert_eq!((status, body.as_str()), (500, "unhealthy"));

        logged(&server, "GET /healthz 500").await;
        assert!(server.lines().contains(&"POST /fail 200".to_string()));
    }

    #[tokio::test]
    async fn a_real_connection_can_ask_the_process_to_exit() {
        let mut server = start().await;
        let (status, _, body) = exchange(
            server.address,
            b"POST /exit?code=3 HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\n\
              Transfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n",
        )
        .await;
        // The interim 100 Continue comes first; the final response is last.
        assert_eq!(status, 100);
        assert!(
            body.starts_with("HTTP/1.1 200 OK\r\n") && body.ends_with("\r\n\r\nok"),
            "{body}"
        );
        let exit = tokio::time::timeout(TIMEOUT, server.exits.recv()).await;
        assert_eq!(exit, Ok(Some(3)));
        assert_eq!(
            server.lines(),
            [
                "POST /exit?code=3 200",
                "tug-sample: exiting with status 3 as asked by POST /exit?code=3"
            ]
        );
    }

    #[tokio::test]
    async fn a_wrong_method_gets_405_with_allow_and_an_unknown_path_404() {
        let mut server = start().await;
        let (status, head, body) = get(server.address, "/crash").await;
        assert_eq!(
            (status, body.as_str()),
            (405, "method not allowed: use POST")
        );
        assert!(head.contains("Allow: POST\r\n"), "{head}");
        let (status, _, body) = get(server.address, "/nope").await;
        assert_eq!((status, body.as_str()), (404, "not found"));
        assert!(server.exits.try_recv().is_err(), "GET /crash exits nothing");
    }

    #[tokio::test]
    async fn a_real_connection_with_garbage_gets_400_and_a_head_request_no_body() {
        let server = start().await;
        let (status, _, _) = exchange(server.address, b"\x16\x03\x01 garbage\r\n\r\n").await;
        assert_eq!(status, 400);
        let (status, head, body) = exchange(server.address, b"HEAD /ready HTTP/1.0\r\n\r\n").await;
        assert_eq!((status, body.as_str()), (200, ""));
        assert!(head.contains("Content-Length: 5"), "{head}");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_gets_413() {
        let server = start().await;
        let raw = format!(
            "POST /fail HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        let (status, _, body) = exchange(server.address, raw.as_bytes()).await;
        assert_eq!((status, body.as_str()), (413, "request body too large"));
        let (status, _, _) = get(server.address, "/healthz").await;
        assert_eq!(status, 200, "the body was refused, POST /fail not run");
    }

    #[tokio::test]
    async fn a_head_too_large_gets_431() {
        let server = start().await;
        let raw = format!(
            "GET / HTTP/1.1\r\nHost: test\r\nA: {}\r\n\r\n",
            "a".repeat(MAX_HEAD)
        );
        let (status, _, _) = exchange(server.address, raw.as_bytes()).await;
        assert_eq!(status, 431);
    }

    #[tokio::test]
    async fn a_connection_closed_without_a_request_is_not_logged() {
        let server = start().await;
        drop(TcpStream::connect(server.address).await.unwrap());
        // A request after it proves the server is still serving.
        assert_eq!(get(server.address, "/ready").await.0, 200);
        logged(&server, "GET /ready 200").await;
        assert_eq!(server.lines(), ["GET /ready 200"]);
    }
}
