//! A cluster on the real Docker engine for end-to-end tests: an in-process
//! controller and `tug agent` processes with node names unique to the test, in a
//! namespace of its own. Everything it started is removed on drop, containers by
//! their labels, even when the test fails.

use std::path::Path;
use std::sync::OnceLock;

use serde_json::{Value, json};
use tugboat_api::resource::{ENDPOINTSLICES, NAMESPACES, NODES, PODS};
use tugboat_api::{Client, ListParams};

use crate::{TestController, TugProcess, eventually, tug_binary};

/// Builds `tugboat/sample:latest` from this workspace's `tug-sample` once per test
/// binary (rebuilt, so it is always the current code).
pub async fn sample_image() -> anyhow::Result<()> {
    static BUILT: OnceLock<()> = OnceLock::new();
    if BUILT.get().is_some() {
        return Ok(());
    }
    let tug = tug_binary()?;
    let binary = tug.with_file_name("tug-sample");
    let runtime = tugboat_agent::runtime::docker::DockerRuntime::connect(None).await?;
    tugboat_agent::image::ensure_sample_image(
        &runtime,
        &binary,
        tugboat_agent::image::SAMPLE_IMAGE,
        true,
    )
    .await?;
    let _ = BUILT.set(());
    Ok(())
}

/// The test image with a shell and the usual tools: `tugboat/busybox:test`.
pub const BUSYBOX_IMAGE: &str = "tugboat/busybox:test";

/// Where the host's static busybox may be (Debian's `busybox-static` ships
/// `/bin/busybox`, which is `/usr/bin/busybox` with a merged /usr; `.ci/run`
/// installs it).
const HOST_BUSYBOX: [&str; 2] = ["/usr/bin/busybox", "/bin/busybox"];

/// Builds [`BUSYBOX_IMAGE`] once per test binary from the host's static busybox:
/// `sh`, `cat`, `tar` (for `cp`), `wget`, `sleep`… on `FROM scratch`, so no
/// registry is needed. It sleeps by default, and carries the label of the
/// images Tugboat builds (`io.tugboat.image=busybox`), so cleanup finds it.
pub async fn busybox_image() -> anyhow::Result<()> {
    static BUILT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    BUILT
        .get_or_try_init(|| async {
            let busybox = HOST_BUSYBOX
                .iter()
                .find_map(|path| std::fs::read(path).ok())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no busybox at {HOST_BUSYBOX:?}: install Debian's busybox-static \
                         (.ci/run does)"
                    )
                })?;
            let dockerfile = format!(
                "FROM scratch\n\
                 COPY busybox /bin/busybox\n\
                 RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
                 RUN [\"/bin/mkdir\", \"-p\", \"/tmp\", \"/root\"]\n\
                 LABEL {}=busybox\n\
                 CMD [\"sleep\", \"3600\"]\n",
                tugboat_agent::image::IMAGE_LABEL
            );
            let context = tokio::task::spawn_blocking(move || {
                build_context(&[
                    ("Dockerfile", dockerfile.as_bytes(), 0o644),
                    ("busybox", &busybox, 0o755),
                ])
            })
            .await??;
            let previous = docker(&["image", "inspect", "-f", "{{.Id}}", BUSYBOX_IMAGE]).ok();
            let runtime = tugboat_agent::runtime::docker::DockerRuntime::connect(None).await?;
            let options = bollard::query_parameters::BuildImageOptionsBuilder::default()
                .t(BUSYBOX_IMAGE)
                .rm(true)
                .forcerm(true)
                .build();
            let mut progress = runtime.docker().build_image(
                options,
                None,
                Some(bollard::body_full(bytes::Bytes::from(context))),
            );
            let mut log = String::new();
            let built = tokio::time::timeout(std::time::Duration::from_secs(120), async {
                use futures::StreamExt as _;
                while let Some(item) = progress.next().await {
                    let info =
                        item.map_err(|e| anyhow::anyhow!("building {BUSYBOX_IMAGE}: {e}\n{log}"))?;
                    if let Some(error) = info.error_detail.and_then(|d| d.message) {
                        anyhow::bail!("building {BUSYBOX_IMAGE}: {error}\n{log}");
                    }
                    log.push_str(info.stream.as_deref().unwrap_or_default());
                }
                Ok(())
            })
            .await;
            built.map_err(|_| anyhow::anyhow!("building {BUSYBOX_IMAGE} took over 120 s"))??;
            let id = docker(&["image", "inspect", "-f", "{{.Id}}", BUSYBOX_IMAGE])?;
            // The image the tag named before (an older recipe) is ours and now
            // untagged: remove it unless a container still uses it.
            if let Some(old) = previous.filter(|old| *old != id) {
                let _ = docker(&["image", "rm", &old]);
            }
            Ok(())
        })
        .await
        .map(|_| ())
}

