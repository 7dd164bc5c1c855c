//! The test server: what it knows about itself (`State`: identity, environment, health
//! and readiness), the routes answering from it, and the accept loop running one thread
//! per connection, at most `MAX_CONNECTIONS` at once.
//!
//! Logging and exiting go through `Process`, so tests run the same server in-process
//! and see its log lines and exit requests instead of losing the test binary.
//!
//! Signals: std cannot install a signal handler (and `unsafe` is forbidden), so as PID 1
//! in a container the process ignores SIGTERM and a stop waits out the grace period
//! before SIGKILL. A handler would start a thread here in `serve` that calls
//! `process.exit(0)`; until then `POST /exit` or an init (`docker run --init`) stops it
//! fast.

use std::convert::Infallible;
use std::io::{self, BufReader, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::args::ServeArgs;
use crate::http::{self, Request, RequestError, Response};
use crate::json;

/// Connections served at once; the next waits in the listen backlog.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a client may take to send its request, and to take the response.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the client to close after the response, draining what it sends.
const LINGER: Duration = Duration::from_secs(1);
/// How much to drain after the response before closing anyway.
const MAX_LINGER_BYTES: u64 = 64 * 1024;
const THREAD_STACK: usize = 256 * 1024;

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

/// Who this server is, as `GET /` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub hostname: String,
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub greeting: Option<String>,
}

impl Identity {
    /// The identity from the real environment and files.
    pub fn from_process() -> Self {
        Self::resolve(
            |name| std::env::var(name).ok(),
            |path| std::fs::read_to_string(path).ok(),
        )
    }

    /// Looks the identity up through `env` and `read_file`; empty values count as
    /// absent. The hostname comes from /etc/hostname (which Docker writes), then
    /// `HOSTNAME`, then the kernel's.
    pub fn resolve(
        env: impl Fn(&str) -> Option<String>,
        read_file: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let present = |value: Option<String>| {
            value
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let from_env = |names: &[&str]| names.iter().find_map(|name| present(env(name)));
        let hostname = present(read_file("/etc/hostname"))
            .or_else(|| from_env(&["HOSTNAME"]))
            .or_else(|| present(read_file("/proc/sys/kernel/hostname")))
            .unwrap_or_else(|| "unknown".to_string());
        Identity {
            hostname,
            pod: from_env(&["POD_NAME", "TUG_POD_NAME"]),
            namespace: from_env(&["POD_NAMESPACE", "TUG_POD_NAMESPACE"]),
            // The greeting is shown as given, spaces and all.
            greeting: env("GREETING").filter(|v| !v.is_empty()),
        }
    }

    /// How the start-up line names this server.
    fn label(&self) -> String {
        match &self.pod {
            Some(pod) => format!("pod {pod}"),
            None => format!("hostname {}", self.hostname),
        }
    }
}

/// The process environment as sorted `KEY=VALUE` pairs; names or values that are not
/// UTF-8 are kept lossily rather than panicking as `std::env::vars` would.
pub fn environment() -> Vec<(String, String)> {
    let mut vars: Vec<_> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    vars.sort();
    vars
}

/// Everything the routes answer from.
#[derive(Debug)]
pub struct State {
    started: Instant,
    identity: Identity,
    environment: Vec<(String, String)>,
    unhealthy_after: Option<Duration>,
    ready_after: Option<Duration>,
    /// Set by `POST /fail`; never cleared.
    failed: AtomicBool,
}

impl State {
    pub fn new(
        started: Instant,
        identity: Identity,
        environment: Vec<(String, String)>,
        args: &ServeArgs,
    ) -> Self {
        State {
            started,
            identity,
            environment,
            unhealthy_after: args.unhealthy_after,
            ready_after: args.ready_after,
            failed: AtomicBool::new(false),
        }
    }

