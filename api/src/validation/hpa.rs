//! HorizontalPodAutoscalers (`autoscaling/v2`): the target, the replica bounds,
//! the metrics and their targets, and the scaling behavior, with
//! kube-apiserver's rules and field paths. The metric names Tugboat serves are
//! in [`crate::metrics`]; a name it does not serve is valid here and reported
//! by the autoscaler (`ScalingActive=False`), as Kubernetes does with custom
//! metrics no adapter provides.

use k8s_openapi::api::autoscaling::v2::{
    HPAScalingRules, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
};

use super::Errors;
use super::meta::{NameRule, object_meta};
use crate::quantity;
use crate::status::FieldError;

/// The longest stabilization window Kubernetes accepts (one hour).
const MAX_WINDOW: i32 = 3600;
/// The longest policy period (30 minutes).
const MAX_PERIOD: i32 = 1800;

pub fn hpa(h: &HorizontalPodAutoscaler) -> Errors {
    let mut errs = object_meta(&h.metadata, true, NameRule::Subdomain);
    let Some(spec) = &h.spec else {
        errs.push(FieldError::required("spec"));
        return errs;
    };
    errs.extend(hpa_spec(spec));
    errs
}

fn hpa_spec(spec: &HorizontalPodAutoscalerSpec) -> Errors {
    let mut errs = Vec::new();
    let target = &spec.scale_target_ref;
    if target.kind.is_empty() {
        errs.push(FieldError::required("spec.scaleTargetRef.kind"));
    }
    if target.name.is_empty() {
        errs.push(FieldError::required("spec.scaleTargetRef.name"));
    } else if target.name.contains('/') || target.name.contains('%') {
        errs.push(FieldError::invalid(
            "spec.scaleTargetRef.name",
            format!("\"{}\"", target.name),
            "may not contain '/' or '%'",
        ));
    }
    let min = spec.min_replicas.unwrap_or(1);
    if min < 0 {
        errs.push(FieldError::invalid(
            "spec.minReplicas",
            min,
            "must be greater than or equal to 0",
        ));
    }
    if spec.max_replicas < 1 {
        errs.push(FieldError::invalid(
            "spec.maxReplicas",
            spec.max_replicas,
            "must be greater than 0",
        ));
    } else if spec.max_replicas < min {
        errs.push(FieldError::invalid(
            "spec.maxReplicas",
            spec.max_replicas,
            "must be greater than or equal to `minReplicas`",
        ));
    }
    if min == 0
        && !spec
            .metrics
            .iter()
            .flatten()
            .any(|m| m.type_ == "Object" || m.type_ == "External")
    {
        errs.push(FieldError::invalid(
            "spec.minReplicas",
            0,
            "must be greater than or equal to 1 unless an Object metric is configured (the Service whose connections wake the target from zero)",
        ));
    }
    for (i, m) in spec.metrics.iter().flatten().enumerate() {
        errs.extend(metric(&format!("spec.metrics[{i}]"), m));
    }
    if let Some(b) = &spec.behavior {
        if let Some(up) = &b.scale_up {
            errs.extend(rules("spec.behavior.scaleUp", up));
        }
        if let Some(down) = &b.scale_down {
            errs.extend(rules("spec.behavior.scaleDown", down));
        }
    }
    errs
}

