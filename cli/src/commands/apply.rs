//! `tug apply -f`: client-side apply as kubectl does it. Each object is created if
//! missing, left alone if it already says what the manifest says, or patched with a
//! three-way JSON merge patch (see `merge.rs`). Every document is tried; failures are
//! reported together at the end. With `--wait`, every Deployment applied is then
//! followed until it has rolled out, as `tug rollout status` follows one.

use anyhow::Context as _;
use serde_json::Value;
use tugboat_api::resource::DEPLOYMENTS;
use tugboat_api::{Client, PatchType};

use crate::args::ApplyArgs;
use crate::context::Context;
use crate::error::{self, is_unreachable};
use crate::manifests::{Document, Located, locate, read_sources};
use crate::merge::{self, Plan};
use crate::output::qualified_name;
use crate::rollout::wait::{self, Follow};

pub async fn run(args: ApplyArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let docs = read_sources(&args.filenames)?;
    let client = ctx.client()?;
    let default_ns = ctx.namespace().to_string();
    let mut errors = Vec::new();
    let mut deployments = Vec::new();
    for doc in &docs {
        let result = apply_one(&client, doc, &default_ns, ctx.namespace_flag.as_deref()).await;
        // Like kubectl: the server's warnings go to stderr, before the result line.
        for w in client.take_warnings() {
            eprintln!("Warning: {w}");
        }
        match result {
            Ok((line, loc)) => {
                writeln!(ctx.out, "{line}")?;
                if *loc.resource == DEPLOYMENTS {
                    deployments.push(loc);
                }
            }
            // With no server there is nothing more to try.
            Err(e) if is_unreachable(&e) => return Err(e),
            Err(e) => errors.push(e),
        }
    }
    if args.wait {
        // One deadline for them all: --timeout bounds the whole wait.
        let follow = Follow::until_done(args.timeout, ctx.env.terminal);
        for loc in deployments {
            let ns = loc.namespace.as_deref().unwrap_or(&default_ns);
            let waited =
                wait::rollout(&client, ns, &loc.name, follow, &mut *ctx.out, &ctx.shutdown).await;
            match waited {
                Ok(()) => {}
                Err(e) if is_unreachable(&e) => return Err(e),
                Err(e) => errors.push(e),
            }
        }
    }
    error::collect(errors)
}

/// Applies one document; returns the line to print (`deployment.apps/web created`)
/// and where the object is.
async fn apply_one(
    client: &Client,
    doc: &Document,
    default_ns: &str,
    ns_flag: Option<&str>,
) -> anyhow::Result<(String, Located)> {
    let loc = locate(doc, default_ns, ns_flag)?;
    let line = apply_located(client, doc, &loc).await?;
    Ok((line, loc))
}

/// What client-side apply sends of the manifest, in its namespace
/// (`merge::desired`).
pub(crate) fn desired_for(doc: &Document, loc: &Located) -> merge::Desired {
    let mut manifest = doc.object.clone();
    if let (Some(ns), Some(meta)) = (
        &loc.namespace,
        manifest.get_mut("metadata").and_then(Value::as_object_mut),
    ) {
        meta.insert("namespace".to_string(), Value::String(ns.clone()));
    }
    merge::desired(&manifest)
}

async fn apply_located(client: &Client, doc: &Document, loc: &Located) -> anyhow::Result<String> {
    let desired = desired_for(doc, loc);
    let name = qualified_name(loc.resource, &loc.name);
    let ns = loc.namespace.as_deref();
    match client.get(loc.resource, ns, &loc.name).await {
        Err(e) if e.is_not_found() => {
            client
                .create(loc.resource, ns, &desired.object)
                .await
                .with_context(|| format!("error when creating {:?}", doc.source))?;
            Ok(format!("{name} created"))
        }
        Err(e) => Err(e).with_context(|| {
            format!(
                "error when retrieving the current configuration of {name} from {:?}",
                doc.source
            )
        }),
        Ok(live) => match merge::plan(&desired, &live) {
            Plan::Unchanged => Ok(format!("{name} unchanged")),
            Plan::Patch(patch) => {
                client
                    .patch(loc.resource, ns, &loc.name, &patch, PatchType::Merge)
                    .await
                    .with_context(|| format!("error when applying {name} from {:?}", doc.source))?;
                Ok(format!("{name} configured"))
            }
        },
    }
}
