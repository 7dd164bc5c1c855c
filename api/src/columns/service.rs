//! The columns of Services, Endpoints and EndpointSlices, as kubectl's
//! `printService`, `printEndpoints` and `printEndpointSlice` compute them.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Endpoints, LoadBalancerStatus, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};

use super::{Layout, age, labels_string, name, or_none};

/// How many addresses or ports a cell lists before `+ N more...`.
const LIST_MAX: usize = 3;
/// kubectl cuts load-balancer addresses to this width unless `-o wide`.
const LOAD_BALANCER_WIDTH: usize = 16;

pub(super) fn service_row(s: &Service, layout: &Layout) -> Vec<String> {
    let spec = s.spec.clone().unwrap_or_default();
    let cluster_ip = spec
        .cluster_ips
        .as_ref()
        .and_then(|ips| ips.first())
        .cloned()
        .unwrap_or_else(|| "<none>".to_string());
    let ports = port_string(spec.ports.as_deref().unwrap_or_default());
    let mut cells = vec![
        name(&s.metadata),
        spec.type_.clone().unwrap_or_default(),
        cluster_ip,
        external_ip(s, layout.wide),
        or_none(Some(&ports)),
        age(&s.metadata, layout),
    ];
    if layout.wide {
        cells.push(or_none(Some(&labels_string(spec.selector.as_ref()))));
    }
    cells
}

