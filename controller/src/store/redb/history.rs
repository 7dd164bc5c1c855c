//! The bounded history: which events a write compacts away, watch streams
//! (replay from the history, then live events, none missed or repeated) and lists
//! as they were at a past revision.

use std::collections::VecDeque;

use super::{History, RedbStore, lock};
use crate::store::live::Filter;
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

impl RedbStore {
    /// [`Store::watch`](crate::store::Store::watch).
    pub(super) fn watch_after(
        &self,
        resource: &str,
        namespace: Option<&str>,
        after: Revision,
    ) -> Result<WatchStream, StoreError> {
        let state = lock(&self.inner.state);
        state.view().watch(
            &self.inner.events,
            &self.inner.compacted,
            false,
            resource,
            namespace,
            after,
        )
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
        let filter = Filter::new(resource, namespace);
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
