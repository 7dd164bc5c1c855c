//! Services, Endpoints and EndpointSlices, as kubectl's `describeService`,
//! `describeEndpoints` and `describeEndpointSliceV1` lay them out.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Endpoints, Event, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Writer, annotations, cell, events, labels, none_if_empty};
use crate::columns::{labels_string, load_balancer_string};

/// How many endpoints a port's `Endpoints:` line lists before `+ N more...`.
const LIST_MAX: usize = 3;

/// A Service with the EndpointSlices of its endpoints (`kubernetes.io/service-name`).
pub fn service(s: &Service, slices: &[EndpointSlice], evs: &[Event], now: Timestamp) -> String {
    let mut w = Writer::default();
    let m = &s.metadata;
    let spec = s.spec.clone().unwrap_or_default();
    w.line(0, &format!("Name:\t{}", m.name.as_deref().unwrap_or("")));
    w.line(
        0,
        &format!("Namespace:\t{}", m.namespace.as_deref().unwrap_or("")),
    );
    labels(&mut w, "Labels", m.labels.as_ref());
    annotations(&mut w, "Annotations", m.annotations.as_ref());
    w.line(
        0,
        &format!(
            "Selector:\t{}",
            none_if_empty(&cell(&labels_string(spec.selector.as_ref())))
        ),
    );
    w.line(
        0,
        &format!("Type:\t{}", spec.type_.as_deref().unwrap_or("")),
    );
    if let Some(policy) = &spec.ip_family_policy {
        w.line(0, &format!("IP Family Policy:\t{policy}"));
    }
    let families = spec.ip_families.clone().unwrap_or_default().join(",");
    w.line(0, &format!("IP Families:\t{}", none_if_empty(&families)));
    w.line(
        0,
        &format!("IP:\t{}", spec.cluster_ip.as_deref().unwrap_or("")),
    );
    let ips = spec.cluster_ips.clone().unwrap_or_default().join(",");
    w.line(0, &format!("IPs:\t{}", none_if_empty(&ips)));
    if let Some(external) = spec.external_ips.as_ref().filter(|e| !e.is_empty()) {
        w.line(0, &format!("External IPs:\t{}", external.join(",")));
    }
    let ingress = s.status.as_ref().and_then(|st| st.load_balancer.as_ref());
    if ingress
        .and_then(|lb| lb.ingress.as_ref())
        .is_some_and(|i| !i.is_empty())
    {
        w.line(
            0,
            &format!(
                "LoadBalancer Ingress:\t{}",
                load_balancer_string(ingress, true)
            ),
        );
    }
    for p in spec.ports.iter().flatten() {
        let name = p
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or("<unset>");
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        w.line(0, &format!("Port:\t{}\t{}/{protocol}", cell(name), p.port));
        let target = match &p.target_port {
            Some(IntOrString::Int(t)) => t.to_string(),
            Some(IntOrString::String(t)) => cell(t),
            None => p.port.to_string(),
        };
        w.line(0, &format!("TargetPort:\t{target}/{protocol}"));
        if let Some(n) = p.node_port.filter(|n| *n != 0) {
            w.line(0, &format!("NodePort:\t{}\t{n}/{protocol}", cell(name)));
        }
        w.line(
            0,
            &format!(
                "Endpoints:\t{}",
                slice_endpoints(slices, p.name.as_deref().unwrap_or(""))
            ),
        );
    }
    w.line(
        0,
        &format!(
            "Session Affinity:\t{}",
            spec.session_affinity.as_deref().unwrap_or("")
        ),
    );
    if let Some(policy) = spec
        .external_traffic_policy
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        w.line(0, &format!("External Traffic Policy:\t{policy}"));
    }
    if let Some(policy) = &spec.internal_traffic_policy {
        w.line(0, &format!("Internal Traffic Policy:\t{policy}"));
    }
    events(&mut w, evs, now);
    w.finish()
}

