//! Opening a store: creating its tables, loading the file into the in-memory
//! mirror, moving unreadable rows to the quarantine table, and compacting the
//! history down to the bounds it is opened with.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};

use ::redb::{Database, ReadableDatabase};
use bytes::Bytes;
use serde_json::Value;

use super::tables::{
    EventRecord, HISTORY, META, META_COMPACTED, META_REVISION, OBJECTS, QUARANTINE,
    parse_event_type, read_compacted, resource_version,
};
use super::{History, Inner, RedbStore, State, Writer, as_revisions, backend};
use crate::store::EventType;
use crate::store::{Encoded, Key, StoreError, StoreEvent, Stored};

/// One row read on open that the store cannot use.
struct Quarantined {
    row: String,
    bytes: Vec<u8>,
    why: String,
}

impl RedbStore {
    pub(super) fn load(
        mut db: Database,
        location: String,
        history_limit: History,
        broadcast_capacity: usize,
    ) -> Result<RedbStore, StoreError> {
        // Creating the tables up front means a read never has to tell "missing
        // table" apart from "empty table".
        let txn = db
            .begin_write()
            .map_err(|e| backend(format_args!("begin write to {location}"), e))?;
        txn.open_table(OBJECTS)
            .map_err(|e| backend(format_args!("create objects table in {location}"), e))?;
        txn.open_table(HISTORY)
            .map_err(|e| backend(format_args!("create history table in {location}"), e))?;
        txn.open_table(META)
            .map_err(|e| backend(format_args!("create meta table in {location}"), e))?;
        txn.open_table(QUARANTINE)
            .map_err(|e| backend(format_args!("create quarantine table in {location}"), e))?;
        txn.commit()
            .map_err(|e| backend(format_args!("commit table creation to {location}"), e))?;

        let txn = db
            .begin_read()
            .map_err(|e| backend(format_args!("begin read of {location}"), e))?;

        let meta = txn
            .open_table(META)
            .map_err(|e| backend(format_args!("open meta table in {location}"), e))?;
        let read_counter = |name: &str| -> Result<u64, StoreError> {
            Ok(meta
                .get(name)
                .map_err(|e| backend(format_args!("read {name} from {location}"), e))?
                .map(|guard| guard.value())
                .unwrap_or(0))
        };
        let revision = read_counter(META_REVISION)?;
        let mut compacted = read_counter(META_COMPACTED)?;
        let mut quarantine: Vec<Quarantined> = Vec::new();

        let table = txn
            .open_table(OBJECTS)
            .map_err(|e| backend(format_args!("open objects table in {location}"), e))?;
        let mut objects = BTreeMap::new();
        let mut sizes = HashMap::new();
        for entry in table
            .range::<&str>(..)
            .map_err(|e| backend(format_args!("read objects from {location}"), e))?
        {
            let (key, value) =
                entry.map_err(|e| backend(format_args!("read objects from {location}"), e))?;
            let key = key.value();
            let bytes = value.value();
            let decoded = serde_json::from_slice::<Value>(bytes)
                .map_err(|e| e.to_string())
                .and_then(|object| match resource_version(&object) {
                    Some(rv) => Ok((object, rv)),
                    None => Err("it has no numeric metadata.resourceVersion".to_string()),
                });
            match decoded {
                Ok((object, object_revision)) => {
                    sizes.insert(key.to_string(), bytes.len());
                    // The row is the object's JSON as it was encoded when written.
                    let object = Arc::new(object);
                    let encoded = Encoded::new(&object, Bytes::copy_from_slice(bytes));
                    objects.insert(
                        key.to_string(),
                        Stored {
                            object,
                            revision: object_revision,
                            encoded: Some(encoded),
                        },
                    );
                }
                Err(why) => quarantine.push(Quarantined {
                    row: format!("objects/{key}"),
                    bytes: bytes.to_vec(),
                    why,
                }),
            }
        }

        // Shadowing does not drop: the objects table must go before the file can
        // be compacted below.
        drop(table);
        let table = txn
            .open_table(HISTORY)
            .map_err(|e| backend(format_args!("open history table in {location}"), e))?;
        let mut history = VecDeque::new();
        let mut history_bytes = 0usize;
        let mut last: std::collections::HashMap<String, Arc<Value>> =
            std::collections::HashMap::new();
        for entry in table
            .range::<u64>(..)
            .map_err(|e| backend(format_args!("read history from {location}"), e))?
        {
            let (event_revision, value) =
                entry.map_err(|e| backend(format_args!("read history from {location}"), e))?;
            let event_revision = event_revision.value();
            let bytes = value.value();
            let event = serde_json::from_slice::<EventRecord>(bytes)
                .map_err(|e| e.to_string())
                .and_then(|record| {
                    match (
                        parse_event_type(&record.event_type),
                        Key::decode(&record.key),
                    ) {
                        (Some(event_type), Some(key)) => {
                            let json = record.object.get();
                            let object = Arc::new(
                                serde_json::from_str::<Value>(json).map_err(|e| e.to_string())?,
                            );
                            let stored_json =
                                Encoded::new(&object, Bytes::copy_from_slice(json.as_bytes()));
                            // The state before a modification, when the history
                            // holds it.
                            let encoded = key.encode();
                            let prev = match event_type {
                                EventType::Modified => last.get(&encoded).cloned(),
                                _ => None,
                            };
                            match event_type {
                                EventType::Deleted => {
                                    last.remove(&encoded);
                                }
                                _ => {
                                    last.insert(encoded, Arc::clone(&object));
                                }
                            }
                            Ok(StoreEvent {
                                revision: event_revision,
                                event_type,
                                key,
                                object,
                                prev,
                                encoded: Some(stored_json),
                            })
                        }
                        _ => Err("it has an unknown type or key".to_string()),
                    }
                });
            match event {
                Ok(event) => {
                    history_bytes += bytes.len();
                    history.push_back((event, bytes.len()));
                }
                Err(why) => {
                    // Watches cannot replay across an event they cannot read: the
                    // history starts after it, and a watch from before gets 410
                    // and relists.
                    quarantine.push(Quarantined {
                        row: format!("history/{event_revision}"),
                        bytes: bytes.to_vec(),
                        why,
                    });
                    compacted = compacted.max(event_revision);
                    history.clear();
                    history_bytes = 0;
                    last.clear();
                }
            }
        }
        drop(table);
        drop(meta);
        drop(txn);
        while history
            .front()
            .is_some_and(|(e, _): &(StoreEvent, usize)| e.revision <= compacted)
        {
            if let Some((_, size)) = history.pop_front() {
                history_bytes -= size;
            }
        }

        // Watches rely on the history holding exactly compacted+1 ..= revision;
        // refuse to serve from a file where that does not hold rather than
        // silently skipping events.
        let contiguous = history
            .iter()
            .zip(compacted + 1..)
            .all(|((event, _), expected)| event.revision == expected);
        if !contiguous || as_revisions(history.len()) != revision.saturating_sub(compacted) {
            return Err(StoreError::Backend(format!(
                "history in {location} does not cover revisions {} to {revision}",
                compacted + 1
            )));
        }

        // Opened with smaller bounds than it was written with: compact now, so
        // the file and the mirror agree on what the history holds.
        let mut bound = compacted;
        {
            let mut len = history.len();
            let mut bytes = history_bytes;
            for (event, size) in history.iter() {
                if len <= history_limit.events && bytes <= history_limit.bytes {
                    break;
                }
                bound = event.revision;
                len -= 1;
                bytes -= size;
            }
        }
        let stored_compacted = read_compacted(&db, &location)?;
        if bound > stored_compacted || !quarantine.is_empty() {
            let txn = db
                .begin_write()
                .map_err(|e| backend(format_args!("begin write to {location}"), e))?;
            {
                let mut table = txn
                    .open_table(HISTORY)
                    .map_err(|e| backend(format_args!("open history table in {location}"), e))?;
                for old in stored_compacted + 1..=bound {
                    table
                        .remove(old)
                        .map_err(|e| backend(format_args!("compact history in {location}"), e))?;
                }
                let mut objects = txn
                    .open_table(OBJECTS)
                    .map_err(|e| backend(format_args!("open objects table in {location}"), e))?;
                let mut kept = txn
                    .open_table(QUARANTINE)
                    .map_err(|e| backend(format_args!("open quarantine table in {location}"), e))?;
                for q in &quarantine {
                    tracing::error!(
                        location = %location,
                        row = %q.row,
                        why = %q.why,
                        "a stored row cannot be read; it is moved to the quarantine table, unchanged, and the store opens without it"
                    );
                    kept.insert(q.row.as_str(), q.bytes.as_slice())
                        .map_err(|e| {
                            backend(format_args!("quarantine {} in {location}", q.row), e)
                        })?;
                    if let Some(key) = q.row.strip_prefix("objects/") {
                        objects.remove(key).map_err(|e| {
                            backend(format_args!("quarantine {} in {location}", q.row), e)
                        })?;
                    }
                }
                let mut meta = txn
                    .open_table(META)
                    .map_err(|e| backend(format_args!("open meta table in {location}"), e))?;
                meta.insert(META_COMPACTED, bound)
                    .map_err(|e| backend(format_args!("record compaction in {location}"), e))?;
            }
            txn.commit()
                .map_err(|e| backend(format_args!("commit compaction to {location}"), e))?;
            while history.front().is_some_and(|(e, _)| e.revision <= bound) {
                if let Some((_, size)) = history.pop_front() {
                    history_bytes -= size;
                }
            }
            compacted = bound;
        }
        // Space freed by deletes before the last stop goes back to the disk.
        let compacted_file = db
            .compact()
            .map_err(|e| backend(format_args!("compact {location}"), e))?;

        let object_bytes = sizes.values().sum();
        tracing::info!(
            location = %location,
            objects = objects.len(),
            revision,
            compacted,
            history_bytes,
            quarantined = quarantine.len(),
            compacted_file,
            "store opened"
        );

        let mut indexes = crate::store::index::Indexes::default();
        for (row, stored) in &objects {
            indexes.replace(row, None, Some(&stored.object));
        }
        let (revisions, _) = tokio::sync::watch::channel(revision);
        RedbStore::start(Inner {
            location,
            history_limit,
            writer: Mutex::new(Writer { db, freed: 0 }),
            state: Mutex::new(State {
                objects,
                sizes,
                history,
                history_bytes,
                object_bytes,
                revision,
                compacted,
                indexes,
            }),
            events: super::Channels::new(broadcast_capacity),
            revisions,
            compacted: Arc::new(AtomicU64::new(compacted)),
            pending: AtomicUsize::new(0),
            commits: AtomicU64::new(0),
        })
    }
}
