//! The Deployment controller: one ReplicaSet per pod template (named by the
//! template's hash), rolled from old to new by the Deployment's strategy
//! (`RollingUpdate` within `maxSurge`/`maxUnavailable`, or `Recreate`), old ones
//! kept up to `revisionHistoryLimit`, and the Deployment's status summed from them.
//!
//! As Kubernetes' (pkg/controller/deployment): a change of `replicas` in the
//! middle of a rollout is spread over the ReplicaSets in proportion to their
//! sizes; a paused Deployment still scales but does not roll; a template that
//! comes back (a rollback) reuses its old ReplicaSet with the next revision;
//! the `kubernetes.io/change-cause` annotation follows the template onto its
//! ReplicaSet; and a rollout that makes no progress for
//! `progressDeadlineSeconds` gets `Progressing=False`, reason
//! `ProgressDeadlineExceeded`, while the old pods keep serving.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tugboat_api::resource::{DEPLOYMENTS, PODS, REPLICASETS};
use tugboat_runtime::controller::{Action, Controller, backoff_policy};

use super::{Error, controller_ref, controller_uid};
use crate::events::{self, EventType, Recorder, fnv1a};
use crate::registry::typed::encode;
use crate::registry::{DeleteOptions, Registry, Subresource};

pub const HASH_LABEL: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// Progressing condition reasons, as Kubernetes names them.
const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
const RS_UPDATED: &str = "ReplicaSetUpdated";
const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
const PAUSED: &str = "DeploymentPaused";
const RESUMED: &str = "DeploymentResumed";

pub struct Ctx {
    registry: Arc<Registry>,
    recorder: Recorder,
}

pub async fn run(registry: Arc<Registry>, concurrency: usize, shutdown: CancellationToken) {
    let ctx = Arc::new(Ctx {
        registry: registry.clone(),
        recorder: events::recorder(registry.clone(), "deployment-controller"),
    });
    Controller::new("deployment", registry, &DEPLOYMENTS)
        .owns(&REPLICASETS)
        .concurrency(concurrency)
        .run(reconcile, backoff_policy, ctx, shutdown)
        .await;
}

/// Kubernetes' pod-template-hash: a 32-bit FNV hash of the template, spelled in an
/// alphabet without vowels. Hashed from the JSON value (keys sorted), as it always
/// was, so existing ReplicaSets keep their names.
pub fn template_hash(template: &Value) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let h = fnv1a(&bytes) as u32;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

fn replicas_of(rs: &ReplicaSet) -> i64 {
    i64::from(rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0))
}

/// One of the ReplicaSet's status counts (0 when unset).
fn count(
    rs: &ReplicaSet,
    field: impl Fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> Option<i32>,
) -> i64 {
    i64::from(rs.status.as_ref().and_then(field).unwrap_or(0))
}

