//! `tug up`: a whole local cluster in one process — the controller plus N agents
//! (`node-1`..`node-N`) on the local Docker. It builds the sample image if it is
//! missing, records the server for later `tug` commands, merges the admin
//! kubeconfig into `~/.kube/config` (context `tugboat`, so kubectl works too),
//! prints what to try next, and on Ctrl-C stops the control plane while the
//! workloads keep running. Its agents join the way remote ones do: with a
//! short-lived join token, the first time; their credentials are kept under
//! `DATA_DIR/agents/NODE`. While it runs its pid is in `DATA_DIR/tug-up.pid`, so a
//! second `tug up` is refused and `tug down` can stop it; `tug up -d` runs it in
//! the background and returns once every node is Ready (`crate::background`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tugboat_agent::image::{self, SAMPLE_IMAGE};
use tugboat_agent::runtime::docker::DockerRuntime;

use crate::args::UpArgs;
use crate::background::{self, PidFile};
use crate::commands::controller::{bind_and_record, controller_config, data_dir, security};
use crate::context::Context;

/// How long `tug up -d` waits for every node to be Ready (the first start
/// builds the sample image).
const READY_WITHIN: Duration = Duration::from_secs(180);

pub async fn run(args: UpArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    if args.agents == 0 || args.agents > 50 {
        bail!("--agents: expected 1 to 50 agents, got {}", args.agents);
    }
    if args.detach {
        return detach(args, ctx).await;
    }
    let data_dir = data_dir(args.data_dir, ctx)?;
    // Held until the cluster stops: one `tug up` per data directory.
    let _pid_file = PidFile::claim(&data_dir)?;
    let runtime = DockerRuntime::connect(args.docker.as_deref())
        .await
        .context("cannot connect to Docker (is the daemon running? see --docker)")?;
    match image::find_sample_binary() {
        Some(binary) => {
            let id =
                image::ensure_sample_image(&runtime, &binary, SAMPLE_IMAGE, args.rebuild_image)
                    .await
                    .with_context(|| {
                        format!("cannot build {SAMPLE_IMAGE} from {}", binary.display())
                    })?;
            tracing::info!(image = SAMPLE_IMAGE, id = %id, "sample image ready");
        }
        None if runtime_has(&runtime, SAMPLE_IMAGE).await => {}
        None => tracing::warn!(
            "{SAMPLE_IMAGE} is missing and no tug-sample binary was found next to tug; build it with `cargo build --release` to use the example manifests"
        ),
    }
    let mut config = controller_config(data_dir.clone(), &args.tuning)?;
    config.security = security(&args.security);
    let (listener, url) = bind_and_record(args.listen, &config.security, &data_dir, ctx).await?;
    let tls = config.security != tugboat_controller::Security::InsecureHttp;
    let shutdown = ctx.shutdown.clone();
    let controller = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { tugboat_controller::run(listener, config, shutdown).await }
    });
    let nodes: Vec<String> = (1..=args.agents).map(|i| format!("node-{i}")).collect();
    let client = match admin_client(&data_dir, &url, tls, &shutdown).await {
        Ok(c) => c,
        Err(e) => {
            shutdown.cancel();
            let _ = controller.await;
            return Err(e);
        }
    };
    let credentials = match join_agents(&client, &url, &data_dir, &nodes, tls).await {
        Ok(c) => c,
        Err(e) => {
            shutdown.cancel();
            let _ = controller.await;
            return Err(e);
        }
    };
    if tls && !args.no_kubeconfig {
        let admin = tugboat_tls::kubeconfig::Kubeconfig::read(
            &data_dir.join(tugboat_controller::pki::ADMIN_KUBECONFIG),
        )?
        .context("the controller wrote no admin kubeconfig")?;
        match crate::commands::kubeconfig::merge_target(ctx) {
            Ok(target) => match crate::commands::kubeconfig::merge(&admin, &target) {
                Ok(()) => {
                    tracing::info!(kubeconfig = %target.display(), "merged context tugboat and made it current (kubectl uses it)")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot merge the admin kubeconfig into {}", target.display())
                }
            },
            Err(e) => tracing::warn!(error = %e, "not merging the admin kubeconfig"),
        }
    }
    let mut agents = Vec::new();
    let cluster = crate::commands::agent::cluster_config(
        &args.cluster,
        &args.tuning.service_cidr.to_string(),
        &runtime,
    )
    .await?;
    let runtime = Arc::new(runtime);
    for ((i, node), credential) in nodes.iter().enumerate().zip(credentials) {
        let mut config = tugboat_agent::Config::new(&url, node);
        config.credential = credential;
        config.cluster = cluster.clone();
        config.state_dir = Some(data_dir.join("agents").join(node));
        // Each node on its own loopback address, so that every node serves the
        // same node ports: node-1 on 127.0.0.1, node-2 on 127.0.0.2…
        config.host_port_ip = Some(format!("127.0.0.{}", i + 1));
        let runtime = runtime.clone();
        let shutdown = shutdown.clone();
        agents.push(tokio::spawn(async move {
            tugboat_agent::run(config, runtime, shutdown).await
        }));
    }
    // Say hello once the nodes are registered (or after a few seconds regardless).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline && !shutdown.is_cancelled() {
        let ready = client
            .list(&tugboat_api::resource::NODES, None, &Default::default())
            .await
            .ok()
            .and_then(|l| l["items"].as_array().map(Vec::len))
            .unwrap_or(0);
        if ready >= nodes.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    writeln!(ctx.out, "{}", banner(&url, &nodes, &data_dir, None))?;
    ctx.out.flush()?;
    let result = controller.await.context("the controller task failed")?;
    for a in agents {
        match a.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "an agent stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "an agent task failed"),
        }
    }
    result.context("the controller stopped")
}

