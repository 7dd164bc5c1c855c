//! The embedded, persistent [`Store`] backend: every object, the global revision
//! counter and a bounded history of events in one redb file, mirrored in memory.
//!
//! redb because it is pure Rust (no C toolchain to build, nothing to link), ACID
//! with commits that are fsync'd before they return (so a SIGKILL right after a
//! write returns loses nothing), and MVCC, so reading the file never waits for a
//! writer. One write transaction carries the object changes, their history
//! entries and the new revision, so they can never disagree after a crash.
//! Writes are committed in groups: one writer thread commits every write waiting
//! for it in one transaction and one fsync, and answers each once it is durable.
//!
//! Reads never touch the file: an in-memory mirror of all objects and of the
//! history serves `get`, `list` and the replay part of `watch`. The file is read
//! once, on open.
//!
//! Bounds: no object is written that is deeper or larger than
//! [`tugboat_api::limits`] allows, so every one reads back on the next open; the
//! history is bounded by its number of events and by its encoded bytes; and the
//! file is compacted (on open, and whenever enough of it has been freed) so that
//! space given back by deletes and overwrites returns to the disk. An object that
//! cannot be read on open (written by an older version without these bounds) is
//! moved to a quarantine table, kept byte for byte, and the store opens without
//! it instead of refusing to start.
//!
//! The parts: `tables` (the file's tables and how rows are encoded), `open`
//! (loading the file into the mirror), `writer` (the write path: the writer
//! thread and its group commit) and `history`
//! (the bounded history, watch replay and lists at a past revision).

mod history;
mod open;
mod tables;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ::redb::backends::InMemoryBackend;
use ::redb::{Database, ReadableDatabase};
use serde_json::Value;

use self::tables::QUARANTINE;
use self::writer::{Request, Write};
use super::live::Channels;
pub(crate) use super::live::lock;
use super::{Key, Revision, Store, StoreError, StoreEvent, Stored, WatchStream};

/// How many events a store keeps for watches that resume from an old revision,
/// unless told otherwise. Clients that fall further behind must relist.
pub const DEFAULT_HISTORY: usize = 10_000;

/// How many bytes of events (encoded) the history keeps at most, unless told
/// otherwise: whichever of the two bounds is reached first compacts it.
pub const DEFAULT_HISTORY_BYTES: usize = 16 * 1024 * 1024;

/// Once this many bytes of the file have been freed (objects overwritten or
/// deleted, history compacted) since the last compaction, and at least as many as
/// are live, the file is compacted so the space goes back to the disk.
const COMPACT_AFTER_FREED: usize = 16 * 1024 * 1024;

/// redb's page cache. Every object is mirrored in memory already and the file is
/// read only when opened and by each write's walk down its B-tree, so redb's
/// default (1 GiB) mostly held a second copy of the data (at 1,000 hollow nodes
/// and 30,000 pods the controller's resident memory went from 3.0 GB to 2.7 GB
/// with this and the per-resource channels). This keeps the trees' inner pages;
/// leaves come from the kernel's page cache.
const FILE_CACHE: usize = 64 * 1024 * 1024;

/// How many live events a watcher may fall behind before its stream ends with
/// `Gone`. Larger than the default history so that a watcher busy with a full
/// replay does not lag out on the writes that happen meanwhile.
const BROADCAST_CAPACITY: usize = 16_384;

/// The bounds of the history a store keeps for watches.
#[derive(Clone, Copy, Debug)]
pub struct History {
    /// At most this many events…
    pub events: usize,
    /// …and at most this many bytes of them, encoded.
    pub bytes: usize,
}

impl Default for History {
    fn default() -> Self {
        History {
            events: DEFAULT_HISTORY,
            bytes: DEFAULT_HISTORY_BYTES,
        }
    }
}

/// The [`Store`] backed by a redb database (a file, or memory for tests).
///
/// Dropping it waits for its writer thread to commit what is still queued and
/// to close the database, so the file can be opened again right after.
pub struct RedbStore {
    inner: Arc<Inner>,
    /// Writes for the writer thread; `None` only while dropping.
    requests: Option<tokio::sync::mpsc::UnboundedSender<Request>>,
    writer_thread: Option<JoinHandle<()>>,
}