/// `80:30080/TCP,53/UDP`: each port, its node port when it has one, its protocol.
pub fn port_string(ports: &[ServicePort]) -> String {
    ports
        .iter()
        .map(|p| {
            let protocol = p.protocol.as_deref().unwrap_or("TCP");
            match p.node_port.filter(|n| *n > 0) {
                Some(n) => format!("{}:{n}/{protocol}", p.port),
                None => format!("{}/{protocol}", p.port),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// EXTERNAL-IP: the external IPs, and for a LoadBalancer its ingress addresses or
/// `<pending>` while it has none.
pub fn external_ip(s: &Service, wide: bool) -> String {
    let spec = s.spec.clone().unwrap_or_default();
    let external = spec.external_ips.clone().unwrap_or_default();
    match spec.type_.as_deref().unwrap_or("ClusterIP") {
        "ClusterIP" | "NodePort" if !external.is_empty() => external.join(","),
        "ClusterIP" | "NodePort" => "<none>".to_string(),
        "LoadBalancer" => {
            let status = s.status.as_ref().and_then(|st| st.load_balancer.as_ref());
            let lb = load_balancer_string(status, wide);
            if !external.is_empty() {
                let mut all: Vec<String> = if lb.is_empty() {
                    Vec::new()
                } else {
                    lb.split(',').map(str::to_string).collect()
                };
                all.extend(external);
                all.join(",")
            } else if lb.is_empty() {
                "<pending>".to_string()
            } else {
                lb
            }
        }
        "ExternalName" => spec.external_name.clone().unwrap_or_default(),
        _ => "<unknown>".to_string(),
    }
}

/// The ingress IPs (or host names) of a load balancer, sorted, cut unless wide.
pub fn load_balancer_string(status: Option<&LoadBalancerStatus>, wide: bool) -> String {
    let addresses: BTreeSet<String> = status
        .and_then(|s| s.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| {
            i.ip.clone()
                .filter(|ip| !ip.is_empty())
                .or_else(|| i.hostname.clone().filter(|h| !h.is_empty()))
        })
        .collect();
    let joined = addresses.into_iter().collect::<Vec<_>>().join(",");
    if !wide && joined.chars().count() > LOAD_BALANCER_WIDTH {
        let cut: String = joined.chars().take(LOAD_BALANCER_WIDTH - 3).collect();
        format!("{cut}...")
    } else {
        joined
    }
}

pub(super) fn endpoints_row(e: &Endpoints, layout: &Layout) -> Vec<String> {
    vec![
        name(&e.metadata),
        endpoints_string(e),
        age(&e.metadata, layout),
    ]
}

/// `10.0.0.1:80,10.0.0.2:80 + 1 more...`: the first three ready addresses with each
/// port (kubectl's `formatEndpoints`).
pub fn endpoints_string(e: &Endpoints) -> String {
    let subsets = e.subsets.as_deref().unwrap_or_default();
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut list = Vec::new();
    let mut count = 0;
    for ss in subsets {
        let addresses = ss.addresses.as_deref().unwrap_or_default();
        let ports = ss.ports.as_deref().unwrap_or_default();
        if ports.is_empty() {
            count += addresses.len();
            list.extend(addresses.iter().map(|a| a.ip.clone()));
            continue;
        }
        for p in ports {
            count += addresses.len();
            list.extend(addresses.iter().map(|a| host_port(&a.ip, p.port)));
        }
    }
    let more = list.len() > LIST_MAX;
    list.truncate(LIST_MAX);
    let text = list.join(",");
    if more {
        format!("{text} + {} more...", count - LIST_MAX)
    } else {
        text
    }
}

fn host_port(ip: &str, port: i32) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

pub(super) fn endpoint_slice_row(s: &EndpointSlice, layout: &Layout) -> Vec<String> {
    vec![
        name(&s.metadata),
        s.address_type.clone(),
        slice_ports_string(s.ports.as_deref().unwrap_or_default()),
        slice_endpoints_string(&s.endpoints),
        age(&s.metadata, layout),
    ]
}

/// A slice's PORTS: numbers (or names, or `*`), the first three.
pub fn slice_ports_string(ports: &[EndpointPort]) -> String {
    let list = ports.iter().map(|p| match (p.port, &p.name) {
        (Some(n), _) => n.to_string(),
        (None, Some(name)) => name.clone(),
        (None, None) => "*".to_string(),
    });
    with_more(list.collect())
}

/// A slice's ENDPOINTS: the first three addresses.
pub fn slice_endpoints_string(endpoints: &[Endpoint]) -> String {
    with_more(
        endpoints
            .iter()
            .flat_map(|e| e.addresses.iter().cloned())
            .collect(),
    )
}

/// kubectl's `listWithMoreString`.
fn with_more(mut list: Vec<String>) -> String {
    let count = list.len();
    if count > LIST_MAX {
        list.truncate(LIST_MAX);
        return format!("{} + {} more...", list.join(","), count - LIST_MAX);
    }
    if list.is_empty() {
        return "<unset>".to_string();
    }
    list.join(",")
}

#[cfg(test)]
mod tests {
    use crate::resource::{ENDPOINTS, ENDPOINTSLICES, SERVICES};
    use serde_json::json;

    use super::super::tests::layout;
    use super::super::{header, row};

    #[test]
    fn services_print_ports_with_node_ports_and_external_ips_like_kubectl() {
        let svc = json!({
            "metadata": {"name": "web", "creationTimestamp": "2026-01-01T11:59:00Z"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
                          {"name": "dns", "port": 53, "protocol": "UDP"}]}
        });
        let mut l = layout();
        assert_eq!(
            header(&SERVICES, &l),
            [
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE"
            ]
        );
        assert_eq!(
            row(&SERVICES, &svc, &l).unwrap(),
            [
                "web",
                "NodePort",
                "10.96.0.10",
                "<none>",
                "80:30080/TCP,53/UDP",
                "60s"
            ]
        );
        l.wide = true;
        assert_eq!(header(&SERVICES, &l).last().unwrap(), "SELECTOR");
        assert_eq!(row(&SERVICES, &svc, &l).unwrap().last().unwrap(), "app=web");
    }

    #[test]
    fn a_load_balancer_is_pending_until_it_has_an_ingress() {
        let mut lb = json!({
            "metadata": {"name": "lb"},
            "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.11"], "ports": [{"port": 443, "nodePort": 31443}]}
        });
        assert_eq!(row(&SERVICES, &lb, &layout()).unwrap()[3], "<pending>");
        lb["status"] =
            json!({"loadBalancer": {"ingress": [{"ip": "192.168.1.20"}, {"ip": "192.168.1.10"}]}});
        let mut l = layout();
        l.wide = true;
        assert_eq!(
            row(&SERVICES, &lb, &l).unwrap()[3],
            "192.168.1.10,192.168.1.20"
        );
        // kube-apiserver computes its Tables wide, so kubectl never cuts them.
        assert_eq!(
            row(&SERVICES, &lb, &layout()).unwrap()[3],
            "192.168.1.10,192.168.1.20"
        );
        let headless = json!({"metadata": {"name": "h"}, "spec": {"type": "ClusterIP", "clusterIPs": ["None"]}});
        assert_eq!(
            row(&SERVICES, &headless, &layout()).unwrap()[1..5],
            ["ClusterIP", "None", "<none>", "<none>"]
        );
    }

    #[test]
    fn endpoints_show_the_first_three_and_how_many_more() {
        let ep = json!({
            "metadata": {"name": "web"},
            "subsets": [{
                "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}, {"ip": "10.0.0.4"}],
                "ports": [{"port": 80}]
            }]
        });
        assert_eq!(header(&ENDPOINTS, &layout()), ["NAME", "ENDPOINTS", "AGE"]);
        assert_eq!(
            row(&ENDPOINTS, &ep, &layout()).unwrap()[1],
            "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 1 more..."
        );
        let none = json!({"metadata": {"name": "web"}});
        assert_eq!(row(&ENDPOINTS, &none, &layout()).unwrap()[1], "<none>");
    }

    #[test]
    fn endpoint_slices_show_type_ports_and_addresses() {
        let slice = json!({
            "metadata": {"name": "web-abcde"},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.1.5"]}, {"addresses": ["10.244.2.7"]}],
            "ports": [{"name": "http", "port": 8080}, {"name": "named"}]
        });
        assert_eq!(
            header(&ENDPOINTSLICES, &layout()),
            ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
        );
        assert_eq!(
            row(&ENDPOINTSLICES, &slice, &layout()).unwrap()[..4],
            ["web-abcde", "IPv4", "8080,named", "10.244.1.5,10.244.2.7"]
        );
        let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv4", "endpoints": []});
        assert_eq!(
            row(&ENDPOINTSLICES, &empty, &layout()).unwrap()[2..4],
            ["<unset>", "<unset>"]
        );
    }
}
