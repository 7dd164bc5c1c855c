//! What a LoadBalancer Service's ingress should be: the InternalIP addresses of
//! the Ready nodes, of the Service's IP families, sorted and without duplicates.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{LoadBalancerIngress, Node, Service};

use crate::controllers::nodelifecycle::health::ready_condition;

/// What a node offers load balancers, as far as this controller cares: whether
/// it is Ready and its InternalIP addresses (those that are IP addresses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeOffer {
    pub ready: bool,
    pub addresses: BTreeSet<IpAddr>,
}

impl NodeOffer {
    pub fn of(node: &Node) -> NodeOffer {
        let ready = ready_condition(node).is_some_and(|c| c.status == "True");
        let addresses = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.trim().parse().ok())
            .collect();
        NodeOffer { ready, addresses }
    }

    /// The addresses the node serves load balancers on: none unless Ready.
    pub fn serving(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addresses.iter().copied().filter(|_| self.ready)
    }

    /// Would going from `before` to `now` change any Service's ingress? (A
    /// heartbeat changes neither; nor does a new address of a NotReady node.)
    pub fn changes_ingress(before: Option<&NodeOffer>, now: Option<&NodeOffer>) -> bool {
        let serving = |o: Option<&NodeOffer>| -> BTreeSet<IpAddr> {
            o.map(|o| o.serving().collect()).unwrap_or_default()
        };
        serving(before) != serving(now)
    }
}

/// Is the Service of type LoadBalancer?
pub fn is_load_balancer(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
}

/// Is the Service a LoadBalancer this controller serves (one naming no
/// `loadBalancerClass`, which would hand it to another implementation)?
pub fn balanced(svc: &Service) -> bool {
    is_load_balancer(svc)
        && svc
            .spec
            .as_ref()
            .and_then(|s| s.load_balancer_class.as_deref())
            .is_none_or(str::is_empty)
}

/// The ingress the Service should have: for a LoadBalancer, the addresses the
/// Ready nodes serve on, of the Service's IP families (all when it names none),
/// in address order; for any other Service, none.
pub fn desired_ingress(svc: &Service, nodes: &[Node]) -> Vec<LoadBalancerIngress> {
    if !is_load_balancer(svc) {
        return Vec::new();
    }
    let families = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .filter(|f| !f.is_empty());
    let of_family = |ip: &IpAddr| {
        families.is_none_or(|f| {
            let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
            f.iter().any(|x| x == family)
        })
    };
    let addresses: BTreeSet<IpAddr> = nodes
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .flat_map(|n| NodeOffer::of(n).serving().collect::<Vec<_>>())
        .filter(of_family)
        .collect();
    addresses
        .into_iter()
        .map(|ip| LoadBalancerIngress {
            ip: Some(ip.to_string()),
            ..Default::default()
        })
        .collect()
}

