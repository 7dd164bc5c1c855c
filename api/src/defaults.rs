//! Defaulting, as the Kubernetes API server applies it before validation, so that
//! what is stored (and what `tug get -o yaml` shows) is what a Kubernetes user expects.

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentStrategy, ReplicaSet, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    ClientIPConfig, Container, Namespace, NamespaceStatus, PodSpec, PodTemplateSpec, Probe,
    Service, SessionAffinityConfig,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub fn deployment(d: &mut Deployment) {
    let Some(spec) = d.spec.as_mut() else { return };
    spec.replicas.get_or_insert(1);
    spec.revision_history_limit.get_or_insert(10);
    spec.progress_deadline_seconds.get_or_insert(600);
    let strategy = spec
        .strategy
        .get_or_insert_with(DeploymentStrategy::default);
    let kind = strategy
        .type_
        .get_or_insert_with(|| "RollingUpdate".to_string());
    if kind == "RollingUpdate" {
        let ru = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDeployment::default);
        ru.max_surge
            .get_or_insert_with(|| IntOrString::String("25%".to_string()));
        ru.max_unavailable
            .get_or_insert_with(|| IntOrString::String("25%".to_string()));
    }
    pod_template(&mut spec.template);
}

/// Kubernetes' autoscaling/v2 defaults: one replica at least, CPU at 80 % of
/// requests when no metric is given, and a `behavior` that is given filled in
/// (scale up: no window, at most double or +4 pods per 15 s, the larger;
/// scale down: a 300 s window, anything per 15 s).
pub fn hpa(h: &mut k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler) {
    use k8s_openapi::api::autoscaling::v2::{
        HPAScalingPolicy, MetricSpec, MetricTarget, ResourceMetricSource,
    };
    let Some(spec) = h.spec.as_mut() else { return };
    spec.min_replicas.get_or_insert(1);
    if spec.metrics.as_ref().is_none_or(Vec::is_empty) {
        spec.metrics = Some(vec![MetricSpec {
            type_: "Resource".into(),
            resource: Some(ResourceMetricSource {
                name: "cpu".into(),
                target: MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: Some(80),
                    ..Default::default()
                },
            }),
            ..Default::default()
        }]);
    }
    if let Some(b) = spec.behavior.as_mut() {
        let policy = |type_: &str, value: i32| HPAScalingPolicy {
            type_: type_.into(),
            value,
            period_seconds: 15,
        };
        let up = b.scale_up.get_or_insert_with(Default::default);
        up.stabilization_window_seconds.get_or_insert(0);
        up.select_policy.get_or_insert_with(|| "Max".into());
        if up.policies.as_ref().is_none_or(Vec::is_empty) {
            up.policies = Some(vec![policy("Pods", 4), policy("Percent", 100)]);
        }
        let down = b.scale_down.get_or_insert_with(Default::default);
        down.stabilization_window_seconds.get_or_insert(300);
        down.select_policy.get_or_insert_with(|| "Max".into());
        if down.policies.as_ref().is_none_or(Vec::is_empty) {
            down.policies = Some(vec![policy("Percent", 100)]);
        }
    }
}

pub fn replica_set(rs: &mut ReplicaSet) {
    let Some(spec) = rs.spec.as_mut() else { return };
    spec.replicas.get_or_insert(1);
    if let Some(t) = spec.template.as_mut() {
        pod_template(t);
    }
}

pub fn namespace(ns: &mut Namespace) {
    let status = ns.status.get_or_insert_with(NamespaceStatus::default);
    status.phase.get_or_insert_with(|| "Active".to_string());
}

pub fn pod_template(t: &mut PodTemplateSpec) {
    if let Some(spec) = t.spec.as_mut() {
        pod_spec(spec);
    }
}

pub fn pod_spec(spec: &mut PodSpec) {
    spec.restart_policy
        .get_or_insert_with(|| "Always".to_string());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.dns_policy
        .get_or_insert_with(|| "ClusterFirst".to_string());
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".to_string());
    spec.security_context.get_or_insert_with(Default::default);
    spec.enable_service_links.get_or_insert(true);
    for c in spec.containers.iter_mut() {
        container(c);
    }
    for c in spec.init_containers.iter_mut().flatten() {
        container(c);
    }
}

pub fn container(c: &mut Container) {
    c.termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".to_string());
    c.termination_message_policy
        .get_or_insert_with(|| "File".to_string());
    if c.image_pull_policy.is_none() {
        c.image_pull_policy = Some(image_pull_policy(c.image.as_deref().unwrap_or("")).to_string());
    }
    c.resources.get_or_insert_with(Default::default);
    for p in c.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".to_string());
    }
    for probe in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        self::probe(probe);
    }
}

