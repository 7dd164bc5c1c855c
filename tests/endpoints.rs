//! The endpoints controller end to end, on an in-process controller with no
//! agent: pods are written through the API and their status set through
//! `/status` as an agent would, and the Service's EndpointSlices and Endpoints
//! are read back as the proxy and old clients read them.

use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use serde_json::{Value, json};
use tugboat_api::resource::{ENDPOINTS, ENDPOINTSLICES, PODS, SERVICES};
use tugboat_api::{Client, ListParams, PatchType};
use tugboat_tests::{TestController, eventually, within};

const NS: &str = "default";

fn service(name: &str, app: &str, target_port: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": NS, "labels": {"team": "blue"}},
        "spec": {
            "selector": {"app": app},
            "ports": [{"name": "http", "port": 80, "targetPort": target_port}]
        }
    })
}

/// A pod bound to `node-1` (so a delete is graceful and waits for an agent
/// that never comes), serving its port `http` on `port`.
fn pod(name: &str, app: &str, port: i64) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": app}},
        "spec": {
            "nodeName": "node-1",
            "containers": [{
                "name": "web", "image": "tugboat/sample:latest",
                "ports": [{"name": "http", "containerPort": port}]
            }]
        }
    })
}

/// Sets the pod Running at `ip`, Ready or not, as the agent reports it.
async fn set_status(c: &Client, name: &str, ip: &str, ready: bool) -> anyhow::Result<()> {
    let ready = if ready { "True" } else { "False" };
    c.patch_status(
        &PODS,
        Some(NS),
        name,
        &json!({"status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": ready}]
        }}),
        PatchType::Merge,
    )
    .await?;
    Ok(())
}

async fn running_pod(c: &Client, name: &str, app: &str, port: i64, ip: &str) -> anyhow::Result<()> {
    c.create(&PODS, Some(NS), &pod(name, app, port)).await?;
    set_status(c, name, ip, true).await
}

async fn slices_of(c: &Client, svc: &str) -> anyhow::Result<Vec<EndpointSlice>> {
    let params = ListParams {
        label_selector: Some(format!("kubernetes.io/service-name={svc}")),
        ..Default::default()
    };
    Ok(c.list_as(&ENDPOINTSLICES, Some(NS), &params).await?)
}

