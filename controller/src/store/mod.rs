//! The store: objects as JSON keyed by (resource, namespace, name), one global
//! revision counter, optimistic concurrency and watch with a bounded history.
//!
//! Callers see only the [`Store`] trait, so an etcd backend (whose revisions and
//! watches map one-to-one onto this model) can replace the embedded one without
//! touching them. [`redb::RedbStore`] is the embedded, persistent backend.

#[cfg(feature = "etcd")]
pub mod etcd;
pub mod fence;
pub mod index;
pub(crate) mod live;
pub mod redb;
#[cfg(test)]
mod suite;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use serde_json::Value;

/// A store revision. Every write gets the next one; it is the object's
/// `metadata.resourceVersion`.
pub type Revision = u64;

/// Where an object lives: its resource's store name (`deployments.apps`, `pods`),
/// its namespace (`None` for cluster-scoped objects) and its name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub resource: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl Key {
    pub fn new(
        resource: impl Into<String>,
        namespace: Option<&str>,
        name: impl Into<String>,
    ) -> Self {
        Key {
            resource: resource.into(),
            namespace: namespace.map(str::to_string),
            name: name.into(),
        }
    }

    /// The flat form used as the storage key: `resource/namespace/name`
    /// (`resource//name` when cluster-scoped). `/` cannot occur in any part.
    pub fn encode(&self) -> String {
        format!(
            "{}/{}/{}",
            self.resource,
            self.namespace.as_deref().unwrap_or(""),
            self.name
        )
    }

    /// Inverse of [`Key::encode`].
    pub fn decode(s: &str) -> Option<Key> {
        let mut parts = s.splitn(3, '/');
        let resource = parts.next()?;
        let namespace = parts.next()?;
        let name = parts.next()?;
        Some(Key::new(
            resource,
            (!namespace.is_empty()).then_some(namespace),
            name,
        ))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.resource, ns, self.name),
            None => write!(f, "{} {}", self.resource, self.name),
        }
    }
}

/// An object's JSON, encoded once when it was written and shared by every
/// reader that sends the object as it is stored (a GET, a watch event to each of
/// its watchers), so that none of them encodes it again.
///
/// It remembers which object it encodes: [`Encoded::bytes_for`] gives the bytes
/// only for that very object (the same allocation), so code that replaces an
/// object beside it (a store wrapper, a filtered watch sending an earlier state)
/// can never send bytes that do not match.
#[derive(Clone)]
pub struct Encoded {
    of: Arc<Value>,
    bytes: Bytes,
}

impl Encoded {
    /// `bytes` must be `object` encoded as JSON.
    pub fn new(object: &Arc<Value>, bytes: Bytes) -> Encoded {
        Encoded {
            of: Arc::clone(object),
            bytes,
        }
    }

    /// The JSON of `object`, if this is its encoding.
    pub fn bytes_for(&self, object: &Arc<Value>) -> Option<&Bytes> {
        Arc::ptr_eq(&self.of, object).then_some(&self.bytes)
    }
}

