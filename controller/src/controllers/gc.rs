//! The garbage collector: an object whose owners are all gone is deleted
//! (background propagation), so deleting a Deployment takes its ReplicaSets, and
//! they their Pods. It sweeps a namespace when an owner there is deleted, and every
//! namespace at start and once a minute, to catch anything missed while down.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tugboat_api::resource::{self, NAMESPACES, ResourceInfo};
use tugboat_api::{ApiError, meta};

use tugboat_runtime::{Event, watcher};

use crate::registry::{DeleteOptions, Registry};

const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Kinds whose deletion may orphan others: every namespaced kind (a Job owns
/// its pods, a CronJob its Jobs, and users set owner references on anything),
/// and Nodes (a node's Lease is owned by its Node).
fn owner_kinds() -> impl Iterator<Item = &'static ResourceInfo> {
    resource::ALL
        .iter()
        .copied()
        .filter(|r| (r.namespaced && r.kind != "Event") || r.kind == "Node")
}

/// Kinds whose objects may have owners: every namespaced kind but Events.
fn dependent_kinds() -> impl Iterator<Item = &'static ResourceInfo> {
    resource::ALL
        .iter()
        .copied()
        .filter(|r| r.namespaced && r.kind != "Event")
}

pub async fn run(registry: Arc<Registry>, shutdown: CancellationToken) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<String>>(1024);
    // The watches live in this task: they stop when the collector does.
    let mut watches = tokio::task::JoinSet::new();
    for info in owner_kinds() {
        watches.spawn(watch_deletions(registry.clone(), info, tx.clone()));
    }
    drop(tx);
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        let target = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => None,
            msg = rx.recv() => match msg {
                Some(ns) => ns,
                None => return,
            },
        };
        let result = match target {
            Some(ns) => sweep(&registry, &ns).await,
            None => sweep_all(&registry).await,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "garbage collection failed; will retry on the next sweep");
        }
    }
}

async fn watch_deletions(
    registry: Arc<Registry>,
    info: &'static ResourceInfo,
    tx: tokio::sync::mpsc::Sender<Option<String>>,
) {
    let config = watcher::Config::new("garbage collector")
        .backoff(Duration::from_millis(500), Duration::from_secs(5));
    let mut events = std::pin::pin!(watcher::watch_raw(registry, info, config));
    let mut first_list = true;
    while let Some(ev) = events.next().await {
        let msg = match ev {
            Event::Delete(object) => meta::namespace(&object).map(str::to_string),
            // A relist: deletions may have been missed while the watch was down,
            // so a full sweep (the start's own sweep covers the first list).
            Event::InitDone if !std::mem::take(&mut first_list) => None,
            _ => continue,
        };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

async fn sweep_all(registry: &Registry) -> Result<(), ApiError> {
    for ns in registry.list_all(&NAMESPACES, None).await? {
        if let Some(name) = meta::name(&ns) {
            sweep(registry, name).await?;
        }
    }
    // Service claims of writes that failed on a controller that then died.
    registry
        .remove_stray_service_claims()
        .await
        .map_err(crate::registry::store_error)?;
    Ok(())
}

/// Deletes, in `ns`, every object with owner references none of which still exists.
///
/// The dependents are listed before the owners: an owner's uid exists before
/// any reference to it, so an owner missing from the later list is gone. The
/// other way round, an owner and its dependent created between the two lists
/// (one list per kind, each a round trip with etcd) made the dependent look
/// orphaned, and it was deleted.
async fn sweep(registry: &Registry, ns: &str) -> Result<(), ApiError> {
    let mut dependents = Vec::new();
    for info in dependent_kinds() {
        for obj in registry.list_all(info, Some(ns)).await? {
            if !meta::owner_uids(&obj).is_empty() && !meta::is_deleting(&obj) {
                dependents.push((info, obj));
            }
        }
    }
    if dependents.is_empty() {
        return Ok(());
    }
    let mut live: HashSet<String> = HashSet::new();
    // Owners in the namespace, and cluster-scoped ones (Kubernetes lets a
    // namespaced object be owned by a cluster-scoped one).
    let cluster_scoped = resource::ALL.iter().copied().filter(|r| !r.namespaced);
    for info in dependent_kinds().chain(cluster_scoped) {
        for obj in registry.list_all(info, Some(ns)).await? {
            if let Some(uid) = meta::uid(&obj) {
                live.insert(uid.to_string());
            }
        }
    }
    for (info, obj) in dependents {
        if meta::owner_uids(&obj).iter().any(|u| live.contains(*u)) {
            continue;
        }
        {
            let name = meta::name(&obj).unwrap_or("");
            tracing::debug!(
                kind = info.kind,
                namespace = ns,
                name,
                "deleting object whose owner is gone"
            );
            // Only the object listed: not one made since under its name.
            let options = DeleteOptions {
                precondition_uid: meta::uid(&obj).map(str::to_string),
                ..DeleteOptions::default()
            };
            match registry.delete(info, Some(ns), name, &options).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() || e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