/// Every endpoint of the Service's slices, by pod name.
async fn endpoints_of(c: &Client, svc: &str) -> anyhow::Result<Vec<(String, Endpoint)>> {
    let mut out: Vec<(String, Endpoint)> = slices_of(c, svc)
        .await?
        .into_iter()
        .flat_map(|s| s.endpoints)
        .map(|e| {
            let name = e
                .target_ref
                .as_ref()
                .and_then(|r| r.name.clone())
                .unwrap_or_default();
            (name, e)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn conditions(e: &Endpoint) -> (Option<bool>, Option<bool>, Option<bool>) {
    let c = e.conditions.clone().unwrap_or_default();
    (c.ready, c.serving, c.terminating)
}

/// Waits until the Service's endpoints, by pod, are `want` (name, ready, serving, terminating).
async fn wait_endpoints(
    c: &Client,
    svc: &str,
    what: &str,
    want: &[(&str, bool, bool, bool)],
) -> anyhow::Result<Vec<(String, Endpoint)>> {
    eventually(what, || async {
        let got = endpoints_of(c, svc).await.ok()?;
        let seen: Vec<_> = got
            .iter()
            .map(|(n, e)| {
                let (r, s, t) = conditions(e);
                (
                    n.as_str(),
                    r == Some(true),
                    s == Some(true),
                    t == Some(true),
                )
            })
            .collect();
        (seen == want).then_some(got)
    })
    .await
}

#[tokio::test]
async fn ready_pods_become_a_slice_and_endpoints_that_follow_readiness_deletion_and_labels()
-> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    c.create(&SERVICES, Some(NS), &service("web", "web", json!(8080)))
        .await?;
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        running_pod(c, name, "web", 8080, &format!("10.1.0.{}", i + 1)).await?;
    }
    let eps = wait_endpoints(
        c,
        "web",
        "three ready endpoints",
        &[
            ("a", true, true, false),
            ("b", true, true, false),
            ("c", true, true, false),
        ],
    )
    .await?;
    assert_eq!(eps[0].1.addresses, ["10.1.0.1"]);
    assert_eq!(eps[0].1.node_name.as_deref(), Some("node-1"));
    let target = eps[0].1.target_ref.clone().unwrap();
    assert_eq!(
        (target.kind.as_deref(), target.namespace.as_deref()),
        (Some("Pod"), Some(NS))
    );
    assert!(target.uid.is_some_and(|u| !u.is_empty()));

    let slices = slices_of(c, "web").await?;
    assert_eq!(slices.len(), 1);
    let slice = &slices[0];
    let name = slice.metadata.name.clone().unwrap();
    assert!(name.starts_with("web-"), "{name}");
    assert_eq!(slice.address_type, "IPv4");
    let labels = slice.metadata.labels.clone().unwrap();
    assert_eq!(labels["kubernetes.io/service-name"], "web");
    assert_eq!(
        labels["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(labels["team"], "blue");
    let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Service", "web", Some(true))
    );
    let port = &slice.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.port, port.protocol.as_deref()),
        (Some("http"), Some(8080), Some("TCP"))
    );

    let ep: Endpoints = eventually("the Endpoints object with three addresses", || async {
        let ep: Endpoints = c.get_as(&ENDPOINTS, Some(NS), "web").await.ok()?;
        let n = ep.subsets.as_ref()?.first()?.addresses.as_ref()?.len();
        (n == 3).then_some(ep)
    })
    .await?;
    let subset = &ep.subsets.as_ref().unwrap()[0];
    assert_eq!(subset.ports.as_ref().unwrap()[0].port, 8080);
    assert_eq!(ep.metadata.labels.clone().unwrap()["team"], "blue");
    assert_eq!(
        ep.metadata.owner_references.as_ref().unwrap()[0].name,
        "web"
    );

    // A pod stops being ready: watch the slices and time how long it takes.
    let rv = slice.metadata.resource_version.clone();
    let mut watch = Box::pin(
        c.watch(
            &ENDPOINTSLICES,
            Some(NS),
            &ListParams::default(),
            rv.as_deref(),
        )
        .await?,
    );
    let started = Instant::now();
    set_status(c, "b", "10.1.0.2", false).await?;
    within("the slice to show b not ready", async {
        while let Some(ev) = watch.next().await {
            let Ok(ev) = ev else { continue };
            let Ok(s) = serde_json::from_value::<EndpointSlice>(ev.object) else {
                continue;
            };
            let b_ready = s
                .endpoints
                .iter()
                .find(|e| e.target_ref.as_ref().and_then(|r| r.name.as_deref()) == Some("b"))
                .and_then(|e| e.conditions.as_ref()?.ready);
            if b_ready == Some(false) {
                return;
            }
        }
    })
    .await?;
    eprintln!(
        "readiness change reached the EndpointSlice in {:?}",
        started.elapsed()
    );
    wait_endpoints(
        c,
        "web",
        "b not ready, not serving",
        &[
            ("a", true, true, false),
            ("b", false, false, false),
            ("c", true, true, false),
        ],
    )
    .await?;
    eventually("b under notReadyAddresses", || async {
        let ep: Endpoints = c.get_as(&ENDPOINTS, Some(NS), "web").await.ok()?;
        let s = ep.subsets.as_ref()?.first()?;
        let not_ready: Vec<_> = s
            .not_ready_addresses
            .iter()
            .flatten()
            .map(|a| a.ip.clone())
            .collect();
        (not_ready == ["10.1.0.2"] && s.addresses.as_ref()?.len() == 2).then_some(())
    })
    .await?;

    // A graceful delete: the pod stays (no agent confirms) with a deletionTimestamp.
    c.delete(&PODS, Some(NS), "a").await?;
    wait_endpoints(
        c,
        "web",
        "a terminating: not ready, still serving",
        &[
            ("a", false, true, true),
            ("b", false, false, false),
            ("c", true, true, false),
        ],
    )
    .await?;
    eventually("a out of the Endpoints object", || async {
        let ep: Endpoints = c.get_as(&ENDPOINTS, Some(NS), "web").await.ok()?;
        let s = ep.subsets.as_ref()?.first()?;
        let ready: Vec<_> = s.addresses.iter().flatten().map(|a| a.ip.clone()).collect();
        (ready == ["10.1.0.3"]).then_some(())
    })
    .await?;

    // Relabelled away from the Service: c leaves it.
    c.patch(
        &PODS,
        Some(NS),
        "c",
        &json!({"metadata": {"labels": {"app": "other"}}}),
        PatchType::Merge,
    )
    .await?;
    wait_endpoints(
        c,
        "web",
        "c gone from the slices",
        &[("a", false, true, true), ("b", false, false, false)],
    )
    .await?;
    assert_eq!(
        slices_of(c, "web").await?.len(),
        1,
        "still one slice: {name}"
    );
    assert_eq!(
        slices_of(c, "web").await?[0].metadata.name.as_deref(),
        Some(name.as_str())
    );
    tc.stop().await
}

