//! What the proxy serves, computed from Services, EndpointSlices and Nodes: one
//! [`Frontend`] per Service port, with the endpoints it may send traffic to. Pure,
//! so the rules (which endpoints are eligible, in which order they are tried) are
//! tested without sockets.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label naming the Service an EndpointSlice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The Node annotation carrying the agent's tunnel port (where other nodes' proxies
/// reach this node's endpoints).
pub const PROXY_PORT_ANNOTATION: &str = "tugboat.io/proxy-port";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn parse(p: Option<&str>) -> Option<Protocol> {
        match p.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

/// Where an endpoint is reached from this node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// On this node: straight to the pod.
    Local,
    /// On another node: through that node's agent tunnel at this address
    /// (whose certificate must name that node).
    Via { addr: SocketAddr, node: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The pod's address and resolved target port.
    pub addr: SocketAddr,
    pub node: Option<String>,
    pub route: Route,
    /// Ready and not terminating: gets new connections.
    pub ready: bool,
    /// Ready, even if terminating: used only when no endpoint is `ready`
    /// (Kubernetes' ProxyTerminatingEndpoints).
    pub serving: bool,
    pub terminating: bool,
}

/// One Service port as this node serves it.
#[derive(Clone, Debug, PartialEq)]
pub struct Frontend {
    /// `namespace/name:port` (the port's name, or its number when unnamed).
    pub key: String,
    pub protocol: Protocol,
    /// Listened on at this node's address when set (NodePort and LoadBalancer).
    pub node_port: Option<u16>,
    /// The ClusterIP and port, when the Service has one.
    pub cluster: Option<SocketAddr>,
    /// Endpoints in a stable order (by address).
    pub endpoints: Vec<Endpoint>,
    /// `sessionAffinity: ClientIP`, with its timeout.
    pub affinity: Option<Duration>,
    /// `externalTrafficPolicy: Local`: node-port traffic only to this node's endpoints.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`: ClusterIP traffic only to this node's endpoints.
    pub internal_local: bool,
    /// Set when an autoscaler scales the Service from zero: a connection that
    /// finds no endpoint is held while the controller is asked for one.
    pub activator: Option<Activator>,
}

/// A Service an autoscaler wakes from zero ([`tugboat_api::metrics::ACTIVATOR_ANNOTATION`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Activator {
    pub namespace: String,
    pub service: String,
    /// The port speaks HTTP (named `http` or `http-…`, or its appProtocol says
    /// so): a connection held too long is answered 503 rather than closed.
    pub http: bool,
}

impl Frontend {
    /// The endpoints a new connection may try, in order: ready ones (this node's
    /// only, when `local_only`), starting at `turn` (round-robin), with `sticky`
    /// (the client's affinity endpoint) first; when none is ready, the serving
    /// terminating ones. Failed ones are tried last.
    pub fn candidates(
        &self,
        local_only: bool,
        turn: usize,
        sticky: Option<SocketAddr>,
        failed: &dyn Fn(SocketAddr) -> bool,
    ) -> Vec<Endpoint> {
        let eligible = |e: &&Endpoint| !local_only || e.route == Route::Local;
        let mut pool: Vec<&Endpoint> = self
            .endpoints
            .iter()
            .filter(|e| e.ready)
            .filter(eligible)
            .collect();
        if pool.is_empty() {
            pool = self
                .endpoints
                .iter()
                .filter(|e| e.serving && e.terminating)
                .filter(eligible)
                .collect();
        }
        if pool.is_empty() {
            return Vec::new();
        }
        let start = turn % pool.len();
        pool.rotate_left(start);
        if let Some(s) = sticky
            && let Some(i) = pool.iter().position(|e| e.addr == s)
        {
            let e = pool.remove(i);
            pool.insert(0, e);
        }
        let (fresh, stale): (Vec<&Endpoint>, Vec<&Endpoint>) =
            pool.into_iter().partition(|e| !failed(e.addr));
        fresh.into_iter().chain(stale).cloned().collect()
    }

    /// Is `addr` one of this Service port's endpoints on this node (what the
    /// tunnel accepts to connect to)?
    pub fn has_local(&self, addr: SocketAddr) -> bool {
        self.endpoints
            .iter()
            .any(|e| e.addr == addr && e.route == Route::Local)
    }
}

