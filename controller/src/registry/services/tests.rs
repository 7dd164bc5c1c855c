//! The allocator on its own: what it fills in, what it refuses, and that reserving,
//! committing and dropping never hand a value out twice.

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::store::Key;
use crate::store::redb::RedbStore;

fn store() -> Arc<RedbStore> {
    Arc::new(RedbStore::in_memory(100).unwrap())
}

fn small() -> ServiceNetwork {
    ServiceNetwork {
        cidr: "10.0.0.0/29".parse().unwrap(),
        node_ports: "30000-30002".parse().unwrap(),
    }
}

fn node_port(name: &str, ports: Value) -> Value {
    json!({"metadata": {"name": name}, "spec": {"type": "NodePort", "clusterIP": "", "ports": ports}})
}

fn ip(svc: &Value) -> String {
    svc["spec"]["clusterIP"].as_str().unwrap_or("").to_string()
}

#[tokio::test]
async fn every_service_gets_its_own_address_and_ports_until_the_range_is_full() {
    let store = store();
    let a = Allocator::new(small());
    let mut seen = HashSet::new();
    // A /29: .0 and .7 are the ends, .1 is kept back: five to hand out.
    for i in 0..5 {
        let mut svc =
            json!({"metadata": {"name": format!("s{i}")}, "spec": {"ports": [{"port": 80}]}});
        a.reserve(&*store, &mut svc, None).await.unwrap().commit();
        let got = ip(&svc);
        assert!(
            !["10.0.0.0", "10.0.0.1", "10.0.0.7"].contains(&got.as_str()),
            "{got}"
        );
        assert!(seen.insert(got.clone()), "{got} handed out twice");
        assert_eq!(svc["spec"]["clusterIPs"], json!([got]));
    }
    let mut one_more = json!({"metadata": {"name": "x"}, "spec": {"ports": [{"port": 80}]}});
    let err = a.reserve(&*store, &mut one_more, None).await.err().unwrap();
    assert!(err.message.contains("range is full"), "{}", err.message);
    // The reserved first address may still be asked for by name.
    let mut kubernetes =
        json!({"metadata": {"name": "kubernetes"}, "spec": {"clusterIP": "10.0.0.1"}});
    a.reserve(&*store, &mut kubernetes, None)
        .await
        .unwrap()
        .commit();

    let mut ports = HashSet::new();
    let mut svc = node_port(
        "np",
        json!([{"name": "a", "port": 80}, {"name": "b", "port": 81}, {"name": "c", "port": 82}]),
    );
    svc["spec"]["clusterIP"] = json!("None");
    a.reserve(&*store, &mut svc, None).await.unwrap().commit();
    for p in svc["spec"]["ports"].as_array().unwrap() {
        let n = p["nodePort"].as_i64().unwrap();
        assert!((30000..=30002).contains(&n));
        assert!(ports.insert(n));
    }
    let mut full = node_port("np2", json!([{"port": 80}]));
    full["spec"]["clusterIP"] = json!("None");
    let err = a.reserve(&*store, &mut full, None).await.err().unwrap();
    assert!(
        err.message
            .contains("failed to allocate a nodePort: range is full"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_requested_value_must_be_in_range_and_free() {
    let store = store();
    let a = Allocator::new(ServiceNetwork::default());
    let mut first = node_port("a", json!([{"port": 80, "nodePort": 30080}]));
    first["spec"]["clusterIP"] = json!("10.96.0.10");
    a.reserve(&*store, &mut first, None).await.unwrap().commit();

    let mut again = node_port(
        "b",
        json!([{"port": 80}, {"name": "x", "port": 81, "nodePort": 30080}]),
    );
    again["spec"]["clusterIP"] = json!("10.96.0.10");
    let err = a.reserve(&*store, &mut again, None).await.err().unwrap();
    let causes: Vec<String> = err.causes.iter().map(ToString::to_string).collect();
    assert_eq!(
        causes,
        [
            "spec.clusterIPs[0]: Invalid value: \"10.96.0.10\": provided IP is already allocated",
            "spec.ports[1].nodePort: Invalid value: 30080: provided port is already allocated",
        ]
    );
    assert_eq!(err.code, 422);

    let mut outside = node_port("c", json!([{"port": 80, "nodePort": 40000}]));
    outside["spec"]["clusterIP"] = json!("10.1.0.5");
    let err = a.reserve(&*store, &mut outside, None).await.err().unwrap();
    let causes: Vec<String> = err.causes.iter().map(ToString::to_string).collect();
    assert_eq!(
        causes,
        [
            "spec.clusterIPs[0]: Invalid value: \"10.1.0.5\": provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/16",
            "spec.ports[0].nodePort: Invalid value: 40000: provided port is not in the valid range. The range of valid ports is 30000-32767",
        ]
    );
    // Nothing a refused reservation took stays taken.
    let mut retry = node_port("d", json!([{"port": 80, "nodePort": 30081}]));
    retry["spec"]["clusterIP"] = json!("10.96.0.11");
    a.reserve(&*store, &mut retry, None).await.unwrap().commit();
}

#[tokio::test]
async fn a_dropped_reservation_gives_back_and_a_commit_frees_what_the_old_object_held() {
    let store = store();
    let a = Allocator::new(small());
    let mut svc = node_port("a", json!([{"port": 80, "nodePort": 30000}]));
    svc["spec"]["clusterIP"] = json!("10.0.0.2");
    drop(a.reserve(&*store, &mut svc, None).await.unwrap());
    // Not committed (the store write failed): both free again.
    let mut svc = node_port("a", json!([{"port": 80, "nodePort": 30000}]));
    svc["spec"]["clusterIP"] = json!("10.0.0.2");
    a.reserve(&*store, &mut svc, None).await.unwrap().commit();

    // An update to ClusterIP (node ports dropped by admission) frees 30000 on commit.
    let mut update = svc.clone();
    update["spec"]["type"] = json!("ClusterIP");
    update["spec"]["ports"] = json!([{"port": 80}]);
    let reservation = a.reserve(&*store, &mut update, Some(&svc)).await.unwrap();
    let mut other = node_port("b", json!([{"port": 80, "nodePort": 30000}]));
    assert!(
        a.reserve(&*store, &mut other, None).await.is_err(),
        "a port is free only once its holder's update is stored"
    );
    reservation.commit();
    a.reserve(&*store, &mut other, None).await.unwrap().commit();
    assert_eq!(ip(&update), "10.0.0.2", "the address is kept");

    a.release(&update);
    let mut taker = json!({"metadata": {"name": "c"}, "spec": {"clusterIP": "10.0.0.2", "ports": [{"port": 80}]}});
    a.reserve(&*store, &mut taker, None).await.unwrap().commit();
}

#[tokio::test]
async fn the_allocations_are_rebuilt_from_the_stored_services() {
    let store = store();
    let stored = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "old", "namespace": "default"},
        "spec": {"type": "NodePort", "clusterIP": "10.0.0.3", "clusterIPs": ["10.0.0.3"],
            "ports": [{"port": 80, "nodePort": 30001}]}});
    store
        .create(&Key::new("services", Some("default"), "old"), stored)
        .await
        .unwrap();
    let a = Allocator::new(small());
    let mut svc = node_port("new", json!([{"port": 80, "nodePort": 30001}]));
    svc["spec"]["clusterIP"] = json!("10.0.0.3");
    let err = a.reserve(&*store, &mut svc, None).await.err().unwrap();
    assert_eq!(err.causes.len(), 2, "{}", err.message);
    for _ in 0..20 {
        let mut svc = node_port("new", json!([{"port": 80}]));
        let r = a.reserve(&*store, &mut svc, None).await.unwrap();
        assert_ne!(ip(&svc), "10.0.0.3");
        assert_ne!(svc["spec"]["ports"][0]["nodePort"], 30001);
        drop(r);
    }
}

