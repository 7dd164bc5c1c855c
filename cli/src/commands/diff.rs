//! `tug diff -f FILE`: what `tug apply -f FILE` would change, as `kubectl diff`
//! shows it. For each object the live one is read and what apply would send
//! (the same three-way merge, `merge.rs`) is sent with `dryRun=All`, so the
//! server's defaults and admission show in the result without anything being
//! stored; the two are printed as YAML, with what the server manages (versions,
//! uid, timestamps, managed fields, status) left out of both, and compared as a
//! unified diff.
//!
//! Exit status, as kubectl's: 0 no differences, 1 differences found, 2 an error
//! (differences found are a quiet `error::Exit`, so in-process callers get an
//! `Err` after the diff was written).

use anyhow::Context as _;
use serde_json::Value;
use similar::TextDiff;
use tugboat_api::{Client, PatchType, ResourceInfo};

use crate::args::DiffArgs;
use crate::context::Context;
use crate::error::{self, Exit, is_unreachable};
use crate::manifests::{Document, locate, read_sources};
use crate::merge::{self, Plan};

/// kubectl diff's status for an error.
const FAILED: u8 = 2;

pub async fn run(args: DiffArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    match diff_all(args, ctx).await {
        Ok(false) => Ok(()),
        Ok(true) => Err(Exit::quiet(1, "differences found").into()),
        Err(e) => Err(Exit::failed(FAILED, e).into()),
    }
}

/// Prints every object's diff; whether any differed.
async fn diff_all(args: DiffArgs, ctx: &mut Context<'_>) -> anyhow::Result<bool> {
    let docs = read_sources(&args.filenames)?;
    let client = ctx.client()?;
    let default_ns = ctx.namespace().to_string();
    let mut differ = false;
    let mut errors = Vec::new();
    for doc in &docs {
        let result = diff_one(&client, doc, &default_ns, ctx.namespace_flag.as_deref()).await;
        for w in client.take_warnings() {
            eprintln!("Warning: {w}");
        }
        match result {
            Ok(Some(text)) => {
                ctx.out.write_all(text.as_bytes())?;
                differ = true;
            }
            Ok(None) => {}
            Err(e) if is_unreachable(&e) => return Err(e),
            Err(e) => errors.push(e),
        }
    }
    error::collect(errors)?;
    Ok(differ)
}

/// The diff of one document's object, `None` when apply would change nothing.
async fn diff_one(
    client: &Client,
    doc: &Document,
    default_ns: &str,
    ns_flag: Option<&str>,
) -> anyhow::Result<Option<String>> {
    let loc = locate(doc, default_ns, ns_flag)?;
    let desired = crate::commands::apply::desired_for(doc, &loc);
    let ns = loc.namespace.as_deref();
    let r = loc.resource;
    let (live, merged) = match client.get(r, ns, &loc.name).await {
        Err(e) if e.is_not_found() => {
            let created = client
                .post_path(&dry_run(&r.collection_path(ns)), &desired.object)
                .await
                .with_context(|| format!("error when creating {:?} (dry run)", doc.source))?;
            (None, created)
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "error when retrieving the current configuration of {} from {:?}",
                    loc.name, doc.source
                )
            });
        }
        Ok(live) => {
            let merged = match merge::plan(&desired, &live) {
                Plan::Unchanged => live.clone(),
                // The client builds an object's URL as collection + "/" + name,
                // so the query rides on the name (names cannot hold a `?`).
                Plan::Patch(patch) => client
                    .patch(r, ns, &dry_run(&loc.name), &patch, PatchType::Merge)
                    .await
                    .with_context(|| format!("error when applying {:?} (dry run)", doc.source))?,
            };
            (Some(live), merged)
        }
    };
    let file = file_name(r, ns, &loc.name);
    let before = live
        .map(|l| yaml(&clean(l)))
        .transpose()?
        .unwrap_or_default();
    let after = yaml(&clean(merged))?;
    Ok(unified(&file, &before, &after))
}

fn dry_run(path: &str) -> String {
    format!("{path}?dryRun=All")
}

