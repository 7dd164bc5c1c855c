//! From a Service and its pods to endpoints: which pods a Service selects, the
//! endpoint each of them is (address, `ready`/`serving`/`terminating`, node,
//! target, hostname) and the ports it resolves (a named `targetPort` per pod,
//! by its container ports). Pure: the reconciler feeds it what it listed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::controllers::{pod_is_finished, pod_ready_since};

/// A port's protocol when none is given, for Services and containers alike.
const DEFAULT_PROTOCOL: &str = "TCP";

/// One pod as an endpoint of a Service, with the ports it serves that Service on
/// (in the order of the Service's ports).
#[derive(Clone, Debug, PartialEq)]
pub struct PodEndpoint {
    pub endpoint: Endpoint,
    pub ports: Vec<EndpointPort>,
    /// The pod's IPv4 address (the endpoint's one address).
    pub ip: String,
}

/// The Service's selector, when it has one; a Service without (or with an
/// empty one) selects nothing here: its endpoints are the user's to write.
pub fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
}

/// Does `selector` (every key with its value) match `labels`?
pub fn selects(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let Some(labels) = labels else {
        return selector.is_empty();
    };
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn protocol(p: Option<&str>) -> &str {
    p.filter(|p| !p.is_empty()).unwrap_or(DEFAULT_PROTOCOL)
}

/// The port `sp` reaches on `pod`: a number as it is (none, 0 or "" mean the
/// service port, as Kubernetes defaults it), a name by the pod's container port
/// of that name and protocol. `None` when it does not resolve on this pod.
pub fn resolve_port(sp: &ServicePort, pod: &Pod) -> Option<i32> {
    let valid = |n: i32| (1..=65535).contains(&n).then_some(n);
    match &sp.target_port {
        None | Some(IntOrString::Int(0)) => valid(sp.port),
        Some(IntOrString::String(s)) if s.is_empty() => valid(sp.port),
        Some(IntOrString::Int(n)) => valid(*n),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            // Sidecars (init containers that keep running) serve ports too.
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            let want = protocol(sp.protocol.as_deref());
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && protocol(p.protocol.as_deref()) == want
                })
                .and_then(|p| valid(p.container_port))
        }
    }
}

/// A service port as an EndpointSlice port resolved to `port` (kube writes the
/// name even when it is empty).
fn slice_port(sp: &ServicePort, port: Option<i32>) -> EndpointPort {
    EndpointPort {
        name: Some(sp.name.clone().unwrap_or_default()),
        port,
        protocol: Some(protocol(sp.protocol.as_deref()).to_string()),
        app_protocol: sp.app_protocol.clone(),
    }
}

fn service_ports(svc: &Service) -> &[ServicePort] {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or(&[])
}

/// The ports of a slice without endpoints: the ones whose target is a number
/// (a named one has no number without a pod).
pub fn placeholder_ports(svc: &Service) -> Vec<EndpointPort> {
    let none = Pod::default();
    service_ports(svc)
        .iter()
        .map(|sp| slice_port(sp, resolve_port(sp, &none)))
        .collect()
}

/// The pod's IPv4 address, when it has one (EndpointSlices here are IPv4) and
/// it is one an endpoint may have (not loopback or link-local: validation
/// refuses those, so that no Service sends traffic to a node itself).
fn pod_ip(pod: &Pod) -> Option<String> {
    let ip = pod.status.as_ref()?.pod_ip.as_deref()?;
    let ip = ip.parse::<Ipv4Addr>().ok()?;
    if tugboat_api::validation::special_ip(ip.into()).is_some() {
        return None;
    }
    Some(ip.to_string())
}

/// The pod as an endpoint of `svc`, or `None` when it is none (no IPv4 address
/// yet, or finished). Whether the Service selects the pod is the caller's test.
pub fn endpoint_of(svc: &Service, pod: &Pod) -> Option<PodEndpoint> {
    if pod_is_finished(pod) {
        return None;
    }
    let ip = pod_ip(pod)?;
    let spec = pod.spec.as_ref();
    let serving = pod_ready_since(pod).is_some();
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let publish = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let svc_name = svc.metadata.name.as_deref().unwrap_or("");
    let hostname = spec
        .filter(|s| s.subdomain.as_deref() == Some(svc_name) && !svc_name.is_empty())
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty());
    let ports = service_ports(svc)
        .iter()
        .filter_map(|sp| resolve_port(sp, pod).map(|n| slice_port(sp, Some(n))))
        .collect();
    let endpoint = Endpoint {
        addresses: vec![ip.clone()],
        conditions: Some(EndpointConditions {
            ready: Some(publish || (serving && !terminating)),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname,
        node_name: spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".to_string()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    Some(PodEndpoint {
        endpoint,
        ports,
        ip,
    })
}

