//! The worker's I/O: carries the decided steps out through the
//! [`ContainerRuntime`](crate::runtime::ContainerRuntime) (images, create, start,
//! stop, remove) and records the events a kubelet would, through the
//! [`PodSink`](crate::sink::PodSink).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use tugboat_api::quantity;
use tugboat_runtime::events::EventType;

use super::plan::ImageProblem;
use super::sandbox::{LABEL_CONTAINER_TYPE, LABEL_SANDBOX_ID, SandboxSpec, TYPE_CONTAINER};
use crate::AgentCtx;
use crate::proxy::cluster::PodDns;
use crate::runtime::{
    ContainerInfo, ContainerSpec, LABEL_ATTEMPT, LABEL_CONTAINER_NAME, LABEL_NODE, LABEL_POD_NAME,
    LABEL_POD_NAMESPACE, LABEL_POD_UID, Mount, PortMapping, RuntimeError,
};
use crate::sink::pod_key;

/// The agent and the pod a step is about.
pub struct Act {
    pub ctx: Arc<AgentCtx>,
    pub pod: Arc<Pod>,
}

impl Act {
    pub fn new(ctx: &Arc<AgentCtx>, pod: &Arc<Pod>) -> Act {
        Act {
            ctx: ctx.clone(),
            pod: pod.clone(),
        }
    }

    pub async fn normal(&self, reason: &str, message: &str) {
        self.ctx
            .sink
            .event(&self.pod, EventType::Normal, reason, message)
            .await;
    }

    pub async fn warning(&self, reason: &str, message: &str) {
        self.ctx
            .sink
            .event(&self.pod, EventType::Warning, reason, message)
            .await;
    }

