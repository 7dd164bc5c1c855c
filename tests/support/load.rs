//! A client for request-level checks: `GET /` to the sample on a new connection
//! each time, and a steady load of such requests at a fixed rate that counts
//! what failed — for rollouts under traffic, in tests and benchmarks alike.
//! Every load stops by itself after [`MAX_LOAD`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::within;

/// The longest one request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a load runs, stopped or not.
pub const MAX_LOAD: Duration = Duration::from_secs(300);

/// `GET /` on a new connection; an error says what went wrong.
pub async fn get(addr: SocketAddr) -> Result<(), String> {
    get_from(addr).await.map(|_| ())
}

/// `GET /` on a new connection: the name of the pod that answered (the
/// sample's `hostname`).
pub async fn get_from(addr: SocketAddr) -> Result<String, String> {
    let attempt = async {
        let mut c = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        c.write_all(b"GET / HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        c.read_to_end(&mut raw).await.map_err(|e| e.to_string())?;
        if raw.starts_with(b"HTTP/1.1 200") {
            let text = String::from_utf8_lossy(&raw);
            let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            let host = serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["hostname"].as_str().map(str::to_string))
                .unwrap_or_default();
            Ok(host)
        } else {
            Err(format!(
                "answered {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(40)])
            ))
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// `rate` new connections a second, alternating over `addrs`, until finished.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    /// Requests answered, by the pod that answered them.
    served_by: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    pub fn start(addrs: Vec<SocketAddr>, rate: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let served_by: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>> =
            Arc::default();
        let task = tokio::spawn({
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            let served_by = served_by.clone();
            async move {
                let started = Instant::now();
                let mut tick =
                    tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
                let mut inflight = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_LOAD {
                    tick.tick().await;
                    let addr = addrs[i % addrs.len()];
                    i += 1;
                    let (ok, failures) = (ok.clone(), failures.clone());
                    let served_by = served_by.clone();
                    inflight.push(tokio::spawn(async move {
                        match get_from(addr).await {
                            Ok(pod) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                *served_by
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .entry(pod)
                                    .or_default() += 1;
                            }
                            Err(e) => failures
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(format!("{addr}: {e}")),
                        }
                    }));
                    inflight.retain(|t| !t.is_finished());
                }
                for t in inflight {
                    let _ = t.await;
                }
            }
        });
        Load {
            stop,
            ok,
            served_by,
            failures,
            task,
        }
    }

    /// Requests answered so far, by the pod that answered them (and starts
    /// counting afresh).
    pub fn take_served_by(&self) -> std::collections::HashMap<String, usize> {
        std::mem::take(&mut *self.served_by.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Stops, waits for the requests in flight; (answered, failures).
    pub async fn finish(self) -> anyhow::Result<(usize, Vec<String>)> {
        self.stop.store(true, Ordering::Relaxed);
        within("the load to finish", self.task).await??;
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok((self.ok.load(Ordering::Relaxed), failures))
    }
}
