//! Services, in kube-apiserver's `ValidateService` words: the type, the cluster IP,
//! ports (numbers, names, protocols, target ports, node ports), session affinity,
//! traffic policies, IP families and the selector; and what an update may not
//! change. Whether a node port lies in the cluster's range, and whether an address
//! or port is free, is the controller's allocator's to say: this crate does not know
//! the cluster's configuration.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Errors;
use super::meta::{NameRule, labels, object_meta};
use super::names::{dns1123_label, port_name};
use crate::status::FieldError;

/// The types Tugboat serves (`ExternalName` is refused with its own message).
const TYPES: &[&str] = &["ClusterIP", "LoadBalancer", "NodePort"];
const PROTOCOLS: &[&str] = &["TCP", "UDP"];
const AFFINITIES: &[&str] = &["ClientIP", "None"];
const TRAFFIC_POLICIES: &[&str] = &["Cluster", "Local"];
const FAMILY_POLICIES: &[&str] = &["PreferDualStack", "RequireDualStack", "SingleStack"];
/// `MaxClientIPServiceAffinitySeconds`: one day.
const MAX_AFFINITY_SECONDS: i32 = 86400;
const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";

/// A Service on create (and, with [`service_update`], on update), after defaulting.
pub fn service(s: &Service) -> Errors {
    let mut errs = object_meta(&s.metadata, true, NameRule::Dns1035);
    let Some(spec) = &s.spec else {
        errs.push(FieldError::required("spec"));
        return errs;
    };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    match kind {
        "ClusterIP" | "NodePort" | "LoadBalancer" => {}
        "ExternalName" => {
            errs.push(FieldError {
                reason: "FieldValueNotSupported",
                field: "spec.type".into(),
                message: "Unsupported value: \"ExternalName\": ExternalName Services (a DNS alias) are not supported by Tugboat: supported values: \"ClusterIP\", \"LoadBalancer\", \"NodePort\"".into(),
            });
            return errs;
        }
        other => {
            errs.push(FieldError::not_supported("spec.type", other, TYPES));
            return errs;
        }
    }
    errs.extend(cluster_ips(spec, kind));
    errs.extend(ports(spec, kind));
    errs.extend(policies(spec, kind));
    errs.extend(labels(spec.selector.as_ref(), "spec.selector"));
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        if ip.parse::<Ipv4Addr>().is_err() {
            errs.push(FieldError::invalid(
                format!("spec.externalIPs[{i}]"),
                format!("\"{ip}\""),
                "must be a valid IPv4 address, (e.g. 10.9.8.7)",
            ));
        }
    }
    errs
}

/// What an update may not change: the cluster IP once set (a headless Service stays
/// headless).
pub fn service_update(old: &Service, new: &Service) -> Errors {
    let ips = |s: &Service| {
        let spec = s.spec.as_ref();
        spec.and_then(|s| s.cluster_ips.clone())
            .filter(|ips| !ips.is_empty())
            .or_else(|| {
                spec.and_then(|s| s.cluster_ip.clone())
                    .filter(|ip| !ip.is_empty())
                    .map(|ip| vec![ip])
            })
            .unwrap_or_default()
    };
    let (old_ips, new_ips) = (ips(old), ips(new));
    match (old_ips.first(), new_ips.first()) {
        (Some(before), after) if after != Some(before) => vec![FieldError::invalid(
            "spec.clusterIPs[0]",
            format!("\"{}\"", after.map(String::as_str).unwrap_or("")),
            "may not change once set",
        )],
        _ => Vec::new(),
    }
}

fn cluster_ips(spec: &ServiceSpec, kind: &str) -> Errors {
    let mut errs = Vec::new();
    let ips = spec.cluster_ips.clone().unwrap_or_default();
    if ips.len() > 1 {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            format!("{ips:?}"),
            "may hold only one address: dual-stack Services are not supported (the service network is IPv4)",
        ));
    }
    if let (Some(first), Some(ip)) = (ips.first(), spec.cluster_ip.as_deref())
        && first != ip
    {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            format!("{ips:?}"),
            "first value must match `clusterIP`",
        ));
    }
    for (i, ip) in ips.iter().enumerate() {
        let path = format!("spec.clusterIPs[{i}]");
        if ip == "None" {
            if kind != "ClusterIP" {
                errs.push(FieldError::invalid(
                    path,
                    "\"None\"",
                    &format!("may not be set to 'None' for {kind} services"),
                ));
            }
            continue;
        }
        if ip.parse::<Ipv4Addr>().is_err() {
            let why = if ip.parse::<std::net::Ipv6Addr>().is_ok() {
                "must be an IPv4 address: IPv6 Services are not supported"
            } else {
                "must be empty, 'None' or a valid IPv4 address, (e.g. 10.96.0.10)"
            };
            errs.push(FieldError::invalid(path, format!("\"{ip}\""), why));
        }
    }
    for (i, family) in spec.ip_families.iter().flatten().enumerate() {
        let path = format!("spec.ipFamilies[{i}]");
        match family.as_str() {
            "IPv4" if i == 0 => {}
            "IPv4" | "IPv6" => errs.push(FieldError::invalid(
                path,
                format!("\"{family}\""),
                "only IPv4 is supported: this cluster is not configured for dual-stack services",
            )),
            other => errs.push(FieldError::not_supported(path, other, &["IPv4", "IPv6"])),
        }
    }
    match spec.ip_family_policy.as_deref() {
        None | Some("SingleStack" | "PreferDualStack") => {}
        Some("RequireDualStack") => errs.push(FieldError::invalid(
            "spec.ipFamilyPolicy",
            "\"RequireDualStack\"",
            "this cluster is not configured for dual-stack services",
        )),
        Some(other) => errs.push(FieldError::not_supported(
            "spec.ipFamilyPolicy",
            other,
            FAMILY_POLICIES,
        )),
    }
    errs
}

