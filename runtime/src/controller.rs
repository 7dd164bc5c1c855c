//! The controller every reconciler runs on, in the shape of kube-runtime's
//! `Controller`: watch events become object references in a keyed
//! [queue](crate::queue) (duplicates collapse, one reconcile per key at a time,
//! bounded concurrency); each reconcile gets the primary object as it is now,
//! typed (`reconcile(Arc<K>, Arc<Ctx>) -> Result<Action, E>`); the key is
//! requeued after the returned [`Action`], or after whatever the error policy
//! decides from the object, the typed error and the number of failures in a row.
//! Reconcilers are level-triggered: a trigger only says "look again", and the
//! [`ReconcileReason`] in the reconcile span says why.
//!
//! Secondary watches map related objects to the primary objects they affect:
//! [`Controller::owns`] by the child's controller owner reference,
//! [`Controller::watches`] by any mapping of the object,
//! [`Controller::watches_events`] by a mapping of the whole watch event (for a
//! mapper that must remember where an object was: a pod whose labels changed
//! still matters to the Service it left).

use std::collections::{HashMap, HashSet};
use std::fmt;
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

use crate::backoff::Backoff;
use crate::object::ObjectRef;
use crate::queue::Queue;
use crate::source::Source;
use crate::watcher;

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

    pub fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// Why a key is being reconciled (kube-runtime's `ReconcileReason`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReconcileReason {
    /// Scheduled by hand ([`Controller::run`] got no reason).
    Unknown,
    /// The primary object itself changed (or was first listed).
    ObjectUpdated(ObjectRef),
    /// A related object changed: an owned child, or one a mapper named.
    RelatedObjectUpdated { object_ref: ObjectRef },
    /// The last reconcile returned [`Action::requeue`].
    ReconcilerRequestedRetry,
    /// The last reconcile failed and the error policy asked to retry.
    ErrorPolicyRequestedRetry,
}

impl fmt::Display for ReconcileReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReconcileReason::Unknown => f.write_str("unknown"),
            ReconcileReason::ObjectUpdated(o) => write!(f, "object updated ({o})"),
            ReconcileReason::RelatedObjectUpdated { object_ref } => {
                write!(f, "related object updated ({object_ref})")
            }
            ReconcileReason::ReconcilerRequestedRetry => f.write_str("reconciler requested retry"),
            ReconcileReason::ErrorPolicyRequestedRetry => {
                f.write_str("error policy requested retry")
            }
        }
    }
}

/// Maps an event on a watched object to the primary objects to reconcile.
pub type Mapper = Arc<dyn Fn(&Value) -> Vec<ObjectRef> + Send + Sync>;

/// Maps a whole watch event (lists, applies and deletions told apart) to the
/// primary objects to reconcile.
pub type EventMapper = Arc<dyn Fn(&watcher::Event<Arc<Value>>) -> Vec<ObjectRef> + Send + Sync>;

/// An object mapper as an event mapper: the events without an object map to nothing.
fn on_objects(mapper: Mapper) -> EventMapper {
    Arc::new(move |ev| ev.object().map(|o| mapper(o)).unwrap_or_default())
}

struct Trigger {
    info: &'static ResourceInfo,
    mapper: EventMapper,
    /// The primary watch (its events are `ObjectUpdated`), or a related one.
    primary: bool,
}

/// The default error policy's back-off: 100 ms doubling to 5 minutes.
pub fn error_backoff(failures: u32) -> Duration {
    Backoff::nth(
        Duration::from_millis(100),
        Duration::from_secs(300),
        failures,
    )
}

/// The default error policy: exponential back-off per key, whatever the error.
pub fn backoff_policy<K, E, C>(_obj: Arc<K>, _error: &E, failures: u32, _ctx: &C) -> Action {
    Action::requeue(error_backoff(failures))
}

pub struct Controller<S: Source> {
    name: &'static str,
    source: Arc<S>,
    primary: &'static ResourceInfo,
    triggers: Vec<Trigger>,
    concurrency: usize,
}

/// How one started reconcile ended.
enum Outcome<K, E> {
    /// There was nothing to reconcile: the object is gone or cannot be decoded.
    Skipped,
    /// The object could not be read now; look again after this long.
    Unreadable(Duration),
    Done(Arc<K>, Result<Action, E>),
}

type Started<K, E> = (ObjectRef, Outcome<K, E>);

/// How long to wait before reading a primary object again after the source failed.
const UNREADABLE_RETRY: Duration = Duration::from_secs(1);
/// When an object whose reconcile panicked is tried again.
const PANIC_RETRY: Duration = if cfg!(test) {
    Duration::from_millis(50)
} else {
    Duration::from_secs(5)
};

