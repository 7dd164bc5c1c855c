//! Fields Tugboat accepts but does not act on yet. Kubernetes clients may send them;
//! rather than drop them silently, the API answers with a warning naming each one.

use k8s_openapi::api::core::v1::PodSpec;

/// Warnings for the fields of a pod spec at `path` that the agent ignores.
pub fn pod_spec(spec: &PodSpec, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut note =
        |field: String| out.push(format!("{field}: accepted but not acted on by Tugboat yet"));
    // The agent serves these volume kinds; any other (persistentVolumeClaim…)
    // is not mounted.
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let served = v.empty_dir.is_some()
            || v.host_path.is_some()
            || v.config_map.is_some()
            || v.secret.is_some()
            || v.downward_api.is_some()
            || v.projected.is_some();
        if !served {
            let kind = serde_json::to_value(v)
                .ok()
                .and_then(|j| {
                    j.as_object()?
                        .keys()
                        .find(|k| k.as_str() != "name")
                        .cloned()
                })
                .unwrap_or_else(|| "source".to_string());
            note(format!("{path}.volumes[{i}].{kind}"));
        }
        for (j, src) in v
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
            .enumerate()
        {
            if src.service_account_token.is_some() {
                note(format!(
                    "{path}.volumes[{i}].projected.sources[{j}].serviceAccountToken"
                ));
            }
            if src.cluster_trust_bundle.is_some() {
                note(format!(
                    "{path}.volumes[{i}].projected.sources[{j}].clusterTrustBundle"
                ));
            }
        }
    }
    if spec.affinity.is_some() {
        note(format!("{path}.affinity"));
    }
    if spec.tolerations.as_ref().is_some_and(|v| !v.is_empty()) {
        note(format!("{path}.tolerations"));
    }
    if spec
        .topology_spread_constraints
        .as_ref()
        .is_some_and(|v| !v.is_empty())
    {
        note(format!("{path}.topologySpreadConstraints"));
    }
    if spec.host_network == Some(true) {
        note(format!("{path}.hostNetwork"));
    }
    if spec
        .image_pull_secrets
        .as_ref()
        .is_some_and(|v| !v.is_empty())
    {
        note(format!("{path}.imagePullSecrets"));
    }
    if spec
        .security_context
        .as_ref()
        .is_some_and(|s| *s != Default::default())
    {
        note(format!("{path}.securityContext"));
    }
    if spec.priority_class_name.is_some() {
        note(format!("{path}.priorityClassName"));
    }
    for (i, c) in spec.containers.iter().enumerate() {
        let cp = format!("{path}.containers[{i}]");
        // preStop runs (exec, httpGet, tcpSocket, sleep); postStart does not yet.
        if c.lifecycle.as_ref().is_some_and(|l| l.post_start.is_some()) {
            note(format!("{cp}.lifecycle.postStart"));
        }
        if c.security_context.is_some() {
            note(format!("{cp}.securityContext"));
        }
        for (which, map) in c
            .resources
            .iter()
            .flat_map(|r| [("limits", &r.limits), ("requests", &r.requests)])
        {
            for k in map.iter().flat_map(|m| m.keys()) {
                if k != "cpu" && k != "memory" {
                    note(format!("{cp}.resources.{which}[{k}]"));
                }
            }
        }
        for (probe, p) in [
            ("livenessProbe", &c.liveness_probe),
            ("readinessProbe", &c.readiness_probe),
            ("startupProbe", &c.startup_probe),
        ] {
            if p.as_ref().is_some_and(|p| p.grpc.is_some()) {
                note(format!("{cp}.{probe}.grpc"));
            }
            if p.as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.scheme.as_deref())
                .is_some_and(|s| s.eq_ignore_ascii_case("https"))
            {
                note(format!("{cp}.{probe}.httpGet.scheme: HTTPS"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ignored_fields_are_named_with_their_paths() {
        let spec: PodSpec = serde_json::from_value(json!({
            "volumes": [
                {"name": "data", "emptyDir": {}},
                {"name": "claim", "persistentVolumeClaim": {"claimName": "c"}},
                {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}
            ],
            "initContainers": [{"name": "i", "image": "x"}],
            "containers": [{"name": "c", "image": "x", "volumeMounts": [{"name": "data", "mountPath": "/d"}],
                "envFrom": [{"configMapRef": {"name": "cfg"}}],
                "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "lifecycle": {"postStart": {"exec": {"command": ["true"]}}}}]
        }))
        .unwrap();
        let w = pod_spec(&spec, "spec.template.spec");
        assert_eq!(
            w,
            vec![
                "spec.template.spec.volumes[1].persistentVolumeClaim: accepted but not acted on by Tugboat yet",
                "spec.template.spec.volumes[2].projected.sources[0].serviceAccountToken: accepted but not acted on by Tugboat yet",
                "spec.template.spec.containers[0].lifecycle.postStart: accepted but not acted on by Tugboat yet",
            ]
        );
    }

    #[test]
    fn a_plain_spec_has_no_warnings() {
        let spec: PodSpec = serde_json::from_value(json!({"containers": [{"name": "c", "image": "x", "resources": {"limits": {"cpu": "1"}}}]})).unwrap();
        assert!(pod_spec(&spec, "spec").is_empty());
    }
}
