//! The pod sandbox (Kubernetes' pause container): one small container per pod
//! that holds the pod's network namespace — its IP, hostname, /etc/hosts,
//! resolv.conf and published `hostPort`s — which every app container joins
//! (Docker's `container:<id>` network mode). The pod IP is the sandbox's.
//!
//! What to do about the sandbox is decided here, purely, from the pod's
//! containers in Docker ([`plan`]): use the running one, start one that was
//! created, create the first, or — when it died — kill the app containers and
//! create the next one (the kubelet's "SandboxChanged"). Pods whose containers
//! were started before sandboxes existed run on unchanged until they stop
//! (fail-static, [`SandboxPlan::Legacy`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::act::{PodNet, pod_hostname};
use super::plan::RestartPolicy;
use crate::runtime::{
    ContainerInfo, ContainerSpec, LABEL_ATTEMPT, LABEL_CONTAINER_NAME, LABEL_NODE, LABEL_POD_NAME,
    LABEL_POD_NAMESPACE, LABEL_POD_UID,
};
use crate::sink::pod_key;

/// What a pod's container is: [`TYPE_SANDBOX`] or [`TYPE_CONTAINER`] (the label
/// and values dockershim used).
pub const LABEL_CONTAINER_TYPE: &str = "io.kubernetes.docker.type";
pub const TYPE_SANDBOX: &str = "podsandbox";
pub const TYPE_CONTAINER: &str = "container";
/// The sandbox's container name label (as dockershim's): no pod container can
/// be called this (container names are lower case).
pub const SANDBOX_NAME: &str = "POD";
/// On an app container: the ID of the sandbox whose network it joined. A pod
/// container without it was started before sandboxes (see [`SandboxPlan::Legacy`]).
pub const LABEL_SANDBOX_ID: &str = "io.tugboat.sandbox";

/// The image and arguments sandboxes run (`tug agent --pod-infra-image`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfra {
    pub image: String,
    /// Replaces the image's cmd (`None`: the image's own).
    pub args: Option<Vec<String>>,
}

impl Default for PodInfra {
    /// `tug pause` in the image every agent builds from its own binary at start
    /// (the node's service sandbox image), so a node needs nothing else to run
    /// pods: no registry, no sample image.
    fn default() -> Self {
        PodInfra {
            image: crate::proxy::sandbox::SANDBOX_IMAGE.to_string(),
            args: None,
        }
    }
}

impl PodInfra {
    /// `image`, with `pause` as the command when it is the sample image
    /// (`tug-sample pause`); any other image pauses on its own, as
    /// `registry.k8s.io/pause` and the default do.
    pub fn with_image(image: &str) -> PodInfra {
        PodInfra {
            args: (image == crate::image::SAMPLE_IMAGE).then(|| vec!["pause".to_string()]),
            image: image.to_string(),
        }
    }
}

pub fn is_sandbox(info: &ContainerInfo) -> bool {
    info.labels.get(LABEL_CONTAINER_TYPE).map(String::as_str) == Some(TYPE_SANDBOX)
}

/// The pod's sandboxes in Docker, oldest first.
pub fn sandboxes(existing: &[ContainerInfo]) -> Vec<&ContainerInfo> {
    let mut all: Vec<&ContainerInfo> = existing.iter().filter(|i| is_sandbox(i)).collect();
    all.sort_by_key(|i| i.attempt());
    all
}

/// The pod's app (and init) containers in Docker: everything but sandboxes.
pub fn app_containers(existing: &[ContainerInfo]) -> Vec<&ContainerInfo> {
    existing.iter().filter(|i| !is_sandbox(i)).collect()
}

