//! The write path, with group commit. Every write goes to one writer thread
//! through a channel. The thread takes the first waiting write and whatever else
//! is queued behind it (at most [`MAX_BATCH_WRITES`] writes and about
//! [`MAX_BATCH_BYTES`]), checks each one's preconditions in order against the
//! mirror and the batch's own earlier writes (so the same key twice in one batch
//! behaves exactly as two writes one after the other), gives them consecutive
//! revisions, and commits all of them — objects, history entries and counters —
//! in one fsync'd transaction. Only then does it apply the batch to the mirror,
//! broadcast its events in revision order and answer each caller: a write is
//! acknowledged once it is durable, and one fsync serves every write that was
//! waiting for it.
//!
//! A write whose own precondition fails (conflict, not found, already exists,
//! out of bounds) fails alone and takes no revision. A commit that fails fails
//! every write of its batch, leaves the mirror as it was and consumes no
//! revision.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ::redb::{Database, Durability};
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tugboat_api::limits;

use super::history::events_to_drop;
use super::tables::{
    HISTORY, META, META_COMPACTED, META_REVISION, OBJECTS, event_type_name, stamp,
};
use super::{COMPACT_AFTER_FREED, Inner, RedbStore, backend, lock};
use crate::store::{Encoded, EventType, Key, Revision, StoreError, StoreEvent, Stored};

/// At most this many writes share one transaction: enough that a burst from
/// thousands of writers needs only a few fsyncs, few enough that the first
/// caller of a batch does not wait long for the preparation of the last.
pub(super) const MAX_BATCH_WRITES: usize = 1024;

/// A batch takes no more writes once its rows add up to this many bytes (the
/// write that crosses it is still in), so that one transaction stays a few
/// megabytes even when its objects are large.
pub(super) const MAX_BATCH_BYTES: usize = 4 << 20;

pub(super) enum Write {
    Create(Value),
    Update(Value, Option<Revision>),
    Delete(Option<Revision>),
}

type Reply = oneshot::Sender<Result<Stored, StoreError>>;

/// One write waiting for the writer thread, and where its answer goes.
pub(super) struct Request {
    key: Key,
    op: Write,
    reply: Reply,
}

/// A write whose preconditions hold, with what its commit and its application
/// to the mirror need.
struct Prepared {
    /// The key as stored.
    row: String,
    event: StoreEvent,
    /// The object's JSON, what its row holds.
    object_bytes: Bytes,
    /// The history entry's JSON.
    event_bytes: Vec<u8>,
    /// The size of the row this write replaces or removes (0 for none).
    replaced: usize,
}

impl Prepared {
    /// The bytes this write puts in the file: its row (unless it deletes one)
    /// and its history entry.
    fn written(&self) -> usize {
        let row = match self.event.event_type {
            EventType::Deleted => 0,
            EventType::Added | EventType::Modified => self.object_bytes.len(),
        };
        row.saturating_add(self.event_bytes.len())
    }

    fn stored(&self) -> Stored {
        Stored {
            object: Arc::clone(&self.event.object),
            revision: self.event.revision,
            encoded: self.event.encoded.clone(),
        }
    }
}

/// What the batch has done to a key so far: its object and row size, or `None`
/// once deleted.
type Overlay = HashMap<String, Option<(Stored, usize)>>;

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

