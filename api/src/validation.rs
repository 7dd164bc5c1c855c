//! Validation, as the Kubernetes API server does it, with its wording: every problem
//! is a [`FieldError`] that names the field path, so a 422 tells the user exactly what
//! to fix (`spec.replicas: Invalid value: -1: must be greater than or equal to 0`).

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, ReplicaSet};
use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec, PodTemplateSpec, Probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::selector::Selector;
use crate::status::FieldError;

type Errors = Vec<FieldError>;

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;

/// Why `name` is not a DNS-1123 label (`my-name`), if it is not.
pub fn dns1123_label(name: &str) -> Option<String> {
    if name.len() > DNS1123_LABEL_MAX {
        return Some(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    (!ok).then(|| {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_string()
    })
}

/// Why `name` is not a DNS-1123 subdomain (`example.com`), if it is not.
pub fn dns1123_subdomain(name: &str) -> Option<String> {
    if name.len() > DNS1123_SUBDOMAIN_MAX {
        return Some(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    let ok = !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && part
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric())
                && part
                    .bytes()
                    .last()
                    .is_some_and(|b| b.is_ascii_alphanumeric())
        });
    (!ok).then(|| {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string()
    })
}

/// Why `key` is not a qualified name (`app`, `example.com/app`), if it is not:
/// the rule for label and annotation keys, and for label selector keys.
pub fn qualified_name(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && let Some(why) = dns1123_subdomain(p)
    {
        return Some(format!("prefix part {why}"));
    }
    label_value_problem(name, false)
}

/// Why `v` is not a label value (empty allowed when `allow_empty`), if it is not.
pub fn label_value_problem(v: &str, allow_empty: bool) -> Option<String> {
    if v.is_empty() {
        return (!allow_empty).then(|| "name part must be non-empty".to_string());
    }
    if v.len() > 63 {
        return Some("must be no more than 63 characters".to_string());
    }
    let ok = v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && v.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    (!ok).then(|| {
        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".to_string()
    })
}

/// What kind of name an object's `metadata.name` must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    Label,
    Subdomain,
}

/// Checks `metadata`: the name (or generateName), the namespace and the labels.
pub fn object_meta(meta: &ObjectMeta, namespaced: bool, rule: NameRule) -> Errors {
    let mut errs = Vec::new();
    match (meta.name.as_deref(), meta.generate_name.as_deref()) {
        (Some(name), _) if !name.is_empty() => {
            let why = match rule {
                NameRule::Label => dns1123_label(name),
                NameRule::Subdomain => dns1123_subdomain(name),
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

fn labels(labels: Option<&BTreeMap<String, String>>, path: &str) -> Errors {
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
                    let surge = int_or_percent(
                        &mut errs,
                        "spec.strategy.rollingUpdate.maxSurge",
                        ru.max_surge.as_ref(),
                    );
                    let unavailable = int_or_percent(
                        &mut errs,
                        "spec.strategy.rollingUpdate.maxUnavailable",
                        ru.max_unavailable.as_ref(),
                    );
                    if surge == Some(0) && unavailable == Some(0) {
                        errs.push(FieldError::invalid(
                            "spec.strategy.rollingUpdate.maxUnavailable",
                            0,
                            "may not be 0 when `maxSurge` is 0",
                        ));
                    }
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
                && policy != "Always"
            {
                errs.push(FieldError::not_supported(
                    "spec.template.spec.restartPolicy",
                    policy,
                    &["Always"],
                ));
            }
        }
        None => errs.push(FieldError::required("spec.template.spec.containers")),
    }
    errs
}

pub fn pod(p: &Pod) -> Errors {
    let mut errs = object_meta(&p.metadata, true, NameRule::Subdomain);
    match &p.spec {
        Some(spec) => errs.extend(pod_spec(spec, "spec")),
        None => errs.push(FieldError::required("spec")),
    }
    errs
}

/// On update, a pod's spec may change only in the fields Kubernetes allows: container
/// images, `activeDeadlineSeconds`, tolerations, and `nodeName` once (binding).
pub fn pod_update(old: &Pod, new: &Pod) -> Errors {
    let (Some(old_spec), Some(new_spec)) = (&old.spec, &new.spec) else {
        return Vec::new();
    };
    let mut a = old_spec.clone();
    let mut b = new_spec.clone();
    for spec in [&mut a, &mut b] {
        for c in spec.containers.iter_mut() {
            c.image = None;
        }
        spec.active_deadline_seconds = None;
        spec.tolerations = None;
        spec.termination_grace_period_seconds = None;
    }
    if old_spec.node_name.as_deref().is_none_or(str::is_empty) {
        a.node_name = None;
        b.node_name = None;
    }
    if a != b {
        return vec![FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        )];
    }
    Vec::new()
}

pub fn pod_spec(spec: &PodSpec, path: &str) -> Errors {
    let mut errs = Vec::new();
    if spec.containers.is_empty() {
        errs.push(FieldError::required(format!("{path}.containers")));
    }
    let mut names = HashSet::new();
    for (i, c) in spec.containers.iter().enumerate() {
        errs.extend(container(c, &format!("{path}.containers[{i}]"), &mut names));
    }
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        errs.extend(container(
            c,
            &format!("{path}.initContainers[{i}]"),
            &mut names,
        ));
    }
    if let Some(policy) = spec.restart_policy.as_deref()
        && !["Always", "OnFailure", "Never"].contains(&policy)
    {
        errs.push(FieldError::not_supported(
            format!("{path}.restartPolicy"),
            policy,
            &["Always", "OnFailure", "Never"],
        ));
    }
    non_negative(
        &mut errs,
        &format!("{path}.terminationGracePeriodSeconds"),
        spec.termination_grace_period_seconds,
    );
    if let Some(node) = spec.node_name.as_deref()
        && !node.is_empty()
        && let Some(why) = dns1123_subdomain(node)
    {
        errs.push(FieldError::invalid(
            format!("{path}.nodeName"),
            format!("\"{node}\""),
            &why,
        ));
    }
    for (field, value) in [
        ("hostname", spec.hostname.as_deref()),
        ("subdomain", spec.subdomain.as_deref()),
    ] {
        if let Some(v) = value.filter(|v| !v.is_empty())
            && let Some(why) = dns1123_label(v)
        {
            errs.push(FieldError::invalid(
                format!("{path}.{field}"),
                format!("\"{v}\""),
                &why,
            ));
        }
    }
    errs.extend(labels(
        spec.node_selector.as_ref(),
        &format!("{path}.nodeSelector"),
    ));
    errs
}

