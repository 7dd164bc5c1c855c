//! `tug rollout status|history|undo|restart|pause|resume deployment/NAME`:
//! kubectl's rollout verbs for Deployments, in its words; `status` and
//! `restart` also take `daemonset/NAME`. What they decide lives
//! in `crate::rollout`; here they fetch, patch and print.

use anyhow::{Context as _, anyhow, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::json;
use tugboat_api::resource::{DAEMONSETS, DEPLOYMENTS};
use tugboat_api::{Client, PatchType};

use crate::args::{
    RolloutArgs, RolloutCommand, RolloutHistoryArgs, RolloutStatusArgs, RolloutTargets,
    RolloutUndoArgs,
};
use crate::context::Context;
use crate::error::{self, is_unreachable};
use crate::output::qualified_name;
use crate::rollout::wait::{self, Follow};
use crate::rollout::{RESTARTED_AT, fetch, history, undo};
use crate::target::parse_targets;

pub async fn run(args: RolloutArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    match args.what {
        RolloutCommand::Status(a) => status(a, ctx).await,
        RolloutCommand::History(a) => {
            for_each(&a.targets.clone(), "history", ctx, |c, ns, name| {
                history_of(c, ns, name, &a)
            })
            .await
        }
        RolloutCommand::Undo(a) => {
            for_each(&a.targets.clone(), "undo", ctx, |c, ns, name| {
                undo_one(c, ns, name, &a)
            })
            .await
        }
        RolloutCommand::Restart(RolloutTargets { targets }) => {
            if let Some(names) = daemonsets(&targets)? {
                return restart_daemonsets(names, ctx).await;
            }
            for_each(&targets, "restart", ctx, restart).await
        }
        RolloutCommand::Pause(RolloutTargets { targets }) => {
            for_each(&targets, "pause", ctx, |c, ns, name| {
                pause(c, ns, name, true)
            })
            .await
        }
        RolloutCommand::Resume(RolloutTargets { targets }) => {
            for_each(&targets, "resume", ctx, |c, ns, name| {
                pause(c, ns, name, false)
            })
            .await
        }
    }
}

/// The Deployments named by `targets` (`deployment/web`, `deploy web api`).
fn deployments(targets: &[String], verb: &str) -> anyhow::Result<Vec<String>> {
    parse_targets(targets)?
        .into_iter()
        .map(|t| {
            ensure!(
                *t.resource == DEPLOYMENTS,
                "tug rollout {verb} works on deployments, not {}",
                t.resource.plural
            );
            t.name.ok_or_else(|| {
                anyhow!("say which deployment: `tug rollout {verb} deployment/NAME`")
            })
        })
        .collect()
}

/// Runs `act` on each named Deployment, printing its line; failures are
/// reported together after every one was tried, as kubectl does.
async fn for_each<F, Fut>(
    targets: &[String],
    verb: &str,
    ctx: &mut Context<'_>,
    act: F,
) -> anyhow::Result<()>
where
    F: Fn(Client, String, String) -> Fut,
    Fut: Future<Output = anyhow::Result<String>>,
{
    let names = deployments(targets, verb)?;
    let client = ctx.client()?;
    let ns = ctx.namespace().to_string();
    let mut errors = Vec::new();
    for name in names {
        match act(client.clone(), ns.clone(), name).await {
            Ok(text) => write!(ctx.out, "{text}")?,
            Err(e) if is_unreachable(&e) => return Err(e),
            Err(e) => errors.push(e),
        }
    }
    error::collect(errors)
}

/// The DaemonSets named by `targets`, when they name DaemonSets.
fn daemonsets(targets: &[String]) -> anyhow::Result<Option<Vec<String>>> {
    let parsed = parse_targets(targets)?;
    if !parsed.iter().all(|t| *t.resource == DAEMONSETS) {
        return Ok(None);
    }
    parsed
        .into_iter()
        .map(|t| {
            t.name
                .ok_or_else(|| anyhow!("say which daemon set: `daemonset/NAME`"))
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map(Some)
}

/// `rollout restart daemonset/NAME`: a new template annotation, so every
/// node's pod is replaced by the rolling update.
async fn restart_daemonsets(names: Vec<String>, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let ns = ctx.namespace().to_string();
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}});
    for name in names {
        client
            .patch(&DAEMONSETS, Some(&ns), &name, &patch, PatchType::Strategic)
            .await
            .context("failed to patch")?;
        writeln!(ctx.out, "{} restarted", qualified_name(&DAEMONSETS, &name))?;
    }
    Ok(())
}

