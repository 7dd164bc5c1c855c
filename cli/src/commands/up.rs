//! `tug up`: a whole local cluster in one process — the controller plus N agents
//! (`node-1`..`node-N`) on the local Docker. It builds the sample image if it is
//! missing, records the server for later `tug` commands, prints what to try next,
//! and on Ctrl-C stops the control plane while the workloads keep running.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tugboat_agent::image::{self, SAMPLE_IMAGE};
use tugboat_agent::runtime::docker::DockerRuntime;

use crate::args::UpArgs;
use crate::commands::controller::{bind_and_record, controller_config, data_dir};
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
    let config = controller_config(data_dir.clone(), &args.tuning)?;
    let (listener, url) = bind_and_record(args.listen, ctx).await?;
    let shutdown = ctx.shutdown.clone();
    let controller = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { tugboat_controller::run(listener, config, shutdown).await }
    });
    let mut agents = Vec::new();
    let nodes: Vec<String> = (1..=args.agents).map(|i| format!("node-{i}")).collect();
    let cluster = crate::commands::agent::cluster_config(
        &args.cluster,
        &args.tuning.service_cidr.to_string(),
        &runtime,
    )
    .await?;
    let runtime = Arc::new(runtime);
    for (i, node) in nodes.iter().enumerate() {
        let mut config = tugboat_agent::Config::new(&url, node);
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
    let client = ctx.client()?;
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

async fn runtime_has(runtime: &DockerRuntime, image: &str) -> bool {
    use tugboat_agent::runtime::ContainerRuntime as _;
    runtime.image_id(image).await.ok().flatten().is_some()
}
