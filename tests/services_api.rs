//! Services over the API, as kube-apiserver serves them: cluster IPs and node ports
//! assigned and never shared, 422s that name the field, allocations freed by
//! deletes (namespace deletion included) and type changes, kept across a restart;
//! and `tug get`/`tug describe` printing them as kubectl does.

use std::collections::HashSet;

use serde_json::{Value, json};
use tugboat_api::resource::{ENDPOINTSLICES, NAMESPACES, SERVICES};
use tugboat_api::{Client, ClientError, PatchType};
use tugboat_tests::{TestController, eventually, tug};

fn service(name: &str, kind: &str, ports: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"type": kind, "selector": {"app": name}, "ports": ports}
    })
}

async fn create(c: &Client, ns: &str, svc: &Value) -> Result<Value, ClientError> {
    c.create(&SERVICES, Some(ns), svc).await
}

fn node_ports(svc: &Value) -> Vec<i64> {
    svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["nodePort"].as_i64())
        .collect()
}

fn cluster_ip(svc: &Value) -> String {
    svc["spec"]["clusterIP"].as_str().unwrap_or("").to_string()
}

/// The causes of a 422, as `field: message`.
fn causes(err: &ClientError) -> Vec<String> {
    let api = err.api().expect("an API error");
    assert_eq!(api.code, 422, "{}", api.message);
    api.causes.iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn services_get_distinct_cluster_ips_and_node_ports() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for i in 0..10 {
        let svc = create(
            c,
            "default",
            &service(
                &format!("web{i}"),
                "NodePort",
                json!([{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]),
            ),
        )
        .await?;
        let ip: std::net::Ipv4Addr = cluster_ip(&svc).parse()?;
        assert_eq!(ip.octets()[..2], [10, 96], "{ip} is in 10.96.0.0/16");
        assert_ne!(
            ip,
            std::net::Ipv4Addr::new(10, 96, 0, 1),
            "kept for `kubernetes`"
        );
        assert_eq!(svc["spec"]["clusterIPs"], json!([ip.to_string()]));
        assert!(ips.insert(ip), "{ip} given twice");
        let np = node_ports(&svc);
        assert_eq!(np.len(), 2, "{svc}");
        for p in np {
            assert!((30000..=32767).contains(&p), "{p}");
            assert!(ports.insert(p), "{p} given twice");
        }
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster");
    }
    let plain = create(
        c,
        "default",
        &service("api", "ClusterIP", json!([{"port": 8080}])),
    )
    .await?;
    assert!(
        node_ports(&plain).is_empty(),
        "a ClusterIP Service has no node ports"
    );
    assert!(!ips.contains(&cluster_ip(&plain).parse()?));
    let headless = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "selector": {"app": "db"}}});
    assert_eq!(cluster_ip(&create(c, "default", &headless).await?), "None");
    tc.stop().await
}

#[tokio::test]
async fn conflicts_and_bad_ports_are_422s_naming_the_field() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    let mut first = service("a", "NodePort", json!([{"port": 80, "nodePort": 30080}]));
    first["spec"]["clusterIP"] = json!("10.96.0.50");
    create(c, "default", &first).await?;

    let mut taken = service(
        "b",
        "NodePort",
        json!([{"name": "web", "port": 80}, {"name": "alt", "port": 81, "nodePort": 30080}]),
    );
    taken["spec"]["clusterIP"] = json!("10.96.0.50");
    let err = create(c, "default", &taken).await.unwrap_err();
    assert_eq!(
        causes(&err),
        [
            "spec.clusterIPs[0]: Invalid value: \"10.96.0.50\": provided IP is already allocated",
            "spec.ports[1].nodePort: Invalid value: 30080: provided port is already allocated",
        ]
    );

    let outside = service("c", "NodePort", json!([{"port": 80, "nodePort": 40000}]));
    let err = create(c, "default", &outside).await.unwrap_err();
    assert_eq!(
        causes(&err),
        [
            "spec.ports[0].nodePort: Invalid value: 40000: provided port is not in the valid range. The range of valid ports is 30000-32767"
        ]
    );

    let mut far = service("d", "ClusterIP", json!([{"port": 80}]));
    far["spec"]["clusterIP"] = json!("10.1.2.3");
    assert_eq!(
        causes(&create(c, "default", &far).await.unwrap_err()),
        [
            "spec.clusterIPs[0]: Invalid value: \"10.1.2.3\": provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/16"
        ]
    );

    let twice = service(
        "e",
        "ClusterIP",
        json!([{"name": "a", "port": 80}, {"name": "b", "port": 80}]),
    );
    assert_eq!(
        causes(&create(c, "default", &twice).await.unwrap_err()),
        ["spec.ports[1]: Duplicate value: \"80/TCP\""]
    );
    // Nothing a refused create asked for was kept: the address is still free.
    let mut free = service("f", "ClusterIP", json!([{"port": 80}]));
    free["spec"]["clusterIP"] = json!("10.96.0.51");
    create(c, "default", &free).await?;

    // On update the cluster IP may not change.
    let mut moved = c.get(&SERVICES, Some("default"), "f").await?;
    moved["spec"]["clusterIP"] = json!("10.96.0.52");
    moved["spec"]["clusterIPs"] = json!(["10.96.0.52"]);
    let err = c
        .replace(&SERVICES, Some("default"), "f", &moved)
        .await
        .unwrap_err();
    assert_eq!(
        causes(&err),
        ["spec.clusterIPs[0]: Invalid value: \"10.96.0.52\": may not change once set"]
    );
    tc.stop().await
}

