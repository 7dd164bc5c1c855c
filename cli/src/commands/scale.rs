//! `tug scale deployment/web --replicas 3`: sets replicas through the `/scale`
//! subresource, so nothing else in the spec is touched.

use anyhow::{bail, ensure};

use crate::args::ScaleArgs;
use crate::context::Context;
use crate::output::qualified_name;
use crate::target::parse_targets;

pub async fn run(args: ScaleArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let Some(replicas) = args.replicas else {
        bail!(
            "--replicas is required: say how many replicas to run, e.g. `tug scale deployment/web --replicas 3`"
        );
    };
    ensure!(
        replicas >= 0,
        "--replicas must be 0 or more, not {replicas}"
    );
    let replicas = i32::try_from(replicas)
        .map_err(|_| anyhow::anyhow!("--replicas {replicas} is too large"))?;
    let targets = parse_targets(&args.targets)?;
    for t in &targets {
        ensure!(
            t.resource.has_scale,
            "{} cannot be scaled; scale deployments or replicasets",
            t.resource.plural
        );
        if t.name.is_none() {
            bail!(
                "say which {} to scale: `tug scale {}/NAME --replicas {replicas}`",
                t.resource.singular,
                t.resource.singular
            );
        }
    }
    let client = ctx.client()?;
    let ns = ctx.namespace().to_string();
    for t in targets {
        let name = t.name.unwrap_or_default();
        client.scale(t.resource, Some(&ns), &name, replicas).await?;
        writeln!(ctx.out, "{} scaled", qualified_name(t.resource, &name))?;
    }
    Ok(())
}