#[tokio::test]
async fn concurrent_reservations_never_share_a_value() {
    let store = store();
    let a = Arc::new(Allocator::new(ServiceNetwork {
        cidr: "10.0.0.0/24".parse().unwrap(),
        node_ports: "30000-30199".parse().unwrap(),
    }));
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (a, store) = (a.clone(), store.clone());
        tasks.push(tokio::spawn(async move {
            let mut svc = node_port(
                &format!("s{i}"),
                json!([{"name": "a", "port": 80}, {"name": "b", "port": 81}]),
            );
            a.reserve(&*store, &mut svc, None).await.unwrap().commit();
            svc
        }));
    }
    let (mut ips, mut ports) = (HashSet::new(), HashSet::new());
    for t in tasks {
        let svc = t.await.unwrap();
        assert!(ips.insert(ip(&svc)));
        for p in svc["spec"]["ports"].as_array().unwrap() {
            assert!(ports.insert(p["nodePort"].as_i64().unwrap()));
        }
    }
    assert_eq!((ips.len(), ports.len()), (100, 200));
}

/// Two API servers on one store (several controllers on one etcd): each reads
/// what the other gave out before it reserves, so none is given out twice.
#[tokio::test]
async fn servers_sharing_a_store_never_hand_out_what_the_other_gave() {
    let store: Arc<dyn Store> = store();
    let servers = [Allocator::new(small()), Allocator::new(small())];
    for s in &servers {
        s.set_shared(Arc::clone(&store));
    }
    let mut seen = HashSet::new();
    for i in 0..5 {
        let a = &servers[i % 2];
        let mut svc =
            json!({"metadata": {"name": format!("s{i}")}, "spec": {"ports": [{"port": 80}]}});
        a.reserve(&*store, &mut svc, None).await.unwrap().commit();
        assert!(seen.insert(ip(&svc)), "{} handed out twice", ip(&svc));
        // Stored, as the registry does after reserving.
        store
            .create(
                &Key::new(SERVICES.store_name(), Some("default"), format!("s{i}")),
                svc,
            )
            .await
            .unwrap();
    }
    // Five addresses in all: both servers know they are gone.
    for a in &servers {
        let mut svc = json!({"metadata": {"name": "x"}, "spec": {"ports": [{"port": 80}]}});
        let err = a.reserve(&*store, &mut svc, None).await.err().unwrap();
        assert!(err.message.contains("range is full"), "{}", err.message);
    }
    // What one server frees, the other can give out at once.
    let key = Key::new(SERVICES.store_name(), Some("default"), "s0");
    let s0 = store.delete(&key, None).await.unwrap();
    servers[0].release(&s0.object);
    let freed = ip(&s0.object);
    let mut svc =
        json!({"metadata": {"name": "y"}, "spec": {"clusterIP": freed, "ports": [{"port": 80}]}});
    let again = eventually(|| {
        let mut svc = svc.clone();
        let store = Arc::clone(&store);
        let server = &servers[1];
        async move {
            let r = server.reserve(&*store, &mut svc, None).await.ok()?;
            r.commit();
            Some(svc)
        }
    })
    .await;
    svc = again;
    assert_eq!(ip(&svc), freed);
}

