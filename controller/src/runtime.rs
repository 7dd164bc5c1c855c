//! The reconciler runtime every controller runs on, in the shape of kube-runtime:
//! watch events become object references in a queue (duplicates collapse, one
//! reconcile per key at a time, bounded concurrency), each reconcile gets the
//! object as it is now (`reconcile(obj, ctx) -> Result<Action, E>`), and the key is
//! requeued after the returned [`Action`] or with back-off after an error.
//! Reconcilers are level-triggered: a trigger only says "look again".

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tugboat_api::meta;
use tugboat_api::resource::ResourceInfo;
use tugboat_runtime::{Backoff, watcher};

use crate::registry::Registry;

/// What to do after a reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Look again after `d` even if nothing changes.
    pub fn requeue(d: Duration) -> Self {
        Action {
            requeue_after: Some(d),
        }
    }

    /// Nothing to do until something changes.
    pub fn await_change() -> Self {
        Action {
            requeue_after: None,
        }
    }
}

pub use tugboat_runtime::ObjectRef;

/// Maps an event on a watched object to the primary objects to reconcile.
pub type Mapper = Arc<dyn Fn(&Value) -> Vec<ObjectRef> + Send + Sync>;

struct Source {
    info: &'static ResourceInfo,
    mapper: Mapper,
    reason: &'static str,
}

/// Back-off after failed reconciles of one key: 100 ms doubling to 5 minutes.
fn error_backoff(failures: u32) -> Duration {
    Backoff::nth(
        Duration::from_millis(100),
        Duration::from_secs(300),
        failures,
    )
}

pub struct Controller {
    name: &'static str,
    registry: Arc<Registry>,
    primary: &'static ResourceInfo,
    sources: Vec<Source>,
    concurrency: usize,
}

impl Controller {
    pub fn new(
        name: &'static str,
        registry: Arc<Registry>,
        primary: &'static ResourceInfo,
    ) -> Self {
        let sources = vec![Source {
            info: primary,
            mapper: Arc::new(|obj| ObjectRef::of(obj).into_iter().collect()),
            reason: "object changed",
        }];
        Controller {
            name,
            registry,
            primary,
            sources,
            concurrency: 4,
        }
    }

    /// Reconcile the owner (by a `controller: true` owner reference of the primary
    /// kind) when a `child` changes.
    pub fn owns(mut self, child: &'static ResourceInfo) -> Self {
        let kind = self.primary.kind;
        self.sources.push(Source {
            info: child,
            mapper: Arc::new(move |obj| {
                meta::controller_of(obj)
                    .filter(|(k, _, _)| *k == kind)
                    .map(|(_, name, _)| ObjectRef {
                        namespace: meta::namespace(obj).map(str::to_string),
                        name: name.to_string(),
                    })
                    .into_iter()
                    .collect()
            }),
            reason: "owned object changed",
        });
        self
    }

    /// Reconcile whatever `mapper` names when an object of `info` changes.
    pub fn watches(mut self, info: &'static ResourceInfo, mapper: Mapper) -> Self {
        self.sources.push(Source {
            info,
            mapper,
            reason: "related object changed",
        });
        self
    }

    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Runs until `shutdown`. `reconcile` gets the primary object as currently stored.
    pub async fn run<T, C, E, F, Fut>(
        self,
        reconcile: F,
        error_policy: fn(&E, u32) -> Action,
        ctx: Arc<C>,
        shutdown: CancellationToken,
    ) where
        T: DeserializeOwned + Send + Sync + 'static,
        C: Send + Sync + 'static,
        E: Display + Send + 'static,
        F: Fn(Arc<T>, Arc<C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<(ObjectRef, &'static str)>(4096);
        for source in self.sources {
            let registry = self.registry.clone();
            let tx = tx.clone();
            let shutdown = shutdown.clone();
            let name = self.name;
            tokio::spawn(async move {
                tokio::select! {
                    _ = feed(registry, source, tx, name) => {}
                    _ = shutdown.cancelled() => {}
                }
            });
        }
        drop(tx);
        let reconcile = Arc::new(reconcile);
        let mut queue = Queue::default();
        let mut running: HashSet<ObjectRef> = HashSet::new();
        let mut tasks: JoinSet<(ObjectRef, Result<Action, E>)> = JoinSet::new();
        let mut failures: HashMap<ObjectRef, u32> = HashMap::new();
        loop {
            let next_due = queue.next_due(&running);
            let can_start = running.len() < self.concurrency;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                msg = rx.recv() => match msg {
                    Some((key, reason)) => queue.schedule(key, Instant::now(), reason),
                    None => break,
                },
                _ = sleep_until(next_due), if can_start && next_due.is_some() => {
                    let now = Instant::now();
                    while running.len() < self.concurrency {
                        let Some((key, reason)) = queue.pop_due(now, &running) else { break };
                        running.insert(key.clone());
                        let registry = self.registry.clone();
                        let reconcile = reconcile.clone();
                        let ctx = ctx.clone();
                        let primary = self.primary;
                        let span = tracing::info_span!("reconcile", controller = self.name, object = %key, reason);
                        tasks.spawn(async move {
                            let obj = match registry.try_get(primary, key.namespace.as_deref(), &key.name).await {
                                Ok(Some(obj)) => obj,
                                Ok(None) => return (key, Ok(Action::await_change())),
                                Err(e) => {
                                    tracing::warn!(error = %e, "cannot read the object to reconcile");
                                    return (key, Ok(Action::requeue(Duration::from_secs(1))));
                                }
                            };
                            let typed: T = match serde_json::from_value((*obj).clone()) {
                                Ok(t) => t,
                                Err(e) => {
                                    tracing::error!(error = %e, "stored object does not decode; skipping it");
                                    return (key, Ok(Action::await_change()));
                                }
                            };
                            let result = reconcile(Arc::new(typed), ctx).await;
                            (key, result)
                        }.instrument(span));
                    }
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    let Ok((key, result)) = done else { continue };
                    running.remove(&key);
                    let action = match result {
                        Ok(action) => {
                            failures.remove(&key);
                            action
                        }
                        Err(e) => {
                            let n = failures.entry(key.clone()).or_insert(0);
                            *n += 1;
                            tracing::warn!(controller = self.name, object = %key, error = %e, failures = *n, "reconcile failed");
                            error_policy(&e, *n)
                        }
                    };
                    if let Some(after) = action.requeue_after {
                        queue.schedule(key, Instant::now() + after, "requeue");
                    }
                }
            }
        }
        tasks.shutdown().await;
    }
}