/// `Always` for `:latest` or an untagged image, else `IfNotPresent` (Kubernetes' rule).
pub fn image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

pub fn probe(p: &mut Probe) {
    p.timeout_seconds.get_or_insert(1);
    p.period_seconds.get_or_insert(10);
    p.success_threshold.get_or_insert(1);
    p.failure_threshold.get_or_insert(3);
    if let Some(h) = p.http_get.as_mut() {
        h.path.get_or_insert_with(|| "/".to_string());
        h.scheme.get_or_insert_with(|| "HTTP".to_string());
    }
}

/// How long a ClientIP session sticks by default (`DefaultClientIPServiceAffinitySeconds`).
pub const CLIENT_IP_AFFINITY_SECONDS: i32 = 10800;

/// kube-apiserver's `SetDefaults_Service`, plus the IP family fields its REST layer
/// fills (Tugboat's clusters are IPv4 single-stack).
pub fn service(s: &mut Service) {
    let Some(spec) = s.spec.as_mut() else { return };
    let kind = spec
        .type_
        .get_or_insert_with(|| "ClusterIP".to_string())
        .clone();
    let affinity = spec
        .session_affinity
        .get_or_insert_with(|| "None".to_string())
        .clone();
    match affinity.as_str() {
        "None" => spec.session_affinity_config = None,
        "ClientIP" => {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            if timeout.is_none() {
                spec.session_affinity_config = Some(SessionAffinityConfig {
                    client_ip: Some(ClientIPConfig {
                        timeout_seconds: Some(CLIENT_IP_AFFINITY_SECONDS),
                    }),
                });
            }
        }
        _ => {}
    }
    for p in spec.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".to_string());
        let unset = match &p.target_port {
            None => true,
            Some(IntOrString::Int(0)) => true,
            Some(IntOrString::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        if unset {
            p.target_port = Some(IntOrString::Int(p.port));
        }
    }
    let external = matches!(kind.as_str(), "NodePort" | "LoadBalancer")
        || spec
            .external_ips
            .as_ref()
            .is_some_and(|ips| !ips.is_empty());
    if external {
        spec.external_traffic_policy
            .get_or_insert_with(|| "Cluster".to_string());
    }
    if matches!(kind.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        spec.internal_traffic_policy
            .get_or_insert_with(|| "Cluster".to_string());
    }
    if kind == "LoadBalancer" {
        spec.allocate_load_balancer_node_ports.get_or_insert(true);
    }
    if kind != "ExternalName" {
        spec.ip_families
            .get_or_insert_with(|| vec!["IPv4".to_string()]);
        spec.ip_family_policy
            .get_or_insert_with(|| "SingleStack".to_string());
        // `clusterIPs` mirrors `clusterIP` (kube-apiserver's NormalizeClusterIPs).
        if let Some(ip) = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty())
            && spec.cluster_ips.as_ref().is_none_or(Vec::is_empty)
        {
            spec.cluster_ips = Some(vec![ip.to_string()]);
        }
        if spec.cluster_ip.as_deref().is_none_or(str::is_empty)
            && let Some(first) = spec.cluster_ips.as_ref().and_then(|ips| ips.first())
        {
            spec.cluster_ip = Some(first.clone());
        }
    }
}