    fn uptime(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    fn healthy(&self, now: Instant) -> bool {
        !self.failed.load(Ordering::Relaxed)
            && self
                .unhealthy_after
                .is_none_or(|after| self.uptime(now) < after)
    }

    fn ready(&self, now: Instant) -> bool {
        self.ready_after
            .is_none_or(|after| self.uptime(now) >= after)
    }

    fn describe(&self, now: Instant) -> String {
        let id = &self.identity;
        format!(
            r#"{{"hostname":{},"pod":{},"namespace":{},"uptime_seconds":{},"greeting":{}}}"#,
            json::string(&id.hostname),
            json::string_or_null(id.pod.as_deref()),
            json::string_or_null(id.namespace.as_deref()),
            self.uptime(now).as_secs(),
            json::string_or_null(id.greeting.as_deref()),
        )
    }

    fn environment_text(&self) -> String {
        self.environment
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect()
    }
}

/// What to do once the response is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    KeepRunning,
    Exit(i32),
}

/// Answers `req` at time `now`. HEAD is answered as GET (the body is left out when
/// written); a known path with the wrong method gets 405 naming the right one.
pub fn route(state: &State, req: &Request, now: Instant) -> (Response, After) {
    let get = matches!(req.method.as_str(), "GET" | "HEAD");
    let post = req.method == "POST";
    let keep = |response| (response, After::KeepRunning);
    match req.path.as_str() {
        "/" if get => keep(Response::json(200, state.describe(now))),
        "/healthz" if get => keep(if state.healthy(now) {
            Response::text(200, "ok")
        } else {
            Response::text(500, "unhealthy")
        }),
        "/ready" if get => keep(if state.ready(now) {
            Response::text(200, "ready")
        } else {
            Response::text(503, "not ready")
        }),
        "/env" if get => keep(Response::text(200, state.environment_text())),
        "/fail" if post => {
            state.failed.store(true, Ordering::Relaxed);
            keep(Response::text(200, "ok"))
        }
        "/crash" if post => (Response::text(200, "ok"), After::Exit(1)),
        "/exit" if post => match req.query_param("code").map(str::parse::<u8>) {
            None => (Response::text(200, "ok"), After::Exit(0)),
            Some(Ok(code)) => (Response::text(200, "ok"), After::Exit(code.into())),
            Some(Err(_)) => keep(Response::text(
                400,
                "query parameter code: expected an exit status, 0-255",
            )),
        },
        "/" | "/healthz" | "/ready" | "/env" => keep(
            Response::text(405, "method not allowed: use GET").with_header("Allow", "GET, HEAD"),
        ),
        "/fail" | "/crash" | "/exit" => {
            keep(Response::text(405, "method not allowed: use POST").with_header("Allow", "POST"))
        }
        _ => keep(Response::text(404, "not found")),
    }
}

/// Binds `args.listen`, prints the start-up line, arms `--exit-after` and serves until
/// the process exits. Returns only if it cannot listen.
pub fn serve(args: ServeArgs) -> io::Result<Infallible> {
    let started = Instant::now();
    let listener = TcpListener::bind(args.listen).map_err(|err| {
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
        state.identity.label()
    ));
    exit_on_signals(process.clone());
    if let Some(after) = args.exit_after {
        let process = process.clone();
        let code = args.exit_code;
        thread::Builder::new()
            .name("exit-after".into())
            .spawn(move || {
                thread::sleep(after);
                process.log(&format!(
                    "tug-sample: exiting with status {code} after {after:?} (--exit-after)"
                ));
                process.exit(code.into());
            })?;
    }
    run(listener, state, process)
}

/// Accepts connections forever, each served on its own thread.
pub fn run(listener: TcpListener, state: Arc<State>, process: Arc<dyn Process>) -> ! {
    let slots = Arc::new(Slots::new(MAX_CONNECTIONS));
    loop {
        let slot = slots.acquire();
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, or a connection reset before it was taken:
                // pause instead of spinning, and keep serving.
                process.log(&format!("tug-sample: accepting a connection failed: {err}"));
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let (state, process_for_thread) = (state.clone(), process.clone());
        let spawned = thread::Builder::new()
            .name("connection".into())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let _slot = slot;
                handle(&stream, peer, &state, &*process_for_thread);
            });
        if let Err(err) = spawned {
            process.log(&format!(
                "tug-sample: no thread for the connection from {peer}: {err}"
            ));
        }
    }
}

