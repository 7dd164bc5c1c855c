//! LimitRange admission of pods, as Kubernetes' LimitRanger plugin
//! (`plugin/pkg/admission/limitranger`): containers without requests or limits
//! get the namespace's `type: Container` `defaultRequest`/`default` (and the pod
//! the `kubernetes.io/limit-ranger` annotation saying so), then every container
//! is checked against `min`, `max` and `maxLimitRequestRatio`. Pure: the caller
//! reads the namespace's LimitRanges.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, LimitRange, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity;

/// The annotation listing what LimitRanger set.
pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

type Resources = BTreeMap<String, Quantity>;

/// Sets the defaults of `ranges` on the pod's containers that lack them and
/// annotates the pod, as Kubernetes' `mergePodResourceRequirements`.
pub fn apply_defaults(pod: &mut Pod, ranges: &[LimitRange]) {
    let mut notes: Vec<String> = Vec::new();
    for range in ranges {
        let Some(spec) = range.spec.as_ref() else {
            continue;
        };
        let mut default_requests = Resources::new();
        let mut default_limits = Resources::new();
        for item in spec.limits.iter().filter(|i| i.type_ == "Container") {
            default_requests.extend(item.default_request.clone().unwrap_or_default());
            default_limits.extend(item.default.clone().unwrap_or_default());
        }
        if default_requests.is_empty() && default_limits.is_empty() {
            continue;
        }
        let Some(pod_spec) = pod.spec.as_mut() else {
            return;
        };
        for c in &mut pod_spec.containers {
            merge(
                c,
                &default_requests,
                &default_limits,
                "container",
                &mut notes,
            );
        }
        for c in pod_spec.init_containers.iter_mut().flatten() {
            merge(
                c,
                &default_requests,
                &default_limits,
                "init container",
                &mut notes,
            );
        }
    }
    if !notes.is_empty() {
        pod.metadata.annotations.get_or_insert_default().insert(
            ANNOTATION.to_string(),
            format!("LimitRanger plugin set: {}", notes.join("; ")),
        );
    }
}

fn merge(
    c: &mut Container,
    requests: &Resources,
    limits: &Resources,
    prefix: &str,
    notes: &mut Vec<String>,
) {
    let res = c.resources.get_or_insert_default();
    let set = |have: &mut Option<Resources>, defaults: &Resources| {
        let have = have.get_or_insert_default();
        let mut names = Vec::new();
        for (k, v) in defaults {
            if !have.contains_key(k) {
                have.insert(k.clone(), v.clone());
                names.push(k.clone());
            }
        }
        names
    };
    let set_requests = set(&mut res.requests, requests);
    let set_limits = set(&mut res.limits, limits);
    if res.requests.as_ref().is_some_and(BTreeMap::is_empty) {
        res.requests = None;
    }
    if res.limits.as_ref().is_some_and(BTreeMap::is_empty) {
        res.limits = None;
    }
    if !set_requests.is_empty() {
        notes.push(format!(
            "{} request for {prefix} {}",
            set_requests.join(", "),
            c.name
        ));
    }
    if !set_limits.is_empty() {
        notes.push(format!(
            "{} limit for {prefix} {}",
            set_limits.join(", "),
            c.name
        ));
    }
}

/// A quantity in thousandths (cpu in millicores, memory in milli-bytes), as
/// Kubernetes compares them; saturating.
fn milli(q: &Quantity) -> i64 {
    quantity::Quantity::parse(&q.0).map_or(0, |q| q.scaled(3))
}

/// What breaks `ranges`, in Kubernetes' words; empty when nothing does.
pub fn violations(pod: &Pod, ranges: &[LimitRange]) -> Vec<String> {
    let mut out = Vec::new();
    let Some(spec) = pod.spec.as_ref() else {
        return out;
    };
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let containers: Vec<&Container> = containers.collect();
    for range in ranges {
        let items = range.spec.iter().flat_map(|s| s.limits.iter());
        for item in items.filter(|i| i.type_ == "Container") {
            for c in &containers {
                let empty = Resources::new();
                let res = c.resources.as_ref();
                let requests = res.and_then(|r| r.requests.as_ref()).unwrap_or(&empty);
                let limits = res.and_then(|r| r.limits.as_ref()).unwrap_or(&empty);
                for (k, min) in item.min.iter().flatten() {
                    out.extend(min_constraint(k, min, requests.get(k), limits.get(k)));
                }
                for (k, max) in item.max.iter().flatten() {
                    out.extend(max_constraint(k, max, requests.get(k), limits.get(k)));
                }
                for (k, ratio) in item.max_limit_request_ratio.iter().flatten() {
                    out.extend(ratio_constraint(k, ratio, requests.get(k), limits.get(k)));
                }
            }
        }
    }
    out
}

fn min_constraint(
    name: &str,
    min: &Quantity,
    req: Option<&Quantity>,
    lim: Option<&Quantity>,
) -> Option<String> {
    let Some(req) = req else {
        return Some(format!(
            "minimum {name} usage per Container is {}.  No request is specified",
            min.0
        ));
    };
    if milli(req) < milli(min) {
        return Some(format!(
            "minimum {name} usage per Container is {}, but request is {}",
            min.0, req.0
        ));
    }
    match lim {
        Some(lim) if milli(lim) < milli(min) => Some(format!(
            "minimum {name} usage per Container is {}, but limit is {}",
            min.0, lim.0
        )),
        _ => None,
    }
}

