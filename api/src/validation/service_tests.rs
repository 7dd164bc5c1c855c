//! One test per rule of [`super`], on Services defaulted as admission defaults them.

use k8s_openapi::api::core::v1::Service;
use serde_json::{Value, json};

use super::*;
use crate::defaults;

fn svc(spec: Value) -> Service {
    let mut s: Service = serde_json::from_value(
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec}),
    )
    .unwrap();
    defaults::service(&mut s);
    s
}

fn errors(spec: Value) -> Vec<String> {
    service(&svc(spec))
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn fields(spec: Value) -> Vec<String> {
    service(&svc(spec)).into_iter().map(|e| e.field).collect()
}

#[test]
fn a_plain_cluster_ip_service_is_valid_and_defaulted_like_kubernetes() {
    let s = svc(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
    assert_eq!(service(&s), Vec::new());
    let spec = s.spec.unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Cluster"));
    assert_eq!(spec.external_traffic_policy, None);
    assert_eq!(spec.ip_families, Some(vec!["IPv4".to_string()]));
    assert_eq!(spec.ip_family_policy.as_deref(), Some("SingleStack"));
    let port = &spec.ports.unwrap()[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert_eq!(port.target_port, Some(IntOrString::Int(80)));
}

#[test]
fn node_port_and_load_balancer_services_get_their_own_defaults() {
    let np = svc(json!({"type": "NodePort", "ports": [{"port": 80, "targetPort": "http"}]}))
        .spec
        .unwrap();
    assert_eq!(np.external_traffic_policy.as_deref(), Some("Cluster"));
    assert_eq!(np.allocate_load_balancer_node_ports, None);
    assert_eq!(
        np.ports.unwrap()[0].target_port,
        Some(IntOrString::String("http".into()))
    );
    let lb = svc(json!({"type": "LoadBalancer", "ports": [{"port": 80}]}))
        .spec
        .unwrap();
    assert_eq!(lb.allocate_load_balancer_node_ports, Some(true));
    let sticky = svc(json!({"sessionAffinity": "ClientIP", "ports": [{"port": 80}]}))
        .spec
        .unwrap();
    assert_eq!(
        sticky
            .session_affinity_config
            .and_then(|c| c.client_ip)
            .and_then(|c| c.timeout_seconds),
        Some(10800)
    );
}

#[test]
fn the_type_must_be_one_tugboat_serves() {
    assert_eq!(
        errors(json!({"type": "Magic", "ports": [{"port": 80}]})),
        [
            "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"LoadBalancer\", \"NodePort\""
        ]
    );
    let external = errors(json!({"type": "ExternalName", "externalName": "example.com"}));
    assert_eq!(external.len(), 1);
    assert!(
        external[0].contains("ExternalName Services (a DNS alias) are not supported"),
        "{external:?}"
    );
}

#[test]
fn ports_are_required_unless_headless() {
    assert_eq!(errors(json!({})), ["spec.ports: Required value"]);
    assert_eq!(errors(json!({"clusterIP": "None"})), Vec::<String>::new());
}

#[test]
fn port_numbers_must_be_ports() {
    assert_eq!(
        errors(json!({"ports": [{"port": 70000, "targetPort": 8080}]})),
        ["spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"]
    );
    assert_eq!(
        fields(json!({"ports": [{"port": 80, "targetPort": 70000}]})),
        ["spec.ports[0].targetPort"]
    );
}

#[test]
fn a_named_target_port_must_be_an_iana_service_name() {
    assert_eq!(
        fields(json!({"ports": [{"port": 80, "targetPort": "http"}]})),
        Vec::<String>::new()
    );
    let errs = errors(json!({"ports": [{"port": 80, "targetPort": "Web_Port"}]}));
    assert_eq!(
        errs,
        [
            "spec.ports[0].targetPort: Invalid value: \"Web_Port\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
        ]
    );
    assert_eq!(
        fields(json!({"ports": [{"port": 80, "targetPort": "1234"}]})),
        ["spec.ports[0].targetPort"]
    );
}

#[test]
fn several_ports_need_unique_dns_label_names() {
    assert_eq!(
        errors(json!({"ports": [{"name": "http", "port": 80}, {"port": 443}]})),
        ["spec.ports[1].name: Required value"]
    );
    assert_eq!(
        errors(json!({"ports": [{"name": "http", "port": 80}, {"name": "http", "port": 443}]})),
        ["spec.ports[1].name: Duplicate value: \"http\""]
    );
    assert_eq!(
        fields(json!({"ports": [{"name": "Http", "port": 80}]})),
        ["spec.ports[0].name"]
    );
}

#[test]
fn the_same_port_and_protocol_twice_is_refused() {
    assert_eq!(
        errors(json!({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]})),
        ["spec.ports[1]: Duplicate value: \"80/TCP\""]
    );
    assert_eq!(
        fields(
            json!({"ports": [{"name": "a", "port": 53}, {"name": "b", "port": 53, "protocol": "UDP"}]})
        ),
        Vec::<String>::new()
    );
}

#[test]
fn only_tcp_and_udp_are_served() {
    let errs = errors(json!({"ports": [{"port": 80, "protocol": "SCTP"}]}));
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with(
            "spec.ports[0].protocol: Unsupported value: \"SCTP\": SCTP is not supported"
        ),
        "{errs:?}"
    );
    assert_eq!(
        fields(json!({"ports": [{"port": 80, "protocol": "ICMP"}]})),
        ["spec.ports[0].protocol"]
    );
}

#[test]
fn node_ports_only_for_node_port_and_load_balancer_services() {
    assert_eq!(
        errors(json!({"ports": [{"port": 80, "nodePort": 30080}]})),
        ["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
    );
    assert_eq!(
        fields(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]})),
        Vec::<String>::new()
    );
    assert_eq!(
        fields(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 70000}]})),
        ["spec.ports[0].nodePort"]
    );
}

