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

/// Kinds that own others in Tugboat today.
const OWNER_KINDS: &[&ResourceInfo] = &[
    &resource::DEPLOYMENTS,
    &resource::REPLICASETS,
    &resource::REPLICATIONCONTROLLERS,
    &resource::DAEMONSETS,
    &resource::SERVICES,
];

/// Kinds whose objects have owners in Tugboat today (a Service owns its
/// EndpointSlices and Endpoints).
const DEPENDENT_KINDS: &[&ResourceInfo] = &[
    &resource::REPLICASETS,
    &resource::PODS,
    &resource::ENDPOINTSLICES,
    &resource::ENDPOINTS,
];

pub async fn run(registry: Arc<Registry>, shutdown: CancellationToken) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<String>>(1024);
    // The watches live in this task: they stop when the collector does.
    let mut watches = tokio::task::JoinSet::new();
    for info in OWNER_KINDS {
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
    Ok(())
}

/// Deletes, in `ns`, every object with owner references none of which still exists.
async fn sweep(registry: &Registry, ns: &str) -> Result<(), ApiError> {
    let mut live: HashSet<String> = HashSet::new();
    for info in OWNER_KINDS {
        for obj in registry.list_all(info, Some(ns)).await? {
            if let Some(uid) = meta::uid(&obj) {
                live.insert(uid.to_string());
            }
        }
    }
    for info in DEPENDENT_KINDS {
        for obj in registry.list_all(info, Some(ns)).await? {
            let owners = meta::owner_uids(&obj);
            if owners.is_empty()
                || owners.iter().any(|u| live.contains(*u))
                || meta::is_deleting(&obj)
            {
                continue;
            }
            let name = meta::name(&obj).unwrap_or("");
            tracing::debug!(
                kind = info.kind,
                namespace = ns,
                name,
                "deleting object whose owner is gone"
            );
            match registry
                .delete(info, Some(ns), name, &DeleteOptions::default())
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