fn max_constraint(
    name: &str,
    max: &Quantity,
    req: Option<&Quantity>,
    lim: Option<&Quantity>,
) -> Option<String> {
    let Some(lim) = lim else {
        return Some(format!(
            "maximum {name} usage per Container is {}.  No limit is specified",
            max.0
        ));
    };
    if milli(lim) > milli(max) {
        return Some(format!(
            "maximum {name} usage per Container is {}, but limit is {}",
            max.0, lim.0
        ));
    }
    match req {
        Some(req) if milli(req) > milli(max) => Some(format!(
            "maximum {name} usage per Container is {}, but request is {}",
            max.0, req.0
        )),
        _ => None,
    }
}

fn ratio_constraint(
    name: &str,
    ratio: &Quantity,
    req: Option<&Quantity>,
    lim: Option<&Quantity>,
) -> Option<String> {
    let req = req.map(milli).filter(|v| *v != 0);
    let lim = lim.map(milli).filter(|v| *v != 0);
    let Some(req) = req else {
        return Some(format!(
            "{name} max limit to request ratio per Container is {}, but no request is specified or request is 0",
            ratio.0
        ));
    };
    let Some(lim) = lim else {
        return Some(format!(
            "{name} max limit to request ratio per Container is {}, but no limit is specified or limit is 0",
            ratio.0
        ));
    };
    let observed = lim as f64 / req as f64;
    let allowed = quantity::parse(&ratio.0).unwrap_or(f64::MAX);
    (observed > allowed).then(|| {
        format!(
            "{name} max limit to request ratio per Container is {}, but provided ratio is {observed:.6}",
            ratio.0
        )
    })
}

/// Kubernetes' aggregate of errors: one as it is, several in brackets.
pub fn aggregate(errors: &[String]) -> String {
    match errors {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn range(limits: serde_json::Value) -> LimitRange {
        let mut r: LimitRange = serde_json::from_value(json!({
            "metadata": {"name": "limits"},
            "spec": {"limits": [limits]},
        }))
        .unwrap();
        crate::defaults::limit_range(&mut r);
        r
    }

    fn pod(resources: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "x", "resources": resources}]},
        }))
        .unwrap()
    }

    #[test]
    fn containers_without_resources_get_the_defaults_and_the_pod_says_so() {
        let r = range(json!({"type": "Container",
            "default": {"cpu": "500m", "memory": "256Mi"},
            "defaultRequest": {"cpu": "100m", "memory": "128Mi"}}));
        let mut p = pod(json!({}));
        apply_defaults(&mut p, &[r]);
        let res = p.spec.as_ref().unwrap().containers[0]
            .resources
            .clone()
            .unwrap();
        assert_eq!(res.requests.unwrap()["cpu"].0, "100m");
        assert_eq!(res.limits.unwrap()["memory"].0, "256Mi");
        assert_eq!(
            p.metadata.annotations.unwrap()[ANNOTATION],
            "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c"
        );
    }

    #[test]
    fn what_a_container_sets_is_kept() {
        let r = range(json!({"type": "Container", "default": {"cpu": "500m"}}));
        let mut p = pod(json!({"limits": {"cpu": "2"}, "requests": {"cpu": "1"}}));
        apply_defaults(&mut p, &[r]);
        let res = p.spec.as_ref().unwrap().containers[0]
            .resources
            .clone()
            .unwrap();
        assert_eq!(res.limits.unwrap()["cpu"].0, "2");
        assert!(p.metadata.annotations.is_none());
    }

    #[test]
    fn min_max_and_ratio_are_refused_in_kubernetes_words() {
        let r = range(json!({"type": "Container",
            "min": {"cpu": "100m"}, "max": {"memory": "1Gi"},
            "maxLimitRequestRatio": {"cpu": "2"}}));
        let p = pod(json!({"requests": {"cpu": "50m", "memory": "2Gi"},
                           "limits": {"cpu": "500m", "memory": "2Gi"}}));
        assert_eq!(
            violations(&p, &[r]),
            [
                "minimum cpu usage per Container is 100m, but request is 50m",
                "maximum memory usage per Container is 1Gi, but limit is 2Gi",
                "cpu max limit to request ratio per Container is 2, but provided ratio is 10.000000",
            ]
        );
        let ok = pod(json!({"requests": {"cpu": "200m", "memory": "1Gi"},
                            "limits": {"cpu": "300m", "memory": "1Gi"}}));
        let r = range(json!({"type": "Container",
            "min": {"cpu": "100m"}, "max": {"memory": "1Gi"},
            "maxLimitRequestRatio": {"cpu": "2"}}));
        assert!(violations(&ok, &[r]).is_empty());
        assert_eq!(aggregate(&["a".into()]), "a");
        assert_eq!(aggregate(&["a".into(), "b".into()]), "[a, b]");
    }
}
