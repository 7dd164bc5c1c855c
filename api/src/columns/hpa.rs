//! A HorizontalPodAutoscaler's row as kubectl prints it: REFERENCE
//! (`Deployment/web`), TARGETS (`cpu: 40%/50%`, `<unknown>` before the first
//! reading; two metrics shown, then `+ N more...`), MINPODS, MAXPODS,
//! REPLICAS.

use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscaler, MetricSpec, MetricStatus};

use super::{Layout, age, name};

const UNKNOWN: &str = "<unknown>";

pub fn hpa_row(h: &HorizontalPodAutoscaler, layout: &Layout) -> Vec<String> {
    let spec = h.spec.clone().unwrap_or_default();
    let status = h.status.clone().unwrap_or_default();
    vec![
        name(&h.metadata),
        format!(
            "{}/{}",
            spec.scale_target_ref.kind, spec.scale_target_ref.name
        ),
        targets(
            spec.metrics.as_deref().unwrap_or_default(),
            status.current_metrics.as_deref().unwrap_or_default(),
        ),
        spec.min_replicas
            .map_or_else(|| "<unset>".to_string(), |m| m.to_string()),
        spec.max_replicas.to_string(),
        status.current_replicas.unwrap_or(0).to_string(),
        age(&h.metadata, layout),
    ]
}

/// kubectl's `formatHPAMetrics`: each metric's current value (from the status
/// entry at the same position) over its target.
pub fn targets(specs: &[MetricSpec], statuses: &[MetricStatus]) -> String {
    let mut list: Vec<String> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let status = statuses.get(i);
        match spec.type_.as_str() {
            "Resource" => {
                let Some(r) = &spec.resource else { continue };
                let current = status.and_then(|s| s.resource.as_ref()).map(|s| &s.current);
                if let Some(target) = &r.target.average_value {
                    let current = current
                        .and_then(|c| c.average_value.as_ref())
                        .map_or(UNKNOWN.to_string(), |q| q.0.clone());
                    list.push(format!("{}: {current}/{}", r.name, target.0));
                } else {
                    let current = current
                        .and_then(|c| c.average_utilization)
                        .map_or(UNKNOWN.to_string(), |u| format!("{u}%"));
                    let target = r
                        .target
                        .average_utilization
                        .map_or("<auto>".to_string(), |u| format!("{u}%"));
                    list.push(format!("{}: {current}/{target}", r.name));
                }
            }
            "Pods" => {
                let Some(p) = &spec.pods else { continue };
                let current = status
                    .and_then(|s| s.pods.as_ref())
                    .and_then(|p| p.current.average_value.as_ref())
                    .map_or(UNKNOWN.to_string(), |q| q.0.clone());
                let target = p.target.average_value.as_ref().map_or("", |q| q.0.as_str());
                list.push(format!("{}: {current}/{target}", p.metric.name));
            }
            "Object" => {
                let Some(o) = &spec.object else { continue };
                let current = status.and_then(|s| s.object.as_ref()).map(|o| &o.current);
                if let Some(target) = &o.target.average_value {
                    let current = current
                        .and_then(|c| c.average_value.as_ref())
                        .map_or(UNKNOWN.to_string(), |q| q.0.clone());
                    list.push(format!("{}: {current}/{} (avg)", o.metric.name, target.0));
                } else {
                    let current = current
                        .and_then(|c| c.value.as_ref())
                        .map_or(UNKNOWN.to_string(), |q| q.0.clone());
                    let target = o.target.value.as_ref().map_or("", |q| q.0.as_str());
                    list.push(format!("{}: {current}/{target}", o.metric.name));
                }
            }
            other => list.push(format!("{other}: {UNKNOWN}")),
        }
    }
    match list.len() {
        0 => "<none>".to_string(),
        1 | 2 => list.join(", "),
        n => format!("{} + {} more...", list[..2].join(", "), n - 2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_read_as_kubectl_prints_them() {
        let spec: Vec<MetricSpec> = serde_json::from_value(serde_json::json!([
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
            {"type": "Object", "object": {"describedObject": {"kind": "Service", "name": "web"}, "metric": {"name": "connections_per_second"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
            {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
        ]))
        .unwrap();
        assert_eq!(
            targets(&spec, &[]),
            "cpu: <unknown>/50%, connections_per_second: <unknown>/10 (avg) + 1 more..."
        );
        let status: Vec<MetricStatus> = serde_json::from_value(serde_json::json!([
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 37, "averageValue": "37m"}}},
        ]))
        .unwrap();
        assert_eq!(targets(&spec[..1], &status), "cpu: 37%/50%");
        assert_eq!(targets(&[], &[]), "<none>");
    }
}
