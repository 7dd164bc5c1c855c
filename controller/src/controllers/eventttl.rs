//! Event expiry: events older than the TTL (one hour by default, as in Kubernetes)
//! are deleted, so a crash-looping pod cannot grow the store without bound. Repeats
//! are already folded into one event by the recorders (`count`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tugboat_api::meta;
use tugboat_api::resource::EVENTS;

use crate::registry::Registry;

/// How often expired events are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub async fn run(registry: Arc<Registry>, ttl: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_EVERY.min(ttl.max(Duration::from_secs(1))));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match sweep(&registry, ttl).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(expired = n, "expired events deleted"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot expire events; retrying on the next sweep")
            }
        }
    }
}

/// When the event last happened: `lastTimestamp`, else `eventTime`, else creation.
fn last_seen(event: &Value) -> Option<jiff::Timestamp> {
    [
        "/lastTimestamp",
        "/eventTime",
        "/firstTimestamp",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .filter_map(|p| event.pointer(p).and_then(Value::as_str))
    .find_map(|t| t.parse().ok())
}

pub fn expired(event: &Value, ttl: Duration, now: jiff::Timestamp) -> bool {
    last_seen(event).is_some_and(|t| now.duration_since(t).as_secs_f64() > ttl.as_secs_f64())
}

async fn sweep(registry: &Registry, ttl: Duration) -> Result<usize, tugboat_api::ApiError> {
    let now = jiff::Timestamp::now();
    let mut n = 0;
    for event in registry.list_all(&EVENTS, None).await? {
        if !expired(&event, ttl, now) {
            continue;
        }
        match registry
            .delete_now(
                &EVENTS,
                meta::namespace(&event),
                meta::name(&event).unwrap_or(""),
            )
            .await
        {
            Ok(_) => n += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_event_expires_by_its_last_occurrence() {
        let now: jiff::Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        let hour = Duration::from_secs(3600);
        let old = json!({"firstTimestamp": "2026-11-21T10:00:00Z", "lastTimestamp": "2026-11-21T10:30:00Z"});
        let repeated = json!({"firstTimestamp": "2026-11-21T10:00:00Z", "lastTimestamp": "2026-11-21T11:30:00Z"});
        assert!(expired(&old, hour, now));
        assert!(!expired(&repeated, hour, now));
        assert!(!expired(&json!({}), hour, now), "no time: kept");
    }
}
