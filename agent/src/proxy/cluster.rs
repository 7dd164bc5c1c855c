//! What a pod gets from the cluster's Service network when it starts: its
//! resolv.conf (as the kubelet writes it for each `dnsPolicy`), the Service
//! environment variables, and the route to the node's service sandbox.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::RwLock;

use k8s_openapi::api::core::v1::{Pod, Service};
use tugboat_runtime::reflector::Store;

use super::sandbox::{self, Cidr, Sandbox};

/// How the node takes part in ClusterIPs and cluster DNS.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The Service range (the controller's `--service-cidr`).
    pub service_cidr: Cidr,
    /// The cluster DNS server's address (in the range; by default its 10th).
    pub dns_ip: Ipv4Addr,
    /// `cluster.local`.
    pub domain: String,
    /// Where names outside the cluster domain are asked.
    pub upstream: Vec<SocketAddr>,
}

impl ClusterConfig {
    pub fn new(service_cidr: Cidr, upstream: Vec<SocketAddr>) -> Self {
        ClusterConfig {
            service_cidr,
            dns_ip: service_cidr.nth(10),
            domain: "cluster.local".into(),
            upstream,
        }
    }
}

/// The name servers in a resolv.conf (`nameserver` lines), on port 53.
pub fn resolv_conf_servers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The Service network as this node's pods see it.
pub struct ClusterNet {
    pub config: Option<ClusterConfig>,
    /// Services, as the proxy watches them (for the environment variables).
    pub services: Store<Service>,
    sandbox: RwLock<Option<Sandbox>>,
    /// The last failure to set the sandbox up, and when (retried after
    /// [`RETRY_FAILED`]).
    failure: std::sync::Mutex<Option<(String, std::time::Instant)>>,
}

/// How long after a failed sandbox set-up it is tried again.
const RETRY_FAILED: std::time::Duration = std::time::Duration::from_secs(10);