/// Polls `f` until it gives something, for up to 10 s.
async fn eventually<T, F, Fut>(f: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Two servers reserving at the same instant, with nothing stored yet: the
/// claims make every address and port go to one write only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_reserving_at_the_same_instant_never_take_the_same_value() {
    let store: Arc<dyn Store> = store();
    let servers = Arc::new([Allocator::new(small()), Allocator::new(small())]);
    for s in servers.iter() {
        s.set_shared(Arc::clone(&store));
    }
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..10 {
        let (servers, store) = (Arc::clone(&servers), Arc::clone(&store));
        writes.spawn(async move {
            let mut svc = node_port(&format!("s{i}"), json!([{"port": 80}]));
            svc["metadata"]["namespace"] = json!("default");
            let reserved = servers[i % 2].reserve(&*store, &mut svc, None).await;
            match reserved {
                Ok(r) => {
                    // Kept as a stored write keeps them (not stored here: the
                    // claims alone must keep the values apart).
                    std::mem::forget(r);
                    Ok(svc)
                }
                Err(e) => Err(e.message),
            }
        });
    }
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    let mut refused = 0;
    while let Some(done) = writes.join_next().await {
        match done.unwrap() {
            Ok(svc) => {
                assert!(ips.insert(ip(&svc)), "{} handed out twice", ip(&svc));
                let port = svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
                assert!(ports.insert(port), "node port {port} handed out twice");
            }
            Err(message) => {
                assert!(
                    message.contains("range is full") || message.contains("claimed"),
                    "{message}"
                );
                refused += 1;
            }
        }
    }
    // Three node ports in the range: three writes get one, the rest are refused.
    assert_eq!((ports.len(), refused), (3, 7));
    let (claimed, _) = store.list(CLAIMS, None).await.unwrap();
    assert_eq!(
        claimed.len(),
        6,
        "one claim per address and port handed out"
    );
}

