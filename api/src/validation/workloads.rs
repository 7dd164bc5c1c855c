//! Deployments, ReplicaSets, DaemonSets and ReplicationControllers: replicas,
//! rollout strategy, and the selector that must match the labels of the pod
//! template it owns.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, DeploymentSpec, ReplicaSet};
use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{NameRule, labels, object_meta};
use super::pod::pod_spec;
use super::{Errors, non_negative};
use crate::selector::Selector;
use crate::status::FieldError;

pub fn deployment(d: &Deployment) -> Errors {
    let mut errs = object_meta(&d.metadata, true, NameRule::Subdomain);
    let Some(spec) = &d.spec else {
        errs.push(FieldError::required("spec"));
        return errs;
    };
    errs.extend(deployment_spec(spec));
    errs
}

fn deployment_spec(spec: &DeploymentSpec) -> Errors {
    let mut errs = Vec::new();
    non_negative(&mut errs, "spec.replicas", spec.replicas.map(i64::from));
    non_negative(
        &mut errs,
        "spec.revisionHistoryLimit",
        spec.revision_history_limit.map(i64::from),
    );
    non_negative(
        &mut errs,
        "spec.minReadySeconds",
        spec.min_ready_seconds.map(i64::from),
    );
    errs.extend(selector_and_template(&spec.selector, Some(&spec.template)));
    if let Some(strategy) = &spec.strategy {
        match strategy.type_.as_deref() {
            Some("RollingUpdate") | None => {
                if let Some(ru) = &strategy.rolling_update {
                    rolling_update(
                        &mut errs,
                        "spec.strategy.rollingUpdate",
                        ru.max_surge.as_ref(),
                        ru.max_unavailable.as_ref(),
                    );
                }
            }
            Some("Recreate") => {
                if strategy.rolling_update.is_some() {
                    errs.push(FieldError::forbidden(
                        "spec.strategy.rollingUpdate",
                        "may not be specified when strategy `type` is 'Recreate'",
                    ));
                }
            }
            Some(other) => errs.push(FieldError::not_supported(
                "spec.strategy.type",
                other,
                &["Recreate", "RollingUpdate"],
            )),
        }
    }
    if let (Some(deadline), min_ready) = (
        spec.progress_deadline_seconds,
        spec.min_ready_seconds.unwrap_or(0),
    ) && deadline <= min_ready
    {
        errs.push(FieldError::invalid(
            "spec.progressDeadlineSeconds",
            deadline,
            "must be greater than minReadySeconds",
        ));
    }
    errs
}

/// Checks a rolling update's `maxSurge` and `maxUnavailable` at `path`, which
/// may not both be 0; returns them as read.
fn rolling_update(
    errs: &mut Errors,
    path: &str,
    surge: Option<&IntOrString>,
    unavailable: Option<&IntOrString>,
) -> (Option<i64>, Option<i64>) {
    let surge = int_or_percent(errs, &format!("{path}.maxSurge"), surge);
    let unavailable = int_or_percent(errs, &format!("{path}.maxUnavailable"), unavailable);
    if surge.unwrap_or(0) == 0 && unavailable == Some(0) {
        errs.push(FieldError::invalid(
            format!("{path}.maxUnavailable"),
            0,
            "may not be 0 when `maxSurge` is 0",
        ));
    }
    (surge, unavailable)
}

