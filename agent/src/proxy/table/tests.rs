use serde_json::json;

use super::*;

fn service(spec: serde_json::Value) -> Arc<Service> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": spec,
        }))
        .unwrap(),
    )
}

fn slice(endpoints: serde_json::Value, ports: serde_json::Value) -> Arc<EndpointSlice> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "ns",
                "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        }))
        .unwrap(),
    )
}

fn node(name: &str, ip: &str, port: u16) -> Arc<Node> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name,
                "annotations": {PROXY_PORT_ANNOTATION: port.to_string()}},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
        }))
        .unwrap(),
    )
}

fn ep(ip: &str, node: &str, ready: bool, terminating: bool) -> serde_json::Value {
    json!({"addresses": [ip], "nodeName": node,
        "conditions": {"ready": ready, "serving": ready || terminating, "terminating": terminating}})
}

fn web() -> Vec<Frontend> {
    build(
        "n1",
        &[service(
            json!({"type": "NodePort", "clusterIP": "10.96.0.5",
            "ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"}]}),
        )],
        &[slice(
            json!([
                ep("172.17.0.2", "n1", true, false),
                ep("172.17.0.3", "n2", true, false),
                ep("172.17.0.4", "n2", false, false),
                ep("172.17.0.5", "n1", true, true)
            ]),
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        )],
        &[node("n1", "127.0.0.2", 4000), node("n2", "127.0.0.3", 4001)],
    )
}

fn addrs(eps: &[Endpoint]) -> Vec<String> {
    eps.iter().map(|e| e.addr.to_string()).collect()
}

#[test]
fn a_service_port_gets_its_slices_endpoints_with_routes() {
    let f = web();
    assert_eq!(f.len(), 1);
    let f = &f[0];
    assert_eq!(f.key, "ns/web:http");
    assert_eq!(f.node_port, Some(30080));
    assert_eq!(f.cluster, Some("10.96.0.5:80".parse().unwrap()));
    assert_eq!(f.endpoints.len(), 4);
    assert_eq!(f.endpoints[0].route, Route::Local);
    assert_eq!(
        f.endpoints[1].route,
        Route::Via {
            addr: "127.0.0.3:4001".parse().unwrap(),
            node: "n2".into(),
        }
    );
    assert!(f.has_local("172.17.0.2:8080".parse().unwrap()));
    assert!(!f.has_local("172.17.0.3:8080".parse().unwrap()));
}

#[test]
fn only_ready_endpoints_get_new_connections_in_turn() {
    let f = &web()[0];
    let none = |_: SocketAddr| false;
    assert_eq!(
        addrs(&f.candidates(false, 0, None, &none)),
        ["172.17.0.2:8080", "172.17.0.3:8080"]
    );
    assert_eq!(
        addrs(&f.candidates(false, 1, None, &none)),
        ["172.17.0.3:8080", "172.17.0.2:8080"]
    );
    // externalTrafficPolicy: Local keeps to this node's endpoints.
    assert_eq!(
        addrs(&f.candidates(true, 1, None, &none)),
        ["172.17.0.2:8080"]
    );
}

#[test]
fn affinity_goes_first_and_failed_endpoints_last() {
    let f = &web()[0];
    let sticky = Some("172.17.0.3:8080".parse().unwrap());
    assert_eq!(
        addrs(&f.candidates(false, 0, sticky, &|_| false)),
        ["172.17.0.3:8080", "172.17.0.2:8080"]
    );
    let failed = |a: SocketAddr| a.to_string() == "172.17.0.3:8080";
    assert_eq!(
        addrs(&f.candidates(false, 1, None, &failed)),
        ["172.17.0.2:8080", "172.17.0.3:8080"]
    );
}

#[test]
fn terminating_endpoints_serve_only_when_nothing_is_ready() {
    let f = &build(
        "n1",
        &[service(
            json!({"type": "ClusterIP", "clusterIP": "10.96.0.5",
            "ports": [{"port": 53, "protocol": "UDP"}]}),
        )],
        &[slice(
            json!([
                ep("172.17.0.5", "n1", true, true),
                ep("172.17.0.4", "n1", false, false)
            ]),
            json!([{"name": "", "port": 5353, "protocol": "UDP"}]),
        )],
        &[],
    )[0];
    assert_eq!(f.key, "ns/web:53");
    assert_eq!(f.protocol, Protocol::Udp);
    assert_eq!(f.node_port, None, "a ClusterIP service has no node port");
    assert_eq!(
        addrs(&f.candidates(false, 0, None, &|_| false)),
        ["172.17.0.5:5353"]
    );
}

#[test]
fn endpoints_on_nodes_without_a_tunnel_and_odd_input_are_left_out() {
    let f = build(
        "n1",
        &[service(json!({"type": "NodePort", "clusterIP": "None",
            "ports": [{"port": 80, "nodePort": 30081}, {"port": 81, "protocol": "SCTP"}]}))],
        &[slice(
            json!([
                ep("172.17.0.3", "n9", true, false),
                ep("not-an-ip", "n1", true, false)
            ]),
            json!([{"port": 8080}]),
        )],
        &[],
    );
    assert_eq!(f.len(), 1, "SCTP is not proxied");
    assert!(f[0].endpoints.is_empty());
    assert_eq!(f[0].cluster, None, "headless");
}

#[test]
fn a_service_an_autoscaler_wakes_from_zero_holds_its_connections() {
    let mut svc = (*service(json!({"clusterIP": "10.96.0.5", "ports": [
        {"name": "http", "port": 80, "protocol": "TCP"},
        {"name": "metrics", "port": 9090, "protocol": "TCP"},
        {"name": "dns", "port": 53, "protocol": "UDP"}]})))
    .clone();
    let plain = build("n1", &[Arc::new(svc.clone())], &[], &[]);
    assert!(plain.iter().all(|f| f.activator.is_none()));
    svc.metadata.annotations = Some(
        [(
            tugboat_api::metrics::ACTIVATOR_ANNOTATION.to_string(),
            "web".to_string(),
        )]
        .into(),
    );
    let held = build("n1", &[Arc::new(svc)], &[], &[]);
    let by_key = |k: &str| held.iter().find(|f| f.key == k).unwrap().activator.clone();
    let http = by_key("ns/web:http").unwrap();
    assert_eq!(
        (http.namespace.as_str(), http.service.as_str(), http.http),
        ("ns", "web", true)
    );
    assert!(!by_key("ns/web:metrics").unwrap().http);
    assert!(!by_key("ns/web:dns").unwrap().http);
}
