//! Validation, as the Kubernetes API server does it, with its wording: every problem
//! is a [`FieldError`] that names the field path, so a 422 tells the user exactly what
//! to fix (`spec.replicas: Invalid value: -1: must be greater than or equal to 0`).
//!
//! By kind: `names` (the name rules: DNS-1123 labels and subdomains, qualified
//! names, label values, environment variable names), `meta` (object metadata and
//! labels), `pod` (pods, their specs, containers and probes), `workloads`
//! (Deployments and ReplicaSets, their selectors and templates), `node`,
//! `service` and `endpoints` (Endpoints and EndpointSlices), `hpa`
//! (HorizontalPodAutoscalers), `config` (ConfigMaps, Secrets, ServiceAccounts),
//! `batch` (Jobs, CronJobs), `policy` (ResourceQuotas, LimitRanges), `rbac`
//! (roles, bindings, APIServices).

mod batch;
mod config;
mod endpoints;
mod hpa;
mod meta;
mod names;
mod node;
mod pod;
mod policy;
mod rbac;
mod service;
mod volumes;
mod workloads;

pub use self::batch::{cron_job, job, job_update};
pub use self::config::{
    MAX_DATA_BYTES, config_key, config_map, config_map_update, secret, secret_update,
    service_account,
};
pub use self::endpoints::{endpoint_slice, endpoints, special_ip};
pub use self::hpa::hpa;
pub use self::meta::{NameRule, object_meta};
pub use self::names::{
    dns1035_label, dns1123_label, dns1123_subdomain, env_var_name, label_value_problem, port_name,
    qualified_name,
};
pub use self::node::node;
pub use self::pod::{pod, pod_spec, pod_update};
pub use self::policy::{limit_range, resource_quota};
pub use self::rbac::{
    api_service, cluster_role, cluster_role_binding, role, role_binding, role_ref_unchanged,
};
pub use self::service::{service, service_update};
pub use self::workloads::{
    daemon_set, deployment, replica_set, replication_controller, selector_unchanged,
};

use crate::status::FieldError;

type Errors = Vec<FieldError>;

fn non_negative(errs: &mut Errors, path: &str, v: Option<i64>) {
    if let Some(v) = v
        && v < 0
    {
        errs.push(FieldError::invalid(
            path,
            v,
            "must be greater than or equal to 0",
        ));
    }
}

fn positive(errs: &mut Errors, path: &str, v: Option<i32>) {
    if let Some(v) = v
        && v < 1
    {
        errs.push(FieldError::invalid(
            path,
            v,
            "must be greater than or equal to 1",
        ));
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    use super::*;

    fn deploy(spec: serde_json::Value) -> Deployment {
        let mut d: Deployment =
            serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": spec})).unwrap();
        crate::defaults::deployment(&mut d);
        d
    }

    fn good_spec() -> serde_json::Value {
        json!({
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "tugboat/sample:latest"}]}
            }
        })
    }

    fn fields(errs: &Errors) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_good_deployment_has_no_errors() {
        assert_eq!(
            fields(&deployment(&deploy(good_spec()))),
            Vec::<String>::new()
        );
    }

    #[test]
    fn negative_replicas_are_named_in_kubernetes_words() {
        let mut spec = good_spec();
        spec["replicas"] = json!(-1);
        assert_eq!(
            fields(&deployment(&deploy(spec))),
            vec!["spec.replicas: Invalid value: -1: must be greater than or equal to 0"]
        );
    }

    #[test]
    fn names_must_be_dns_1123() {
        let mut d = deploy(good_spec());
        d.metadata.name = Some("Web_App".into());
        let errs = fields(&deployment(&d));
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with(
                "metadata.name: Invalid value: \"Web_App\": a lowercase RFC 1123 subdomain"
            ),
            "{errs:?}"
        );
        assert!(dns1123_label("a.b").is_some());
        assert!(dns1123_label("web-1").is_none());
        assert!(dns1123_subdomain("a.b-c").is_none());
        assert!(dns1123_label(&"a".repeat(64)).is_some());
    }

    #[test]
    fn containers_need_a_name_and_an_image() {
        let mut spec = good_spec();
        spec["template"]["spec"]["containers"] = json!([{"name": "web"}, {"image": "x"}]);
        let errs = fields(&deployment(&deploy(spec)));
        assert!(
            errs.contains(&"spec.template.spec.containers[0].image: Required value".to_string()),
            "{errs:?}"
        );
        assert!(
            errs.contains(&"spec.template.spec.containers[1].name: Required value".to_string()),
            "{errs:?}"
        );
    }

    #[test]
    fn the_selector_must_match_the_template_labels() {
        let mut spec = good_spec();
        spec["template"]["metadata"]["labels"] = json!({"app": "api"});
        let errs = fields(&deployment(&deploy(spec)));
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("spec.template.metadata.labels: Invalid value:"),
            "{errs:?}"
        );
        assert!(errs[0].ends_with("`selector` does not match template `labels`"));
    }

    #[test]
    fn templates_of_controllers_must_restart_always() {
        let mut spec = good_spec();
        spec["template"]["spec"]["restartPolicy"] = json!("Never");
        let errs = fields(&deployment(&deploy(spec)));
        assert_eq!(
            errs,
            vec![
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""
            ]
        );
    }

    #[test]
    fn probes_ports_and_quantities_are_checked() {
        let mut spec = good_spec();
        spec["template"]["spec"]["containers"][0]["ports"] = json!([{"containerPort": 70000}]);
        spec["template"]["spec"]["containers"][0]["livenessProbe"] =
            json!({"periodSeconds": 0, "httpGet": {"port": 8080}});
        spec["template"]["spec"]["containers"][0]["resources"] =
            json!({"limits": {"memory": "lots"}});
        let errs = fields(&deployment(&deploy(spec)));
        assert!(
            errs.iter().any(|e| e.starts_with(
                "spec.template.spec.containers[0].ports[0].containerPort: Invalid value: 70000"
            )),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.starts_with(
                "spec.template.spec.containers[0].livenessProbe.periodSeconds: Invalid value: 0"
            )),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.starts_with(
                "spec.template.spec.containers[0].resources.limits[memory]: Invalid value: \"lots\""
            )),
            "{errs:?}"
        );
    }

    #[test]
    fn a_pod_may_be_bound_once_but_not_otherwise_changed() {
        let old: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "a"}]}})).unwrap();
        let mut bound = old.clone();
        bound.spec.as_mut().unwrap().node_name = Some("node-1".into());
        assert!(pod_update(&old, &bound).is_empty());
        let mut moved = bound.clone();
        moved.spec.as_mut().unwrap().node_name = Some("node-2".into());
        assert_eq!(pod_update(&bound, &moved).len(), 1);
        let mut new_image = bound.clone();
        new_image.spec.as_mut().unwrap().containers[0].image = Some("b".into());
        assert!(pod_update(&bound, &new_image).is_empty());
    }
}