/// What `tug up` says once the cluster is up; `background` is the pid of a
/// detached one.
fn banner(
    url: &str,
    nodes: &[String],
    data_dir: &std::path::Path,
    background: Option<u32>,
) -> String {
    let stop = match background {
        None => "Ctrl-C stops the control plane; the containers keep running and are adopted on the next `tug up`.".to_string(),
        Some(pid) => format!(
            "It runs in the background (pid {pid}, log in {}). `tug down` stops it; the containers keep running and are adopted on the next `tug up`. `tug down --purge` removes them and the data.",
            data_dir.join(background::LOG_FILE).display()
        ),
    };
    format!(
        "Tugboat is up: controller at {url}, nodes {}, data in {}.\n\
         \n\
         Try, in another terminal:\n  \
           tug apply -f manifests/web.yaml\n  \
           tug get pods -o wide\n  \
           tug logs POD_NAME\n  \
           tug scale deployment/web --replicas 5\n  \
           tug get events -w\n\
         \n\
         {stop}",
        nodes.join(", "),
        data_dir.display()
    )
}

/// `tug up -d`: the same `tug up` started again in the background; returns once
/// every one of its nodes is Ready, or says why not (with the end of its log).
async fn detach(args: UpArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let data_dir = data_dir(args.data_dir.clone(), ctx)?;
    if let Some(pid) = background::running(&data_dir) {
        bail!("{}", background::already_running(&data_dir, pid));
    }
    let log = data_dir.join(background::LOG_FILE);
    let mut child = background::spawn(background::foreground_args(std::env::args_os()), &data_dir)?;
    let nodes: Vec<String> = (1..=args.agents).map(|i| format!("node-{i}")).collect();
    let tls = !args.security.insecure_http;
    let deadline = tokio::time::Instant::now() + READY_WITHIN;
    let url = loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "tug up stopped ({status}) before the cluster was ready; the end of {}:\n{}",
                log.display(),
                background::log_tail(&data_dir, 20)
            );
        }
        if ctx.shutdown.is_cancelled() {
            // Ctrl-C while starting: the start is abandoned, not left half done.
            let _ = background::stop(&data_dir, Duration::from_secs(30)).await;
            bail!("interrupted: tug up was stopped before it was ready");
        }
        let config = ctx.config_path();
        if let Some(url) = ready_at(&args, config.as_deref(), &data_dir, tls, &nodes).await {
            break url;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the nodes were not all Ready within {}s; tug up (pid {}) is still running: see {}, and `tug down` stops it",
                READY_WITHIN.as_secs(),
                child.id(),
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    writeln!(
        ctx.out,
        "{}",
        banner(&url, &nodes, &data_dir, Some(child.id()))
    )?;
    Ok(())
}

