//! Shared helpers of the integration tests: a controller started in-process on
//! port 0 with a temporary data directory, and waits that fail instead of hanging.
//! [`docker`] adds agents on the real Docker engine.

pub mod bench;
pub mod docker;
pub mod fake_agent;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tugboat_api::Client;

/// The longest any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// A controller running in this process, stopped (and its data removed) on drop.
pub struct TestController {
    pub addr: SocketAddr,
    pub url: String,
    pub client: Client,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<()>>,
    data_dir: DataDir,
    /// Set when the controller runs as its own `tug controller` process.
    process: Option<TugProcess>,
}

enum DataDir {
    Owned(tempfile::TempDir),
    Borrowed(PathBuf),
}

impl TestController {
    /// A fresh controller with its own temporary data directory.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        Self::start_with(DataDir::Owned(dir)).await
    }

    /// A controller on an existing data directory (to test restarts).
    pub async fn start_in(dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(DataDir::Borrowed(dir.to_path_buf())).await
    }

    /// A fresh controller listening on `ip` (port 0): a network's gateway, so that
    /// agents in containers on that network reach it.
    pub async fn start_at(ip: std::net::IpAddr) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        Self::start_bound(DataDir::Owned(dir), SocketAddr::new(ip, 0)).await
    }

    /// A fresh controller whose config `tune` adjusts (e.g. a longer node grace for
    /// a test that stops an agent on purpose).
    pub async fn start_tuned(
        tune: impl FnOnce(&mut tugboat_controller::Config),
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        Self::start_bound_tuned(
            DataDir::Owned(dir),
            SocketAddr::from(([127, 0, 0, 1], 0)),
            tune,
        )
        .await
    }

    /// A controller on an existing data directory whose config `tune` adjusts (a
    /// restart with the same small ranges, say).
    pub async fn start_in_tuned(
        dir: &Path,
        tune: impl FnOnce(&mut tugboat_controller::Config),
    ) -> anyhow::Result<Self> {
        Self::start_bound_tuned(
            DataDir::Borrowed(dir.to_path_buf()),
            SocketAddr::from(([127, 0, 0, 1], 0)),
            tune,
        )
        .await
    }

    async fn start_with(data_dir: DataDir) -> anyhow::Result<Self> {
        Self::start_bound(data_dir, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    async fn start_bound(data_dir: DataDir, bind: SocketAddr) -> anyhow::Result<Self> {
        Self::start_bound_tuned(data_dir, bind, |_| {}).await
    }

    async fn start_bound_tuned(
        data_dir: DataDir,
        bind: SocketAddr,
        tune: impl FnOnce(&mut tugboat_controller::Config),
    ) -> anyhow::Result<Self> {
        init_tracing();
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let mut config = tugboat_controller::Config {
            data_dir: match &data_dir {
                DataDir::Owned(d) => d.path().to_path_buf(),
                DataDir::Borrowed(p) => p.clone(),
            },
            ..Default::default()
        };
        tune(&mut config);
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            if let Err(e) = tugboat_controller::run(listener, config, token).await {
                eprintln!("test controller failed: {e}");
            }
        });
        let url = format!("http://{addr}");
        let client = Client::new(&url)?;
        let probe = client.clone();
        eventually("the controller answers /readyz", || {
            let c = probe.clone();
            async move { c.get_text("/readyz").await.ok().filter(|s| s == "ok") }
        })
        .await?;
        Ok(TestController {
            addr,
            url,
            client,
            shutdown,
            handle: Some(handle),
            data_dir,
            process: None,
        })
    }

    /// A `tug controller` process on a fixed free port (so it can be killed and
    /// restarted at the same address), with its own temporary data directory.
    pub async fn start_process() -> anyhow::Result<Self> {
        init_tracing();
        let dir = tempfile::tempdir()?;
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?
        };
        let url = format!("http://{addr}");
        let mut tc = TestController {
            addr,
            client: Client::new(&url)?,
            url,
            shutdown: CancellationToken::new(),
            handle: None,
            data_dir: DataDir::Owned(dir),
            process: None,
        };
        tc.restart_process().await?;
        Ok(tc)
    }

    /// SIGKILLs the controller process.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        match self.process.as_mut() {
            Some(p) => p.kill9().await,
            None => anyhow::bail!("kill9 needs a controller started with start_process"),
        }
    }

    /// Starts the controller process (again) on the same address and data.
    pub async fn restart_process(&mut self) -> anyhow::Result<()> {
        let data = self.data_dir().join("data");
        let config = self.data_dir().join("config.json");
        let listen = self.addr.to_string();
        let process = TugProcess::spawn(
            &[
                "controller",
                "--listen",
                &listen,
                "--data-dir",
                &data.to_string_lossy(),
            ],
            &config,
        )?;
        self.process = Some(process);
        let probe = self.client.clone();
        eventually("the controller process answers /readyz", || {
            let c = probe.clone();
            async move { c.get_text("/readyz").await.ok().filter(|s| s == "ok") }
        })
        .await?;
        Ok(())
    }

    pub fn data_dir(&self) -> &Path {
        match &self.data_dir {
            DataDir::Owned(d) => d.path(),
            DataDir::Borrowed(p) => p,
        }
    }

    /// Stops the controller gracefully and waits for it (with a timeout).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(WAIT, h)
                .await
                .map_err(|_| anyhow::anyhow!("the controller did not stop within {WAIT:?}"))??;
        }
        Ok(())
    }
}

