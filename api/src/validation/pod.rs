//! Pods: the spec (containers, init containers, node binding and selectors), each
//! container (ports, environment, resources, probes), and what may change on an
//! update.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{NameRule, labels, object_meta};
use super::names::{dns1123_label, dns1123_subdomain, env_var_name, port_name};
use super::{Errors, non_negative, positive};
use crate::status::FieldError;

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
    errs.extend(super::volumes::volumes(spec, path));
    errs
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
        IntOrString::String(s) => {
            if let Some(why) = port_name(s) {
                errs.push(FieldError::invalid(path, format!("\"{s}\""), &why));
            }
        }
        _ => {}
    }
}
