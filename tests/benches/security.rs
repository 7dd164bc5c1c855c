//! What authentication costs: the same requests against two `tug controller`
//! processes started in the same run, one serving HTTPS with authentication
//! (the default) and one `--insecure-http` (the baseline, what every request
//! cost before), plus what joining a node takes.
//!
//! - a GET of one pod on a kept-alive connection, as an admin (client
//!   certificate), as a node (its certificate checked against its stored
//!   credential, and the pod's binding checked), as an API token, and over
//!   plain HTTP;
//! - the same GET on a new connection each time (TLS handshake included);
//! - joining a node (fetch the CA, check its hash, CSR, signed certificate);
//! - each controller's resident memory after the run.
//!
//! `cargo bench -p tugboat-tests --bench security` (`SECURITY_REQUESTS`,
//! default 2000; `SECURITY_JOINS`, default 20). Every loop is bounded in count.

use std::time::{Duration, Instant};

use serde_json::json;
use tugboat_api::resource::{NODES, PODS};
use tugboat_api::{Client, Credentials};
use tugboat_tests::bench::{git_describe, loadavg, rounds_from_env, utc_now};
use tugboat_tests::{TugProcess, admin_credentials, eventually};

struct Controller {
    process: TugProcess,
    url: String,
    creds: Option<Credentials>,
    _dir: tempfile::TempDir,
}

impl Controller {
    async fn start(secure: bool) -> anyhow::Result<Controller> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let listen = addr.to_string();
        let data_arg = data.to_string_lossy().into_owned();
        let mut args = vec!["controller", "--listen", &listen, "--data-dir", &data_arg];
        if !secure {
            args.push("--insecure-http");
        }
        let process = TugProcess::spawn(&args, &dir.path().join("config.json"))?;
        let scheme = if secure { "https" } else { "http" };
        let url = format!("{scheme}://{addr}");
        let kubeconfig = data.join("admin.kubeconfig");
        let creds = eventually("the controller answers", || async {
            let creds = if secure {
                Some(admin_credentials(&kubeconfig).ok()?)
            } else {
                None
            };
            let c = Client::with_credentials(&url, &creds.clone().unwrap_or_default()).ok()?;
            c.get_text("/readyz").await.ok().map(|_| creds)
        })
        .await?;
        Ok(Controller {
            process,
            url,
            creds,
            _dir: dir,
        })
    }

    fn admin(&self) -> anyhow::Result<Client> {
        Ok(Client::with_credentials(
            &self.url,
            &self.creds.clone().unwrap_or_default(),
        )?)
    }

    fn rss_mb(&self) -> f64 {
        tugboat_tests::bench::rss_mb(self.process.child.id())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// `n` GETs of `path` with `http`, timed one by one.
async fn gets(http: &reqwest::Client, url: &str, n: usize) -> anyhow::Result<(Vec<Duration>, f64)> {
    let mut times = Vec::with_capacity(n);
    let all = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let r = http.get(url).send().await?;
        anyhow::ensure!(r.status().is_success(), "GET {url}: {}", r.status());
        r.bytes().await?;
        times.push(t.elapsed());
    }
    let rate = n as f64 / all.elapsed().as_secs_f64();
    times.sort();
    Ok((times, rate))
}

fn http_client(creds: Option<&Credentials>, keep_alive: bool) -> anyhow::Result<reqwest::Client> {
    tugboat_tls::install_default_provider();
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if !keep_alive {
        b = b.pool_max_idle_per_host(0);
    }
    let tls = match creds {
        Some(c) => c.tls_config()?,
        None => tugboat_tls::config::client_config(
            None,
            None,
            tugboat_tls::config::ServerCheck::Nothing,
        )?,
    };
    if let Some(token) = creds.and_then(|c| c.token.clone()) {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse()?,
        );
        b = b.default_headers(h);
    }
    Ok(b.use_preconfigured_tls(tls).build()?)
}