    /// The image present, or pulled per `imagePullPolicy`.
    pub async fn ensure_image(&self, c: &Container) -> Result<(), ImageProblem> {
        let problem = |reason: &str, message: String| ImageProblem {
            reason: reason.to_string(),
            message,
        };
        let image = c.image.clone().unwrap_or_default();
        let policy = c
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| tugboat_api::defaults::image_pull_policy(&image).to_string());
        let runtime = &self.ctx.runtime;
        let present = self
            .ctx
            .images
            .present(&image, || async {
                Ok::<_, RuntimeError>(runtime.image_id(&image).await?.is_some())
            })
            .await
            .map_err(|e| problem("ErrImagePull", e.to_string()))?;
        match policy.as_str() {
            "Never" if !present => Err(problem(
                "ErrImageNeverPull",
                format!("Container image \"{image}\" is not present with pull policy of Never"),
            )),
            "IfNotPresent" | "Never" if present => {
                self.normal(
                    "Pulled",
                    &format!("Container image \"{image}\" already present on machine"),
                )
                .await;
                Ok(())
            }
            _ => {
                self.normal("Pulling", &format!("Pulling image \"{image}\""))
                    .await;
                let started = std::time::Instant::now();
                match self.ctx.runtime.pull_image(&image).await {
                    Ok(()) => {
                        self.ctx.images.saw(&image).await;
                        self.normal(
                            "Pulled",
                            &format!(
                                "Successfully pulled image \"{image}\" in {:.3}s",
                                started.elapsed().as_secs_f64()
                            ),
                        )
                        .await;
                        Ok(())
                    }
                    // No registry here is the normal case: a local image will do, as
                    // Docker Swarm does when it cannot resolve a digest.
                    Err(e) if present => {
                        self.warning(
                            "Pulled",
                            &format!(
                                "Could not pull image \"{image}\" ({e}); using the local image"
                            ),
                        )
                        .await;
                        Ok(())
                    }
                    Err(RuntimeError::Pull { message, .. }) => {
                        Err(problem("ErrImagePull", message))
                    }
                    Err(e) => Err(problem("ErrImagePull", e.to_string())),
                }
            }
        }
    }

    /// Records why the image is not there, as a kubelet does.
    pub async fn image_failed(&self, c: &Container, p: &ImageProblem) {
        self.warning(
            "Failed",
            &format!(
                "Failed to pull image \"{}\": {}",
                c.image.as_deref().unwrap_or(""),
                p.message
            ),
        )
        .await;
        self.warning("Failed", &format!("Error: {}", p.reason))
            .await;
    }

    /// What the pod's containers get from the Service network.
    pub fn pod_net(&self) -> PodNet {
        PodNet {
            dns: self.ctx.cluster.pod_dns(&self.pod),
            service_env: self.ctx.cluster.service_env(&self.pod),
        }
    }

    /// Creates and starts attempt `attempt` of the pod's sandbox; returns its ID.
    /// Its Service route is set here, once for every container of the pod.
    pub async fn start_sandbox(&self, attempt: u32) -> Result<String, RuntimeError> {
        let net = self.pod_net();
        let domain = self.ctx.cluster.cluster_domain();
        let spec = SandboxSpec {
            pod: &self.pod,
            node: &self.ctx.node,
            infra: &self.ctx.pod_infra,
            network: self.ctx.network.clone(),
            host_port_ip: self.ctx.host_port_ip.as_deref(),
            net: &net,
            cluster_domain: &domain,
            attempt,
        }
        .spec();
        let id = match self.ctx.runtime.create(&spec).await {
            Ok(id) => id,
            Err(e) => {
                // Perhaps the image went away since it was seen.
                self.ctx.images.forget(&spec.image).await;
                return Err(e);
            }
        };
        self.ctx.runtime.start(&id).await?;
        self.route_services(&id).await;
        let (ns, name) = pod_key(&self.pod);
        tracing::info!(pod = %format!("{ns}/{name}"), attempt, id = %short(&id), "pod sandbox started");
        Ok(id)
    }

    /// The sandbox image present, or pulled.
    pub async fn ensure_sandbox_image(&self) -> Result<(), String> {
        let image = &self.ctx.pod_infra.image;
        let runtime = &self.ctx.runtime;
        let present = self
            .ctx
            .images
            .present(image, || async {
                Ok::<_, RuntimeError>(runtime.image_id(image).await?.is_some())
            })
            .await
            .map_err(|e| e.to_string())?;
        if present {
            return Ok(());
        }
        self.ctx.runtime.pull_image(image).await.map_err(|e| {
            format!("the pod sandbox image \"{image}\" is not present and cannot be pulled: {e}")
        })?;
        self.ctx.images.saw(image).await;
        Ok(())
    }

    /// Creates and starts attempt `attempt` of container `c`, as `setup` says
    /// (its sandbox, environment, command and mounts).
    pub async fn start_container(
        &self,
        c: &Container,
        attempt: u32,
        setup: &ContainerSetup,
    ) -> Result<(), RuntimeError> {
        let mut spec = container_spec(
            &self.pod,
            c,
            attempt,
            &self.ctx.node,
            self.ctx.network.clone(),
            self.ctx.host_port_ip.as_deref(),
            setup,
        );
        spec.env = setup.env.clone();
        spec.command = setup.command.clone();
        spec.args = setup.args.clone();
        spec.mounts = setup.mounts.clone();
        let id = match self.ctx.runtime.create(&spec).await {
            Ok(id) => id,
            Err(e) => {
                // Perhaps the image went away since it was seen.
                self.ctx.images.forget(&spec.image).await;
                self.warning("Failed", &format!("Error: {e}")).await;
                return Err(e);
            }
        };
        self.normal("Created", &format!("Created container: {}", c.name))
            .await;
        if let Err(e) = self.ctx.runtime.start(&id).await {
            self.warning("Failed", &format!("Error: {e}")).await;
            return Err(e);
        }
        // In a sandbox, the route was set once for the shared namespace.
        if setup.sandbox.is_none() {
            self.route_services(&id).await;
        }
        self.normal("Started", &format!("Started container {}", c.name))
            .await;
        let (ns, name) = pod_key(&self.pod);
        tracing::info!(pod = %format!("{ns}/{name}"), container = %c.name, attempt, id = %short(&id), "container started");
        Ok(())
    }

    /// Sends a started container's Service traffic to the node's sandbox (a
    /// route in its network namespace), when this node serves ClusterIPs.
    pub async fn route_services(&self, id: &str) {
        if self.ctx.cluster.sandbox().is_none() {
            return;
        }
        let pid = match self.ctx.runtime.inspect(id).await {
            Ok(Some(info)) => info.pid,
            _ => None,
        };
        let Some(pid) = pid else { return };
        let cluster = self.ctx.cluster.clone();
        match tokio::task::spawn_blocking(move || cluster.attach(pid)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(id = %short(id), error = %e, "cannot route the container's Service traffic")
            }
            Err(e) => {
                tracing::warn!(id = %short(id), error = %e, "routing the container's Service traffic failed")
            }
        }
    }

    /// Starts a container that was created but never started (the agent stopped
    /// in between).
    pub async fn start_created(&self, c: &Container, id: &str) {
        match self.ctx.runtime.start(id).await {
            Ok(()) => {
                self.route_services(id).await;
                self.normal("Started", &format!("Started container {}", c.name))
                    .await
            }
            Err(e) => tracing::warn!(container = %c.name, error = %e, "cannot start container"),
        }
    }

    /// Stops a container its probes found unhealthy (`why`), to be restarted.
    pub async fn kill_unhealthy(&self, c: &Container, info: &ContainerInfo, why: &str) {
        self.normal("Killing", why).await;
        let grace = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0) as u64;
        if let Err(e) = self
            .ctx
            .runtime
            .stop(&info.id, Duration::from_secs(grace))
            .await
        {
            let (ns, name) = pod_key(&self.pod);
            tracing::warn!(pod = %format!("{ns}/{name}"), container = %c.name, error = %e, "cannot stop an unhealthy container");
        }
    }

    /// Runs the `preStop` hook of every running container that has one, all at
    /// once, each until it is done or `deadline` (the end of the grace period):
    /// `exec` in the container, `httpGet` or `tcpSocket` against it, or `sleep`.
    /// A failed hook is a `FailedPreStopHook` event; the stop goes on.
    pub async fn pre_stop(&self, containers: &[ContainerInfo], deadline: tokio::time::Instant) {
        let spec = self.pod.spec.as_ref();
        let ip = self.pod.status.as_ref().and_then(|s| s.pod_ip.clone());
        let hooks = containers
            .iter()
            .filter(|i| i.state.running)
            .filter_map(|info| {
                let name = info.labels.get(LABEL_CONTAINER_NAME)?;
                let c = spec?.containers.iter().find(|c| &c.name == name)?;
                let hook = c.lifecycle.as_ref()?.pre_stop.clone()?;
                Some((info, c.clone(), hook))
            });
        let runs = hooks.map(|(info, c, hook)| {
            let ip = ip.clone();
            async move {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let name = c.name.clone();
                let result = match &hook.sleep {
                    Some(s) => {
                        let want =
                            Duration::from_secs(u64::try_from(s.seconds.max(0)).unwrap_or(0));
                        tokio::time::sleep(want.min(left)).await;
                        Ok(())
                    }
                    None => {
                        let probe = k8s_openapi::api::core::v1::Probe {
                            exec: hook.exec.clone(),
                            http_get: hook.http_get.clone(),
                            tcp_socket: hook.tcp_socket.clone(),
                            timeout_seconds: Some(
                                i32::try_from(left.as_secs().max(1)).unwrap_or(i32::MAX),
                            ),
                            ..Default::default()
                        };
                        let target = crate::probe::Target {
                            container: c,
                            container_id: info.id.clone(),
                            ip: ip.or_else(|| info.ip.clone()),
                            runtime: self.ctx.runtime.clone(),
                            http: self.ctx.http.clone(),
                        };
                        match tokio::time::timeout(left, crate::probe::check(&target, &probe)).await
                        {
                            Ok(r) => r,
                            Err(_) => Err("the grace period ended first".to_string()),
                        }
                    }
                };
                if let Err(why) = result {
                    self.warning(
                        "FailedPreStopHook",
                        &format!("PreStopHook failed for container {name}: {why}"),
                    )
                    .await;
                }
            }
        });
        futures::future::join_all(runs).await;
    }

    /// Stops (SIGTERM, SIGKILL after `grace` seconds) and removes `containers`,
    /// all at once.
    pub async fn stop_and_remove(&self, containers: &[ContainerInfo], grace: i64) {
        let grace = Duration::from_secs(u64::try_from(grace.max(0)).unwrap_or(0));
        self.stop_and_remove_within(containers, grace).await;
    }

    /// Like [`Act::stop_and_remove`], with the grace as a duration. The app
    /// containers go first, the sandbox holding their network last.
    pub async fn stop_and_remove_within(&self, containers: &[ContainerInfo], grace: Duration) {
        let (sandboxes, apps): (Vec<ContainerInfo>, Vec<ContainerInfo>) = containers
            .iter()
            .cloned()
            .partition(super::sandbox::is_sandbox);
        self.stop_and_remove_all(&apps, grace).await;
        self.stop_and_remove_all(&sandboxes, Duration::ZERO).await;
    }

    async fn stop_and_remove_all(&self, containers: &[ContainerInfo], grace: Duration) {
        let stops = containers.iter().map(|info| async move {
            if info.state.running && !super::sandbox::is_sandbox(info) {
                let name = info
                    .labels
                    .get(LABEL_CONTAINER_NAME)
                    .cloned()
                    .unwrap_or_default();
                self.normal("Killing", &format!("Stopping container {name}"))
                    .await;
            }
            if info.state.running
                && let Err(e) = self.ctx.runtime.stop(&info.id, grace).await
            {
                tracing::warn!(id = %short(&info.id), error = %e, "cannot stop container");
            }
            if let Err(e) = self.ctx.runtime.remove(&info.id).await {
                tracing::warn!(id = %short(&info.id), error = %e, "cannot remove container");
            }
        });
        futures::future::join_all(stops).await;
    }
}

