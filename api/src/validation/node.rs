//! Nodes: the name, and the status the controller connects to (addresses of the
//! right type, the agent's port).

use k8s_openapi::api::core::v1::Node;

use super::Errors;
use super::meta::{NameRule, object_meta};
use super::names::dns1123_subdomain;
use crate::status::FieldError;

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
