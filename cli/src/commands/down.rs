//! `tug down`: removes what a local cluster left behind — every container carrying
//! Tugboat's node label on this Docker engine, and the controller's data directory.
//! Stop `tug up` (or the controller and agents) first, or they recreate pods.

use std::time::Duration;

use anyhow::Context as _;
use tugboat_agent::runtime::docker::DockerRuntime;
use tugboat_agent::runtime::{ContainerRuntime as _, LABEL_NODE};

use crate::args::DownArgs;
use crate::commands::controller::data_dir;
use crate::context::Context;

pub async fn run(args: DownArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
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
    if !args.keep_data {
        let dir = data_dir(args.data_dir, ctx)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
            writeln!(ctx.out, "data directory {} removed", dir.display())?;
        }
    }
    writeln!(ctx.out, "{} container(s) removed", ours.len())?;
    Ok(())
}
