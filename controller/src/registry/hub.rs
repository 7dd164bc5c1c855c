//! Watch fan-out: one subscription to the store per resource, and every watch of
//! that resource served from it, with pod watches indexed by node.
//!
//! Without it each watch is its own subscription to the store and sees every
//! write of every kind; with a thousand agents each watching its node's pods,
//! one pod write would wake a thousand watchers to drop it. kube-apiserver's
//! watch cache solves this with "indexed triggers" (pods by `spec.nodeName`);
//! this is the same idea, written here because it sits between our store and
//! our watch semantics:
//! - a [`Hub`] per resource follows the store from the revision its first
//!   watcher asked for, keeps the latest [`RING`] events, and hands each event to
//!   the watchers that may care: those of its namespace, and, for pods, only
//!   those whose `spec.nodeName=` selector names the pod's node now or before;
//! - a watcher starting at a revision the ring still covers gets the ring's
//!   events after it, then live ones, gap-free (registration and dispatch
//!   happen under one lock); an older start falls back to a direct store watch;
//! - a watcher that falls [`CAPACITY`] events behind is cut off and its stream
//!   ends with `Gone`, as the store's own watch does, and the client relists;
//!   so does every watcher of a hub whose store subscription fails.
//!
//! The selectors themselves are still applied per watcher (`list::transition`);
//! the hub only narrows who looks.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use futures::StreamExt as _;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::store::{Revision, Store, StoreError, StoreEvent, WatchStream};

/// Events a hub keeps for watchers that start a little behind.
const RING: usize = 8_192;
/// Events a watcher may fall behind before it is cut off.
const CAPACITY: usize = 16_384;

/// The field pod watches are indexed by.
pub(super) const NODE_FIELD: &str = "spec.nodeName";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The hubs of one store, created on first use.
pub(super) struct Hubs {
    store: Arc<dyn Store>,
    hubs: Mutex<HashMap<String, Arc<Hub>>>,
}

impl Hubs {
    pub(super) fn new(store: Arc<dyn Store>) -> Self {
        Hubs {
            store,
            hubs: Mutex::new(HashMap::new()),
        }
    }

    /// The events of `resource` (in `namespace`) after `from`, as the store's
    /// watch gives them; `node`: only a pod watch whose selector requires
    /// `spec.nodeName=node`, for which the other pods' events may be left out.
    pub(super) async fn watch(
        &self,
        resource: &str,
        namespace: Option<&str>,
        node: Option<&str>,
        from: Revision,
    ) -> Result<WatchStream, StoreError> {
        let node = node.filter(|_| resource == "pods");
        let hub = {
            let mut hubs = lock(&self.hubs);
            match hubs.get(resource) {
                Some(h) if !h.is_closed() => Some(Arc::clone(h)),
                _ => {
                    hubs.remove(resource);
                    None
                }
            }
        };
        let hub = match hub {
            Some(h) => h,
            None => {
                // The hub follows the store from this watcher's revision; if the
                // store cannot replay from there, neither can a direct watch.
                let events = self.store.watch(resource, None, from).await?;
                let hub = Hub::start(Arc::clone(&self.store), resource, from, events);
                let mut hubs = lock(&self.hubs);
                // Another watcher may have made one meanwhile: keep the first.
                match hubs.get(resource) {
                    Some(h) if !h.is_closed() => Arc::clone(h),
                    _ => {
                        hubs.insert(resource.to_string(), Arc::clone(&hub));
                        hub
                    }
                }
            }
        };
        match hub.subscribe(namespace, node, from) {
            Some(stream) => Ok(stream),
            // Older than the ring: the store's own watch replays it.
            None => self.store.watch(resource, namespace, from).await,
        }
    }
}

struct Watcher {
    namespace: Option<String>,
    /// Events at or before this revision are not for this watcher.
    after: Revision,
    tx: mpsc::Sender<StoreEvent>,
}

struct HubState {
    /// Every event of the resource up to this revision has been dispatched.
    position: Revision,
    /// The ring holds every event after this revision.
    floor: Revision,
    ring: VecDeque<StoreEvent>,
    /// Watchers not indexed by node.
    all: HashMap<u64, Watcher>,
    /// Pod watchers by the node their selector requires.
    by_node: HashMap<String, HashMap<u64, Watcher>>,
    next_id: u64,
    /// The store subscription ended: no new watcher is served.
    closed: bool,
}

