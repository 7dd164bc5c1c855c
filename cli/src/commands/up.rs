//! `tug up`: a whole local cluster in one process — the controller plus N agents
//! (`node-1`..`node-N`) on the local Docker. It builds the sample image if it is
//! missing, records the server for later `tug` commands, merges the admin
//! kubeconfig into `~/.kube/config` (context `tugboat`, so kubectl works too),
//! prints what to try next, and on Ctrl-C stops the control plane while the
//! workloads keep running. Its agents join the way remote ones do: with a
//! short-lived join token, the first time; their credentials are kept under
//! `DATA_DIR/agents/NODE`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tugboat_agent::image::{self, SAMPLE_IMAGE};
use tugboat_agent::runtime::docker::DockerRuntime;

use crate::args::UpArgs;
use crate::commands::controller::{bind_and_record, controller_config, data_dir, security};
use crate::context::Context;

pub async fn run(args: UpArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    if args.agents == 0 || args.agents > 50 {
        bail!("--agents: expected 1 to 50 agents, got {}", args.agents);
    }
    let data_dir = data_dir(args.data_dir, ctx)?;
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
    writeln!(
        ctx.out,
        "Tugboat is up: controller at {url}, nodes {}, data in {}.\n\
         \n\
         Try, in another terminal:\n  \
           tug apply -f manifests/web.yaml\n  \
           tug get pods -o wide\n  \
           tug logs POD_NAME\n  \
           tug scale deployment/web --replicas 5\n  \
           tug get events -w\n\
         \n\
         Ctrl-C stops the control plane; the containers keep running and are adopted on the next `tug up`.",
        nodes.join(", "),
        data_dir.display()
    )?;
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