/// What an update carries over from the stored Service before defaulting, as
/// kube-apiserver's `PrepareForUpdate` does (`patchAllocatedValues`,
/// `dropTypeDependentFields`): a `clusterIP` left out keeps the allocated one; a
/// port left without a `nodePort` keeps the one its namesake had; a Service that no
/// longer needs node ports drops the ones it had kept unchanged, and the fields of
/// the type it left.
pub fn service_update(new: &mut Service, old: &Service) {
    let (Some(spec), Some(old_spec)) = (new.spec.as_mut(), old.spec.as_ref()) else {
        return;
    };
    let kind = |t: &Option<String>| t.clone().unwrap_or_else(|| "ClusterIP".to_string());
    let (new_type, old_type) = (kind(&spec.type_), kind(&old_spec.type_));
    let needs_ip = |t: &str| t != "ExternalName";
    if needs_ip(&new_type) && needs_ip(&old_type) {
        if spec.cluster_ip.as_deref().is_none_or(str::is_empty) {
            spec.cluster_ip = old_spec.cluster_ip.clone();
        }
        if spec.cluster_ips.as_ref().is_none_or(Vec::is_empty) {
            spec.cluster_ips = old_spec.cluster_ips.clone();
        }
    }
    let needs_node_ports = |t: &str| matches!(t, "NodePort" | "LoadBalancer");
    let node_ports = |ports: &Option<Vec<k8s_openapi::api::core::v1::ServicePort>>| {
        ports
            .iter()
            .flatten()
            .filter_map(|p| p.node_port.filter(|n| *n != 0))
            .collect::<std::collections::BTreeSet<i32>>()
    };
    if needs_node_ports(&new_type) && needs_node_ports(&old_type) {
        let used = node_ports(&spec.ports);
        let by_name: std::collections::BTreeMap<String, i32> = old_spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| Some((p.name.clone().unwrap_or_default(), p.node_port?)))
            .collect();
        for p in spec.ports.iter_mut().flatten() {
            if p.node_port.is_none_or(|n| n == 0)
                && let Some(old) = by_name.get(p.name.as_deref().unwrap_or(""))
                && !used.contains(old)
            {
                p.node_port = Some(*old);
            }
        }
    }
    if !needs_node_ports(&new_type) && node_ports(&spec.ports) == node_ports(&old_spec.ports) {
        for p in spec.ports.iter_mut().flatten() {
            p.node_port = None;
        }
    }
    if new_type != "LoadBalancer"
        && spec.allocate_load_balancer_node_ports == old_spec.allocate_load_balancer_node_ports
    {
        spec.allocate_load_balancer_node_ports = None;
    }
    let external = needs_node_ports(&new_type)
        || spec
            .external_ips
            .as_ref()
            .is_some_and(|ips| !ips.is_empty());
    if !external && spec.external_traffic_policy == old_spec.external_traffic_policy {
        spec.external_traffic_policy = None;
    }
}

/// DaemonSets roll one node at a time by default, keeping ten old revisions.
pub fn daemon_set(ds: &mut k8s_openapi::api::apps::v1::DaemonSet) {
    use k8s_openapi::api::apps::v1::{DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
    let Some(spec) = ds.spec.as_mut() else { return };
    spec.revision_history_limit.get_or_insert(10);
    let strategy = spec
        .update_strategy
        .get_or_insert_with(DaemonSetUpdateStrategy::default);
    let kind = strategy
        .type_
        .get_or_insert_with(|| "RollingUpdate".to_string());
    if kind == "RollingUpdate" {
        let ru = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDaemonSet::default);
        ru.max_unavailable.get_or_insert(IntOrString::Int(1));
        ru.max_surge.get_or_insert(IntOrString::Int(0));
    }
    pod_template(&mut spec.template);
}

/// The labels a Job stamps on its pods and selects them by, as Kubernetes
/// does (the legacy `controller-uid` and `job-name` too, which tools still use).
pub const JOB_CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";

/// A Job's defaults: one pod at a time to one completion, six retries, and —
/// unless `manualSelector` — a selector on its own uid with the template
/// labelled to match.
pub fn job(j: &mut k8s_openapi::api::batch::v1::Job) {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    let uid = j.metadata.uid.clone().unwrap_or_default();
    let name = j.metadata.name.clone().unwrap_or_default();
    let Some(spec) = j.spec.as_mut() else { return };
    job_spec(spec);
    if spec.manual_selector != Some(true) && spec.selector.is_none() && !uid.is_empty() {
        spec.selector = Some(LabelSelector {
            match_labels: Some([(JOB_CONTROLLER_UID.to_string(), uid.clone())].into()),
            match_expressions: None,
        });
        let labels = spec
            .template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default);
        for (k, v) in [
            (JOB_CONTROLLER_UID, &uid),
            (JOB_NAME, &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            labels.entry(k.to_string()).or_insert_with(|| v.clone());
        }
    }
}

fn job_spec(spec: &mut k8s_openapi::api::batch::v1::JobSpec) {
    spec.parallelism.get_or_insert(1);
    if spec.completions.is_none() && spec.parallelism == Some(1) {
        spec.completions = Some(1);
    }
    spec.backoff_limit.get_or_insert(6);
    spec.completion_mode
        .get_or_insert_with(|| "NonIndexed".to_string());
    spec.suspend.get_or_insert(false);
    spec.manual_selector.get_or_insert(false);
    spec.pod_replacement_policy
        .get_or_insert_with(|| "TerminatingOrFailed".to_string());
    pod_template(&mut spec.template);
}

