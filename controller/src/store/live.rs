//! What both backends share between a committed write and its watchers: the
//! live-event channels, one per watched resource, and the watch stream that
//! replays a backend's history and then follows the live events, none missed
//! or repeated.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::index::{By, Indexes};
use super::{Key, Revision, StoreError, StoreEvent, Stored, WatchStream};

/// A panic in another thread while it held a lock must not take the store down
/// with it: every critical section leaves the state consistent before anything
/// that can panic, so the poisoned data is still valid.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The live-event channels, by resource, made on first subscription. Sent to
/// and subscribed under the backend's state lock (so a watch's replay and its
/// live part meet without gap or repeat); a channel nobody listens to any more
/// is dropped at its next send, so the map holds only resources being watched.
///
/// One channel per resource: a write wakes only the watchers of its own
/// resource. With one channel for all, every hub (one thread per watched
/// resource) woke on every write, and at 1,000 nodes those wake-ups took a
/// quarter of the controller's CPU.
///
/// Events go in behind an `Arc`: a channel allocates all its slots up front,
/// and with one channel per watched resource (about 25 in a running controller)
/// slots of whole events took 60 MB before any were sent.
pub(crate) struct Channels {
    capacity: usize,
    pub(crate) by_resource: Mutex<HashMap<String, broadcast::Sender<Arc<StoreEvent>>>>,
}

impl Channels {
    pub(crate) fn new(capacity: usize) -> Self {
        Channels {
            capacity,
            by_resource: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn subscribe(&self, resource: &str) -> broadcast::Receiver<Arc<StoreEvent>> {
        let mut channels = lock(&self.by_resource);
        match channels.get(resource) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(self.capacity);
                channels.insert(resource.to_string(), tx);
                rx
            }
        }
    }

    pub(crate) fn send(&self, event: &StoreEvent) {
        let mut channels = lock(&self.by_resource);
        let resource = event.key.resource.as_str();
        if let Some(tx) = channels.get(resource)
            && tx.send(Arc::new(event.clone())).is_err()
        {
            // Nobody listens any more.
            channels.remove(resource);
        }
    }

    /// Ends every live stream: each gets `Gone` (see [`Live::closed_is_gone`])
    /// and its watcher starts over from a list.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) fn close_all(&self) {
        lock(&self.by_resource).clear();
    }
}

/// The resource (and namespace) a watch is for.
#[derive(Clone)]
pub(crate) struct Filter {
    pub(crate) resource: String,
    pub(crate) namespace: Option<String>,
}

impl Filter {
    pub(crate) fn new(resource: &str, namespace: Option<&str>) -> Self {
        Filter {
            resource: resource.to_string(),
            namespace: namespace.map(str::to_string),
        }
    }

    pub(crate) fn matches(&self, key: &Key) -> bool {
        key.resource == self.resource
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| key.namespace.as_ref() == Some(ns))
    }
}

/// The live half of a watch stream.
pub(crate) struct Live {
    pub(crate) receiver: broadcast::Receiver<Arc<StoreEvent>>,
    pub(crate) filter: Filter,
    /// The highest revision this stream has accounted for (delivered, filtered
    /// out, or covered by the replay); anything at or below it is a duplicate.
    pub(crate) seen: Revision,
    pub(crate) compacted: Arc<AtomicU64>,
    /// Whether a closed channel means `Gone` (the backend started its events
    /// over, and watchers must relist) rather than the end (the store is gone).
    pub(crate) closed_is_gone: bool,
}

/// `replay` (the history after the watch's revision, already filtered), then
/// the live events of `live`.
pub(crate) fn stream(replay: Vec<StoreEvent>, live: Live) -> WatchStream {
    let live = futures::stream::unfold(Some(live), |live| async move {
        let mut live = live?;
        loop {
            let gone = |live: &Live| StoreError::Gone {
                requested: live.seen,
                compacted: live.compacted.load(Ordering::Relaxed),
            };
            match live.receiver.recv().await {
                Ok(event) => {
                    if event.revision <= live.seen {
                        continue;
                    }
                    live.seen = event.revision;
                    if live.filter.matches(&event.key) {
                        return Some((Ok(Arc::unwrap_or_clone(event)), Some(live)));
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        resource = %live.filter.resource,
                        after = live.seen,
                        missed,
                        "watcher fell behind; ending its stream"
                    );
                    return Some((Err(gone(&live)), None));
                }
                Err(RecvError::Closed) if live.closed_is_gone => {
                    return Some((Err(gone(&live)), None));
                }
                // The store is gone; so are its events.
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let replay = futures::stream::iter(replay.into_iter().map(Ok));
    Box::pin(futures::StreamExt::chain(replay, live))
}

/// What both backends mirror in memory, borrowed under their state lock: the
/// objects by storage row, their indexes, and the history of events after
/// `compacted` up to `revision`.
pub(crate) struct View<'a> {
    pub(crate) objects: &'a BTreeMap<String, Stored>,
    pub(crate) indexes: &'a Indexes,
    pub(crate) history: &'a VecDeque<(StoreEvent, usize)>,
    pub(crate) revision: Revision,
    pub(crate) compacted: Revision,
}

/// The start every storage row of `resource` (in `namespace`) shares.
pub(crate) fn key_prefix(resource: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("{resource}/{ns}/"),
        None => format!("{resource}/"),
    }
}

impl View<'_> {
    /// [`Store::list`](super::Store::list). Rows sort by resource, then
    /// namespace, then name, so one prefix range is exactly the objects asked
    /// for, already in key order.
    pub(crate) fn list(&self, resource: &str, namespace: Option<&str>) -> Vec<Stored> {
        let prefix = key_prefix(resource, namespace);
        self.objects
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(_, stored)| stored.clone())
            .collect()
    }

    /// [`Store::list_by`](super::Store::list_by), from the indexes.
    pub(crate) fn list_by(
        &self,
        resource: &str,
        namespace: Option<&str>,
        by: By<'_>,
    ) -> Vec<Stored> {
        let prefix = key_prefix(resource, namespace);
        self.indexes
            .rows(resource, by)
            .filter(|row| row.starts_with(&prefix))
            .filter_map(|row| self.objects.get(row).cloned())
            .collect()
    }

    /// [`Store::watch`](super::Store::watch): subscribed to `channels` and the
    /// replay read under the same lock, so they meet without gap or repeat.
    pub(crate) fn watch(
        &self,
        channels: &Channels,
        compacted: &Arc<AtomicU64>,
        closed_is_gone: bool,
        resource: &str,
        namespace: Option<&str>,
        after: Revision,
    ) -> Result<WatchStream, StoreError> {
        if after < self.compacted {
            return Err(StoreError::Gone {
                requested: after,
                compacted: self.compacted,
            });
        }
        let filter = Filter::new(resource, namespace);
        let receiver = channels.subscribe(resource);
        let start = self.history.partition_point(|(e, _)| e.revision <= after);
        let replay: Vec<StoreEvent> = self
            .history
            .range(start..)
            .map(|(e, _)| e)
            .filter(|e| filter.matches(&e.key))
            .cloned()
            .collect();
        let live = Live {
            receiver,
            filter,
            seen: self.revision.max(after),
            compacted: Arc::clone(compacted),
            closed_is_gone,
        };
        Ok(stream(replay, live))
    }
}