/// The ingress the Service has now (none when it has no status yet).
pub fn current_ingress(svc: &Service) -> &[LoadBalancerIngress] {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use k8s_openapi::api::core::v1::{
        LoadBalancerStatus, NodeAddress, NodeCondition, NodeStatus, ServiceSpec, ServiceStatus,
    };

    use super::*;

    pub(crate) fn node(name: &str, ready: &str, addresses: &[(&str, &str)]) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.to_string());
        n.status = Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: ready.into(),
                ..Default::default()
            }]),
            addresses: Some(
                addresses
                    .iter()
                    .map(|(t, a)| NodeAddress {
                        type_: t.to_string(),
                        address: a.to_string(),
                    })
                    .collect(),
            ),
            ..Default::default()
        });
        n
    }

    pub(crate) fn service(name: &str, type_: &str) -> Service {
        let mut s = Service::default();
        s.metadata.name = Some(name.to_string());
        s.metadata.namespace = Some("default".to_string());
        s.spec = Some(ServiceSpec {
            type_: Some(type_.to_string()),
            ip_families: Some(vec!["IPv4".to_string()]),
            ..Default::default()
        });
        s
    }

    fn ips(ingress: &[LoadBalancerIngress]) -> Vec<&str> {
        ingress.iter().filter_map(|i| i.ip.as_deref()).collect()
    }

    #[test]
    fn a_load_balancer_gets_the_internal_ips_of_ready_nodes_sorted_and_deduplicated() {
        let nodes = [
            node(
                "b",
                "True",
                &[("InternalIP", "10.0.0.10"), ("Hostname", "b")],
            ),
            node("a", "True", &[("InternalIP", "10.0.0.9")]),
            node("c", "False", &[("InternalIP", "10.0.0.3")]),
            node("d", "Unknown", &[("InternalIP", "10.0.0.4")]),
            node("e", "True", &[("ExternalIP", "203.0.113.5")]),
            node("f", "True", &[("InternalIP", "10.0.0.9")]),
            node("g", "True", &[("InternalIP", "not-an-ip")]),
        ];
        let svc = service("lb", "LoadBalancer");
        let ingress = desired_ingress(&svc, &nodes);
        assert_eq!(ips(&ingress), ["10.0.0.9", "10.0.0.10"]);
        assert!(
            ingress
                .iter()
                .all(|i| i.hostname.is_none() && i.ports.is_none())
        );
    }

    #[test]
    fn only_addresses_of_the_services_ip_families_are_offered() {
        let nodes = [node(
            "a",
            "True",
            &[("InternalIP", "10.0.0.1"), ("InternalIP", "fd00::1")],
        )];
        let mut svc = service("lb", "LoadBalancer");
        assert_eq!(ips(&desired_ingress(&svc, &nodes)), ["10.0.0.1"]);
        svc.spec.as_mut().unwrap().ip_families = Some(vec!["IPv6".into()]);
        assert_eq!(ips(&desired_ingress(&svc, &nodes)), ["fd00::1"]);
        svc.spec.as_mut().unwrap().ip_families = None;
        assert_eq!(ips(&desired_ingress(&svc, &nodes)), ["10.0.0.1", "fd00::1"]);
    }

    #[test]
    fn other_services_get_no_ingress_and_a_class_hands_a_load_balancer_elsewhere() {
        let nodes = [node("a", "True", &[("InternalIP", "10.0.0.1")])];
        for t in ["ClusterIP", "NodePort", "ExternalName"] {
            assert!(desired_ingress(&service("s", t), &nodes).is_empty(), "{t}");
            assert!(!balanced(&service("s", t)));
        }
        let mut svc = service("lb", "LoadBalancer");
        assert!(balanced(&svc));
        svc.spec.as_mut().unwrap().load_balancer_class = Some("example.com/lb".into());
        assert!(is_load_balancer(&svc) && !balanced(&svc));
    }

    #[test]
    fn the_current_ingress_is_empty_without_a_status() {
        let mut svc = service("lb", "LoadBalancer");
        assert!(current_ingress(&svc).is_empty());
        svc.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some("10.0.0.1".into()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        });
        assert_eq!(ips(current_ingress(&svc)), ["10.0.0.1"]);
    }

    #[test]
    fn only_ready_ness_and_address_changes_change_the_ingress() {
        let ready = NodeOffer::of(&node("a", "True", &[("InternalIP", "10.0.0.1")]));
        let moved = NodeOffer::of(&node("a", "True", &[("InternalIP", "10.0.0.2")]));
        let down = NodeOffer::of(&node("a", "False", &[("InternalIP", "10.0.0.1")]));
        let down_moved = NodeOffer::of(&node("a", "False", &[("InternalIP", "10.0.0.2")]));
        let changes = NodeOffer::changes_ingress;
        assert!(!changes(Some(&ready), Some(&ready.clone())), "a heartbeat");
        assert!(changes(Some(&ready), Some(&moved)));
        assert!(changes(Some(&ready), Some(&down)));
        assert!(changes(Some(&down), Some(&ready)));
        assert!(
            !changes(Some(&down), Some(&down_moved)),
            "NotReady either way"
        );
        assert!(changes(None, Some(&ready)), "a new Ready node");
        assert!(!changes(None, Some(&down)), "a new NotReady node");
        assert!(changes(Some(&ready), None), "a deleted Ready node");
        assert!(!changes(Some(&down), None), "a deleted NotReady node");
    }
}
