//! The agent's server on a loopback port, over mutual TLS as in a cluster:
//! `/stats/summary` from a collector on the fake engine and the proxy's counters,
//! for the controller's certificate only.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tugboat_api::metrics::{SUMMARY_PATH, Summary};
use tugboat_tls::ca::{Authority, Leaf};
use tugboat_tls::config::{ServerCheck, client_config};
use tugboat_tls::identity::{CONTROLLER_USER, GROUP_CONTROLLERS, node_dns_name};

use super::serve;
use crate::AgentCtx;
use crate::runtime::fake::FakeRuntime;
use crate::runtime::{
    ContainerRuntime, ContainerSpec, LABEL_CONTAINER_NAME, LABEL_NODE, LABEL_POD_NAME,
    LABEL_POD_NAMESPACE, LABEL_POD_UID,
};

const WAIT: Duration = Duration::from_secs(10);
const IMAGE: &str = "tugboat/sample:latest";
const NODE: &str = "n1";

/// No worker runs here: nothing is written.
struct NoSink;

#[async_trait::async_trait]
impl crate::sink::PodSink for NoSink {
    async fn patch_status(
        &self,
        _: &k8s_openapi::api::core::v1::Pod,
        _: &k8s_openapi::api::core::v1::PodStatus,
    ) -> Result<Option<k8s_openapi::api::core::v1::Pod>, crate::sink::SinkError> {
        Ok(None)
    }

    async fn release(
        &self,
        _: &k8s_openapi::api::core::v1::Pod,
    ) -> Result<(), crate::sink::SinkError> {
        Ok(())
    }

    async fn event(
        &self,
        _: &k8s_openapi::api::core::v1::Pod,
        _: tugboat_runtime::events::EventType,
        _: &str,
        _: &str,
    ) {
    }
}

/// A client of the agent's endpoints with a certificate for `user` in `groups`.
fn client_as(ca: &Authority, user: &str, groups: &[&str]) -> reqwest::Client {
    let issued = ca
        .issue(&Leaf {
            common_name: user.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            client: true,
            ..Default::default()
        })
        .unwrap();
    let tls = client_config(
        Some(ca.cert_pem().as_bytes()),
        Some((issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())),
        ServerCheck::Node {
            name: NODE.into(),
            fingerprint: None,
        },
    )
    .unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(WAIT)
        .build()
        .unwrap()
}

fn ctx(runtime: Arc<FakeRuntime>, ca: &Authority) -> Arc<AgentCtx> {
    let issued = ca
        .issue(&Leaf {
            common_name: format!("system:node:{NODE}"),
            groups: vec!["system:nodes".into()],
            dns_names: vec![node_dns_name(NODE)],
            server: true,
            client: true,
            ..Default::default()
        })
        .unwrap();
    let tls = crate::tls::NodeTls::new(ca.cert_pem(), &issued.cert_pem, &issued.key_pem).unwrap();
    Arc::new(AgentCtx {
        node: NODE.into(),
        address: "127.0.0.1".into(),
        // Never called here.
        client: tugboat_api::Client::new("http://127.0.0.1:9").unwrap(),
        runtime: runtime.clone(),
        sink: Arc::new(NoSink),
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(8),
        network: None,
        host_port_ip: None,
        http: reqwest::Client::new(),
        tls: Some(Arc::new(tls)),
        proxy: Arc::new(crate::proxy::Shared::default()),
        metrics: crate::metrics::Collector::new(NODE, runtime.node_figures()).0,
        cluster: Arc::new(crate::proxy::cluster::ClusterNet::new(
            None,
            tugboat_runtime::reflector::Writer::new().store(),
        )),
        pod_infra: crate::worker::sandbox::PodInfra::default(),
        objects: Arc::new(crate::objects::MemoryObjects::default()),
        pods_dir: std::env::temp_dir().join("tugboat-agent-unit-tests"),
        images: Default::default(),
        host: Default::default(),
    })
}

