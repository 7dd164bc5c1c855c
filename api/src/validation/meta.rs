//! Object metadata: the name (or generateName) by the kind's [`NameRule`], the
//! namespace, and label keys and values.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::Errors;
use super::names::{
    dns1035_label, dns1123_label, dns1123_subdomain, label_value_problem, qualified_name,
};
use crate::status::FieldError;

/// What kind of name an object's `metadata.name` must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    Label,
    Subdomain,
    /// A DNS-1035 label (starts with a letter): Services, whose names become DNS
    /// names and environment variables.
    Dns1035,
    /// Anything usable as one URL path segment (not `.`, `..`, nor holding `/`
    /// or `%`): RBAC roles and bindings, whose names are often `system:…`.
    PathSegment,
}

/// Checks `metadata`: the name (or generateName), the namespace and the labels.
pub fn object_meta(meta: &ObjectMeta, namespaced: bool, rule: NameRule) -> Errors {
    let mut errs = Vec::new();
    match (meta.name.as_deref(), meta.generate_name.as_deref()) {
        (Some(name), _) if !name.is_empty() => {
            let why = match rule {
                NameRule::Label => dns1123_label(name),
                NameRule::Subdomain => dns1123_subdomain(name),
                NameRule::Dns1035 => dns1035_label(name),
                NameRule::PathSegment => path_segment(name),
            };
            if let Some(why) = why {
                errs.push(FieldError::invalid(
                    "metadata.name",
                    format!("\"{name}\""),
                    &why,
                ));
            }
        }
        (_, Some(g)) if !g.is_empty() => {}
        _ => errs.push(FieldError {
            reason: "FieldValueRequired",
            field: "metadata.name".into(),
            message: "Required value: name or generateName is required".into(),
        }),
    }
    if namespaced
        && let Some(ns) = meta.namespace.as_deref()
        && let Some(why) = dns1123_label(ns)
    {
        errs.push(FieldError::invalid(
            "metadata.namespace",
            format!("\"{ns}\""),
            &why,
        ));
    }
    errs.extend(labels(meta.labels.as_ref(), "metadata.labels"));
    if let Some(annotations) = &meta.annotations {
        let total: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
        if total > crate::limits::MAX_ANNOTATIONS_BYTES {
            errs.push(FieldError {
                reason: "FieldValueTooLong",
                field: "metadata.annotations".into(),
                message: format!(
                    "Too long: must have at most {} bytes",
                    crate::limits::MAX_ANNOTATIONS_BYTES
                ),
            });
        }
        for k in annotations.keys() {
            if let Some(why) = qualified_name(k) {
                errs.push(FieldError::invalid(
                    "metadata.annotations",
                    format!("\"{k}\""),
                    &why,
                ));
            }
        }
    }
    errs
}

/// Why `name` cannot be one segment of a URL path, if it cannot.
fn path_segment(name: &str) -> Option<String> {
    if name == "." || name == ".." {
        return Some(format!("may not be '{name}'"));
    }
    for bad in ["/", "%"] {
        if name.contains(bad) {
            return Some(format!("may not contain '{bad}'"));
        }
    }
    None
}

pub(super) fn labels(labels: Option<&BTreeMap<String, String>>, path: &str) -> Errors {
    let mut errs = Vec::new();
    for (k, v) in labels.into_iter().flatten() {
        if let Some(why) = qualified_name(k) {
            errs.push(FieldError::invalid(path, format!("\"{k}\""), &why));
        }
        if let Some(why) = label_value_problem(v, true) {
            errs.push(FieldError::invalid(path, format!("\"{v}\""), &why));
        }
    }
    errs
}