/// kubectl's name for an object's file: `apps.v1.Deployment.default.web`
/// (`v1.Namespace..team` for a cluster-scoped one).
pub fn file_name(r: &ResourceInfo, ns: Option<&str>, name: &str) -> String {
    let group = if r.group.is_empty() {
        String::new()
    } else {
        format!("{}.", r.group)
    };
    format!(
        "{group}{}.{}.{}.{name}",
        r.version,
        r.kind,
        ns.unwrap_or("")
    )
}

/// The object without what the server manages and apply never sets, so only
/// what apply would change remains.
pub fn clean(mut obj: Value) -> Value {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in [
            "resourceVersion",
            "generation",
            "managedFields",
            "creationTimestamp",
            "uid",
        ] {
            meta.remove(key);
        }
    }
    if let Some(map) = obj.as_object_mut() {
        map.remove("status");
    }
    obj
}

fn yaml(v: &Value) -> anyhow::Result<String> {
    let mut text = serde_saphyr::to_string(v).context("cannot format the object as YAML")?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// `diff -u -N LIVE/file MERGED/file` and the unified diff (3 lines of context),
/// or `None` when the two are the same.
pub fn unified(file: &str, live: &str, merged: &str) -> Option<String> {
    if live == merged {
        return None;
    }
    let (a, b) = (format!("LIVE/{file}"), format!("MERGED/{file}"));
    let diff = TextDiff::from_lines(live, merged);
    let body = diff
        .unified_diff()
        .context_radius(3)
        .header(&a, &b)
        .to_string();
    Some(format!("diff -u -N {a} {b}\n{body}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tugboat_api::resource::{DEPLOYMENTS, NAMESPACES};

    use super::*;

    #[test]
    fn files_are_named_as_kubectl_names_them() {
        assert_eq!(
            file_name(&DEPLOYMENTS, Some("default"), "web"),
            "apps.v1.Deployment.default.web"
        );
        assert_eq!(file_name(&NAMESPACES, None, "team"), "v1.Namespace..team");
    }

    #[test]
    fn managed_fields_and_status_are_left_out() {
        let obj = json!({
            "metadata": {"name": "web", "uid": "u", "resourceVersion": "7", "generation": 2,
                         "creationTimestamp": "t", "managedFields": [], "labels": {"a": "b"}},
            "spec": {"replicas": 3},
            "status": {"replicas": 3}
        });
        assert_eq!(
            clean(obj),
            json!({"metadata": {"name": "web", "labels": {"a": "b"}}, "spec": {"replicas": 3}})
        );
    }

    #[test]
    fn equal_objects_have_no_diff() {
        let y = yaml(&json!({"a": 1})).unwrap();
        assert_eq!(unified("f", &y, &y), None);
    }

    #[test]
    fn a_change_is_a_unified_diff_with_kubectls_header() {
        let live = yaml(&json!({"spec": {"replicas": 3, "x": 1}})).unwrap();
        let merged = yaml(&json!({"spec": {"replicas": 5, "x": 1}})).unwrap();
        let text = unified("apps.v1.Deployment.default.web", &live, &merged).unwrap();
        assert!(
            text.starts_with(
                "diff -u -N LIVE/apps.v1.Deployment.default.web MERGED/apps.v1.Deployment.default.web\n\
                 --- LIVE/apps.v1.Deployment.default.web\n\
                 +++ MERGED/apps.v1.Deployment.default.web\n@@"
            ),
            "{text}"
        );
        assert!(
            text.contains("\n-  replicas: 3\n+  replicas: 5\n"),
            "{text}"
        );
        // A new object: everything added.
        let new = unified("v1.Namespace..team", "", &merged).unwrap();
        assert!(new.contains("+spec:\n"), "{new}");
    }

    #[test]
    fn differences_exit_1_quietly_and_errors_exit_2() {
        let found: anyhow::Error = Exit::quiet(1, "differences found").into();
        assert_eq!(error::exit_code(&found), 1);
        assert_eq!(error::report(&found), None);
        let failed: anyhow::Error = Exit::failed(FAILED, anyhow::anyhow!("no such file")).into();
        assert_eq!(error::exit_code(&failed), 2);
        assert_eq!(
            error::report(&failed).as_deref(),
            Some("error: no such file")
        );
    }
}
