//! The scheduler: binds pending pods to nodes by setting `spec.nodeName`. A pass
//! looks at every pending pod at once (no round trip per pod): it filters nodes
//! (Ready, schedulable, `nodeSelector`, resource requests, free host ports;
//! [`fit`]), scores the rest (spread a controller's pods across nodes, then least
//! allocated), and binds in parallel ([`bind`]). A pod that fits nowhere gets
//! `PodScheduled=False` and a `FailedScheduling` event in kubectl's words.
//!
//! Passes read pods and nodes from reflectors (kept by the shared watcher), run
//! when those change, never in a loop of their own. A reflector can be a moment
//! behind the store, so the pods this scheduler bound are *assumed* on their node
//! until the reflector shows them bound (kube-scheduler's cache does the same):
//! a stale cache can neither bind a pod twice nor count a node's room twice.

pub mod bind;
pub mod fit;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tugboat_api::ApiError;
use tugboat_api::resource::{NODES, PODS, ResourceInfo};
use tugboat_runtime::reflector::{self, Store, Writer};
use tugboat_runtime::{Event, Object, watcher};

use self::fit::{NodeState, pod_request, unschedulable_message};
use super::{pod_is_active, pod_node};
use crate::events::{self, EventType, Recorder};
use crate::registry::Registry;

/// How many bindings are written at once.
const BIND_CONCURRENCY: usize = 64;

/// Pods this scheduler bound that its reflector does not show bound yet:
/// pod uid → node.
type Assumed = HashMap<String, String>;

pub async fn run(registry: Arc<Registry>, shutdown: CancellationToken) {
    let wake = Arc::new(Notify::new());
    let pods_writer = Writer::<Pod>::new();
    let nodes_writer = Writer::<Node>::new();
    let (pods, nodes) = (pods_writer.store(), nodes_writer.store());
    // The watches live in this task: they stop when the scheduler does.
    let mut watches = JoinSet::new();
    watches.spawn(reflect(
        registry.clone(),
        &PODS,
        pods_writer,
        wake.clone(),
        wakes_for_pod,
    ));
    watches.spawn(reflect(
        registry.clone(),
        &NODES,
        nodes_writer,
        wake.clone(),
        |_| true,
    ));
    let recorder = events::recorder(registry.clone(), "default-scheduler");
    let mut last_failure: HashMap<String, String> = HashMap::new();
    let mut assumed = Assumed::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake.notified() => {}
            // A safety net for a change the watches missed; cheap when nothing is pending.
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        if !(pods.is_ready() && nodes.is_ready()) {
            continue; // each reflector wakes us when its first list is in
        }
        // Let a burst of changes (a ReplicaSet creating 50 pods) land in one pass.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let pass = pass(
            &registry,
            &pods,
            &nodes,
            &recorder,
            &mut assumed,
            &mut last_failure,
        );
        if let Err(e) = pass.await {
            tracing::warn!(error = %e, "scheduling pass failed; retrying on the next change");
            tokio::time::sleep(Duration::from_millis(200)).await;
            wake.notify_one();
        }
    }
    watches.shutdown().await;
}

/// A pod that is already bound changes nothing for pending ones unless it went
/// away or finished (freeing room).
/// How many feasible nodes a pod's search stops at: every node in a small
/// cluster; in a large one, kube-scheduler's adaptive `percentageOfNodesToScore`
/// (50 % less 1 % per 125 nodes, at least 5 %, and never fewer than 100
/// nodes), the search starting where the previous pod's stopped so that every
/// node gets its turn.
fn feasible_nodes_to_find(nodes: usize) -> usize {
    const MIN_FEASIBLE: usize = 100;
    if nodes <= MIN_FEASIBLE {
        return nodes;
    }
    let percent = 50usize.saturating_sub(nodes / 125).max(5);
    (nodes * percent / 100).max(MIN_FEASIBLE)
}

fn wakes_for_pod(ev: &Event<Arc<Pod>>) -> bool {
    match ev {
        Event::Apply(pod) => pod_node(pod).is_none() || !pod_is_active(pod),
        _ => true,
    }
}

