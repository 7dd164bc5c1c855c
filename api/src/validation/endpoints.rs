//! Endpoints and EndpointSlices, the basics of kube-apiserver's rules: addresses
//! are IPs of the slice's type, ports are ports with unique names, and the lists
//! are bounded as Kubernetes bounds them.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::Errors;
use super::meta::{NameRule, object_meta};
use super::names::{dns1123_label, dns1123_subdomain};
use crate::status::FieldError;

/// `maxEndpoints`, `maxAddresses` and `maxPorts` of the discovery API.
const MAX_ENDPOINTS: usize = 1000;
const MAX_ADDRESSES: usize = 100;
const MAX_PORTS: usize = 20000;
const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";

pub fn endpoint_slice(s: &EndpointSlice) -> Errors {
    let mut errs = object_meta(&s.metadata, true, NameRule::Subdomain);
    let kind = s.address_type.as_str();
    if kind.is_empty() {
        errs.push(FieldError::required("addressType"));
    } else if !ADDRESS_TYPES.contains(&kind) {
        errs.push(FieldError::not_supported(
            "addressType",
            kind,
            ADDRESS_TYPES,
        ));
    }
    if s.endpoints.len() > MAX_ENDPOINTS {
        errs.push(too_many("endpoints", s.endpoints.len(), MAX_ENDPOINTS));
    }
    for (i, e) in s.endpoints.iter().enumerate() {
        let path = format!("endpoints[{i}]");
        if e.addresses.is_empty() {
            errs.push(FieldError::required(format!("{path}.addresses")));
        } else if e.addresses.len() > MAX_ADDRESSES {
            errs.push(too_many(
                &format!("{path}.addresses"),
                e.addresses.len(),
                MAX_ADDRESSES,
            ));
        }
        for (j, a) in e.addresses.iter().enumerate() {
            let problem = match kind {
                "IPv4" => match a.parse::<Ipv4Addr>() {
                    Err(_) => Some("must be a valid IPv4 address".to_string()),
                    Ok(ip) => special_ip(ip.into()).map(str::to_string),
                },
                "IPv6" => match a.parse::<Ipv6Addr>() {
                    Err(_) => Some("must be a valid IPv6 address".to_string()),
                    Ok(ip) => special_ip(ip.into()).map(str::to_string),
                },
                "FQDN" => dns1123_subdomain(a),
                _ => None,
            };
            if let Some(why) = problem {
                errs.push(FieldError::invalid(
                    format!("{path}.addresses[{j}]"),
                    format!("\"{a}\""),
                    &why,
                ));
            }
        }
        if let Some(node) = e.node_name.as_deref()
            && let Some(why) = dns1123_subdomain(node)
        {
            errs.push(FieldError::invalid(
                format!("{path}.nodeName"),
                format!("\"{node}\""),
                &why,
            ));
        }
    }
    let ports = s.ports.as_deref().unwrap_or_default();
    if ports.len() > MAX_PORTS {
        errs.push(too_many("ports", ports.len(), MAX_PORTS));
    }
    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let path = format!("ports[{i}]");
        let name = p.name.as_deref().unwrap_or("");
        port_name(&mut errs, &path, name, &mut names);
        if let Some(port) = p.port
            && !(1..=65535).contains(&port)
        {
            errs.push(FieldError::invalid(
                format!("{path}.port"),
                port,
                PORT_RANGE,
            ));
        }
        protocol(&mut errs, &path, p.protocol.as_deref());
    }
    errs
}

pub fn endpoints(e: &Endpoints) -> Errors {
    let mut errs = object_meta(&e.metadata, true, NameRule::Subdomain);
    for (i, subset) in e.subsets.iter().flatten().enumerate() {
        let path = format!("subsets[{i}]");
        for (field, list) in [
            ("addresses", &subset.addresses),
            ("notReadyAddresses", &subset.not_ready_addresses),
        ] {
            for (j, a) in list.iter().flatten().enumerate() {
                match a.ip.parse::<IpAddr>() {
                    Err(_) => errs.push(FieldError::invalid(
                        format!("{path}.{field}[{j}].ip"),
                        format!("\"{}\"", a.ip),
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    )),
                    Ok(ip) => {
                        if let Some(why) = special_ip(ip) {
                            errs.push(FieldError::invalid(
                                format!("{path}.{field}[{j}].ip"),
                                format!("\"{}\"", a.ip),
                                why,
                            ));
                        }
                    }
                }
            }
        }
        let ports = subset.ports.as_deref().unwrap_or_default();
        let mut names = HashSet::new();
        for (j, p) in ports.iter().enumerate() {
            let pp = format!("{path}.ports[{j}]");
            let name = p.name.as_deref().unwrap_or("");
            if name.is_empty() && ports.len() > 1 {
                errs.push(FieldError::required(format!("{pp}.name")));
            }
            port_name(&mut errs, &pp, name, &mut names);
            if !(1..=65535).contains(&p.port) {
                errs.push(FieldError::invalid(
                    format!("{pp}.port"),
                    p.port,
                    PORT_RANGE,
                ));
            }
            protocol(&mut errs, &pp, p.protocol.as_deref());
        }
    }
    errs
}