/// A CronJob's defaults: overlapping runs allowed, three successful and one
/// failed Job kept.
pub fn cron_job(c: &mut k8s_openapi::api::batch::v1::CronJob) {
    let Some(spec) = c.spec.as_mut() else { return };
    spec.concurrency_policy
        .get_or_insert_with(|| "Allow".to_string());
    spec.suspend.get_or_insert(false);
    spec.successful_jobs_history_limit.get_or_insert(3);
    spec.failed_jobs_history_limit.get_or_insert(1);
    if let Some(js) = spec.job_template.spec.as_mut() {
        js.parallelism.get_or_insert(1);
        js.backoff_limit.get_or_insert(6);
        js.completion_mode
            .get_or_insert_with(|| "NonIndexed".to_string());
        js.suspend.get_or_insert(false);
        pod_template(&mut js.template);
    }
}

/// A ReplicationController's defaults: one replica, and the template's labels
/// as its selector (and its own labels) when it has none.
pub fn replication_controller(rc: &mut k8s_openapi::api::core::v1::ReplicationController) {
    let Some(spec) = rc.spec.as_mut() else { return };
    spec.replicas.get_or_insert(1);
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if spec.selector.as_ref().is_none_or(|s| s.is_empty()) {
        spec.selector = Some(template_labels.clone());
    }
    if rc.metadata.labels.as_ref().is_none_or(|l| l.is_empty()) && !template_labels.is_empty() {
        rc.metadata.labels = Some(template_labels);
    }
    if let Some(t) = spec.template.as_mut() {
        pod_template(t);
    }
}

/// A Secret's defaults: type `Opaque`, and `stringData` merged into `data`
/// (written over it, as Kubernetes does) and dropped.
pub fn secret(s: &mut k8s_openapi::api::core::v1::Secret) {
    s.type_.get_or_insert_with(|| "Opaque".to_string());
    if let Some(strings) = s.string_data.take() {
        let data = s.data.get_or_insert_with(Default::default);
        for (k, v) in strings {
            data.insert(k, k8s_openapi::ByteString(v.into_bytes()));
        }
    }
}

/// A LimitRange item's defaults, as Kubernetes sets them for containers: the
/// default limit is `max` when unset, and the default request is the default
/// limit, else `min`.
pub fn limit_range(l: &mut k8s_openapi::api::core::v1::LimitRange) {
    let Some(spec) = l.spec.as_mut() else { return };
    for item in spec.limits.iter_mut().filter(|i| i.type_ == "Container") {
        if let Some(max) = item.max.clone() {
            let default = item.default.get_or_insert_with(Default::default);
            for (k, v) in max {
                default.entry(k).or_insert(v);
            }
        }
        if let Some(default) = item.default.clone() {
            let req = item.default_request.get_or_insert_with(Default::default);
            for (k, v) in default {
                req.entry(k).or_insert(v);
            }
        }
        if let Some(min) = item.min.clone() {
            let req = item.default_request.get_or_insert_with(Default::default);
            for (k, v) in min {
                req.entry(k).or_insert(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_bare_deployment_gets_kubernetes_defaults() {
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "web", "image": "tugboat/sample:latest",
                        "ports": [{"containerPort": 8080}],
                        "livenessProbe": {"httpGet": {"port": 8080}}
                    }]}
                }
            }
        }))
        .unwrap();
        deployment(&mut d);
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.revision_history_limit, Some(10));
        let strategy = spec.strategy.unwrap();
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
        assert_eq!(
            strategy.rolling_update.unwrap().max_surge,
            Some(IntOrString::String("25%".into()))
        );
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Always"));
        assert_eq!(pod.termination_grace_period_seconds, Some(30));
        let c = &pod.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(
            c.ports.as_ref().unwrap()[0].protocol.as_deref(),
            Some("TCP")
        );
        let probe = c.liveness_probe.as_ref().unwrap();
        assert_eq!(
            (
                probe.period_seconds,
                probe.timeout_seconds,
                probe.success_threshold,
                probe.failure_threshold
            ),
            (Some(10), Some(1), Some(1), Some(3))
        );
        assert_eq!(probe.http_get.as_ref().unwrap().path.as_deref(), Some("/"));
    }

    #[test]
    fn explicit_values_are_kept() {
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"replicas": 0, "strategy": {"type": "Recreate"}, "selector": {}, "template": {}}
        }))
        .unwrap();
        deployment(&mut d);
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(0));
        assert!(spec.strategy.unwrap().rolling_update.is_none());
    }

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(image_pull_policy("nginx"), "Always");
        assert_eq!(image_pull_policy("nginx:latest"), "Always");
        assert_eq!(image_pull_policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(image_pull_policy("localhost:5000/app"), "Always");
        assert_eq!(image_pull_policy("localhost:5000/app:v2"), "IfNotPresent");
        assert_eq!(image_pull_policy("app@sha256:abc"), "IfNotPresent");
    }
}
