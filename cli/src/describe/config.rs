//! A namespace's configuration as kubectl describes it: ConfigMaps (each key and
//! its text; binary keys by size), Secrets (each key by size only: describe never
//! prints a secret's value), ServiceAccounts (their secrets and tokens),
//! ResourceQuotas (Resource/Used/Hard) and LimitRanges (kubectl's limits table).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, LimitRange, ResourceQuota, Secret, ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{Writer, annotations, cell, events, labels};
use crate::columns::quota_usage;

/// `Name`, `Namespace`, `Labels`, `Annotations`: how these describers begin.
fn header(w: &mut Writer, m: &ObjectMeta) {
    w.line(0, &format!("Name:\t{}", m.name.as_deref().unwrap_or("")));
    w.line(
        0,
        &format!("Namespace:\t{}", m.namespace.as_deref().unwrap_or("")),
    );
    labels(w, "Labels", m.labels.as_ref());
    annotations(w, "Annotations", m.annotations.as_ref());
}

pub fn config_map(cm: &ConfigMap, evs: &[Event], now: Timestamp) -> String {
    let mut w = Writer::default();
    header(&mut w, &cm.metadata);
    w.line(0, "");
    w.line(0, "Data");
    w.line(0, "====");
    for (k, v) in cm.data.iter().flatten() {
        w.line(0, &format!("{}:", cell(k)));
        w.line(0, "----");
        // The value as it is, tabs kept out of the alignment.
        w.line(0, &v.replace('\t', "    "));
        w.line(0, "");
    }
    w.line(0, "");
    w.line(0, "BinaryData");
    w.line(0, "====");
    for (k, v) in cm.binary_data.iter().flatten() {
        w.line(0, &format!("{}: {} bytes", cell(k), v.0.len()));
    }
    w.line(0, "");
    events(&mut w, evs, now);
    w.finish()
}

/// A Secret: its type and each key with the size of its value. Never the value
/// (kubectl shows a service-account token's; Tugboat does not).
pub fn secret(s: &Secret) -> String {
    let mut w = Writer::default();
    header(&mut w, &s.metadata);
    w.line(0, "");
    w.line(0, &format!("Type:\t{}", s.type_.as_deref().unwrap_or("")));
    w.line(0, "");
    w.line(0, "Data");
    w.line(0, "====");
    let mut sizes: BTreeMap<&str, usize> = BTreeMap::new();
    for (k, v) in s.data.iter().flatten() {
        sizes.insert(k, v.0.len());
    }
    // Merged into data on write; should an object still carry some, their sizes.
    for (k, v) in s.string_data.iter().flatten() {
        sizes.insert(k, v.len());
    }
    for (k, size) in sizes {
        w.line(0, &format!("{}:\t{size} bytes", cell(k)));
    }
    w.finish()
}

/// A ServiceAccount with its image pull secrets, mountable secrets and token
/// secrets (`(not found)` after a listed secret that does not exist). `secrets`
/// are the Secrets of its namespace.
pub fn service_account(
    sa: &ServiceAccount,
    secrets: &[Secret],
    evs: &[Event],
    now: Timestamp,
) -> String {
    let mut w = Writer::default();
    header(&mut w, &sa.metadata);
    let sa_name = sa.metadata.name.as_deref().unwrap_or("");
    let exists = |name: &str| {
        secrets
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some(name))
    };
    let pull: Vec<String> = sa
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|r| r.name.clone())
        .collect();
    let mount: Vec<String> = sa
        .secrets
        .iter()
        .flatten()
        .filter_map(|r| r.name.clone())
        .collect();
    let tokens: Vec<String> = secrets
        .iter()
        .filter(|s| s.type_.as_deref() == Some("kubernetes.io/service-account-token"))
        .filter(|s| {
            s.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .map(String::as_str)
                == Some(sa_name)
        })
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    // Listed secrets may be missing; tokens were found by listing, so they exist.
    for (title, names, check) in [
        ("Image pull secrets:", pull, true),
        ("Mountable secrets:", mount, true),
        ("Tokens:", tokens, false),
    ] {
        if names.is_empty() {
            w.line(0, &format!("{title}\t<none>"));
            continue;
        }
        for (i, name) in names.iter().enumerate() {
            let label = if i == 0 { title } else { "" };
            let missing = if check && !exists(name) {
                " (not found)"
            } else {
                ""
            };
            w.line(0, &format!("{label}\t{}{missing}", cell(name)));
        }
    }
    events(&mut w, evs, now);
    w.finish()
}