/// What to do about the pod's sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SandboxPlan<'a> {
    /// It runs: containers join it.
    Ready(&'a ContainerInfo),
    /// Created but never started (the agent stopped in between).
    StartCreated(&'a ContainerInfo),
    /// Make attempt `attempt`, first stopping `kill` (app containers in the
    /// previous sandbox's namespace, which died with it); `changed` when a
    /// previous sandbox existed (the `SandboxChanged` event).
    Create {
        attempt: u32,
        kill: Vec<&'a ContainerInfo>,
        changed: bool,
    },
    /// The pod's containers started before sandboxes existed and some still
    /// run: leave them be, each on its own network as before.
    Legacy,
    /// The sandbox died and the pod is not to be restarted (`restartPolicy:
    /// Never` after its containers ran): no new sandbox, no new containers.
    Dead,
}

/// The plan for the sandbox given the pod's containers in Docker.
pub fn plan(existing: &[ContainerInfo], policy: RestartPolicy) -> SandboxPlan<'_> {
    let apps = app_containers(existing);
    match sandboxes(existing).last().copied() {
        Some(s) if s.state.running => SandboxPlan::Ready(s),
        Some(s) if s.state.status == "created" => SandboxPlan::StartCreated(s),
        Some(s) => {
            if policy == RestartPolicy::Never && !apps.is_empty() {
                return SandboxPlan::Dead;
            }
            SandboxPlan::Create {
                attempt: s.attempt() + 1,
                kill: apps.into_iter().filter(|a| a.state.running).collect(),
                changed: true,
            }
        }
        None => {
            let legacy_running = apps
                .iter()
                .any(|a| a.state.running && !a.labels.contains_key(LABEL_SANDBOX_ID));
            if legacy_running {
                SandboxPlan::Legacy
            } else {
                SandboxPlan::Create {
                    attempt: 0,
                    kill: Vec::new(),
                    changed: false,
                }
            }
        }
    }
}

/// The domain of the pod's FQDN: `subdomain.ns.svc.DOMAIN` when it has a
/// `spec.subdomain` (then its FQDN is `hostname.subdomain.ns.svc.DOMAIN`).
pub fn pod_domain(pod: &Pod, cluster_domain: &str) -> Option<String> {
    let sub = pod
        .spec
        .as_ref()
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty())?;
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    Some(format!("{sub}.{ns}.svc.{cluster_domain}"))
}

/// What the sandbox of `pod` is created as: the pod's labels (so the label
/// searches that find its containers find it) with [`SANDBOX_NAME`] and
/// [`TYPE_SANDBOX`]; the pod's hostname and domain, DNS, network and every
/// container's ports (the `hostPort`s are published here).
pub struct SandboxSpec<'a> {
    pub pod: &'a Pod,
    pub node: &'a str,
    pub infra: &'a PodInfra,
    pub network: Option<String>,
    pub host_port_ip: Option<&'a str>,
    pub net: &'a PodNet,
    pub cluster_domain: &'a str,
    pub attempt: u32,
}

