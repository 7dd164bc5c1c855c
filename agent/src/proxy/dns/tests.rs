use hickory_proto::op::Query;
use serde_json::json;

use super::*;

fn svc(name: &str, spec: serde_json::Value) -> Arc<Service> {
    Arc::new(
        serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "shop"}, "spec": spec}),
        )
        .unwrap(),
    )
}

fn slice(service: &str, ips: &[(&str, bool)]) -> Arc<EndpointSlice> {
    let eps: Vec<_> = ips
        .iter()
        .map(|(ip, ready)| json!({"addresses": [ip], "conditions": {"ready": ready}}))
        .collect();
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": format!("{service}-x"), "namespace": "shop",
                "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4", "endpoints": eps,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}))
        .unwrap(),
    )
}

fn table() -> Records {
    records(
        "cluster.local",
        &[
            svc(
                "web",
                json!({"clusterIP": "10.96.0.20",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}),
            ),
            svc(
                "db",
                json!({"clusterIP": "None",
                "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}),
            ),
        ],
        &[slice("db", &[("172.17.0.5", true), ("172.17.0.6", false)])],
    )
}

fn ask(name: &str, t: RecordType) -> Message {
    let mut q = Message::new();
    q.set_id(7)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    match answer(&table(), &q.to_vec().unwrap(), Transport::Udp) {
        Answer::Reply(b) => Message::from_vec(&b).unwrap(),
        other => panic!("{name}: {other:?}"),
    }
}

fn a_records(m: &Message) -> Vec<String> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_service_name_resolves_to_its_cluster_ip() {
    let m = ask("web.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(m.id(), 7);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.authoritative());
    assert_eq!(a_records(&m), ["10.96.0.20"]);
    let m = ask("WEB.Shop.svc.cluster.local", RecordType::A);
    assert_eq!(a_records(&m), ["10.96.0.20"], "names are case-insensitive");
}

#[test]
fn a_headless_service_resolves_to_its_ready_pods() {
    let m = ask("db.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(a_records(&m), ["172.17.0.5"], "not-ready pods are left out");
    let m = ask("172-17-0-5.db.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(a_records(&m), ["172.17.0.5"]);
}

#[test]
fn srv_records_name_the_port_and_target() {
    let m = ask("_http._tcp.web.shop.svc.cluster.local.", RecordType::SRV);
    let srv: Vec<(u16, String)> = m
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::SRV(s) => Some((s.port(), s.target().to_ascii())),
            _ => None,
        })
        .collect();
    assert_eq!(srv, [(80, "web.shop.svc.cluster.local.".to_string())]);
    assert_eq!(
        a_records(&Message::from_vec(&m.to_vec().unwrap()).unwrap()).len(),
        0
    );
    assert_eq!(m.additionals().len(), 1, "the target's address comes along");
}

#[test]
fn unknown_cluster_names_are_nxdomain_and_others_are_forwarded() {
    assert_eq!(
        ask("nope.shop.svc.cluster.local.", RecordType::A).response_code(),
        ResponseCode::NXDomain
    );
    let m = ask("web.shop.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(m.response_code(), ResponseCode::NoError, "the name exists");
    assert!(m.answers().is_empty());
    let mut q = Message::new();
    q.add_query(Query::query(
        Name::from_ascii("example.org.").unwrap(),
        RecordType::A,
    ));
    assert_eq!(
        answer(&table(), &q.to_vec().unwrap(), Transport::Udp),
        Answer::Forward
    );
    assert_eq!(answer(&table(), b"garbage", Transport::Udp), Answer::Drop);
}

#[test]
fn an_answer_too_large_for_udp_is_truncated_and_whole_over_tcp() {
    let ips: Vec<(String, bool)> = (1..=60).map(|i| (format!("172.17.1.{i}"), true)).collect();
    let ips: Vec<(&str, bool)> = ips.iter().map(|(ip, r)| (ip.as_str(), *r)).collect();
    let big = records(
        "cluster.local",
        &[svc(
            "many",
            json!({"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}),
        )],
        &[slice("many", &ips)],
    );
    let mut q = Message::new();
    q.set_id(9).add_query(Query::query(
        Name::from_ascii("many.shop.svc.cluster.local.").unwrap(),
        RecordType::A,
    ));
    let q = q.to_vec().unwrap();
    let Answer::Reply(udp) = answer(&big, &q, Transport::Udp) else {
        panic!("no UDP answer")
    };
    let udp = Message::from_vec(&udp).unwrap();
    assert!(udp.truncated(), "60 addresses do not fit in 512 bytes");
    assert!(udp.answers().is_empty());
    let Answer::Reply(tcp) = answer(&big, &q, Transport::Tcp) else {
        panic!("no TCP answer")
    };
    let tcp = Message::from_vec(&tcp).unwrap();
    assert!(!tcp.truncated());
    assert_eq!(tcp.answers().len(), 60);
}