pub(super) struct Hub {
    resource: String,
    state: Mutex<HubState>,
}

/// A pod event's node (the empty string for an unbound pod).
fn node_of(object: &Value) -> &str {
    object
        .get("spec")
        .and_then(|s| s.get("nodeName"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn in_namespace(w: &Watcher, ev: &StoreEvent) -> bool {
    w.namespace.is_none() || w.namespace.as_deref() == ev.key.namespace.as_deref()
}

impl Hub {
    fn start(
        store: Arc<dyn Store>,
        resource: &str,
        from: Revision,
        events: WatchStream,
    ) -> Arc<Hub> {
        let hub = Arc::new(Hub {
            resource: resource.to_string(),
            state: Mutex::new(HubState {
                position: from,
                floor: from,
                ring: VecDeque::new(),
                all: HashMap::new(),
                by_node: HashMap::new(),
                next_id: 0,
                closed: false,
            }),
        });
        // Its own thread, not a task: a hub must take every event of its
        // resource as fast as the store commits them, and a task on a busy
        // runtime is polled for a budget of events per turn, so under load it
        // fell thousands of events behind and every watcher had to relist.
        // The thread enters the runtime, for a backend whose watch needs it.
        // It holds neither the hub nor the store: dropping the store closes
        // its events, which ends the thread (and a restarted controller can
        // open the file again).
        let runtime = tokio::runtime::Handle::current();
        let weak = Arc::downgrade(&hub);
        let store = Arc::downgrade(&store);
        let spawned = std::thread::Builder::new()
            .name(format!("watch-hub-{resource}"))
            .spawn(move || runtime.block_on(Hub::run(store, weak, events)));
        if let Err(e) = spawned {
            tracing::error!(resource, error = %e, "cannot start a watch hub's thread; its watchers relist");
            hub.close();
        }
        hub
    }

    fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    async fn run(store: Weak<dyn Store>, hub: Weak<Hub>, mut events: WatchStream) {
        while let Some(ev) = events.next().await {
            let Some(hub) = hub.upgrade() else { return };
            match ev {
                Ok(ev) => hub.dispatch(ev),
                Err(e) => {
                    // Fell behind the store's live events (a busy moment):
                    // resume from the store's history if it still reaches back,
                    // so a thousand watchers need not relist at once.
                    let position = lock(&hub.state).position;
                    let Some(store) = store.upgrade() else {
                        hub.close();
                        return;
                    };
                    match store.watch(&hub.resource, None, position).await {
                        Ok(resumed) => {
                            tracing::info!(resource = %hub.resource, position, error = %e, "watch hub fell behind the store; resumed from its history");
                            events = resumed;
                        }
                        Err(again) => {
                            tracing::warn!(resource = %hub.resource, error = %e, resume_error = %again, "watch hub lost the store's events; its watchers relist");
                            hub.close();
                            return;
                        }
                    }
                }
            }
        }
        if let Some(hub) = hub.upgrade() {
            hub.close();
        }
    }

    /// Drops every watcher (their streams end with `Gone`) and takes no more.
    fn close(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        state.all.clear();
        state.by_node.clear();
    }

    fn dispatch(&self, ev: StoreEvent) {
        let mut state = lock(&self.state);
        state.position = ev.revision;
        let state = &mut *state;
        let send = |watchers: &mut HashMap<u64, Watcher>| {
            // A full or closed channel: cut off (its stream ends with `Gone`).
            watchers.retain(|_, w| {
                if ev.revision <= w.after || !in_namespace(w, &ev) {
                    return true;
                }
                match w.tx.try_send(ev.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(resource = %self.resource, revision = ev.revision, "watcher fell behind; ending its stream");
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
        };
        send(&mut state.all);
        if !state.by_node.is_empty() {
            let now = node_of(&ev.object);
            let before = ev.prev.as_deref().map(node_of);
            for node in std::iter::once(now).chain(before.filter(|b| *b != now)) {
                if let Some(watchers) = state.by_node.get_mut(node) {
                    send(watchers);
                    if watchers.is_empty() {
                        state.by_node.remove(node);
                    }
                }
            }
        }
        state.ring.push_back(ev);
        if state.ring.len() > RING
            && let Some(old) = state.ring.pop_front()
        {
            state.floor = old.revision;
        }
    }

    /// A watcher from `from`, or `None` when the ring no longer reaches back to
    /// it (or the hub is closed).
    fn subscribe(
        self: &Arc<Self>,
        namespace: Option<&str>,
        node: Option<&str>,
        from: Revision,
    ) -> Option<WatchStream> {
        let mut state = lock(&self.state);
        if state.closed || from < state.floor {
            return None;
        }
        let (tx, rx) = mpsc::channel(CAPACITY);
        let watcher = Watcher {
            namespace: namespace.map(str::to_string),
            after: from,
            tx,
        };
        let replay: Vec<StoreEvent> = state
            .ring
            .iter()
            .filter(|ev| ev.revision > from && in_namespace(&watcher, ev))
            .filter(|ev| {
                node.is_none_or(|n| {
                    node_of(&ev.object) == n || ev.prev.as_deref().is_some_and(|p| node_of(p) == n)
                })
            })
            .cloned()
            .collect();
        let id = state.next_id;
        state.next_id += 1;
        match node {
            Some(n) => {
                state
                    .by_node
                    .entry(n.to_string())
                    .or_default()
                    .insert(id, watcher);
            }
            None => {
                state.all.insert(id, watcher);
            }
        }
        let position = state.position.max(from);
        drop(state);
        let guard = Registration {
            hub: Arc::downgrade(self),
            id,
            node: node.map(str::to_string),
        };
        let live = futures::stream::unfold(Some((rx, guard, position)), |st| async move {
            let (mut rx, guard, seen) = st?;
            match rx.recv().await {
                Some(ev) => {
                    let seen = ev.revision;
                    Some((Ok(ev), Some((rx, guard, seen))))
                }
                // Cut off or the hub closed: the client lists again.
                None => Some((
                    Err(StoreError::Gone {
                        requested: seen,
                        compacted: seen,
                    }),
                    None,
                )),
            }
        });
        Some(Box::pin(
            futures::stream::iter(replay.into_iter().map(Ok)).chain(live),
        ))
    }
}

/// A watcher's place in its hub, given up when its stream is dropped.
struct Registration {
    hub: Weak<Hub>,
    id: u64,
    node: Option<String>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let mut state = lock(&hub.state);
        match &self.node {
            Some(n) => {
                if let Some(w) = state.by_node.get_mut(n) {
                    w.remove(&self.id);
                    if w.is_empty() {
                        state.by_node.remove(n);
                    }
                }
            }
            None => {
                state.all.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Key;
    use crate::store::redb::RedbStore;
    use serde_json::json;
    use std::time::Duration;

    fn pod(name: &str, node: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"nodeName": node}})
    }

    async fn next(s: &mut WatchStream) -> StoreEvent {
        tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("an event within 5 s")
            .expect("the stream goes on")
            .expect("an event, not an error")
    }

    async fn nothing(s: &mut WatchStream) {
        assert!(
            tokio::time::timeout(Duration::from_millis(200), s.next())
                .await
                .is_err(),
            "no event expected"
        );
    }

    #[tokio::test]
    async fn a_node_watcher_gets_its_nodes_pods_and_those_leaving_it_and_no_others() {
        let store: Arc<dyn Store> = Arc::new(RedbStore::in_memory(1000).unwrap());
        let hubs = Hubs::new(store.clone());
        let from = store.revision();
        let mut a = hubs.watch("pods", None, Some("a"), from).await.unwrap();
        let mut all = hubs.watch("pods", Some("ns"), None, from).await.unwrap();
        let k1 = Key::new("pods", Some("ns"), "p1");
        let k2 = Key::new("pods", Some("ns"), "p2");
        store.create(&k1, pod("p1", "a")).await.unwrap();
        store.create(&k2, pod("p2", "b")).await.unwrap();
        store.update(&k2, pod("p2", "a"), None).await.unwrap();
        store.update(&k1, pod("p1", "b"), None).await.unwrap();
        // Node a's watcher: p1 added, p2 moved to it, p1 moved away — not p2's creation on b.
        let revs: Vec<_> = [next(&mut a).await, next(&mut a).await, next(&mut a).await]
            .iter()
            .map(|e| (e.key.name.clone(), node_of(&e.object).to_string()))
            .collect();
        assert_eq!(
            revs,
            [
                ("p1".into(), "a".into()),
                ("p2".into(), "a".into()),
                ("p1".into(), "b".into())
            ]
        );
        nothing(&mut a).await;
        for _ in 0..4 {
            next(&mut all).await;
        }
        nothing(&mut all).await;
        // Another namespace is not the namespaced watcher's.
        let other = Key::new("pods", Some("other"), "p3");
        store.create(&other, pod("p3", "a")).await.unwrap();
        nothing(&mut all).await;
        assert_eq!(next(&mut a).await.key, other);
    }

    #[tokio::test]
    async fn a_late_watcher_replays_from_the_ring_without_gap_or_repeat() {
        let store: Arc<dyn Store> = Arc::new(RedbStore::in_memory(1000).unwrap());
        let hubs = Hubs::new(store.clone());
        let start = store.revision();
        let _first = hubs.watch("pods", None, None, start).await.unwrap();
        let mut revisions = Vec::new();
        for i in 0..20 {
            let k = Key::new("pods", Some("ns"), format!("p{i}"));
            revisions.push(store.create(&k, pod("x", "a")).await.unwrap().revision);
        }
        // Let the hub dispatch some of them, then join in the middle.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let from = revisions[9];
        let mut late = hubs.watch("pods", None, Some("a"), from).await.unwrap();
        for i in 20..25 {
            let k = Key::new("pods", Some("ns"), format!("p{i}"));
            revisions.push(store.create(&k, pod("x", "a")).await.unwrap().revision);
        }
        for want in &revisions[10..] {
            assert_eq!(next(&mut late).await.revision, *want);
        }
        nothing(&mut late).await;
    }

    #[tokio::test]
    async fn a_watcher_older_than_the_ring_falls_back_to_the_store() {
        let store: Arc<dyn Store> = Arc::new(RedbStore::in_memory(1000).unwrap());
        let k = Key::new("pods", Some("ns"), "p");
        let first = store.create(&k, pod("p", "a")).await.unwrap().revision;
        let hubs = Hubs::new(store.clone());
        // The hub starts at the current revision…
        let _w = hubs
            .watch("pods", None, None, store.revision())
            .await
            .unwrap();
        // …and a watcher from before it is served by the store's history.
        let mut old = hubs
            .watch("pods", None, Some("a"), first - 1)
            .await
            .unwrap();
        assert_eq!(next(&mut old).await.revision, first);
    }

    // The hub's lock is held across the writes on purpose: the hub runs on its
    // own thread, and holding its lock is how the test makes it fall behind.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test]
    async fn a_hub_that_falls_behind_the_store_resumes_from_its_history() {
        // Live events for at most 4 behind; a history of 1,000.
        let store = Arc::new(RedbStore::in_memory_with_capacity(1000, 4).unwrap());
        let store_dyn: Arc<dyn Store> = store.clone();
        let hubs = Hubs::new(store_dyn);
        let mut w = hubs
            .watch("pods", None, Some("a"), store.revision())
            .await
            .unwrap();
        // Written while the hub cannot dispatch: it lags behind the store.
        let hub = Arc::clone(lock(&hubs.hubs).get("pods").unwrap());
        let held = lock(&hub.state);
        let mut revisions = Vec::new();
        for i in 0..20 {
            let k = Key::new("pods", Some("ns"), format!("p{i}"));
            revisions.push(store.create(&k, pod("x", "a")).await.unwrap().revision);
        }
        drop(held);
        for want in &revisions {
            assert_eq!(next(&mut w).await.revision, *want);
        }
        nothing(&mut w).await;
        assert!(!hub.is_closed(), "the hub goes on");
    }

    #[tokio::test]
    async fn a_hub_does_not_keep_its_store_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(&path, 1000).unwrap());
        let hubs = Hubs::new(store.clone());
        let w = hubs
            .watch("pods", None, Some("a"), store.revision())
            .await
            .unwrap();
        drop((w, hubs, store));
        // A restarted controller opens the same file.
        RedbStore::open(&path, 1000).expect("the file is free again");
    }

    #[tokio::test]
    async fn a_dropped_watcher_leaves_its_hub() {
        let store: Arc<dyn Store> = Arc::new(RedbStore::in_memory(1000).unwrap());
        let hubs = Hubs::new(store.clone());
        let w = hubs
            .watch("pods", None, Some("a"), store.revision())
            .await
            .unwrap();
        let hub = Arc::clone(lock(&hubs.hubs).get("pods").unwrap());
        assert_eq!(lock(&hub.state).by_node.len(), 1);
        drop(w);
        assert!(lock(&hub.state).by_node.is_empty());
    }
}