/// Why `name` is not an environment variable name Kubernetes accepts, if it is not.
pub fn env_var_name(name: &str) -> Option<String> {
    let ok = name.bytes().next().is_some_and(|b| !b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    (!ok).then(|| {
        "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')".to_string()
    })
}

fn container(c: &Container, path: &str, names: &mut HashSet<String>) -> Errors {
    let mut errs = Vec::new();
    if c.name.is_empty() {
        errs.push(FieldError::required(format!("{path}.name")));
    } else if let Some(why) = dns1123_label(&c.name) {
        errs.push(FieldError::invalid(
            format!("{path}.name"),
            format!("\"{}\"", c.name),
            &why,
        ));
    } else if !names.insert(c.name.clone()) {
        errs.push(FieldError {
            reason: "FieldValueDuplicate",
            field: format!("{path}.name"),
            message: format!("Duplicate value: \"{}\"", c.name),
        });
    }
    if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
        errs.push(FieldError::required(format!("{path}.image")));
    }
    if let Some(policy) = c.image_pull_policy.as_deref()
        && !["Always", "IfNotPresent", "Never"].contains(&policy)
    {
        errs.push(FieldError::not_supported(
            format!("{path}.imagePullPolicy"),
            policy,
            &["Always", "IfNotPresent", "Never"],
        ));
    }
    let mut port_names = HashSet::new();
    for (i, p) in c.ports.iter().flatten().enumerate() {
        let pp = format!("{path}.ports[{i}]");
        if !(1..=65535).contains(&p.container_port) {
            errs.push(FieldError::invalid(
                format!("{pp}.containerPort"),
                p.container_port,
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(hp) = p.host_port
            && !(0..=65535).contains(&hp)
        {
            errs.push(FieldError::invalid(
                format!("{pp}.hostPort"),
                hp,
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(proto) = p.protocol.as_deref()
            && !["TCP", "UDP", "SCTP"].contains(&proto)
        {
            errs.push(FieldError::not_supported(
                format!("{pp}.protocol"),
                proto,
                &["SCTP", "TCP", "UDP"],
            ));
        }
        if let Some(name) = p.name.as_deref() {
            if name.is_empty() || name.len() > 15 || dns1123_label(name).is_some() {
                errs.push(FieldError::invalid(
                    format!("{pp}.name"),
                    format!("\"{name}\""),
                    "must be no more than 15 characters, contain only lowercase alphanumeric characters or '-', and start and end with an alphanumeric character",
                ));
            } else if !port_names.insert(name.to_string()) {
                errs.push(FieldError {
                    reason: "FieldValueDuplicate",
                    field: format!("{pp}.name"),
                    message: format!("Duplicate value: \"{name}\""),
                });
            }
        }
    }
    for (i, e) in c.env.iter().flatten().enumerate() {
        if e.name.is_empty() {
            errs.push(FieldError::required(format!("{path}.env[{i}].name")));
        } else if let Some(why) = env_var_name(&e.name) {
            errs.push(FieldError::invalid(
                format!("{path}.env[{i}].name"),
                format!("\"{}\"", e.name),
                &why,
            ));
        }
    }
    if let Some(res) = &c.resources {
        for (which, map) in [("limits", &res.limits), ("requests", &res.requests)] {
            for (k, q) in map.iter().flatten() {
                if crate::quantity::parse(&q.0).is_none() {
                    errs.push(FieldError::invalid(
                        format!("{path}.resources.{which}[{k}]"),
                        format!("\"{}\"", q.0),
                        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                    ));
                } else if crate::quantity::parse(&q.0).is_some_and(|v| v < 0.0) {
                    errs.push(FieldError::invalid(
                        format!("{path}.resources.{which}[{k}]"),
                        format!("\"{}\"", q.0),
                        "must be greater than or equal to 0",
                    ));
                }
            }
        }
        for (k, req) in res.requests.iter().flatten() {
            let limit = res.limits.as_ref().and_then(|l| l.get(k));
            if let (Some(r), Some(l)) = (
                crate::quantity::parse(&req.0),
                limit.and_then(|l| crate::quantity::parse(&l.0)),
            ) && r > l
            {
                errs.push(FieldError::invalid(
                    format!("{path}.resources.requests"),
                    format!("\"{}\"", req.0),
                    &format!(
                        "must be less than or equal to {k} limit of {}",
                        limit.map(|l| l.0.as_str()).unwrap_or("")
                    ),
                ));
            }
        }
    }
    for (field, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        if let Some(p) = probe {
            errs.extend(self::probe(p, &format!("{path}.{field}"), field));
        }
    }
    errs
}

fn probe(p: &Probe, path: &str, field: &str) -> Errors {
    let mut errs = Vec::new();
    let handlers = [
        p.http_get.is_some(),
        p.tcp_socket.is_some(),
        p.exec.is_some(),
        p.grpc.is_some(),
    ]
    .iter()
    .filter(|h| **h)
    .count();
    if handlers == 0 {
        errs.push(FieldError::required(format!(
            "{path}: must specify a handler type"
        )));
    } else if handlers > 1 {
        errs.push(FieldError::forbidden(
            path,
            "may not specify more than 1 handler type",
        ));
    }
    non_negative(
        &mut errs,
        &format!("{path}.initialDelaySeconds"),
        p.initial_delay_seconds.map(i64::from),
    );
    positive(
        &mut errs,
        &format!("{path}.periodSeconds"),
        p.period_seconds,
    );
    positive(
        &mut errs,
        &format!("{path}.timeoutSeconds"),
        p.timeout_seconds,
    );
    positive(
        &mut errs,
        &format!("{path}.successThreshold"),
        p.success_threshold,
    );
    positive(
        &mut errs,
        &format!("{path}.failureThreshold"),
        p.failure_threshold,
    );
    if field != "readinessProbe" && p.success_threshold.is_some_and(|s| s != 1) {
        errs.push(FieldError::invalid(
            format!("{path}.successThreshold"),
            p.success_threshold.unwrap_or(1),
            "must be 1",
        ));
    }
    if let Some(h) = &p.http_get {
        port_ref(&mut errs, &format!("{path}.httpGet.port"), &h.port);
    }
    if let Some(t) = &p.tcp_socket {
        port_ref(&mut errs, &format!("{path}.tcpSocket.port"), &t.port);
    }
    if let Some(e) = &p.exec
        && e.command.as_ref().is_none_or(Vec::is_empty)
    {
        errs.push(FieldError::required(format!("{path}.exec.command")));
    }
    errs
}

fn port_ref(errs: &mut Errors, path: &str, port: &IntOrString) {
    match port {
        IntOrString::Int(p) if !(1..=65535).contains(p) => {
            errs.push(FieldError::invalid(
                path,
                p,
                "must be between 1 and 65535, inclusive",
            ));
        }
        IntOrString::String(s) if s.is_empty() || dns1123_label(s).is_some() => {
            errs.push(FieldError::invalid(
                path,
                format!("\"{s}\""),
                "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
            ));
        }
        _ => {}
    }
}

/// The address types a Node may report (`NodeAddressType`).
const NODE_ADDRESS_TYPES: &[&str] = &[
    "Hostname",
    "InternalIP",
    "ExternalIP",
    "InternalDNS",
    "ExternalDNS",
];

/// A Node's name, and its status: addresses must be what their type says (an IP
/// for the `*IP` types, a DNS name for the others), because the controller connects
/// to them, and the agent's port must be a port.
pub fn node(n: &Node) -> Errors {
    let mut errs = object_meta(&n.metadata, false, NameRule::Subdomain);
    let Some(status) = &n.status else {
        return errs;
    };
    for (i, a) in status.addresses.iter().flatten().enumerate() {
        let path = format!("status.addresses[{i}]");
        if !NODE_ADDRESS_TYPES.contains(&a.type_.as_str()) {
            errs.push(FieldError::not_supported(
                format!("{path}.type"),
                &a.type_,
                NODE_ADDRESS_TYPES,
            ));
            continue;
        }
        let problem = if a.type_.ends_with("IP") {
            a.address.parse::<std::net::IpAddr>().is_err().then(|| {
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".to_string()
            })
        } else {
            dns1123_subdomain(&a.address)
        };
        if let Some(why) = problem {
            errs.push(FieldError::invalid(
                format!("{path}.address"),
                format!("\"{}\"", a.address),
                &why,
            ));
        }
    }
    if let Some(port) = status
        .daemon_endpoints
        .as_ref()
        .and_then(|d| d.kubelet_endpoint.as_ref())
        .map(|e| e.port)
        && !(0..=65535).contains(&port)
    {
        errs.push(FieldError::invalid(
            "status.daemonEndpoints.kubeletEndpoint.Port",
            port,
            "must be between 0 and 65535, inclusive",
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
