//! Leader election among controllers sharing one store, through a
//! `coordination.k8s.io/v1` Lease (`kube-system/tugboat-controller`), with
//! client-go's semantics (its `leaderelection` package, as
//! kube-controller-manager uses it):
//!
//! - A candidate takes the Lease when it has none, or when its record (holder,
//!   renew time, transitions) has not changed for `lease_duration` by this
//!   controller's own clock since it first saw that record: no clock is compared
//!   with another machine's.
//! - The leader renews every `retry_period`. If no renewal succeeds for
//!   `renew_deadline` (shorter than the lease duration), it stops leading; its
//!   writes are refused from that instant ([`crate::store::fence`]), before any
//!   other controller may take the Lease over.
//! - Leading starts the reconcilers on a fresh cancellation token; losing
//!   leadership cancels it and waits for them to stop, then the controller is a
//!   candidate again. On shutdown the leader gives the Lease up (a renew time in
//!   the past and a one-second duration), so a standby takes over at its next try.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tugboat_api::resource::LEASES;

use crate::registry::{Registry, Subresource, WriteOptions};
use crate::store::fence;

/// The Lease the controllers elect their leader with.
pub const LEASE_NAMESPACE: &str = "kube-system";
pub const LEASE_NAME: &str = "tugboat-controller";

/// client-go's timings (`--leader-elect-lease-duration` and the others).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timing {
    /// kube-controller-manager's checks: the deadline within the lease, the
    /// retries within the deadline.
    pub fn check(&self) -> Result<(), String> {
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "the renew deadline ({:?}) must be shorter than the lease duration ({:?})",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err(format!(
                "the retry period ({:?}) must be positive and shorter than the renew deadline ({:?})",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }
}

/// Whether this controller leads, as the write fence and `/readyz`-style
/// reports see it.
#[derive(Debug)]
pub struct Leadership {
    identity: String,
    /// Leading until then (the start of the last successful renewal plus the
    /// renew deadline), if at all.
    until: Mutex<Option<Instant>>,
}

impl Leadership {
    pub fn new(identity: String) -> Self {
        Leadership {
            identity,
            until: Mutex::new(None),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn is_leader(&self) -> bool {
        crate::store::live::lock(&self.until).is_some_and(|until| Instant::now() < until)
    }

    /// A renewal that started at `at` succeeded.
    pub fn renewed(&self, at: Instant, deadline: Duration) {
        *crate::store::live::lock(&self.until) = Some(at + deadline);
    }

    pub fn lost(&self) {
        *crate::store::live::lock(&self.until) = None;
    }
}

/// A new identity: the host name and a random suffix, as client-go's
/// `hostname_uuid`.
pub fn identity() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "controller".to_string());
    format!("{host}_{}", uuid::Uuid::new_v4())
}

/// The record a candidate watches for change.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    holder: String,
    renew: String,
    transitions: i64,
    duration: i64,
}

impl Record {
    fn of(lease: &Value) -> Record {
        let spec = &lease["spec"];
        Record {
            holder: spec["holderIdentity"].as_str().unwrap_or("").to_string(),
            renew: spec["renewTime"].as_str().unwrap_or("").to_string(),
            transitions: spec["leaseTransitions"].as_i64().unwrap_or(0),
            duration: spec["leaseDurationSeconds"].as_i64().unwrap_or(0),
        }
    }
}

fn now_micro() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

struct Elector {
    registry: Arc<Registry>,
    timing: Timing,
    leadership: Arc<Leadership>,
    /// The last record seen and when (by this clock) it was first seen.
    observed: Option<(Record, Instant)>,
}

enum Attempt {
    Leading,
    HeldByOther(String),
    Failed(String),
}