fn is_headless(spec: &ServiceSpec) -> bool {
    spec.cluster_ip.as_deref() == Some("None")
}

fn ports(spec: &ServiceSpec, kind: &str) -> Errors {
    let mut errs = Vec::new();
    let ports: &[ServicePort] = spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() && !is_headless(spec) {
        errs.push(FieldError::required("spec.ports"));
    }
    let node_ports_allowed = matches!(kind, "NodePort" | "LoadBalancer");
    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    let mut node_ports = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        match p.name.as_deref().unwrap_or("") {
            "" if ports.len() > 1 => errs.push(FieldError::required(format!("{path}.name"))),
            "" => {}
            name => {
                if let Some(why) = dns1123_label(name) {
                    errs.push(FieldError::invalid(
                        format!("{path}.name"),
                        format!("\"{name}\""),
                        &why,
                    ));
                } else if !names.insert(name.to_string()) {
                    errs.push(duplicate(format!("{path}.name"), format!("\"{name}\"")));
                }
            }
        }
        if !(1..=65535).contains(&p.port) {
            errs.push(FieldError::invalid(
                format!("{path}.port"),
                p.port,
                PORT_RANGE,
            ));
        }
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        match protocol {
            "TCP" | "UDP" => {}
            "SCTP" => errs.push(FieldError {
                reason: "FieldValueNotSupported",
                field: format!("{path}.protocol"),
                message: "Unsupported value: \"SCTP\": SCTP is not supported by Tugboat's proxy: supported values: \"TCP\", \"UDP\"".into(),
            }),
            other => errs.push(FieldError::not_supported(
                format!("{path}.protocol"),
                other,
                PROTOCOLS,
            )),
        }
        match &p.target_port {
            Some(IntOrString::Int(t)) if !(1..=65535).contains(t) => {
                errs.push(FieldError::invalid(
                    format!("{path}.targetPort"),
                    t,
                    PORT_RANGE,
                ));
            }
            Some(IntOrString::String(name)) => {
                if let Some(why) = port_name(name) {
                    errs.push(FieldError::invalid(
                        format!("{path}.targetPort"),
                        format!("\"{name}\""),
                        &why,
                    ));
                }
            }
            _ => {}
        }
        if let Some(node_port) = p.node_port.filter(|n| *n != 0) {
            let field = format!("{path}.nodePort");
            if !node_ports_allowed {
                errs.push(FieldError::forbidden(
                    field,
                    &format!("may not be used when `type` is '{kind}'"),
                ));
            } else if !(1..=65535).contains(&node_port) {
                errs.push(FieldError::invalid(field, node_port, PORT_RANGE));
            } else if !node_ports.insert((node_port, protocol)) {
                errs.push(duplicate(field, node_port.to_string()));
            }
        }
        if !keys.insert((p.port, protocol)) {
            errs.push(duplicate(path, format!("\"{}/{protocol}\"", p.port)));
        }
    }
    errs
}

fn policies(spec: &ServiceSpec, kind: &str) -> Errors {
    let mut errs = Vec::new();
    match spec.session_affinity.as_deref().unwrap_or("None") {
        "None" => {
            if spec.session_affinity_config.is_some() {
                errs.push(FieldError::invalid(
                    "spec.sessionAffinityConfig",
                    "{...}",
                    "must not be set when session affinity is None",
                ));
            }
        }
        "ClientIP" => {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            if let Some(t) = timeout
                && !(1..=MAX_AFFINITY_SECONDS).contains(&t)
            {
                errs.push(FieldError::invalid(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    t,
                    &format!("must be greater than 0 and less than {MAX_AFFINITY_SECONDS}"),
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            "spec.sessionAffinity",
            other,
            AFFINITIES,
        )),
    }
    if let Some(policy) = spec.internal_traffic_policy.as_deref()
        && !TRAFFIC_POLICIES.contains(&policy)
    {
        errs.push(FieldError::not_supported(
            "spec.internalTrafficPolicy",
            policy,
            TRAFFIC_POLICIES,
        ));
    }
    let external = matches!(kind, "NodePort" | "LoadBalancer")
        || spec
            .external_ips
            .as_ref()
            .is_some_and(|ips| !ips.is_empty());
    if let Some(policy) = spec.external_traffic_policy.as_deref() {
        if !external {
            errs.push(FieldError::invalid(
                "spec.externalTrafficPolicy",
                format!("\"{policy}\""),
                "may only be set for externally-accessible services",
            ));
        } else if !TRAFFIC_POLICIES.contains(&policy) {
            errs.push(FieldError::not_supported(
                "spec.externalTrafficPolicy",
                policy,
                TRAFFIC_POLICIES,
            ));
        }
    }
    if spec.allocate_load_balancer_node_ports.is_some() && kind != "LoadBalancer" {
        errs.push(FieldError::forbidden(
            "spec.allocateLoadBalancerNodePorts",
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    errs
}

fn duplicate(field: String, value: String) -> FieldError {
    FieldError {
        reason: "FieldValueDuplicate",
        field,
        message: format!("Duplicate value: {value}"),
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