/// A tar build context of `(name, contents, mode)` files, with zeroed times so the
/// engine's build cache answers a rebuild of the same files.
pub(crate) fn build_context(files: &[(&str, &[u8], u32)]) -> anyhow::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, contents, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, name, *contents)?;
    }
    Ok(tar.into_inner()?)
}

pub struct DockerCluster {
    pub controller: TestController,
    pub client: Client,
    pub namespace: String,
    pub nodes: Vec<String>,
    agents: Vec<Option<TugProcess>>,
    config_dir: tempfile::TempDir,
    /// Extra `tug agent` flags, per agent.
    agent_args: Vec<Vec<String>>,
    /// Set for a networked cluster: the private network and the agent containers.
    network: Option<String>,
    agent_containers: Vec<String>,
    /// The join token agents are started with (their first start joins; a
    /// restart uses the credential kept in their state directory).
    join_token: String,
    /// More controllers of the same cluster (on one etcd), beside `controller`.
    pub other_controllers: Vec<TestController>,
    /// Every controller's URL, as agents are given them (`--server A,B,C`).
    pub servers: String,
}

/// A short unique prefix for this test's node and namespace names.
fn unique(test: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut name: String = test
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(20)
        .collect::<String>()
        .to_ascii_lowercase();
    name.push_str(&format!("-{:x}", (std::process::id() ^ n) & 0xffffff));
    name
}

impl DockerCluster {
    /// A controller, `agents` agent processes and a namespace named after `test`.
    pub async fn start(test: &str, agents: usize) -> anyhow::Result<Self> {
        sample_image().await?;
        let controller = TestController::start().await?;
        Self::start_with(test, agents, controller, Vec::new()).await
    }

    /// Like [`DockerCluster::start`], with the controller's config adjusted.
    pub async fn start_tuned(
        test: &str,
        agents: usize,
        tune: impl FnOnce(&mut tugboat_controller::Config),
    ) -> anyhow::Result<Self> {
        sample_image().await?;
        let controller = TestController::start_tuned(tune).await?;
        Self::start_with(test, agents, controller, Vec::new()).await
    }

    /// Agents with extra flags each (`--cpus 1 --memory 1Gi`…): nodes of different
    /// sizes on one machine.
    pub async fn start_with_agent_args(
        test: &str,
        agent_args: Vec<Vec<String>>,
    ) -> anyhow::Result<Self> {
        sample_image().await?;
        let controller = TestController::start().await?;
        let n = agent_args.len();
        Self::start_with(test, n, controller, agent_args).await
    }

    /// Two nodes sharing this host as separate nodes, on 127.0.0.`first` and
    /// 127.0.0.`first+1` (their InternalIP, log and tunnel listener, node ports
    /// and hostPorts), each agent also given `extra` flags. Tests running at once
    /// take distinct `first`s so that they never share a node port.
    pub async fn start_loopback_nodes(
        test: &str,
        first: u8,
        extra: &[&str],
    ) -> anyhow::Result<(Self, Vec<String>)> {
        Self::start_loopback_nodes_tuned(test, first, extra, |_| {}).await
    }

