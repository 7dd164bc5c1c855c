//! The columns of APIServices as kube-aggregator prints them: SERVICE
//! (`namespace/name`, or `Local` for a group served by the API server itself)
//! and AVAILABLE (the Available condition, with its reason when not True).

use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;

use super::{AGE, Column, Layout, NAME, age, col, name};

pub(super) const API_SERVICE: &[Column] = &[
    NAME,
    col(
        "Service",
        "The reference to the service that hosts the API endpoint.",
    ),
    col("Available", "Whether this service is available."),
    AGE,
];

pub(super) fn api_service_row(s: &APIService, layout: &Layout) -> Vec<String> {
    let spec = s.spec.as_ref();
    let service = match spec.and_then(|sp| sp.service.as_ref()) {
        Some(svc) => format!(
            "{}/{}",
            svc.namespace.as_deref().unwrap_or(""),
            svc.name.as_deref().unwrap_or("")
        ),
        None => "Local".to_string(),
    };
    let available = s
        .status
        .as_ref()
        .and_then(|st| st.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Available"));
    let available = match available {
        None => "Unknown".to_string(),
        Some(c) if c.status == "True" => c.status.clone(),
        Some(c) => match c.reason.as_deref() {
            Some(reason) if !reason.is_empty() => format!("{} ({reason})", c.status),
            _ => c.status.clone(),
        },
    };
    vec![
        name(&s.metadata),
        service,
        available,
        age(&s.metadata, layout),
    ]
}

#[cfg(test)]
mod tests {
    use crate::columns::tests::layout;
    use crate::columns::{header, row};
    use crate::resource::APISERVICES;
    use serde_json::json;

    #[test]
    fn api_services_show_their_backend_and_availability() {
        let local = json!({
            "metadata": {"name": "v1.apps", "creationTimestamp": "2026-01-01T11:00:00Z"},
            "spec": {"group": "apps", "version": "v1", "groupPriorityMinimum": 17800, "versionPriority": 15}
        });
        assert_eq!(
            header(&APISERVICES, &layout()),
            ["NAME", "SERVICE", "AVAILABLE", "AGE"]
        );
        assert_eq!(
            row(&APISERVICES, &local, &layout()).unwrap(),
            ["v1.apps", "Local", "Unknown", "60m"]
        );
        let remote = json!({
            "metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {"group": "metrics.k8s.io", "version": "v1beta1",
                     "service": {"namespace": "kube-system", "name": "metrics-server"}},
            "status": {"conditions": [{"type": "Available", "status": "False", "reason": "MissingEndpoints"}]}
        });
        assert_eq!(
            row(&APISERVICES, &remote, &layout()).unwrap()[1..3],
            ["kube-system/metrics-server", "False (MissingEndpoints)"]
        );
        let mut up = remote.clone();
        up["status"]["conditions"][0] =
            json!({"type": "Available", "status": "True", "reason": "Passed"});
        assert_eq!(row(&APISERVICES, &up, &layout()).unwrap()[2], "True");
    }
}
