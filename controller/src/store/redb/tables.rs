//! The redb file's tables, and how objects and events are encoded in their rows.

use ::redb::{Database, ReadableDatabase, TableDefinition};
use serde::Deserialize;
use serde_json::Value;

use super::backend;
use crate::store::{EventType, Revision, StoreError};

/// Encoded [`Key`] → the object's JSON.
pub(super) const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
/// Revision → the JSON of the event committed at it (see [`EventRecord`]).
pub(super) const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
/// Counters that must survive restarts together with the data they describe.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Rows that could not be read on open (`objects/KEY`, `history/REVISION`), kept
/// as they were so nothing is lost; the store runs without them.
pub(super) const QUARANTINE: TableDefinition<&str, &[u8]> = TableDefinition::new("quarantine");
pub(super) const META_REVISION: &str = "revision";
pub(super) const META_COMPACTED: &str = "compacted";

/// An event as stored in the history table, `{"type":…,"key":…,"object":…}`;
/// its revision is the row's key. The object is kept as its JSON text, which is
/// also what watchers are sent.
#[derive(Deserialize)]
pub(super) struct EventRecord {
    #[serde(rename = "type")]
    pub(super) event_type: String,
    pub(super) key: String,
    pub(super) object: Box<serde_json::value::RawValue>,
}

pub(super) fn event_type_name(event_type: EventType) -> &'static str {
    match event_type {
        EventType::Added => "ADDED",
        EventType::Modified => "MODIFIED",
        EventType::Deleted => "DELETED",
    }
}

pub(super) fn parse_event_type(name: &str) -> Option<EventType> {
    match name {
        "ADDED" => Some(EventType::Added),
        "MODIFIED" => Some(EventType::Modified),
        "DELETED" => Some(EventType::Deleted),
        _ => None,
    }
}

pub(super) use crate::store::stamp;

pub(super) fn resource_version(object: &Value) -> Option<Revision> {
    object
        .get("metadata")?
        .get("resourceVersion")?
        .as_str()?
        .parse()
        .ok()
}

pub(super) fn read_compacted(db: &Database, location: &str) -> Result<Revision, StoreError> {
    let txn = db
        .begin_read()
        .map_err(|e| backend(format_args!("begin read of {location}"), e))?;
    let meta = txn
        .open_table(META)
        .map_err(|e| backend(format_args!("open meta table in {location}"), e))?;
    Ok(meta
        .get(META_COMPACTED)
        .map_err(|e| backend(format_args!("read compacted from {location}"), e))?
        .map(|g| g.value())
        .unwrap_or(0))
}
