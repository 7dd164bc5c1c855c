//! DaemonSets on real Docker: one pod per Ready node, a joining node gets its
//! own, a `nodeSelector` picks the labelled node, a cordoned node keeps its pod
//! (and `tug drain` leaves it, with kubectl's warning), a template change rolls
//! every node to the new revision, and `tug rollout status ds/NAME` follows it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tugboat_api::resource::{DAEMONSETS, NODES};
use tugboat_api::{PatchType, meta};
use tugboat_tests::docker::{BUSYBOX_IMAGE, DockerCluster, busybox_image};
use tugboat_tests::{eventually, eventually_within, tug};

const REVISION: &str = "controller-revision-hash";

fn daemonset(name: &str, node_selector: Option<Value>) -> Value {
    let mut spec = json!({
        "terminationGracePeriodSeconds": 1,
        "containers": [{
            "name": "agent",
            "image": BUSYBOX_IMAGE,
            "imagePullPolicy": "IfNotPresent",
            "command": ["sleep", "3600"],
        }]
    });
    if let Some(sel) = node_selector {
        spec["nodeSelector"] = sel;
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"ds": name}},
            "template": {"metadata": {"labels": {"ds": name}}, "spec": spec},
        }
    })
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// The live (not terminating) pods of DaemonSet `name`: node → (pod uid,
/// revision, ready).
async fn by_node(c: &DockerCluster, name: &str) -> BTreeMap<String, Vec<(String, String, bool)>> {
    let mut out: BTreeMap<String, Vec<(String, String, bool)>> = BTreeMap::new();
    for p in c.pods(&format!("ds={name}")).await.unwrap_or_default() {
        if meta::is_deleting(&p) {
            continue;
        }
        let node = p
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let uid = meta::uid(&p).unwrap_or("").to_string();
        let rev = p
            .pointer(&format!("/metadata/labels/{REVISION}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        out.entry(node).or_default().push((uid, rev, is_ready(&p)));
    }
    out
}

/// Waits until every node in `nodes` (and no other) runs exactly one ready pod
/// of `name`, all of one revision; returns node → pod uid and the revision.
async fn one_ready_pod_on(
    c: &DockerCluster,
    name: &str,
    nodes: &[String],
) -> anyhow::Result<(BTreeMap<String, String>, String)> {
    let mut want: Vec<String> = nodes.to_vec();
    want.sort();
    eventually_within(
        Duration::from_secs(90),
        &format!("one ready pod of {name} on each of {want:?}"),
        || async {
            let pods = by_node(c, name).await;
            let got: Vec<String> = pods.keys().cloned().collect();
            if got != want || pods.values().any(|v| v.len() != 1 || !v[0].2) {
                return None;
            }
            let revisions: std::collections::BTreeSet<&String> =
                pods.values().map(|v| &v[0].1).collect();
            if revisions.len() != 1 {
                return None;
            }
            let revision = revisions.into_iter().next()?.clone();
            Some((
                pods.into_iter().map(|(n, v)| (n, v[0].0.clone())).collect(),
                revision,
            ))
        },
    )
    .await
}

#[tokio::test]
async fn a_daemonset_runs_one_pod_per_node_through_joins_cordons_labels_and_updates()
-> anyhow::Result<()> {
    tugboat_tests::init_tracing();
    busybox_image().await?;
    let mut c = DockerCluster::start("daemonsets", 2).await?;
    let ns = c.namespace.clone();
    let url = c.controller.url.clone();
    let dir = c.config_dir().to_path_buf();
    let cli = |args: Vec<String>| {
        let url = url.clone();
        let dir = dir.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            tug(&url, &dir, &args).await
        }
    };
    let args = |a: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        v.extend(["-n".to_string(), ns.clone()]);
        v
    };

    c.apply(&daemonset("agent", None)).await?;
    let nodes = c.nodes.clone();
    let (first, revision) = one_ready_pod_on(&c, "agent", &nodes).await?;
    let out = cli(args(&["rollout", "status", "ds/agent", "--timeout", "60s"])).await?;
    assert!(
        out.contains("daemon set \"agent\" successfully rolled out"),
        "{out}"
    );
    let ds = c.client.get(&DAEMONSETS, Some(&ns), "agent").await?;
    assert_eq!(ds["status"]["desiredNumberScheduled"], 2, "{ds}");
    assert_eq!(ds["status"]["numberReady"], 2, "{ds}");

    // Cordoned (and drained): the node keeps its daemon pod, as in Kubernetes.
    let drained = cli(vec!["drain".into(), nodes[0].clone()]).await?;
    assert!(
        drained.contains("Warning: ignoring DaemonSet-managed Pods"),
        "{drained}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (after, _) = one_ready_pod_on(&c, "agent", &nodes).await?;
    assert_eq!(after, first, "no daemon pod was replaced by the cordon");

    // A template change rolls every node to the new revision.
    c.client
        .patch(
            &DAEMONSETS,
            Some(&ns),
            "agent",
            &json!({"spec": {"template": {"metadata": {"annotations": {"v": "2"}}}}}),
            PatchType::Merge,
        )
        .await?;
    let out = cli(args(&["rollout", "status", "ds/agent", "--timeout", "90s"])).await?;
    assert!(out.contains("successfully rolled out"), "{out}");
    let (rolled, new_revision) = one_ready_pod_on(&c, "agent", &nodes).await?;
    assert_ne!(new_revision, revision);
    assert!(
        rolled.values().all(|uid| !first.values().any(|u| u == uid)),
        "every pod was replaced: {first:?} → {rolled:?}"
    );

    // A node that joins gets its pod.
    let third = c.add_agent().await?;
    let all = c.nodes.clone();
    assert!(all.contains(&third));
    one_ready_pod_on(&c, "agent", &all).await?;

    // A nodeSelector: only the labelled node runs it; unlabelled, it leaves.
    c.apply(&daemonset("edge", Some(json!({"role": "edge"}))))
        .await?;
    let label = |value: Value| {
        let client = c.client.clone();
        let node = nodes[1].clone();
        async move {
            client
                .patch(
                    &NODES,
                    None,
                    &node,
                    &json!({"metadata": {"labels": {"role": value}}}),
                    PatchType::Merge,
                )
                .await
        }
    };
    label(json!("edge")).await?;
    one_ready_pod_on(&c, "edge", &nodes[1..2]).await?;
    label(Value::Null).await?;
    eventually("the edge pod to leave the unlabelled node", || async {
        by_node(&c, "edge").await.is_empty().then_some(())
    })
    .await?;
    let _ = cli(vec!["uncordon".into(), nodes[0].clone()]).await;
    Ok(())
}
