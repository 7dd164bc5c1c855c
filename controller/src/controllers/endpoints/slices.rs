//! The EndpointSlices a Service should have: its endpoints grouped by the port
//! set they resolved, at most [`MAX_ENDPOINTS_PER_SLICE`] to a slice, each named
//! `<service>-<hash of port set and chunk>` so that every reconcile arrives at the
//! same names; and whether a stored slice already says what a wanted one says.
//! Pure.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::pods::{PodEndpoint, placeholder_ports};
use crate::controllers::controller_ref;
use crate::events::fnv1a;

/// The label naming a slice's Service: what proxies and DNS select slices by.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label saying which controller keeps a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`] (Kubernetes' own, so tools
/// that know it recognise these slices).
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Set (empty) on the slices and Endpoints of a headless Service, as kube does.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Kubernetes' default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// The only address type written: pods here have IPv4 addresses.
pub const ADDRESS_TYPE: &str = "IPv4";

/// A port set, comparable and ordered, to group endpoints by.
type PortKey = Vec<(String, Option<i32>, String, Option<String>)>;

fn port_key(ports: &[EndpointPort]) -> PortKey {
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

pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The labels of the Service's slices: its own labels, then the two that make
/// them its controller's (those win), and the headless mark.
pub fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(
        SERVICE_NAME_LABEL.to_string(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string());
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.to_string(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

/// Is this slice one this controller keeps for the Service named `service`?
pub fn is_managed_slice_of(slice: &EndpointSlice, service: &str) -> bool {
    let labels = slice.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    label(SERVICE_NAME_LABEL) == Some(service) && label(MANAGED_BY_LABEL) == Some(MANAGED_BY)
}

/// `<service>-<10 letters>`: a hash of the port set, the chunk's index and a
/// salt (raised only if two groups' names collide), in an alphabet without vowels.
fn slice_name(service: &str, key: &PortKey, chunk: usize, salt: u32) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h = fnv1a(format!("{key:?}/{chunk}/{salt}").as_bytes());
    let mut suffix = String::with_capacity(10);
    for _ in 0..10 {
        suffix.push(ALPHABET[(h % ALPHABET.len() as u64) as usize] as char);
        h /= ALPHABET.len() as u64;
    }
    format!("{service}-{suffix}")
}

/// The slices `svc` should have for `endpoints` (from
/// [`service_endpoints`](super::pods::service_endpoints), in its order). Without
/// endpoints, one empty slice with the Service's ports, so that the Service
/// still has a slice (DNS answers for it).
pub fn desired_slices(svc: &Service, endpoints: &[PodEndpoint]) -> Vec<EndpointSlice> {
    let mut groups: BTreeMap<PortKey, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
    for e in endpoints {
        groups
            .entry(port_key(&e.ports))
            .or_insert_with(|| (e.ports.clone(), Vec::new()))
            .1
            .push(e.endpoint.clone());
    }
    if groups.is_empty() {
        let ports = placeholder_ports(svc);
        groups.insert(port_key(&ports), (ports, Vec::new()));
    }
    let service = svc.metadata.name.as_deref().unwrap_or("");
    let labels = slice_labels(svc);
    let owner = controller_ref(svc);
    let mut names: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for (key, (ports, eps)) in groups {
        let chunks: Vec<&[Endpoint]> = if eps.is_empty() {
            vec![&[]]
        } else {
            eps.chunks(MAX_ENDPOINTS_PER_SLICE).collect()
        };
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut salt = 0;
            let mut name = slice_name(service, &key, i, salt);
            while names.contains(&name) {
                salt += 1;
                name = slice_name(service, &key, i, salt);
            }
            names.insert(name.clone());
            out.push(EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: svc.metadata.namespace.clone(),
                    labels: Some(labels.clone()),
                    owner_references: Some(vec![owner.clone()]),
                    ..Default::default()
                },
                address_type: ADDRESS_TYPE.to_string(),
                endpoints: chunk.to_vec(),
                ports: Some(ports.clone()),
            });
        }
    }
    out
}

