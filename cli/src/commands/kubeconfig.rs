//! `tug kubeconfig [--merge]`: the admin kubeconfig the local controller wrote
//! (`DATA_DIR/admin.kubeconfig`), printed, or merged into the user's kubeconfig
//! as context `tugboat` and made current, so kubectl uses it as it is.

use anyhow::Context as _;
use tugboat_tls::kubeconfig::Kubeconfig;

use crate::args::KubeconfigArgs;
use crate::commands::controller::data_dir;
use crate::context::Context;

pub async fn run(args: KubeconfigArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let dir = data_dir(args.data_dir, ctx)?;
    let path = dir.join(tugboat_controller::pki::ADMIN_KUBECONFIG);
    let admin = Kubeconfig::read(&path)?.with_context(|| {
        format!(
            "{} does not exist: start the controller first (`tug up` or `tug controller`), or pass the --data-dir it uses",
            path.display()
        )
    })?;
    if !args.merge {
        write!(ctx.out, "{}", admin.to_yaml()?)?;
        return Ok(());
    }
    let target = merge_target(ctx)?;
    merge(&admin, &target)?;
    writeln!(
        ctx.out,
        "Merged context \"{}\" into {} and made it the current context.",
        tugboat_controller::pki::KUBECONFIG_CONTEXT,
        target.display()
    )?;
    Ok(())
}

/// The file a merge writes: `--kubeconfig`, else the first of `$KUBECONFIG`,
/// else `~/.kube/config` (as `kubectl config` chooses).
pub fn merge_target(ctx: &Context<'_>) -> anyhow::Result<std::path::PathBuf> {
    if let Some(k) = &ctx.kubeconfig_flag {
        return Ok(k.clone());
    }
    if let Some(first) = ctx
        .env
        .kubeconfig
        .as_deref()
        .and_then(|l| std::env::split_paths(l).find(|p| !p.as_os_str().is_empty()))
    {
        return Ok(first);
    }
    crate::config::default_kubeconfig(&ctx.env)
        .context("no kubeconfig to merge into: pass --kubeconfig FILE (HOME is not set)")
}

/// Adds (or replaces) `admin`'s cluster, user and context in the file at
/// `target`, keeping everything else there, and makes its context current.
pub fn merge(admin: &Kubeconfig, target: &std::path::Path) -> anyhow::Result<()> {
    let mut config = Kubeconfig::read(target)?.unwrap_or_default();
    config.merge_over(admin, true);
    config
        .write(target)
        .with_context(|| format!("cannot write {}", target.display()))?;
    Ok(())
}
