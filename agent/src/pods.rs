//! The pod manager: watches the pods bound to this node (`spec.nodeName=NODE`)
//! through the shared [`watcher`] (resume, relist on `410 Gone`, back-off), and
//! keeps one [`Worker`] per pod. Docker's event stream (die, oom, destroy…) pokes the
//! worker of the pod a container belongs to, so a crash is seen at once, and
//! tells the usage collector ([`crate::metrics`]) which containers started and
//! stopped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tugboat_api::meta;
use tugboat_api::resource::PODS;
use tugboat_runtime::{Event, WatchParams, watcher};

use crate::AgentCtx;
use crate::runtime::{LABEL_NODE, LABEL_POD_UID};
use crate::worker::{Msg, Worker};

/// Workers by pod uid.
type Workers = HashMap<String, mpsc::Sender<Msg>>;

/// Pods that did not decode, already logged (bounded: forgotten past this many).
const MAX_REPORTED: usize = 1000;

/// Runs until `shutdown`; the Docker follower, the workers and their helpers
/// run on `tracker` (the agent's), which the caller waits for.
pub async fn run(ctx: Arc<AgentCtx>, tracker: TaskTracker, shutdown: CancellationToken) {
    let (poke_tx, mut poke_rx) = mpsc::channel::<String>(1024);
    tracker.spawn(follow_docker(ctx.clone(), poke_tx, shutdown.clone()));
    let mut workers: Workers = HashMap::new();
    // A pod that cannot be read is reported once by the watcher and left out;
    // the others run.
    let config = watcher::Config::new(format!("agent {}", ctx.node))
        .params(WatchParams::fields(format!("spec.nodeName={}", ctx.node)))
        .backoff(Duration::from_millis(200), Duration::from_secs(5));
    let mut events = std::pin::pin!(watcher::watch_raw(
        Arc::new(ctx.client.clone()),
        &PODS,
        config
    ));
    // The uids of a list being received: workers of pods not in it are stopped
    // when it is complete.
    let mut listed: HashSet<String> = HashSet::new();
    let mut reported: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            uid = poke_rx.recv() => {
                if let Some(tx) = uid.and_then(|u| workers.get(&u).cloned()) {
                    let _ = tx.try_send(Msg::Poke);
                }
            }
            ev = events.next() => match ev {
                Some(Event::Init) => listed.clear(),
                Some(Event::InitApply(pod)) => {
                    if let Some(uid) = meta::uid(&pod) {
                        listed.insert(uid.to_string());
                    }
                    if let Some(pod) = decode(&pod, &mut reported) {
                        dispatch(&ctx, &tracker, &mut workers, pod, &shutdown).await;
                    }
                }
                Some(Event::InitDone) => {
                    let live = std::mem::take(&mut listed);
                    for (uid, tx) in workers.iter() {
                        if !live.contains(uid) {
                            let _ = tx.send(Msg::Gone).await;
                        }
                    }
                    workers.retain(|uid, _| live.contains(uid));
                }
                Some(Event::Apply(pod)) => {
                    if let Some(pod) = decode(&pod, &mut reported) {
                        dispatch(&ctx, &tracker, &mut workers, pod, &shutdown).await;
                    }
                }
                Some(Event::Delete(pod)) => {
                    if let Some(tx) = meta::uid(&pod).and_then(|u| workers.remove(u)) {
                        let _ = tx.send(Msg::Gone).await;
                    }
                }
                None => break,
            }
        }
    }
}

/// The pod as a typed [`Pod`] (this is the pods' HTTP edge). One that does not
/// decode is logged once and not handed to a worker; its uid still counts as
/// listed, so its containers are left alone.
fn decode(pod: &Value, reported: &mut HashSet<String>) -> Option<Arc<Pod>> {
    match Pod::deserialize(pod) {
        Ok(p) => Some(Arc::new(p)),
        Err(e) => {
            let what = format!(
                "{}/{}: {e}",
                meta::namespace(pod).unwrap_or(""),
                meta::name(pod).unwrap_or("")
            );
            if reported.len() >= MAX_REPORTED {
                reported.clear();
            }
            if reported.insert(what.clone()) {
                tracing::error!(problem = %what, "a pod bound here does not decode; leaving it as it is");
            }
            None
        }
    }
}

/// Hands the pod to its worker, starting one if needed.
async fn dispatch(
    ctx: &Arc<AgentCtx>,
    tracker: &TaskTracker,
    workers: &mut Workers,
    pod: Arc<Pod>,
    shutdown: &CancellationToken,
) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    if let Some(tx) = workers.get(&uid) {
        if tx.send(Msg::Update(pod.clone())).await.is_ok() {
            return;
        }
        workers.remove(&uid);
        // The worker finished (the pod was terminated); nothing more to do for it.
        if pod.metadata.deletion_timestamp.is_some() {
            return;
        }
    }
    let (tx, rx) = mpsc::channel(64);
    workers.insert(uid, tx);
    let worker = Worker::new(ctx.clone(), pod, rx, tracker.clone());
    tracker.spawn(worker.run(shutdown.clone()));
}

/// Follows Docker's events for this node's containers and pokes the pod's worker.
/// Resumes from the last event's time after a reconnect, so nothing is missed.
async fn follow_docker(
    ctx: Arc<AgentCtx>,
    poke: mpsc::Sender<String>,
    shutdown: CancellationToken,
) {
    let labels = vec![(LABEL_NODE.to_string(), ctx.node.clone())];
    let mut since: Option<i64> = None;
    loop {
        match ctx.runtime.events(&labels, since).await {
            Ok(mut events) => loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    ev = events.next() => match ev {
                        Some(Ok(ev)) => {
                            since = Some(ev.time_nanos + 1);
                            ctx.metrics.observe(&ev);
                            if matches!(ev.action.as_str(), "die" | "oom" | "destroy" | "start" | "kill" | "stop")
                                && let Some(uid) = ev.labels.get(LABEL_POD_UID)
                            {
                                tracing::debug!(action = %ev.action, container = %ev.container_id, "docker event");
                                let _ = poke.send(uid.clone()).await;
                            }
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "docker event stream failed; reconnecting");
                            break;
                        }
                        None => break,
                    }
                }
            },
            Err(e) => tracing::warn!(error = %e, "cannot follow docker events; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
