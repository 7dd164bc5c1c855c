//! Probes, as a kubelet runs them: `startupProbe` holds the others back until it
//! passes; `livenessProbe` failing `failureThreshold` times in a row asks for the
//! container to be killed and restarted; `readinessProbe` decides whether the
//! container counts as ready. Handlers: `httpGet` (path, port by number or name,
//! headers; 200–399 passes), `tcpSocket` and `exec` (through Docker exec). They reach
//! the container at its IP on the Docker network, as a kubelet reaches the pod IP.
//!
//! What the probes found is a plain [`ProbeState`] the pod's worker reads; a change
//! is signalled on a [`Notify`], so this module knows nothing of the worker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::runtime::ContainerRuntime;

/// What the probes of one container instance have found so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeState {
    /// The startup probe passed (or there is none).
    pub started: bool,
    /// The readiness probe passes (or there is none, once started).
    pub ready: bool,
    /// Why the container must be restarted (liveness or startup probe failed).
    pub kill: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// A failed probe to report as an `Unhealthy` event.
#[derive(Clone, Debug)]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
}

/// The probes of one running container instance; dropped (and stopped) when the
/// container is replaced.
pub struct Prober {
    pub container_id: String,
    pub state: Arc<Mutex<ProbeState>>,
    pub failures: Arc<Mutex<Vec<Failure>>>,
    stop: CancellationToken,
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub fn has_probes(c: &Container) -> bool {
    c.startup_probe.is_some() || c.liveness_probe.is_some() || c.readiness_probe.is_some()
}

/// Everything a probe needs to reach its container.
#[derive(Clone)]
pub struct Target {
    pub container: Container,
    pub container_id: String,
    pub ip: Option<String>,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub http: reqwest::Client,
}

impl Prober {
    /// Starts the probe loops on `tracker`; `changed` is notified when the state
    /// changes. The loops end when the prober is dropped.
    pub fn start(target: Target, changed: Arc<Notify>, tracker: &TaskTracker) -> Prober {
        let c = &target.container;
        let state = Arc::new(Mutex::new(ProbeState {
            started: c.startup_probe.is_none(),
            ready: c.readiness_probe.is_none() && c.startup_probe.is_none(),
            kill: None,
        }));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let prober = Prober {
            container_id: target.container_id.clone(),
            state: state.clone(),
            failures: failures.clone(),
            stop: stop.clone(),
        };
        tracker.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = run(target, state, failures, changed) => {}
            }
        });
        prober
    }

    pub fn state(&self) -> ProbeState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The failures since the last call, to record as events.
    pub fn take_failures(&self) -> Vec<Failure> {
        std::mem::take(&mut *self.failures.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(u64::try_from(v.unwrap_or(default).max(0)).unwrap_or(0))
}

async fn run(
    target: Target,
    state: Arc<Mutex<ProbeState>>,
    failures: Arc<Mutex<Vec<Failure>>>,
    changed: Arc<Notify>,
) {
    let c = target.container.clone();
    let set = |f: &dyn Fn(&mut ProbeState)| {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let before = s.clone();
        f(&mut s);
        *s != before
    };
    if let Some(p) = &c.startup_probe {
        match probe_until(&target, p, Kind::Startup, &failures).await {
            Verdict::Passed => {
                if set(&|s| {
                    s.started = true;
                    if c.readiness_probe.is_none() {
                        s.ready = true;
                    }
                }) {
                    changed.notify_one();
                }
            }
            Verdict::Failed(why) => {
                set(&|s| {
                    s.kill = Some(format!(
                        "Container {} failed startup probe, will be restarted ({why})",
                        c.name
                    ))
                });
                changed.notify_one();
                return;
            }
        }
    }
    let liveness = async {
        if let Some(p) = &c.liveness_probe {
            if let Verdict::Failed(why) = probe_until(&target, p, Kind::Liveness, &failures).await {
                set(&|s| {
                    s.kill = Some(format!(
                        "Container {} failed liveness probe, will be restarted ({why})",
                        c.name
                    ))
                });
                changed.notify_one();
            }
        } else {
            futures::future::pending::<()>().await;
        }
    };
    let readiness = async {
        let Some(p) = &c.readiness_probe else {
            return futures::future::pending::<()>().await;
        };
        tokio::time::sleep(secs(p.initial_delay_seconds, 0)).await;
        let period = secs(p.period_seconds, 10).max(Duration::from_millis(100));
        let success_threshold = p.success_threshold.unwrap_or(1).max(1);
        let failure_threshold = p.failure_threshold.unwrap_or(3).max(1);
        let (mut ok_run, mut fail_run) = (0, 0);
        loop {
            match check(&target, p).await {
                Ok(()) => {
                    ok_run += 1;
                    fail_run = 0;
                    if ok_run >= success_threshold && set(&|s| s.ready = true) {
                        changed.notify_one();
                    }
                }
                Err(why) => {
                    fail_run += 1;
                    ok_run = 0;
                    record(&failures, Kind::Readiness, why);
                    if fail_run >= failure_threshold && set(&|s| s.ready = false) {
                        changed.notify_one();
                    }
                }
            }
            tokio::time::sleep(period).await;
        }
    };
    tokio::join!(liveness, readiness);
}

enum Verdict {
    Passed,
    Failed(String),
}

fn record(failures: &Mutex<Vec<Failure>>, kind: Kind, message: String) {
    let mut f = failures.lock().unwrap_or_else(|e| e.into_inner());
    if f.len() < 100 {
        f.push(Failure { kind, message });
    }
}

/// For startup: probe until it passes (`Passed`) or fails `failureThreshold` times in
/// a row. For liveness: the same, except that passing keeps it going (it only ever
/// returns `Failed`).
async fn probe_until(
    target: &Target,
    p: &Probe,
    kind: Kind,
    failures: &Mutex<Vec<Failure>>,
) -> Verdict {
    tokio::time::sleep(secs(p.initial_delay_seconds, 0)).await;
    let period = secs(p.period_seconds, 10).max(Duration::from_millis(100));
    let threshold = p.failure_threshold.unwrap_or(3).max(1);
    let mut fail_run = 0;
    loop {
        match check(target, p).await {
            Ok(()) => {
                fail_run = 0;
                if kind == Kind::Startup {
                    return Verdict::Passed;
                }
            }
            Err(why) => {
                fail_run += 1;
                record(failures, kind, why.clone());
                if fail_run >= threshold {
                    return Verdict::Failed(why);
                }
            }
        }
        tokio::time::sleep(period).await;
    }
}

/// One probe attempt.
pub async fn check(target: &Target, p: &Probe) -> Result<(), String> {
    let timeout = secs(p.timeout_seconds, 1).max(Duration::from_millis(100));
    if let Some(h) = &p.http_get {
        let host = h
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .or_else(|| target.ip.clone())
            .ok_or("the container has no IP yet")?;
        let port = resolve_port(&target.container, &h.port)?;
        let scheme = h.scheme.as_deref().unwrap_or("HTTP");
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(format!("{scheme} probes are not supported yet; use HTTP"));
        }
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        let url = format!("http://{host}:{port}{path}");
        let mut req = target
            .http
            .get(&url)
            .timeout(timeout)
            .header("User-Agent", "kube-probe/1.32");
        for hdr in h.http_headers.iter().flatten() {
            req = req.header(hdr.name.as_str(), hdr.value.as_str());
        }
        return match req.send().await {
            Ok(resp) if (200..400).contains(&resp.status().as_u16()) => Ok(()),
            Ok(resp) => Err(format!(
                "HTTP probe failed with statuscode: {}",
                resp.status().as_u16()
            )),
            Err(e) if e.is_timeout() => Err(format!(
                "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            )),
            Err(e) => Err(format!("Get \"{url}\": {}", root_cause(&e))),
        };
    }
    if let Some(t) = &p.tcp_socket {
        let host = t
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .or_else(|| target.ip.clone())
            .ok_or("the container has no IP yet")?;
        let port = resolve_port(&target.container, &t.port)?;
        let addr = format!("{host}:{port}");
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {addr}: {e}")),
            Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
        };
    }
    if let Some(e) = &p.exec {
        let cmd = e.command.clone().unwrap_or_default();
        return match target
            .runtime
            .exec(&target.container_id, &cmd, timeout)
            .await
        {
            Ok(out) if out.exit_code == 0 => Ok(()),
            Ok(out) => Err(format!(
                "command {:?} exited with {}: {}",
                cmd.join(" "),
                out.exit_code,
                out.output.trim()
            )),
            Err(e) => Err(e.to_string()),
        };
    }
    if p.grpc.is_some() {
        return Err("gRPC probes are not supported yet".into());
    }
    Err("the probe has no handler".into())
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A probe's port: a number, or the name of one of the container's ports.
pub fn resolve_port(c: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("invalid port {p}")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("the container has no port named {name:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn named_ports_resolve_through_the_container_ports() {
        let c: Container = serde_json::from_value(
            json!({"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}),
        )
        .unwrap();
        assert_eq!(
            resolve_port(&c, &IntOrString::String("http".into())),
            Ok(8080)
        );
        assert_eq!(resolve_port(&c, &IntOrString::Int(9090)), Ok(9090));
        assert!(
            resolve_port(&c, &IntOrString::String("grpc".into()))
                .unwrap_err()
                .contains("grpc")
        );
    }
}