struct Inner {
    /// Names the database in error messages: the file path, or "in-memory database".
    location: String,
    history_limit: History,
    /// The database. The writer thread holds this lock across each batch's
    /// check–commit–apply sequence (it is the only writer, so the mirror it
    /// checks preconditions against cannot change under it, and revisions are
    /// handed out in commit order); compaction, which needs the database to
    /// itself, runs between two batches. It is separate from `state` so that
    /// `get`, `list` and `watch` never wait for an fsync.
    writer: Mutex<Writer>,
    /// The mirror. Every change to it and the broadcast of the matching event
    /// happen under this one lock, and `watch` subscribes and reads its replay
    /// under it too: that is what makes replay + live gap-free and duplicate-free.
    state: Mutex<State>,
    /// Live events, one channel per resource.
    events: Channels,
    /// The latest revision, for callers waiting until the store reaches one.
    revisions: tokio::sync::watch::Sender<Revision>,
    /// The compacted revision, shared with watch streams so that they can report
    /// it in `Gone` without keeping the database (and its file lock) alive.
    compacted: Arc<AtomicU64>,
    /// Writes sent to the writer thread and not yet answered.
    pending: AtomicUsize,
    /// Transactions that committed writes since the store was opened.
    commits: AtomicU64,
}

struct Writer {
    db: Database,
    /// Bytes freed in the file since it was last compacted.
    freed: usize,
}

struct State {
    objects: BTreeMap<String, Stored>,
    /// Encoded size of each object, by key (what its row takes in the file).
    sizes: HashMap<String, usize>,
    /// Events compacted+1 ..= revision, oldest first, with their encoded sizes.
    history: VecDeque<(StoreEvent, usize)>,
    /// The sum of the sizes in `history`.
    history_bytes: usize,
    /// The sum of the sizes in `sizes`.
    object_bytes: usize,
    revision: Revision,
    compacted: Revision,
    /// Objects by owner and pods by node, kept with `objects`.
    indexes: super::index::Indexes,
}

impl State {
    fn view(&self) -> super::live::View<'_> {
        super::live::View {
            objects: &self.objects,
            indexes: &self.indexes,
            history: &self.history,
            revision: self.revision,
            compacted: self.compacted,
        }
    }
}

fn backend(what: impl fmt::Display, err: impl fmt::Display) -> StoreError {
    StoreError::Backend(format!("{what}: {err}"))
}