#[test]
fn the_same_node_port_twice_in_one_service_is_refused() {
    assert_eq!(
        errors(json!({"type": "NodePort", "ports": [
            {"name": "a", "port": 80, "nodePort": 30080},
            {"name": "b", "port": 81, "nodePort": 30080}
        ]})),
        ["spec.ports[1].nodePort: Duplicate value: 30080"]
    );
}

#[test]
fn the_cluster_ip_is_empty_none_or_an_ipv4_address() {
    for ok in ["", "None", "10.96.0.10"] {
        assert_eq!(
            fields(json!({"clusterIP": ok, "ports": [{"port": 80}]})),
            Vec::<String>::new(),
            "{ok}"
        );
    }
    assert_eq!(
        fields(json!({"clusterIP": "10.96.0.300", "ports": [{"port": 80}]})),
        ["spec.clusterIPs[0]"]
    );
    assert_eq!(
        fields(json!({"clusterIP": "fd00::10", "ports": [{"port": 80}]})),
        ["spec.clusterIPs[0]"]
    );
    assert_eq!(
        fields(json!({"clusterIPs": ["10.96.0.1", "10.96.0.2"], "ports": [{"port": 80}]})),
        ["spec.clusterIPs"]
    );
    assert_eq!(
        fields(json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]})),
        ["spec.clusterIPs[0]"]
    );
}

#[test]
fn only_single_stack_ipv4_is_served() {
    assert_eq!(
        fields(json!({"ipFamilies": ["IPv6"], "ports": [{"port": 80}]})),
        ["spec.ipFamilies[0]"]
    );
    assert_eq!(
        fields(json!({"ipFamilyPolicy": "RequireDualStack", "ports": [{"port": 80}]})),
        ["spec.ipFamilyPolicy"]
    );
}