/// Serves one request on `stream`, then closes it.
fn handle(stream: &TcpStream, peer: SocketAddr, state: &State, process: &dyn Process) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream);
    let mut writer = stream;

    let (response, with_body, after, request_line) = match read_request(&mut reader, &mut writer) {
        Ok(req) => {
            let (response, after) = route(state, &req, Instant::now());
            let request_line = format!("{} {}", req.method, req.target);
            process.log(&format!("{request_line} {}", response.status));
            (response, req.method != "HEAD", after, request_line)
        }
        // A TCP probe, or a client that gave up: nothing to answer or log.
        Err(RequestError::Closed) => return,
        Err(RequestError::Io(err)) => {
            process.log(&format!("connection from {peer}: {err}"));
            return;
        }
        Err(RequestError::Invalid { status, reason }) => {
            process.log(&format!("bad request from {peer}: {status} {reason}"));
            let response = Response::text(status, reason);
            (response, true, After::KeepRunning, String::new())
        }
    };

    if let Err(err) = response.write_to(&mut writer, with_body) {
        process.log(&format!(
            "connection from {peer}: writing the response: {err}"
        ));
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    if let After::Exit(code) = after {
        process.log(&format!(
            "tug-sample: exiting with status {code} as asked by {request_line}"
        ));
        process.exit(code);
    }
    // Read until the client closes, so that bytes it sent and we did not read (after a
    // 4xx) do not turn our close into a reset that loses the response.
    let _ = stream.set_read_timeout(Some(LINGER));
    let _ = io::copy(&mut reader.take(MAX_LINGER_BYTES), &mut io::sink());
}

fn read_request(
    reader: &mut BufReader<&TcpStream>,
    writer: &mut &TcpStream,
) -> Result<Request, RequestError> {
    let req = http::read_head(reader)?;
    if req.expects_continue() {
        http::write_continue(writer)?;
    }
    http::discard_body(reader, req.body)?;
    Ok(req)
}

/// A counting semaphore: a slot per connection being served.
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Slots {
    fn new(count: usize) -> Self {
        Slots {
            free: Mutex::new(count),
            freed: Condvar::new(),
        }
    }

    /// Waits for a free slot and takes it; dropping the `Slot` frees it.
    fn acquire(self: &Arc<Self>) -> Slot {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free == 0 {
            free = self
                .freed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        Slot(self.clone())
    }
}

struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.0.freed.notify_one();
    }
}