/// kubectl's `formatEndpointSlices`: the ready endpoints serving the port named
/// `port`, as `ip:port`, the first three.
pub fn slice_endpoints(slices: &[EndpointSlice], port: &str) -> String {
    if slices.is_empty() {
        return "<none>".to_string();
    }
    let mut list = Vec::new();
    let mut count = 0usize;
    for s in slices {
        let ready = s
            .endpoints
            .iter()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true));
        let ports = s.ports.as_deref().unwrap_or_default();
        if ports.is_empty() {
            for e in ready {
                count += 1;
                if let Some(a) = e.addresses.first() {
                    list.push(a.clone());
                }
            }
            continue;
        }
        for p in ports
            .iter()
            .filter(|p| p.name.as_deref().unwrap_or("") == port)
        {
            for e in ready.clone() {
                count += 1;
                if let (Some(a), Some(n)) = (e.addresses.first(), p.port) {
                    list.push(if a.contains(':') {
                        format!("[{a}]:{n}")
                    } else {
                        format!("{a}:{n}")
                    });
                }
            }
        }
    }
    let more = count > LIST_MAX;
    list.truncate(LIST_MAX);
    let text = list.join(",");
    if more {
        format!("{text} + {} more...", count - LIST_MAX)
    } else {
        text
    }
}

pub fn endpoints(e: &Endpoints, evs: &[Event], now: Timestamp) -> String {
    let mut w = Writer::default();
    let m = &e.metadata;
    w.line(0, &format!("Name:\t{}", m.name.as_deref().unwrap_or("")));
    w.line(
        0,
        &format!("Namespace:\t{}", m.namespace.as_deref().unwrap_or("")),
    );
    labels(&mut w, "Labels", m.labels.as_ref());
    annotations(&mut w, "Annotations", m.annotations.as_ref());
    w.line(0, "Subsets:");
    for ss in e.subsets.iter().flatten() {
        let ips = |list: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>| {
            let joined = list
                .iter()
                .flatten()
                .map(|a| a.ip.as_str())
                .collect::<Vec<_>>()
                .join(",");
            none_if_empty(&joined).to_string()
        };
        w.line(1, &format!("Addresses:\t{}", ips(&ss.addresses)));
        w.line(
            1,
            &format!("NotReadyAddresses:\t{}", ips(&ss.not_ready_addresses)),
        );
        let ports = ss.ports.as_deref().unwrap_or_default();
        if !ports.is_empty() {
            w.line(1, "Ports:");
            w.line(2, "Name\tPort\tProtocol");
            w.line(2, "----\t----\t--------");
            for p in ports {
                let name = p
                    .name
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .unwrap_or("<unset>");
                w.line(
                    2,
                    &format!(
                        "{}\t{}\t{}",
                        cell(name),
                        p.port,
                        p.protocol.as_deref().unwrap_or("TCP")
                    ),
                );
            }
        }
        w.line(0, "");
    }
    events(&mut w, evs, now);
    w.finish()
}

