//! The write path: one writer at a time checks the preconditions against the
//! mirror, commits the object, its history entry and the counters in one
//! fsync'd transaction, then applies the change to the mirror and broadcasts it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ::redb::{Database, Durability};
use serde_json::Value;
use tugboat_api::limits;

use super::history::events_to_drop;
use super::tables::{
    EventRecordRef, HISTORY, META, META_COMPACTED, META_REVISION, OBJECTS, event_type_name, stamp,
};
use super::{COMPACT_AFTER_FREED, Inner, RedbStore, backend, lock};
use crate::store::{EventType, Key, Revision, StoreError, StoreEvent, Stored};

pub(super) enum Write {
    Create(Value),
    Update(Value, Option<Revision>),
    Delete(Option<Revision>),
}

fn check_expected(
    key: &Key,
    expected: Option<Revision>,
    actual: Revision,
) -> Result<(), StoreError> {
    match expected {
        Some(expected) if expected != actual => Err(StoreError::Conflict {
            key: key.clone(),
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}

impl RedbStore {
    /// Commits on the blocking pool: an fsync can take milliseconds, and an
    /// async worker thread stuck on it would stall every other task it runs.
    pub(super) async fn write(&self, key: &Key, op: Write) -> Result<Stored, StoreError> {
        let inner = Arc::clone(&self.inner);
        let task_key = key.clone();
        tokio::task::spawn_blocking(move || inner.write(&task_key, op))
            .await
            .map_err(|e| backend(format_args!("write of {key}"), e))?
    }
}

impl Inner {
    pub(super) fn write(&self, key: &Key, op: Write) -> Result<Stored, StoreError> {
        let mut writer = lock(&self.writer);
        let encoded = key.encode();
        let (current, revision) = {
            let state = lock(&self.state);
            (state.objects.get(&encoded).cloned(), state.revision)
        };
        let Some(next) = revision.checked_add(1) else {
            return Err(StoreError::Backend(format!(
                "revision counter of {} is exhausted",
                self.location
            )));
        };

        let prev = match (&op, &current) {
            (Write::Update(..), Some(c)) => Some(Arc::clone(&c.object)),
            _ => None,
        };
        let (event_type, object) = match op {
            Write::Create(mut object) => {
                if current.is_some() {
                    return Err(StoreError::AlreadyExists(key.clone()));
                }
                stamp(key, &mut object, next)?;
                (EventType::Added, object)
            }
            Write::Update(mut object, expected) => {
                let current = current.ok_or_else(|| StoreError::NotFound(key.clone()))?;
                check_expected(key, expected, current.revision)?;
                stamp(key, &mut object, next)?;
                (EventType::Modified, object)
            }
            Write::Delete(expected) => {
                let current = current.ok_or_else(|| StoreError::NotFound(key.clone()))?;
                check_expected(key, expected, current.revision)?;
                let mut object = Value::clone(&current.object);
                stamp(key, &mut object, next)?;
                (EventType::Deleted, object)
            }
        };
        // Whatever the caller checked: nothing goes into the file that the next
        // open could not read back.
        if event_type != EventType::Deleted {
            limits::check_depth(&object).map_err(|e| StoreError::Limit(key.clone(), e))?;
        }
        let object_bytes = serde_json::to_vec(&object)
            .map_err(|e| backend(format_args!("encode object {encoded}"), e))?;
        if event_type != EventType::Deleted && object_bytes.len() > limits::MAX_OBJECT_BYTES {
            return Err(StoreError::Limit(
                key.clone(),
                limits::LimitError::TooLarge {
                    size: object_bytes.len(),
                },
            ));
        }
        let event_bytes = serde_json::to_vec(&EventRecordRef {
            event_type: event_type_name(event_type),
            key: &encoded,
            object: &object,
        })
        .map_err(|e| backend(format_args!("encode event {next} for {encoded}"), e))?;

        let (compacted, new_compacted, dropping, old_size) = {
            let state = lock(&self.state);
            let dropping = events_to_drop(
                &state.history,
                state.history_bytes,
                event_bytes.len(),
                self.history_limit,
            );
            let new_compacted = match dropping {
                0 => state.compacted,
                n => state.history[n - 1].0.revision,
            };
            let dropped_bytes: usize = state.history.iter().take(dropping).map(|(_, s)| s).sum();
            let old_size = state.sizes.get(&encoded).copied().unwrap_or(0);
            (
                state.compacted,
                new_compacted,
                dropping,
                old_size + dropped_bytes,
            )
        };

        self.commit(
            &writer.db,
            &encoded,
            event_type,
            &object_bytes,
            &event_bytes,
            next,
            compacted,
            new_compacted,
        )?;

        let object = Arc::new(object);
        let stored = Stored {
            object: Arc::clone(&object),
            revision: next,
        };
        let event = StoreEvent {
            revision: next,
            event_type,
            key: key.clone(),
            object,
            prev,
        };
        let mut state = lock(&self.state);
        let previous = state.sizes.remove(&encoded).unwrap_or(0);
        state.object_bytes -= previous;
        match event_type {
            EventType::Deleted => {
                state.objects.remove(&encoded);
            }
            EventType::Added | EventType::Modified => {
                state.objects.insert(encoded.clone(), stored.clone());
                state.sizes.insert(encoded, object_bytes.len());
                state.object_bytes += object_bytes.len();
            }
        }
        for _ in 0..dropping {
            if let Some((_, size)) = state.history.pop_front() {
                state.history_bytes -= size;
            }
        }
        state.history.push_back((event.clone(), event_bytes.len()));
        state.history_bytes += event_bytes.len();
        state.revision = next;
        state.compacted = new_compacted;
        self.compacted.store(new_compacted, Ordering::Relaxed);
        // An error only means that nobody is watching right now.
        let _ = self.events.send(event);
        let live = state.object_bytes + state.history_bytes;
        drop(state);
        self.revisions.send_replace(next);

        writer.freed = writer.freed.saturating_add(old_size);
        if writer.freed >= COMPACT_AFTER_FREED.max(live) {
            match writer.db.compact() {
                Ok(_) => {
                    tracing::debug!(location = %self.location, freed = writer.freed, "store file compacted")
                }
                // Not fatal: the space is reused by later writes; try again later.
                Err(e) => {
                    tracing::warn!(location = %self.location, error = %e, "cannot compact the store file")
                }
            }
            writer.freed = 0;
        }
        Ok(stored)
    }

    /// One transaction for the object, its history entry and the counters, so a
    /// crash leaves either all of them or none.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &self,
        db: &Database,
        encoded: &str,
        event_type: EventType,
        object_bytes: &[u8],
        event_bytes: &[u8],
        revision: Revision,
        compacted: Revision,
        new_compacted: Revision,
    ) -> Result<(), StoreError> {
        let location = &self.location;
        let mut txn = db
            .begin_write()
            .map_err(|e| backend(format_args!("begin write to {location}"), e))?;
        // Already redb's default; stated so that nobody "optimises" it away: the
        // API promises that an acknowledged write survives a crash.
        txn.set_durability(Durability::Immediate)
            .map_err(|e| backend(format_args!("set durability on {location}"), e))?;
        {
            let mut objects = txn
                .open_table(OBJECTS)
                .map_err(|e| backend(format_args!("open objects table in {location}"), e))?;
            match event_type {
                EventType::Deleted => {
                    objects
                        .remove(encoded)
                        .map_err(|e| backend(format_args!("delete {encoded} in {location}"), e))?;
                }
                EventType::Added | EventType::Modified => {
                    objects
                        .insert(encoded, object_bytes)
                        .map_err(|e| backend(format_args!("write {encoded} to {location}"), e))?;
                }
            }

            let mut history = txn
                .open_table(HISTORY)
                .map_err(|e| backend(format_args!("open history table in {location}"), e))?;
            history.insert(revision, event_bytes).map_err(|e| {
                backend(
                    format_args!("write history entry {revision} to {location}"),
                    e,
                )
            })?;
            for old in compacted + 1..=new_compacted {
                history
                    .remove(old)
                    .map_err(|e| backend(format_args!("compact history in {location}"), e))?;
            }

            let mut meta = txn
                .open_table(META)
                .map_err(|e| backend(format_args!("open meta table in {location}"), e))?;
            meta.insert(META_REVISION, revision)
                .map_err(|e| backend(format_args!("write revision to {location}"), e))?;
            meta.insert(META_COMPACTED, new_compacted)
                .map_err(|e| backend(format_args!("write compacted revision to {location}"), e))?;
        }
        txn.commit()
            .map_err(|e| backend(format_args!("commit write to {location}"), e))
    }
}