/// Reads an int-or-percent (`3`, `"25%"`), reporting a bad one. Returns the integer or
/// percentage number.
fn int_or_percent(errs: &mut Errors, path: &str, v: Option<&IntOrString>) -> Option<i64> {
    match v? {
        IntOrString::Int(i) => {
            non_negative(errs, path, Some(i64::from(*i)));
            Some(i64::from(*i))
        }
        IntOrString::String(s) => match s.strip_suffix('%').and_then(|n| n.parse::<i64>().ok()) {
            Some(p) if (0..=100).contains(&p) => Some(p),
            Some(p) => {
                errs.push(FieldError::invalid(
                    path,
                    format!("\"{s}\""),
                    "must not be greater than 100%",
                ));
                Some(p)
            }
            None => {
                errs.push(FieldError::invalid(
                    path,
                    format!("\"{s}\""),
                    "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                ));
                None
            }
        },
    }
}

pub fn replica_set(rs: &ReplicaSet) -> Errors {
    let mut errs = object_meta(&rs.metadata, true, NameRule::Subdomain);
    let Some(spec) = &rs.spec else {
        errs.push(FieldError::required("spec"));
        return errs;
    };
    non_negative(&mut errs, "spec.replicas", spec.replicas.map(i64::from));
    non_negative(
        &mut errs,
        "spec.minReadySeconds",
        spec.min_ready_seconds.map(i64::from),
    );
    errs.extend(selector_and_template(
        &spec.selector,
        spec.template.as_ref(),
    ));
    errs
}

fn selector_and_template(selector: &LabelSelector, template: Option<&PodTemplateSpec>) -> Errors {
    selector_and_template_of(selector, template, &["Always"])
}

/// The selector, and the template it must match whose pods may restart as
/// `policies` allow (`Always` for long-running workloads, `OnFailure` and
/// `Never` for Jobs).
pub(super) fn selector_and_template_of(
    selector: &LabelSelector,
    template: Option<&PodTemplateSpec>,
    policies: &[&str],
) -> Errors {
    let mut errs = Vec::new();
    let empty = selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty);
    if empty {
        errs.push(FieldError::invalid(
            "spec.selector",
            "{}",
            "empty selector is invalid for deployment",
        ));
    }
    errs.extend(labels(
        selector.match_labels.as_ref(),
        "spec.selector.matchLabels",
    ));
    for (i, e) in selector.match_expressions.iter().flatten().enumerate() {
        if !["In", "NotIn", "Exists", "DoesNotExist"].contains(&e.operator.as_str()) {
            errs.push(FieldError::not_supported(
                format!("spec.selector.matchExpressions[{i}].operator"),
                &e.operator,
                &["In", "NotIn", "Exists", "DoesNotExist"],
            ));
        }
    }
    let Some(template) = template else {
        errs.push(FieldError::required("spec.template"));
        return errs;
    };
    let template_labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    errs.extend(labels(
        Some(&template_labels),
        "spec.template.metadata.labels",
    ));
    if !empty && !Selector::from_label_selector(selector).matches(&template_labels) {
        errs.push(FieldError::invalid(
            "spec.template.metadata.labels",
            format!("{template_labels:?}"),
            "`selector` does not match template `labels`",
        ));
    }
    match &template.spec {
        Some(spec) => {
            errs.extend(pod_spec(spec, "spec.template.spec"));
            if let Some(policy) = spec.restart_policy.as_deref()
                && !policies.contains(&policy)
            {
                errs.push(FieldError::not_supported(
                    "spec.template.spec.restartPolicy",
                    policy,
                    policies,
                ));
            }
        }
        None => errs.push(FieldError::required("spec.template.spec.containers")),
    }
    errs
}

pub fn daemon_set(ds: &DaemonSet) -> Errors {
    let mut errs = object_meta(&ds.metadata, true, NameRule::Subdomain);
    let Some(spec) = &ds.spec else {
        errs.push(FieldError::required("spec"));
        return errs;
    };
    non_negative(
        &mut errs,
        "spec.minReadySeconds",
        spec.min_ready_seconds.map(i64::from),
    );
    non_negative(
        &mut errs,
        "spec.revisionHistoryLimit",
        spec.revision_history_limit.map(i64::from),
    );
    errs.extend(selector_and_template(&spec.selector, Some(&spec.template)));
    if let Some(strategy) = &spec.update_strategy {
        match strategy.type_.as_deref() {
            Some("RollingUpdate") | None => {
                if let Some(ru) = &strategy.rolling_update {
                    let (surge, unavailable) = rolling_update(
                        &mut errs,
                        "spec.updateStrategy.rollingUpdate",
                        ru.max_surge.as_ref(),
                        ru.max_unavailable.as_ref(),
                    );
                    if surge.unwrap_or(0) != 0 && unavailable.unwrap_or(0) != 0 {
                        errs.push(FieldError::invalid(
                            "spec.updateStrategy.rollingUpdate.maxUnavailable",
                            unavailable.unwrap_or(0),
                            "may not be set when maxSurge is non-zero",
                        ));
                    }
                }
            }
            Some("OnDelete") => {}
            Some(other) => errs.push(FieldError::not_supported(
                "spec.updateStrategy.type",
                other,
                &["OnDelete", "RollingUpdate"],
            )),
        }
    }
    errs
}

pub fn replication_controller(rc: &ReplicationController) -> Errors {
    let mut errs = object_meta(&rc.metadata, true, NameRule::Subdomain);
    let Some(spec) = &rc.spec else {
        errs.push(FieldError::required("spec"));
        return errs;
    };
    non_negative(&mut errs, "spec.replicas", spec.replicas.map(i64::from));
    non_negative(
        &mut errs,
        "spec.minReadySeconds",
        spec.min_ready_seconds.map(i64::from),
    );
    let selector = LabelSelector {
        match_labels: spec.selector.clone(),
        match_expressions: None,
    };
    errs.extend(selector_and_template(&selector, spec.template.as_ref()));
    errs
}

/// Selectors of Deployments and ReplicaSets are immutable in `apps/v1`.
pub fn selector_unchanged(old: &LabelSelector, new: &LabelSelector) -> Errors {
    if old != new {
        return vec![FieldError::invalid(
            "spec.selector",
            format!("{:?}", new.match_labels.clone().unwrap_or_default()),
            "field is immutable",
        )];
    }
    Vec::new()
}