impl<S: Source> Controller<S> {
    /// A controller for objects of `primary`, read from `source`.
    pub fn new(name: &'static str, source: Arc<S>, primary: &'static ResourceInfo) -> Self {
        let triggers = vec![Trigger {
            info: primary,
            mapper: on_objects(Arc::new(|obj| ObjectRef::of(obj).into_iter().collect())),
            primary: true,
        }];
        Controller {
            name,
            source,
            primary,
            triggers,
            concurrency: 4,
        }
    }

    /// Reconcile the owner (by a `controller: true` owner reference of the primary
    /// kind) when a `child` changes.
    pub fn owns(mut self, child: &'static ResourceInfo) -> Self {
        let kind = self.primary.kind;
        self.triggers.push(Trigger {
            info: child,
            mapper: on_objects(Arc::new(move |obj| {
                meta::controller_of(obj)
                    .filter(|(k, _, _)| *k == kind)
                    .map(|(_, name, _)| ObjectRef::new(meta::namespace(obj), name))
                    .into_iter()
                    .collect()
            })),
            primary: false,
        });
        self
    }

    /// Reconcile whatever `mapper` names when an object of `info` changes.
    pub fn watches(self, info: &'static ResourceInfo, mapper: Mapper) -> Self {
        self.watches_events(info, on_objects(mapper))
    }

    /// Reconcile whatever `mapper` names for each watch event on `info`,
    /// including a list's `Init` and `InitDone` (after which whatever the list
    /// did not hold is gone).
    pub fn watches_events(mut self, info: &'static ResourceInfo, mapper: EventMapper) -> Self {
        self.triggers.push(Trigger {
            info,
            mapper,
            primary: false,
        });
        self
    }

    /// At most `n` reconciles at once (of different keys).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Runs until `shutdown`. `reconcile` gets the primary object as currently
    /// stored; a key whose object is gone is dropped without a reconcile.
    /// `error_policy` sees the object, the typed error and how many reconciles of
    /// that key failed in a row (1 on the first failure).
    pub async fn run<K, C, E, F, Fut, P>(
        self,
        reconcile: F,
        error_policy: P,
        ctx: Arc<C>,
        shutdown: CancellationToken,
    ) where
        K: DeserializeOwned + Send + Sync + 'static,
        C: Send + Sync + 'static,
        E: fmt::Display + Send + 'static,
        F: Fn(Arc<K>, Arc<C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        P: Fn(Arc<K>, &E, u32, &C) -> Action,
    {
        let (tx, mut rx) = mpsc::channel::<(ObjectRef, ReconcileReason)>(4096);
        // The watches live in this task's JoinSet: they end when the controller does.
        let mut feeds = JoinSet::new();
        for trigger in self.triggers {
            feeds.spawn(feed(self.source.clone(), trigger, tx.clone(), self.name));
        }
        drop(tx);
        let reconcile = Arc::new(reconcile);
        let mut queue = Queue::default();
        let mut running: HashSet<ObjectRef> = HashSet::new();
        let mut tasks: JoinSet<Started<K, E>> = JoinSet::new();
        // Which object each task reconciles, so a task that panicked releases
        // its object (and it is tried again) instead of holding it forever.
        let mut task_keys: HashMap<tokio::task::Id, ObjectRef> = HashMap::new();
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
                        let key_of_task = key.clone();
                        let span = tracing::info_span!(
                            "reconcile",
                            controller = self.name,
                            object = %key,
                            reason = %reason,
                        );
                        let task = start(
                            self.source.clone(),
                            self.primary,
                            key,
                            reconcile.clone(),
                            ctx.clone(),
                        );
                        let handle = tasks.spawn(task.instrument(span));
                        task_keys.insert(handle.id(), key_of_task);
                    }
                }
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let (key, outcome) = match done {
                        Ok((id, started)) => {
                            task_keys.remove(&id);
                            started
                        }
                        Err(e) => {
                            let Some(key) = task_keys.remove(&e.id()) else { continue };
                            running.remove(&key);
                            if e.is_panic() {
                                tracing::error!(controller = self.name, object = %key, "a reconcile panicked; retrying it later");
                                queue.schedule(key, Instant::now() + PANIC_RETRY, ReconcileReason::ErrorPolicyRequestedRetry);
                            }
                            continue;
                        }
                    };
                    running.remove(&key);
                    let (obj, result) = match outcome {
                        Outcome::Skipped => continue,
                        Outcome::Unreadable(after) => {
                            queue.schedule(key, Instant::now() + after, ReconcileReason::ReconcilerRequestedRetry);
                            continue;
                        }
                        Outcome::Done(obj, result) => (obj, result),
                    };
                    let (action, reason) = match result {
                        Ok(action) => {
                            failures.remove(&key);
                            (action, ReconcileReason::ReconcilerRequestedRetry)
                        }
                        Err(e) => {
                            let n = failures.entry(key.clone()).or_insert(0);
                            *n = n.saturating_add(1);
                            tracing::warn!(controller = self.name, object = %key, error = %e, failures = *n, "reconcile failed");
                            (error_policy(obj, &e, *n, &ctx), ReconcileReason::ErrorPolicyRequestedRetry)
                        }
                    };
                    if let Some(after) = action.requeue_after {
                        queue.schedule(key, Instant::now() + after, reason);
                    }
                }
            }
        }
        tasks.shutdown().await;
        feeds.shutdown().await;
    }
}