#[tokio::test]
async fn a_failed_write_and_a_deleted_service_leave_no_claim() {
    let store: Arc<dyn Store> = store();
    let a = Allocator::new(small());
    a.set_shared(Arc::clone(&store));
    let claims_left = || {
        let store = Arc::clone(&store);
        async move { store.list(CLAIMS, None).await.unwrap().0.len() }
    };
    let mut svc = node_port("web", json!([{"port": 80}]));
    svc["metadata"]["namespace"] = json!("default");
    // The write failed: the reservation is dropped.
    drop(a.reserve(&*store, &mut svc.clone(), None).await.unwrap());
    eventually(|| async { (claims_left().await == 0).then_some(()) }).await;
    // Stored, then deleted.
    a.reserve(&*store, &mut svc, None).await.unwrap().commit();
    assert_eq!(claims_left().await, 2);
    a.release(&svc);
    eventually(|| async { (claims_left().await == 0).then_some(()) }).await;
}

#[tokio::test]
async fn stray_claims_are_removed_once_old_and_named_ones_are_kept() {
    let store: Arc<dyn Store> = store();
    let a = Allocator::new(small());
    a.set_shared(Arc::clone(&store));
    let mut svc = node_port("web", json!([{"port": 80}]));
    svc["metadata"]["namespace"] = json!("default");
    a.reserve(&*store, &mut svc, None).await.unwrap().commit();
    store
        .create(
            &Key::new(SERVICES.store_name(), Some("default"), "web"),
            svc.clone(),
        )
        .await
        .unwrap();
    let stray = |name: &str, at: &str| json!({"metadata": {"name": name, "creationTimestamp": at}, "service": "default/gone"});
    store
        .create(
            &Key::new(CLAIMS, None, "port-30002"),
            stray("port-30002", "2020-01-01T00:00:00Z"),
        )
        .await
        .ok();
    let young = Key::new(CLAIMS, None, "ip-10.0.0.6");
    store
        .create(
            &young,
            stray("ip-10.0.0.6", &tugboat_api::meta::now_rfc3339()),
        )
        .await
        .ok();
    let removed = remove_stray_claims(&*store, CLAIM_GRACE).await.unwrap();
    let (left, _) = store.list(CLAIMS, None).await.unwrap();
    let mut left: Vec<String> = left
        .iter()
        .map(|c| c.object["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    left.sort();
    let mut expected = vec![
        format!("ip-{}", ip(&svc)),
        format!("port-{}", svc["spec"]["ports"][0]["nodePort"]),
    ];
    // The young stray stays (its write may still be going on), unless the
    // Service took the same address.
    if ip(&svc) != "10.0.0.6" {
        expected.push("ip-10.0.0.6".to_string());
    }
    expected.sort();
    expected.dedup();
    let old_removed = usize::from(svc["spec"]["ports"][0]["nodePort"] != 30002);
    assert_eq!((removed, left), (old_removed, expected));
}
