//! RBAC roles and bindings (`rbac.authorization.k8s.io/v1`) and APIService
//! registrations (`apiregistration.k8s.io/v1`): stored as Kubernetes stores
//! them, with its rules on what they must hold.

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;

use super::Errors;
use super::meta::{NameRule, object_meta};
use crate::status::FieldError;

fn rules(errs: &mut Errors, rules: Option<&Vec<PolicyRule>>, namespaced: bool) {
    for (i, r) in rules.into_iter().flatten().enumerate() {
        let path = format!("rules[{i}]");
        if r.verbs.is_empty() {
            errs.push(FieldError::required(format!("{path}.verbs")));
        }
        let urls = r.non_resource_urls.as_ref().is_some_and(|u| !u.is_empty());
        let resources = r.resources.as_ref().is_some_and(|u| !u.is_empty());
        if urls && namespaced {
            errs.push(FieldError::invalid(
                format!("{path}.nonResourceURLs"),
                format!("{:?}", r.non_resource_urls.clone().unwrap_or_default()),
                "namespaced rules cannot apply to non-resource URLs",
            ));
        }
        if urls && resources {
            errs.push(FieldError::invalid(
                format!("{path}.nonResourceURLs"),
                format!("{:?}", r.non_resource_urls.clone().unwrap_or_default()),
                "rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        if !urls && r.api_groups.is_none() {
            errs.push(FieldError::required(format!("{path}.apiGroups")));
        }
        if !urls && !resources {
            errs.push(FieldError::required(format!("{path}.resources")));
        }
    }
}

pub fn role(r: &Role) -> Errors {
    let mut errs = object_meta(&r.metadata, true, NameRule::PathSegment);
    rules(&mut errs, r.rules.as_ref(), true);
    errs
}

pub fn cluster_role(r: &ClusterRole) -> Errors {
    let mut errs = object_meta(&r.metadata, false, NameRule::PathSegment);
    rules(&mut errs, r.rules.as_ref(), false);
    errs
}

fn role_ref(errs: &mut Errors, r: &RoleRef, namespaced: bool) {
    if r.api_group != "rbac.authorization.k8s.io" {
        errs.push(FieldError::not_supported(
            "roleRef.apiGroup",
            &r.api_group,
            &["rbac.authorization.k8s.io"],
        ));
    }
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !kinds.contains(&r.kind.as_str()) {
        errs.push(FieldError::not_supported("roleRef.kind", &r.kind, kinds));
    }
    if r.name.is_empty() {
        errs.push(FieldError::required("roleRef.name"));
    }
}

fn subjects(errs: &mut Errors, subjects: Option<&Vec<Subject>>, namespaced: bool) {
    for (i, s) in subjects.into_iter().flatten().enumerate() {
        let path = format!("subjects[{i}]");
        if s.name.is_empty() {
            errs.push(FieldError::required(format!("{path}.name")));
        }
        match s.kind.as_str() {
            "ServiceAccount" => {
                if !namespaced && s.namespace.as_deref().is_none_or(str::is_empty) {
                    errs.push(FieldError::required(format!("{path}.namespace")));
                }
            }
            "User" | "Group" => {}
            other => errs.push(FieldError::not_supported(
                format!("{path}.kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
}

pub fn role_binding(b: &RoleBinding) -> Errors {
    let mut errs = object_meta(&b.metadata, true, NameRule::PathSegment);
    role_ref(&mut errs, &b.role_ref, true);
    subjects(&mut errs, b.subjects.as_ref(), true);
    errs
}

pub fn cluster_role_binding(b: &ClusterRoleBinding) -> Errors {
    let mut errs = object_meta(&b.metadata, false, NameRule::PathSegment);
    role_ref(&mut errs, &b.role_ref, false);
    subjects(&mut errs, b.subjects.as_ref(), false);
    errs
}

/// A binding's role stays the one it was made for (make a new binding).
pub fn role_ref_unchanged(old: &RoleRef, new: &RoleRef) -> Errors {
    if old != new {
        return vec![FieldError::invalid(
            "roleRef",
            format!(
                "{{APIGroup:{} Kind:{} Name:{}}}",
                new.api_group, new.kind, new.name
            ),
            "cannot change roleRef",
        )];
    }
    Vec::new()
}

pub fn api_service(s: &APIService) -> Errors {
    let mut errs = object_meta(&s.metadata, false, NameRule::Subdomain);
    let Some(spec) = &s.spec else {
        errs.push(FieldError::required("spec"));
        return errs;
    };
    let name = s.metadata.name.as_deref().unwrap_or("");
    let group = spec.group.as_deref().unwrap_or("");
    let version = spec.version.as_deref().unwrap_or("");
    if version.is_empty() {
        errs.push(FieldError::required("spec.version"));
    }
    let expected = format!("{version}.{group}");
    if !name.is_empty() && name != expected && !(group.is_empty() && name == version) {
        errs.push(FieldError::invalid(
            "metadata.name",
            format!("\"{name}\""),
            &format!("must be {expected}"),
        ));
    }
    if !(1..=20000).contains(&spec.group_priority_minimum) {
        errs.push(FieldError::invalid(
            "spec.groupPriorityMinimum",
            spec.group_priority_minimum,
            "must be positive and less than 20000",
        ));
    }
    if !(1..=1000).contains(&spec.version_priority) {
        errs.push(FieldError::invalid(
            "spec.versionPriority",
            spec.version_priority,
            "must be positive and less than 1000",
        ));
    }
    errs
}