#[tokio::test]
async fn deletes_and_type_changes_free_node_ports_and_updates_keep_them() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    create(
        c,
        "default",
        &service(
            "a",
            "NodePort",
            json!([{"name": "http", "port": 80, "nodePort": 30080}]),
        ),
    )
    .await?;
    let again = service("b", "NodePort", json!([{"port": 80, "nodePort": 30080}]));
    assert!(create(c, "default", &again).await.is_err());

    // A replace that leaves the node port out keeps it.
    let replaced = c
        .replace(
            &SERVICES,
            Some("default"),
            "a",
            &service("a", "NodePort", json!([{"name": "http", "port": 8080}])),
        )
        .await?;
    assert_eq!(node_ports(&replaced), [30080]);

    c.delete(&SERVICES, Some("default"), "a").await?;
    let b = create(c, "default", &again).await?;
    assert_eq!(
        node_ports(&b),
        [30080],
        "the deleted Service's port is free"
    );

    // Back to ClusterIP: the node port goes, and another Service may take it.
    let patched = c
        .patch(
            &SERVICES,
            Some("default"),
            "b",
            &json!({"spec": {"type": "ClusterIP"}}),
            PatchType::Merge,
        )
        .await?;
    assert!(node_ports(&patched).is_empty(), "{patched}");
    assert!(patched["spec"].get("externalTrafficPolicy").is_none());
    create(
        c,
        "default",
        &service("c", "NodePort", json!([{"port": 80, "nodePort": 30080}])),
    )
    .await?;

    // Deleting a namespace frees what its Services held.
    c.create(&NAMESPACES, None, &json!({"metadata": {"name": "team"}}))
        .await?;
    create(
        c,
        "team",
        &service("t", "NodePort", json!([{"port": 80, "nodePort": 30090}])),
    )
    .await?;
    c.delete(&NAMESPACES, None, "team").await?;
    eventually("the namespace is gone", || async {
        match c.get(&NAMESPACES, None, "team").await {
            Err(e) if e.is_not_found() => Some(()),
            _ => None,
        }
    })
    .await?;
    create(
        c,
        "default",
        &service("d", "NodePort", json!([{"port": 80, "nodePort": 30090}])),
    )
    .await?;
    tc.stop().await
}

#[tokio::test]
async fn after_a_restart_nothing_held_is_handed_out_again() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Eleven addresses to hand out (a /28 without its ends and first), ten ports.
    let small = |c: &mut tugboat_controller::Config| {
        c.service_cidr = "10.100.0.0/28".parse().expect("a CIDR");
        c.node_port_range = "31000-31009".parse().expect("a range");
    };
    let tc = TestController::start_in_tuned(dir.path(), small).await?;
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for i in 0..5 {
        let svc = create(
            &tc.client,
            "default",
            &service(&format!("s{i}"), "NodePort", json!([{"port": 80}])),
        )
        .await?;
        assert!(ips.insert(cluster_ip(&svc)));
        assert!(ports.insert(node_ports(&svc)[0]));
    }
    tc.stop().await?;

    let tc = TestController::start_in_tuned(dir.path(), small).await?;
    for i in 5..10 {
        let svc = create(
            &tc.client,
            "default",
            &service(&format!("s{i}"), "NodePort", json!([{"port": 80}])),
        )
        .await?;
        let ip = cluster_ip(&svc);
        assert!(ips.insert(ip.clone()), "{ip} was held before the restart");
        let port = node_ports(&svc)[0];
        assert!(ports.insert(port), "{port} was held before the restart");
        assert!((31000..=31009).contains(&port));
    }
    // All ten node ports are held now.
    let err = create(
        &tc.client,
        "default",
        &service("full", "NodePort", json!([{"port": 80}])),
    )
    .await
    .unwrap_err();
    let message = err.api().map(|e| e.message.clone()).unwrap_or_default();
    assert!(message.contains("range is full"), "{message}");
    tc.stop().await
}

#[tokio::test]
async fn tug_prints_services_endpoint_slices_and_describes_like_kubectl() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    let dir = tempfile::tempdir()?;
    let mut svc = service(
        "web",
        "NodePort",
        json!([{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
               {"name": "dns", "port": 53, "protocol": "UDP"}]),
    );
    svc["spec"]["clusterIP"] = json!("10.96.0.10");
    create(c, "default", &svc).await?;
    c.create(
        &ENDPOINTSLICES,
        Some("default"),
        &json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-abcde", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }),
    )
    .await?;
    let s = tc.url.as_str();

    let out = tug(s, dir.path(), &["get", "svc"]).await?;
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ],
        "{out}"
    );
    let web = lines.iter().find(|l| l[0] == "web").expect("a web row");
    let dns_port = c.get(&SERVICES, Some("default"), "web").await?["spec"]["ports"][1]["nodePort"]
        .as_i64()
        .unwrap_or(0);
    assert_eq!(
        web[..5],
        [
            "web",
            "NodePort",
            "10.96.0.10",
            "<none>",
            &format!("80:30080/TCP,53:{dns_port}/UDP")
        ],
        "{out}"
    );

    let out = tug(s, dir.path(), &["get", "endpointslices"]).await?;
    assert!(out.starts_with("NAME"), "{out}");
    let row: Vec<&str> = out
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..4],
        ["web-abcde", "IPv4", "8080", "10.244.1.5"],
        "{out}"
    );

    let out = tug(s, dir.path(), &["describe", "svc", "web"]).await?;
    for line in [
        "Type:                     NodePort",
        "IP:                       10.96.0.10",
        "Port:                     http  80/TCP",
        "TargetPort:               8080/TCP",
        "NodePort:                 http  30080/TCP",
        "Endpoints:                10.244.1.5:8080",
        "Session Affinity:         None",
        "External Traffic Policy:  Cluster",
    ] {
        assert!(
            out.lines().any(|l| l.trim_end() == line),
            "{line:?} in\n{out}"
        );
    }
    tc.stop().await
}
