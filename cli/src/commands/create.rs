//! `tug create namespace NAME`: objects made from arguments rather than manifests.

use serde_json::json;
use tugboat_api::resource::NAMESPACES;

use crate::args::{CreateArgs, CreateCommand};
use crate::context::Context;
use crate::output::qualified_name;

pub async fn run(args: CreateArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    match args.what {
        CreateCommand::Namespace { name } => {
            let client = ctx.client()?;
            let ns = json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name},
            });
            client.create(&NAMESPACES, None, &ns).await?;
            writeln!(ctx.out, "{} created", qualified_name(&NAMESPACES, &name))?;
        }
    }
    Ok(())
}