#[tokio::test]
async fn a_named_target_port_resolves_per_pod_and_unchanged_slices_are_not_rewritten()
-> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    c.create(&SERVICES, Some(NS), &service("api", "api", json!("http")))
        .await?;
    running_pod(c, "old", "api", 8080, "10.2.0.1").await?;
    running_pod(c, "new", "api", 9090, "10.2.0.2").await?;
    let slices = eventually("a slice per resolved port", || async {
        let s = slices_of(c, "api").await.ok()?;
        (s.len() == 2 && s.iter().all(|s| s.endpoints.len() == 1)).then_some(s)
    })
    .await?;
    let mut by_port: Vec<_> = slices
        .iter()
        .map(|s| {
            (
                s.ports.as_ref().unwrap()[0].port.unwrap(),
                s.endpoints[0].addresses[0].clone(),
            )
        })
        .collect();
    by_port.sort();
    assert_eq!(
        by_port,
        [
            (8080, "10.2.0.1".to_string()),
            (9090, "10.2.0.2".to_string())
        ]
    );

    // A pod change that changes no endpoint writes no slice.
    let before: Vec<_> = slices
        .iter()
        .map(|s| s.metadata.resource_version.clone())
        .collect();
    c.patch(
        &PODS,
        Some(NS),
        "new",
        &json!({"metadata": {"annotations": {"touched": "yes"}}}),
        PatchType::Merge,
    )
    .await?;
    // A marker the controller writes after it has looked at the touched pod:
    // a new ready pod in the same port set.
    running_pod(c, "third", "api", 8080, "10.2.0.3").await?;
    eventually("the third pod in the 8080 slice", || async {
        let s = slices_of(c, "api").await.ok()?;
        s.iter().any(|s| s.endpoints.len() == 2).then_some(())
    })
    .await?;
    let after = slices_of(c, "api").await?;
    let untouched = after
        .iter()
        .find(|s| s.ports.as_ref().unwrap()[0].port == Some(9090))
        .unwrap();
    assert!(
        before.contains(&untouched.metadata.resource_version),
        "the 9090 slice was not rewritten"
    );
    tc.stop().await
}

#[tokio::test]
async fn deleting_the_service_removes_its_slices_and_endpoints_and_selectorless_ones_are_left_alone()
-> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    c.create(&SERVICES, Some(NS), &service("web", "web", json!(8080)))
        .await?;
    // A Service with no pods still gets one (empty) slice.
    let empty = eventually("an empty slice", || async {
        slices_of(c, "web").await.ok().filter(|s| s.len() == 1)
    })
    .await?;
    assert!(empty[0].endpoints.is_empty());
    assert_eq!(empty[0].ports.as_ref().unwrap()[0].port, Some(8080));
    running_pod(c, "a", "web", 8080, "10.3.0.1").await?;
    wait_endpoints(c, "web", "one endpoint", &[("a", true, true, false)]).await?;
    eventually("the Endpoints object", || async {
        c.get(&ENDPOINTS, Some(NS), "web").await.ok()
    })
    .await?;

    // A Service without a selector and the user's own slice for it.
    c.create(
        &SERVICES,
        Some(NS),
        &json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "manual", "namespace": NS},
                "spec": {"ports": [{"port": 80}]}}),
    )
    .await?;
    c.create(
        &ENDPOINTSLICES,
        Some(NS),
        &json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "manual-1", "namespace": NS,
                             "labels": {"kubernetes.io/service-name": "manual"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["192.168.1.10"]}]}),
    )
    .await?;

    c.delete(&SERVICES, Some(NS), "web").await?;
    eventually("the slices gone", || async {
        slices_of(c, "web").await.ok().filter(|s| s.is_empty())
    })
    .await?;
    eventually("the Endpoints gone", || async {
        match c.get(&ENDPOINTS, Some(NS), "web").await {
            Err(e) if e.is_not_found() => Some(()),
            _ => None,
        }
    })
    .await?;
    let manual = slices_of(c, "manual").await?;
    assert_eq!(manual.len(), 1, "the user's slice stays");
    assert_eq!(manual[0].endpoints[0].addresses, ["192.168.1.10"]);
    assert!(
        c.get(&ENDPOINTS, Some(NS), "manual").await.is_err(),
        "no Endpoints made for it"
    );
    tc.stop().await
}