/// A container's resolv.conf settings (all empty: Docker's default, the host's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodDns {
    pub servers: Vec<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl ClusterNet {
    pub fn new(config: Option<ClusterConfig>, services: Store<Service>) -> Self {
        ClusterNet {
            config,
            services,
            sandbox: RwLock::new(None),
            failure: std::sync::Mutex::new(None),
        }
    }

    /// May the sandbox be checked now (not within a minute of a failure)?
    pub(super) fn may_check(&self) -> bool {
        let f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        f.as_ref()
            .is_none_or(|(_, at)| at.elapsed() >= RETRY_FAILED)
    }

    /// Records a failure; true when it is new (worth logging).
    pub(super) fn failed(&self, why: &str) -> bool {
        let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        let new = f.as_ref().is_none_or(|(w, _)| w != why);
        *f = Some((why.to_string(), std::time::Instant::now()));
        new
    }

    pub fn sandbox(&self) -> Option<Sandbox> {
        self.sandbox
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn set_sandbox(&self, sandbox: Option<Sandbox>) {
        if sandbox.is_some() {
            *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        *self.sandbox.write().unwrap_or_else(|e| e.into_inner()) = sandbox;
    }

    /// Cluster DNS, when this node serves it.
    fn dns(&self) -> Option<&ClusterConfig> {
        self.config.as_ref().filter(|_| self.sandbox().is_some())
    }

    /// The cluster's DNS domain (`cluster.local` unless configured).
    pub fn cluster_domain(&self) -> String {
        self.config
            .as_ref()
            .map(|c| c.domain.clone())
            .unwrap_or_else(|| "cluster.local".to_string())
    }

    /// The pod's resolv.conf, as the kubelet makes it: `ClusterFirst` (the
    /// default) asks the cluster DNS with the Kubernetes search path and
    /// `ndots:5` (the host's resolv.conf when there is no cluster DNS), `Default`
    /// the host's, `None` only `dnsConfig`; `dnsConfig` is added to the others.
    pub fn pod_dns(&self, pod: &Pod) -> PodDns {
        let spec = pod.spec.as_ref();
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let policy = spec
            .and_then(|s| s.dns_policy.as_deref())
            .unwrap_or("ClusterFirst");
        let mut dns = PodDns::default();
        if matches!(policy, "ClusterFirst" | "ClusterFirstWithHostNet")
            && let Some(c) = self.dns()
        {
            dns.servers.push(c.dns_ip.to_string());
            dns.search = vec![
                format!("{ns}.svc.{}", c.domain),
                format!("svc.{}", c.domain),
                c.domain.clone(),
            ];
            dns.options.push("ndots:5".into());
        }
        if let Some(conf) = spec.and_then(|s| s.dns_config.as_ref()) {
            dns.servers
                .extend(conf.nameservers.iter().flatten().cloned());
            dns.search.extend(conf.searches.iter().flatten().cloned());
            for o in conf.options.iter().flatten() {
                let Some(name) = o.name.as_deref() else {
                    continue;
                };
                dns.options.retain(|x| x.split(':').next() != Some(name));
                dns.options.push(match o.value.as_deref() {
                    Some(v) => format!("{name}:{v}"),
                    None => name.to_string(),
                });
            }
        }
        // resolv.conf keeps at most 3 name servers and 32 search domains.
        dns.servers.truncate(3);
        let mut seen = BTreeSet::new();
        dns.search.retain(|s| seen.insert(s.clone()));
        dns.search.truncate(32);
        dns
    }

    /// The Kubernetes Service environment variables for a pod in `ns`
    /// (`WEB_SERVICE_HOST`, `WEB_SERVICE_PORT`, `WEB_PORT_80_TCP_ADDR`…), for the
    /// Services with a ClusterIP that exist now, unless `enableServiceLinks` is
    /// false.
    pub fn service_env(&self, pod: &Pod) -> Vec<(String, String)> {
        let spec = pod.spec.as_ref();
        if spec.and_then(|s| s.enable_service_links) == Some(false) {
            return Vec::new();
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut services: Vec<_> = self
            .services
            .state()
            .into_iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
            .collect();
        services.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let mut env = Vec::new();
        for svc in services {
            env.extend(env_of(&svc));
        }
        env
    }

    /// Routes a just-started container's Service traffic to the sandbox.
    pub fn attach(&self, pid: i64) -> Result<(), super::netns::NetnsError> {
        match (self.config.as_ref(), self.sandbox()) {
            (Some(c), Some(s)) => sandbox::route_pod(pid, c.service_cidr, s.ip),
            _ => Ok(()),
        }
    }
}

/// One Service's variables, as the kubelet's `makeEnvironmentVariables` writes them.
fn env_of(svc: &Service) -> Vec<(String, String)> {
    let (Some(name), Some(spec)) = (svc.metadata.name.as_deref(), svc.spec.as_ref()) else {
        return Vec::new();
    };
    let Some(ip) = spec
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
    else {
        return Vec::new();
    };
    let ports: Vec<_> = spec.ports.iter().flatten().collect();
    let Some(first) = ports.first() else {
        return Vec::new();
    };
    let prefix = name.to_ascii_uppercase().replace('-', "_");
    let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
        p.protocol.clone().unwrap_or_else(|| "TCP".into())
    };
    let mut env = vec![
        (format!("{prefix}_SERVICE_HOST"), ip.to_string()),
        (format!("{prefix}_SERVICE_PORT"), first.port.to_string()),
    ];
    for p in &ports {
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            env.push((
                format!(
                    "{prefix}_SERVICE_PORT_{}",
                    n.to_ascii_uppercase().replace('-', "_")
                ),
                p.port.to_string(),
            ));
        }
    }
    env.push((
        format!("{prefix}_PORT"),
        format!(
            "{}://{ip}:{}",
            proto(first).to_ascii_lowercase(),
            first.port
        ),
    ));
    for p in &ports {
        let pr = proto(p);
        let base = format!("{prefix}_PORT_{}_{}", p.port, pr.to_ascii_uppercase());
        env.push((
            base.clone(),
            format!("{}://{ip}:{}", pr.to_ascii_lowercase(), p.port),
        ));
        env.push((format!("{base}_PROTO"), pr.to_ascii_lowercase()));
        env.push((format!("{base}_PORT"), p.port.to_string()));
        env.push((format!("{base}_ADDR"), ip.to_string()));
    }
    env
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "shop"}, "spec": spec}),
        )
        .unwrap()
    }

    fn net_with_sandbox() -> ClusterNet {
        let cidr = Cidr::parse("10.96.0.0/16").unwrap();
        let net = ClusterNet::new(
            Some(ClusterConfig::new(cidr, vec![])),
            tugboat_runtime::reflector::Writer::new().store(),
        );
        net.set_sandbox(Some(Sandbox {
            id: "x".into(),
            pid: 1,
            ip: Ipv4Addr::new(172, 17, 0, 9),
        }));
        net
    }

    #[test]
    fn cluster_first_gets_the_cluster_dns_and_the_search_path() {
        let dns = net_with_sandbox().pod_dns(&pod(json!({"containers": []})));
        assert_eq!(dns.servers, ["10.96.0.10"]);
        assert_eq!(
            dns.search,
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        assert_eq!(dns.options, ["ndots:5"]);
    }

    #[test]
    fn dns_policy_and_dns_config_are_honoured() {
        let net = net_with_sandbox();
        let d = net.pod_dns(&pod(json!({"containers": [], "dnsPolicy": "Default"})));
        assert_eq!(d, PodDns::default(), "Default: the host's resolv.conf");
        let d = net.pod_dns(&pod(json!({"containers": [], "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["1.2.3.4"], "searches": ["a.example"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}})));
        assert_eq!(d.servers, ["1.2.3.4"]);
        assert_eq!(d.search, ["a.example"]);
        assert_eq!(d.options, ["ndots:2", "edns0"]);
        let d = net.pod_dns(&pod(json!({"containers": [],
            "dnsConfig": {"options": [{"name": "ndots", "value": "1"}]}})));
        assert_eq!(
            d.options,
            ["ndots:1"],
            "dnsConfig overrides an option by name"
        );
        let none = ClusterNet::new(None, tugboat_runtime::reflector::Writer::new().store());
        assert_eq!(
            none.pod_dns(&pod(json!({"containers": []}))),
            PodDns::default(),
            "without cluster DNS, ClusterFirst falls back to the host's"
        );
    }

    #[test]
    fn service_variables_are_named_as_the_kubelet_names_them() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web-api", "namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.20", "ports": [
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"}]}}))
        .unwrap();
        let env: std::collections::BTreeMap<_, _> = env_of(&svc).into_iter().collect();
        assert_eq!(env["WEB_API_SERVICE_HOST"], "10.96.0.20");
        assert_eq!(env["WEB_API_SERVICE_PORT"], "80");
        assert_eq!(env["WEB_API_SERVICE_PORT_HTTP"], "80");
        assert_eq!(env["WEB_API_PORT"], "tcp://10.96.0.20:80");
        assert_eq!(env["WEB_API_PORT_53_UDP"], "udp://10.96.0.20:53");
        assert_eq!(env["WEB_API_PORT_53_UDP_ADDR"], "10.96.0.20");
        let headless: Service = serde_json::from_value(json!({
            "metadata": {"name": "h", "namespace": "shop"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}))
        .unwrap();
        assert!(env_of(&headless).is_empty());
    }
}
