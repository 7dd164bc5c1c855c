//! What the server knows about itself (`State`: identity, environment, health and
//! readiness) and the routes answering from it: a pure function from method, path and
//! query to a `Reply` and what to do after it, so tests need no socket.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::args::ServeArgs;

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
    pub fn label(&self) -> String {
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

/// The body of `GET /`, fields in this order.
#[derive(Serialize)]
struct Description<'a> {
    hostname: &'a str,
    pod: Option<&'a str>,
    namespace: Option<&'a str>,
    uptime_seconds: u64,
    greeting: Option<&'a str>,
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
    /// Set by `POST /unready`, cleared by `POST /ready`.
    unready: AtomicBool,
    /// `POST /burn`'s threads.
    burners: crate::burn::Burners,
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
            unready: AtomicBool::new(false),
            burners: Default::default(),
        }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
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
        !self.unready.load(Ordering::Relaxed)
            && self
                .ready_after
                .is_none_or(|after| self.uptime(now) >= after)
    }

    fn describe(&self, now: Instant) -> String {
        let id = &self.identity;
        let description = Description {
            hostname: &id.hostname,
            pod: id.pod.as_deref(),
            namespace: id.namespace.as_deref(),
            uptime_seconds: self.uptime(now).as_secs(),
            greeting: id.greeting.as_deref(),
        };
        serde_json::to_string(&description).expect("strings and a number always serialize")
    }

    fn environment_text(&self) -> String {
        self.environment
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect()
    }
}

/// A response: status, `Content-Type`, the `Allow` header of a 405, and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub allow: Option<&'static str>,
    pub body: String,
}

impl Reply {
    pub const TEXT: &'static str = "text/plain; charset=utf-8";
    pub const JSON: &'static str = "application/json";

    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Reply {
            status,
            content_type: Self::TEXT,
            allow: None,
            body: body.into(),
        }
    }

    fn json(body: String) -> Self {
        Reply {
            content_type: Self::JSON,
            ..Self::text(200, body)
        }
    }

    fn not_allowed(right: &'static str, allow: &'static str) -> Self {
        Reply {
            allow: Some(allow),
            ..Self::text(405, format!("method not allowed: use {right}"))
        }
    }
}

/// What to do once the response is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    KeepRunning,
    Exit(i32),
}

/// Answers `method path?query` at time `now`. HEAD is answered as GET (the server
/// leaves the body out); a known path with the wrong method gets 405 naming the right
/// one.
pub fn route(
    state: &State,
    method: &str,
    path: &str,
    query: Option<&str>,
    now: Instant,
) -> (Reply, After) {
    let get = matches!(method, "GET" | "HEAD");
    let post = method == "POST";
    let keep = |reply| (reply, After::KeepRunning);
    match path {
        "/" if get => keep(Reply::json(state.describe(now))),
        "/healthz" if get => keep(if state.healthy(now) {
            Reply::text(200, "ok")
        } else {
            Reply::text(500, "unhealthy")
        }),
        "/ready" if get => keep(if state.ready(now) {
            Reply::text(200, "ready")
        } else {
            Reply::text(503, "not ready")
        }),
        "/env" if get => keep(Reply::text(200, state.environment_text())),
        "/fail" if post => {
            state.failed.store(true, Ordering::Relaxed);
            keep(Reply::text(200, "ok"))
        }
        "/unready" if post => {
            state.unready.store(true, Ordering::Relaxed);
            keep(Reply::text(200, "ok"))
        }
        "/ready" if post => {
            state.unready.store(false, Ordering::Relaxed);
            keep(Reply::text(200, "ok"))
        }
        "/burn" if post => keep(match state.burners.start(query) {
            Ok(text) => Reply::text(200, text),
            Err((status, message)) => Reply::text(status, message),
        }),
        "/crash" if post => (Reply::text(200, "ok"), After::Exit(1)),
        "/exit" if post => match query_param(query, "code").map(str::parse::<u8>) {
            None => (Reply::text(200, "ok"), After::Exit(0)),
            Some(Ok(code)) => (Reply::text(200, "ok"), After::Exit(code.into())),
            Some(Err(_)) => keep(Reply::text(
                400,
                "query parameter code: expected an exit status, 0-255",
            )),
        },
        "/ready" => keep(Reply::not_allowed("GET", "GET, HEAD, POST")),
        "/" | "/healthz" | "/env" => keep(Reply::not_allowed("GET", "GET, HEAD")),
        "/fail" | "/unready" | "/crash" | "/exit" | "/burn" => {
            keep(Reply::not_allowed("POST", "POST"))
        }
        _ => keep(Reply::text(404, "not found")),
    }
}

