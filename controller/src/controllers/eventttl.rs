//! Event expiry: events older than the TTL (one hour by default, as in Kubernetes)
//! are deleted, so a crash-looping pod cannot grow the store without bound. Repeats
//! are already folded into one event by the recorders (`count`).
//!
//! A reconciler of Events on the shared controller: each event is looked at when
//! it is written and requeues itself for the moment it expires.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use tokio_util::sync::CancellationToken;
use tugboat_api::resource::EVENTS;
use tugboat_runtime::controller::{Action, Controller, backoff_policy};

use super::Error;
use crate::registry::Registry;

pub struct Ctx {
    registry: Arc<Registry>,
    ttl: Duration,
}

pub async fn run(registry: Arc<Registry>, ttl: Duration, shutdown: CancellationToken) {
    let ctx = Arc::new(Ctx {
        registry: registry.clone(),
        ttl,
    });
    Controller::new("event-ttl", registry, &EVENTS)
        .run(reconcile, backoff_policy, ctx, shutdown)
        .await;
}

/// When the event last happened: `lastTimestamp`, else `eventTime`, else
/// `firstTimestamp`, else its creation.
fn last_seen(event: &Event) -> Option<jiff::Timestamp> {
    event
        .last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// How long until `event` expires at `now` (zero: it has); `None` when it
/// carries no time at all (kept).
pub fn expires_in(event: &Event, ttl: Duration, now: jiff::Timestamp) -> Option<Duration> {
    let seen = last_seen(event)?;
    let age = now.duration_since(seen).as_secs_f64().max(0.0);
    Some(Duration::from_secs_f64((ttl.as_secs_f64() - age).max(0.0)))
}

pub async fn reconcile(event: Arc<Event>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(left) = expires_in(&event, ctx.ttl, jiff::Timestamp::now()) else {
        return Ok(Action::await_change());
    };
    if !left.is_zero() {
        // A second past the moment, so the look finds it expired.
        return Ok(Action::requeue(left + Duration::from_secs(1)));
    }
    let ns = event.metadata.namespace.as_deref();
    let name = event.metadata.name.as_deref().unwrap_or("");
    match ctx.registry.delete_now(&EVENTS, ns, name).await {
        Ok(_) => tracing::debug!(event = name, "expired event deleted"),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(v: serde_json::Value) -> Event {
        let mut v = v;
        v["metadata"] = json!({"name": "e"});
        v["involvedObject"] = json!({});
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn an_event_expires_by_its_last_occurrence() {
        let now: jiff::Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        let hour = Duration::from_secs(3600);
        let old = event(
            json!({"firstTimestamp": "2026-11-21T10:00:00Z", "lastTimestamp": "2026-11-21T10:30:00Z"}),
        );
        let repeated = event(
            json!({"firstTimestamp": "2026-11-21T10:00:00Z", "lastTimestamp": "2026-11-21T11:30:00Z"}),
        );
        assert_eq!(expires_in(&old, hour, now), Some(Duration::ZERO));
        assert_eq!(
            expires_in(&repeated, hour, now),
            Some(Duration::from_secs(1800)),
            "it expires an hour after it last happened"
        );
        assert_eq!(
            expires_in(&event(json!({})), hour, now),
            None,
            "no time: kept"
        );
    }
}