pub fn endpoint_slice(s: &EndpointSlice, evs: &[Event], now: Timestamp) -> String {
    let mut w = Writer::default();
    let m = &s.metadata;
    let unset = |v: Option<String>| v.unwrap_or_else(|| "<unset>".to_string());
    w.line(0, &format!("Name:\t{}", m.name.as_deref().unwrap_or("")));
    w.line(
        0,
        &format!("Namespace:\t{}", m.namespace.as_deref().unwrap_or("")),
    );
    labels(&mut w, "Labels", m.labels.as_ref());
    annotations(&mut w, "Annotations", m.annotations.as_ref());
    w.line(0, &format!("AddressType:\t{}", s.address_type));
    let ports = s.ports.as_deref().unwrap_or_default();
    if ports.is_empty() {
        w.line(0, "Ports: <unset>");
    } else {
        w.line(0, "Ports:");
        w.line(1, "Name\tPort\tProtocol");
        w.line(1, "----\t----\t--------");
        for p in ports {
            w.line(
                1,
                &format!(
                    "{}\t{}\t{}",
                    cell(&unset(p.name.clone().filter(|n| !n.is_empty()))),
                    unset(p.port.map(|n| n.to_string())),
                    p.protocol.as_deref().unwrap_or("TCP")
                ),
            );
        }
    }
    if s.endpoints.is_empty() {
        w.line(0, "Endpoints: <none>");
    } else {
        w.line(0, "Endpoints:");
        for e in &s.endpoints {
            w.line(1, &format!("- Addresses:\t{}", e.addresses.join(",")));
            w.line(2, "Conditions:");
            let ready = e.conditions.as_ref().and_then(|c| c.ready);
            w.line(
                3,
                &format!("Ready:\t{}", unset(ready.map(|r| r.to_string()))),
            );
            w.line(
                2,
                &format!("Hostname:\t{}", cell(&unset(e.hostname.clone()))),
            );
            if let Some(t) = &e.target_ref {
                w.line(
                    2,
                    &format!(
                        "TargetRef:\t{}/{}",
                        t.kind.as_deref().unwrap_or(""),
                        t.name.as_deref().unwrap_or("")
                    ),
                );
            }
            w.line(
                2,
                &format!("NodeName:\t{}", cell(&unset(e.node_name.clone()))),
            );
            w.line(2, &format!("Zone:\t{}", cell(&unset(e.zone.clone()))));
        }
    }
    events(&mut w, evs, now);
    w.finish()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::now;
    use super::*;

    fn slice() -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-abcde", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.244.1.5"], "conditions": {"ready": true}, "nodeName": "node-1",
                 "targetRef": {"kind": "Pod", "name": "web-1"}},
                {"addresses": ["10.244.2.7"], "conditions": {"ready": false}, "nodeName": "node-2"}
            ],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }))
        .unwrap()
    }

    #[test]
    fn a_service_is_described_with_its_ports_and_ready_endpoints() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "selector": {"app": "web"},
                "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                "sessionAffinity": "None", "externalTrafficPolicy": "Cluster",
                "internalTrafficPolicy": "Cluster",
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 30080}]}
        }))
        .unwrap();
        let text = service(&svc, &[slice()], &[], now());
        let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
        assert_eq!(
            lines,
            [
                "Name:                     web",
                "Namespace:                default",
                "Labels:                   <none>",
                "Annotations:              <none>",
                "Selector:                 app=web",
                "Type:                     NodePort",
                "IP Family Policy:         SingleStack",
                "IP Families:              IPv4",
                "IP:                       10.96.0.10",
                "IPs:                      10.96.0.10",
                "Port:                     http  80/TCP",
                "TargetPort:               8080/TCP",
                "NodePort:                 http  30080/TCP",
                "Endpoints:                10.244.1.5:8080",
                "Session Affinity:         None",
                "External Traffic Policy:  Cluster",
                "Internal Traffic Policy:  Cluster",
                "Events:                   <none>",
            ],
            "{text}"
        );
        assert_eq!(slice_endpoints(&[], "http"), "<none>");
    }

    #[test]
    fn a_slice_lists_its_ports_and_each_endpoint() {
        let text = endpoint_slice(&slice(), &[], now());
        assert!(text.contains("AddressType:  IPv4\n"), "{text}");
        assert!(text.contains("  http  8080  TCP\n"), "{text}");
        assert!(text.contains("  - Addresses:  10.244.1.5\n"), "{text}");
        assert!(
            text.contains("    Conditions:\n      Ready:    true\n    Hostname:   <unset>\n    TargetRef:  Pod/web-1\n    NodeName:   node-1\n"),
            "{text}"
        );
        assert!(text.contains("      Ready:   false\n"), "{text}");
    }

    #[test]
    fn endpoints_are_described_by_subset() {
        let e: Endpoints = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}]
        }))
        .unwrap();
        let text = endpoints(&e, &[], now());
        assert!(
            text.contains("Addresses:          10.0.0.1,10.0.0.2\n"),
            "{text}"
        );
        assert!(text.contains("NotReadyAddresses:  <none>\n"), "{text}");
        assert!(text.contains("http  80    TCP\n"), "{text}");
    }
}