/// Reads the primary object and reconciles it.
async fn start<S, K, C, E, F, Fut>(
    source: Arc<S>,
    primary: &'static ResourceInfo,
    key: ObjectRef,
    reconcile: Arc<F>,
    ctx: Arc<C>,
) -> Started<K, E>
where
    S: Source,
    K: DeserializeOwned,
    F: Fn(Arc<K>, Arc<C>) -> Fut,
    Fut: Future<Output = Result<Action, E>>,
{
    let obj = match source
        .get(primary, key.namespace.as_deref(), &key.name)
        .await
    {
        Ok(Some(obj)) => obj,
        Ok(None) => return (key, Outcome::Skipped),
        Err(e) => {
            // Not the reconciler's error: the store could not be read. Try again soon.
            tracing::warn!(error = %e, "cannot read the object to reconcile");
            return (key, Outcome::Unreadable(UNREADABLE_RETRY));
        }
    };
    let typed: K = match K::deserialize(&*obj) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "stored object does not decode; skipping it");
            return (key, Outcome::Skipped);
        }
    };
    let typed = Arc::new(typed);
    let result = reconcile(typed.clone(), ctx).await;
    (key, Outcome::Done(typed, result))
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(d) => tokio::time::sleep_until(d).await,
        None => futures::future::pending().await,
    }
}