#[test]
fn the_cluster_ip_may_not_change_once_set() {
    let old = svc(json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}));
    let mut new = svc(json!({"clusterIP": "10.96.0.11", "ports": [{"port": 80}]}));
    defaults::service_update(&mut new, &old);
    let errs: Vec<String> = service_update(&old, &new)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errs,
        ["spec.clusterIPs[0]: Invalid value: \"10.96.0.11\": may not change once set"]
    );
    let headless = svc(json!({"clusterIP": "None"}));
    let mut unheaded = svc(json!({"clusterIP": "10.96.0.12", "ports": [{"port": 80}]}));
    defaults::service_update(&mut unheaded, &headless);
    assert_eq!(service_update(&headless, &unheaded).len(), 1);
    // Left out, the allocated address is kept.
    let mut omitted = svc(json!({"ports": [{"port": 80}]}));
    defaults::service_update(&mut omitted, &old);
    defaults::service(&mut omitted);
    assert_eq!(service_update(&old, &omitted), Vec::new());
    assert_eq!(
        omitted.spec.unwrap().cluster_ips,
        Some(vec!["10.96.0.10".to_string()])
    );
}

#[test]
fn an_update_keeps_node_ports_left_out_and_drops_them_for_cluster_ip() {
    let old = svc(
        json!({"type": "NodePort", "clusterIP": "10.96.0.10", "ports": [
            {"name": "http", "port": 80, "nodePort": 30080},
            {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}
        ]}),
    );
    let mut new = svc(json!({"type": "NodePort", "ports": [
        {"name": "http", "port": 8080},
        {"name": "dns", "port": 53, "protocol": "UDP"}
    ]}));
    defaults::service_update(&mut new, &old);
    let ports: Vec<Option<i32>> = new
        .spec
        .as_ref()
        .unwrap()
        .ports
        .iter()
        .flatten()
        .map(|p| p.node_port)
        .collect();
    assert_eq!(ports, [Some(30080), Some(30053)]);
    let mut back = old.clone();
    back.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
    defaults::service_update(&mut back, &old);
    defaults::service(&mut back);
    let spec = back.spec.as_ref().unwrap();
    assert!(spec.ports.iter().flatten().all(|p| p.node_port.is_none()));
    assert_eq!(spec.external_traffic_policy, None);
    assert_eq!(service(&back), Vec::new());
}

#[test]
fn session_affinity_and_its_timeout_are_checked() {
    assert_eq!(
        fields(json!({"sessionAffinity": "Cookie", "ports": [{"port": 80}]})),
        ["spec.sessionAffinity"]
    );
    assert_eq!(
        errors(json!({"sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}, "ports": [{"port": 80}]})),
        [
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 0: must be greater than 0 and less than 86400"
        ]
    );
    assert_eq!(
        fields(json!({"sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 86401}}, "ports": [{"port": 80}]})),
        ["spec.sessionAffinityConfig.clientIP.timeoutSeconds"]
    );
}

#[test]
fn traffic_policies_are_cluster_or_local_and_external_only_when_reachable() {
    assert_eq!(
        fields(json!({"internalTrafficPolicy": "Nearby", "ports": [{"port": 80}]})),
        ["spec.internalTrafficPolicy"]
    );
    assert_eq!(
        errors(json!({"externalTrafficPolicy": "Local", "ports": [{"port": 80}]})),
        [
            "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for externally-accessible services"
        ]
    );
    assert_eq!(
        fields(
            json!({"type": "NodePort", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]})
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        fields(
            json!({"type": "NodePort", "externalTrafficPolicy": "Nearby", "ports": [{"port": 80}]})
        ),
        ["spec.externalTrafficPolicy"]
    );
}

#[test]
fn the_selector_is_a_label_map_and_the_name_a_dns_1035_label() {
    assert_eq!(
        fields(json!({"selector": {"bad key!": "x"}, "ports": [{"port": 80}]})),
        ["spec.selector"]
    );
    let mut s = svc(json!({"ports": [{"port": 80}]}));
    s.metadata.name = Some("1web".into());
    let errs: Vec<String> = service(&s).into_iter().map(|e| e.field).collect();
    assert_eq!(errs, ["metadata.name"]);
}