/// A ResourceQuota: its scopes, then Resource/Used/Hard per capped resource.
pub fn resource_quota(q: &ResourceQuota) -> String {
    let mut w = Writer::default();
    let m = &q.metadata;
    w.line(0, &format!("Name:\t{}", m.name.as_deref().unwrap_or("")));
    w.line(
        0,
        &format!("Namespace:\t{}", m.namespace.as_deref().unwrap_or("")),
    );
    let mut scopes: Vec<String> = q
        .spec
        .as_ref()
        .and_then(|s| s.scopes.clone())
        .unwrap_or_default();
    if !scopes.is_empty() {
        scopes.sort();
        w.line(0, &format!("Scopes:\t{}", scopes.join(", ")));
        for scope in &scopes {
            if let Some(help) = scope_help(scope) {
                w.line(0, &format!(" * {help}"));
            }
        }
    }
    w.line(0, "Resource\tUsed\tHard");
    w.line(0, "--------\t----\t----");
    for (resource, used, hard) in quota_usage(q) {
        w.line(0, &format!("{}\t{}\t{}", cell(&resource), used, hard));
    }
    w.finish()
}

/// kubectl's `helpTextForResourceQuotaScope`.
fn scope_help(scope: &str) -> Option<&'static str> {
    Some(match scope {
        "Terminating" => {
            "Matches all pods that have an active deadline. These pods have a limited lifespan on a node before being actively terminated by the system."
        }
        "NotTerminating" => {
            "Matches all pods that do not have an active deadline. These pods usually include long running pods whose container command is not expected to terminate."
        }
        "BestEffort" => {
            "Matches all pods that do not have resource requirements set. These pods have a best effort quality of service."
        }
        "NotBestEffort" => {
            "Matches all pods that have at least one resource requirement set. These pods have a burstable or guaranteed quality of service."
        }
        _ => return None,
    })
}

