//! ResourceQuota arithmetic, as Kubernetes' quota evaluators
//! (`pkg/quota/v1/evaluator/core`): what a pod uses (`pods`, `requests.cpu`,
//! `requests.memory`, `limits.cpu`, `limits.memory`, with `cpu`/`memory`
//! meaning requests), object counts (`count/<resource>` and the legacy names
//! `services`, `secrets`, `configmaps`, `replicationcontrollers`,
//! `resourcequotas`), whether a new object fits under `spec.hard`, and the
//! admission messages. Values are kept in thousandths (milli-units), so cpu and
//! memory add exactly. Pure: the caller lists what the namespace holds.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceQuota};

use crate::quantity;
use crate::resource::ResourceInfo;

/// Usage by resource name, in milli-units.
pub type Usage = BTreeMap<String, i64>;

/// The compute resources a pod's containers must each state when a quota
/// limits them (Kubernetes' backward-compatible `Constraints`).
const COMPUTE: [&str; 6] = [
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

fn milli(text: &str) -> i64 {
    quantity::Quantity::parse(text).map_or(0, |q| q.scaled(3))
}

/// What one container states, by quota resource name.
fn container_usage(c: &Container) -> Usage {
    let mut u = Usage::new();
    let res = c.resources.as_ref();
    for (which, map) in [
        ("requests", res.and_then(|r| r.requests.as_ref())),
        ("limits", res.and_then(|r| r.limits.as_ref())),
    ] {
        for (k, v) in map.into_iter().flatten() {
            if k != "cpu" && k != "memory" {
                continue;
            }
            let value = milli(&v.0);
            u.insert(format!("{which}.{k}"), value);
            if which == "requests" {
                u.insert(k.clone(), value);
            }
        }
    }
    u
}

/// Is the pod still counted (not Succeeded or Failed, not being deleted)?
pub fn pod_counts(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// What a pod uses: the sum over its containers, or the largest init
/// container where that is more (they run one at a time), and one `pods`.
pub fn pod_usage(pod: &Pod) -> Usage {
    let mut sum = Usage::new();
    let Some(spec) = pod.spec.as_ref() else {
        return sum;
    };
    for c in &spec.containers {
        for (k, v) in container_usage(c) {
            let e = sum.entry(k).or_default();
            *e = e.saturating_add(v);
        }
    }
    for c in spec.init_containers.iter().flatten() {
        for (k, v) in container_usage(c) {
            let e = sum.entry(k).or_default();
            *e = (*e).max(v);
        }
    }
    sum.insert("pods".into(), 1000);
    sum.insert("count/pods".into(), 1000);
    sum
}

/// Is `name` a quota resource a pod counts toward?
pub fn is_pod_resource(name: &str) -> bool {
    COMPUTE.contains(&name) || name == "pods" || name == "count/pods"
}

/// The quota names that count objects of `info` (one object is 1).
pub fn count_names(info: &ResourceInfo) -> Vec<String> {
    let mut names = vec![format!("count/{}", info.store_name())];
    if info.group.is_empty()
        && matches!(
            info.plural,
            "services" | "secrets" | "configmaps" | "replicationcontrollers" | "resourcequotas"
        )
    {
        names.push(info.plural.to_string());
    }
    names
}

/// Adds `more` into `into`.
pub fn add(into: &mut Usage, more: &Usage) {
    for (k, v) in more {
        let e = into.entry(k.clone()).or_default();
        *e = e.saturating_add(*v);
    }
}

/// A quota applies to every object unless it is scoped; scoped quotas
/// (`scopes`, `scopeSelector`) are not evaluated by Tugboat yet.
pub fn is_scoped(q: &ResourceQuota) -> bool {
    q.spec.as_ref().is_some_and(|s| {
        s.scopes.as_ref().is_some_and(|v| !v.is_empty()) || s.scope_selector.is_some()
    })
}

/// The pod's `must specify` error for quota `name`, if its containers leave
/// out a compute resource the quota limits.
pub fn missing_requests(pod: &Pod, quota: &ResourceQuota) -> Option<String> {
    let hard = quota.spec.as_ref().and_then(|s| s.hard.as_ref())?;
    let required: Vec<&str> = COMPUTE
        .iter()
        .copied()
        .filter(|r| hard.contains_key(*r))
        .collect();
    let spec = pod.spec.as_ref()?;
    let mut missing: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let usage = container_usage(c);
        for r in &required {
            if !usage.contains_key(*r) {
                missing.entry(r).or_default().push(c.name.as_str());
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    let parts: Vec<String> = missing
        .into_iter()
        .map(|(r, mut names)| {
            names.sort_unstable();
            names.dedup();
            format!("{r} for: {}", names.join(","))
        })
        .collect();
    Some(format!(
        "failed quota: {}: must specify {}",
        quota.metadata.name.as_deref().unwrap_or(""),
        parts.join("; ")
    ))
}

/// The `exceeded quota` error if adding `delta` to `used` goes over the
/// quota's `spec.hard` for any resource `delta` touches.
pub fn exceeded(quota: &ResourceQuota, used: &Usage, delta: &Usage) -> Option<String> {
    let hard = quota.spec.as_ref().and_then(|s| s.hard.as_ref())?;
    let mut over: Vec<&String> = Vec::new();
    for (k, limit) in hard {
        let Some(d) = delta.get(k) else { continue };
        let now = used.get(k).copied().unwrap_or(0);
        if now.saturating_add(*d) > milli(&limit.0) {
            over.push(k);
        }
    }
    if over.is_empty() {
        return None;
    }
    let list = |f: &dyn Fn(&str) -> String| {
        over.iter()
            .map(|k| format!("{k}={}", f(k)))
            .collect::<Vec<_>>()
            .join(",")
    };
    Some(format!(
        "exceeded quota: {}, requested: {}, used: {}, limited: {}",
        quota.metadata.name.as_deref().unwrap_or(""),
        list(&|k| format(k, delta.get(k).copied().unwrap_or(0))),
        list(&|k| format(k, used.get(k).copied().unwrap_or(0))),
        list(&|k| hard[k].0.clone()),
    ))
}

/// A usage in milli-units, written the way Kubernetes would print it: cpu as
/// `500m` or `2`, memory in the largest binary unit that divides it, counts
/// as plain numbers.
pub fn format(name: &str, milli: i64) -> String {
    let is_memory = name == "memory" || name.ends_with(".memory");
    if !is_memory {
        if milli % 1000 == 0 {
            return (milli / 1000).to_string();
        }
        return format!("{milli}m");
    }
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let bytes = milli / 1000;
    for (suffix, unit) in [("Gi", 1i64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes != 0 && bytes % unit == 0 {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

/// `status.used` for a quota: `usage` restricted to the quota's hard names
/// (zero for those with nothing), formatted.
pub fn used_status(quota: &ResourceQuota, usage: &Usage) -> BTreeMap<String, String> {
    quota
        .spec
        .as_ref()
        .and_then(|s| s.hard.as_ref())
        .into_iter()
        .flatten()
        .map(|(k, _)| (k.clone(), format(k, usage.get(k).copied().unwrap_or(0))))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, resources: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "x", "resources": resources}]},
        }))
        .unwrap()
    }

    fn quota(hard: serde_json::Value) -> ResourceQuota {
        serde_json::from_value(json!({"metadata": {"name": "compute"}, "spec": {"hard": hard}}))
            .unwrap()
    }

    #[test]
    fn pods_add_up_in_exact_units() {
        let mut used = Usage::new();
        add(
            &mut used,
            &pod_usage(&pod(
                "a",
                json!({"requests": {"cpu": "500m", "memory": "64Mi"}}),
            )),
        );
        add(
            &mut used,
            &pod_usage(&pod(
                "b",
                json!({"requests": {"cpu": "0.5", "memory": "64Mi"}}),
            )),
        );
        assert_eq!(format("requests.cpu", used["requests.cpu"]), "1");
        assert_eq!(format("cpu", used["cpu"]), "1");
        assert_eq!(format("requests.memory", used["requests.memory"]), "128Mi");
        assert_eq!(format("pods", used["pods"]), "2");
    }

    #[test]
    fn a_pod_over_the_quota_is_refused_naming_it() {
        let q = quota(json!({"requests.cpu": "1200m", "pods": "10"}));
        let mut used = Usage::new();
        add(
            &mut used,
            &pod_usage(&pod("a", json!({"requests": {"cpu": "1"}}))),
        );
        let new = pod_usage(&pod("b", json!({"requests": {"cpu": "500m"}})));
        assert_eq!(
            exceeded(&q, &used, &new).as_deref(),
            Some(
                "exceeded quota: compute, requested: requests.cpu=500m, used: requests.cpu=1, limited: requests.cpu=1200m"
            )
        );
        let small = pod_usage(&pod("c", json!({"requests": {"cpu": "200m"}})));
        assert_eq!(exceeded(&q, &used, &small), None);
    }

    #[test]
    fn a_pod_without_the_requests_a_quota_limits_is_refused() {
        let q = quota(json!({"requests.cpu": "1", "limits.memory": "1Gi"}));
        let p = pod("a", json!({"requests": {"cpu": "100m"}}));
        assert_eq!(
            missing_requests(&p, &q).as_deref(),
            Some("failed quota: compute: must specify limits.memory for: c")
        );
        let none = quota(json!({"pods": "3"}));
        assert_eq!(missing_requests(&p, &none), None);
    }

    #[test]
    fn objects_count_under_both_names() {
        assert_eq!(
            count_names(&crate::resource::CONFIGMAPS),
            ["count/configmaps", "configmaps"]
        );
        assert_eq!(
            count_names(&crate::resource::DEPLOYMENTS),
            ["count/deployments.apps"]
        );
        let q = quota(json!({"count/configmaps": "1"}));
        let used = Usage::from([("count/configmaps".to_string(), 1000)]);
        let one = Usage::from([
            ("count/configmaps".to_string(), 1000),
            ("configmaps".to_string(), 1000),
        ]);
        assert!(exceeded(&q, &used, &one).is_some());
        assert_eq!(
            used_status(&q, &used),
            BTreeMap::from([("count/configmaps".to_string(), "1".to_string())])
        );
    }
}
