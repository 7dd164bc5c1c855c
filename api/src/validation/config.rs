//! ConfigMaps, Secrets and ServiceAccounts: key names, the size cap, immutable
//! objects, and what each Secret type must hold.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};

use super::Errors;
use super::meta::{NameRule, object_meta};
use crate::status::FieldError;

/// A ConfigMap's or Secret's data may hold at most this much (Kubernetes'
/// `MaxSecretSize`, also the ConfigMap limit).
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

/// Why `key` cannot be a ConfigMap or Secret key (it becomes a file name in a
/// volume), if it cannot.
pub fn config_key(key: &str) -> Option<String> {
    if key.is_empty() {
        return Some("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')".into());
    }
    if key.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Some("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')".into());
    }
    if key == "." || key == ".." || key.starts_with("..") {
        return Some("must not be '.' or '..', nor start with '..'".into());
    }
    None
}

fn keys<'a>(errs: &mut Errors, path: &str, keys: impl Iterator<Item = &'a String>) {
    for k in keys {
        if let Some(why) = config_key(k) {
            errs.push(FieldError::invalid(path, format!("\"{k}\""), &why));
        }
    }
}

fn too_big(errs: &mut Errors, total: usize) {
    if total > MAX_DATA_BYTES {
        errs.push(FieldError {
            reason: "FieldValueTooLong",
            field: "data".into(),
            message: format!("Too long: must have at most {MAX_DATA_BYTES} bytes"),
        });
    }
}

pub fn config_map(cm: &ConfigMap) -> Errors {
    let mut errs = object_meta(&cm.metadata, true, NameRule::Subdomain);
    let data = cm.data.clone().unwrap_or_default();
    let binary = cm.binary_data.clone().unwrap_or_default();
    keys(&mut errs, "data", data.keys());
    keys(&mut errs, "binaryData", binary.keys());
    for k in data.keys().filter(|k| binary.contains_key(*k)) {
        errs.push(FieldError::invalid(
            "data",
            format!("\"{k}\""),
            "duplicate of key present in binaryData",
        ));
    }
    let total = data.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
        + binary
            .iter()
            .map(|(k, v)| k.len() + v.0.len())
            .sum::<usize>();
    too_big(&mut errs, total);
    errs
}

/// An immutable ConfigMap or Secret keeps its data, and stays immutable.
fn immutable_update<T: PartialEq>(
    old_immutable: Option<bool>,
    new_immutable: Option<bool>,
    old_data: &T,
    new_data: &T,
) -> Errors {
    let mut errs = Vec::new();
    if old_immutable == Some(true) {
        if new_immutable != Some(true) {
            errs.push(FieldError::forbidden(
                "immutable",
                "field is immutable when `immutable` is set",
            ));
        }
        if old_data != new_data {
            errs.push(FieldError::forbidden(
                "data",
                "field is immutable when `immutable` is set",
            ));
        }
    }
    errs
}

pub fn config_map_update(old: &ConfigMap, new: &ConfigMap) -> Errors {
    immutable_update(
        old.immutable,
        new.immutable,
        &(&old.data, &old.binary_data),
        &(&new.data, &new.binary_data),
    )
}

/// The Secret types Kubernetes knows and the keys each must hold.
const TYPED_KEYS: &[(&str, &[&str])] = &[
    ("kubernetes.io/tls", &["tls.crt", "tls.key"]),
    ("kubernetes.io/dockerconfigjson", &[".dockerconfigjson"]),
    ("kubernetes.io/dockercfg", &[".dockercfg"]),
    ("kubernetes.io/ssh-auth", &["ssh-privatekey"]),
];

pub fn secret(s: &Secret) -> Errors {
    let mut errs = object_meta(&s.metadata, true, NameRule::Subdomain);
    let data = s.data.clone().unwrap_or_default();
    keys(&mut errs, "data", data.keys());
    keys(
        &mut errs,
        "stringData",
        s.string_data.iter().flat_map(|m| m.keys()),
    );
    let total = data.iter().map(|(k, v)| k.len() + v.0.len()).sum::<usize>();
    too_big(&mut errs, total);
    let type_ = s.type_.as_deref().unwrap_or("Opaque");
    let present: BTreeSet<&str> = data.keys().map(String::as_str).collect();
    if let Some((_, required)) = TYPED_KEYS.iter().find(|(t, _)| *t == type_) {
        for key in *required {
            if !present.contains(key) {
                errs.push(FieldError::required(format!("data[{key}]")));
            }
        }
    }
    match type_ {
        "kubernetes.io/basic-auth"
            if !present.contains("username") && !present.contains("password") =>
        {
            errs.push(FieldError::required("data[username]"));
        }
        "kubernetes.io/service-account-token" => {
            let named = s
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .is_some_and(|n| !n.is_empty());
            if !named {
                errs.push(FieldError::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                ));
            }
        }
        "kubernetes.io/dockerconfigjson" => {
            if let Some(v) = data.get(".dockerconfigjson")
                && serde_json::from_slice::<serde_json::Value>(&v.0).is_err()
            {
                errs.push(FieldError::invalid(
                    "data[.dockerconfigjson]",
                    "<secret contents redacted>",
                    "must be valid JSON",
                ));
            }
        }
        _ => {}
    }
    errs
}

pub fn secret_update(old: &Secret, new: &Secret) -> Errors {
    let mut errs = immutable_update(old.immutable, new.immutable, &old.data, &new.data);
    let (old_type, new_type) = (
        old.type_.as_deref().unwrap_or("Opaque"),
        new.type_.as_deref().unwrap_or("Opaque"),
    );
    if old_type != new_type {
        errs.push(FieldError::invalid(
            "type",
            format!("\"{new_type}\""),
            "field is immutable",
        ));
    }
    errs
}

pub fn service_account(sa: &ServiceAccount) -> Errors {
    object_meta(&sa.metadata, true, NameRule::Subdomain)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(errs: &Errors) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn config_map_keys_must_be_file_names_and_not_repeat_in_binary_data() {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "c"},
            "data": {"ok.key": "1", "bad/key": "2", "both": "x"},
            "binaryData": {"both": "eA=="}
        }))
        .unwrap();
        let errs = fields(&config_map(&cm));
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].starts_with("data: Invalid value: \"bad/key\""),
            "{errs:?}"
        );
        assert!(errs[1].contains("duplicate of key present in binaryData"));
    }

    #[test]
    fn an_immutable_config_map_keeps_its_data() {
        let old: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": "c"}, "immutable": true, "data": {"a": "1"}}),
        )
        .unwrap();
        let mut new = old.clone();
        assert!(config_map_update(&old, &new).is_empty());
        new.data = Some([("a".to_string(), "2".to_string())].into());
        assert_eq!(
            fields(&config_map_update(&old, &new)),
            ["data: Forbidden: field is immutable when `immutable` is set"]
        );
    }

    #[test]
    fn a_tls_secret_needs_its_keys_and_the_type_never_changes() {
        let s: Secret = serde_json::from_value(json!({
            "metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}
        }))
        .unwrap();
        assert_eq!(fields(&secret(&s)), ["data[tls.key]: Required value"]);
        let mut opaque = s.clone();
        opaque.type_ = Some("Opaque".into());
        assert!(fields(&secret_update(&s, &opaque))[0].starts_with("type: Invalid value"));
    }
}
