//! `tug delete TYPE NAME...` and `tug delete -f FILE`: deletes each object, carrying on
//! past the ones that fail and reporting them all at the end.

use anyhow::bail;
use tugboat_api::{Client, ResourceInfo};

use crate::args::DeleteArgs;
use crate::context::Context;
use crate::error::{self, is_not_found, is_unreachable};
use crate::manifests::{locate, read_sources};
use crate::target::parse_targets;

pub async fn run(args: DeleteArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let mut items: Vec<(&'static ResourceInfo, Option<String>, String)> = Vec::new();
    let mut errors = Vec::new();
    match (args.filenames.is_empty(), args.targets.is_empty()) {
        (false, false) => bail!("give either TYPE NAME... or -f FILE, not both"),
        (true, true) => {
            bail!("say what to delete: `tug delete TYPE NAME...` or `tug delete -f FILE`")
        }
        (false, true) => {
            for doc in read_sources(&args.filenames)? {
                match locate(&doc, ctx.namespace(), ctx.namespace_flag.as_deref()) {
                    Ok(l) => items.push((l.resource, l.namespace, l.name)),
                    Err(e) => errors.push(e),
                }
            }
        }
        (true, false) => {
            let ns = ctx.namespace().to_string();
            for t in parse_targets(&args.targets)? {
                let Some(name) = t.name else {
                    bail!(
                        "say which {} to delete: `tug delete {} NAME`",
                        t.resource.plural,
                        t.resource.singular
                    );
                };
                let ns = t.resource.namespaced.then(|| ns.clone());
                items.push((t.resource, ns, name));
            }
        }
    }
    let client = ctx.client()?;
    for (resource, ns, name) in items {
        match delete_one(&client, resource, ns.as_deref(), &name).await {
            Ok(()) => writeln!(
                ctx.out,
                "{} \"{name}\" deleted",
                resource.qualified_singular()
            )?,
            Err(e) if args.ignore_not_found && is_not_found(&e) => {}
            Err(e) if is_unreachable(&e) => return Err(e),
            Err(e) => errors.push(e),
        }
    }
    error::collect(errors)
}

async fn delete_one(
    client: &Client,
    r: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
) -> anyhow::Result<()> {
    // No context added: the server's message already reads like kubectl's.
    client.delete(r, ns, name).await?;
    Ok(())
}