/// Watches one trigger, sending the mapped keys of every object it sees.
async fn feed<S: Source>(
    source: Arc<S>,
    trigger: Trigger,
    tx: mpsc::Sender<(ObjectRef, ReconcileReason)>,
    controller: &'static str,
) {
    let config = watcher::Config::new(controller);
    let mut events = std::pin::pin!(watcher::watch_raw(source, trigger.info, config));
    while let Some(ev) = events.next().await {
        let object = ev.object();
        for key in (trigger.mapper)(&ev) {
            let reason = if trigger.primary {
                ReconcileReason::ObjectUpdated(key.clone())
            } else {
                ReconcileReason::RelatedObjectUpdated {
                    object_ref: object
                        .and_then(|o| ObjectRef::of(o))
                        .unwrap_or_else(|| key.clone()),
                }
            };
            if tx.send((key, reason)).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::testing::MemorySource;

    #[derive(serde::Deserialize)]
    struct Obj {
        metadata: Meta,
    }

    #[derive(serde::Deserialize)]
    struct Meta {
        name: String,
    }

    #[derive(Default)]
    struct Seen {
        reconciled: Mutex<Vec<String>>,
        /// (object, error, failures) as the error policy saw them.
        failures: Mutex<Vec<(String, String, u32)>>,
    }

    async fn reconcile(obj: Arc<Obj>, seen: Arc<Seen>) -> Result<Action, String> {
        seen.reconciled
            .lock()
            .unwrap()
            .push(obj.metadata.name.clone());
        if obj.metadata.name == "broken" {
            return Err("it is broken".to_string());
        }
        Ok(Action::await_change())
    }

    #[allow(clippy::ptr_arg)] // the error policy gets `&E`, and E is String here
    fn policy(obj: Arc<Obj>, e: &String, failures: u32, seen: &Seen) -> Action {
        seen.failures
            .lock()
            .unwrap()
            .push((obj.metadata.name.clone(), e.clone(), failures));
        Action::requeue(Duration::from_millis(10))
    }

    async fn until(what: &str, f: impl Fn() -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !f() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
    }

    #[tokio::test]
    async fn an_object_whose_reconcile_panicked_is_tried_again() {
        let source = MemorySource::new();
        source.put("panics-once");
        let seen = Arc::new(Seen::default());
        let shutdown = CancellationToken::new();
        let controller = Controller::new("test", source.clone(), &tugboat_api::resource::PODS);
        let run = tokio::spawn(controller.run(
            |obj: Arc<Obj>, seen: Arc<Seen>| async move {
                let first = {
                    let mut r = seen.reconciled.lock().unwrap();
                    r.push(obj.metadata.name.clone());
                    r.len() == 1
                };
                if first {
                    panic!("a bug in a reconciler");
                }
                Ok::<_, String>(Action::await_change())
            },
            policy,
            seen.clone(),
            shutdown.clone(),
        ));
        until("it is reconciled again after the panic", || {
            seen.reconciled.lock().unwrap().len() >= 2
        })
        .await;
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("the controller stops on shutdown")
            .expect("the controller itself does not panic");
    }

    #[tokio::test]
    async fn objects_are_reconciled_typed_and_errors_reach_the_policy_with_the_object() {
        let source = MemorySource::new();
        source.put("web");
        let seen = Arc::new(Seen::default());
        let shutdown = CancellationToken::new();
        let controller = Controller::new("test", source.clone(), &tugboat_api::resource::PODS);
        let run = tokio::spawn(controller.run(reconcile, policy, seen.clone(), shutdown.clone()));
        until("web is reconciled", || {
            seen.reconciled.lock().unwrap().contains(&"web".to_string())
        })
        .await;
        // A change is a new trigger; an object added later is seen too.
        source.put("broken");
        until("broken failed three times in a row", || {
            seen.failures.lock().unwrap().len() >= 3
        })
        .await;
        let failures = seen.failures.lock().unwrap().clone();
        assert_eq!(failures[0], ("broken".into(), "it is broken".into(), 1));
        assert_eq!(failures[1].2, 2, "the count grows while it keeps failing");
        assert_eq!(failures[2].2, 3);
        // A deleted object is not reconciled again, however it was queued.
        source.delete("broken");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n = seen.failures.lock().unwrap().len();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            seen.failures.lock().unwrap().len(),
            n,
            "no retries once gone"
        );
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("the controller stops on shutdown")
            .expect("it does not panic");
    }

    #[tokio::test]
    async fn an_event_mapper_tells_lists_applies_and_deletions_apart() {
        let source = MemorySource::new();
        source.put("web");
        source.put("x");
        let seen = Arc::new(Seen::default());
        let kinds: Arc<Mutex<Vec<&'static str>>> = Arc::default();
        let record = kinds.clone();
        let mapper: EventMapper = Arc::new(move |ev| {
            let kind = match ev {
                watcher::Event::Init => "init",
                watcher::Event::InitApply(_) => "init-apply",
                watcher::Event::InitDone => "init-done",
                watcher::Event::Apply(_) => "apply",
                watcher::Event::Delete(_) => "delete",
            };
            record.lock().unwrap().push(kind);
            // A deletion of x concerns web.
            match ev {
                watcher::Event::Delete(_) => vec![ObjectRef::new(Some("default"), "web")],
                _ => Vec::new(),
            }
        });
        let shutdown = CancellationToken::new();
        let controller = Controller::new("test", source.clone(), &tugboat_api::resource::PODS)
            .watches_events(&tugboat_api::resource::PODS, mapper);
        let run = tokio::spawn(controller.run(reconcile, policy, seen.clone(), shutdown.clone()));
        until("the first list is mapped", || {
            kinds.lock().unwrap().contains(&"init-done")
        })
        .await;
        until("web is reconciled", || {
            seen.reconciled.lock().unwrap().contains(&"web".to_string())
        })
        .await;
        let before = seen.reconciled.lock().unwrap().len();
        source.delete("x");
        until("the deletion is mapped to web", || {
            seen.reconciled.lock().unwrap().len() > before
        })
        .await;
        let kinds = kinds.lock().unwrap().clone();
        assert_eq!(
            kinds[..4],
            ["init", "init-apply", "init-apply", "init-done"]
        );
        assert!(kinds.contains(&"delete"));
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("the controller stops on shutdown")
            .expect("it does not panic");
    }

    #[test]
    fn reasons_read_as_kube_runtime_spells_them() {
        let key = ObjectRef::new(Some("default"), "web");
        assert_eq!(
            ReconcileReason::ObjectUpdated(key.clone()).to_string(),
            "object updated (default/web)"
        );
        assert_eq!(
            ReconcileReason::RelatedObjectUpdated { object_ref: key }.to_string(),
            "related object updated (default/web)"
        );
        assert_eq!(
            ReconcileReason::ErrorPolicyRequestedRetry.to_string(),
            "error policy requested retry"
        );
    }

    #[test]
    fn error_backoff_grows_and_is_capped() {
        assert_eq!(error_backoff(0), Duration::from_millis(100));
        assert_eq!(error_backoff(1), Duration::from_millis(200));
        assert!(error_backoff(20) <= Duration::from_secs(300));
    }
}