fn status_replicas(rs: &ReplicaSet) -> i64 {
    count(rs, |s| Some(s.replicas))
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn name_of(m: &ObjectMeta) -> &str {
    m.name.as_deref().unwrap_or("")
}

/// Resolves an int-or-percent against `total`, rounding up or down.
fn resolve(v: Option<&IntOrString>, total: i64, round_up: bool, default_pct: i64) -> i64 {
    let pct = |p: i64| {
        let x = p * total;
        if round_up { (x + 99) / 100 } else { x / 100 }
    };
    match v {
        Some(IntOrString::Int(i)) => i64::from(*i),
        Some(IntOrString::String(s)) => s
            .trim_end_matches('%')
            .parse()
            .map(pct)
            .unwrap_or_else(|_| pct(default_pct)),
        None => pct(default_pct),
    }
}

fn is_recreate(spec: &DeploymentSpec) -> bool {
    spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate")
}

fn max_surge(spec: &DeploymentSpec, replicas: i64) -> i64 {
    let ru = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    resolve(ru.and_then(|r| r.max_surge.as_ref()), replicas, true, 25)
}

fn max_unavailable(spec: &DeploymentSpec, replicas: i64) -> i64 {
    let ru = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    resolve(
        ru.and_then(|r| r.max_unavailable.as_ref()),
        replicas,
        false,
        25,
    )
}

pub async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(spec) = d.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let ns = d.metadata.namespace.as_deref().unwrap_or("default");
    let uid = d.metadata.uid.as_deref().unwrap_or("");
    let replicas = i64::from(spec.replicas.unwrap_or(1).max(0));

    let hash = template_hash(&encode(&DEPLOYMENTS, &spec.template)?);
    let mut owned: Vec<ReplicaSet> = ctx
        .registry
        .list_controlled_typed::<ReplicaSet>(&REPLICASETS, Some(ns), uid)
        .await?;
    owned.sort_by_key(revision_of);
    let new_index = owned.iter().position(|rs| {
        rs.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(HASH_LABEL))
            .map(String::as_str)
            == Some(hash.as_str())
    });
    let mut new_rs = new_index.map(|i| owned.remove(i));
    let old: Vec<ReplicaSet> = owned;
    let old_total: i64 = old.iter().map(replicas_of).sum();
    let recreate = is_recreate(spec);
    let paused = spec.paused == Some(true);
    // What the Progressing condition will say happened in this pass.
    let mut event: Option<&str> = None;
    // A Recreate waiting for old pods to be gone: their removal is no change of
    // a ReplicaSet, so look again soon.
    let mut recreate_wait = false;

    if new_rs.is_none() && !paused {
        let initial = if old_total == 0 {
            replicas
        } else if recreate {
            0
        } else {
            (replicas + max_surge(spec, replicas) - old_total).clamp(0, replicas)
        };
        let revision = old.iter().map(revision_of).max().unwrap_or(0) + 1;
        let created = create_replica_set(&ctx, &d, spec, &hash, initial, revision).await?;
        if initial > 0 {
            ctx.recorder
                .publish(
                    &*d,
                    EventType::Normal,
                    "ScalingReplicaSet",
                    &format!(
                        "Scaled up replica set {} from 0 to {initial}",
                        name_of(&created.metadata)
                    ),
                )
                .await;
        }
        new_rs = Some(created);
        event = Some(NEW_RS_CREATED);
    }

    // A change of replicas: spread over the ReplicaSets (paused or not).
    let scaled = scale_replica_sets(&ctx, &d, spec, new_rs.as_ref(), &old, replicas).await?;

    if !paused
        && !scaled
        && let Some(new) = new_rs.as_ref()
    {
        if recreate {
            for rs in &old {
                scale(&ctx, &d, rs, 0).await?;
            }
            // Every old pod gone — terminating ones too — before a new one
            // starts (Kubernetes' oldPodsRunning).
            let old_pods = pods_of(&ctx, ns, &old).await?;
            if old_pods == 0 && replicas_of(new) != replicas {
                scale(&ctx, &d, new, replicas).await?;
            } else if old_pods > 0 {
                recreate_wait = true;
            }
        } else {
            rolling(&ctx, &d, spec, new, &old, replicas).await?;
        }
        // Bring the new ReplicaSet's revision forward if it is an old template
        // come back (a rollback), with the Deployment's change-cause.
        let top = old.iter().map(revision_of).max().unwrap_or(0);
        let cause = annotation(&d.metadata, CHANGE_CAUSE);
        if revision_of(new) <= top || annotation(&new.metadata, CHANGE_CAUSE) != cause {
            if revision_of(new) <= top {
                event.get_or_insert(FOUND_NEW_RS);
            }
            ctx.registry
                .update_typed::<ReplicaSet>(
                    &REPLICASETS,
                    Some(ns),
                    name_of(&new.metadata),
                    Subresource::Main,
                    |rs| {
                        let a = rs.metadata.annotations.get_or_insert_default();
                        let mut changed = false;
                        let revision = a.get(REVISION).and_then(|r| r.parse::<i64>().ok());
                        if revision.unwrap_or(0) <= top {
                            a.insert(REVISION.to_string(), (top + 1).to_string());
                            changed = true;
                        }
                        if let Some(c) = cause
                            && a.get(CHANGE_CAUSE).map(String::as_str) != Some(c)
                        {
                            a.insert(CHANGE_CAUSE.to_string(), c.to_string());
                            changed = true;
                        }
                        changed
                    },
                )
                .await?;
        }
    }
    cleanup(&ctx, &d, &old).await?;
    let deadline = update_status(&ctx, &d, spec, new_rs.as_ref(), &old, replicas, event).await?;
    // Look again when the progress deadline would pass, to mark it.
    Ok(match (recreate_wait, deadline) {
        (true, _) => Action::requeue(Duration::from_millis(500)),
        (false, Some(after)) => Action::requeue(after),
        (false, None) => Action::await_change(),
    })
}

