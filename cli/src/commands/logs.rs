//! `tug logs POD [-c CONTAINER] [-f] [--tail N] [-p]`: a container's output, fetched
//! through the controller from the node's agent. `job/NAME`, `deploy/NAME` and
//! `rs/NAME` name the first of their pods, chosen as kubectl chooses it.

use anyhow::{anyhow, bail};
use futures::StreamExt;
use serde_json::Value;
use tugboat_api::resource::{DEPLOYMENTS, JOBS, PODS, REPLICASETS};
use tugboat_api::{Client, ResourceInfo};

use crate::args::LogsArgs;
use crate::context::Context;

pub async fn run(args: LogsArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let ns = ctx.namespace().to_string();
    let name = log_pod(&client, &ns, &args.pod).await?;
    if let Some(t) = args.tail
        && t < 0
    {
        bail!("--tail: expected a number of lines (0 or more), got {t}");
    }
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(c) = &args.container {
        query.push(("container", c.clone()));
    }
    if args.follow {
        query.push(("follow", "true".into()));
    }
    if let Some(t) = args.tail {
        query.push(("tailLines", t.to_string()));
    }
    if args.previous {
        query.push(("previous", "true".into()));
    }
    if args.timestamps {
        query.push(("timestamps", "true".into()));
    }
    let path = format!("{}/log", PODS.object_path(Some(&ns), &name));
    let mut stream = Box::pin(client.stream_path(&path, &query).await?);
    let shutdown = ctx.shutdown.clone();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            chunk = stream.next() => match chunk {
                Some(chunk) => {
                    ctx.out.write_all(&chunk?)?;
                    ctx.out.flush()?;
                }
                None => break,
            }
        }
    }
    Ok(())
}

/// The pod whose logs `target` means: itself, or the first pod a workload's
/// selector picks (kubectl says on stderr which one when there are several).
async fn log_pod(client: &Client, ns: &str, target: &str) -> anyhow::Result<String> {
    let Some((kind, name)) = target.split_once('/') else {
        return Ok(target.to_string());
    };
    let info: &ResourceInfo = match kind {
        "pod" | "pods" | "po" => return Ok(name.to_string()),
        "job" | "jobs" | "job.batch" | "jobs.batch" => &JOBS,
        "deploy" | "deployment" | "deployments" => &DEPLOYMENTS,
        "rs" | "replicaset" | "replicasets" => &REPLICASETS,
        other => bail!(
            "cannot get logs of a {other}: name a pod, job, deployment or replicaset (TYPE/NAME)"
        ),
    };
    let owner = client.get(info, Some(ns), name).await?;
    let labels: Vec<String> = owner
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    if labels.is_empty() {
        bail!("{target} has no selector to pick a pod with");
    }
    let params = tugboat_api::ListParams {
        label_selector: Some(labels.join(",")),
        ..Default::default()
    };
    let list = client.list(&PODS, Some(ns), &params).await?;
    let pods: Vec<&Value> = list["items"].as_array().into_iter().flatten().collect();
    let first = first_pod(&pods).ok_or_else(|| anyhow!("no pods found for {target}"))?;
    if pods.len() > 1 {
        eprintln!("Found {} pods, using pod/{first}", pods.len());
    }
    Ok(first)
}

/// kubectl's choice among a workload's pods (`podutils.ByLogging`): scheduled
/// before not, running before pending, ready before not, then the oldest.
fn first_pod(pods: &[&Value]) -> Option<String> {
    let text = |p: &Value, path: &str| p.pointer(path).and_then(Value::as_str).map(str::to_string);
    pods.iter()
        .min_by_key(|p| {
            let phase = match p.pointer("/status/phase").and_then(Value::as_str) {
                Some("Running") => 0,
                Some("Pending") | None => 2,
                _ => 1,
            };
            let ready = p
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
            (
                text(p, "/spec/nodeName").is_none(),
                phase,
                !ready,
                text(p, "/metadata/creationTimestamp"),
                text(p, "/metadata/name"),
            )
        })
        .and_then(|p| text(p, "/metadata/name"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_first_pod_is_the_running_one_else_the_oldest() {
        let done = |name: &str, created: &str| {
            json!({"metadata": {"name": name, "creationTimestamp": created},
                "spec": {"nodeName": "n1"}, "status": {"phase": "Succeeded"}})
        };
        let a = done("b-pod", "2026-01-01T00:00:02Z");
        let b = done("a-pod", "2026-01-01T00:00:05Z");
        assert_eq!(first_pod(&[&b, &a]).as_deref(), Some("b-pod"));
        let running = json!({"metadata": {"name": "c-pod", "creationTimestamp": "2026-01-01T00:00:09Z"},
            "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        assert_eq!(first_pod(&[&a, &b, &running]).as_deref(), Some("c-pod"));
        assert_eq!(first_pod(&[]), None);
    }
}