/// Every Service port of the cluster as node `me` serves it.
pub fn build(
    me: &str,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    nodes: &[Arc<Node>],
) -> Vec<Frontend> {
    let tunnels: HashMap<&str, SocketAddr> = nodes.iter().filter_map(|n| tunnel_of(n)).collect();
    // Slices by (namespace, service name).
    let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for s in slices {
        let ns = s.metadata.namespace.as_deref().unwrap_or("default");
        if let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        {
            by_service.entry((ns, svc.as_str())).or_default().push(s);
        }
    }
    let mut out = Vec::new();
    for svc in services {
        let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
        let Some(name) = svc.metadata.name.as_deref() else {
            continue;
        };
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        let cluster_ip: Option<IpAddr> = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| *ip != "None")
            .and_then(|ip| ip.parse().ok());
        let node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            let secs = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(10800);
            Duration::from_secs(u64::try_from(secs).unwrap_or(10800))
        });
        let activator = svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(tugboat_api::metrics::ACTIVATOR_ANNOTATION))
            .is_some_and(|v| !v.is_empty());
        let slices = by_service
            .get(&(ns, name))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for port in spec.ports.iter().flatten() {
            let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
                continue;
            };
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            let port_name = port.name.clone().unwrap_or_default();
            let key = if port_name.is_empty() {
                format!("{ns}/{name}:{number}")
            } else {
                format!("{ns}/{name}:{port_name}")
            };
            let mut endpoints: BTreeMap<SocketAddr, Endpoint> = BTreeMap::new();
            for slice in slices {
                if slice.address_type != "IPv4" {
                    continue;
                }
                // The slice's port of this name and protocol: the target port
                // resolved for every endpoint of this slice.
                let Some(target) = slice.ports.iter().flatten().find(|p| {
                    p.name.clone().unwrap_or_default() == port_name
                        && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
                }) else {
                    continue;
                };
                let Some(target) = target.port.and_then(|p| u16::try_from(p).ok()) else {
                    continue;
                };
                for ep in &slice.endpoints {
                    let cond = ep.conditions.as_ref();
                    let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
                    // Unset `ready` means ready (the API's rule).
                    let ready = cond.and_then(|c| c.ready).unwrap_or(true) && !terminating;
                    let serving = cond
                        .and_then(|c| c.serving)
                        .or(cond.and_then(|c| c.ready))
                        .unwrap_or(true);
                    let route = match ep.node_name.as_deref() {
                        Some(n) if n == me => Route::Local,
                        Some(n) => match tunnels.get(n) {
                            Some(t) => Route::Via {
                                addr: *t,
                                node: n.to_string(),
                            },
                            // A node that does not (yet) publish a tunnel
                            // cannot be reached.
                            None => continue,
                        },
                        // No node: reachable only if it is ours to reach.
                        None => Route::Local,
                    };
                    for a in &ep.addresses {
                        let Ok(ip) = a.parse::<IpAddr>() else {
                            continue;
                        };
                        // Never this node itself or its link-local neighbours
                        // (the API refuses them too; a slice stored before it
                        // did must not make every node a relay to them).
                        if tugboat_api::validation::special_ip(ip).is_some() {
                            continue;
                        }
                        let addr = SocketAddr::new(ip, target);
                        endpoints.insert(
                            addr,
                            Endpoint {
                                addr,
                                node: ep.node_name.clone(),
                                route: route.clone(),
                                ready,
                                serving,
                                terminating,
                            },
                        );
                    }
                }
            }
            let node_port = port
                .node_port
                .filter(|_| node_ports)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0);
            out.push(Frontend {
                key,
                protocol,
                node_port,
                cluster: cluster_ip.map(|ip| SocketAddr::new(ip, number)),
                endpoints: endpoints.into_values().collect(),
                affinity,
                external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
                internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
                activator: activator.then(|| Activator {
                    namespace: ns.to_string(),
                    service: name.to_string(),
                    http: protocol == Protocol::Tcp
                        && (port_name == "http"
                            || port_name.starts_with("http-")
                            || port
                                .app_protocol
                                .as_deref()
                                .is_some_and(|p| p == "http" || p == "kubernetes.io/h2c")),
                }),
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key).then(a.protocol.cmp(&b.protocol)));
    out
}

/// A node's tunnel address: its InternalIP and the port it publishes.
pub fn tunnel_of(node: &Node) -> Option<(&str, SocketAddr)> {
    let name = node.metadata.name.as_deref()?;
    let port: u16 = node
        .metadata
        .annotations
        .as_ref()?
        .get(PROXY_PORT_ANNOTATION)?
        .parse()
        .ok()?;
    let ip: IpAddr = node
        .status
        .as_ref()?
        .addresses
        .iter()
        .flatten()
        .find(|a| a.type_ == "InternalIP")?
        .address
        .parse()
        .ok()?;
    Some((name, SocketAddr::new(ip, port)))
}

#[cfg(test)]
mod tests;