impl SandboxSpec<'_> {
    pub fn spec(&self) -> ContainerSpec {
        let pod = self.pod;
        let (ns, name) = pod_key(pod);
        let uid = pod.metadata.uid.as_deref().unwrap_or("");
        let labels = BTreeMap::from([
            (LABEL_POD_NAME.to_string(), name.to_string()),
            (LABEL_POD_NAMESPACE.to_string(), ns.to_string()),
            (LABEL_POD_UID.to_string(), uid.to_string()),
            (LABEL_CONTAINER_NAME.to_string(), SANDBOX_NAME.to_string()),
            (LABEL_CONTAINER_TYPE.to_string(), TYPE_SANDBOX.to_string()),
            (LABEL_NODE.to_string(), self.node.to_string()),
            (LABEL_ATTEMPT.to_string(), self.attempt.to_string()),
        ]);
        let spec = pod.spec.clone().unwrap_or_default();
        let ports = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| super::act::port_mapping(p, self.host_port_ip))
            .collect();
        ContainerSpec {
            name: format!("tug_{ns}_{name}_{SANDBOX_NAME}_{}", self.attempt),
            image: self.infra.image.clone(),
            args: self.infra.args.clone(),
            labels,
            ports,
            hostname: Some(pod_hostname(spec.hostname.as_deref(), name)),
            domainname: pod_domain(pod, self.cluster_domain),
            network: self.network.clone(),
            dns: self.net.dns.servers.clone(),
            dns_search: self.net.dns.search.clone(),
            dns_options: self.net.dns.options.clone(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ContainerState;

    fn info(
        id: &str,
        name: &str,
        attempt: u32,
        status: &str,
        sandbox: Option<&str>,
    ) -> ContainerInfo {
        let mut labels = BTreeMap::from([
            (LABEL_CONTAINER_NAME.to_string(), name.to_string()),
            (LABEL_ATTEMPT.to_string(), attempt.to_string()),
        ]);
        if name == SANDBOX_NAME {
            labels.insert(LABEL_CONTAINER_TYPE.into(), TYPE_SANDBOX.into());
        }
        if let Some(s) = sandbox {
            labels.insert(LABEL_SANDBOX_ID.into(), s.into());
        }
        ContainerInfo {
            id: id.into(),
            labels,
            state: ContainerState {
                running: status == "running",
                status: status.into(),
                exit_code: (status == "exited").then_some(0),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_new_pod_gets_its_first_sandbox() {
        assert_eq!(
            plan(&[], RestartPolicy::Always),
            SandboxPlan::Create {
                attempt: 0,
                kill: vec![],
                changed: false
            }
        );
    }

    #[test]
    fn a_running_sandbox_is_used_and_a_created_one_started() {
        let running = [info("s", SANDBOX_NAME, 0, "running", None)];
        assert!(
            matches!(plan(&running, RestartPolicy::Always), SandboxPlan::Ready(s) if s.id == "s")
        );
        let created = [info("s", SANDBOX_NAME, 0, "created", None)];
        assert!(matches!(
            plan(&created, RestartPolicy::Always),
            SandboxPlan::StartCreated(_)
        ));
    }

    #[test]
    fn a_dead_sandbox_is_replaced_and_its_containers_killed() {
        let existing = [
            info("s0", SANDBOX_NAME, 0, "exited", None),
            info("a", "app", 0, "running", Some("s0")),
            info("b", "side", 0, "exited", Some("s0")),
        ];
        match plan(&existing, RestartPolicy::Always) {
            SandboxPlan::Create {
                attempt,
                kill,
                changed,
            } => {
                assert_eq!(attempt, 1);
                assert!(changed);
                assert_eq!(
                    kill.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
                    ["a"]
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(plan(&existing, RestartPolicy::Never), SandboxPlan::Dead);
    }

    #[test]
    fn containers_from_before_sandboxes_keep_running() {
        let legacy = [info("a", "app", 0, "running", None)];
        assert_eq!(plan(&legacy, RestartPolicy::Always), SandboxPlan::Legacy);
        // Once they stopped, the pod moves into a sandbox at its next start.
        let stopped = [info("a", "app", 0, "exited", None)];
        assert!(matches!(
            plan(&stopped, RestartPolicy::Always),
            SandboxPlan::Create { attempt: 0, .. }
        ));
    }

    #[test]
    fn the_sandbox_holds_hostname_domain_ports_and_dns() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "team", "uid": "u1"},
            "spec": {"hostname": "db-0", "subdomain": "db", "containers": [
                {"name": "a", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}]},
                {"name": "b", "image": "x", "ports": [{"containerPort": 53, "protocol": "UDP"}]}
            ]}
        }))
        .unwrap();
        let mut net = PodNet::default();
        net.dns.servers = vec!["10.96.0.10".into()];
        let spec = SandboxSpec {
            pod: &pod,
            node: "n1",
            infra: &PodInfra::default(),
            network: Some("tugnet".into()),
            host_port_ip: None,
            net: &net,
            cluster_domain: "cluster.local",
            attempt: 2,
        }
        .spec();
        assert_eq!(spec.name, "tug_team_web-0_POD_2");
        assert_eq!(spec.image, "tugboat/sandbox:latest");
        assert_eq!(spec.args, None, "the image's own `tug pause`");
        let sample = PodInfra::with_image(crate::image::SAMPLE_IMAGE);
        assert_eq!(sample.args, Some(vec!["pause".to_string()]));
        assert_eq!(spec.hostname.as_deref(), Some("db-0"));
        assert_eq!(
            spec.domainname.as_deref(),
            Some("db.team.svc.cluster.local")
        );
        assert_eq!(spec.ports.len(), 2);
        assert_eq!(spec.ports[0].host_port, Some(8080));
        assert_eq!(spec.ports[1].protocol, "udp");
        assert_eq!(spec.dns, ["10.96.0.10"]);
        assert_eq!(spec.labels[LABEL_CONTAINER_TYPE], TYPE_SANDBOX);
        assert_eq!(spec.labels[LABEL_CONTAINER_NAME], SANDBOX_NAME);
        assert_eq!(spec.labels[LABEL_POD_UID], "u1");
        assert_eq!(spec.network.as_deref(), Some("tugnet"));
    }
}