/// Exits at once on SIGTERM or SIGINT. As PID 1 in a container the process would
/// otherwise ignore them, and every stop would wait out the grace period.
fn exit_on_signals(process: Arc<dyn Process>) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            process.log(&format!(
                "tug-sample: cannot handle SIGTERM ({e}); stops will wait for SIGKILL"
            ));
            return;
        }
    };
    let spawned = thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let name = if signal == SIGTERM {
                    "SIGTERM"
                } else {
                    "SIGINT"
                };
                process.log(&format!("tug-sample: exiting on {name}"));
                process.exit(0);
            }
        });
    if let Err(e) = spawned {
        eprintln!("tug-sample: cannot start the signal thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::DEFAULT_LISTEN;
    use std::sync::mpsc;

    fn args() -> ServeArgs {
        ServeArgs {
            listen: DEFAULT_LISTEN,
            exit_after: None,
            exit_code: 0,
            unhealthy_after: None,
            ready_after: None,
        }
    }

    fn identity() -> Identity {
        Identity {
            hostname: "web-abc".into(),
            pod: Some("web-abc".into()),
            namespace: Some("default".into()),
            greeting: Some("say \"hi\"".into()),
        }
    }

    fn state_with(args: &ServeArgs) -> (State, Instant) {
        let started = Instant::now();
        let environment = vec![("A".into(), "1".into()), ("B".into(), "x=y".into())];
        (State::new(started, identity(), environment, args), started)
    }

    fn request(method: &str, target: &str) -> Request {
        let raw = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n\r\n");
        http::read_head(&mut raw.as_bytes()).expect("a valid test request")
    }

    fn answer(state: &State, method: &str, target: &str, now: Instant) -> (u16, String, After) {
        let (response, after) = route(state, &request(method, target), now);
        let body = String::from_utf8(response.body).unwrap();
        (response.status, body, after)
    }

    #[test]
    fn root_describes_the_pod_as_json() {
        let (state, started) = state_with(&args());
        let (status, body, _) = answer(&state, "GET", "/", started + Duration::from_secs(42));
        assert_eq!(status, 200);
        assert_eq!(
            body,
            r#"{"hostname":"web-abc","pod":"web-abc","namespace":"default","uptime_seconds":42,"greeting":"say \"hi\""}"#
        );
    }

    #[test]
    fn root_shows_null_for_what_is_not_set() {
        let (mut state, started) = state_with(&args());
        state.identity = Identity {
            hostname: "h".into(),
            pod: None,
            namespace: None,
            greeting: None,
        };
        let (_, body, _) = answer(&state, "GET", "/", started);
        assert_eq!(
            body,
            r#"{"hostname":"h","pod":null,"namespace":null,"uptime_seconds":0,"greeting":null}"#
        );
    }

    #[test]
    fn healthz_turns_unhealthy_after_fail_and_stays_so() {
        let (state, now) = state_with(&args());
        assert_eq!(answer(&state, "GET", "/healthz", now).0, 200);
        let (status, body, after) = answer(&state, "POST", "/fail", now);
        assert_eq!(
            (status, body.as_str(), after),
            (200, "ok", After::KeepRunning)
        );
        let (status, body, _) = answer(&state, "GET", "/healthz", now);
        assert_eq!((status, body.as_str()), (500, "unhealthy"));
        assert_eq!(
            answer(&state, "GET", "/healthz", now + Duration::from_secs(60)).0,
            500
        );
    }

    #[test]
    fn healthz_turns_unhealthy_after_the_given_time() {
        let (state, started) = state_with(&ServeArgs {
            unhealthy_after: Some(Duration::from_millis(1500)),
            ..args()
        });
        assert_eq!(
            answer(&state, "GET", "/healthz", started + Duration::from_secs(1)).0,
            200
        );
        assert_eq!(
            answer(&state, "GET", "/healthz", started + Duration::from_secs(2)).0,
            500
        );
    }

    #[test]
    fn ready_at_once_by_default() {
        let (state, started) = state_with(&args());
        let (status, body, _) = answer(&state, "GET", "/ready", started);
        assert_eq!((status, body.as_str()), (200, "ready"));
    }

    #[test]
    fn ready_only_after_ready_after() {
        let (state, started) = state_with(&ServeArgs {
            ready_after: Some(Duration::from_millis(500)),
            ..args()
        });
        let (status, body, _) = answer(&state, "GET", "/ready", started);
        assert_eq!((status, body.as_str()), (503, "not ready"));
        assert_eq!(
            answer(
                &state,
                "GET",
                "/ready",
                started + Duration::from_millis(499)
            )
            .0,
            503
        );
        assert_eq!(
            answer(
                &state,
                "GET",
                "/ready",
                started + Duration::from_millis(500)
            )
            .0,
            200
        );
    }

    #[test]
    fn a_huge_delay_never_overflows() {
        let (state, started) = state_with(&ServeArgs {
            ready_after: Some(Duration::MAX),
            unhealthy_after: Some(Duration::MAX),
            ..args()
        });
        assert_eq!(answer(&state, "GET", "/ready", started).0, 503);
        assert_eq!(answer(&state, "GET", "/healthz", started).0, 200);
    }

    #[test]
    fn env_lists_the_environment_as_lines() {
        let (state, now) = state_with(&args());
        let (status, body, _) = answer(&state, "GET", "/env", now);
        assert_eq!((status, body.as_str()), (200, "A=1\nB=x=y\n"));
    }

    #[test]
    fn crash_answers_then_exits_with_one() {
        let (state, now) = state_with(&args());
        let (status, _, after) = answer(&state, "POST", "/crash", now);
        assert_eq!((status, after), (200, After::Exit(1)));
    }

    #[test]
    fn exit_takes_its_code_from_the_query() {
        let (state, now) = state_with(&args());
        assert_eq!(answer(&state, "POST", "/exit", now).2, After::Exit(0));
        assert_eq!(
            answer(&state, "POST", "/exit?code=7", now).2,
            After::Exit(7)
        );
        let (status, body, after) = answer(&state, "POST", "/exit?code=300", now);
        assert_eq!((status, after), (400, After::KeepRunning));
        assert!(body.contains("code"), "{body}");
    }

    #[test]
    fn head_is_answered_like_get() {
        let (state, now) = state_with(&args());
        assert_eq!(answer(&state, "HEAD", "/healthz", now).0, 200);
    }

    #[test]
    fn unknown_paths_are_not_found() {
        let (state, now) = state_with(&args());
        for (method, target) in [("GET", "/nope"), ("POST", "/"), ("GET", "/healthz/")] {
            let expected = if target == "/" { 405 } else { 404 };
            assert_eq!(
                answer(&state, method, target, now).0,
                expected,
                "{method} {target}"
            );
        }
    }

    #[test]
    fn the_wrong_method_names_the_right_one() {
        let (state, now) = state_with(&args());
        let (response, _) = route(&state, &request("GET", "/fail"), now);
        assert_eq!(response.status, 405);
        assert!(response.headers.contains(&("Allow", "POST".to_string())));
        let (response, _) = route(&state, &request("DELETE", "/healthz"), now);
        assert!(
            response
                .headers
                .contains(&("Allow", "GET, HEAD".to_string()))
        );
        assert_eq!(
            answer(&state, "GET", "/healthz", now).0,
            200,
            "a 405 changes nothing"
        );
    }

    #[test]
    fn the_hostname_comes_from_etc_hostname_then_the_environment_then_the_kernel() {
        let files = |etc: Option<&str>| {
            let etc = etc.map(str::to_string);
            move |path: &str| match path {
                "/etc/hostname" => etc.clone(),
                "/proc/sys/kernel/hostname" => Some("kernel\n".to_string()),
                _ => None,
            }
        };
        let env = |name: &str| (name == "HOSTNAME").then(|| "from-env".to_string());
        assert_eq!(Identity::resolve(env, files(Some("etc\n"))).hostname, "etc");
        assert_eq!(
            Identity::resolve(env, files(Some("\n"))).hostname,
            "from-env"
        );
        assert_eq!(Identity::resolve(|_| None, files(None)).hostname, "kernel");
        assert_eq!(Identity::resolve(|_| None, |_| None).hostname, "unknown");
    }

    #[test]
    fn pod_and_namespace_fall_back_to_the_tug_names() {
        let env = |name: &str| match name {
            "TUG_POD_NAME" => Some("web-1".to_string()),
            "POD_NAMESPACE" => Some("team".to_string()),
            "TUG_POD_NAMESPACE" => Some("ignored".to_string()),
            "POD_NAME" | "GREETING" => Some(String::new()),
            _ => None,
        };
        let id = Identity::resolve(env, |_| None);
        assert_eq!(id.pod.as_deref(), Some("web-1"));
        assert_eq!(id.namespace.as_deref(), Some("team"));
        assert_eq!(id.greeting, None);
    }

    #[test]
    fn slots_are_given_back_when_dropped() {
        let slots = Arc::new(Slots::new(1));
        drop(slots.acquire());
        let held = slots.acquire();
        assert_eq!(*slots.free.lock().unwrap(), 0);
        drop(held);
        assert_eq!(*slots.free.lock().unwrap(), 1);
    }

    /// Records log lines and exit requests instead of acting on them.
    struct Recorder {
        lines: Mutex<Vec<String>>,
        exits: Mutex<mpsc::Sender<i32>>,
    }

    impl Process for Recorder {
        fn log(&self, line: &str) {
            self.lines.lock().unwrap().push(line.to_string());
        }

        fn exit(&self, code: i32) {
            let _ = self.exits.lock().unwrap().send(code);
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(5);

    struct Running {
        address: SocketAddr,
        recorder: Arc<Recorder>,
        exits: mpsc::Receiver<i32>,
    }

    /// Starts `run` on 127.0.0.1:0 on a thread that lives as long as the test binary.
    fn start() -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let (send, exits) = mpsc::channel();
        let recorder = Arc::new(Recorder {
            lines: Mutex::new(Vec::new()),
            exits: Mutex::new(send),
        });
        let (state, _) = state_with(&args());
        let process: Arc<dyn Process> = recorder.clone();
        thread::spawn(move || run(listener, Arc::new(state), process));
        Running {
            address,
            recorder,
            exits,
        }
    }

    /// Sends `raw` and reads until the server closes: (status, head, body).
    fn exchange(address: SocketAddr, raw: &[u8]) -> (u16, String, String) {
        let mut stream = TcpStream::connect_timeout(&address, TIMEOUT).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        stream.write_all(raw).unwrap();
        let mut out = Vec::new();
        stream
            .read_to_end(&mut out)
            .expect("the server closes in time");
        let out = String::from_utf8(out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").expect("a response head");
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
        (status, head.to_string(), body.to_string())
    }

    fn get(address: SocketAddr, path: &str) -> (u16, String, String) {
        exchange(
            address,
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nUser-Agent: test\r\n\r\n").as_bytes(),
        )
    }

    #[test]
    fn a_real_connection_sees_health_flip_after_fail() {
        let server = start();
        let (status, head, body) = get(server.address, "/");
        assert_eq!(status, 200);
        assert!(head.contains("Content-Type: application/json"), "{head}");
        assert!(
            body.starts_with(r#"{"hostname":"web-abc","pod":"web-abc""#),
            "{body}"
        );

        let (status, _, body) = get(server.address, "/healthz");
        assert_eq!((status, body.as_str()), (200, "ok"));
        let (status, _, body) = exchange(
            server.address,
            b"POST /fail HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\n\r\nboom",
        );
        assert_eq!((status, body.as_str()), (200, "ok"));
        let (status, _, body) = get(server.address, "/healthz");
        assert_eq!((status, body.as_str()), (500, "unhealthy"));

        let lines = server.recorder.lines.lock().unwrap().clone();
        assert!(lines.contains(&"POST /fail 200".to_string()), "{lines:?}");
        assert!(lines.contains(&"GET /healthz 500".to_string()), "{lines:?}");
    }

    #[test]
    fn a_real_connection_can_ask_the_process_to_exit() {
        let server = start();
        let (status, _, body) = exchange(
            server.address,
            b"POST /exit?code=3 HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\n\
              Transfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n",
        );
        // The interim 100 Continue comes first; the final response is last.
        assert_eq!(status, 100);
        assert!(
            body.starts_with("HTTP/1.1 200 OK\r\n") && body.ends_with("\r\n\r\nok"),
            "{body}"
        );
        assert_eq!(server.exits.recv_timeout(TIMEOUT), Ok(3));
        let lines = server.recorder.lines.lock().unwrap().clone();
        assert_eq!(
            lines,
            [
                "POST /exit?code=3 200",
                "tug-sample: exiting with status 3 as asked by POST /exit?code=3"
            ]
        );
    }

    #[test]
    fn a_real_connection_with_garbage_gets_400_and_a_head_request_no_body() {
        let server = start();
        let (status, _, _) = exchange(server.address, b"\x16\x03\x01 garbage\r\n\r\n");
        assert_eq!(status, 400);
        let (status, head, body) = exchange(server.address, b"HEAD /ready HTTP/1.0\r\n\r\n");
        assert_eq!((status, body.as_str()), (200, ""));
        assert!(head.contains("Content-Length: 5"), "{head}");
    }

    #[test]
    fn a_connection_closed_without_a_request_is_not_logged() {
        let server = start();
        drop(TcpStream::connect_timeout(&server.address, TIMEOUT).unwrap());
        // A request after it proves the server is still serving.
        assert_eq!(get(server.address, "/ready").0, 200);
        let lines = server.recorder.lines.lock().unwrap().clone();
        assert_eq!(lines, ["GET /ready 200"]);
    }
}