fn port_name(errs: &mut Errors, path: &str, name: &str, names: &mut HashSet<String>) {
    if name.is_empty() {
        return;
    }
    if let Some(why) = dns1123_label(name) {
        errs.push(FieldError::invalid(
            format!("{path}.name"),
            format!("\"{name}\""),
            &why,
        ));
    } else if !names.insert(name.to_string()) {
        errs.push(FieldError {
            reason: "FieldValueDuplicate",
            field: format!("{path}.name"),
            message: format!("Duplicate value: \"{name}\""),
        });
    }
}

fn protocol(errs: &mut Errors, path: &str, protocol: Option<&str>) {
    if let Some(p) = protocol
        && !PROTOCOLS.contains(&p)
    {
        errs.push(FieldError::not_supported(
            format!("{path}.protocol"),
            p,
            PROTOCOLS,
        ));
    }
}

fn too_many(field: &str, n: usize, max: usize) -> FieldError {
    FieldError {
        reason: "FieldValueTooMany",
        field: field.to_string(),
        message: format!("Too many: {n}: must have at most {max} items"),
    }
}

/// Why an endpoint may not be at `ip` (Kubernetes' `ValidateEndpointIP`): a
/// Service's traffic must not be sent to the node itself or its link-local
/// neighbours (a cloud's metadata service, say) by whoever can write endpoints.
pub fn special_ip(ip: IpAddr) -> Option<&'static str> {
    let link_local_multicast = match ip {
        IpAddr::V4(v4) => v4.octets()[..3] == [224, 0, 0],
        IpAddr::V6(v6) => (v6.segments()[0] & 0xff0f) == 0xff02,
    };
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    if ip.is_unspecified() {
        Some("may not be unspecified (0.0.0.0)")
    } else if ip.is_loopback() {
        Some("may not be in the loopback range (127.0.0.0/8, ::1/128)")
    } else if link_local {
        Some("may not be in the link-local range (169.254.0.0/16, fe80::/10)")
    } else if link_local_multicast {
        Some("may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(errs: &Errors) -> Vec<String> {
        errs.iter().map(|e| e.field.clone()).collect()
    }

    #[test]
    fn a_slice_of_ready_ipv4_endpoints_is_valid() {
        let s: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-abcde", "namespace": "default"},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": true}, "nodeName": "node-1"}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }))
        .unwrap();
        assert_eq!(endpoint_slice(&s), Vec::new());
    }

    #[test]
    fn slice_addresses_must_be_of_its_type_and_ports_ports() {
        let s: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-abcde"},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["fd00::1"]}, {"addresses": []}],
            "ports": [{"name": "http", "port": 0}, {"name": "http", "protocol": "ICMP"}]
        }))
        .unwrap();
        assert_eq!(
            fields(&endpoint_slice(&s)),
            [
                "endpoints[0].addresses[0]",
                "endpoints[1].addresses",
                "ports[0].port",
                "ports[1].name",
                "ports[1].protocol"
            ]
        );
        let bad_type: EndpointSlice = serde_json::from_value(
            json!({"metadata": {"name": "x"}, "addressType": "IPX", "endpoints": []}),
        )
        .unwrap();
        assert_eq!(fields(&endpoint_slice(&bad_type)), ["addressType"]);
    }

    #[test]
    fn endpoints_need_ips_and_named_ports_when_several() {
        let e: Endpoints = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "subsets": [{
                "addresses": [{"ip": "10.0.0.1"}, {"ip": "nope"}],
                "ports": [{"name": "http", "port": 80}, {"port": 70000}]
            }]
        }))
        .unwrap();
        assert_eq!(
            fields(&endpoints(&e)),
            [
                "subsets[0].addresses[1].ip",
                "subsets[0].ports[1].name",
                "subsets[0].ports[1].port"
            ]
        );
    }

    #[test]
    fn endpoints_may_not_be_the_node_itself_or_its_link_local_neighbours() {
        for ip in [
            "127.0.0.1",
            "::1",
            "169.254.169.254",
            "fe80::1",
            "0.0.0.0",
            "224.0.0.5",
        ] {
            assert!(super::special_ip(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in ["10.1.2.3", "172.17.0.2", "192.168.1.1", "2001:db8::1"] {
            assert!(super::special_ip(ip.parse().unwrap()).is_none(), "{ip}");
        }
    }
}