/// How many pods of `sets` still exist and have not finished, terminating ones
/// included.
async fn pods_of(ctx: &Ctx, ns: &str, sets: &[ReplicaSet]) -> Result<usize, Error> {
    let mut n = 0;
    for uid in sets.iter().filter_map(|rs| rs.metadata.uid.as_deref()) {
        n += ctx
            .registry
            .list_controlled(&PODS, Some(ns), uid)
            .await?
            .iter()
            .filter(|p| {
                !matches!(
                    p.pointer("/status/phase")
                        .and_then(serde_json::Value::as_str),
                    Some("Succeeded" | "Failed")
                )
            })
            .count();
    }
    Ok(n)
}

fn annotation<'a>(m: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    m.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// The `deployment.kubernetes.io/desired-replicas` a ReplicaSet was last
/// scaled for.
fn desired_annotation(rs: &ReplicaSet) -> Option<i64> {
    annotation(&rs.metadata, DESIRED_REPLICAS).and_then(|v| v.parse().ok())
}

/// Kubernetes' `scale`: when `replicas` changed, brings the ReplicaSets to it
/// without a rollout step — a single active one (or a saturated new one) takes
/// it all; during a rollout the change is spread in proportion to their sizes
/// (`maxSurge` included), the remainder to the largest. Whether it scaled.
async fn scale_replica_sets(
    ctx: &Ctx,
    d: &Deployment,
    spec: &DeploymentSpec,
    new: Option<&ReplicaSet>,
    old: &[ReplicaSet],
    replicas: i64,
) -> Result<bool, Error> {
    let mut active: Vec<&ReplicaSet> = new
        .into_iter()
        .chain(old.iter())
        .filter(|rs| replicas_of(rs) > 0)
        .collect();
    if active.is_empty() {
        return Ok(false);
    }
    let scaling = active
        .iter()
        .any(|rs| desired_annotation(rs).is_some_and(|want| want != replicas));
    if active.len() == 1 {
        let only = active[0];
        // The one left is the new one, or the Deployment is paused on an old
        // one: it takes the whole count.
        let is_new = new.is_some_and(|n| n.metadata.name == only.metadata.name);
        if (is_new || spec.paused == Some(true) || scaling) && replicas_of(only) != replicas {
            scale(ctx, d, only, replicas).await?;
            return Ok(true);
        }
        return Ok(false);
    }
    if !scaling || is_recreate(spec) {
        return Ok(false);
    }
    let allowed = if replicas > 0 {
        replicas + max_surge(spec, replicas)
    } else {
        0
    };
    let current: i64 = active.iter().map(|rs| replicas_of(rs)).sum();
    let to_add = allowed - current;
    // Largest first; among equals the newer when growing, the older when
    // shrinking (Kubernetes' ReplicaSetsBySizeNewer / BySizeOlder).
    active.sort_by(|a, b| {
        let by_age = if to_add > 0 {
            revision_of(b).cmp(&revision_of(a))
        } else {
            revision_of(a).cmp(&revision_of(b))
        };
        replicas_of(b).cmp(&replicas_of(a)).then(by_age)
    });
    let mut sizes: Vec<i64> = active.iter().map(|rs| replicas_of(rs)).collect();
    let mut added = 0;
    for (i, rs) in active.iter().enumerate() {
        if to_add == 0 || to_add == added {
            break;
        }
        let fraction = if replicas == 0 {
            -replicas_of(rs)
        } else {
            // Its share of the new most-pods, against the most-pods it was
            // sized for (`deployment.kubernetes.io/max-replicas`).
            let before = annotation(&rs.metadata, MAX_REPLICAS)
                .and_then(|v| v.parse::<i64>().ok())
                .filter(|v| *v > 0)
                .unwrap_or(allowed)
                .max(1);
            ((replicas_of(rs) * allowed) as f64 / before as f64).round() as i64 - replicas_of(rs)
        };
        let left = to_add - added;
        let proportion = if to_add > 0 {
            fraction.min(left)
        } else {
            fraction.max(left)
        };
        sizes[i] += proportion;
        added += proportion;
    }
    if to_add - added != 0 && !sizes.is_empty() {
        sizes[0] += to_add - added;
    }
    for (rs, size) in active.iter().zip(&sizes) {
        let size = (*size).max(0);
        // Note the new count even where the size stays, so this is not taken
        // for a scaling event again.
        if size != replicas_of(rs) || desired_annotation(rs) != Some(replicas) {
            scale_annotated(ctx, d, rs, size, true).await?;
        }
    }
    Ok(true)
}