/// How a container is made beyond its spec: the sandbox it joins (`None`: its
/// own network, for pods from before sandboxes), its resolved environment,
/// command and args, and its mounts.
#[derive(Clone, Debug, Default)]
pub struct ContainerSetup {
    pub sandbox: Option<String>,
    pub net: PodNet,
    pub env: Vec<(String, String)>,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    pub mounts: Vec<Mount>,
}

/// What a container gets from the Service network: resolv.conf and the Service
/// environment variables.
#[derive(Clone, Debug, Default)]
pub struct PodNet {
    pub dns: PodDns,
    pub service_env: Vec<(String, String)>,
}

/// What to create for attempt `attempt` of container `c` of `pod` on `node`.
pub fn container_spec(
    pod: &Pod,
    c: &Container,
    attempt: u32,
    node: &str,
    network: Option<String>,
    host_port_ip: Option<&str>,
    setup: &ContainerSetup,
) -> ContainerSpec {
    let net = &setup.net;
    let sandbox = setup.sandbox.as_deref();
    let (ns, name) = pod_key(pod);
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    let mut labels = BTreeMap::from([
        (LABEL_POD_NAME.to_string(), name.to_string()),
        (LABEL_POD_NAMESPACE.to_string(), ns.to_string()),
        (LABEL_POD_UID.to_string(), uid.to_string()),
        (LABEL_CONTAINER_NAME.to_string(), c.name.clone()),
        (LABEL_NODE.to_string(), node.to_string()),
        (LABEL_ATTEMPT.to_string(), attempt.to_string()),
    ]);
    if let Some(id) = sandbox {
        labels.insert(LABEL_SANDBOX_ID.to_string(), id.to_string());
        labels.insert(LABEL_CONTAINER_TYPE.to_string(), TYPE_CONTAINER.to_string());
    }
    let resources = c.resources.clone().unwrap_or_default();
    let limits = resources.limits.unwrap_or_default();
    let requests = resources.requests.unwrap_or_default();
    let spec = ContainerSpec {
        name: format!("tug_{ns}_{name}_{}_{attempt}", c.name),
        image: c.image.clone().unwrap_or_default(),
        command: c.command.clone(),
        args: c.args.clone(),
        // The Service variables first; the container's own win over them.
        env: {
            let own: Vec<(String, String)> = c
                .env
                .iter()
                .flatten()
                .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
                .collect();
            let mut env: Vec<(String, String)> = net
                .service_env
                .iter()
                .filter(|(k, _)| !own.iter().any(|(o, _)| o == k))
                .cloned()
                .collect();
            env.extend(own);
            env
        },
        working_dir: c.working_dir.clone(),
        labels,
        ports: c
            .ports
            .iter()
            .flatten()
            .filter_map(|p| port_mapping(p, host_port_ip))
            .collect(),
        memory_limit_bytes: limits.get("memory").and_then(|q| quantity::bytes(&q.0)),
        nano_cpus: limits
            .get("cpu")
            .and_then(|q| quantity::cpu_millis(&q.0))
            .map(|m| m.saturating_mul(1_000_000)),
        cpu_shares: requests
            .get("cpu")
            .and_then(|q| quantity::cpu_millis(&q.0))
            .map(|m| (m.saturating_mul(1024) / 1000).clamp(2, 262_144)),
        hostname: Some(pod_hostname(
            pod.spec.as_ref().and_then(|s| s.hostname.as_deref()),
            name,
        )),
        network,
        dns: net.dns.servers.clone(),
        dns_search: net.dns.search.clone(),
        dns_options: net.dns.options.clone(),
        stdin: c.stdin == Some(true),
        stdin_once: c.stdin_once == Some(true),
        tty: c.tty == Some(true),
        ..Default::default()
    };
    match sandbox {
        // Docker refuses a hostname, ports or DNS settings with another
        // container's network: those are the sandbox's.
        Some(id) => ContainerSpec {
            network: Some(format!("container:{id}")),
            ports: Vec::new(),
            hostname: None,
            dns: Vec::new(),
            dns_search: Vec::new(),
            dns_options: Vec::new(),
            ..spec
        },
        None => spec,
    }
}

