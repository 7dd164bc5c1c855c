//! The pod manager: watches the pods bound to this node (`spec.nodeName=NODE`),
//! resuming from the last resourceVersion and relisting on `410 Gone`, and keeps
//! one [`Worker`] per pod. Docker's event stream (die, oom, destroy…) pokes the
//! worker of the pod a container belongs to, so a crash is seen at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tugboat_api::resource::PODS;
use tugboat_api::{ClientError, ListParams, meta};

use crate::AgentCtx;
use crate::runtime::{LABEL_NODE, LABEL_POD_UID};
use crate::worker::{Msg, Worker};

/// Workers by pod uid.
type Workers = HashMap<String, mpsc::Sender<Msg>>;

pub async fn run(ctx: Arc<AgentCtx>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    let (poke_tx, mut poke_rx) = mpsc::channel::<String>(1024);
    tracker.spawn(follow_docker(ctx.clone(), poke_tx, shutdown.clone()));
    let mut workers: Workers = HashMap::new();
    let params = ListParams {
        field_selector: Some(format!("spec.nodeName={}", ctx.node)),
        ..Default::default()
    };
    let mut resource_version: Option<String> = None;
    let mut delay = Duration::from_millis(200);
    // Problems already reported, so a bad object is logged once, not on every relist.
    let mut reported: HashSet<String> = HashSet::new();
    loop {
        // List (first time, after the history is gone, or after an event that
        // could not be read), then watch from there.
        if resource_version.is_none() {
            if reported.len() > 1000 {
                reported.clear();
            }
            match ctx.client.list_lenient(&PODS, None, &params).await {
                Ok(list) => {
                    for problem in &list.undecodable {
                        if reported.insert(problem.clone()) {
                            tracing::error!(node = %ctx.node, problem = %problem, "a pod bound to this node cannot be read; it is skipped, the others run");
                        }
                    }
                    let pods = list.items;
                    let live: HashSet<String> = pods
                        .iter()
                        .filter_map(|p| meta::uid(p).map(str::to_string))
                        .collect();
                    for (uid, tx) in workers.iter() {
                        if !live.contains(uid) {
                            let _ = tx.send(Msg::Gone).await;
                        }
                    }
                    workers.retain(|uid, _| live.contains(uid));
                    for pod in pods {
                        dispatch(&ctx, &tracker, &mut workers, pod, &shutdown).await;
                    }
                    resource_version = list.resource_version;
                    if list.undecodable.is_empty() {
                        delay = Duration::from_millis(200);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list this node's pods; containers keep running, retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        let stream = ctx
            .client
            .watch(&PODS, None, &params, resource_version.as_deref())
            .await;
        let mut stream = match stream {
            Ok(s) => Box::pin(s),
            Err(e) => {
                if e.api().is_some_and(|a| a.code == 410) {
                    resource_version = None;
                } else {
                    tracing::warn!(error = %e, "cannot watch this node's pods; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                continue;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    tracker.close();
                    tracker.wait().await;
                    return;
                }
                uid = poke_rx.recv() => {
                    if let Some(tx) = uid.and_then(|u| workers.get(&u).cloned()) {
                        let _ = tx.try_send(Msg::Poke);
                    }
                }
                ev = stream.next() => match ev {
                    Some(Ok(ev)) => {
                        if let Some(rv) = meta::resource_version(&ev.object) {
                            resource_version = Some(rv.to_string());
                        }
                        match ev.event_type.as_str() {
                            "ADDED" | "MODIFIED" => dispatch(&ctx, &tracker, &mut workers, ev.object, &shutdown).await,
                            "DELETED" => {
                                if let Some(tx) = meta::uid(&ev.object).and_then(|u| workers.remove(u)) {
                                    let _ = tx.send(Msg::Gone).await;
                                }
                            }
                            "ERROR" => {
                                if ev.object["code"] == 410 {
                                    resource_version = None;
                                }
                                break;
                            }
                            _ => {}
                        }
                    }
                    Some(Err(ClientError::Decode { message, .. })) => {
                        // Resuming from the same resourceVersion would replay the same
                        // event for ever: relist instead, which sets the bad object
                        // aside and goes on from there (with back-off, so an object
                        // that keeps changing cannot make a hot loop of it).
                        if reported.insert(message.clone()) {
                            tracing::error!(node = %ctx.node, problem = %message, "a pod event from the controller cannot be read; relisting without it");
                        }
                        resource_version = None;
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(delay) => {}
                        }
                        delay = (delay * 2).min(Duration::from_secs(5));
                        break;
                    }
                    Some(Err(e)) => {
                        tracing::info!(error = %e, "pod watch broke; resuming");
                        break;
                    }
                    None => break,
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    tracker.close();
    tracker.wait().await;
}

/// Hands the pod to its worker, starting one if needed.
async fn dispatch(
    ctx: &Arc<AgentCtx>,
    tracker: &TaskTracker,
    workers: &mut Workers,
    pod: Value,
    shutdown: &CancellationToken,
) {
    let Some(uid) = meta::uid(&pod).map(str::to_string) else {
        return;
    };
    let pod = Arc::new(pod);
    if let Some(tx) = workers.get(&uid) {
        if tx.send(Msg::Update(pod.clone())).await.is_ok() {
            return;
        }
        workers.remove(&uid);
        // The worker finished (the pod was terminated); nothing more to do for it.
        if meta::is_deleting(&pod) {
            return;
        }
    }
    let (tx, rx) = mpsc::channel(64);
    workers.insert(uid, tx.clone());
    let worker = Worker::new(ctx.clone(), pod, rx, tx);
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