    /// [`DockerCluster::start_loopback_nodes`] with the controller's config
    /// adjusted by `tune`.
    pub async fn start_loopback_nodes_tuned(
        test: &str,
        first: u8,
        extra: &[&str],
        tune: impl FnOnce(&mut tugboat_controller::Config),
    ) -> anyhow::Result<(Self, Vec<String>)> {
        let ips: Vec<String> = (0..2).map(|i| format!("127.0.0.{}", first + i)).collect();
        let args: Vec<Vec<String>> = ips
            .iter()
            .map(|ip| {
                let mut a = vec![
                    "--address".to_string(),
                    ip.clone(),
                    "--listen".to_string(),
                    format!("{ip}:0"),
                    "--host-port-ip".to_string(),
                    ip.clone(),
                ];
                a.extend(extra.iter().map(|s| s.to_string()));
                a
            })
            .collect();
        sample_image().await?;
        let controller = TestController::start_tuned(tune).await?;
        let n = args.len();
        let c = Self::start_with(test, n, controller, args).await?;
        Ok((c, ips))
    }

    /// Like [`DockerCluster::start`], with the controller as a process of its own
    /// (to kill it with SIGKILL).
    pub async fn start_with_controller_process(test: &str, agents: usize) -> anyhow::Result<Self> {
        sample_image().await?;
        let controller = TestController::start_process().await?;
        Self::start_with(test, agents, controller, Vec::new()).await
    }

    /// Like [`DockerCluster::start_with_controller_process`], with extra flags
    /// for each agent.
    pub async fn start_with_controller_process_and_args(
        test: &str,
        agent_args: Vec<Vec<String>>,
    ) -> anyhow::Result<Self> {
        sample_image().await?;
        let controller = TestController::start_process().await?;
        let n = agent_args.len();
        Self::start_with(test, n, controller, agent_args).await
    }

    /// Several controllers of one cluster (processes on one etcd, the first
    /// started first), and `agents` agent processes given all of their
    /// addresses; the cluster's client fails over between them too.
    pub async fn start_on_controllers(
        test: &str,
        agents: usize,
        controllers: Vec<TestController>,
    ) -> anyhow::Result<Self> {
        sample_image().await?;
        let mut all = controllers.into_iter();
        let controller = all.next().ok_or_else(|| anyhow::anyhow!("no controller"))?;
        let others: Vec<TestController> = all.collect();
        Self::start_with_others(test, agents, controller, Vec::new(), others).await
    }

    async fn start_with(
        test: &str,
        agents: usize,
        controller: TestController,
        agent_args: Vec<Vec<String>>,
    ) -> anyhow::Result<Self> {
        Self::start_with_others(test, agents, controller, agent_args, Vec::new()).await
    }

    async fn start_with_others(
        test: &str,
        agents: usize,
        controller: TestController,
        agent_args: Vec<Vec<String>>,
        other_controllers: Vec<TestController>,
    ) -> anyhow::Result<Self> {
        let servers = std::iter::once(&controller)
            .chain(&other_controllers)
            .map(|c| c.url.clone())
            .collect::<Vec<_>>()
            .join(",");
        let client = match &controller.credentials {
            Some(creds) if !other_controllers.is_empty() => {
                Client::with_credentials(&servers, creds)?
            }
            _ => controller.client.clone(),
        };
        let id = unique(test);
        let config_dir = tempfile::tempdir()?;
        let join_token = controller.join_token().await?;
        let mut cluster = DockerCluster {
            client: client.clone(),
            namespace: id.clone(),
            nodes: (1..=agents).map(|i| format!("{id}-node-{i}")).collect(),
            agents: Vec::new(),
            controller,
            config_dir,
            network: None,
            agent_containers: Vec::new(),
            agent_args: agent_args.clone(),
            join_token,
            other_controllers,
            servers,
        };
        create_namespace(&client, &id).await?;
        for i in 0..agents {
            let p = cluster.spawn_agent(i, true)?;
            cluster.agents.push(Some(p));
        }
        wait_nodes_ready(&client, &cluster.nodes).await?;
        Ok(cluster)
    }

    /// Agent `i`'s state directory (where it keeps its credential).
    pub fn agent_state_dir(&self, i: usize) -> std::path::PathBuf {
        self.config_dir.path().join("agents").join(&self.nodes[i])
    }