/// The endpoints of `svc` among `pods` (its namespace's): the selected pods that
/// are endpoints, in a stable order (by pod name). Nothing for a Service without
/// a selector.
pub fn service_endpoints(svc: &Service, pods: &[Pod]) -> Vec<PodEndpoint> {
    let Some(sel) = selector(svc) else {
        return Vec::new();
    };
    let ns = svc.metadata.namespace.as_deref();
    let mut out: Vec<PodEndpoint> = pods
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == ns)
        .filter(|p| selects(sel, p.metadata.labels.as_ref()))
        .filter_map(|p| endpoint_of(svc, p))
        .collect();
    out.sort_by(|a, b| pod_name(a).cmp(pod_name(b)).then_with(|| a.ip.cmp(&b.ip)));
    out
}

pub fn pod_name(e: &PodEndpoint) -> &str {
    e.endpoint
        .target_ref
        .as_ref()
        .and_then(|r| r.name.as_deref())
        .unwrap_or("")
}

#[cfg(test)]
pub(super) mod tests {
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub fn port(name: &str, port: i32, target: Option<IntOrString>) -> ServicePort {
        ServicePort {
            name: Some(name.to_string()),
            port,
            target_port: target,
            ..Default::default()
        }
    }

    pub fn service(name: &str, ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(labels(&[("app", "web")])),
                ports: Some(ports),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// A running pod `name` with `ip`, Ready or not, serving `http` on 8080.
    pub fn pod(name: &str, ip: Option<&str>, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some(labels(&[("app", "web")])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-1".into()),
                containers: vec![Container {
                    name: "web".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: 8080,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: ip.map(str::to_string),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn conditions(e: &PodEndpoint) -> (Option<bool>, Option<bool>, Option<bool>) {
        let c = e.endpoint.conditions.clone().unwrap_or_default();
        (c.ready, c.serving, c.terminating)
    }

    #[test]
    fn a_ready_pod_is_a_ready_serving_endpoint_with_its_node_and_target() {
        let svc = service("web", vec![port("http", 80, Some(IntOrString::Int(8080)))]);
        let e = endpoint_of(&svc, &pod("a", Some("10.0.0.1"), true)).expect("an endpoint");
        assert_eq!(e.endpoint.addresses, ["10.0.0.1"]);
        assert_eq!(conditions(&e), (Some(true), Some(true), Some(false)));
        assert_eq!(e.endpoint.node_name.as_deref(), Some("node-1"));
        let target = e.endpoint.target_ref.as_ref().unwrap();
        assert_eq!(
            (
                target.kind.as_deref(),
                target.name.as_deref(),
                target.uid.as_deref()
            ),
            (Some("Pod"), Some("a"), Some("uid-a"))
        );
        assert_eq!(e.ports[0].port, Some(8080));
        assert_eq!(e.ports[0].protocol.as_deref(), Some("TCP"));
    }

    #[test]
    fn a_terminating_pod_is_not_ready_but_still_serving() {
        let svc = service("web", vec![port("http", 80, None)]);
        let mut p = pod("a", Some("10.0.0.1"), true);
        p.metadata.deletion_timestamp = Some(crate::controllers::now());
        let e = endpoint_of(&svc, &p).unwrap();
        assert_eq!(conditions(&e), (Some(false), Some(true), Some(true)));
        assert_eq!(e.ports[0].port, Some(80), "no targetPort means the port");
    }

    #[test]
    fn publish_not_ready_addresses_makes_every_endpoint_ready() {
        let mut svc = service("web", vec![]);
        svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let e = endpoint_of(&svc, &pod("a", Some("10.0.0.1"), false)).unwrap();
        assert_eq!(conditions(&e), (Some(true), Some(false), Some(false)));
    }

    #[test]
    fn pods_without_an_ipv4_address_or_finished_are_no_endpoints() {
        let svc = service("web", vec![]);
        assert!(endpoint_of(&svc, &pod("a", None, true)).is_none());
        assert!(endpoint_of(&svc, &pod("a", Some(""), true)).is_none());
        assert!(endpoint_of(&svc, &pod("a", Some("fd00::1"), true)).is_none());
        assert!(endpoint_of(&svc, &pod("a", Some("not an ip"), true)).is_none());
        let mut done = pod("a", Some("10.0.0.1"), false);
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(endpoint_of(&svc, &done).is_none());
        // No spec, no status, no metadata: nothing, and no panic.
        assert!(endpoint_of(&svc, &Pod::default()).is_none());
        assert!(endpoint_of(&Service::default(), &Pod::default()).is_none());
    }

    #[test]
    fn a_named_target_port_resolves_by_name_and_protocol_per_pod() {
        let named = port("http", 80, Some(IntOrString::String("http".into())));
        let p = pod("a", Some("10.0.0.1"), true);
        assert_eq!(resolve_port(&named, &p), Some(8080));
        let udp = ServicePort {
            protocol: Some("UDP".into()),
            ..named.clone()
        };
        assert_eq!(resolve_port(&udp, &p), None, "the protocol must match");
        let other = port("x", 80, Some(IntOrString::String("metrics".into())));
        assert_eq!(resolve_port(&other, &p), None);
        assert_eq!(resolve_port(&other, &Pod::default()), None);
        assert_eq!(
            resolve_port(&port("x", 80, Some(IntOrString::Int(0))), &p),
            Some(80)
        );
        assert_eq!(
            resolve_port(&port("x", 80, Some(IntOrString::Int(70000))), &p),
            None
        );
        assert_eq!(resolve_port(&port("x", 0, None), &p), None);
        // A pod where one of two ports does not resolve serves the other.
        let svc = service("web", vec![named, other]);
        let e = endpoint_of(&svc, &p).unwrap();
        assert_eq!(e.ports.len(), 1);
        assert_eq!(e.ports[0].name.as_deref(), Some("http"));
    }

    #[test]
    fn the_hostname_is_kept_when_the_subdomain_is_the_service() {
        let svc = service("web", vec![]);
        let mut p = pod("a", Some("10.0.0.1"), true);
        let spec = p.spec.as_mut().unwrap();
        spec.hostname = Some("a-0".into());
        spec.subdomain = Some("other".into());
        assert_eq!(endpoint_of(&svc, &p).unwrap().endpoint.hostname, None);
        p.spec.as_mut().unwrap().subdomain = Some("web".into());
        assert_eq!(
            endpoint_of(&svc, &p).unwrap().endpoint.hostname.as_deref(),
            Some("a-0")
        );
    }

    #[test]
    fn only_selected_pods_of_the_namespace_count_and_no_selector_selects_none() {
        let svc = service("web", vec![]);
        let mut other_app = pod("b", Some("10.0.0.2"), true);
        other_app.metadata.labels = Some(labels(&[("app", "db")]));
        let mut other_ns = pod("c", Some("10.0.0.3"), true);
        other_ns.metadata.namespace = Some("prod".into());
        let mut unlabelled = pod("d", Some("10.0.0.4"), true);
        unlabelled.metadata.labels = None;
        let pods = [
            pod("z", Some("10.0.0.9"), true),
            other_app,
            other_ns,
            unlabelled,
            pod("a", Some("10.0.0.1"), true),
        ];
        let names: Vec<_> = service_endpoints(&svc, &pods)
            .iter()
            .map(|e| pod_name(e).to_string())
            .collect();
        assert_eq!(names, ["a", "z"], "selected ones, by name");
        let mut selectorless = svc.clone();
        selectorless.spec.as_mut().unwrap().selector = Some(BTreeMap::new());
        assert!(service_endpoints(&selectorless, &pods).is_empty());
        selectorless.spec.as_mut().unwrap().selector = None;
        assert!(service_endpoints(&selectorless, &pods).is_empty());
    }
}
