//! `tug create job|cronjob NAME …`: Jobs and CronJobs made from arguments, shaped
//! as kubectl's `create job` and `create cronjob` make them (a Job may also be a
//! manual run of a CronJob's template, `--from=cronjob/NAME`).

use anyhow::{anyhow, bail};
use serde_json::{Value, json};
use tugboat_api::resource::{CRONJOBS, JOBS};

use crate::context::Context;
use crate::output::qualified_name;

/// The annotation kubectl puts on a Job made from a CronJob by hand.
const INSTANTIATE: &str = "cronjob.kubernetes.io/instantiate";

/// `tug create job NAME (--image=IMG [-- CMD...] | --from=cronjob/X)`.
pub async fn create_job(
    ctx: &mut Context<'_>,
    name: String,
    image: Option<String>,
    from: Option<String>,
    command: Vec<String>,
) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let ns = ctx.namespace().to_string();
    let job = match (image, from) {
        (_, Some(from)) => {
            if !command.is_empty() {
                bail!("cannot specify --from and command");
            }
            let cronjob = from_cronjob(&from)?;
            let cj = client.get(&CRONJOBS, Some(&ns), cronjob).await?;
            job_from_cronjob(&name, &cj)
        }
        (Some(image), None) => job(&name, &image, &command),
        (None, None) => bail!("either --image or --from must be specified"),
    };
    client.create(&JOBS, Some(&ns), &job).await?;
    writeln!(ctx.out, "{} created", qualified_name(&JOBS, &name))?;
    Ok(())
}

/// `tug create cronjob NAME --image=IMG --schedule=S [--restart=P] [-- CMD...]`.
pub async fn create_cronjob(
    ctx: &mut Context<'_>,
    name: String,
    image: String,
    schedule: String,
    restart: String,
    command: Vec<String>,
) -> anyhow::Result<()> {
    if !matches!(restart.as_str(), "OnFailure" | "Never") {
        bail!("--restart: expected OnFailure or Never, got {restart:?}");
    }
    let client = ctx.client()?;
    let ns = ctx.namespace().to_string();
    let cj = cronjob(&name, &image, &schedule, &restart, &command);
    client.create(&CRONJOBS, Some(&ns), &cj).await?;
    writeln!(ctx.out, "{} created", qualified_name(&CRONJOBS, &name))?;
    Ok(())
}

/// The CronJob's name in `--from=cronjob/NAME` (kubectl accepts only CronJobs).
fn from_cronjob(from: &str) -> anyhow::Result<&str> {
    let (kind, name) = from
        .split_once('/')
        .ok_or_else(|| anyhow!("--from: expected cronjob/NAME, got {from:?}"))?;
    match kind {
        "cronjob" | "cronjobs" | "cj" | "cronjob.batch" | "cronjobs.batch" if !name.is_empty() => {
            Ok(name)
        }
        _ => bail!("--from: from must be an existing cronjob (cronjob/NAME), got {from:?}"),
    }
}

/// A Job of one container as `kubectl create job NAME --image=IMG -- CMD` makes
/// it: the container named after the Job, restartPolicy Never.
pub fn job(name: &str, image: &str, command: &[String]) -> Value {
    let mut container = json!({"name": name, "image": image});
    if !command.is_empty() {
        container["command"] = json!(command);
    }
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {
            "containers": [container],
            "restartPolicy": "Never",
        }}},
    })
}

/// A manual run of a CronJob, as kubectl makes it: the template's spec, labels
/// and annotations, `cronjob.kubernetes.io/instantiate: manual`, and an owner
/// reference to the CronJob (not a controller one, so the CronJob's history
/// and concurrency policy leave it alone, while deleting the CronJob takes it).
pub fn job_from_cronjob(name: &str, cj: &Value) -> Value {
    let template = cj.pointer("/spec/jobTemplate").cloned().unwrap_or_default();
    let mut annotations = serde_json::Map::new();
    annotations.insert(INSTANTIATE.into(), json!("manual"));
    if let Some(a) = template
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        annotations.extend(a.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let mut metadata = json!({
        "name": name,
        "annotations": annotations,
        "ownerReferences": [{
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "name": cj.pointer("/metadata/name").cloned().unwrap_or_default(),
            "uid": cj.pointer("/metadata/uid").cloned().unwrap_or_default(),
        }],
    });
    if let Some(labels) = template.pointer("/metadata/labels") {
        metadata["labels"] = labels.clone();
    }
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A CronJob of one container as `kubectl create cronjob` makes it.
pub fn cronjob(
    name: &str,
    image: &str,
    schedule: &str,
    restart: &str,
    command: &[String],
) -> Value {
    let mut container = json!({"name": name, "image": image});
    if !command.is_empty() {
        container["command"] = json!(command);
    }
    json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {
            "schedule": schedule,
            "jobTemplate": {
                "metadata": {"name": name},
                "spec": {"template": {"spec": {
                    "containers": [container],
                    "restartPolicy": restart,
                }}},
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_from_arguments_looks_like_kubectls() {
        let j = job(
            "pi",
            "busybox",
            &["sh".into(), "-c".into(), "echo hi".into()],
        );
        let c = &j["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["name"], "pi");
        assert_eq!(c["command"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(j["spec"]["template"]["spec"]["restartPolicy"], "Never");
        assert!(
            job("pi", "busybox", &[])["spec"]["template"]["spec"]["containers"][0]
                .get("command")
                .is_none()
        );
    }

    #[test]
    fn a_manual_run_copies_the_cronjobs_template_and_names_its_owner() {
        let cj = json!({
            "metadata": {"name": "tick", "uid": "u-1"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {
                "metadata": {"labels": {"app": "tick"}, "annotations": {"team": "a"}},
                "spec": {"backoffLimit": 2, "template": {"spec": {"containers": []}}},
            }},
        });
        let j = job_from_cronjob("tick-now", &cj);
        assert_eq!(j["metadata"]["name"], "tick-now");
        assert_eq!(j["metadata"]["annotations"][INSTANTIATE], "manual");
        assert_eq!(j["metadata"]["annotations"]["team"], "a");
        assert_eq!(j["metadata"]["labels"]["app"], "tick");
        assert_eq!(j["spec"]["backoffLimit"], 2);
        let owner = &j["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "CronJob");
        assert_eq!(owner["uid"], "u-1");
        assert!(owner.get("controller").is_none());
    }

    #[test]
    fn from_takes_only_cronjobs() {
        assert_eq!(from_cronjob("cronjob/tick").unwrap(), "tick");
        assert_eq!(from_cronjob("cj/tick").unwrap(), "tick");
        assert!(from_cronjob("deploy/web").is_err());
        assert!(from_cronjob("tick").is_err());
    }

    #[test]
    fn a_cronjob_from_arguments_runs_its_command_on_schedule() {
        let cj = cronjob(
            "tick",
            "busybox",
            "*/5 * * * *",
            "OnFailure",
            &["date".into()],
        );
        assert_eq!(cj["spec"]["schedule"], "*/5 * * * *");
        let pod = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "OnFailure");
        assert_eq!(pod["containers"][0]["command"], json!(["date"]));
    }
}