impl fmt::Debug for Encoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoded")
            .field("bytes", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

/// An object as stored, with the revision of its last write
/// (equal to its `metadata.resourceVersion`).
#[derive(Clone, Debug)]
pub struct Stored {
    pub object: Arc<Value>,
    pub revision: Revision,
    /// `object` as JSON, when the backend kept its encoding.
    pub encoded: Option<Encoded>,
}

impl Stored {
    /// The object's JSON as stored, if the backend kept it.
    pub fn json(&self) -> Option<&Bytes> {
        self.encoded.as_ref()?.bytes_for(&self.object)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One committed write. For `Deleted`, `object` is the last state with its
/// `metadata.resourceVersion` set to the deletion's revision, as Kubernetes does.
#[derive(Clone, Debug)]
pub struct StoreEvent {
    pub revision: Revision,
    pub event_type: EventType,
    pub key: Key,
    pub object: Arc<Value>,
    /// For a modification, the object before it (shared with the state it
    /// replaced, not a copy): what a filtered watch compares with to tell an
    /// object leaving its selection. `None` for additions and deletions, and for
    /// events read back from disk whose earlier state is not in the history.
    pub prev: Option<Arc<Value>>,
    /// `object` as JSON, when the backend kept its encoding: shared by every
    /// watcher of this event.
    pub encoded: Option<Encoded>,
}

impl StoreEvent {
    /// The object's JSON as stored, if the backend kept it.
    pub fn json(&self) -> Option<&Bytes> {
        self.encoded.as_ref()?.bytes_for(&self.object)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(Key),
    #[error("{0} already exists")]
    AlreadyExists(Key),
    #[error("{key} was modified (resourceVersion {actual}, the request expected {expected})")]
    Conflict {
        key: Key,
        expected: Revision,
        actual: Revision,
    },
    #[error("revision {requested} is too old: history starts after revision {compacted}")]
    Gone {
        requested: Revision,
        compacted: Revision,
    },
    /// The object is outside the bounds of [`tugboat_api::limits`]: writing it
    /// would store what cannot be read back.
    #[error("cannot store {0}: {1}")]
    Limit(Key, tugboat_api::limits::LimitError),
    #[error("store backend: {0}")]
    Backend(String),
    /// The store could not be reached (no member answered, or none had a
    /// leader): the request was surely not carried out, and may go again, here
    /// or on another controller.
    #[error("the store cannot be reached: {0}")]
    Unavailable(String),
}

/// Writes `revision` into `metadata.resourceVersion`, as a string because that is
/// what Kubernetes clients expect (they must treat it as opaque).
pub(crate) fn stamp(key: &Key, object: &mut Value, revision: Revision) -> Result<(), StoreError> {
    let Some(fields) = object.as_object_mut() else {
        return Err(StoreError::Backend(format!(
            "cannot store {key}: it is not a JSON object"
        )));
    };
    let metadata = fields
        .entry("metadata")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if metadata.is_null() {
        *metadata = Value::Object(serde_json::Map::new());
    }
    let Some(metadata) = metadata.as_object_mut() else {
        return Err(StoreError::Backend(format!(
            "cannot store {key}: its metadata is not a JSON object"
        )));
    };
    metadata.insert(
        "resourceVersion".to_string(),
        Value::String(revision.to_string()),
    );
    Ok(())
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<StoreEvent, StoreError>> + Send>>;

/// The storage every other part of the controller goes through.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The object at `key`, if any.
    async fn get(&self, key: &Key) -> Result<Option<Stored>, StoreError>;

    /// All objects of `resource` (in `namespace`, or in every namespace when `None`),
    /// ordered by key, with the store revision the list was read at.
    async fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<(Vec<Stored>, Revision), StoreError>;

    /// The objects of `resource` (in `namespace`, or in every namespace when
    /// `None`) under `by` (an owner's uid, a pod's node), ordered by key, with
    /// the revision they were read at: the same as filtering [`Store::list`].
    /// A backend that mirrors its objects keeps indexes for this; the default
    /// filters the whole list.
    async fn list_by(
        &self,
        resource: &str,
        namespace: Option<&str>,
        by: index::By<'_>,
    ) -> Result<(Vec<Stored>, Revision), StoreError> {
        let (all, revision) = self.list(resource, namespace).await?;
        let kept = all
            .into_iter()
            .filter(|s| by.matches(resource, &s.object))
            .collect();
        Ok((kept, revision))
    }

    /// Stores a new object. Sets `metadata.resourceVersion` to the new revision.
    async fn create(&self, key: &Key, object: Value) -> Result<Stored, StoreError>;

    /// Replaces the object at `key` if its current revision equals `expected`
    /// (any revision when `None`). Sets `metadata.resourceVersion`.
    async fn update(
        &self,
        key: &Key,
        object: Value,
        expected: Option<Revision>,
    ) -> Result<Stored, StoreError>;

    /// Removes the object at `key` if its current revision equals `expected`
    /// (any when `None`). Returns the removed object, its resourceVersion set to the
    /// deletion's revision.
    async fn delete(&self, key: &Key, expected: Option<Revision>) -> Result<Stored, StoreError>;

    /// Every event on `resource` (in `namespace`, if given) with a revision greater
    /// than `after`, first those already in the history, then live ones, in revision
    /// order with none missed or repeated. `Gone` when the history no longer reaches
    /// back to `after`; the stream ends with `Gone` if the watcher falls too far behind.
    async fn watch(
        &self,
        resource: &str,
        namespace: Option<&str>,
        after: Revision,
    ) -> Result<WatchStream, StoreError>;

    /// The objects of `resource` (in `namespace`) with keys after `after_key`, as
    /// they were at `revision`, in key order: for the later pages of a paginated
    /// list, which must all show one moment. `Gone` when that moment can no longer
    /// be shown (compacted, or, for a backend that keeps only the latest state,
    /// changed since).
    async fn list_at(
        &self,
        resource: &str,
        namespace: Option<&str>,
        revision: Revision,
        after_key: Option<&Key>,
    ) -> Result<Vec<Stored>, StoreError>;

    /// Waits until the store has reached `revision`, at most `timeout`; whether it
    /// did.
    async fn wait_for(&self, revision: Revision, timeout: std::time::Duration) -> bool;

    /// The revision of the latest write.
    fn revision(&self) -> Revision;

    /// Can the store serve now? For `/readyz`: an embedded store always can;
    /// a remote one answers whether it can be reached.
    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
