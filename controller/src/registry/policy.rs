//! Admission that reads the store, run on creates after a kind's own defaults
//! and validation, in kube-apiserver's plugin order: the mutating ServiceAccount
//! and LimitRanger plugins, then (after Pod Security) the ResourceQuota check.
//!
//! - ServiceAccount: a pod runs as `default` unless it names another
//!   (`serviceAccount` mirrors `serviceAccountName`), and the account must
//!   exist. The `default` one is made with its namespace (and kept by the
//!   serviceaccounts controller), so it is waited for only briefly, as
//!   Kubernetes retries that one lookup.
//! - LimitRanger: [`tugboat_api::limit_range`] over the namespace's LimitRanges.
//! - ResourceQuota: [`tugboat_api::quota`] over what the namespace holds now.
//!   Usage is counted from the store at admission rather than from the quota's
//!   status, so it is never stale; and quota-checked creates in one namespace
//!   are serialized by a per-namespace lock held from the count to the store
//!   write, so two concurrent creates cannot both slip under the same quota.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{LimitRange, Pod, ResourceQuota};
use serde_json::{Value, json};
use tugboat_api::resource::{LIMITRANGES, PODS, RESOURCEQUOTAS, ResourceInfo, SERVICEACCOUNTS};
use tugboat_api::{ApiError, limit_range, meta, quota};

use super::Registry;
use super::typed::decode;

/// The account a pod runs as when it names none.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// How often, and how far apart, the `default` account is looked up before a
/// pod is refused for lacking it (Kubernetes: 10 tries, 100–200 ms apart).
const DEFAULT_ACCOUNT_TRIES: usize = 10;
const DEFAULT_ACCOUNT_RETRY: Duration = Duration::from_millis(150);

/// One lock per namespace for quota-checked creates.
#[derive(Default)]
pub struct QuotaLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl QuotaLocks {
    fn of(&self, ns: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(ns.to_string()).or_default().clone()
    }
}

/// `pods "x" is forbidden: MESSAGE`, as admission plugins refuse.
fn forbidden(info: &ResourceInfo, name: &str, message: &str) -> ApiError {
    let mut e = ApiError::forbidden(format!(
        "{} {name:?} is forbidden: {message}",
        info.store_name()
    ));
    e.name = Some(name.to_string());
    e.kind = Some(info.plural.to_string());
    e.group = Some(info.group.to_string());
    e
}

impl Registry {
    /// The ServiceAccount and LimitRanger plugins on a pod being created.
    pub(super) async fn admit_pod(&self, ns: &str, object: &mut Value) -> Result<(), ApiError> {
        let name = meta::name(object).unwrap_or("").to_string();
        let spec = object
            .get_mut("spec")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| ApiError::bad_request("a pod needs a spec"))?;
        let named = |k: &str| {
            spec.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let account = named("serviceAccountName")
            .or_else(|| named("serviceAccount"))
            .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_string());
        spec.insert("serviceAccountName".into(), json!(account));
        spec.insert("serviceAccount".into(), json!(account));
        self.check_service_account(ns, &name, &account).await?;

        let ranges: Vec<LimitRange> = self.list_typed(&LIMITRANGES, Some(ns)).await?;
        if ranges.is_empty() {
            return Ok(());
        }
        let mut pod: Pod = decode(&PODS, object)?;
        limit_range::apply_defaults(&mut pod, &ranges);
        let violations = limit_range::violations(&pod, &ranges);
        if !violations.is_empty() {
            return Err(forbidden(
                &PODS,
                &name,
                &limit_range::aggregate(&violations),
            ));
        }
        *object = super::typed::encode(&PODS, &pod)?;
        Ok(())
    }

    async fn check_service_account(
        &self,
        ns: &str,
        pod: &str,
        account: &str,
    ) -> Result<(), ApiError> {
        let tries = if account == DEFAULT_SERVICE_ACCOUNT {
            DEFAULT_ACCOUNT_TRIES
        } else {
            1
        };
        for attempt in 0..tries {
            if self
                .try_get(&SERVICEACCOUNTS, Some(ns), account)
                .await?
                .is_some()
            {
                return Ok(());
            }
            if attempt + 1 < tries {
                tokio::time::sleep(DEFAULT_ACCOUNT_RETRY).await;
            }
        }
        Err(forbidden(
            &PODS,
            pod,
            &format!(
                "error looking up service account {ns}/{account}: serviceaccount {account:?} not found"
            ),
        ))
    }

    /// The unscoped quotas of `ns` that limit something a new `info` counts
    /// toward.
    async fn quotas_for(
        &self,
        info: &ResourceInfo,
        ns: &str,
    ) -> Result<Vec<ResourceQuota>, ApiError> {
        let counted = quota::count_names(info);
        let is_pod = info == &PODS;
        Ok(self
            .list_typed::<ResourceQuota>(&RESOURCEQUOTAS, Some(ns))
            .await?
            .into_iter()
            .filter(|q| !quota::is_scoped(q))
            .filter(|q| {
                q.spec
                    .as_ref()
                    .and_then(|s| s.hard.as_ref())
                    .is_some_and(|hard| {
                        hard.keys()
                            .any(|k| counted.contains(k) || (is_pod && quota::is_pod_resource(k)))
                    })
            })
            .collect())
    }

    /// What the namespace uses now of everything `info`'s quotas limit.
    pub async fn usage(&self, info: &ResourceInfo, ns: &str) -> Result<quota::Usage, ApiError> {
        let mut used = quota::Usage::new();
        if info == &PODS {
            for p in self.list_typed::<Pod>(&PODS, Some(ns)).await? {
                if quota::pod_counts(&p) {
                    quota::add(&mut used, &quota::pod_usage(&p));
                }
            }
            return Ok(used);
        }
        let n = self
            .list_all(info, Some(ns))
            .await?
            .iter()
            .filter(|o| !meta::is_deleting(o))
            .count() as i64;
        for name in quota::count_names(info) {
            used.insert(name, n.saturating_mul(1000));
        }
        Ok(used)
    }

    /// The ResourceQuota check of a create of `object`; holds the namespace's
    /// quota lock (returned) when any quota applies, to be kept until the object
    /// is stored.
    pub(super) async fn check_quota(
        &self,
        info: &ResourceInfo,
        ns: &str,
        object: &Value,
    ) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>, ApiError> {
        if !info.namespaced {
            return Ok(None);
        }
        if self.quotas_for(info, ns).await?.is_empty() {
            return Ok(None);
        }
        let guard = self.quota_locks.of(ns).lock_owned().await;
        // Read again under the lock: a quota made meanwhile counts too.
        let quotas = self.quotas_for(info, ns).await?;
        let name = meta::name(object).unwrap_or("");
        let delta = if info == &PODS {
            let pod: Pod = decode(&PODS, object)?;
            for q in &quotas {
                if let Some(msg) = quota::missing_requests(&pod, q) {
                    return Err(forbidden(info, name, &msg));
                }
            }
            quota::pod_usage(&pod)
        } else {
            quota::count_names(info)
                .into_iter()
                .map(|n| (n, 1000))
                .collect()
        };
        let used = self.usage(info, ns).await?;
        for q in &quotas {
            if let Some(msg) = quota::exceeded(q, &used, &delta) {
                return Err(forbidden(info, name, &msg));
            }
        }
        Ok(Some(guard))
    }
}
