//! Shared helpers of the integration tests: a controller started in-process on
//! port 0 with a temporary data directory, and waits that fail instead of hanging.
//! [`docker`] adds agents on the real Docker engine.
//!
//! Every controller serves HTTPS with authentication, as it does for users: the
//! test's [`TestController::client`] is an admin with the admin kubeconfig the
//! controller wrote, agents join with a join token, and [`tug`] runs with that
//! kubeconfig.

pub mod autoscale;
pub mod bench;
pub mod compare;
pub mod docker;
pub mod fake_agent;
pub mod hollow;
pub mod load;
pub mod nodeloss;
pub mod selfheal;
pub mod standin;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tugboat_api::{Client, Credentials};
use tugboat_tls::kubeconfig::Kubeconfig;

/// The longest any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// The admin kubeconfig of every controller this test binary started, by URL,
/// so [`tug`] and the `tug` processes find the credentials for a server URL.
fn kubeconfigs() -> &'static Mutex<HashMap<String, PathBuf>> {
    static MAP: std::sync::OnceLock<Mutex<HashMap<String, PathBuf>>> = std::sync::OnceLock::new();
    MAP.get_or_init(Default::default)
}

/// The admin kubeconfig of the test controller at `url`, if there is one (a
/// controller serving plain HTTP has none).
pub fn kubeconfig_for(url: &str) -> Option<PathBuf> {
    kubeconfigs()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(url)
        .cloned()
}

/// The admin credentials in the kubeconfig at `path`.
pub fn admin_credentials(path: &Path) -> anyhow::Result<Credentials> {
    let config = Kubeconfig::read(path)?
        .ok_or_else(|| anyhow::anyhow!("{} does not exist", path.display()))?;
    Ok(config.resolve(None, &path.display().to_string())?.into())
}