/// The value of `key` in the query string (`a=1&key=2`), as sent: not percent-decoded,
/// so `code=%37` is not a number.
pub fn query_param<'q>(query: Option<&'q str>, key: &str) -> Option<&'q str> {
    query?
        .split('&')
        .find_map(|pair| match pair.split_once('=') {
            Some((k, v)) if k == key => Some(v),
            None if pair == key => Some(""),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::DEFAULT_LISTEN;

    pub(crate) fn args() -> ServeArgs {
        ServeArgs {
            listen: DEFAULT_LISTEN,
            exit_after: None,
            exit_code: 0,
            unhealthy_after: None,
            ready_after: None,
            udp: None,
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

    pub(crate) fn state_with(args: &ServeArgs) -> (State, Instant) {
        let started = Instant::now();
        let environment = vec![("A".into(), "1".into()), ("B".into(), "x=y".into())];
        (State::new(started, identity(), environment, args), started)
    }

    fn answer(state: &State, method: &str, target: &str, now: Instant) -> (u16, String, After) {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let (reply, after) = route(state, method, path, query, now);
        (reply.status, reply.body, after)
    }

    #[test]
    fn root_describes_the_pod_as_json() {
        let (state, started) = state_with(&args());
        let (reply, _) = route(&state, "GET", "/", None, started + Duration::from_secs(42));
        assert_eq!((reply.status, reply.content_type), (200, Reply::JSON));
        assert_eq!(
            reply.body,
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
    fn root_escapes_what_json_requires() {
        let (mut state, started) = state_with(&args());
        state.identity.greeting = Some("a\nb\\c\u{0}d\u{1f}é ⛴".into());
        let (_, body, _) = answer(&state, "GET", "/", started);
        assert!(
            body.ends_with(r#""greeting":"a\nb\\c\u0000d\u001fé ⛴"}"#),
            "{body}"
        );
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["greeting"], "a\nb\\c\u{0}d\u{1f}é ⛴");
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
    fn unready_holds_until_ready_is_posted() {
        let (state, started) = state_with(&args());
        assert_eq!(answer(&state, "POST", "/unready", started).0, 200);
        assert_eq!(answer(&state, "GET", "/ready", started).0, 503);
        assert_eq!(answer(&state, "GET", "/healthz", started).0, 200);
        assert_eq!(answer(&state, "POST", "/ready", started).0, 200);
        assert_eq!(answer(&state, "GET", "/ready", started).0, 200);
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
        let at = |ms| started + Duration::from_millis(ms);
        assert_eq!(answer(&state, "GET", "/ready", at(499)).0, 503);
        assert_eq!(answer(&state, "GET", "/ready", at(500)).0, 200);
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
        assert_eq!(
            answer(&state, "POST", "/exit?a=1&code=255", now).2,
            After::Exit(255)
        );
        for bad in ["/exit?code=300", "/exit?code=%37", "/exit?code"] {
            let (status, body, after) = answer(&state, "POST", bad, now);
            assert_eq!((status, after), (400, After::KeepRunning), "{bad}");
            assert!(body.contains("code"), "{body}");
        }
    }

    #[test]
    fn query_parameters_are_found_by_key() {
        let query = Some("a=1&code=3&flag");
        assert_eq!(query_param(query, "code"), Some("3"));
        assert_eq!(query_param(query, "flag"), Some(""));
        assert_eq!(query_param(query, "missing"), None);
        assert_eq!(query_param(None, "code"), None);
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
        let (status, body, _) = answer(&state, "GET", "/nope", now);
        assert_eq!((status, body.as_str()), (404, "not found"));
    }

    #[test]
    fn the_wrong_method_names_the_right_one() {
        let (state, now) = state_with(&args());
        let (reply, _) = route(&state, "GET", "/fail", None, now);
        assert_eq!(
            (reply.status, reply.allow, reply.body.as_str()),
            (405, Some("POST"), "method not allowed: use POST")
        );
        let (reply, _) = route(&state, "DELETE", "/healthz", None, now);
        assert_eq!(
            (reply.status, reply.allow, reply.body.as_str()),
            (405, Some("GET, HEAD"), "method not allowed: use GET")
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
        assert_eq!(id.label(), "pod web-1");
    }
}