/// `usize` → `u64` cannot fail on any platform Tugboat runs on, but saturating
/// keeps that an assumption rather than a panic.
fn as_revisions(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl RedbStore {
    /// Is a write queued or being committed? One whose caller was cancelled (a
    /// request or reconcile stopped at shutdown) is still committed, and
    /// dropping the store waits for it.
    pub fn writing(&self) -> bool {
        self.inner.pending.load(Ordering::SeqCst) > 0
    }

    /// Starts the writer thread for a store whose file is loaded.
    fn start(inner: Inner) -> Result<RedbStore, StoreError> {
        let inner = Arc::new(inner);
        let (requests, mut queue) = tokio::sync::mpsc::unbounded_channel();
        let thread_inner = Arc::clone(&inner);
        let writer_thread = std::thread::Builder::new()
            .name("store-writer".to_string())
            .spawn(move || writer::run(&thread_inner, &mut queue))
            .map_err(|e| backend(format_args!("start the writer of {}", inner.location), e))?;
        Ok(RedbStore {
            inner,
            requests: Some(requests),
            writer_thread: Some(writer_thread),
        })
    }

    /// Opens the database at `path`, creating it if missing, and loads all of it.
    pub fn open(path: &Path, history_limit: usize) -> Result<RedbStore, StoreError> {
        Self::open_with(
            path,
            History {
                events: history_limit,
                ..History::default()
            },
        )
    }

    /// Like [`RedbStore::open`], with both bounds of the history given.
    pub fn open_with(path: &Path, history: History) -> Result<RedbStore, StoreError> {
        let location = path.display().to_string();
        let db = Database::builder()
            .set_cache_size(FILE_CACHE)
            .create(path)
            .map_err(|e| backend(format_args!("open database {location}"), e))?;
        Self::load(db, location, history, BROADCAST_CAPACITY)
    }

    /// A store that lives only as long as it does: for unit tests and simulated
    /// scale tests, where the same code paths should run without disk I/O.
    pub fn in_memory(history_limit: usize) -> Result<RedbStore, StoreError> {
        Self::in_memory_with(
            History {
                events: history_limit,
                ..History::default()
            },
            BROADCAST_CAPACITY,
        )
    }

    #[cfg(test)]
    pub(crate) fn in_memory_with_capacity(
        history_limit: usize,
        broadcast_capacity: usize,
    ) -> Result<RedbStore, StoreError> {
        Self::in_memory_with(
            History {
                events: history_limit,
                ..History::default()
            },
            broadcast_capacity,
        )
    }

    fn in_memory_with(
        history: History,
        broadcast_capacity: usize,
    ) -> Result<RedbStore, StoreError> {
        let location = "in-memory database".to_string();
        let db = Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .map_err(|e| backend(format_args!("create {location}"), e))?;
        Self::load(db, location, history, broadcast_capacity)
    }

    /// The rows moved aside on open because they could not be read, with their
    /// bytes (for an operator to inspect or repair).
    pub fn quarantined(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let writer = lock(&self.inner.writer);
        let location = &self.inner.location;
        let txn = writer
            .db
            .begin_read()
            .map_err(|e| backend(format_args!("begin read of {location}"), e))?;
        let table = txn
            .open_table(QUARANTINE)
            .map_err(|e| backend(format_args!("open quarantine table in {location}"), e))?;
        let mut out = Vec::new();
        for entry in table
            .range::<&str>(..)
            .map_err(|e| backend(format_args!("read quarantine of {location}"), e))?
        {
            let (k, v) =
                entry.map_err(|e| backend(format_args!("read quarantine of {location}"), e))?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// How many transactions have committed writes since the store was opened:
    /// with the revision, how many writes share one fsync.
    pub fn commits(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }

    /// Every object, in key order: for copying the store elsewhere.
    pub fn dump(&self) -> Vec<(Key, Stored)> {
        lock(&self.inner.state)
            .objects
            .iter()
            .filter_map(|(row, stored)| Some((Key::decode(row)?, stored.clone())))
            .collect()
    }

    /// What the history holds now: (events, encoded bytes).
    pub fn history_size(&self) -> (usize, usize) {
        let state = lock(&self.inner.state);
        (state.history.len(), state.history_bytes)
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Without a sender, the writer thread commits what is queued and ends.
        self.requests = None;
        if let Some(thread) = self.writer_thread.take()
            && thread.join().is_err()
        {
            tracing::error!(location = %self.inner.location, "the store's writer thread panicked");
        }
    }
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("location", &self.inner.location)
            .field("history_limit", &self.inner.history_limit)
            .field("revision", &self.revision())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &Key) -> Result<Option<Stored>, StoreError> {
        Ok(lock(&self.inner.state).objects.get(&key.encode()).cloned())
    }

    async fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<(Vec<Stored>, Revision), StoreError> {
        let state = lock(&self.inner.state);
        Ok((state.view().list(resource, namespace), state.revision))
    }

    async fn list_by(
        &self,
        resource: &str,
        namespace: Option<&str>,
        by: super::index::By<'_>,
    ) -> Result<(Vec<Stored>, Revision), StoreError> {
        let state = lock(&self.inner.state);
        Ok((
            state.view().list_by(resource, namespace, by),
            state.revision,
        ))
    }

    async fn create(&self, key: &Key, object: Value) -> Result<Stored, StoreError> {
        self.write(key, Write::Create(object)).await
    }

    async fn update(
        &self,
        key: &Key,
        object: Value,
        expected: Option<Revision>,
    ) -> Result<Stored, StoreError> {
        self.write(key, Write::Update(object, expected)).await
    }

    async fn delete(&self, key: &Key, expected: Option<Revision>) -> Result<Stored, StoreError> {
        self.write(key, Write::Delete(expected)).await
    }

    async fn watch(
        &self,
        resource: &str,
        namespace: Option<&str>,
        after: Revision,
    ) -> Result<WatchStream, StoreError> {
        self.watch_after(resource, namespace, after)
    }

    async fn list_at(
        &self,
        resource: &str,
        namespace: Option<&str>,
        revision: Revision,
        after_key: Option<&Key>,
    ) -> Result<Vec<Stored>, StoreError> {
        self.list_at_revision(resource, namespace, revision, after_key)
    }

    async fn wait_for(&self, revision: Revision, timeout: Duration) -> bool {
        let mut rx = self.inner.revisions.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision)).await,
            Ok(Ok(_))
        )
    }

    fn revision(&self) -> Revision {
        lock(&self.inner.state).revision
    }
}