/// A controller running in this process, stopped (and its data removed) on drop.
pub struct TestController {
    pub addr: SocketAddr,
    pub url: String,
    /// An admin.
    pub client: Client,
    /// The admin's credentials (`None` for a controller serving plain HTTP).
    pub credentials: Option<Credentials>,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<()>>,
    data_dir: DataDir,
    /// Set when the controller runs as its own `tug controller` process.
    process: Option<TugProcess>,
    /// A join token, made on first use.
    join_token: tokio::sync::OnceCell<String>,
    /// Nodes' credentials, kept as agents keep them: a node that comes back
    /// uses its own again.
    nodes: Mutex<HashMap<String, Arc<tugboat_agent::tls::NodeTls>>>,
    /// More `tug controller` flags, for a controller run as its own process.
    process_args: Vec<String>,
    /// The etcd this controller's store is on (`TUGBOAT_TEST_STORE=etcd`),
    /// stopped after it.
    _etcd: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// The store tests' controllers use: redb unless `TUGBOAT_TEST_STORE=etcd`,
/// which gives each controller a fresh etcd (and the leader election a
/// controller on etcd runs), so the same tests check both backends.
#[cfg_attr(not(feature = "etcd"), allow(unused_variables))]
async fn test_store(
    config: &mut tugboat_controller::Config,
) -> anyhow::Result<Option<Box<dyn std::any::Any + Send + Sync>>> {
    match std::env::var("TUGBOAT_TEST_STORE").as_deref() {
        Err(_) | Ok("") | Ok("redb") => Ok(None),
        #[cfg(feature = "etcd")]
        Ok("etcd") => {
            use tugboat_controller::store::etcd::{EtcdConfig, testing::EtcdCluster};
            let etcd = Box::pin(EtcdCluster::start(1)).await?;
            config.store = tugboat_controller::StoreConfig::Etcd(EtcdConfig::new(etcd.endpoints()));
            config.leader_election = Some(tugboat_controller::leader::Timing {
                lease_duration: Duration::from_secs(3),
                renew_deadline: Duration::from_secs(2),
                retry_period: Duration::from_millis(500),
            });
            Ok(Some(Box::new(etcd)))
        }
        Ok(other) => anyhow::bail!(
            "TUGBOAT_TEST_STORE={other:?}: expected redb, or etcd with the tests built with --features etcd"
        ),
    }
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

    /// A fresh controller serving `store` (an in-memory one, or one that
    /// misbehaves on purpose), with its own temporary data directory.
    pub async fn start_on_store(
        store: Arc<dyn tugboat_controller::store::Store>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        Box::pin(Self::start_full(
            DataDir::Owned(dir),
            SocketAddr::from(([127, 0, 0, 1], 0)),
            |_| {},
            Some(store),
        ))
        .await
    }

    async fn start_bound_tuned(
        data_dir: DataDir,
        bind: SocketAddr,
        tune: impl FnOnce(&mut tugboat_controller::Config),
    ) -> anyhow::Result<Self> {
        // Boxed: the start's future is large in debug builds (more so with
        // an etcd to start), and a test's own future sits on its thread's stack.
        Box::pin(Self::start_full(data_dir, bind, tune, None)).await
    }

    async fn start_full(
        data_dir: DataDir,
        bind: SocketAddr,
        tune: impl FnOnce(&mut tugboat_controller::Config),
        store: Option<Arc<dyn tugboat_controller::store::Store>>,
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
        let etcd = match store {
            Some(_) => None,
            None => test_store(&mut config).await?,
        };
        let url = tugboat_controller::client_url(addr, &config.security);
        let tls = config.security != tugboat_controller::Security::InsecureHttp;
        let kubeconfig = config
            .data_dir
            .join(tugboat_controller::pki::ADMIN_KUBECONFIG);
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            let result = match store {
                Some(store) => {
                    tugboat_controller::run_with_store(listener, store, config, token).await
                }
                None => tugboat_controller::run(listener, config, token).await,
            };
            if let Err(e) = result {
                eprintln!("test controller failed: {e}");
            }
        });
        let (client, credentials) = ready_client(&url, tls.then_some(kubeconfig.as_path())).await?;
        Ok(TestController {
            addr,
            url,
            client,
            credentials,
            shutdown,
            handle: Some(handle),
            data_dir,
            process: None,
            join_token: Default::default(),
            nodes: Default::default(),
            process_args: Vec::new(),
            _etcd: etcd,
        })
    }

    /// A `tug controller` process on a fixed free port (so it can be killed and
    /// restarted at the same address), with its own temporary data directory.
    pub async fn start_process() -> anyhow::Result<Self> {
        Self::start_process_with(&[]).await
    }

    /// A `tug controller` process as [`TestController::start_process`] starts
    /// it, with more flags (kept for restarts).
    pub async fn start_process_with(args: &[&str]) -> anyhow::Result<Self> {
        init_tracing();
        let mut attempt = 1;
        loop {
            let dir = tempfile::tempdir()?;
            let addr = {
                let l = std::net::TcpListener::bind("127.0.0.1:0")?;
                l.local_addr()?
            };
            let url = format!("https://{addr}");
            let mut tc = TestController {
                addr,
                client: Client::new(&url)?,
                credentials: None,
                url,
                shutdown: CancellationToken::new(),
                handle: None,
                data_dir: DataDir::Owned(dir),
                process: None,
                join_token: Default::default(),
                nodes: Default::default(),
                process_args: args.iter().map(|a| a.to_string()).collect(),
                _etcd: None,
            };
            match tc.restart_process().await {
                Ok(()) => return Ok(tc),
                // The port was free when chosen and closed again for the
                // controller to take; another process can take it between.
                // Still held after the controller exited, it was not ours.
                Err(e) if attempt < START_ATTEMPTS && tc.exited() && port_taken(addr) => {
                    eprintln!(
                        "port {addr} was taken before the controller listened ({e:#}); on another port"
                    );
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the controller process has ended.
    fn exited(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(|p| matches!(p.child.try_wait(), Ok(Some(_))))
    }

    /// The controller process's id, when it runs as its own process.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(|p| p.child.id())
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
        let data_arg = data.to_string_lossy();
        let mut args = vec!["controller", "--listen", &listen, "--data-dir", &data_arg];
        args.extend(self.process_args.iter().map(String::as_str));
        let process = self.process.insert(TugProcess::spawn(&args, &config)?);
        let kubeconfig = data.join(tugboat_controller::pki::ADMIN_KUBECONFIG);
        // A controller that exits (it could not open its store, say) fails
        // the test at once, with its status, instead of at the wait's end.
        let (client, credentials) = tokio::select! {
            ready = ready_client_within(RESTART_WAIT, &self.url, Some(&kubeconfig)) => ready?,
            status = process.child.wait() => anyhow::bail!(
                "the controller exited before it was ready ({}): see its output above",
                match status {
                    Ok(status) => status.to_string(),
                    Err(e) => e.to_string(),
                }
            ),
        };
        self.client = client;
        self.credentials = credentials;
        Ok(())
    }

    /// A join token for this cluster (one per controller, never expiring).
    pub async fn join_token(&self) -> anyhow::Result<String> {
        let token = self
            .join_token
            .get_or_try_init(|| async {
                let created = self
                    .client
                    .post_path(
                        "/v1-tugboat/tokens",
                        &serde_json::json!({"kind": "join", "ttlSeconds": 0, "description": "tests"}),
                    )
                    .await?;
                created["token"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow::anyhow!("no token in {created}"))
            })
            .await?;
        Ok(token.clone())
    }

    /// Node `node`'s credential, joined as an agent joins (`None` against a
    /// controller serving plain HTTP).
    pub async fn node_tls(
        &self,
        node: &str,
    ) -> anyhow::Result<Option<Arc<tugboat_agent::tls::NodeTls>>> {
        if self.credentials.is_none() {
            return Ok(None);
        }
        if let Some(kept) = self
            .nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
        {
            return Ok(Some(kept.clone()));
        }
        let token = self.join_token().await?;
        let config = tugboat_agent::join::join(&self.url, &token, node).await?;
        let r = config.resolve(None, "joined")?;
        let text = |b: Option<Vec<u8>>| String::from_utf8(b.unwrap_or_default());
        let c = r.credentials;
        let tls = Arc::new(tugboat_agent::tls::NodeTls::new(
            &text(c.ca_pem)?,
            &text(c.client_cert_pem)?,
            &text(c.client_key_pem)?,
        )?);
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.to_string(), tls.clone());
        Ok(Some(tls))
    }

    /// An agent configuration for node `node`, with its credential.
    pub async fn agent_config(&self, node: &str) -> anyhow::Result<tugboat_agent::Config> {
        let mut config = tugboat_agent::Config::new(&self.url, node);
        config.credential = self.node_tls(node).await?;
        Ok(config)
    }

    /// A client that authenticates as node `node` (joining it).
    pub async fn node_client(&self, node: &str) -> anyhow::Result<Client> {
        let tls = self
            .node_tls(node)
            .await?
            .ok_or_else(|| anyhow::anyhow!("a plain-HTTP controller has no node credentials"))?;
        Ok(Client::with_credentials(&self.url, &tls.credentials())?)
    }

    /// A raw HTTP client for this controller: an admin unless `anonymous`.
    pub fn http(&self, anonymous: bool) -> anyhow::Result<reqwest::Client> {
        tugboat_tls::install_default_provider();
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(creds) = &self.credentials {
            let mut creds = creds.clone();
            if anonymous {
                creds.client_cert_pem = None;
                creds.client_key_pem = None;
            }
            builder = builder.use_preconfigured_tls(creds.tls_config()?);
        }
        Ok(builder.build()?)
    }

    /// A raw TLS connection to the API as an admin, for tests that speak HTTP
    /// by hand (timeouts, connection limits).
    pub async fn connect_tls(
        &self,
    ) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let creds = self
            .credentials
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("a plain-HTTP controller"))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(creds.tls_config()?));
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let name = rustls_pki_types::ServerName::from(self.addr.ip());
        Ok(within("a TLS handshake", connector.connect(name, tcp)).await??)
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        let data = match &self.process {
            Some(_) => self.data_dir().join("data"),
            None => self.data_dir().to_path_buf(),
        };
        data.join(tugboat_controller::pki::ADMIN_KUBECONFIG)
    }

    /// curl's flags for an admin's request to this controller (the CA, the
    /// client certificate and key, written beside the data).
    pub fn curl_args(&self) -> anyhow::Result<Vec<String>> {
        let Some(creds) = &self.credentials else {
            return Ok(Vec::new());
        };
        let dir = self.data_dir().join("curl");
        std::fs::create_dir_all(&dir)?;
        let mut args = Vec::new();
        for (flag, file, pem) in [
            ("--cacert", "ca.pem", &creds.ca_pem),
            ("--cert", "cert.pem", &creds.client_cert_pem),
            ("--key", "key.pem", &creds.client_key_pem),
        ] {
            let path = dir.join(file);
            std::fs::write(&path, pem.as_deref().unwrap_or_default())?;
            args.push(flag.to_string());
            args.push(path.to_string_lossy().into_owned());
        }
        Ok(args)
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

/// Waits until the controller at `url` answers `/readyz` to an admin (with the
/// admin kubeconfig at `kubeconfig` once it is written; anonymous without one),
/// and returns that admin's client. Records the kubeconfig for [`tug`].
async fn ready_client(
    url: &str,
    kubeconfig: Option<&Path>,
) -> anyhow::Result<(Client, Option<Credentials>)> {
    ready_client_within(WAIT, url, kubeconfig).await
}

/// How long a restarted controller may take to serve again: it loads its whole
/// store first (25 s with 30,000 pods and their events on this machine, more
/// than [`WAIT`] with 60,000).
const RESTART_WAIT: Duration = Duration::from_secs(180);
/// How many ports a controller process is started on before its start fails.
const START_ATTEMPTS: usize = 3;

/// Whether another process listens on `addr` now.
fn port_taken(addr: std::net::SocketAddr) -> bool {
    std::net::TcpListener::bind(addr).is_err_and(|e| e.kind() == std::io::ErrorKind::AddrInUse)
}

/// [`ready_client`], waiting at most `limit`.
async fn ready_client_within(
    limit: Duration,
    url: &str,
    kubeconfig: Option<&Path>,
) -> anyhow::Result<(Client, Option<Credentials>)> {
    init_tracing();
    let found = eventually_within(limit, "the controller answers /readyz", || async {
        let creds = match kubeconfig {
            Some(k) => Some(admin_credentials(k).ok()?),
            None => None,
        };
        let client = Client::with_credentials(url, &creds.clone().unwrap_or_default()).ok()?;
        client
            .get_text("/readyz")
            .await
            .ok()
            .filter(|s| s == "ok")
            .map(|_| (client, creds))
    })
    .await?;
    if let Some(k) = kubeconfig {
        kubeconfigs()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(url.to_string(), k.to_path_buf());
    }
    Ok(found)
}

/// The names of the items of a list object.
pub fn names_in(list: &serde_json::Value) -> std::collections::HashSet<String> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

/// Panics naming the first few of `acknowledged` that `list` does not hold:
/// writes a client was told had succeeded, lost.
pub fn assert_none_lost(acknowledged: &[String], list: &serde_json::Value) {
    let stored = names_in(list);
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|n| !stored.contains(*n))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes were lost: {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(5)]
    );
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
    tugboat_tls::install_default_provider();
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
            // The same features as this test binary, so nothing is rebuilt.
            if cfg!(feature = "etcd") {
                args.extend(["--features", "tugboat-cli/etcd"]);
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
    /// Kills the child should this test process die without dropping it.
    watchdog: Option<std::process::Child>,
}