/// Does the stored slice say what the wanted one says? Metadata the store keeps
/// (resourceVersion, uid, timestamps) does not count; labels and owners do.
pub fn same_slice(stored: &EndpointSlice, wanted: &EndpointSlice) -> bool {
    let ports = |s: &EndpointSlice| s.ports.clone().unwrap_or_default();
    stored.address_type == wanted.address_type
        && stored.endpoints == wanted.endpoints
        && ports(stored) == ports(wanted)
        && stored.metadata.labels.clone().unwrap_or_default()
            == wanted.metadata.labels.clone().unwrap_or_default()
        && stored.metadata.owner_references == wanted.metadata.owner_references
}

/// Makes `stored` say what `wanted` says, keeping its other metadata.
pub fn apply(stored: &mut EndpointSlice, wanted: &EndpointSlice) {
    stored.address_type = wanted.address_type.clone();
    stored.endpoints = wanted.endpoints.clone();
    stored.ports = wanted.ports.clone();
    stored.metadata.labels = wanted.metadata.labels.clone();
    stored.metadata.owner_references = wanted.metadata.owner_references.clone();
}

/// What to do to go from the stored slices to the wanted ones.
#[derive(Debug, Default)]
pub struct Plan {
    pub create: Vec<EndpointSlice>,
    /// Wanted slices whose stored namesake says something else.
    pub update: Vec<EndpointSlice>,
    /// Names of stored slices no longer wanted (or not the Service's own).
    pub delete: Vec<String>,
}