/// The controller's URL once the background `tug up` answers and all of `nodes`
/// are Ready.
async fn ready_at(
    args: &UpArgs,
    config: Option<&std::path::Path>,
    data_dir: &std::path::Path,
    tls: bool,
    nodes: &[String],
) -> Option<String> {
    use k8s_openapi::api::core::v1::Node;
    // Port 0 is chosen when bound: then the address is the one it recorded.
    let url = if args.listen.port() == 0 {
        crate::config::read_config(config?).ok()??.server?
    } else {
        tugboat_controller::client_url(args.listen, &security(&args.security))
    };
    let creds = if tls {
        let path = data_dir.join(tugboat_controller::pki::ADMIN_KUBECONFIG);
        let config = tugboat_tls::kubeconfig::Kubeconfig::read(&path).ok()??;
        tugboat_api::Credentials::from(config.resolve(None, &path.display().to_string()).ok()?)
    } else {
        Default::default()
    };
    let client = tugboat_api::Client::with_credentials(&url, &creds).ok()?;
    let listed: Vec<Node> = client
        .list_as(&tugboat_api::resource::NODES, None, &Default::default())
        .await
        .ok()?;
    let ready = |name: &String| {
        listed.iter().any(|n| {
            n.metadata.name.as_ref() == Some(name)
                && n.status
                    .iter()
                    .flat_map(|s| s.conditions.iter().flatten())
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    };
    nodes.iter().all(ready).then_some(url)
}

/// An admin client for the controller just started at `url`, once it answers
/// (its admin kubeconfig is written before it serves).
async fn admin_client(
    data_dir: &std::path::Path,
    url: &str,
    tls: bool,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<tugboat_api::Client> {
    let path = data_dir.join(tugboat_controller::pki::ADMIN_KUBECONFIG);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let creds = if tls {
            tugboat_tls::kubeconfig::Kubeconfig::read(&path)
                .ok()
                .flatten()
                .and_then(|k| k.resolve(None, &path.display().to_string()).ok())
                .map(tugboat_api::Credentials::from)
        } else {
            Some(Default::default())
        };
        if let Some(creds) = creds {
            let client = tugboat_api::Client::with_credentials(url, &creds)?;
            if client.get_text("/readyz").await.is_ok() {
                return Ok(client);
            }
        }
        if shutdown.is_cancelled() || tokio::time::Instant::now() > deadline {
            bail!("the controller did not come up at {url} within 30 s (see the log above)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each local node's credential: kept from an earlier `tug up`, or joined now
/// with a join token made for the purpose and deleted after.
async fn join_agents(
    client: &tugboat_api::Client,
    url: &str,
    data_dir: &std::path::Path,
    nodes: &[String],
    tls: bool,
) -> anyhow::Result<Vec<Option<Arc<tugboat_agent::tls::NodeTls>>>> {
    if !tls {
        return Ok(nodes.iter().map(|_| None).collect());
    }
    let dirs: Vec<_> = nodes
        .iter()
        .map(|n| data_dir.join("agents").join(n))
        .collect();
    let need = dirs
        .iter()
        .any(|d| !d.join(tugboat_agent::join::NODE_KUBECONFIG).exists());
    let token = if need {
        let created = client
            .post_path(
                "/v1-tugboat/tokens",
                &serde_json::json!({"kind": "join", "ttlSeconds": 600, "description": "tug up"}),
            )
            .await
            .context("cannot make a join token for the local nodes")?;
        Some((
            created["id"].as_str().unwrap_or_default().to_string(),
            created["token"].as_str().unwrap_or_default().to_string(),
        ))
    } else {
        None
    };
    let mut out = Vec::new();
    let mut failed = None;
    for (node, dir) in nodes.iter().zip(&dirs) {
        match crate::commands::agent::credential(
            Some(url),
            token.as_ref().map(|(_, t)| t.as_str()),
            node,
            dir,
        )
        .await
        {
            Ok((_, tls)) => out.push(tls),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    // The token served its purpose (or failed it): it must not linger.
    if let Some((id, _)) = token {
        let _ = client
            .delete_path(&format!("/v1-tugboat/tokens/{id}"))
            .await;
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

async fn runtime_has(runtime: &DockerRuntime, image: &str) -> bool {
    use tugboat_agent::runtime::ContainerRuntime as _;
    runtime.image_id(image).await.ok().flatten().is_some()
}