impl Drop for TugProcess {
    fn drop(&mut self) {
        // The child itself goes with `kill_on_drop`.
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
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
        let watchdog = child
            .id()
            .and_then(|pid| tugboat_controller::testing::watchdog(pid).ok());
        Ok(TugProcess { child, watchdog })
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
    let (url, kubeconfig) = eventually(
        "the controller writes its address to the client config",
        || async {
            let text = std::fs::read_to_string(config).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            Some((
                v["server"].as_str()?.to_string(),
                v["kubeconfig"].as_str().map(PathBuf::from),
            ))
        },
    )
    .await?;
    let (client, _) = ready_client(&url, kubeconfig.as_deref()).await?;
    Ok((process, client))
}

/// Runs `tug ARGS` in-process against `server`, returning what it printed. The
/// environment is empty and the config file a path in `config_dir`, so the user's own
/// configuration is never read or written.
pub async fn tug(server: &str, config_dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let (_, text, result) = tug_exit(server, config_dir, args).await?;
    match result {
        Ok(()) => Ok(text),
        Err(e) => Err(anyhow::anyhow!(
            "{}\n(output so far: {text})",
            tugboat_cli::render_error(&e)
        )),
    }
}

/// Like [`tug`], with the exit status the binary would have
/// (`tugboat_cli::error::exit_code`), what it printed, and its error.
pub async fn tug_exit(
    server: &str,
    config_dir: &Path,
    args: &[&str],
) -> anyhow::Result<(u8, String, anyhow::Result<()>)> {
    use clap::Parser as _;
    let config = config_dir.join("config.json");
    let config = config.to_string_lossy();
    let kubeconfig = kubeconfig_for(server).map(|k| k.to_string_lossy().into_owned());
    let mut argv = vec!["tug", "--server", server, "--config", &config];
    if let Some(k) = &kubeconfig {
        argv.extend(["--kubeconfig", k.as_str()]);
    }
    let argv = argv.into_iter().chain(args.iter().copied());
    let cli = tugboat_cli::Cli::try_parse_from(argv)?;
    let mut out = Vec::new();
    // Boxed: every verb's future is in this one, large in debug builds, and
    // the test's own future sits on its thread's stack.
    let result = within(
        &format!("tug {}", args.join(" ")),
        Box::pin(tugboat_cli::execute_with(
            cli,
            &mut out,
            tugboat_cli::Env::default(),
            CancellationToken::new(),
        )),
    )
    .await?;
    let code = match &result {
        Ok(()) => 0,
        Err(e) => tugboat_cli::error::exit_code(e),
    };
    Ok((code, String::from_utf8(out)?, result))
}
