//! `tug down`: stops the local cluster — SIGTERM to the `tug up` whose pid is in
//! the data directory (only if it is one), then waits for it to exit — leaving its
//! containers and data for the next `tug up` to adopt. `tug down --purge` then
//! also removes what it left behind: every container carrying Tugboat's node label
//! on this Docker engine, the controller's data directory and the kubeconfig
//! context `tug up` merged.

use std::time::Duration;

use anyhow::Context as _;
use tugboat_agent::runtime::docker::DockerRuntime;
use tugboat_agent::runtime::{ContainerRuntime as _, LABEL_NODE};

use crate::args::DownArgs;
use crate::background::{self, Stopped};
use crate::commands::controller::data_dir;
use crate::context::Context;

/// How long `tug up` may take to stop gracefully.
const STOP_WITHIN: Duration = Duration::from_secs(30);

pub async fn run(args: DownArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let dir = data_dir(args.data_dir.clone(), ctx)?;
    match background::stop(&dir, STOP_WITHIN).await? {
        Stopped::Stopped(pid) => writeln!(ctx.out, "tug up (pid {pid}) stopped")?,
        Stopped::NotRunning => writeln!(ctx.out, "no tug up is running on {}", dir.display())?,
    }
    if !args.purge {
        writeln!(
            ctx.out,
            "containers and data kept: the next `tug up` adopts them (`tug down --purge` removes them)"
        )?;
        return Ok(());
    }
    purge(args, dir, ctx).await
}

/// Removes every container an agent created and the data directory.
async fn purge(
    args: DownArgs,
    dir: std::path::PathBuf,
    ctx: &mut Context<'_>,
) -> anyhow::Result<()> {
    let runtime = DockerRuntime::connect(args.docker.as_deref())
        .await
        .context("cannot connect to Docker (is the daemon running? see --docker)")?;
    // Only ours: containers an agent created carry the node label.
    let all = runtime.list(&[]).await?;
    let ours: Vec<_> = all
        .into_iter()
        .filter(|c| c.labels.contains_key(LABEL_NODE))
        .collect();
    for c in &ours {
        if c.state.running {
            runtime.stop(&c.id, Duration::from_secs(2)).await?;
        }
        runtime.remove(&c.id).await?;
        writeln!(ctx.out, "container {} removed", c.name)?;
    }
    forget_context(&dir, ctx);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
        writeln!(ctx.out, "data directory {} removed", dir.display())?;
    }
    writeln!(ctx.out, "{} container(s) removed", ours.len())?;
    Ok(())
}

/// Removes context `tugboat` from the kubeconfig `tug up` merged it into, if it
/// is this cluster's (its CA is the one in `data_dir`), as `kind delete
/// cluster` does: a kubeconfig pointing at a cluster that is gone only misleads.
fn forget_context(data_dir: &std::path::Path, ctx: &mut Context<'_>) {
    use tugboat_tls::kubeconfig::Kubeconfig;
    let Ok(ca) = std::fs::read(data_dir.join("tls").join("ca.crt")) else {
        return;
    };
    let Ok(target) = crate::commands::kubeconfig::merge_target(ctx) else {
        return;
    };
    let context = tugboat_controller::pki::KUBECONFIG_CONTEXT;
    let Ok(Some(mut config)) = Kubeconfig::read(&target) else {
        return;
    };
    let ours = config
        .resolve(Some(context), &target.display().to_string())
        .is_ok_and(|r| r.credentials.ca_pem.as_deref() == Some(ca.as_slice()));
    if ours && config.remove_context(context) {
        match config.write(&target) {
            Ok(()) => {
                let _ = writeln!(
                    ctx.out,
                    "context {context} removed from {}",
                    target.display()
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot remove context {context} from {}", target.display())
            }
        }
    }
}