fn metric(path: &str, m: &MetricSpec) -> Errors {
    let mut errs = Vec::new();
    let set = [
        m.resource.is_some(),
        m.pods.is_some(),
        m.object.is_some(),
        m.external.is_some(),
        m.container_resource.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if set > 1 {
        errs.push(FieldError::forbidden(
            path,
            "must populate the given metric source only",
        ));
    }
    match m.type_.as_str() {
        "Resource" => match &m.resource {
            None => errs.push(FieldError::required(format!("{path}.resource"))),
            Some(r) => {
                if r.name.is_empty() {
                    errs.push(FieldError::required(format!("{path}.resource.name")));
                }
                errs.extend(target(&format!("{path}.resource.target"), &r.target, true));
            }
        },
        "Pods" => match &m.pods {
            None => errs.push(FieldError::required(format!("{path}.pods"))),
            Some(p) => {
                if p.metric.name.is_empty() {
                    errs.push(FieldError::required(format!("{path}.pods.metric.name")));
                }
                if p.target.type_ != "AverageValue" {
                    errs.push(FieldError::not_supported(
                        format!("{path}.pods.target.type"),
                        &p.target.type_,
                        &["AverageValue"],
                    ));
                }
                errs.extend(target(&format!("{path}.pods.target"), &p.target, false));
            }
        },
        "Object" => match &m.object {
            None => errs.push(FieldError::required(format!("{path}.object"))),
            Some(o) => {
                if o.described_object.kind.is_empty() {
                    errs.push(FieldError::required(format!(
                        "{path}.object.describedObject.kind"
                    )));
                }
                if o.described_object.name.is_empty() {
                    errs.push(FieldError::required(format!(
                        "{path}.object.describedObject.name"
                    )));
                }
                if o.metric.name.is_empty() {
                    errs.push(FieldError::required(format!("{path}.object.metric.name")));
                }
                if !matches!(o.target.type_.as_str(), "Value" | "AverageValue") {
                    errs.push(FieldError::not_supported(
                        format!("{path}.object.target.type"),
                        &o.target.type_,
                        &["Value", "AverageValue"],
                    ));
                }
                errs.extend(target(&format!("{path}.object.target"), &o.target, false));
            }
        },
        "External" | "ContainerResource" => errs.push(FieldError::not_supported(
            format!("{path}.type"),
            &m.type_,
            &["Resource", "Pods", "Object"],
        )),
        "" => errs.push(FieldError::required(format!("{path}.type"))),
        other => errs.push(FieldError::not_supported(
            format!("{path}.type"),
            other,
            &["Resource", "Pods", "Object"],
        )),
    }
    errs
}

fn target(path: &str, t: &MetricTarget, resource: bool) -> Errors {
    let mut errs = Vec::new();
    let positive_quantity = |field: &str,
                             q: &Option<
        k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    >| {
        match q {
            None => Some(FieldError::required(format!("{path}.{field}"))),
            Some(q) => match quantity::parse(&q.0) {
                Some(v) if v > 0.0 => None,
                _ => Some(FieldError::invalid(
                    format!("{path}.{field}"),
                    format!("\"{}\"", q.0),
                    "must be positive",
                )),
            },
        }
    };
    match t.type_.as_str() {
        "Utilization" => {
            if !resource {
                errs.push(FieldError::not_supported(
                    format!("{path}.type"),
                    "Utilization",
                    &["Value", "AverageValue"],
                ));
            }
            match t.average_utilization {
                None => errs.push(FieldError::required(format!("{path}.averageUtilization"))),
                Some(u) if u < 1 => errs.push(FieldError::invalid(
                    format!("{path}.averageUtilization"),
                    u,
                    "must be greater than 0",
                )),
                Some(_) => {}
            }
        }
        "AverageValue" => errs.extend(positive_quantity("averageValue", &t.average_value)),
        "Value" => {
            if resource {
                errs.push(FieldError::not_supported(
                    format!("{path}.type"),
                    "Value",
                    &["Utilization", "AverageValue"],
                ));
            }
            errs.extend(positive_quantity("value", &t.value));
        }
        "" => errs.push(FieldError::required(format!("{path}.type"))),
        other => errs.push(FieldError::not_supported(
            format!("{path}.type"),
            other,
            &["Utilization", "Value", "AverageValue"],
        )),
    }
    errs
}

fn rules(path: &str, r: &HPAScalingRules) -> Errors {
    let mut errs = Vec::new();
    if let Some(w) = r.stabilization_window_seconds
        && !(0..=MAX_WINDOW).contains(&w)
    {
        errs.push(FieldError::invalid(
            format!("{path}.stabilizationWindowSeconds"),
            w,
            &format!("must be between 0 and {MAX_WINDOW} (one hour)"),
        ));
    }
    if let Some(s) = r.select_policy.as_deref()
        && !matches!(s, "Max" | "Min" | "Disabled")
    {
        errs.push(FieldError::not_supported(
            format!("{path}.selectPolicy"),
            s,
            &["Max", "Min", "Disabled"],
        ));
    }
    let policies = r.policies.as_deref().unwrap_or_default();
    if policies.is_empty() && r.select_policy.as_deref() != Some("Disabled") {
        errs.push(FieldError::required(format!(
            "{path}.policies: must specify at least one Policy"
        )));
    }
    for (i, p) in policies.iter().enumerate() {
        let pp = format!("{path}.policies[{i}]");
        if !matches!(p.type_.as_str(), "Pods" | "Percent") {
            errs.push(FieldError::not_supported(
                format!("{pp}.type"),
                &p.type_,
                &["Pods", "Percent"],
            ));
        }
        if p.value < 1 {
            errs.push(FieldError::invalid(
                format!("{pp}.value"),
                p.value,
                "must be greater than zero",
            ));
        }
        if !(1..=MAX_PERIOD).contains(&p.period_seconds) {
            errs.push(FieldError::invalid(
                format!("{pp}.periodSeconds"),
                p.period_seconds,
                &format!("must be between 1 and {MAX_PERIOD} (30 minutes)"),
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> HorizontalPodAutoscaler {
        serde_json::from_value(v).unwrap()
    }

    fn valid() -> serde_json::Value {
        json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 5,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 50}}}]}})
    }

    #[test]
    fn a_cpu_autoscaler_is_valid() {
        assert!(hpa(&parse(valid())).is_empty());
    }

    #[test]
    fn bad_bounds_targets_and_behavior_are_named() {
        let mut v = valid();
        v["spec"]["maxReplicas"] = json!(0);
        v["spec"]["metrics"] = json!([
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 0}}},
            {"type": "Pods", "pods": {"metric": {"name": "requests-per-second"}, "target": {"type": "Value", "value": "1"}}},
            {"type": "External"},
        ]);
        v["spec"]["behavior"] = json!({"scaleDown": {"stabilizationWindowSeconds": 4000,
            "policies": [{"type": "Percent", "value": 0, "periodSeconds": 15}]}});
        let fields: Vec<String> = hpa(&parse(v)).iter().map(|e| e.field.clone()).collect();
        for want in [
            "spec.maxReplicas",
            "spec.metrics[0].resource.target.averageUtilization",
            "spec.metrics[1].pods.target.type",
            "spec.metrics[2].type",
            "spec.behavior.scaleDown.stabilizationWindowSeconds",
            "spec.behavior.scaleDown.policies[0].value",
        ] {
            assert!(
                fields.iter().any(|f| f == want),
                "{want} missing from {fields:?}"
            );
        }
    }
}