fn row(what: &str, (times, rate): &(Vec<Duration>, f64)) {
    println!(
        "| {what:<46} | {:>7.2} | {:>7.2} | {:>8.0} |",
        percentile(times, 0.5),
        percentile(times, 0.99),
        rate
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tugboat_tests::init_tracing();
    let n = rounds_from_env("SECURITY_REQUESTS", 2000)?;
    let joins = rounds_from_env("SECURITY_JOINS", 20)?;
    let secure = Controller::start(true).await?;
    let plain = Controller::start(false).await?;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"nodeName": "bench-node", "containers": [{"name": "c", "image": "tugboat/sample:latest"}]}});
    for c in [&secure, &plain] {
        c.admin()?.create(&PODS, Some("default"), &pod).await?;
    }
    let path = "/api/v1/namespaces/default/pods/p";

    // A node credential and an API token on the secure controller.
    let admin = secure.admin()?;
    let token = admin
        .post_path(
            "/v1-tugboat/tokens",
            &json!({"kind": "join", "ttlSeconds": 0}),
        )
        .await?;
    let join_token = token["token"].as_str().unwrap_or_default().to_string();
    let node = tugboat_agent::join::join(&secure.url, &join_token, "bench-node").await?;
    let node_creds: Credentials = node.resolve(None, "bench")?.into();
    Client::with_credentials(&secure.url, &node_creds)?
        .create(
            &NODES,
            None,
            &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "bench-node"}}),
        )
        .await?;
    let api = admin
        .post_path(
            "/v1-tugboat/tokens",
            &json!({"kind": "api", "namespace": "default", "role": "view"}),
        )
        .await?;
    let token_creds = Credentials {
        ca_pem: secure.creds.as_ref().and_then(|c| c.ca_pem.clone()),
        token: api["token"].as_str().map(str::to_string),
        ..Default::default()
    };

    println!(
        "security bench, {}, commit {}, load {}, {n} requests per row, {joins} joins",
        utc_now(),
        git_describe(),
        loadavg()
    );
    println!(
        "| {:<46} | {:>7} | {:>7} | {:>8} |",
        "GET one pod", "p50 ms", "p99 ms", "req/s"
    );
    println!("|{}|--------:|--------:|---------:|", "-".repeat(48));
    let plain_url = format!("{}{path}", plain.url);
    let secure_url = format!("{}{path}", secure.url);
    // Alternate the two, twice, so neither gets the machine's quieter moments.
    for round in 1..=2 {
        row(
            &format!("plain HTTP, no auth (baseline), kept-alive #{round}"),
            &gets(&http_client(None, true)?, &plain_url, n).await?,
        );
        row(
            &format!("HTTPS, admin certificate, kept-alive #{round}"),
            &gets(&http_client(secure.creds.as_ref(), true)?, &secure_url, n).await?,
        );
    }
    row(
        "HTTPS, node certificate + Node authorizer",
        &gets(&http_client(Some(&node_creds), true)?, &secure_url, n).await?,
    );
    row(
        "HTTPS, API token (view)",
        &gets(&http_client(Some(&token_creds), true)?, &secure_url, n).await?,
    );
    let fresh = (n / 4).max(1);
    row(
        "plain HTTP, new connection each",
        &gets(&http_client(None, false)?, &plain_url, fresh).await?,
    );
    row(
        "HTTPS, admin, new connection (handshake) each",
        &gets(
            &http_client(secure.creds.as_ref(), false)?,
            &secure_url,
            fresh,
        )
        .await?,
    );

    let mut times = Vec::new();
    for i in 0..joins {
        let t = Instant::now();
        tugboat_agent::join::join(&secure.url, &join_token, &format!("joiner-{i}")).await?;
        times.push(t.elapsed());
    }
    times.sort();
    println!();
    println!(
        "join (fetch CA, check hash, CSR, signed): p50 {:.1} ms, p99 {:.1} ms over {joins}",
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );
    println!(
        "controller RSS after the run: HTTPS {:.1} MB, plain HTTP {:.1} MB",
        secure.rss_mb(),
        plain.rss_mb()
    );
    Ok(())
}
