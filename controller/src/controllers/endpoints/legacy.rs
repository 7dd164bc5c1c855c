//! The v1 Endpoints object a Service should have (named as the Service, kept
//! for clients that predate EndpointSlices): its endpoints in subsets by port
//! set, ready ones under `addresses`, not-ready ones under `notReadyAddresses`,
//! terminating ones left out (unless `publishNotReadyAddresses` makes them
//! ready), as kube's Endpoints controller writes it. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::pods::PodEndpoint;
use super::slices::{HEADLESS_LABEL, is_headless};
use crate::controllers::controller_ref;

/// Kubernetes' cap on the addresses of one Endpoints object; beyond it the
/// object is truncated and says so in [`OVER_CAPACITY`].
pub const MAX_ENDPOINTS_ADDRESSES: usize = 1000;
/// The annotation of a truncated Endpoints object (value `truncated`).
pub const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";

type PortKey = Vec<(String, i32, String, Option<String>)>;

/// One subset being gathered: its ports, ready and not-ready addresses.
type Subset = (
    Vec<EndpointPort>,
    Vec<EndpointAddress>,
    Vec<EndpointAddress>,
);

fn legacy_ports(e: &PodEndpoint) -> Vec<EndpointPort> {
    e.ports
        .iter()
        .filter_map(|p| {
            Some(EndpointPort {
                name: p.name.clone().filter(|n| !n.is_empty()),
                port: p.port?,
                protocol: p.protocol.clone(),
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect()
}

fn key(ports: &[EndpointPort]) -> PortKey {
    ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port,
                p.protocol.clone().unwrap_or_default(),
                p.app_protocol.clone(),
            )
        })
        .collect()
}

fn address(e: &PodEndpoint) -> EndpointAddress {
    EndpointAddress {
        ip: e.ip.clone(),
        hostname: e.endpoint.hostname.clone(),
        node_name: e.endpoint.node_name.clone(),
        target_ref: e.endpoint.target_ref.clone(),
    }
}

/// The labels kube gives a Service's Endpoints: the Service's own, and the
/// headless mark.
fn labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.to_string(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

/// The Endpoints `svc` should have for `endpoints` (in
/// [`service_endpoints`](super::pods::service_endpoints) order).
pub fn desired_endpoints(svc: &Service, endpoints: &[PodEndpoint]) -> Endpoints {
    let has_ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .is_some_and(|p| !p.is_empty());
    let mut groups: BTreeMap<PortKey, Subset> = BTreeMap::new();
    let mut kept = 0;
    let mut truncated = false;
    // Ready addresses first, so a truncated object keeps them.
    let conditions = |e: &PodEndpoint| e.endpoint.conditions.clone().unwrap_or_default();
    let ready = endpoints
        .iter()
        .filter(|e| conditions(e).ready == Some(true));
    let not_ready = endpoints
        .iter()
        .filter(|e| conditions(e).ready != Some(true) && conditions(e).terminating != Some(true));
    for (is_ready, e) in ready
        .map(|e| (true, e))
        .chain(not_ready.map(|e| (false, e)))
    {
        let ports = legacy_ports(e);
        // A Service with ports lists a pod only on the ports it resolves.
        if has_ports && ports.is_empty() {
            continue;
        }
        if kept == MAX_ENDPOINTS_ADDRESSES {
            truncated = true;
            break;
        }
        kept += 1;
        let group = groups
            .entry(key(&ports))
            .or_insert_with(|| (ports, Vec::new(), Vec::new()));
        if is_ready {
            group.1.push(address(e));
        } else {
            group.2.push(address(e));
        }
    }
    let by_ip = |v: &mut Vec<EndpointAddress>| {
        v.sort_by(|a, b| a.ip.cmp(&b.ip).then_with(|| ref_name(a).cmp(ref_name(b))));
    };
    let subsets: Vec<EndpointSubset> = groups
        .into_values()
        .map(|(ports, mut ready, mut not_ready)| {
            by_ip(&mut ready);
            by_ip(&mut not_ready);
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect();
    let annotations =
        truncated.then(|| BTreeMap::from([(OVER_CAPACITY.to_string(), "truncated".to_string())]));
    Endpoints {
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(labels(svc)).filter(|l| !l.is_empty()),
            annotations,
            owner_references: Some(vec![controller_ref(svc)]),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

fn ref_name(a: &EndpointAddress) -> &str {
    a.target_ref
        .as_ref()
        .and_then(|r| r.name.as_deref())
        .unwrap_or("")
}

fn over_capacity(e: &Endpoints) -> Option<&String> {
    e.metadata.annotations.as_ref()?.get(OVER_CAPACITY)
}

/// Does the stored Endpoints say what the wanted one says (subsets, labels,
/// owners, the over-capacity mark)? Other metadata does not count.
pub fn same_endpoints(stored: &Endpoints, wanted: &Endpoints) -> bool {
    stored.subsets.clone().unwrap_or_default() == wanted.subsets.clone().unwrap_or_default()
        && stored.metadata.labels.clone().unwrap_or_default()
            == wanted.metadata.labels.clone().unwrap_or_default()
        && stored.metadata.owner_references == wanted.metadata.owner_references
        && over_capacity(stored) == over_capacity(wanted)
}

/// Makes `stored` say what `wanted` says, keeping its other metadata (and
/// annotations other than the over-capacity mark).
pub fn apply(stored: &mut Endpoints, wanted: &Endpoints) {
    stored.subsets = wanted.subsets.clone();
    stored.metadata.labels = wanted.metadata.labels.clone();
    stored.metadata.owner_references = wanted.metadata.owner_references.clone();
    let mut annotations = stored.metadata.annotations.take().unwrap_or_default();
    annotations.remove(OVER_CAPACITY);
    if let Some(v) = over_capacity(wanted) {
        annotations.insert(OVER_CAPACITY.to_string(), v.clone());
    }
    stored.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;
    use crate::controllers::endpoints::pods::service_endpoints;
    use crate::controllers::endpoints::pods::tests::{labels, pod, port, service};

    fn ips(a: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        a.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn ready_and_not_ready_pods_split_and_terminating_ones_are_left_out() {
        let mut svc = service("web", vec![port("http", 80, Some(IntOrString::Int(8080)))]);
        svc.metadata.labels = Some(labels(&[("team", "a")]));
        let mut going = pod("c", Some("10.0.0.3"), true);
        going.metadata.deletion_timestamp = Some(crate::controllers::now());
        let pods = [
            pod("b", Some("10.0.0.2"), false),
            pod("a", Some("10.0.0.1"), true),
            going,
        ];
        let ep = desired_endpoints(&svc, &service_endpoints(&svc, &pods));
        assert_eq!(ep.metadata.name.as_deref(), Some("web"));
        assert_eq!(ep.metadata.labels, Some(labels(&[("team", "a")])));
        assert_eq!(
            ep.metadata.owner_references.as_ref().unwrap()[0].uid,
            "uid-web"
        );
        let subsets = ep.subsets.as_ref().unwrap();
        assert_eq!(subsets.len(), 1);
        assert_eq!(ips(&subsets[0].addresses), ["10.0.0.1"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.0.0.2"]);
        let p = &subsets[0].ports.as_ref().unwrap()[0];
        assert_eq!((p.name.as_deref(), p.port), (Some("http"), 8080));
        let a = &subsets[0].addresses.as_ref().unwrap()[0];
        assert_eq!(a.node_name.as_deref(), Some("node-1"));
        assert_eq!(a.target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
    }

    #[test]
    fn no_pods_make_no_subsets_and_an_unchanged_object_is_the_same() {
        let svc = service("web", vec![port("http", 80, None)]);
        let ep = desired_endpoints(&svc, &[]);
        assert_eq!(ep.subsets, None);
        let mut stored = ep.clone();
        stored.metadata.resource_version = Some("7".into());
        stored.subsets = Some(vec![]);
        assert!(same_endpoints(&stored, &ep));
        let pods = [pod("a", Some("10.0.0.1"), true)];
        let changed = desired_endpoints(&svc, &service_endpoints(&svc, &pods));
        assert!(!same_endpoints(&stored, &changed));
        apply(&mut stored, &changed);
        assert!(same_endpoints(&stored, &changed));
        assert_eq!(stored.metadata.resource_version.as_deref(), Some("7"));
    }

    #[test]
    fn pods_with_different_resolved_ports_get_their_own_subsets() {
        let svc = service(
            "web",
            vec![port("http", 80, Some(IntOrString::String("http".into())))],
        );
        let mut other = pod("b", Some("10.0.0.2"), true);
        other.spec.as_mut().unwrap().containers[0]
            .ports
            .as_mut()
            .unwrap()[0]
            .container_port = 9090;
        let mut unresolved = pod("c", Some("10.0.0.3"), true);
        unresolved.spec.as_mut().unwrap().containers[0].ports = None;
        let pods = [pod("a", Some("10.0.0.1"), true), other, unresolved];
        let ep = desired_endpoints(&svc, &service_endpoints(&svc, &pods));
        let subsets = ep.subsets.unwrap();
        let got: Vec<_> = subsets
            .iter()
            .map(|s| (s.ports.as_ref().unwrap()[0].port, ips(&s.addresses)))
            .collect();
        assert_eq!(got, [(8080, vec!["10.0.0.1"]), (9090, vec!["10.0.0.2"])]);
    }

    #[test]
    fn more_than_the_cap_is_truncated_and_marked() {
        let svc = service("web", vec![port("http", 80, None)]);
        let pods: Vec<_> = (0..MAX_ENDPOINTS_ADDRESSES + 5)
            .map(|i| {
                pod(
                    &format!("p{i:04}"),
                    Some(&format!("10.1.{}.{}", i / 250, i % 250)),
                    i % 2 == 0,
                )
            })
            .collect();
        let ep = desired_endpoints(&svc, &service_endpoints(&svc, &pods));
        let subsets = ep.subsets.as_ref().unwrap();
        let n = ips(&subsets[0].addresses).len() + ips(&subsets[0].not_ready_addresses).len();
        assert_eq!(n, MAX_ENDPOINTS_ADDRESSES);
        assert_eq!(
            ips(&subsets[0].addresses).len(),
            (MAX_ENDPOINTS_ADDRESSES + 5).div_ceil(2),
            "every ready one kept"
        );
        assert_eq!(over_capacity(&ep).map(String::as_str), Some("truncated"));
    }
}