/// The history entry of an event, `{"type":…,"key":…,"object":…}`, put together
/// around the object's JSON instead of encoding the object a second time.
fn event_record(event_type: EventType, row: &str, object_bytes: &[u8]) -> Vec<u8> {
    let key = Value::String(row.to_string()).to_string();
    let mut out = Vec::with_capacity(object_bytes.len() + key.len() + 40);
    out.extend_from_slice(br#"{"type":""#);
    out.extend_from_slice(event_type_name(event_type).as_bytes());
    out.extend_from_slice(br#"","key":"#);
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(br#","object":"#);
    out.extend_from_slice(object_bytes);
    out.push(b'}');
    out
}

impl RedbStore {
    /// Hands the write to the writer thread and waits for its answer, which
    /// comes once the write is durable (or has failed).
    pub(super) async fn write(&self, key: &Key, op: Write) -> Result<Stored, StoreError> {
        let stopped = || {
            StoreError::Backend(format!(
                "write of {key} to {}: the store's writer has stopped",
                self.inner.location
            ))
        };
        let requests = self.requests.as_ref().ok_or_else(stopped)?;
        let (reply, answer) = oneshot::channel();
        self.inner.pending.fetch_add(1, Ordering::SeqCst);
        let request = Request {
            key: key.clone(),
            op,
            reply,
        };
        if requests.send(request).is_err() {
            self.inner.pending.fetch_sub(1, Ordering::SeqCst);
            return Err(stopped());
        }
        // A caller that stops waiting does not stop the write (as a client that
        // goes away mid-request does not, in any API server); only its answer is
        // dropped.
        answer.await.map_err(|_| stopped())?
    }
}

/// The writer thread: commits batches until the store is dropped (its sender
/// gone) and the queue is empty, then returns, which closes the database.
///
/// tokio's channel rather than std's: std's receiver spins and yields
/// (`sched_yield`) before it sleeps, and a lone writer measured slower with it
/// on a busy 2-core machine; tokio's receiver sleeps at once.
pub(super) fn run(inner: &Inner, requests: &mut mpsc::UnboundedReceiver<Request>) {
    let mut queue = VecDeque::new();
    loop {
        if queue.is_empty() {
            match requests.blocking_recv() {
                Some(request) => queue.push_back(request),
                None => return,
            }
        }
        while queue.len() < MAX_BATCH_WRITES {
            match requests.try_recv() {
                Ok(request) => queue.push_back(request),
                Err(_) => break,
            }
        }
        inner.write_batch(&mut queue);
    }
}

impl Inner {
    fn answer(&self, reply: Reply, result: Result<Stored, StoreError>) {
        // An error only means that the caller stopped waiting.
        let _ = reply.send(result);
        self.pending.fetch_sub(1, Ordering::SeqCst);
    }

    /// A request as [`RedbStore::write`] sends it, and where its answer comes:
    /// for tests that put a batch together themselves.
    #[cfg(test)]
    pub(super) fn request(
        &self,
        key: &Key,
        op: Write,
    ) -> (Request, oneshot::Receiver<Result<Stored, StoreError>>) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        let (reply, answer) = oneshot::channel();
        let request = Request {
            key: key.clone(),
            op,
            reply,
        };
        (request, answer)
    }

    /// Commits one batch taken from the front of `queue`.
    pub(super) fn write_batch(&self, queue: &mut VecDeque<Request>) {
        let mut writer = lock(&self.writer);
        let (base, compacted) = {
            let state = lock(&self.state);
            (state.revision, state.compacted)
        };
        let mut overlay = Overlay::new();
        let mut batch: Vec<(Prepared, Reply)> = Vec::new();
        // Refusals decided against an earlier write of this batch: they wait for
        // its commit, since were it to fail, they would have been decided on
        // something that did not happen.
        let mut refused: Vec<(StoreError, Reply)> = Vec::new();
        let mut bytes = 0usize;
        let mut revision = base;
        while batch.len() < MAX_BATCH_WRITES && bytes < MAX_BATCH_BYTES {
            let Some(Request { key, op, reply }) = queue.pop_front() else {
                break;
            };
            let row = key.encode();
            let in_batch = overlay.contains_key(&row);
            match self.prepare(&key, row, op, revision, &overlay) {
                Ok(prepared) => {
                    revision = prepared.event.revision;
                    bytes = bytes.saturating_add(prepared.written());
                    let after = match prepared.event.event_type {
                        EventType::Deleted => None,
                        EventType::Added | EventType::Modified => {
                            Some((prepared.stored(), prepared.object_bytes.len()))
                        }
                    };
                    overlay.insert(prepared.row.clone(), after);
                    batch.push((prepared, reply));
                }
                Err(error) if in_batch => refused.push((error, reply)),
                Err(error) => self.answer(reply, Err(error)),
            }
        }
        if batch.is_empty() {
            for (error, reply) in refused {
                self.answer(reply, Err(error));
            }
            return;
        }

        let sizes: Vec<usize> = batch.iter().map(|(p, _)| p.event_bytes.len()).collect();
        let (dropping, dropped_bytes) = {
            let state = lock(&self.state);
            let dropping = events_to_drop(
                &state.history,
                state.history_bytes,
                &sizes,
                self.history_limit,
            );
            let dropped_bytes: usize = state
                .history
                .iter()
                .take(dropping)
                .map(|(_, size)| size)
                .sum();
            (dropping, dropped_bytes)
        };
        // The history holds exactly compacted+1 ..= revision, so dropping the
        // oldest `dropping` of it and the batch moves the bound that far.
        let new_compacted = compacted + super::as_revisions(dropping);

        if let Err(error) = self.commit(&writer.db, &batch, base, compacted, new_compacted) {
            tracing::error!(location = %self.location, writes = batch.len(), %error, "store commit failed");
            for (_, reply) in batch {
                self.answer(reply, Err(StoreError::Backend(error.to_string())));
            }
            for (_, reply) in refused {
                self.answer(reply, Err(StoreError::Backend(error.to_string())));
            }
            return;
        }

        let mut state = lock(&self.state);
        let mut freed = dropped_bytes;
        for (p, _) in &batch {
            freed = freed.saturating_add(p.replaced);
            let previous = state.sizes.remove(&p.row).unwrap_or(0);
            state.object_bytes -= previous;
            match p.event.event_type {
                EventType::Deleted => {
                    if let Some(old) = state.objects.remove(&p.row) {
                        state.indexes.replace(&p.row, Some(&old.object), None);
                    }
                }
                EventType::Added | EventType::Modified => {
                    let old = state.objects.insert(p.row.clone(), p.stored());
                    let old = old.as_ref().map(|o| &*o.object);
                    state.indexes.replace(&p.row, old, Some(&p.event.object));
                    state.sizes.insert(p.row.clone(), p.object_bytes.len());
                    state.object_bytes += p.object_bytes.len();
                }
            }
            state
                .history
                .push_back((p.event.clone(), p.event_bytes.len()));
            state.history_bytes += p.event_bytes.len();
        }
        for _ in 0..dropping {
            if let Some((_, size)) = state.history.pop_front() {
                state.history_bytes -= size;
            }
        }
        state.revision = revision;
        state.compacted = new_compacted;
        self.compacted.store(new_compacted, Ordering::Relaxed);
        for (p, _) in &batch {
            self.events.send(&p.event);
        }
        let live = state.object_bytes + state.history_bytes;
        drop(state);
        self.revisions.send_replace(revision);
        self.commits.fetch_add(1, Ordering::Relaxed);
        for (p, reply) in batch {
            let stored = p.stored();
            self.answer(reply, Ok(stored));
        }
        for (error, reply) in refused {
            self.answer(reply, Err(error));
        }

        writer.freed = writer.freed.saturating_add(freed);
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
    }

    /// Checks one write against the state its key is in (after the batch's
    /// earlier writes, else in the mirror) and prepares it at the revision after
    /// `revision`.
    fn prepare(
        &self,
        key: &Key,
        row: String,
        op: Write,
        revision: Revision,
        overlay: &Overlay,
    ) -> Result<Prepared, StoreError> {
        let Some(next) = revision.checked_add(1) else {
            return Err(StoreError::Backend(format!(
                "revision counter of {} is exhausted",
                self.location
            )));
        };
        let (current, replaced) = match overlay.get(&row) {
            Some(Some((stored, size))) => (Some(stored.clone()), *size),
            Some(None) => (None, 0),
            None => {
                let state = lock(&self.state);
                (
                    state.objects.get(&row).cloned(),
                    state.sizes.get(&row).copied().unwrap_or(0),
                )
            }
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
            .map_err(|e| backend(format_args!("encode object {row}"), e))?;
        if event_type != EventType::Deleted && object_bytes.len() > limits::MAX_OBJECT_BYTES {
            return Err(StoreError::Limit(
                key.clone(),
                limits::LimitError::TooLarge {
                    size: object_bytes.len(),
                },
            ));
        }
        let event_bytes = event_record(event_type, &row, &object_bytes);
        let object_bytes = Bytes::from(object_bytes);
        let object = Arc::new(object);
        let encoded = Encoded::new(&object, object_bytes.clone());
        Ok(Prepared {
            event: StoreEvent {
                revision: next,
                event_type,
                key: key.clone(),
                object,
                prev,
                encoded: Some(encoded),
            },
            row,
            object_bytes,
            event_bytes,
            replaced: if event_type == EventType::Added {
                0
            } else {
                replaced
            },
        })
    }

    /// One transaction for the batch's objects, their history entries and the
    /// counters, so a crash leaves either all of them or none.
    fn commit(
        &self,
        db: &Database,
        batch: &[(Prepared, Reply)],
        base: Revision,
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
        let mut last = base;
        {
            let mut objects = txn
                .open_table(OBJECTS)
                .map_err(|e| backend(format_args!("open objects table in {location}"), e))?;
            let mut history = txn
                .open_table(HISTORY)
                .map_err(|e| backend(format_args!("open history table in {location}"), e))?;
            for (p, _) in batch {
                let row = p.row.as_str();
                match p.event.event_type {
                    EventType::Deleted => {
                        objects
                            .remove(row)
                            .map_err(|e| backend(format_args!("delete {row} in {location}"), e))?;
                    }
                    EventType::Added | EventType::Modified => {
                        objects
                            .insert(row, &*p.object_bytes)
                            .map_err(|e| backend(format_args!("write {row} to {location}"), e))?;
                    }
                }
                let revision = p.event.revision;
                // An event the history bound drops at once need not be written.
                if revision > new_compacted {
                    history
                        .insert(revision, p.event_bytes.as_slice())
                        .map_err(|e| {
                            backend(
                                format_args!("write history entry {revision} to {location}"),
                                e,
                            )
                        })?;
                }
                last = revision;
            }
            for old in compacted + 1..=new_compacted.min(base) {
                history
                    .remove(old)
                    .map_err(|e| backend(format_args!("compact history in {location}"), e))?;
            }

            let mut meta = txn
                .open_table(META)
                .map_err(|e| backend(format_args!("open meta table in {location}"), e))?;
            meta.insert(META_REVISION, last)
                .map_err(|e| backend(format_args!("write revision to {location}"), e))?;
            meta.insert(META_COMPACTED, new_compacted)
                .map_err(|e| backend(format_args!("write compacted revision to {location}"), e))?;
        }
        txn.commit()
            .map_err(|e| backend(format_args!("commit write to {location}"), e))
    }
}