/// How Docker publishes container port `p` (`None` for a port out of range):
/// on its `hostPort` when set, bound to its `hostIP` or the node's `host_port_ip`.
pub fn port_mapping(
    p: &k8s_openapi::api::core::v1::ContainerPort,
    host_port_ip: Option<&str>,
) -> Option<PortMapping> {
    Some(PortMapping {
        container_port: u16::try_from(p.container_port).ok()?,
        host_port: p
            .host_port
            .and_then(|h| u16::try_from(h).ok())
            .filter(|h| *h > 0),
        protocol: p
            .protocol
            .clone()
            .unwrap_or_else(|| "TCP".into())
            .to_ascii_lowercase(),
        host_ip: p
            .host_ip
            .clone()
            .or_else(|| host_port_ip.map(str::to_string)),
    })
}

/// The container's hostname: `spec.hostname`, else the pod's name cut to the 63
/// characters a hostname may have (runc refuses longer ones), without a trailing
/// `-` or `.`, as the kubelet's `truncatePodHostnameIfNeeded` does.
pub fn pod_hostname(hostname: Option<&str>, pod_name: &str) -> String {
    if let Some(h) = hostname.filter(|h| !h.is_empty()) {
        return h.to_string();
    }
    const MAX: usize = 63;
    if pod_name.len() <= MAX {
        return pod_name.to_string();
    }
    // Pod names are ASCII (DNS-1123 subdomains), so a byte cut is a char cut.
    let cut = pod_name.get(..MAX).unwrap_or(pod_name);
    cut.trim_end_matches(['-', '.']).to_string()
}

pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_pod_names_are_cut_to_a_valid_hostname() {
        assert_eq!(pod_hostname(None, "web-1"), "web-1");
        assert_eq!(pod_hostname(Some("h"), "web-1"), "h");
        let long = format!("{}-{}", "a".repeat(62), "b".repeat(20));
        assert_eq!(pod_hostname(None, &long), "a".repeat(62));
        assert_eq!(pod_hostname(None, &"c".repeat(100)).len(), 63);
    }

    #[test]
    fn a_container_spec_carries_the_labels_limits_and_ports() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "team", "uid": "u1"},
            "spec": {"containers": [{
                "name": "app", "image": "tugboat/sample:latest",
                "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {}}],
                "ports": [{"containerPort": 8080, "hostPort": 18080}],
                "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "250m"}}
            }]}
        }))
        .unwrap();
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let spec = container_spec(
            &pod,
            c,
            2,
            "n1",
            None,
            Some("127.0.0.2"),
            &ContainerSetup::default(),
        );
        assert_eq!(spec.name, "tug_team_web-1_app_2");
        assert_eq!(spec.labels[LABEL_POD_UID], "u1");
        assert_eq!(spec.labels[LABEL_ATTEMPT], "2");
        assert_eq!(spec.labels[LABEL_NODE], "n1");
        assert_eq!(spec.env, vec![("A".to_string(), "1".to_string())]);
        assert_eq!(spec.memory_limit_bytes, Some(64 << 20));
        assert_eq!(spec.nano_cpus, Some(500_000_000));
        assert_eq!(spec.cpu_shares, Some(256));
        assert_eq!(spec.ports[0].host_port, Some(18080));
        assert_eq!(spec.ports[0].protocol, "tcp");
        assert_eq!(spec.ports[0].host_ip.as_deref(), Some("127.0.0.2"));
        assert_eq!(spec.hostname.as_deref(), Some("web-1"));
    }
}