/// Compares `stored` (this controller's slices for the Service, by label) with
/// `wanted`. A stored slice owned by another object (a Service of the same name
/// deleted and made again) is deleted and written afresh.
pub fn plan(stored: &[EndpointSlice], wanted: Vec<EndpointSlice>, service_uid: &str) -> Plan {
    let owned =
        |s: &EndpointSlice| crate::controllers::controller_uid(&s.metadata) == Some(service_uid);
    let by_name: BTreeMap<&str, &EndpointSlice> = stored
        .iter()
        .filter(|s| owned(s))
        .filter_map(|s| Some((s.metadata.name.as_deref()?, s)))
        .collect();
    let wanted_names: HashSet<String> = wanted
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    let mut plan = Plan::default();
    for s in stored {
        let name = s.metadata.name.clone().unwrap_or_default();
        if !owned(s) || !wanted_names.contains(&name) {
            plan.delete.push(name);
        }
    }
    for w in wanted {
        match by_name.get(w.metadata.name.as_deref().unwrap_or("")) {
            None => plan.create.push(w),
            Some(s) if !same_slice(s, &w) => plan.update.push(w),
            Some(_) => {}
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;
    use crate::controllers::endpoints::pods::service_endpoints;
    use crate::controllers::endpoints::pods::tests::{labels, pod, port, service};

    fn names(slices: &[EndpointSlice]) -> Vec<String> {
        slices
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn three_pods_make_one_slice_with_the_ports_labels_and_owner() {
        let mut svc = service("web", vec![port("http", 80, Some(IntOrString::Int(8080)))]);
        svc.metadata.labels = Some(labels(&[("team", "a"), (SERVICE_NAME_LABEL, "spoof")]));
        let pods: Vec<_> = (1..=3)
            .map(|i| pod(&format!("p{i}"), Some(&format!("10.0.0.{i}")), true))
            .collect();
        let slices = desired_slices(&svc, &service_endpoints(&svc, &pods));
        assert_eq!(slices.len(), 1);
        let s = &slices[0];
        assert!(s.metadata.name.as_deref().unwrap().starts_with("web-"));
        assert_eq!(s.address_type, "IPv4");
        assert_eq!(s.endpoints.len(), 3);
        let l = s.metadata.labels.as_ref().unwrap();
        assert_eq!(l[SERVICE_NAME_LABEL], "web", "the service's name wins");
        assert_eq!(l[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(l["team"], "a");
        assert!(!l.contains_key(HEADLESS_LABEL));
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Service", "uid-web", Some(true))
        );
        let p = &s.ports.as_ref().unwrap()[0];
        assert_eq!(
            (p.name.as_deref(), p.port, p.protocol.as_deref()),
            (Some("http"), Some(8080), Some("TCP"))
        );
        assert!(is_managed_slice_of(s, "web"));
        assert!(!is_managed_slice_of(s, "db"));
    }

    #[test]
    fn names_are_stable_and_endpoints_are_chunked_by_port_set() {
        let named = port("http", 80, Some(IntOrString::String("http".into())));
        let svc = service("web", vec![named]);
        let mut pods: Vec<_> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i:03}"),
                    Some(&format!("10.0.{}.{}", i / 200, i % 200)),
                    true,
                )
            })
            .collect();
        // Three pods call their port something else: a port set of their own.
        for p in pods.iter_mut().take(3) {
            let c = &mut p.spec.as_mut().unwrap().containers[0];
            c.ports.as_mut().unwrap()[0].container_port = 9090;
        }
        let slices = desired_slices(&svc, &service_endpoints(&svc, &pods));
        let mut sizes: Vec<_> = slices.iter().map(|s| s.endpoints.len()).collect();
        sizes.sort();
        assert_eq!(sizes, [3, 47, 100, 100]);
        assert!(
            slices
                .iter()
                .all(|s| s.endpoints.len() <= MAX_ENDPOINTS_PER_SLICE)
        );
        let unique: HashSet<_> = names(&slices).into_iter().collect();
        assert_eq!(unique.len(), 4, "every slice has its own name");
        pods.reverse();
        let again = desired_slices(&svc, &service_endpoints(&svc, &pods));
        assert_eq!(
            names(&again),
            names(&slices),
            "the same names whatever the pods' order"
        );
        assert_eq!(again, slices);
    }

    #[test]
    fn no_pods_still_make_one_empty_slice_with_the_numeric_ports() {
        let mut svc = service(
            "web",
            vec![
                port("a", 80, Some(IntOrString::Int(8080))),
                port("b", 81, Some(IntOrString::String("http".into()))),
            ],
        );
        svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let slices = desired_slices(&svc, &[]);
        assert_eq!(slices.len(), 1);
        assert!(slices[0].endpoints.is_empty());
        let ports: Vec<_> = slices[0].ports.iter().flatten().map(|p| p.port).collect();
        assert_eq!(ports, [Some(8080), None]);
        assert_eq!(
            slices[0].metadata.labels.as_ref().unwrap()[HEADLESS_LABEL],
            ""
        );
    }

    #[test]
    fn the_plan_writes_only_what_changed_and_deletes_what_is_not_wanted() {
        let svc = service("web", vec![port("http", 80, None)]);
        let pods = [pod("a", Some("10.0.0.1"), true)];
        let wanted = desired_slices(&svc, &service_endpoints(&svc, &pods));
        let plan0 = plan(&[], wanted.clone(), "uid-web");
        assert_eq!(
            (plan0.create.len(), plan0.update.len(), plan0.delete.len()),
            (1, 0, 0)
        );

        // As stored: with a resourceVersion, a uid and a timestamp of its own.
        let mut stored = wanted[0].clone();
        stored.metadata.resource_version = Some("42".into());
        stored.metadata.uid = Some("slice-uid".into());
        stored.metadata.creation_timestamp = Some(crate::controllers::now());
        stored.ports = Some(stored.ports.clone().unwrap());
        let same = plan(std::slice::from_ref(&stored), wanted.clone(), "uid-web");
        assert!(same.create.is_empty() && same.update.is_empty() && same.delete.is_empty());

        // The pod stops being ready: the slice is updated, not recreated.
        let not_ready = [pod("a", Some("10.0.0.1"), false)];
        let changed = desired_slices(&svc, &service_endpoints(&svc, &not_ready));
        let p = plan(std::slice::from_ref(&stored), changed, "uid-web");
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
        let mut updated = stored.clone();
        apply(&mut updated, &p.update[0]);
        assert!(same_slice(&updated, &p.update[0]));
        assert_eq!(updated.metadata.resource_version.as_deref(), Some("42"));

        // A slice left from another port set, and one of an older Service of the
        // same name, go.
        let mut stale = stored.clone();
        stale.metadata.name = Some("web-old".into());
        let mut foreign = stored.clone();
        foreign.metadata.owner_references.as_mut().unwrap()[0].uid = "uid-previous".into();
        let p = plan(&[stale, foreign], wanted, "uid-web");
        assert_eq!(
            p.delete,
            ["web-old", stored.metadata.name.clone().unwrap().as_str()]
        );
        assert_eq!(p.create.len(), 1, "the foreign namesake is written afresh");
    }
}
