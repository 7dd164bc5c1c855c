//! The node lifecycle controller: tells a live node from a lost one and moves the
//! work off a lost one, as Kubernetes' node lifecycle controller and its taint-based
//! eviction do.
//!
//! It is a reconciler per Node on the shared controller runtime: a node is looked
//! at when it or its Lease in `kube-node-lease` is written (`spec.renewTime`,
//! renewed by the agent every second; the Ready condition's `lastHeartbeatTime`,
//! posted every few seconds), and requeues itself for the moment its grace period
//! would run out, so a silent node is looked at exactly then. A heartbeat counts
//! when it *changes*, timed by this controller's own clock, never by the timestamp
//! the agent wrote, so a skewed clock on a node cannot make it look dead or alive.
//! What it knows of each node between looks is its [`health::Health`].
//!
//! A node not heard from for longer than `node_grace` on two consecutive checks
//! [`CHECK_EVERY`] apart (one late beat under load does not flap it) gets `Ready=Unknown` and a `NodeNotReady`
//! event; `eviction_delay` later its pods are deleted outright (its agent cannot stop
//! them, so nobody would finish a graceful deletion) and their ReplicaSets replace
//! them on the nodes that are left. The scheduler already keeps new pods off a node
//! that is not Ready. When the agent comes back it posts `Ready=True` itself and
//! fences the containers whose pods were moved; this controller records `NodeReady`.
//!
//! At start every node counts as just heard from: heartbeats may look old only
//! because the controller was down, so nothing is evicted in the first `node_grace`.

pub mod health;
pub mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tugboat_api::meta;
use tugboat_api::resource::{LEASES, NODES, PODS};
use tugboat_runtime::ObjectRef;
use tugboat_runtime::controller::{Action, Controller};

pub use self::health::STALE_CHECKS;
use self::health::{Health, Heartbeat, Verdict, ready_condition};
use super::{Error, pod_is_finished, pod_node};
use crate::Config;
use crate::events::{self, EventType, Recorder};
use crate::registry::Registry;

/// How far apart two checks of a silent node are.
pub const CHECK_EVERY: Duration = Duration::from_millis(500);
/// How many pods of lost nodes are deleted at once.
const EVICT_CONCURRENCY: usize = 16;
/// Where agents keep their Leases, as kubelets do.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The component named in this controller's events (Kubernetes' own name).
const COMPONENT: &str = "node-controller";

/// The two knobs, from the controller's [`Config`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// A node not heard from for longer than this is NotReady.
    pub node_grace: Duration,
    /// How long a node is NotReady before its pods are evicted.
    pub eviction_delay: Duration,
}

impl From<&Config> for Settings {
    fn from(config: &Config) -> Self {
        Settings {
            node_grace: config.node_grace,
            eviction_delay: config.eviction_delay,
        }
    }
}

/// One node's health, for the node with that uid (a node deleted and made again
/// under its name starts afresh), and when it was last checked.
struct Known {
    uid: String,
    health: Health,
    checked_at: Option<Instant>,
}

pub struct Ctx {
    registry: Arc<Registry>,
    recorder: Recorder,
    settings: Settings,
    /// By node name. A plain mutex: it is never held across an `.await`.
    nodes: Mutex<HashMap<String, Known>>,
}

/// Runs until `shutdown`.
pub async fn run(registry: Arc<Registry>, settings: Settings, shutdown: CancellationToken) {
    tracing::debug!(?settings, "node lifecycle controller starting");
    let ctx = Arc::new(Ctx {
        recorder: events::recorder(registry.clone(), COMPONENT),
        registry: registry.clone(),
        settings,
        nodes: Mutex::new(HashMap::new()),
    });
    // A node's Lease is its heartbeat: a write to it is a look at the node.
    let lease_of_node = Arc::new(|lease: &serde_json::Value| {
        (meta::namespace(lease) == Some(LEASE_NAMESPACE))
            .then(|| meta::name(lease).map(|n| ObjectRef::new(None, n)))
            .flatten()
            .into_iter()
            .collect()
    });
    Controller::new("node-lifecycle", registry, &NODES)
        .watches(&LEASES, lease_of_node)
        .run(reconcile, retry_at_next_check, ctx, shutdown)
        .await;
}

/// A failed look is tried again at the next check, as the periodic checks did.
fn retry_at_next_check(_node: Arc<Node>, _e: &Error, _failures: u32, _ctx: &Ctx) -> Action {
    Action::requeue(CHECK_EVERY)
}

/// What one look at a node found, decided under the lock.
struct Look {
    verdict: Verdict,
    came_back: bool,
    /// Wait this long before checking again (a check too soon after the last).
    too_soon: Option<Duration>,
    grace_ends: Instant,
    eviction_due: Option<Instant>,
    evicted: bool,
    silent_for: Duration,
}