impl Elector {
    /// client-go's `tryAcquireOrRenew`.
    async fn try_acquire_or_renew(&mut self) -> Attempt {
        let me = self.leadership.identity().to_string();
        let seconds = self.timing.lease_duration.as_secs().max(1) as i64;
        let now = now_micro();
        let existing = fence::exempt(
            self.registry
                .get(&LEASES, Some(LEASE_NAMESPACE), LEASE_NAME),
        )
        .await;
        match existing {
            Err(e) if e.code == 404 => {
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": LEASE_NAME, "namespace": LEASE_NAMESPACE},
                    "spec": {
                        "holderIdentity": me,
                        "leaseDurationSeconds": seconds,
                        "acquireTime": now,
                        "renewTime": now,
                        "leaseTransitions": 0,
                    },
                });
                return match fence::exempt(self.registry.create(
                    &LEASES,
                    Some(LEASE_NAMESPACE),
                    lease,
                    WriteOptions::default(),
                ))
                .await
                {
                    Ok(written) => {
                        self.observed = Some((Record::of(&written.object), Instant::now()));
                        Attempt::Leading
                    }
                    Err(e) => Attempt::Failed(e.to_string()),
                };
            }
            Err(e) => return Attempt::Failed(e.to_string()),
            Ok(_) => {}
        }
        let observed = &mut self.observed;
        let mut other = None;
        let written = fence::exempt(self.registry.update_with(
            &LEASES,
            Some(LEASE_NAMESPACE),
            LEASE_NAME,
            Subresource::Main,
            |lease| {
                let record = Record::of(lease);
                let seen = Instant::now();
                match observed {
                    Some((r, _)) if *r == record => {}
                    _ => *observed = Some((record.clone(), seen)),
                }
                let since = observed.as_ref().map_or(seen, |(_, at)| *at);
                if !record.holder.is_empty()
                    && record.holder != me
                    && since + Duration::from_secs(record.duration.max(0) as u64) > Instant::now()
                {
                    other = Some(record.holder.clone());
                    return false;
                }
                let spec = &mut lease["spec"];
                if !spec.is_object() {
                    *spec = json!({});
                }
                if record.holder != me {
                    spec["acquireTime"] = json!(now);
                    spec["leaseTransitions"] = json!(record.transitions.saturating_add(1));
                }
                spec["holderIdentity"] = json!(me);
                spec["leaseDurationSeconds"] = json!(seconds);
                spec["renewTime"] = json!(now);
                true
            },
        ))
        .await;
        match written {
            Ok(Some(lease)) => {
                self.observed = Some((Record::of(&lease), Instant::now()));
                Attempt::Leading
            }
            Ok(None) => Attempt::HeldByOther(other.unwrap_or_default()),
            Err(e) => Attempt::Failed(e.to_string()),
        }
    }

    /// Gives the Lease up on shutdown, if this controller still holds it.
    async fn release(&mut self) {
        let me = self.leadership.identity().to_string();
        let now = now_micro();
        let released = fence::exempt(self.registry.update_with(
            &LEASES,
            Some(LEASE_NAMESPACE),
            LEASE_NAME,
            Subresource::Main,
            |lease| {
                if lease["spec"]["holderIdentity"].as_str() != Some(me.as_str()) {
                    return false;
                }
                lease["spec"]["holderIdentity"] = json!("");
                lease["spec"]["leaseDurationSeconds"] = json!(1);
                lease["spec"]["renewTime"] = json!(now);
                true
            },
        ))
        .await;
        match released {
            Ok(Some(_)) => tracing::info!("gave up the leader lease"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot give up the leader lease"),
        }
    }
}

/// Runs for election until `shutdown`; while leading, runs what `lead` starts
/// on the token it is given, and stops it when leadership is lost.
pub async fn run(
    registry: Arc<Registry>,
    timing: Timing,
    leadership: Arc<Leadership>,
    shutdown: CancellationToken,
    lead: impl Fn(CancellationToken) -> TaskTracker,
) {
    let mut elector = Elector {
        registry,
        timing,
        leadership: leadership.clone(),
        observed: None,
    };
    let mut last_holder = String::new();
    loop {
        // A candidate, until this controller holds the lease.
        loop {
            let started = Instant::now();
            match elector.try_acquire_or_renew().await {
                Attempt::Leading => {
                    leadership.renewed(started, timing.renew_deadline);
                    break;
                }
                Attempt::HeldByOther(holder) => {
                    if holder != last_holder {
                        tracing::info!(leader = %holder, "another controller leads");
                        last_holder = holder;
                    }
                }
                Attempt::Failed(error) => {
                    tracing::warn!(%error, "cannot take part in the leader election")
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(timing.retry_period) => {}
            }
        }
        tracing::info!(identity = %leadership.identity(), "this controller leads: starting the reconcilers");
        let token = shutdown.child_token();
        let tracker = lead(token.clone());
        // Leading, until a renewal deadline passes or shutdown.
        let mut last_renewed = Instant::now();
        let stopped_by_shutdown = loop {
            tokio::select! {
                () = shutdown.cancelled() => break true,
                () = tokio::time::sleep(timing.retry_period) => {}
            }
            let started = Instant::now();
            let left = (last_renewed + timing.renew_deadline).saturating_duration_since(started);
            let attempt = tokio::time::timeout(left, elector.try_acquire_or_renew()).await;
            match attempt {
                Ok(Attempt::Leading) => {
                    leadership.renewed(started, timing.renew_deadline);
                    last_renewed = started;
                    continue;
                }
                Ok(Attempt::HeldByOther(holder)) => {
                    tracing::warn!(leader = %holder, "another controller took the lease");
                    break false;
                }
                Ok(Attempt::Failed(error)) => {
                    tracing::warn!(%error, "cannot renew the leader lease")
                }
                Err(_) => tracing::warn!("renewing the leader lease timed out"),
            }
            if Instant::now() >= last_renewed + timing.renew_deadline {
                tracing::error!(
                    deadline = ?timing.renew_deadline,
                    "could not renew the leader lease within the renew deadline: stopping the reconcilers"
                );
                break false;
            }
        };
        leadership.lost();
        token.cancel();
        tracker.close();
        tracker.wait().await;
        if stopped_by_shutdown {
            elector.release().await;
            return;
        }
        tracing::info!("stopped leading; a candidate again");
        last_holder.clear();
    }
}