impl Drop for TestController {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

/// Polls `check` until it returns `Some`, failing after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(WAIT, what, check).await
}

pub async fn eventually_within<T, F, Fut>(
    limit: Duration,
    what: &str,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut delay = Duration::from_millis(10);
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {limit:?} waiting until {what}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// Awaits `fut`, failing after [`WAIT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(WAIT, fut)
        .await
        .map_err(|_| anyhow::anyhow!("timed out after {WAIT:?} waiting for {what}"))
}

/// A Deployment manifest of the sample image with `replicas`.
pub fn deployment(name: &str, ns: &str, replicas: i64) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "web",
                    "image": "tugboat/sample:latest",
                    "imagePullPolicy": "IfNotPresent",
                    "ports": [{"containerPort": 8080}]
                }]}
            }
        }
    })
}

/// Logs to the test's captured output; `RUST_LOG` picks the level (default `warn`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The `tug` binary of this workspace, built (or brought up to date) on first use
/// so process tests never run a stale one.
pub fn tug_binary() -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            // Build the profile this test binary was built with (benches: release), so
            // the `tug` found next to it is the one just built.
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let release = exe
                .parent()
                .and_then(Path::parent)
                .and_then(Path::file_name)
                .is_some_and(|n| n == "release");
            let mut args = vec![
                "build",
                "--quiet",
                "-p",
                "tugboat-cli",
                "--bin",
                "tug",
                "-p",
                "tugboat-sample",
                "--bin",
                "tug-sample",
            ];
            if release {
                args.push("--release");
            }
            let status = std::process::Command::new(cargo)
                .args(&args)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .map_err(|e| format!("cannot run cargo to build tug: {e}"))?;
            if !status.success() {
                return Err(format!("building tug failed: {status}"));
            }
            // Test binaries live in target/<profile>/deps; tug in target/<profile>.
            let dir = exe
                .parent()
                .and_then(Path::parent)
                .ok_or_else(|| "cannot find the target directory".to_string())?;
            let tug = dir.join("tug");
            if tug.exists() {
                Ok(tug)
            } else {
                Err(format!("{} was not built", tug.display()))
            }
        })
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// A `tug` child process, killed (SIGKILL) on drop so a failing test leaves nothing.
pub struct TugProcess {
    pub child: tokio::process::Child,
}

impl TugProcess {
    /// Starts `tug ARGS` with `TUG_CONFIG` pointing at `config` (never the user's own).
    pub fn spawn(args: &[&str], config: &Path) -> anyhow::Result<Self> {
        let child = tokio::process::Command::new(tug_binary()?)
            .args(args)
            .env("TUG_CONFIG", config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null())
            .spawn()?;
        Ok(TugProcess { child })
    }

    /// SIGKILL, and wait until it is gone.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        within("the killed process to exit", self.child.wait()).await??;
        Ok(())
    }
}

/// Starts `tug controller` as its own process on a free port and waits until it
/// answers; returns the process and a client for it.
pub async fn spawn_controller(
    data_dir: &Path,
    config: &Path,
) -> anyhow::Result<(TugProcess, Client)> {
    let _ = std::fs::remove_file(config);
    let dir = data_dir.to_string_lossy().to_string();
    let process = TugProcess::spawn(
        &["controller", "--listen", "127.0.0.1:0", "--data-dir", &dir],
        config,
    )?;
    let url = eventually(
        "the controller writes its address to the client config",
        || async {
            let text = std::fs::read_to_string(config).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            v["server"].as_str().map(str::to_string)
        },
    )
    .await?;
    let client = Client::new(&url)?;
    eventually("the controller answers /readyz", || {
        let c = client.clone();
        async move { c.get_text("/readyz").await.ok().filter(|s| s == "ok") }
    })
    .await?;
    Ok((process, client))
}

/// Runs `tug ARGS` in-process against `server`, returning what it printed. The
/// environment is empty and the config file a path in `config_dir`, so the user's own
/// configuration is never read or written.
pub async fn tug(server: &str, config_dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    use clap::Parser as _;
    let config = config_dir.join("config.json");
    let config = config.to_string_lossy();
    let argv = ["tug", "--server", server, "--config", &config]
        .into_iter()
        .chain(args.iter().copied());
    let cli = tugboat_cli::Cli::try_parse_from(argv)?;
    let mut out = Vec::new();
    let result = within(
        &format!("tug {}", args.join(" ")),
        tugboat_cli::execute_with(
            cli,
            &mut out,
            tugboat_cli::Env::default(),
            CancellationToken::new(),
        ),
    )
    .await?;
    let text = String::from_utf8(out)?;
    match result {
        Ok(()) => Ok(text),
        Err(e) => Err(anyhow::anyhow!(
            "{}\n(output so far: {text})",
            tugboat_cli::render_error(&e)
        )),
    }
}
