//! Room for node heartbeats under load: a bound on the writes in flight, which
//! heartbeats do not wait for.
//!
//! kube-apiserver caps mutating requests in flight (`--max-mutating-requests-
//! inflight`, 200) and, with API Priority and Fairness, gives node Leases and
//! node status their own priority level. Without either, a burst of pod status
//! and Event writes queues every write behind it in the store. At 2,000 hollow
//! nodes, Lease renewals went unanswered for 20 s, 17 nodes were marked
//! NotReady, and their pods were evicted into the same storm. Here every other
//! write waits its turn, first come first served, for one of `limit` slots. A
//! node's Lease renewal, status update or registration goes straight through.
//! Reads, watches and streams are not counted, as in Kubernetes' mutating limit.
//!
//! A write that waits longer than [`QUEUE_WAIT`] is answered `429 Too Many
//! Requests` with `Retry-After`, which client-go and kubectl retry.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use tugboat_api::ApiError;
use tugboat_tls::identity::GROUP_NODES;

use super::{ApiResponse, AppState};

/// Kubernetes' default for `--max-mutating-requests-inflight`.
pub const DEFAULT_MAX_MUTATING_INFLIGHT: usize = 200;

/// How long a write may wait for a slot before it is refused with 429.
pub const QUEUE_WAIT: Duration = Duration::from_secs(60);

/// The slots for writes that are not node heartbeats.
pub struct WriteSlots {
    slots: Semaphore,
    limit: usize,
}

impl WriteSlots {
    /// `limit` writes in flight at once (at least 1).
    pub fn new(limit: usize) -> Arc<WriteSlots> {
        let limit = limit.max(1);
        Arc::new(WriteSlots {
            slots: Semaphore::new(limit),
            limit,
        })
    }
}

/// Does this request take a write slot? Every POST, PUT, PATCH and DELETE,
/// except a node's heartbeat sent by a node (`from_node`: in `system:nodes`): its
/// Lease (`kube-node-lease`), its Node object or its Node's status.
fn takes_a_slot(method: &Method, path: &str, from_node: bool) -> bool {
    let mutating = matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    mutating && !(from_node && is_heartbeat(method, path))
}

fn is_heartbeat(method: &Method, path: &str) -> bool {
    if *method == Method::DELETE {
        return false;
    }
    if let Some(rest) =
        path.strip_prefix("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases")
    {
        return rest.is_empty() || rest.starts_with('/');
    }
    match path.strip_prefix("/api/v1/nodes") {
        // Registration (POST /api/v1/nodes), the node (PUT/PATCH) or its status.
        Some("") => *method == Method::POST,
        Some(rest) => {
            let mut parts = rest.trim_start_matches('/').split('/');
            let _name = parts.next();
            matches!(
                (parts.next(), parts.next()),
                (None, _) | (Some("status"), None)
            )
        }
        None => false,
    }
}

pub async fn middleware(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let from_node = req
        .extensions()
        .get::<crate::auth::User>()
        .is_some_and(|u| u.groups.iter().any(|g| g == GROUP_NODES));
    if !takes_a_slot(req.method(), req.uri().path(), from_node) {
        return next.run(req).await;
    }
    let permit = match tokio::time::timeout(QUEUE_WAIT, state.write_slots.slots.acquire()).await {
        Ok(Ok(permit)) => permit,
        // Closed only if the server is going away; timed out: too many writes.
        Ok(Err(_)) | Err(_) => {
            tracing::debug!(
                path = req.uri().path(),
                limit = state.write_slots.limit,
                "a write waited too long for a slot; answered 429"
            );
            let mut error = ApiError::new(
                429,
                "TooManyRequests",
                format!(
                    "too many writes in flight (--max-mutating-requests-inflight {}): waited {}s; try again",
                    state.write_slots.limit,
                    QUEUE_WAIT.as_secs()
                ),
            );
            error.retry_after_seconds = Some(1);
            return ApiResponse(error).into_response();
        }
    };
    let response = next.run(req).await;
    drop(permit);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_heartbeats_go_straight_through_and_other_writes_take_a_slot() {
        let node = |m: &Method, p: &str| takes_a_slot(m, p, true);
        let lease = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1";
        assert!(!node(&Method::PUT, lease));
        assert!(!node(
            &Method::POST,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
        ));
        assert!(!node(&Method::PATCH, "/api/v1/nodes/n1/status"));
        assert!(!node(&Method::PUT, "/api/v1/nodes/n1"));
        assert!(!node(&Method::POST, "/api/v1/nodes"));
        // The same writes from anyone but a node take a slot.
        assert!(takes_a_slot(&Method::PUT, lease, false));
        assert!(takes_a_slot(&Method::PATCH, "/api/v1/nodes/n1", false));
        // Deleting a Lease or a Node is not a heartbeat.
        assert!(node(&Method::DELETE, lease));
        assert!(node(&Method::DELETE, "/api/v1/nodes/n1"));
        // Leases elsewhere (leader election) and everything else take a slot.
        assert!(node(
            &Method::PUT,
            "/apis/coordination.k8s.io/v1/namespaces/default/leases/x"
        ));
        assert!(node(
            &Method::PUT,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-leasex/leases/n1"
        ));
        assert!(node(
            &Method::PATCH,
            "/api/v1/namespaces/default/pods/p/status"
        ));
        assert!(node(&Method::POST, "/api/v1/namespaces/default/events"));
        assert!(node(&Method::PATCH, "/api/v1/nodes/n1/proxy/x"));
        // Reads are not counted.
        assert!(!node(&Method::GET, "/api/v1/namespaces/default/pods"));
    }

    #[tokio::test]
    async fn slots_count_what_is_in_flight() {
        let slots = WriteSlots::new(2);
        let a = slots.slots.acquire().await.unwrap();
        assert_eq!(slots.limit - slots.slots.available_permits(), 1);
        let _b = slots.slots.acquire().await.unwrap();
        assert!(slots.slots.try_acquire().is_err(), "a third waits");
        drop(a);
        assert_eq!(slots.limit - slots.slots.available_permits(), 1);
        assert_eq!(WriteSlots::new(0).limit, 1, "at least one slot");
    }
}