    /// Starts `tug agent` for node `i`: the first time with the join token,
    /// after that with the credential it kept, as a restarted agent does.
    fn spawn_agent(&self, i: usize, first: bool) -> anyhow::Result<TugProcess> {
        let config = self.config_dir.path().join("config.json");
        let state = self.agent_state_dir(i);
        let state = state.to_string_lossy();
        let mut args: Vec<&str> = vec![
            "agent",
            "--server",
            &self.servers,
            "--state-dir",
            &state,
            "--node",
            &self.nodes[i],
            "--backoff-initial",
            "0.5",
            "--backoff-max",
            "4",
        ];
        if first {
            args.extend(["--token", self.join_token.as_str()]);
        }
        if let Some(extra) = self.agent_args.get(i) {
            args.extend(extra.iter().map(String::as_str));
        }
        TugProcess::spawn(&args, &config)
    }

    /// Agents as containers of our own image (`tugboat/agent:latest`, built from this
    /// workspace's `tug`) on a private Docker network, reaching an in-process
    /// controller on the network's gateway: a node can be cut off with
    /// [`DockerCluster::partition`] and healed with [`DockerCluster::heal`].
    pub async fn start_networked(test: &str, agents: usize) -> anyhow::Result<Self> {
        sample_image().await?;
        let tug = tug_binary()?;
        let runtime = tugboat_agent::runtime::docker::DockerRuntime::connect(None).await?;
        tugboat_agent::image::ensure_image(
            &runtime,
            &tug,
            tugboat_agent::image::AGENT_IMAGE,
            &tugboat_agent::image::AGENT,
            true,
        )
        .await?;
        let id = unique(test);
        let network = format!("tug-{id}");
        docker(&[
            "network",
            "create",
            "--label",
            &format!("io.tugboat.test={id}"),
            &network,
        ])?;
        // From here on, Drop cleans up the network even if setting up fails.
        let gateway = match docker(&[
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Gateway}}",
            &network,
        ]) {
            Ok(g) => g,
            Err(e) => {
                let _ = docker(&["network", "rm", &network]);
                return Err(e);
            }
        };
        let controller = match TestController::start_at(gateway.parse()?).await {
            Ok(c) => c,
            Err(e) => {
                let _ = docker(&["network", "rm", &network]);
                return Err(e);
            }
        };
        let client = controller.client.clone();
        let controller_url = controller.url.clone();
        let join_token = match controller.join_token().await {
            Ok(t) => t,
            Err(e) => {
                let _ = docker(&["network", "rm", &network]);
                return Err(e);
            }
        };
        let mut cluster = DockerCluster {
            client: client.clone(),
            namespace: id.clone(),
            nodes: (1..=agents).map(|i| format!("{id}-node-{i}")).collect(),
            agents: Vec::new(),
            controller,
            config_dir: tempfile::tempdir()?,
            network: Some(network.clone()),
            agent_containers: Vec::new(),
            agent_args: Vec::new(),
            join_token: join_token.clone(),
            other_controllers: Vec::new(),
            servers: controller_url,
        };
        create_namespace(&client, &id).await?;
        for (i, node) in cluster.nodes.clone().iter().enumerate() {
            let name = format!("tug-{id}-agent-{}", i + 1);
            docker(&[
                "run",
                "-d",
                "--name",
                &name,
                "--label",
                &format!("io.tugboat.test={id}"),
                "--network",
                &network,
                "-v",
                "/var/run/docker.sock:/var/run/docker.sock",
                "-e",
                "RUST_LOG=info",
                tugboat_agent::image::AGENT_IMAGE,
                "agent",
                "--server",
                &cluster.controller.url,
                "--token",
                &join_token,
                "--state-dir",
                "/var/lib/tugboat",
                "--node",
                node,
                "--address",
                "auto",
                "--listen",
                "0.0.0.0:10250",
                "--backoff-initial",
                "0.5",
                "--backoff-max",
                "4",
            ])?;
            cluster.agent_containers.push(name);
        }
        wait_nodes_ready(&client, &cluster.nodes).await?;
        Ok(cluster)
    }

    /// Cuts agent container `i` off the network (its process keeps running).
    pub fn partition(&self, i: usize) -> anyhow::Result<()> {
        let network = self
            .network
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("not a networked cluster"))?;
        docker(&["network", "disconnect", network, &self.agent_containers[i]]).map(|_| ())
    }

    /// Reconnects agent container `i`.
    pub fn heal(&self, i: usize) -> anyhow::Result<()> {
        let network = self
            .network
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("not a networked cluster"))?;
        docker(&["network", "connect", network, &self.agent_containers[i]]).map(|_| ())
    }

    /// The process id of agent `i` (`None` once killed, or for an agent container).
    pub fn agent_pid(&self, i: usize) -> Option<u32> {
        self.agents.get(i)?.as_ref()?.child.id()
    }

    /// SIGKILLs agent `i` (its containers keep running).
    pub async fn kill_agent(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut p) = self.agents[i].take() {
            p.kill9().await?;
        }
        Ok(())
    }

    /// Joins one more agent (a new node, named like the others) and waits for
    /// its node to be Ready; returns the node's name.
    pub async fn add_agent(&mut self) -> anyhow::Result<String> {
        let i = self.nodes.len();
        let name = self.nodes[0]
            .rsplit_once("-node-")
            .map(|(prefix, _)| format!("{prefix}-node-{}", i + 1))
            .unwrap_or_else(|| format!("{}-node-{}", self.namespace, i + 1));
        self.nodes.push(name.clone());
        let p = self.spawn_agent(i, true)?;
        self.agents.push(Some(p));
        wait_nodes_ready(&self.client, &self.nodes[i..]).await?;
        Ok(name)
    }

    /// Starts agent `i` again.
    pub fn restart_agent(&mut self, i: usize) -> anyhow::Result<()> {
        let p = self.spawn_agent(i, false)?;
        self.agents[i] = Some(p);
        Ok(())
    }

    pub async fn apply(&self, manifest: &Value) -> anyhow::Result<Value> {
        let info = tugboat_api::resource::by_kind(
            manifest["apiVersion"].as_str().unwrap_or(""),
            manifest["kind"].as_str().unwrap_or(""),
        )
        .ok_or_else(|| anyhow::anyhow!("unknown kind in {manifest}"))?;
        Ok(self
            .client
            .create(info, Some(&self.namespace), manifest)
            .await?)
    }

    pub async fn pods(&self, selector: &str) -> anyhow::Result<Vec<Value>> {
        let params = ListParams {
            label_selector: Some(selector.to_string()),
            ..Default::default()
        };
        let list = self
            .client
            .list(&PODS, Some(&self.namespace), &params)
            .await?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// The endpoints of Service `svc`'s EndpointSlices: (pod name, ready),
    /// sorted; none when they cannot be read (yet).
    pub async fn slice_endpoints(&self, svc: &str) -> Vec<(String, bool)> {
        let params = ListParams {
            label_selector: Some(format!("kubernetes.io/service-name={svc}")),
            ..Default::default()
        };
        let Ok(list) = self
            .client
            .list(&ENDPOINTSLICES, Some(&self.namespace), &params)
            .await
        else {
            return Vec::new();
        };
        let mut out: Vec<(String, bool)> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .map(|ep| {
                (
                    ep["targetRef"]["name"].as_str().unwrap_or("").to_string(),
                    ep["conditions"]["ready"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// How many of Service `svc`'s endpoints are ready.
    pub async fn ready_endpoints(&self, svc: &str) -> usize {
        self.slice_endpoints(svc)
            .await
            .iter()
            .filter(|(_, ready)| *ready)
            .count()
    }

    /// This test's pods' containers as Docker lists them (`docker ps -a`),
    /// without the pods' sandboxes.
    pub fn containers(&self, running_only: bool) -> anyhow::Result<Vec<DockerContainer>> {
        Ok(self
            .all_containers(running_only)?
            .into_iter()
            .filter(|c| !c.sandbox)
            .collect())
    }

    /// This test's pods' containers and sandboxes.
    pub fn all_containers(&self, running_only: bool) -> anyhow::Result<Vec<DockerContainer>> {
        docker_ps(
            &format!("label=io.kubernetes.pod.namespace={}", self.namespace),
            running_only,
        )
    }

    pub fn config_dir(&self) -> &Path {
        self.config_dir.path()
    }
}

#[derive(Debug, Clone)]
pub struct DockerContainer {
    pub id: String,
    pub name: String,
    pub node: String,
    pub pod: String,
    pub running: bool,
    pub started_at: String,
    /// A pod's sandbox (its network namespace's holder), not one of its containers.
    pub sandbox: bool,
}

/// `docker ps` through the CLI, independently of our own Docker code.
pub fn docker_ps(filter: &str, running_only: bool) -> anyhow::Result<Vec<DockerContainer>> {
    let mut args = vec!["ps", "--no-trunc", "-q", "--filter", filter];
    if !running_only {
        args.push("-a");
    }
    let out = std::process::Command::new("docker").args(&args).output()?;
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let out = std::process::Command::new("docker")
        .arg("inspect")
        .args(&ids)
        .output()?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .map(|c| DockerContainer {
            id: c["Id"].as_str().unwrap_or("").to_string(),
            name: c["Name"]
                .as_str()
                .unwrap_or("")
                .trim_start_matches('/')
                .to_string(),
            node: c["Config"]["Labels"]["io.tugboat.node"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            pod: c["Config"]["Labels"]["io.kubernetes.pod.name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            running: c["State"]["Running"].as_bool().unwrap_or(false),
            started_at: c["State"]["StartedAt"].as_str().unwrap_or("").to_string(),
            sandbox: c["Config"]["Labels"]["io.kubernetes.docker.type"] == "podsandbox",
        })
        .collect())
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        for a in self.agents.iter_mut().flatten() {
            let _ = a.child.start_kill();
        }
        for name in &self.agent_containers {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", name])
                .output();
        }
        // Only what this test created: containers labelled with its namespace.
        let filter = format!("label=io.kubernetes.pod.namespace={}", self.namespace);
        if let Ok(out) = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
        // Everything on this test's nodes (named for the test): the nodes'
        // service sandboxes, and pods of other namespaces such as a
        // DaemonSet's in kube-system.
        for node in &self.nodes {
            let filter = format!("label=io.tugboat.node={node}");
            if let Ok(out) = std::process::Command::new("docker")
                .args(["ps", "-aq", "--filter", &filter])
                .output()
            {
                for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = std::process::Command::new("docker")
                        .args(["rm", "-f", id])
                        .output();
                }
            }
        }
        if let Some(network) = &self.network {
            let _ = std::process::Command::new("docker")
                .args(["network", "rm", network])
                .output();
        }
    }
}

async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    client.create(&NAMESPACES, None, &ns).await?;
    Ok(())
}

/// Waits until every one of `nodes` reports Ready=True.
async fn wait_nodes_ready(client: &Client, nodes: &[String]) -> anyhow::Result<()> {
    eventually("every agent's node is Ready", || async {
        let list = client
            .list(&NODES, None, &ListParams::default())
            .await
            .ok()?;
        let ready: Vec<&str> = list["items"]
            .as_array()?
            .iter()
            .filter(|n| {
                n["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .filter_map(|n| n["metadata"]["name"].as_str())
            .collect();
        nodes
            .iter()
            .all(|w| ready.contains(&w.as_str()))
            .then_some(())
    })
    .await
}

/// Runs the docker CLI, failing with its stderr.
pub fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("docker").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A Deployment of the sample image that stops quickly.
pub fn sample_deployment(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{
                        "name": "web",
                        "image": "tugboat/sample:latest",
                        "imagePullPolicy": "IfNotPresent",
                        "ports": [{"containerPort": 8080}]
                    }]
                }
            }
        }
    })
}

/// One `GET path` on a new connection to `addr` (a forwarded local port):
/// the status code and the body, or an error after 10 s.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let limit = std::time::Duration::from_secs(10);
    let raw = tokio::time::timeout(limit, async {
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        conn.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    })
    .await
    .map_err(|_| anyhow::anyhow!("GET {path} from {addr}: no answer within {limit:?}"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("GET {path} from {addr}: not an HTTP answer: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("GET {path} from {addr}: no status in {head:?}"))?;
    Ok((status, body.to_string()))
}