async fn create_replica_set(
    ctx: &Ctx,
    d: &Deployment,
    spec: &DeploymentSpec,
    hash: &str,
    replicas: i64,
    revision: i64,
) -> Result<ReplicaSet, Error> {
    let ns = d.metadata.namespace.as_deref();
    let name = format!("{}-{hash}", name_of(&d.metadata));
    let mut template = spec.template.clone();
    let labels = template
        .metadata
        .get_or_insert_default()
        .labels
        .get_or_insert_default();
    labels.insert(HASH_LABEL.to_string(), hash.to_string());
    let labels = labels.clone();
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_default()
        .insert(HASH_LABEL.to_string(), hash.to_string());
    let body = ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: ns.map(str::to_string),
            labels: Some(labels),
            annotations: Some({
                let desired = i64::from(spec.replicas.unwrap_or(1));
                let mut a = BTreeMap::from([
                    (REVISION.to_string(), revision.to_string()),
                    (DESIRED_REPLICAS.to_string(), desired.to_string()),
                    (
                        MAX_REPLICAS.to_string(),
                        (desired + max_surge(spec, desired)).to_string(),
                    ),
                ]);
                if let Some(cause) = annotation(&d.metadata, CHANGE_CAUSE) {
                    a.insert(CHANGE_CAUSE.to_string(), cause.to_string());
                }
                a
            }),
            owner_references: Some(vec![controller_ref(d)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(i32::try_from(replicas).unwrap_or(i32::MAX)),
            min_ready_seconds: Some(spec.min_ready_seconds.unwrap_or(0)),
            selector,
            template: Some(template),
        }),
        status: None,
    };
    match ctx.registry.create_typed(&REPLICASETS, ns, &body).await {
        Ok(rs) => Ok(rs),
        Err(e) if e.reason == "AlreadyExists" => {
            // Created by an earlier reconcile whose result we did not see: adopt it if ours.
            let existing = ctx
                .registry
                .get_typed::<ReplicaSet>(&REPLICASETS, ns, &name)
                .await?;
            match existing {
                Some(rs) if controller_uid(&rs.metadata) == d.metadata.uid.as_deref() => Ok(rs),
                _ => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

async fn scale(ctx: &Ctx, d: &Deployment, rs: &ReplicaSet, to: i64) -> Result<(), Error> {
    scale_annotated(ctx, d, rs, to, false).await
}

/// Sets `rs`'s replicas to `to` (with the Deployment's desired count and the
/// most it may have, as Kubernetes annotates them); with `always`, writes the
/// annotations even when the count stays.
async fn scale_annotated(
    ctx: &Ctx,
    d: &Deployment,
    rs: &ReplicaSet,
    to: i64,
    always: bool,
) -> Result<(), Error> {
    let from = replicas_of(rs);
    if from == to && !always {
        return Ok(());
    }
    let rs_name = name_of(&rs.metadata);
    let spec = d.spec.as_ref();
    let desired = i64::from(spec.and_then(|s| s.replicas).unwrap_or(1));
    let max = desired + spec.map(|s| max_surge(s, desired)).unwrap_or(0);
    ctx.registry
        .update_typed::<ReplicaSet>(
            &REPLICASETS,
            rs.metadata.namespace.as_deref(),
            rs_name,
            Subresource::Main,
            |o| {
                o.spec.get_or_insert_default().replicas =
                    Some(i32::try_from(to).unwrap_or(i32::MAX));
                let a = o.metadata.annotations.get_or_insert_default();
                a.insert(DESIRED_REPLICAS.to_string(), desired.to_string());
                a.insert(MAX_REPLICAS.to_string(), max.to_string());
                true
            },
        )
        .await?;
    if from == to {
        return Ok(());
    }
    let verb = if to > from { "up" } else { "down" };
    ctx.recorder
        .publish(
            d,
            EventType::Normal,
            "ScalingReplicaSet",
            &format!("Scaled {verb} replica set {rs_name} from {from} to {to}"),
        )
        .await;
    Ok(())
}

/// One step of a rolling update: grow the new ReplicaSet within `maxSurge`, then
/// shrink old ones as far as `maxUnavailable` allows.
async fn rolling(
    ctx: &Ctx,
    d: &Deployment,
    spec: &DeploymentSpec,
    new: &ReplicaSet,
    old: &[ReplicaSet],
    replicas: i64,
) -> Result<(), Error> {
    let max_surge = max_surge(spec, replicas);
    let mut max_unavailable = max_unavailable(spec, replicas);
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    let active_old: Vec<&ReplicaSet> = old.iter().filter(|rs| replicas_of(rs) > 0).collect();
    if active_old.is_empty() {
        return scale(ctx, d, new, replicas).await;
    }
    let new_replicas = replicas_of(new);
    let old_total: i64 = active_old.iter().map(|rs| replicas_of(rs)).sum();
    let total = new_replicas + old_total;
    let mut new_target = new_replicas;
    if new_replicas > replicas {
        new_target = replicas;
    } else if total < replicas + max_surge {
        new_target = (new_replicas + replicas + max_surge - total).min(replicas);
    }
    if new_target != new_replicas {
        scale(ctx, d, new, new_target).await?;
    }
    let min_available = replicas - max_unavailable;
    let new_unavailable = (new_target - count(new, |s| s.available_replicas)).max(0);
    let all_pods = new_target + old_total;
    let mut can_scale_down = all_pods - min_available - new_unavailable;
    // Replicas above the desired total can always go (after a scale down mid-rollout).
    can_scale_down = can_scale_down.max(all_pods - (replicas + max_surge));
    if can_scale_down <= 0 {
        return Ok(());
    }
    for rs in active_old {
        if can_scale_down <= 0 {
            break;
        }
        let current = replicas_of(rs);
        let by = current.min(can_scale_down);
        scale(ctx, d, rs, current - by).await?;
        can_scale_down -= by;
    }
    Ok(())
}

/// Deletes old, empty ReplicaSets beyond `revisionHistoryLimit`, oldest first.
async fn cleanup(ctx: &Ctx, d: &Deployment, old: &[ReplicaSet]) -> Result<(), Error> {
    let limit = d
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10)
        .max(0) as usize;
    let empty: Vec<&ReplicaSet> = old
        .iter()
        .filter(|rs| {
            replicas_of(rs) == 0
                && status_replicas(rs) == 0
                && rs.metadata.deletion_timestamp.is_none()
        })
        .collect();
    if empty.len() <= limit {
        return Ok(());
    }
    for rs in &empty[..empty.len() - limit] {
        match ctx
            .registry
            .delete(
                &REPLICASETS,
                rs.metadata.namespace.as_deref(),
                name_of(&rs.metadata),
                &DeleteOptions::default(),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A condition as Kubernetes keeps it: its transition time moves only when its
/// status does, its update time when its status or reason does.
fn condition(
    previous: Option<&DeploymentCondition>,
    type_: &str,
    (status, reason, message): (&str, &str, String),
    now: &Time,
) -> DeploymentCondition {
    let same_status = previous.is_some_and(|p| p.status == status);
    let same_reason = previous.is_some_and(|p| p.reason.as_deref() == Some(reason));
    let kept = |t: Option<&Time>| t.cloned().unwrap_or_else(|| now.clone());
    DeploymentCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_transition_time: Some(if same_status {
            kept(previous.and_then(|p| p.last_transition_time.as_ref()))
        } else {
            now.clone()
        }),
        last_update_time: Some(if same_status && same_reason {
            kept(previous.and_then(|p| p.last_update_time.as_ref()))
        } else {
            now.clone()
        }),
    }
}

/// What the Progressing condition says now, from the one before, what this
/// pass did (`event`), whether the counts moved forward, and the deadline:
/// Kubernetes' syncRolloutStatus. `lastUpdateTime` moves whenever progress is
/// seen (the deadline counts from the last progress).
#[allow(clippy::too_many_arguments)]
fn progressing(
    previous: Option<&DeploymentCondition>,
    paused: bool,
    complete: bool,
    event: Option<&str>,
    progress: bool,
    deadline: Option<Duration>,
    new_name: &str,
    now: &Time,
) -> DeploymentCondition {
    let fresh = |status: &str, reason: &str, message: String| {
        // Progress refreshes the update time; the transition time moves only
        // when the status does.
        let mut c = condition(previous, "Progressing", (status, reason, message), now);
        c.last_update_time = Some(now.clone());
        c
    };
    let kept = |status: &str, reason: &str, message: String| {
        condition(previous, "Progressing", (status, reason, message), now)
    };
    let previous_reason = previous.and_then(|p| p.reason.as_deref());
    if paused {
        return kept("Unknown", PAUSED, "Deployment is paused".into());
    }
    if complete {
        return kept(
            "True",
            NEW_RS_AVAILABLE,
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
        );
    }
    match event {
        Some(NEW_RS_CREATED) => {
            return fresh(
                "True",
                NEW_RS_CREATED,
                format!("Created new replica set \"{new_name}\""),
            );
        }
        Some(FOUND_NEW_RS) => {
            return fresh(
                "True",
                FOUND_NEW_RS,
                format!("Found new replica set \"{new_name}\""),
            );
        }
        _ => {}
    }
    if progress || previous.is_none() || previous_reason == Some(NEW_RS_AVAILABLE) {
        return fresh(
            "True",
            RS_UPDATED,
            format!("ReplicaSet \"{new_name}\" is progressing."),
        );
    }
    if previous_reason == Some(PAUSED) {
        return fresh("Unknown", RESUMED, "Deployment is resumed".into());
    }
    if previous_reason == Some(TIMED_OUT) {
        return kept(
            "False",
            TIMED_OUT,
            format!("ReplicaSet \"{new_name}\" has timed out progressing."),
        );
    }
    let since = previous
        .and_then(|p| p.last_update_time.as_ref())
        .map(|t| now.0.duration_since(t.0))
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or_default();
    if deadline.is_some_and(|limit| since > limit) {
        return kept(
            "False",
            TIMED_OUT,
            format!("ReplicaSet \"{new_name}\" has timed out progressing."),
        );
    }
    previous.cloned().unwrap_or_else(|| {
        fresh(
            "True",
            RS_UPDATED,
            format!("ReplicaSet \"{new_name}\" is progressing."),
        )
    })
}

/// Writes the Deployment's status; returns when to look again to check the
/// progress deadline (`None`: nothing to watch for).
async fn update_status(
    ctx: &Ctx,
    d: &Deployment,
    spec: &DeploymentSpec,
    new: Option<&ReplicaSet>,
    old: &[ReplicaSet],
    replicas: i64,
    event: Option<&str>,
) -> Result<Option<Duration>, Error> {
    let all: Vec<&ReplicaSet> = new.into_iter().chain(old.iter()).collect();
    let total: i64 = all.iter().map(|rs| status_replicas(rs)).sum();
    let ready: i64 = all.iter().map(|rs| count(rs, |s| s.ready_replicas)).sum();
    let available: i64 = all
        .iter()
        .map(|rs| count(rs, |s| s.available_replicas))
        .sum();
    let updated = new.map(status_replicas).unwrap_or(0);
    let max_unavailable = if is_recreate(spec) {
        0
    } else {
        max_unavailable(spec, replicas)
    };
    let is_available = available >= replicas - max_unavailable;
    let complete = updated == replicas
        && total == replicas
        && available == replicas
        && new.is_some_and(|rs| {
            rs.status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0)
                >= rs.metadata.generation.unwrap_or(0)
                && count(rs, |s| s.available_replicas) == replicas
        });
    let new_name = new.map(|rs| name_of(&rs.metadata)).unwrap_or("");
    let available_cond = if is_available {
        (
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".to_string(),
        )
    } else {
        (
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".to_string(),
        )
    };
    let paused = spec.paused == Some(true);
    let deadline = spec
        .progress_deadline_seconds
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s as u64));
    let now = super::now();
    let generation = d.metadata.generation.unwrap_or(0);
    let to_i32 = |n: i64| Some(i32::try_from(n).unwrap_or(i32::MAX));
    let mut recheck = None;
    ctx.registry
        .update_typed::<Deployment>(
            &DEPLOYMENTS,
            d.metadata.namespace.as_deref(),
            name_of(&d.metadata),
            Subresource::Status,
            |o| {
                let old_status = o.status.clone().unwrap_or_default();
                let previous = |t: &str| {
                    old_status
                        .conditions
                        .iter()
                        .flatten()
                        .find(|c| c.type_ == t)
                };
                // Kubernetes' DeploymentProgressing: more updated, ready or
                // available replicas, or fewer old ones.
                let old_updated = i64::from(old_status.updated_replicas.unwrap_or(0));
                let old_old = i64::from(old_status.replicas.unwrap_or(0)) - old_updated;
                let progress = updated > old_updated
                    || ready > i64::from(old_status.ready_replicas.unwrap_or(0))
                    || available > i64::from(old_status.available_replicas.unwrap_or(0))
                    || (total - updated) < old_old;
                let progressing_cond = progressing(
                    previous("Progressing"),
                    paused,
                    complete,
                    event,
                    progress,
                    deadline,
                    new_name,
                    &now,
                );
                recheck = match (&progressing_cond.reason, deadline) {
                    (Some(r), Some(limit))
                        if r != NEW_RS_AVAILABLE && r != TIMED_OUT && !paused =>
                    {
                        let since = progressing_cond
                            .last_update_time
                            .as_ref()
                            .map(|t| now.0.duration_since(t.0))
                            .and_then(|d| Duration::try_from(d).ok())
                            .unwrap_or_default();
                        Some(limit.saturating_sub(since) + Duration::from_secs(1))
                    }
                    _ => None,
                };
                let unavailable = (replicas - available).max(0);
                let status = DeploymentStatus {
                    observed_generation: Some(generation),
                    replicas: to_i32(total),
                    updated_replicas: to_i32(updated),
                    ready_replicas: to_i32(ready),
                    available_replicas: to_i32(available),
                    unavailable_replicas: (unavailable > 0).then(|| to_i32(unavailable)).flatten(),
                    collision_count: old_status.collision_count,
                    conditions: Some(vec![
                        condition(
                            previous("Available"),
                            "Available",
                            available_cond.clone(),
                            &now,
                        ),
                        progressing_cond,
                    ]),
                    terminating_replicas: None,
                };
                if o.status.as_ref() == Some(&status) {
                    return false;
                }
                o.status = Some(status);
                true
            },
        )
        .await?;
    Ok(recheck)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_template_hash_is_stable_and_changes_with_the_template() {
        let a = json!({"spec": {"containers": [{"name": "web", "image": "a:1"}]}});
        let b = json!({"spec": {"containers": [{"name": "web", "image": "a:2"}]}});
        assert_eq!(template_hash(&a), template_hash(&a));
        assert_ne!(template_hash(&a), template_hash(&b));
        assert!(
            template_hash(&a)
                .bytes()
                .all(|c| b"bcdfghjklmnpqrstvwxz2456789".contains(&c))
        );
    }

    #[test]
    fn percentages_round_like_kubernetes() {
        let pct = IntOrString::String("25%".into());
        assert_eq!(resolve(Some(&pct), 3, true, 25), 1);
        assert_eq!(resolve(Some(&pct), 3, false, 25), 0);
        assert_eq!(resolve(Some(&IntOrString::Int(2)), 3, false, 25), 2);
        assert_eq!(resolve(None, 10, true, 25), 3);
    }
}