/// A LimitRange as kubectl's table: one row per limit type and resource, `-`
/// where a bound is not set.
pub fn limit_range(lr: &LimitRange) -> String {
    let mut w = Writer::default();
    let m = &lr.metadata;
    w.line(0, &format!("Name:\t{}", m.name.as_deref().unwrap_or("")));
    w.line(
        0,
        &format!("Namespace:\t{}", m.namespace.as_deref().unwrap_or("")),
    );
    w.line(
        0,
        "Type\tResource\tMin\tMax\tDefault Request\tDefault Limit\tMax Limit/Request Ratio",
    );
    w.line(
        0,
        "----\t--------\t---\t---\t---------------\t-------------\t-----------------------",
    );
    let items = lr
        .spec
        .as_ref()
        .map(|s| s.limits.as_slice())
        .unwrap_or_default();
    for item in items {
        let maps = [
            item.min.as_ref(),
            item.max.as_ref(),
            item.default_request.as_ref(),
            item.default.as_ref(),
            item.max_limit_request_ratio.as_ref(),
        ];
        let mut resources: Vec<&String> = maps.iter().flatten().flat_map(|m| m.keys()).collect();
        resources.sort();
        resources.dedup();
        for resource in resources {
            let values: Vec<String> = maps
                .iter()
                .map(|m| {
                    m.and_then(|m| m.get(resource))
                        .map_or_else(|| "-".to_string(), |q| q.0.clone())
                })
                .collect();
            w.line(
                0,
                &format!(
                    "{}\t{}\t{}",
                    cell(item.type_.as_str()),
                    cell(resource),
                    values.join("\t")
                ),
            );
        }
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe::tests::now;
    use serde_json::json;

    #[test]
    fn a_config_map_shows_its_text_and_the_sizes_of_binary_values() {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "settings", "namespace": "default"},
            "data": {"mode": "prod", "app.conf": "a=1\nb=2"},
            "binaryData": {"logo.png": "iVBORw0KGgo="}
        }))
        .unwrap();
        let text = config_map(&cm, &[], now());
        assert!(
            text.starts_with("Name:         settings\nNamespace:    default\nLabels:       <none>\nAnnotations:  <none>\n\nData\n====\n"),
            "{text}"
        );
        assert!(
            text.contains("app.conf:\n----\na=1\nb=2\n\nmode:\n----\nprod\n"),
            "{text}"
        );
        assert!(
            text.contains("\nBinaryData\n====\nlogo.png: 8 bytes\n"),
            "{text}"
        );
        assert!(!text.contains("iVBOR"), "{text}");
        assert!(text.trim_end().ends_with("Events:  <none>"), "{text}");
    }

    #[test]
    fn a_secret_shows_sizes_never_values() {
        let s: Secret = serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "default"},
            "type": "Opaque",
            // "hunter2" and "admin"
            "data": {"password": "aHVudGVyMg==", "user": "YWRtaW4="}
        }))
        .unwrap();
        let text = secret(&s);
        assert!(text.contains("\nType:  Opaque\n"), "{text}");
        assert!(
            text.contains("Data\n====\npassword:  7 bytes\nuser:      5 bytes\n"),
            "{text}"
        );
        for leaked in ["hunter2", "admin", "aHVudGVyMg", "YWRtaW4"] {
            assert!(!text.contains(leaked), "{leaked} in\n{text}");
        }
        // A service-account token is a value too.
        let token: Secret = serde_json::from_value(json!({
            "metadata": {"name": "t", "namespace": "default"},
            "type": "kubernetes.io/service-account-token",
            "data": {"token": "c2VjcmV0LXRva2Vu"}
        }))
        .unwrap();
        let text = secret(&token);
        assert!(text.contains("token:  12 bytes"), "{text}");
        assert!(!text.contains("secret-token"), "{text}");
    }

    #[test]
    fn a_service_account_lists_its_secrets_and_says_which_are_missing() {
        let sa: ServiceAccount = serde_json::from_value(json!({
            "metadata": {"name": "ci", "namespace": "default"},
            "secrets": [{"name": "ci-creds"}, {"name": "gone"}],
            "imagePullSecrets": [{"name": "registry"}]
        }))
        .unwrap();
        let secrets: Vec<Secret> = serde_json::from_value(json!([
            {"metadata": {"name": "ci-creds"}},
            {"metadata": {"name": "registry"}},
            {"metadata": {"name": "ci-token", "annotations": {"kubernetes.io/service-account.name": "ci"}},
             "type": "kubernetes.io/service-account-token"}
        ]))
        .unwrap();
        let text = service_account(&sa, &secrets, &[], now());
        for expected in [
            "Image pull secrets:  registry\n",
            "Mountable secrets:   ci-creds\n                     gone (not found)\n",
            "Tokens:              ci-token\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        let bare: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
        let text = service_account(&bare, &[], &[], now());
        assert!(text.contains("Image pull secrets:  <none>\nMountable secrets:   <none>\nTokens:              <none>\n"), "{text}");
    }

    #[test]
    fn a_quota_is_a_table_of_used_and_hard() {
        let q: ResourceQuota = serde_json::from_value(json!({
            "metadata": {"name": "team", "namespace": "dev"},
            "spec": {"hard": {"pods": "10", "requests.cpu": "2"}, "scopes": ["NotTerminating"]},
            "status": {"hard": {"pods": "10", "requests.cpu": "2"}, "used": {"pods": "3"}}
        }))
        .unwrap();
        let text = resource_quota(&q);
        assert!(text.contains("Scopes:     NotTerminating\n * Matches all pods that do not have an active deadline."), "{text}");
        assert!(
            text.contains("Resource      Used  Hard\n--------      ----  ----\npods          3     10\nrequests.cpu  0     2\n"),
            "{text}"
        );
    }

    #[test]
    fn a_limit_range_is_kubectls_table_with_dashes_for_unset_bounds() {
        let lr: LimitRange = serde_json::from_value(json!({
            "metadata": {"name": "defaults", "namespace": "dev"},
            "spec": {"limits": [{"type": "Container",
                                 "max": {"cpu": "2"},
                                 "defaultRequest": {"cpu": "100m", "memory": "64Mi"},
                                 "default": {"cpu": "500m", "memory": "128Mi"}}]}
        }))
        .unwrap();
        let text = limit_range(&lr);
        assert!(text.contains("Type        Resource  Min  Max  Default Request  Default Limit  Max Limit/Request Ratio\n"), "{text}");
        assert!(
            text.contains("Container   cpu       -    2    100m             500m           -\n"),
            "{text}"
        );
        assert!(
            text.contains("Container   memory    -    -    64Mi             128Mi          -\n"),
            "{text}"
        );
    }
}