#[tokio::test]
async fn the_summary_reports_pods_node_and_endpoints_to_the_controller_only() {
    tugboat_tls::install_default_provider();
    let ca = Authority::generate("cluster").unwrap();
    let fake = Arc::new(FakeRuntime::new().with_images(&[IMAGE]));
    let labels = [
        (LABEL_NODE, NODE),
        (LABEL_POD_NAMESPACE, "default"),
        (LABEL_POD_NAME, "web-1"),
        (LABEL_POD_UID, "uid-1"),
        (LABEL_CONTAINER_NAME, "app"),
    ];
    let id = fake
        .create(&ContainerSpec {
            name: "tug_default_web-1_app_0".into(),
            image: IMAGE.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    fake.start(&id).await.unwrap();
    fake.set_usage(&id, 300, 48 << 20).unwrap();

    // The collector as the agent runs it, but its inbox is this test's.
    let mut ctx = ctx(fake.clone(), &ca);
    let (collector, inbox) = crate::metrics::Collector::new(NODE, fake.node_figures());
    Arc::get_mut(&mut ctx).unwrap().metrics = collector.clone();
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    tracker.spawn(crate::metrics::run(
        collector,
        fake.clone(),
        inbox,
        tracker.clone(),
        stop.clone(),
    ));
    let endpoint: std::net::IpAddr = "10.1.2.3".parse().unwrap();
    drop(ctx.proxy.opened(endpoint));
    let _open = ctx.proxy.opened(endpoint);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}{SUMMARY_PATH}",
        listener.local_addr().unwrap().port()
    );
    tracker.spawn(serve(
        listener,
        ctx.clone(),
        tugboat_serve::ConnLimits::default(),
        stop.clone(),
    ));

    let controller = client_as(&ca, CONTROLLER_USER, &[GROUP_CONTROLLERS]);
    // The fake samples every second: the pod shows once it has two.
    let summary = tokio::time::timeout(WAIT, async {
        loop {
            let resp = controller.get(&url).send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            assert_eq!(
                resp.headers()
                    .get(tugboat_api::limits::AGENT_HEADER)
                    .and_then(|h| h.to_str().ok()),
                Some(NODE)
            );
            let summary: Summary = resp.json().await.unwrap();
            if !summary.pods.is_empty() {
                return summary;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the pod's figures within the timeout");
    let pod = &summary.pods[0];
    assert_eq!(
        (pod.namespace.as_str(), pod.name.as_str(), pod.uid.as_str()),
        ("default", "web-1", "uid-1")
    );
    let app = &pod.containers[0];
    assert_eq!(app.name, "app");
    // The fake dates samples on the clock CPU accrues by: exact, but for the
    // rounding of whole nanoseconds.
    assert!(app.cpu_nano_cores.abs_diff(300_000_000) <= 1, "{app:?}");
    assert_eq!(app.memory_working_set_bytes, 48 << 20);
    assert_eq!(summary.node.name, NODE);
    assert_eq!(summary.node.cpu_nano_cores, app.cpu_nano_cores);
    assert_eq!(summary.endpoints.len(), 1);
    assert_eq!(
        (
            summary.endpoints[0].ip,
            summary.endpoints[0].connections_total,
            summary.endpoints[0].active
        ),
        (endpoint, 2, 1)
    );

    // Another node, or an admin: not the controller.
    for (user, group) in [
        ("system:node:n2", "system:nodes"),
        ("admin", "system:masters"),
    ] {
        let resp = client_as(&ca, user, &[group])
            .get(&url)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 403, "{user}");
    }
    stop.cancel();
    tracker.close();
    tokio::time::timeout(WAIT, tracker.wait()).await.unwrap();
}

#[tokio::test]
async fn a_node_measured_on_its_host_asks_to_come_back_before_its_first_rate() {
    tugboat_tls::install_default_provider();
    let ca = Authority::generate("cluster").unwrap();
    let mut ctx = ctx(Arc::new(FakeRuntime::new()), &ca);
    // Never run: the host was never read.
    Arc::get_mut(&mut ctx).unwrap().metrics =
        crate::metrics::Collector::new(NODE, crate::runtime::NodeFigures::Host).0;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}{SUMMARY_PATH}",
        listener.local_addr().unwrap().port()
    );
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(
        listener,
        ctx,
        tugboat_serve::ConnLimits::default(),
        stop.clone(),
    ));
    let resp = client_as(&ca, CONTROLLER_USER, &[GROUP_CONTROLLERS])
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(
        resp.headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|h| h.to_str().ok()),
        Some("1")
    );
    stop.cancel();
    tokio::time::timeout(WAIT, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