/// The default error policy: exponential back-off per key.
pub fn backoff_policy<E>(_e: &E, failures: u32) -> Action {
    Action::requeue(error_backoff(failures))
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(d) => tokio::time::sleep_until(d).await,
        None => futures::future::pending().await,
    }
}

/// Keys waiting to be reconciled, each at its earliest due time.
#[derive(Default)]
struct Queue {
    due: HashMap<ObjectRef, (Instant, &'static str)>,
    order: BTreeSet<(Instant, ObjectRef)>,
}

impl Queue {
    fn schedule(&mut self, key: ObjectRef, at: Instant, reason: &'static str) {
        if let Some((existing, _)) = self.due.get(&key) {
            if *existing <= at {
                return;
            }
            self.order.remove(&(*existing, key.clone()));
        }
        self.order.insert((at, key.clone()));
        self.due.insert(key, (at, reason));
    }

    /// The earliest due time of a key that is not running.
    fn next_due(&self, running: &HashSet<ObjectRef>) -> Option<Instant> {
        self.order
            .iter()
            .find(|(_, k)| !running.contains(k))
            .map(|(t, _)| *t)
    }

    fn pop_due(
        &mut self,
        now: Instant,
        running: &HashSet<ObjectRef>,
    ) -> Option<(ObjectRef, &'static str)> {
        let (at, key) = self
            .order
            .iter()
            .find(|(t, k)| *t <= now && !running.contains(k))
            .cloned()?;
        self.order.remove(&(at, key.clone()));
        let (_, reason) = self.due.remove(&key)?;
        Some((key, reason))
    }
}

/// Watches one source, sending the mapped keys of every object it sees.
async fn feed(
    registry: Arc<Registry>,
    source: Source,
    tx: mpsc::Sender<(ObjectRef, &'static str)>,
    controller: &'static str,
) {
    let config = watcher::Config::new(controller);
    let mut events = std::pin::pin!(watcher::watch_raw(registry, source.info, config));
    while let Some(ev) = events.next().await {
        let Some(object) = ev.object() else { continue };
        for key in (source.mapper)(object) {
            if tx.send((key, source.reason)).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> ObjectRef {
        ObjectRef {
            namespace: Some("default".into()),
            name: n.into(),
        }
    }

    #[test]
    fn duplicate_triggers_collapse_to_the_earliest() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.schedule(key("a"), now + Duration::from_secs(5), "requeue");
        q.schedule(key("a"), now, "object changed");
        q.schedule(key("a"), now + Duration::from_secs(1), "object changed");
        assert_eq!(q.order.len(), 1);
        assert_eq!(
            q.pop_due(now, &HashSet::new()),
            Some((key("a"), "object changed"))
        );
        assert_eq!(q.pop_due(now, &HashSet::new()), None);
    }

    #[test]
    fn a_running_key_is_not_started_twice() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.schedule(key("a"), now, "x");
        q.schedule(key("b"), now, "x");
        let running: HashSet<_> = [key("a")].into_iter().collect();
        assert_eq!(q.pop_due(now, &running).map(|(k, _)| k), Some(key("b")));
        assert_eq!(q.pop_due(now, &running), None);
        assert_eq!(q.next_due(&running), None);
        assert_eq!(
            q.pop_due(now, &HashSet::new()).map(|(k, _)| k),
            Some(key("a"))
        );
    }

    #[test]
    fn error_backoff_grows_and_is_capped() {
        assert_eq!(error_backoff(0), Duration::from_millis(100));
        assert_eq!(error_backoff(1), Duration::from_millis(200));
        assert!(error_backoff(20) <= Duration::from_secs(300));
    }
}
