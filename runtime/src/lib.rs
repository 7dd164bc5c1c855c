//! Tugboat's watch-and-reconcile layer, in kube-runtime's shape, shared by the
//! controller and the agent:
//!
//! - [`source`]: where lists and watches come from — the in-process registry
//!   (the controller implements [`Source`] for it) or the API over HTTP
//!   ([`tugboat_api::Client`]).
//! - [`watcher`]: the one list → watch → resume / relist loop, with back-off,
//!   as a stream of [`watcher::Event`]s.
//! - [`reflector`]: a map of shared objects kept from a watcher, one writer and
//!   cheap readers.
//! - [`controller`]: the keyed queue and the controller every reconciler runs
//!   on — `reconcile(Arc<K>, Arc<Ctx>) -> Result<Action, E>`, an error policy
//!   that sees the object and the typed error, `owns` / `watches` for related
//!   objects, and the [`ReconcileReason`] in every reconcile span.
//! - [`backoff`]: the one back-off every retry uses.
//! - [`events`]: the one event recorder, over the registry or HTTP.

pub mod backoff;
pub mod controller;
pub mod events;
pub mod object;
mod queue;
pub mod reflector;
pub mod source;
pub mod watcher;

pub use backoff::Backoff;
pub use controller::{Action, Controller, EventMapper, Mapper, ReconcileReason};
pub use object::{Object, ObjectRef};
pub use source::{EventStream, RawEvent, RawList, Source, SourceError, WatchParams};
pub use watcher::Event;

#[cfg(test)]
mod testing;
