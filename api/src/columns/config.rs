//! The columns of a namespace's configuration objects: ConfigMaps and Secrets
//! (how many keys, never what they hold), ServiceAccounts (how many secrets),
//! ResourceQuotas (REQUEST and LIMIT as `used/hard` per resource).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, ResourceQuota, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{AGE, Column, Layout, NAME, age, col, int, name};

pub(super) const CONFIG_MAP: &[Column] = &[
    NAME,
    int(
        "Data",
        "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.",
    ),
    AGE,
];

pub(super) const SECRET: &[Column] = &[
    NAME,
    col(
        "Type",
        "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types",
    ),
    int(
        "Data",
        "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4",
    ),
    AGE,
];

pub(super) const SERVICE_ACCOUNT: &[Column] = &[
    NAME,
    int(
        "Secrets",
        "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
    ),
    AGE,
];

pub(super) const RESOURCE_QUOTA: &[Column] = &[
    NAME,
    col(
        "Request",
        "Request represents a minimum amount of cpu/memory that a container may consume.",
    ),
    col(
        "Limit",
        "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
    ),
    AGE,
];

pub(super) fn config_map_row(cm: &ConfigMap, layout: &Layout) -> Vec<String> {
    let keys = cm.data.as_ref().map_or(0, BTreeMap::len)
        + cm.binary_data.as_ref().map_or(0, BTreeMap::len);
    vec![
        name(&cm.metadata),
        keys.to_string(),
        age(&cm.metadata, layout),
    ]
}

pub(super) fn secret_row(s: &Secret, layout: &Layout) -> Vec<String> {
    vec![
        name(&s.metadata),
        s.type_.clone().unwrap_or_default(),
        s.data.as_ref().map_or(0, BTreeMap::len).to_string(),
        age(&s.metadata, layout),
    ]
}

pub(super) fn service_account_row(sa: &ServiceAccount, layout: &Layout) -> Vec<String> {
    vec![
        name(&sa.metadata),
        sa.secrets.as_ref().map_or(0, Vec::len).to_string(),
        age(&sa.metadata, layout),
    ]
}

/// Each resource a quota caps, in name order, with what is used and the cap:
/// the status the quota controller keeps, or, before any status is written, the
/// spec's caps with nothing used yet (what the status would first say).
pub fn quota_usage(q: &ResourceQuota) -> Vec<(String, String, String)> {
    let status = q.status.as_ref();
    let hard: Option<&BTreeMap<String, Quantity>> = status
        .and_then(|s| s.hard.as_ref())
        .filter(|h| !h.is_empty())
        .or_else(|| q.spec.as_ref().and_then(|s| s.hard.as_ref()));
    let used = status.and_then(|s| s.used.as_ref());
    hard.into_iter()
        .flatten()
        .map(|(resource, cap)| {
            let in_use = used
                .and_then(|u| u.get(resource))
                .map_or_else(|| "0".to_string(), |q| q.0.clone());
            (resource.clone(), in_use, cap.0.clone())
        })
        .collect()
}

/// REQUEST and LIMIT: `resource: used/hard` pairs, `limits.*` ones under LIMIT.
pub(super) fn resource_quota_row(q: &ResourceQuota, layout: &Layout) -> Vec<String> {
    let mut requests = Vec::new();
    let mut limits = Vec::new();
    for (resource, used, hard) in quota_usage(q) {
        let text = format!("{resource}: {used}/{hard}");
        match resource.split_once('.') {
            Some(("limits", _)) => limits.push(text),
            _ => requests.push(text),
        }
    }
    vec![
        name(&q.metadata),
        requests.join(", "),
        limits.join(", "),
        age(&q.metadata, layout),
    ]
}

#[cfg(test)]
mod tests {
    use crate::columns::tests::layout;
    use crate::columns::{cells, header, row};
    use crate::resource::{CONFIGMAPS, RESOURCEQUOTAS, SECRETS, SERVICEACCOUNTS};
    use serde_json::json;

    #[test]
    fn config_maps_count_text_and_binary_keys() {
        let cm = json!({
            "metadata": {"name": "settings", "creationTimestamp": "2026-01-01T11:59:55Z"},
            "data": {"a": "1", "b": "2"},
            "binaryData": {"blob": "AAEC"}
        });
        assert_eq!(header(&CONFIGMAPS, &layout()), ["NAME", "DATA", "AGE"]);
        assert_eq!(
            row(&CONFIGMAPS, &cm, &layout()).unwrap(),
            ["settings", "3", "5s"]
        );
        let empty = json!({"metadata": {"name": "empty"}});
        assert_eq!(row(&CONFIGMAPS, &empty, &layout()).unwrap()[1], "0");
    }

    #[test]
    fn secrets_show_their_type_and_key_count_never_a_value() {
        let s = json!({
            "metadata": {"name": "db", "creationTimestamp": "2026-01-01T11:00:00Z"},
            "type": "Opaque",
            "data": {"password": "aHVudGVyMg==", "user": "YWRtaW4="}
        });
        assert_eq!(header(&SECRETS, &layout()), ["NAME", "TYPE", "DATA", "AGE"]);
        let cells = row(&SECRETS, &s, &layout()).unwrap();
        assert_eq!(cells, ["db", "Opaque", "2", "60m"]);
        let all = cells.join(" ");
        assert!(!all.contains("aHVudGVyMg") && !all.contains("hunter2"));
    }

    #[test]
    fn service_accounts_count_their_secrets() {
        let sa = json!({
            "metadata": {"name": "default", "creationTimestamp": "2026-01-01T11:00:00Z"},
            "secrets": [{"name": "a"}, {"name": "b"}]
        });
        assert_eq!(
            header(&SERVICEACCOUNTS, &layout()),
            ["NAME", "SECRETS", "AGE"]
        );
        assert_eq!(
            row(&SERVICEACCOUNTS, &sa, &layout()).unwrap(),
            ["default", "2", "60m"]
        );
    }

    #[test]
    fn quotas_split_requests_from_limits_in_name_order() {
        let q = json!({
            "metadata": {"name": "team", "creationTimestamp": "2026-01-01T11:00:00Z"},
            "spec": {"hard": {"pods": "10"}},
            "status": {
                "hard": {"requests.cpu": "2", "limits.memory": "4Gi", "pods": "10", "limits.cpu": "4"},
                "used": {"requests.cpu": "500m", "pods": "3", "limits.cpu": "1"}
            }
        });
        assert_eq!(
            header(&RESOURCEQUOTAS, &layout()),
            ["NAME", "REQUEST", "LIMIT", "AGE"]
        );
        assert_eq!(
            row(&RESOURCEQUOTAS, &q, &layout()).unwrap(),
            [
                "team",
                "pods: 3/10, requests.cpu: 500m/2",
                "limits.cpu: 1/4, limits.memory: 0/4Gi",
                "60m"
            ]
        );
        // Before the quota has a status: the spec's caps, nothing used.
        let fresh = json!({"metadata": {"name": "new"}, "spec": {"hard": {"pods": "5"}}});
        assert_eq!(
            cells(&RESOURCEQUOTAS, &fresh, layout().now).unwrap()[1..3],
            ["pods: 0/5", ""]
        );
    }
}
