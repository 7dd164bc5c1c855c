//! `tug drain NODE [--force] [--timeout 60s]`: takes a node out of service as
//! `kubectl drain` does. It cordons the node, deletes every pod bound to it the
//! graceful way (the node's agent stops the containers, the pod's ReplicaSet runs a
//! replacement on another node), and waits until no pod is left on it. Pods that no
//! controller owns would be gone for good, so they stop the drain unless `--force`.
//! The node stays cordoned afterwards (and when the drain fails): `tug uncordon`
//! brings it back.
//!
//! DaemonSet pods stay: their controller would put them straight back on the
//! cordoned node (daemon pods tolerate `unschedulable`). kubectl refuses to
//! drain a node with daemon pods unless `--ignore-daemonsets`; Tugboat always
//! ignores them, with kubectl's warning naming them (the flag is accepted).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;
use tokio::time::Instant;
use tugboat_api::resource::{NODES, PODS};
use tugboat_api::{Client, ListParams, meta};

use crate::args::DrainArgs;
use crate::commands::cordon::set_unschedulable;
use crate::context::Context;
use crate::output::qualified_name;

/// How often the node's pods are listed while waiting for them to go.
const POLL: Duration = Duration::from_millis(250);

pub async fn run(args: DrainArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let node = args.node.as_str();
    let line = set_unschedulable(&client, node, true).await?;
    writeln!(ctx.out, "{line}")?;
    let deadline = (!args.timeout.is_zero()).then(|| Instant::now() + args.timeout);
    // Pods asked to go, by uid: (namespace, name).
    let mut evicting: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut warned_daemons = false;
    loop {
        let (pods, daemons): (Vec<Value>, Vec<Value>) = pods_on(&client, node)
            .await?
            .into_iter()
            .partition(|p| !is_daemon_pod(p));
        if !daemons.is_empty() && !warned_daemons {
            let names: Vec<String> = daemons.iter().map(pod_ref).collect();
            writeln!(
                ctx.out,
                "Warning: ignoring DaemonSet-managed Pods: {}",
                names.join(", ")
            )?;
            warned_daemons = true;
        }
        let present: Vec<&str> = pods.iter().filter_map(|p| meta::uid(p)).collect();
        let gone: Vec<String> = evicting
            .keys()
            .filter(|uid| !present.contains(&uid.as_str()))
            .cloned()
            .collect();
        for uid in gone {
            if let Some((_, name)) = evicting.remove(&uid) {
                writeln!(ctx.out, "{} evicted", qualified_name(&PODS, &name))?;
            }
        }
        if pods.is_empty() {
            break;
        }
        let new: Vec<&Value> = pods
            .iter()
            .filter(|p| meta::uid(p).is_some_and(|u| !evicting.contains_key(u)))
            .collect();
        let bare: Vec<String> = new
            .iter()
            .filter(|p| meta::controller_of(p).is_none())
            .map(|p| pod_ref(p))
            .collect();
        if !bare.is_empty() {
            if !args.force {
                bail!(
                    "unable to drain node {node:?}: cannot delete Pods that declare no controller (use --force to override): {}",
                    bare.join(", ")
                );
            }
            writeln!(
                ctx.out,
                "Warning: deleting Pods that declare no controller: {}",
                bare.join(", ")
            )?;
        }
        for pod in new {
            let ns = meta::namespace(pod).unwrap_or("default").to_string();
            let name = meta::name(pod).unwrap_or("").to_string();
            writeln!(ctx.out, "evicting pod {ns}/{name}")?;
            match client.delete(&PODS, Some(&ns), &name).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("unable to drain node {node:?}: cannot evict pod {ns}/{name}")
                    });
                }
            }
            if let Some(uid) = meta::uid(pod) {
                evicting.insert(uid.to_string(), (ns, name));
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let left: Vec<String> = pods.iter().map(pod_ref).collect();
            bail!(
                "unable to drain node {node:?}: {} pod(s) still on it after {}: {}; the node stays cordoned",
                left.len(),
                humantime(args.timeout),
                left.join(", ")
            );
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => bail!("interrupted while draining node {node:?}; it stays cordoned"),
            _ = tokio::time::sleep(POLL) => {}
        }
    }
    writeln!(ctx.out, "{} drained", qualified_name(&NODES, node))?;
    Ok(())
}

/// Every pod bound to `node`, in all namespaces.
async fn pods_on(client: &Client, node: &str) -> anyhow::Result<Vec<Value>> {
    let params = ListParams {
        field_selector: Some(format!("spec.nodeName={node}")),
        ..Default::default()
    };
    let list = client
        .list(&PODS, None, &params)
        .await
        .with_context(|| format!("cannot list the pods on node {node:?}"))?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

/// Is the pod a DaemonSet's (its controller owner reference says so)?
fn is_daemon_pod(pod: &Value) -> bool {
    meta::controller_of(pod).is_some_and(|(kind, _, _)| kind == "DaemonSet")
}

fn pod_ref(pod: &Value) -> String {
    format!(
        "{}/{}",
        meta::namespace(pod).unwrap_or("default"),
        meta::name(pod).unwrap_or("")
    )
}

fn humantime(d: Duration) -> String {
    crate::duration::human_duration(jiff::SignedDuration::try_from(d).unwrap_or_default())
}