async fn status(args: RolloutStatusArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    if let Some(names) = daemonsets(&args.targets)? {
        let [name] = names.as_slice() else {
            bail!(
                "rollout status is only supported on individual resources and resource collections - {} resources were found",
                names.len()
            );
        };
        let client = ctx.client()?;
        let ns = ctx.namespace().to_string();
        return crate::rollout::daemonset::follow(
            &client,
            &ns,
            name,
            args.watch,
            args.timeout,
            &mut *ctx.out,
            &ctx.shutdown,
        )
        .await;
    }
    let names = deployments(&args.targets, "status")?;
    let [name] = names.as_slice() else {
        bail!(
            "rollout status is only supported on individual resources and resource collections - {} resources were found",
            names.len()
        );
    };
    let client = ctx.client()?;
    let ns = ctx.namespace().to_string();
    let mut follow = Follow::until_done(args.timeout, ctx.env.terminal);
    follow.watch = args.watch;
    wait::rollout(&client, &ns, name, follow, &mut *ctx.out, &ctx.shutdown).await
}

async fn history_of(
    client: Client,
    ns: String,
    name: String,
    args: &RolloutHistoryArgs,
) -> anyhow::Result<String> {
    let revision = args.revision.unwrap_or(0);
    ensure!(
        revision >= 0,
        "revision must be a positive integer: {revision}"
    );
    let (d, sets) = fetch(&client, &ns, &name).await?;
    let revisions = history::revisions(&d, &sets);
    let qualified = qualified_name(&DEPLOYMENTS, &name);
    if revision == 0 || revisions.is_empty() {
        return Ok(format!("{qualified}\n{}", history::table(&revisions)));
    }
    let rs = revisions
        .get(&revision)
        .ok_or_else(|| anyhow!("unable to find the specified revision"))?;
    Ok(format!(
        "{qualified} with revision #{revision}\n{}",
        history::template(rs)
    ))
}

async fn undo_one(
    client: Client,
    ns: String,
    name: String,
    args: &RolloutUndoArgs,
) -> anyhow::Result<String> {
    let (d, sets) = fetch(&client, &ns, &name).await?;
    let (revision, rs) = undo::choose(&d, &sets, args.to_revision)?;
    if is_paused(&d) {
        bail!(
            "you cannot rollback a paused deployment; resume it first with 'kubectl rollout resume deployment/{name}' and try again"
        );
    }
    let qualified = qualified_name(&DEPLOYMENTS, &name);
    if undo::matches(&d, rs) {
        return Ok(format!(
            "{qualified} skipped rollback (current template already matches revision {revision})\n"
        ));
    }
    client
        .patch(
            &DEPLOYMENTS,
            Some(&ns),
            &name,
            &undo::patch(&d, rs),
            PatchType::Json,
        )
        .await
        .with_context(|| format!("failed restoring revision {revision}"))?;
    Ok(format!("{qualified} rolled back\n"))
}

fn is_paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused) == Some(true)
}

/// `deployments.apps "web"`, as kubectl names an object in these errors.
fn object(name: &str) -> String {
    format!("{}.{} {name:?}", DEPLOYMENTS.plural, DEPLOYMENTS.group)
}

async fn restart(client: Client, ns: String, name: String) -> anyhow::Result<String> {
    let d: Deployment = client.get_as(&DEPLOYMENTS, Some(&ns), &name).await?;
    if is_paused(&d) {
        bail!(
            "{} can't restart paused deployment (run rollout resume first)",
            object(&name)
        );
    }
    // RFC 3339 to the second, as kubectl writes it: a new template, so a rollout.
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}});
    client
        .patch(&DEPLOYMENTS, Some(&ns), &name, &patch, PatchType::Strategic)
        .await
        .context("failed to patch")?;
    Ok(format!(
        "{} restarted\n",
        qualified_name(&DEPLOYMENTS, &name)
    ))
}

/// Pause (`paused`) or resume; kubectl refuses to do either twice.
async fn pause(client: Client, ns: String, name: String, paused: bool) -> anyhow::Result<String> {
    let d: Deployment = client.get_as(&DEPLOYMENTS, Some(&ns), &name).await?;
    match (paused, is_paused(&d)) {
        (true, true) => bail!("{} is already paused", object(&name)),
        (false, false) => bail!("{} is not paused", object(&name)),
        _ => {}
    }
    // Resuming drops the field, as kubectl's patch does (false is its default).
    let value = if paused { json!(true) } else { json!(null) };
    client
        .patch(
            &DEPLOYMENTS,
            Some(&ns),
            &name,
            &json!({"spec": {"paused": value}}),
            PatchType::Merge,
        )
        .await
        .context("failed to patch")?;
    let what = if paused { "paused" } else { "resumed" };
    Ok(format!("{} {what}\n", qualified_name(&DEPLOYMENTS, &name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn rollout_targets_are_deployments_by_any_name() {
        assert_eq!(
            deployments(&args(&["deployment/web", "deploy/api"]), "status").unwrap(),
            ["web", "api"]
        );
        assert_eq!(
            deployments(&args(&["deployment", "web"]), "status").unwrap(),
            ["web"]
        );
        let err = deployments(&args(&["rs/web"]), "undo")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not replicasets"), "{err}");
        let err = deployments(&args(&["deployment"]), "pause")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tug rollout pause deployment/NAME"), "{err}");
    }
}