/// Keeps `writer` from the watcher and wakes the scheduler on the changes that
/// can matter to it (a whole list counts once, at its end).
async fn reflect<K>(
    registry: Arc<Registry>,
    info: &'static ResourceInfo,
    writer: Writer<K>,
    wake: Arc<Notify>,
    matters: fn(&Event<Arc<K>>) -> bool,
) where
    K: DeserializeOwned + Object + Send + Sync + 'static,
{
    let config = watcher::Config::new("scheduler")
        .backoff(Duration::from_millis(200), Duration::from_secs(5));
    let events = reflector::reflector(writer, watcher::watch::<K, _>(registry, info, config));
    let mut events = std::pin::pin!(events);
    while let Some(ev) = events.next().await {
        let wakes = match &ev {
            Event::Init | Event::InitApply(_) => false,
            Event::InitDone => true,
            other => matters(other),
        };
        if wakes {
            wake.notify_one();
        }
    }
}

fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

async fn pass(
    registry: &Arc<Registry>,
    pods: &Store<Pod>,
    nodes: &Store<Node>,
    recorder: &Recorder,
    assumed: &mut Assumed,
    last_failure: &mut HashMap<String, String>,
) -> Result<(), ApiError> {
    let pods = pods.state();
    // Forget what the reflector has caught up with: bound, finished or gone.
    let unbound: HashSet<&str> = pods
        .iter()
        .filter(|p| pod_is_active(p) && pod_node(p).is_none())
        .map(|p| uid(p))
        .collect();
    assumed.retain(|uid, _| unbound.contains(uid.as_str()));
    let mut pending: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|p| {
            pod_is_active(p)
                && pod_node(p).is_none()
                && !assumed.contains_key(uid(p))
                && p.spec
                    .as_ref()
                    .and_then(|s| s.scheduler_name.as_deref())
                    .is_none_or(|s| s == "default-scheduler")
        })
        .collect();
    if pending.is_empty() {
        last_failure.clear();
        return Ok(());
    }
    // Oldest first, then in the store's order (namespace, name), as a list gives them.
    pending.sort_by_key(|p| {
        (
            p.metadata.creation_timestamp.clone(),
            p.metadata.namespace.clone(),
            p.metadata.name.clone(),
        )
    });
    let mut states: Vec<NodeState> = nodes
        .state()
        .iter()
        .map(|n| NodeState::from_node(n))
        .collect();
    // One order from pass to pass, whatever order the reflector keeps.
    states.sort_by(|a, b| a.name.cmp(&b.name));
    let index: HashMap<String, usize> = states
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.clone(), i))
        .collect();
    for p in pods.iter().filter(|p| pod_is_active(p)) {
        let node = pod_node(p).or_else(|| assumed.get(uid(p)).map(String::as_str));
        if let Some(i) = node.and_then(|n| index.get(n)) {
            states[*i].add(p, &pod_request(p));
        }
    }
    let mut bindings = Vec::new();
    let mut failures = Vec::new();
    let to_find = feasible_nodes_to_find(states.len());
    let mut next_start = 0usize;
    for pod in pending {
        let req = pod_request(pod);
        let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut best: Option<(i64, usize)> = None;
        let mut feasible = 0;
        let mut looked = 0;
        for k in 0..states.len() {
            let i = (next_start + k) % states.len();
            let node = &states[i];
            looked += 1;
            let why = node.unfit(pod, &req);
            if why.is_empty() {
                let score = node.score(pod, &req);
                if best.is_none_or(|(s, _)| score > s) {
                    best = Some((score, i));
                }
                feasible += 1;
                if feasible >= to_find {
                    break;
                }
            } else {
                for w in why {
                    *reasons.entry(w).or_default() += 1;
                }
            }
        }
        if !states.is_empty() {
            next_start = (next_start + looked) % states.len();
        }
        match best {
            Some((_, i)) => {
                states[i].add(pod, &req);
                bindings.push((pod.clone(), states[i].name.clone()));
            }
            None => failures.push((pod.clone(), unschedulable_message(states.len(), &reasons))),
        }
    }
    let results: Vec<_> = futures::stream::iter(bindings)
        .map(|(pod, node)| {
            let registry = registry.clone();
            let recorder = recorder.clone();
            async move {
                let r = bind::bind(&registry, &recorder, &pod, &node).await;
                (pod, node, r)
            }
        })
        .buffer_unordered(BIND_CONCURRENCY)
        .collect()
        .await;
    let mut seen = HashSet::new();
    for (pod, message) in failures {
        let key = key(&pod);
        seen.insert(key.clone());
        if last_failure.get(&key) == Some(&message) {
            continue;
        }
        tracing::info!(pod = %key, %message, "pod is unschedulable");
        bind::mark_unschedulable(registry, &pod, &message).await?;
        recorder
            .publish(&*pod, EventType::Warning, "FailedScheduling", &message)
            .await;
        last_failure.insert(key, message);
    }
    last_failure.retain(|k, _| seen.contains(k));
    let mut error = None;
    for (pod, node, r) in results {
        match r {
            Ok(true) => {
                assumed.insert(uid(&pod).to_string(), node);
            }
            Ok(false) => {}
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => error = Some(e),
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::WriteOptions;
    use crate::store::redb::RedbStore;

    #[test]
    fn a_large_cluster_scores_a_share_of_its_nodes_as_kube_scheduler_does() {
        assert_eq!(feasible_nodes_to_find(3), 3);
        assert_eq!(feasible_nodes_to_find(100), 100);
        assert_eq!(feasible_nodes_to_find(150), 100);
        assert_eq!(feasible_nodes_to_find(1_000), 420);
        assert_eq!(feasible_nodes_to_find(5_000), 500);
        assert_eq!(feasible_nodes_to_find(50_000), 2_500);
    }

    /// A reflector frozen at the moment it was filled: as stale as one can be.
    fn frozen<K: Object + Send + Sync + 'static>(items: Vec<K>) -> Store<K> {
        let mut w = Writer::new();
        w.apply(&Event::Init);
        for k in items {
            w.apply(&Event::InitApply(Arc::new(k)));
        }
        w.apply(&Event::InitDone);
        w.store()
    }

    #[tokio::test]
    async fn a_stale_cache_neither_binds_twice_nor_counts_a_nodes_room_twice() {
        let registry = Arc::new(Registry::new(Arc::new(RedbStore::in_memory(100).unwrap())));
        registry.ensure_namespace("default").await.unwrap();
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}});
        let node = registry
            .create(&NODES, None, node, WriteOptions::default())
            .await
            .unwrap()
            .object;
        let mut created = Vec::new();
        for name in ["b", "a"] {
            let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"containers": [{"name": "c", "image": "x",
                    "resources": {"requests": {"cpu": "600m"}}}]}});
            let w = registry
                .create(&PODS, Some("default"), pod, WriteOptions::default())
                .await
                .unwrap();
            created.push(serde_json::from_value::<Pod>(w.object).unwrap());
        }
        let nodes = frozen(vec![serde_json::from_value::<Node>(node).unwrap()]);
        let recorder = events::recorder(registry.clone(), "default-scheduler");
        let mut assumed = Assumed::new();
        let mut last_failure = HashMap::new();
        // Only "b" is in the cache yet.
        let pods = frozen(vec![created[0].clone()]);
        pass(
            &registry,
            &pods,
            &nodes,
            &recorder,
            &mut assumed,
            &mut last_failure,
        )
        .await
        .expect("the pass writes");
        assert_eq!(assumed.len(), 1, "b is bound and assumed");
        // The cache still shows "b" unbound; "a" has arrived and sorts first.
        // Without the assumption "b" would look pending again, and "a" would be
        // given the room "b" already takes.
        let pods = frozen(created.clone());
        pass(
            &registry,
            &pods,
            &nodes,
            &recorder,
            &mut assumed,
            &mut last_failure,
        )
        .await
        .expect("the pass writes");
        let b: Pod = registry
            .get_typed(&PODS, Some("default"), "b")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(pod_node(&b), Some("n1"));
        let a: Pod = registry
            .get_typed(&PODS, Some("default"), "a")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            pod_node(&a),
            None,
            "a does not fit next to b (600m + 600m > 1 cpu)"
        );
        assert!(
            last_failure
                .get("default/a")
                .is_some_and(|m| m.contains("Insufficient cpu")),
            "a is unschedulable for cpu: {last_failure:?}"
        );
        // Once the cache shows "b" bound, the assumption is dropped.
        let pods = frozen(vec![a, b]);
        pass(
            &registry,
            &pods,
            &nodes,
            &recorder,
            &mut assumed,
            &mut last_failure,
        )
        .await
        .expect("the pass writes");
        assert!(assumed.is_empty());
    }
}