pub async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let now = Instant::now();
    let name = node.metadata.name.as_deref().unwrap_or("");
    let uid = node.metadata.uid.as_deref().unwrap_or("");
    let lease: Option<Lease> = ctx
        .registry
        .get_typed(&LEASES, Some(LEASE_NAMESPACE), name)
        .await?;
    let heartbeat = Heartbeat::of(Some(&node), lease.as_ref());
    let ready = ready_condition(&node).map(|c| c.status.as_str());
    let settings = ctx.settings;
    let look = {
        let mut nodes = ctx.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let known = nodes.entry(name.to_string()).or_insert_with(|| Known {
            uid: uid.to_string(),
            health: Health::new(heartbeat.clone(), now),
            checked_at: None,
        });
        if known.uid != uid {
            *known = Known {
                uid: uid.to_string(),
                health: Health::new(heartbeat.clone(), now),
                checked_at: None,
            };
        }
        let came_back = known.health.ready_seen(ready);
        let heard = known.health.observe(&heartbeat, now);
        // Any write wakes this look; only looks CHECK_EVERY apart count as checks
        // of a silent node (a heartbeat resets the count whenever it comes).
        let since = known.checked_at.map(|t| now.saturating_duration_since(t));
        let too_soon = match since {
            Some(s) if !heard && s < CHECK_EVERY => Some(CHECK_EVERY - s),
            _ => None,
        };
        let verdict = if too_soon.is_some() {
            Verdict::Late
        } else {
            known.checked_at = Some(now);
            known.health.check(now, settings.node_grace)
        };
        Look {
            verdict,
            came_back,
            too_soon,
            grace_ends: known.health.grace_ends(settings.node_grace),
            eviction_due: known.health.eviction_due(settings.eviction_delay),
            evicted: known.health.evicted(),
            silent_for: known.health.silent_for(now),
        }
    };
    if look.came_back {
        tracing::info!(node = name, "node is Ready again");
        ctx.recorder
            .publish(
                &*node,
                EventType::Normal,
                "NodeReady",
                &format!("Node {name} status is now: NodeReady"),
            )
            .await;
    }
    if let Some(wait) = look.too_soon {
        return Ok(Action::requeue(wait));
    }
    match look.verdict {
        // Look again the moment the grace would run out (just past it).
        Verdict::Alive => {
            let after = look.grace_ends.saturating_duration_since(now) + Duration::from_millis(1);
            return Ok(Action::requeue(after));
        }
        Verdict::Late => {
            tracing::debug!(node = name, silent_for = ?look.silent_for, "node heartbeat is late");
            return Ok(Action::requeue(CHECK_EVERY));
        }
        Verdict::Lost => {}
    }
    if ready != Some("Unknown") {
        match status::mark_unknown(&ctx.registry, name, &heartbeat).await {
            Ok(false) => {}
            Ok(true) => {
                tracing::warn!(node = name, grace = ?settings.node_grace, "node stopped posting its heartbeat; it is NotReady");
                set_known(&ctx, name, |h| h.set_ready("Unknown"));
                ctx.recorder
                    .publish(
                        &*node,
                        EventType::Warning,
                        "NodeNotReady",
                        &format!("Node {name} status is now: NodeNotReady"),
                    )
                    .await;
            }
            Err(e) => {
                tracing::warn!(node = name, error = %e, "cannot mark the lost node NotReady; retrying at the next check");
            }
        }
    }
    match look.eviction_due {
        Some(due) if due > now && !look.evicted => Ok(Action::requeue(due - now)),
        Some(_) => {
            // Whatever happens below, later passes ride on the checks that follow.
            set_known(&ctx, name, Health::set_evicted);
            evict_pods_of(&ctx, name).await?;
            Ok(Action::requeue(CHECK_EVERY))
        }
        None => Ok(Action::requeue(CHECK_EVERY)),
    }
}

fn is_daemon_pod(pod: &Pod) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.kind == "DaemonSet")
}

fn set_known(ctx: &Ctx, name: &str, f: impl FnOnce(&mut Health)) {
    let mut nodes = ctx.nodes.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = nodes.get_mut(name) {
        f(&mut known.health);
    }
}

/// Deletes the pods bound to the lost node `name` that have not finished,
/// except DaemonSet pods: in Kubernetes they tolerate `not-ready` and
/// `unreachable` `NoExecute` forever, so a lost node keeps them (a replacement
/// elsewhere would make no sense; the node gets its pod back when it returns).
async fn evict_pods_of(ctx: &Ctx, name: &str) -> Result<(), Error> {
    let pods: Vec<Pod> = ctx.registry.list_typed(&PODS, None).await?;
    let victims: Vec<&Pod> = pods
        .iter()
        .filter(|p| pod_node(p) == Some(name) && !pod_is_finished(p) && !is_daemon_pod(p))
        .collect();
    for chunk in victims.chunks(EVICT_CONCURRENCY) {
        let evictions = chunk
            .iter()
            .map(|p| status::evict(&ctx.registry, &ctx.recorder, p));
        for result in futures::future::join_all(evictions).await {
            result?;
        }
    }
    Ok(())
}
