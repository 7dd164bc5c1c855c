//! The bounded history: which events a write compacts away, watch streams
//! (replay from the history, then live events, none missed or repeated) and lists
//! as they were at a past revision.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::{History, RedbStore, lock};
use crate::store::{Key, Revision, StoreError, StoreEvent, Stored, WatchStream};

/// How many of the oldest events must go so that `history` followed by events
/// of the `incoming` sizes fits `limit`, counted over both (the newest event is
/// always kept; incoming events may go too, when a batch alone exceeds it).
pub(super) fn events_to_drop(
    history: &VecDeque<(StoreEvent, usize)>,
    history_bytes: usize,
    incoming: &[usize],
    limit: History,
) -> usize {
    let total = history.len() + incoming.len();
    let size = |i: usize| match history.get(i) {
        Some((_, size)) => *size,
        None => incoming[i - history.len()],
    };
    let mut len = total;
    let mut bytes = incoming
        .iter()
        .fold(history_bytes, |sum, size| sum.saturating_add(*size));
    let mut drop = 0;
    while drop + 1 < total && (len > limit.events || bytes > limit.bytes) {
        bytes -= size(drop);
        len -= 1;
        drop += 1;
    }
    drop
}

/// The resource (and namespace) a watch is for.
#[derive(Clone)]
struct Filter {
    resource: String,
    namespace: Option<String>,
}

impl Filter {
    fn matches(&self, key: &Key) -> bool {
        key.resource == self.resource
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| key.namespace.as_ref() == Some(ns))
    }
}

/// The live half of a watch stream.
struct Live {
    receiver: broadcast::Receiver<Arc<StoreEvent>>,
    filter: Filter,
    /// The highest revision this stream has accounted for (delivered, filtered
    /// out, or covered by the replay); anything at or below it is a duplicate.
    seen: Revision,
    compacted: Arc<AtomicU64>,
}

impl RedbStore {
    /// [`Store::watch`](crate::store::Store::watch).
    pub(super) fn watch_after(
        &self,
        resource: &str,
        namespace: Option<&str>,
        after: Revision,
    ) -> Result<WatchStream, StoreError> {
        let filter = Filter {
            resource: resource.to_string(),
            namespace: namespace.map(str::to_string),
        };
        let (replay, live) = {
            let state = lock(&self.inner.state);
            if after < state.compacted {
                return Err(StoreError::Gone {
                    requested: after,
                    compacted: state.compacted,
                });
            }
            let receiver = self.inner.events.subscribe(resource);
            let start = state.history.partition_point(|(e, _)| e.revision <= after);
            let replay: Vec<StoreEvent> = state
                .history
                .range(start..)
                .map(|(e, _)| e)
                .filter(|e| filter.matches(&e.key))
                .cloned()
                .collect();
            let live = Live {
                receiver,
                filter,
                seen: state.revision.max(after),
                compacted: Arc::clone(&self.inner.compacted),
            };
            (replay, live)
        };

        let live = futures::stream::unfold(Some(live), |live| async move {
            let mut live = live?;
            loop {
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
                        let gone = StoreError::Gone {
                            requested: live.seen,
                            compacted: live.compacted.load(Ordering::Relaxed),
                        };
                        return Some((Err(gone), None));
                    }
                    // The store is gone; so are its events.
                    Err(RecvError::Closed) => return None,
                }
            }
        });

        let replay = futures::stream::iter(replay.into_iter().map(Ok));
        Ok(Box::pin(futures::StreamExt::chain(replay, live)))
    }

    /// [`Store::list_at`](crate::store::Store::list_at).
    pub(super) fn list_at_revision(
        &self,
        resource: &str,
        namespace: Option<&str>,
        revision: Revision,
        after_key: Option<&Key>,
    ) -> Result<Vec<Stored>, StoreError> {
        // The mirror holds only the latest state, so the list as of `revision` is
        // the current one when nothing in its range changed since; otherwise the
        // caller is told it is gone and lists afresh, as after a compaction.
        let filter = Filter {
            resource: resource.to_string(),
            namespace: namespace.map(str::to_string),
        };
        let prefix = match namespace {
            Some(ns) => format!("{resource}/{ns}/"),
            None => format!("{resource}/"),
        };
        let after = after_key.map(Key::encode);
        let state = lock(&self.inner.state);
        let gone = StoreError::Gone {
            requested: revision,
            compacted: state.compacted,
        };
        if revision < state.compacted || revision > state.revision {
            return Err(gone);
        }
        let start = state
            .history
            .partition_point(|(e, _)| e.revision <= revision);
        let changed = state.history.range(start..).any(|(e, _)| {
            filter.matches(&e.key) && after.as_ref().is_none_or(|a| e.key.encode() > *a)
        });
        if changed {
            return Err(gone);
        }
        let from = after.unwrap_or_else(|| prefix.clone());
        Ok(state
            .objects
            .range::<String, _>((std::ops::Bound::Excluded(&from), std::ops::Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(_, stored)| stored.clone())
            .collect())
    }
}
