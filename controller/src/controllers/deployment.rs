//! The Deployment controller: one ReplicaSet per pod template (named by the
//! template's hash), rolled from old to new by the Deployment's strategy
//! (`RollingUpdate` within `maxSurge`/`maxUnavailable`, or `Recreate`), old ones
//! kept up to `revisionHistoryLimit`, and the Deployment's status summed from them.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tugboat_api::meta;
use tugboat_api::resource::{DEPLOYMENTS, REPLICASETS};

use super::{Error, controller_ref};
use crate::events::{self, EventType, Recorder, fnv1a};
use crate::registry::{DeleteOptions, Registry, Subresource, WriteOptions};
use crate::runtime::{Action, Controller, backoff_policy};

pub const HASH_LABEL: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";

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
        .run(reconcile, backoff_policy::<Error>, ctx, shutdown)
        .await;
}

/// Kubernetes' pod-template-hash: a 32-bit FNV hash of the template, spelled in an
/// alphabet without vowels.
pub fn template_hash(template: &Value) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let h = fnv1a(&bytes) as u32;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

fn replicas_of(rs: &Value) -> i64 {
    rs.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

fn status_i64(rs: &Value, field: &str) -> i64 {
    rs.pointer(&format!("/status/{field}"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

fn revision_of(rs: &Value) -> i64 {
    rs.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
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

pub async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let dv = serde_json::to_value(&*d).map_err(|source| Error::Encode {
        what: "deployment",
        source,
    })?;
    if meta::is_deleting(&dv) {
        return Ok(Action::await_change());
    }
    let Some(spec) = d.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let ns = meta::namespace(&dv).unwrap_or("default").to_string();
    let uid = meta::uid(&dv).unwrap_or("").to_string();
    let replicas = i64::from(spec.replicas.unwrap_or(1).max(0));

    let template = serde_json::to_value(&spec.template).map_err(|source| Error::Encode {
        what: "pod template",
        source,
    })?;
    let hash = template_hash(&template);
    let mut owned: Vec<Value> = ctx
        .registry
        .list_all(&REPLICASETS, Some(&ns))
        .await?
        .into_iter()
        .filter(|rs| meta::controller_of(rs).is_some_and(|(_, _, u)| u == uid))
        .map(|rs| (*rs).clone())
        .collect();
    owned.sort_by_key(revision_of);
    let new_index = owned.iter().position(|rs| {
        rs.pointer("/metadata/labels")
            .and_then(|l| l.get(HASH_LABEL))
            .and_then(Value::as_str)
            == Some(hash.as_str())
    });
    let mut new_rs = new_index.map(|i| owned.remove(i));
    let old: Vec<Value> = owned;
    let old_total: i64 = old.iter().map(replicas_of).sum();
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let paused = spec.paused == Some(true);

    if new_rs.is_none() && !paused {
        let initial = if old_total == 0 {
            replicas
        } else if recreate {
            0
        } else {
            let surge = resolve(
                spec.strategy
                    .as_ref()
                    .and_then(|s| s.rolling_update.as_ref())
                    .and_then(|r| r.max_surge.as_ref()),
                replicas,
                true,
                25,
            );
            (replicas + surge - old_total).clamp(0, replicas)
        };
        let revision = old.iter().map(revision_of).max().unwrap_or(0) + 1;
        let created = create_replica_set(&ctx, &dv, &template, &hash, initial, revision).await?;
        if initial > 0 {
            ctx.recorder
                .record(
                    &dv,
                    EventType::Normal,
                    "ScalingReplicaSet",
                    &format!(
                        "Scaled up replica set {} from 0 to {initial}",
                        meta::name(&created).unwrap_or("")
                    ),
                )
                .await;
        }
        new_rs = Some(created);
    }

    if !paused && let Some(new) = new_rs.as_ref() {
        if recreate {
            for rs in &old {
                scale(&ctx, &dv, rs, 0).await?;
            }
            let old_pods: i64 = old.iter().map(|rs| status_i64(rs, "replicas")).sum();
            if old_pods == 0 && replicas_of(new) != replicas {
                scale(&ctx, &dv, new, replicas).await?;
            }
        } else {
            rolling(&ctx, &dv, spec, new, &old, replicas).await?;
        }
        // Bring the new ReplicaSet's revision forward if it is an old template come back.
        let top = old.iter().map(revision_of).max().unwrap_or(0);
        if revision_of(new) <= top {
            let rs_name = meta::name(new).unwrap_or("").to_string();
            ctx.registry
                .update_with(&REPLICASETS, Some(&ns), &rs_name, Subresource::Main, |o| {
                    o["metadata"]["annotations"][REVISION] = json!((top + 1).to_string());
                    true
                })
                .await?;
        }
    }
    cleanup(&ctx, &d, &old).await?;
    update_status(&ctx, &dv, spec, new_rs.as_ref(), &old, replicas).await?;
    Ok(Action::await_change())
}

async fn create_replica_set(
    ctx: &Ctx,
    d: &Value,
    template: &Value,
    hash: &str,
    replicas: i64,
    revision: i64,
) -> Result<Value, Error> {
    let name = format!("{}-{hash}", meta::name(d).unwrap_or(""));
    let mut template = template.clone();
    template["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
    selector["matchLabels"][HASH_LABEL] = json!(hash);
    let labels = template["metadata"]["labels"].clone();
    let body = json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": meta::namespace(d),
            "labels": labels,
            "annotations": {
                REVISION: revision.to_string(),
                "deployment.kubernetes.io/desired-replicas": d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1).to_string(),
            },
            "ownerReferences": [controller_ref(d)],
        },
        "spec": {
            "replicas": replicas,
            "minReadySeconds": d.pointer("/spec/minReadySeconds").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
            "template": template,
        },
    });
    match ctx
        .registry
        .create(
            &REPLICASETS,
            meta::namespace(d),
            body,
            WriteOptions::default(),
        )
        .await
    {
        Ok(w) => Ok(w.object),
        Err(e) if e.reason == "AlreadyExists" => {
            // Created by an earlier reconcile whose result we did not see: adopt it if ours.
            let existing = ctx
                .registry
                .get(&REPLICASETS, meta::namespace(d), &name)
                .await?;
            if meta::controller_of(&existing).map(|(_, _, u)| u) == meta::uid(d) {
                Ok((*existing).clone())
            } else {
                Err(e.into())
            }
        }
        Err(e) => Err(e.into()),
    }
}

async fn scale(ctx: &Ctx, d: &Value, rs: &Value, to: i64) -> Result<(), Error> {
    let from = replicas_of(rs);
    if from == to {
        return Ok(());
    }
    let rs_name = meta::name(rs).unwrap_or("").to_string();
    let desired = d
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    ctx.registry
        .update_with(
            &REPLICASETS,
            meta::namespace(rs),
            &rs_name,
            Subresource::Main,
            |o| {
                o["spec"]["replicas"] = json!(to);
                o["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] =
                    json!(desired.to_string());
                true
            },
        )
        .await?;
    let verb = if to > from { "up" } else { "down" };
    ctx.recorder
        .record(
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
    d: &Value,
    spec: &DeploymentSpec,
    new: &Value,
    old: &[Value],
    replicas: i64,
) -> Result<(), Error> {
    let ru = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let max_surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), replicas, true, 25);
    let mut max_unavailable = resolve(
        ru.and_then(|r| r.max_unavailable.as_ref()),
        replicas,
        false,
        25,
    );
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    let active_old: Vec<&Value> = old.iter().filter(|rs| replicas_of(rs) > 0).collect();
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
    let new_unavailable = (new_target - status_i64(new, "availableReplicas")).max(0);
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
async fn cleanup(ctx: &Ctx, d: &Deployment, old: &[Value]) -> Result<(), Error> {
    let limit = d
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10)
        .max(0) as usize;
    let empty: Vec<&Value> = old
        .iter()
        .filter(|rs| {
            replicas_of(rs) == 0 && status_i64(rs, "replicas") == 0 && !meta::is_deleting(rs)
        })
        .collect();
    if empty.len() <= limit {
        return Ok(());
    }
    for rs in &empty[..empty.len() - limit] {
        let rs_name = meta::name(rs).unwrap_or("");
        match ctx
            .registry
            .delete(
                &REPLICASETS,
                meta::namespace(rs),
                rs_name,
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

async fn update_status(
    ctx: &Ctx,
    d: &Value,
    spec: &DeploymentSpec,
    new: Option<&Value>,
    old: &[Value],
    replicas: i64,
) -> Result<(), Error> {
    let all: Vec<&Value> = new.into_iter().chain(old.iter()).collect();
    let sum = |f: &str| all.iter().map(|rs| status_i64(rs, f)).sum::<i64>();
    let total = sum("replicas");
    let ready = sum("readyReplicas");
    let available = sum("availableReplicas");
    let updated = new.map(|rs| status_i64(rs, "replicas")).unwrap_or(0);
    let ru = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let max_unavailable =
        if spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate") {
            0
        } else {
            resolve(
                ru.and_then(|r| r.max_unavailable.as_ref()),
                replicas,
                false,
                25,
            )
        };
    let is_available = available >= replicas - max_unavailable;
    let complete = updated == replicas
        && total == replicas
        && available == replicas
        && new.is_some_and(|rs| {
            status_i64(rs, "observedGeneration")
                >= rs
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
        });
    let new_name = new.and_then(|rs| meta::name(rs)).unwrap_or("");
    let ns = meta::namespace(d).unwrap_or("default").to_string();
    let name = meta::name(d).unwrap_or("").to_string();
    let generation = d
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let now = meta::now_rfc3339();
    let (available_cond, progressing_cond) = (
        if is_available {
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
        },
        if complete {
            (
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            )
        } else {
            (
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_name}\" is progressing."),
            )
        },
    );
    ctx.registry
        .update_with(&DEPLOYMENTS, Some(&ns), &name, Subresource::Status, |o| {
            let old_status = o.get("status").cloned().unwrap_or(json!({}));
            let old_conditions = old_status.get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();
            let condition = |kind: &str, (status, reason, message): &(&str, &str, String)| {
                let prev = old_conditions.iter().find(|c| c.get("type").and_then(Value::as_str) == Some(kind));
                let same_status = prev.and_then(|p| p.get("status")).and_then(Value::as_str) == Some(*status);
                let same_reason = prev.and_then(|p| p.get("reason")).and_then(Value::as_str) == Some(*reason);
                let transition = if same_status { prev.and_then(|p| p.get("lastTransitionTime")).cloned().unwrap_or(json!(now)) } else { json!(now) };
                let update = if same_status && same_reason { prev.and_then(|p| p.get("lastUpdateTime")).cloned().unwrap_or(json!(now)) } else { json!(now) };
                json!({"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": transition, "lastUpdateTime": update})
            };
            let mut status = json!({
                "observedGeneration": generation,
                "replicas": total,
                "updatedReplicas": updated,
                "readyReplicas": ready,
                "availableReplicas": available,
                "conditions": [condition("Available", &available_cond), condition("Progressing", &progressing_cond)],
            });
            let unavailable = (replicas - available).max(0);
            if unavailable > 0 {
                status["unavailableReplicas"] = json!(unavailable);
            }
            if let Some(c) = old_status.get("collisionCount") {
                status["collisionCount"] = c.clone();
            }
            if old_status == status {
                return false;
            }
            o["status"] = status;
            true
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
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
