//! What hostile and careless input costs the controller: resident memory and the
//! store file's size under the loads of issue 8, against the same controller idle
//! in the same run.
//!
//! `cargo bench -p tugboat-tests --bench hostile` starts a `tug controller`
//! process (release build) on a temporary data directory and sends, in turn:
//! - the defect's own load: 100 merge patches of a 1.9 MB annotation;
//! - the largest load that is allowed: `HOSTILE_PATCHES` (default 200) patches of
//!   a 250 KiB annotation (just under the 256 KiB bound), then the delete;
//! - 100 JSON patches of 40 copies that would each double the object;
//! - 200 connections that dribble one header byte a second.
//!
//! It prints the controller's resident memory (VmRSS) and the file size after
//! each, and the time each refused request took.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tugboat_tests::bench::{git_describe, loadavg, rounds_from_env, utc_now};
use tugboat_tests::{TugProcess, deployment, eventually};

struct Controller {
    process: TugProcess,
    url: String,
    data: std::path::PathBuf,
    http: reqwest::Client,
}

impl Controller {
    fn rss_mb(&self) -> f64 {
        tugboat_tests::bench::rss_mb(self.process.child.id())
    }

    fn file_mb(&self) -> f64 {
        std::fs::metadata(self.data.join("tugboat.redb"))
            .map(|m| m.len() as f64 / (1024.0 * 1024.0))
            .unwrap_or(f64::NAN)
    }

    async fn patch(&self, path: &str, content_type: &str, body: Vec<u8>) -> anyhow::Result<u16> {
        Ok(self
            .http
            .patch(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await?
            .status()
            .as_u16())
    }
}

impl Controller {
    /// Sends `n` patches (the body of the i-th from `body(i)`) and says how many
    /// were answered `expect`, with their latencies.
    async fn patches(
        &self,
        n: usize,
        path: &str,
        content_type: &str,
        expect: u16,
        what: &str,
        body: impl Fn(usize) -> Vec<u8>,
    ) -> anyhow::Result<String> {
        let mut hits = 0;
        let mut times = Vec::new();
        for i in 0..n {
            let b = body(i);
            let t = Instant::now();
            if self.patch(path, content_type, b).await? == expect {
                hits += 1;
            }
            times.push(t.elapsed());
        }
        times.sort();
        Ok(format!(
            "{hits}/{n} {what}, p50 {:.1} ms, p99 {:.1} ms",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        ))
    }
}

fn row(what: &str, c: &Controller, note: &str) {
    println!(
        "| {what:<44} | {:>8.1} | {:>8.1} | {note} |",
        c.rss_mb(),
        c.file_mb()
    );
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let patches = rounds_from_env("HOSTILE_PATCHES", 200)?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let listen = addr.to_string();
    let process = TugProcess::spawn(
        &[
            "controller",
            "--listen",
            &listen,
            "--data-dir",
            &data.to_string_lossy(),
        ],
        &dir.path().join("config.json"),
    )?;
    let url = format!("https://{addr}");
    let kubeconfig = data.join("admin.kubeconfig");
    let client = eventually("the controller answers an admin", || async {
        let creds = tugboat_tests::admin_credentials(&kubeconfig).ok()?;
        let client = tugboat_api::Client::with_credentials(&url, &creds).ok()?;
        client.get_text("/readyz").await.ok().map(|_| client)
    })
    .await?;
    let creds = tugboat_tests::admin_credentials(&kubeconfig)?;
    let c = Controller {
        process,
        url,
        data,
        http: reqwest::Client::builder()
            .use_preconfigured_tls(creds.tls_config()?)
            .build()?,
    };
    client
        .create(
            &tugboat_api::resource::DEPLOYMENTS,
            Some("default"),
            &deployment("web", "default", 0),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    println!(
        "hostile-input bench, {} , commit {}, load {}",
        utc_now(),
        git_describe(),
        loadavg()
    );
    println!(
        "| {:<44} | {:>8} | {:>8} | note |",
        "after", "RSS MB", "file MB"
    );
    println!("|{}|---------:|---------:|------|", "-".repeat(46));
    row("idle, one Deployment (baseline)", &c, "");

    let path = "/apis/apps/v1/namespaces/default/deployments/web";
    // The defect's own load.
    let big =
        serde_json::to_vec(&json!({"metadata": {"annotations": {"blob": "z".repeat(1_900_000)}}}))?;
    let note = c
        .patches(
            100,
            path,
            "application/merge-patch+json",
            422,
            "refused",
            |_| big.clone(),
        )
        .await?;
    row("100 patches of a 1.9 MB annotation", &c, &note);

    // The largest allowed.
    let note = c
        .patches(
            patches,
            path,
            "application/merge-patch+json",
            200,
            "stored",
            |i| {
                serde_json::to_vec(&json!({"metadata": {"annotations": {
                    "blob": format!("{i:06}{}", "y".repeat(250 * 1024 - 6))
                }}}))
                .unwrap_or_default()
            },
        )
        .await?;
    row(
        &format!("{patches} patches of a 250 KiB annotation"),
        &c,
        &note,
    );
    client
        .delete(&tugboat_api::resource::DEPLOYMENTS, Some("default"), "web")
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    row("the Deployment deleted", &c, "");

    // Copy bombs.
    client
        .create(
            &tugboat_api::resource::DEPLOYMENTS,
            Some("default"),
            &deployment("web", "default", 0),
        )
        .await?;
    let ops: Vec<serde_json::Value> = (0..40)
        .map(|i| json!({"op": "copy", "from": "/spec", "path": format!("/spec/x{i}")}))
        .collect();
    let bomb = serde_json::to_vec(&ops)?;
    let note = c
        .patches(
            100,
            path,
            "application/json-patch+json",
            422,
            "refused",
            |_| bomb.clone(),
        )
        .await?;
    row("100 JSON patches of 40 doubling copies", &c, &note);

    // Slow clients: 200 connections dribbling header bytes, bounded at 15 s.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        tasks.push(tokio::spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                return None;
            };
            let opened = Instant::now();
            for b in b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\n"
                .iter()
                .cycle()
                .take(15)
            {
                if s.write_all(&[*b]).await.is_err() {
                    return Some(opened.elapsed());
                }
                let mut buf = [0u8; 64];
                match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Some(opened.elapsed()),
                    _ => {}
                }
            }
            None
        }));
    }
    let probe = Instant::now();
    let answered = client.get_text("/readyz").await.is_ok();
    let probe_ms = probe.elapsed().as_secs_f64() * 1000.0;
    let mut cut = Vec::new();
    for t in tasks {
        if let Some(d) = t.await? {
            cut.push(d);
        }
    }
    cut.sort();
    row(
        "200 connections sending a header byte a second",
        &c,
        &format!(
            "{} cut off, after p50 {:.1} s; another client answered {} in {probe_ms:.1} ms; {:.0} s in all",
            cut.len(),
            percentile(&cut, 0.5) / 1000.0,
            if answered { "yes" } else { "no" },
            started.elapsed().as_secs_f64()
        ),
    );
    drop(c);
    Ok(())
}
