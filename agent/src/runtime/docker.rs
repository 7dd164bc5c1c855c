//! [`DockerRuntime`]: the [`ContainerRuntime`] over a real Docker engine, through bollard.
//!
//! bollard 0.21 speaks API 1.53 unless told otherwise, so [`DockerRuntime::connect`]
//! negotiates the version down to what the engine offers (1.41 on Debian's docker.io
//! 20.10). Every error carries Docker's own message and names the operation and the
//! object it was about.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EventMessage, HostConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::{StreamExt, TryStreamExt};

use super::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ContainerState, EventStream, ExecOutput,
    HostInfo, LogOptions, LogStream, RuntimeError, RuntimeEvent,
};

/// How long connecting (version negotiation and ping) may take before we give up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How many containers `list` inspects at once.
const LIST_INSPECT_CONCURRENCY: usize = 8;
/// How much of an exec's output is kept (a probe's output only ends up in an event).
const EXEC_OUTPUT_LIMIT: usize = 64 * 1024;
/// Docker's zero time, which it reports for "never started" and "not finished".
const ZERO_TIME_PREFIX: &str = "0001-01-01T00:00:00";

/// A Docker engine reached through bollard.
#[derive(Clone, Debug)]
pub struct DockerRuntime {
    docker: Docker,
}

impl DockerRuntime {
    /// Connects to the engine at `uri` (`unix:///var/run/docker.sock`,
    /// `tcp://host:2375`, `http://host:2375`, or a bare socket path), or, with `None`,
    /// where `DOCKER_HOST` says or the local socket. Negotiates the API version down to
    /// the engine's and pings it, so a returned runtime is known to answer.
    pub async fn connect(uri: Option<&str>) -> Result<Self, RuntimeError> {
        let target = uri.unwrap_or("the default Docker host (DOCKER_HOST or /var/run/docker.sock)");
        let connect_error =
            |e: DockerError| RuntimeError::Connect(format!("{target}: {}", message_of(&e)));
        let docker = match uri {
            None => Docker::connect_with_defaults(),
            Some(uri) if uri.starts_with('/') => {
                Docker::connect_with_host(&format!("unix://{uri}"))
            }
            Some(uri) => Docker::connect_with_host(uri),
        }
        .map_err(connect_error)?;
        let docker = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let docker = docker.negotiate_version().await?;
            docker.ping().await?;
            Ok::<_, DockerError>(docker)
        })
        .await
        .map_err(|_| {
            RuntimeError::Connect(format!("{target}: no answer within {CONNECT_TIMEOUT:?}"))
        })?
        .map_err(connect_error)?;
        tracing::debug!(engine = target, api_version = %docker.client_version(), "connected to Docker");
        Ok(Self { docker })
    }

    /// The bollard client, for what the trait does not cover (building images).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }
}

/// Docker's message for an error: the server's own words when it answered, bollard's
/// description otherwise.
pub(crate) fn message_of(error: &DockerError) -> String {
    match error {
        DockerError::DockerResponseServerError { message, .. } => message.trim().to_owned(),
        DockerError::DockerStreamError { error } => error.trim().to_owned(),
        other => {
            // Transport errors say what failed only in their sources ("Connection refused").
            let mut message = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !message.contains(&cause_text) {
                    message = format!("{message}: {cause_text}");
                }
                source = cause.source();
            }
            message
        }
    }
}

fn status_of(error: &DockerError) -> Option<u16> {
    match error {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn engine(operation: impl Into<String>, error: &DockerError) -> RuntimeError {
    RuntimeError::Engine {
        operation: operation.into(),
        message: message_of(error),
    }
}

/// `Engine`, or `NoSuchContainer` when Docker answered 404.
fn container_error(operation: impl Into<String>, id: &str, error: &DockerError) -> RuntimeError {
    if status_of(error) == Some(404) {
        RuntimeError::NoSuchContainer(id.to_owned())
    } else {
        engine(operation, error)
    }
}

/// Splits `repo[:tag]` / `repo@digest` into what `POST /images/create` wants.
fn split_reference(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    match image[name_start..].rfind(':') {
        Some(colon) => (
            &image[..name_start + colon],
            &image[name_start + colon + 1..],
        ),
        None => (image, "latest"),
    }
}

/// The create request for `spec`.
fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mut exposed_ports = Vec::new();
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for port in &spec.ports {
        let key = format!("{}/{}", port.container_port, port.protocol);
        if !exposed_ports.contains(&key) {
            exposed_ports.push(key.clone());
        }
        if let Some(host_port) = port.host_port {
            port_bindings
                .entry(key)
                .or_default()
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: port.host_ip.clone(),
                    host_port: Some(host_port.to_string()),
                });
        }
    }
    let host_config = HostConfig {
        memory: spec.memory_limit_bytes,
        nano_cpus: spec.nano_cpus,
        cpu_shares: spec.cpu_shares,
        network_mode: spec.network.clone(),
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: spec.command.clone(),
        cmd: spec.args.clone(),
        env: (!spec.env.is_empty())
            .then(|| spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        working_dir: spec.working_dir.clone(),
        labels: (!spec.labels.is_empty()).then(|| {
            spec.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        hostname: spec.hostname.clone(),
        exposed_ports: (!exposed_ports.is_empty()).then_some(exposed_ports),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// `None` for Docker's empty strings and zero times.
fn time_of(value: Option<String>) -> Option<String> {
    value.filter(|t| !t.is_empty() && !t.starts_with(ZERO_TIME_PREFIX))
}

fn container_info(inspect: ContainerInspectResponse) -> ContainerInfo {
    let config = inspect.config.unwrap_or_default();
    let state = inspect.state.unwrap_or_default();
    let status = state.status.map(|s| s.to_string()).unwrap_or_default();
    let running = state.running.unwrap_or(false);
    let exit_code = state.exit_code.unwrap_or(0);
    // Docker says 0 for containers that never ran; only report a code once there is one.
    let exited = matches!(status.as_str(), "exited" | "dead") || exit_code != 0;
    let network_mode = inspect.host_config.and_then(|h| h.network_mode);
    ContainerInfo {
        id: inspect.id.unwrap_or_default(),
        name: inspect
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        image: config.image.unwrap_or_default(),
        image_id: inspect.image.unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        ip: inspect
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|networks| {
                ip_of(
                    networks
                        .into_iter()
                        .map(|(name, endpoint)| (name, endpoint.ip_address)),
                    network_mode.as_deref(),
                )
            }),
        created: time_of(inspect.created),
        state: ContainerState {
            status,
            running,
            exit_code: (!running && exited).then_some(exit_code),
            oom_killed: state.oom_killed.unwrap_or(false),
            started_at: time_of(state.started_at),
            finished_at: if running {
                None
            } else {
                time_of(state.finished_at)
            },
            error: state.error.filter(|e| !e.is_empty()),
        },
    }
}

/// The container's address: on the network it was attached to (`network_mode`), else
/// the first network by name that gave it one. API 1.53's models no longer carry the
/// deprecated top-level `NetworkSettings.IPAddress`; the per-network one is the same.
fn ip_of(
    networks: impl Iterator<Item = (String, Option<String>)>,
    network_mode: Option<&str>,
) -> Option<String> {
    let networks: BTreeMap<String, String> = networks
        .filter_map(|(name, ip)| ip.filter(|ip| !ip.is_empty()).map(|ip| (name, ip)))
        .collect();
    let preferred = network_mode.and_then(|mode| networks.get(mode)).cloned();
    preferred.or_else(|| networks.into_values().next())
}

fn runtime_event(message: EventMessage) -> Option<RuntimeEvent> {
    let actor = message.actor?;
    Some(RuntimeEvent {
        container_id: actor.id?,
        action: message.action.unwrap_or_default(),
        labels: actor.attributes.unwrap_or_default().into_iter().collect(),
        time_nanos: message
            .time_nano
            .or_else(|| message.time.map(|t| t.saturating_mul(1_000_000_000)))
            .unwrap_or_default(),
    })
}

/// Docker's `since`: `seconds.nanoseconds`.
fn since_param(nanos: i64) -> String {
    format!(
        "{}.{:09}",
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000)
    )
}

fn label_filters(labels: &[(String, String)]) -> Vec<String> {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[async_trait::async_trait]
impl ContainerRuntime for DockerRuntime {
    async fn host_info(&self) -> Result<HostInfo, RuntimeError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| engine("read engine info", &e))?;
        let version = self
            .docker
            .version()
            .await
            .map_err(|e| engine("read engine version", &e))?;
        Ok(HostInfo {
            cpus: info.ncpu.unwrap_or_default(),
            memory_bytes: info.mem_total.unwrap_or_default(),
            os_image: info.operating_system.unwrap_or_default(),
            kernel_version: info
                .kernel_version
                .or(version.kernel_version)
                .unwrap_or_default(),
            // Kubernetes reports Go's name (`amd64`), which the engine's version carries;
            // `info` has the kernel's (`x86_64`).
            architecture: version.arch.or(info.architecture).unwrap_or_default(),
            operating_system: info.os_type.or(version.os).unwrap_or_default(),
            runtime_version: format!(
                "docker://{}",
                version.version.or(info.server_version).unwrap_or_default()
            ),
        })
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>, RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(inspect) => Ok(inspect.id),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(engine(format!("inspect image {image}"), &e)),
        }
    }

    async fn pull_image(&self, image: &str) -> Result<(), RuntimeError> {
        let (from_image, tag) = split_reference(image);
        let mut options = CreateImageOptionsBuilder::default().from_image(from_image);
        if !tag.is_empty() {
            options = options.tag(tag);
        }
        let mut progress = self.docker.create_image(Some(options.build()), None, None);
        while let Some(item) = progress.next().await {
            item.map_err(|e| RuntimeError::Pull {
                image: image.to_owned(),
                message: message_of(&e),
            })?;
        }
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let created = self
            .docker
            .create_container(Some(options), create_body(spec))
            .await
            .map_err(|e| engine(format!("create container {}", spec.name), &e))?;
        for warning in created.warnings.iter().filter(|w| !w.is_empty()) {
            tracing::warn!(container = %spec.name, "{warning}");
        }
        Ok(created.id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        // bollard treats 304 (already running) as success.
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| container_error(format!("start container {id}"), id, &e))
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let seconds = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let options = StopContainerOptionsBuilder::default()
            .t(i32::try_from(seconds).unwrap_or(i32::MAX))
            .build();
        // The engine answers once the container is gone, which can be the whole grace
        // period: give this request that much longer than bollard's default timeout.
        let docker = self
            .docker
            .clone()
            .with_timeout(self.docker.timeout() + grace);
        match docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(engine(format!("stop container {id}"), &e)),
        }
    }

    async fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        let options = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        match self.docker.kill_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // 409: not running, which is what killing it is for.
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(engine(format!("kill container {id} with {signal}"), &e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e)
                if status_of(&e) == Some(409) && message_of(&e).contains("already in progress") =>
            {
                Ok(())
            }
            Err(e) => Err(engine(format!("remove container {id}"), &e)),
        }
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        match self.docker.inspect_container(id, None).await {
            Ok(inspect) => Ok(Some(container_info(inspect))),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(engine(format!("inspect container {id}"), &e)),
        }
    }

    /// Lists, then inspects each container (a few at a time) so states carry exit codes
    /// and times, which list summaries lack. Containers removed in between are left out.
    async fn list(&self, labels: &[(String, String)]) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let filters = HashMap::from([("label".to_owned(), label_filters(labels))]);
        let mut options = ListContainersOptionsBuilder::default().all(true);
        if !labels.is_empty() {
            options = options.filters(&filters);
        }
        let summaries = self
            .docker
            .list_containers(Some(options.build()))
            .await
            .map_err(|e| engine("list containers", &e))?;
        let ids: Vec<String> = summaries.into_iter().filter_map(|s| s.id).collect();
        futures::stream::iter(ids)
            .map(|id| async move { self.inspect(&id).await })
            .buffered(LIST_INSPECT_CONCURRENCY)
            .try_filter_map(|info| async move { Ok(info) })
            .try_collect()
            .await
    }

    async fn events(
        &self,
        labels: &[(String, String)],
        since_nanos: Option<i64>,
    ) -> Result<EventStream, RuntimeError> {
        let mut filters = HashMap::from([("type".to_owned(), vec!["container".to_owned()])]);
        if !labels.is_empty() {
            filters.insert("label".to_owned(), label_filters(labels));
        }
        // bollard sends the request when the stream is first polled, which may be well
        // after this returns: "from now" is asked for as "since now" so nothing that
        // happens in between is missed. (The engine is local; a remote one's clock
        // could differ by a little.)
        let since = since_nanos.unwrap_or_else(|| {
            i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX)
        });
        let options = EventsOptionsBuilder::default()
            .filters(&filters)
            .since(&since_param(since))
            .build();
        let stream = self
            .docker
            .events(Some(options))
            .map_err(|e| engine("watch container events", &e))
            .try_filter_map(|message| async move { Ok(runtime_event(message)) });
        Ok(Box::pin(stream))
    }

    async fn logs(&self, id: &str, opts: &LogOptions) -> Result<LogStream, RuntimeError> {
        // The stream's first item would be the 404; asking first gives a plain error.
        if self.inspect(id).await?.is_none() {
            return Err(RuntimeError::NoSuchContainer(id.to_owned()));
        }
        let tail = opts
            .tail
            .map_or_else(|| "all".to_owned(), |n| n.to_string());
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(opts.follow)
            .timestamps(opts.timestamps)
            .tail(&tail)
            .build();
        let operation = format!("read logs of container {id}");
        let id = id.to_owned();
        let stream = self
            .docker
            .logs(&id, Some(options))
            .map_ok(|output| output.into_bytes())
            .map_err(move |e| container_error(operation.clone(), &id, &e));
        Ok(Box::pin(stream))
    }

    /// On timeout the command is left running in the container: the engine has no way
    /// to stop an exec.
    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let operation = format!("exec {cmd:?} in container {id}");
        match tokio::time::timeout(timeout, self.exec_to_end(id, cmd, &operation)).await {
            Ok(result) => result,
            Err(_) => Err(RuntimeError::Engine {
                operation,
                message: format!("timed out after {timeout:?}"),
            }),
        }
    }
}

impl DockerRuntime {
    async fn exec_to_end(
        &self,
        id: &str,
        cmd: &[String],
        operation: &str,
    ) -> Result<ExecOutput, RuntimeError> {
        let options = CreateExecOptions {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(cmd.to_vec()),
            ..Default::default()
        };
        let exec = self
            .docker
            .create_exec(id, options)
            .await
            .map_err(|e| container_error(operation, id, &e))?;
        let started = self
            .docker
            .start_exec(&exec.id, None)
            .await
            .map_err(|e| engine(operation, &e))?;
        let mut output = Vec::new();
        if let StartExecResults::Attached {
            output: mut stream, ..
        } = started
        {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| engine(operation, &e))?;
                let room = EXEC_OUTPUT_LIMIT.saturating_sub(output.len());
                output.extend_from_slice(&chunk.as_ref()[..chunk.as_ref().len().min(room)]);
            }
        }
        // The output ends when the process does; its exit code can lag a moment behind.
        loop {
            let inspect = self
                .docker
                .inspect_exec(&exec.id)
                .await
                .map_err(|e| engine(operation, &e))?;
            match (inspect.running, inspect.exit_code) {
                (Some(true), _) | (_, None) => tokio::time::sleep(Duration::from_millis(20)).await,
                (_, Some(exit_code)) => {
                    return Ok(ExecOutput {
                        exit_code,
                        output: String::from_utf8_lossy(&output).into_owned(),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::runtime::PortMapping;

    #[tokio::test]
    async fn connecting_to_a_missing_socket_names_it() {
        let error = DockerRuntime::connect(Some("unix:///nonexistent/docker.sock"))
            .await
            .unwrap_err();
        assert!(matches!(error, RuntimeError::Connect(_)), "{error:?}");
        assert!(
            error.to_string().contains("/nonexistent/docker.sock"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn connecting_to_a_closed_port_says_so() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let uri = format!("tcp://{closed}");
        let error =
            tokio::time::timeout(Duration::from_secs(10), DockerRuntime::connect(Some(&uri)))
                .await
                .unwrap()
                .unwrap_err();
        assert!(matches!(error, RuntimeError::Connect(_)), "{error:?}");
        assert!(error.to_string().contains("Connection refused"), "{error}");
    }

    #[tokio::test]
    async fn an_unknown_scheme_is_refused() {
        let error = DockerRuntime::connect(Some("ftp://example"))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("ftp://example"), "{error}");
    }

    #[test]
    fn references_split_into_repository_and_tag() {
        assert_eq!(
            split_reference("tugboat/sample:latest"),
            ("tugboat/sample", "latest")
        );
        assert_eq!(split_reference("nginx"), ("nginx", "latest"));
        assert_eq!(
            split_reference("localhost:5000/app"),
            ("localhost:5000/app", "latest")
        );
        assert_eq!(
            split_reference("localhost:5000/app:v1"),
            ("localhost:5000/app", "v1")
        );
        assert_eq!(split_reference("app@sha256:abc"), ("app@sha256:abc", ""));
    }

    #[test]
    fn since_is_seconds_dot_nanoseconds() {
        assert_eq!(
            since_param(1_700_000_000_000_000_001),
            "1700000000.000000001"
        );
        assert_eq!(since_param(5), "0.000000005");
    }

    #[test]
    fn a_spec_maps_to_entrypoint_cmd_env_ports_and_limits() {
        let spec = ContainerSpec {
            name: "tug_default_web_web_0".into(),
            image: "tugboat/sample:latest".into(),
            command: Some(vec!["/tug-sample".into()]),
            args: Some(vec!["serve".into()]),
            env: vec![("A".into(), "1".into())],
            ports: vec![
                PortMapping {
                    container_port: 8080,
                    host_port: Some(18080),
                    protocol: "tcp".into(),
                    host_ip: None,
                },
                PortMapping {
                    container_port: 53,
                    host_port: None,
                    protocol: "udp".into(),
                    host_ip: None,
                },
            ],
            memory_limit_bytes: Some(64 << 20),
            nano_cpus: Some(500_000_000),
            network: Some("tugboat".into()),
            ..Default::default()
        };
        let body = create_body(&spec);
        assert_eq!(body.entrypoint, Some(vec!["/tug-sample".to_owned()]));
        assert_eq!(body.cmd, Some(vec!["serve".to_owned()]));
        assert_eq!(body.env, Some(vec!["A=1".to_owned()]));
        assert_eq!(
            body.exposed_ports,
            Some(vec!["8080/tcp".to_owned(), "53/udp".to_owned()])
        );
        let host = body.host_config.unwrap();
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.network_mode.as_deref(), Some("tugboat"));
        let bindings = host.port_bindings.unwrap();
        assert_eq!(bindings.len(), 1);
        assert_eq!(
            bindings["8080/tcp"].as_ref().unwrap()[0]
                .host_port
                .as_deref(),
            Some("18080")
        );
    }

    #[test]
    fn the_ip_comes_from_the_attached_network_first() {
        let networks = || {
            vec![
                ("a".to_owned(), Some("10.0.0.2".to_owned())),
                ("b".to_owned(), Some("10.0.1.2".to_owned())),
            ]
            .into_iter()
        };
        assert_eq!(ip_of(networks(), Some("b")).as_deref(), Some("10.0.1.2"));
        assert_eq!(
            ip_of(networks(), Some("default")).as_deref(),
            Some("10.0.0.2")
        );
        assert_eq!(
            ip_of(
                vec![("bridge".to_owned(), Some(String::new()))].into_iter(),
                None
            ),
            None
        );
    }

    /// Drives the sample image through its whole life on the engine this host has:
    /// `cargo build -p tugboat-sample && cargo test -p tugboat-agent --lib -- --ignored real_engine`.
    /// It builds a throwaway tag and removes it, and the container, whatever happens.
    #[tokio::test]
    #[ignore = "needs a Docker engine and the tug-sample binary"]
    async fn a_real_engine_runs_the_sample_through_its_whole_life() {
        use futures::FutureExt;

        const TAG: &str = "tugboat/sample-selftest:latest";
        let runtime = DockerRuntime::connect(None).await.expect("a Docker engine");
        if std::path::Path::new("/var/run/docker.sock").exists() {
            DockerRuntime::connect(Some("unix:///var/run/docker.sock"))
                .await
                .unwrap();
            DockerRuntime::connect(Some("/var/run/docker.sock"))
                .await
                .unwrap();
        }
        let name = format!("tug_selftest_{}", std::process::id());
        let outcome = std::panic::AssertUnwindSafe(whole_life(&runtime, TAG, &name))
            .catch_unwind()
            .await;
        runtime.remove(&name).await.expect("removing the container");
        let options = bollard::query_parameters::RemoveImageOptionsBuilder::default()
            .force(true)
            .build();
        match runtime
            .docker()
            .remove_image(TAG, Some(options), None)
            .await
        {
            Err(e) if status_of(&e) != Some(404) => panic!("removing {TAG}: {e}"),
            _ => {}
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    async fn whole_life(runtime: &DockerRuntime, tag: &str, name: &str) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const WAIT: Duration = Duration::from_secs(20);

        let host = runtime.host_info().await.unwrap();
        eprintln!("host: {host:?}");
        assert!(host.cpus > 0 && host.memory_bytes > 0);
        assert!(host.runtime_version.starts_with("docker://"));

        let missing = "tugboat/definitely-missing:none";
        assert_eq!(runtime.image_id(missing).await.unwrap(), None);
        let pull = runtime.pull_image(missing).await.unwrap_err();
        eprintln!("pull: {pull}");
        assert!(matches!(pull, RuntimeError::Pull { .. }));

        let binary = crate::image::require_sample_binary().unwrap();
        let image_id = crate::image::ensure_sample_image(runtime, &binary, tag, true)
            .await
            .unwrap();
        assert_eq!(
            runtime.image_id(tag).await.unwrap().as_deref(),
            Some(image_id.as_str())
        );
        let again = crate::image::ensure_sample_image(runtime, &binary, tag, false)
            .await
            .unwrap();
        assert_eq!(again, image_id);

        let selector = vec![("io.tugboat.selftest".to_owned(), name.to_owned())];
        let mut events = runtime.events(&selector, None).await.unwrap();
        // bollard's request timeout covers only the wait for the answer's headers, which
        // the engine sends at once: a quiet stream outlives it.
        let impatient = DockerRuntime {
            docker: runtime.docker.clone().with_timeout(Duration::from_secs(1)),
        };
        let mut quiet = impatient.events(&selector, None).await.unwrap();
        let quiet_first =
            tokio::spawn(async move { quiet.next().await.map(|e| e.map(|e| e.action)) });
        tokio::time::sleep(Duration::from_secs(3)).await;
        let spec = ContainerSpec {
            name: name.to_owned(),
            image: tag.to_owned(),
            args: Some(vec!["serve".into(), "--listen".into(), ":8080".into()]),
            env: vec![("GREETING".into(), "hello".into())],
            labels: selector.iter().cloned().collect(),
            ports: vec![PortMapping {
                container_port: 8080,
                host_port: None,
                protocol: "tcp".into(),
                host_ip: None,
            }],
            memory_limit_bytes: Some(64 << 20),
            nano_cpus: Some(500_000_000),
            cpu_shares: Some(512),
            hostname: Some("selftest".into()),
            ..Default::default()
        };
        let id = runtime.create(&spec).await.unwrap();
        let quiet_first = tokio::time::timeout(WAIT, quiet_first)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(quiet_first.unwrap().unwrap(), "create");
        let conflict = runtime.create(&spec).await.unwrap_err();
        eprintln!("conflict: {conflict}");
        assert!(conflict.to_string().contains("Conflict"), "{conflict}");

        let created = runtime.inspect(&id).await.unwrap().unwrap();
        assert_eq!(
            (created.state.status.as_str(), created.state.exit_code),
            ("created", None)
        );
        assert_eq!((created.name.as_str(), created.image.as_str()), (name, tag));
        assert_eq!(created.image_id, image_id);

        runtime.start(&id).await.unwrap();
        runtime.start(&id).await.unwrap();
        let running = runtime.inspect(name).await.unwrap().unwrap();
        eprintln!("running: {running:?}");
        assert!(running.state.running && running.state.started_at.is_some());
        let ip = running.ip.clone().expect("an address on the bridge");
        let listed = runtime.list(&selector).await.unwrap();
        assert_eq!(listed, vec![running.clone()]);

        let mut answer = String::new();
        for _ in 0..100 {
            if let Ok(mut tcp) = tokio::net::TcpStream::connect((ip.as_str(), 8080)).await {
                tcp.write_all(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
                    .await
                    .unwrap();
                tcp.read_to_string(&mut answer).await.unwrap();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
            "{answer}"
        );

        let version = runtime
            .exec(&id, &["/tug-sample".into(), "version".into()], WAIT)
            .await
            .unwrap();
        eprintln!("exec: {version:?}");
        assert_eq!(version.exit_code, 0);
        assert!(!version.output.is_empty());
        let forever = [
            "/tug-sample".into(),
            "serve".into(),
            "--listen".into(),
            ":9".into(),
        ];
        let timeout = runtime
            .exec(&id, &forever, Duration::from_millis(500))
            .await
            .unwrap_err();
        eprintln!("exec timeout: {timeout}");
        assert!(timeout.to_string().contains("timed out after 500ms"));

        let logs: Vec<Bytes> = runtime
            .logs(&id, &LogOptions::default())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let logs = String::from_utf8_lossy(&logs.concat()).into_owned();
        eprintln!("logs: {logs}");
        assert!(logs.contains("/healthz"), "{logs}");
        let mut follow = runtime
            .logs(
                &id,
                &LogOptions {
                    follow: true,
                    tail: Some(1),
                    timestamps: true,
                },
            )
            .await
            .unwrap();
        let first = tokio::time::timeout(WAIT, follow.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        eprintln!("followed: {first:?}");

        runtime.kill(&id, "SIGKILL").await.unwrap();
        let mut actions = Vec::new();
        let die = loop {
            let event = tokio::time::timeout(WAIT, events.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(event.container_id, id);
            assert_eq!(
                event.labels.get("io.tugboat.selftest").map(String::as_str),
                Some(name)
            );
            actions.push(event.action.clone());
            if event.action == "die" {
                break event;
            }
        };
        eprintln!("events: {actions:?}; die: {die:?}");
        assert_eq!(die.labels.get("exitCode").map(String::as_str), Some("137"));
        let end =
            tokio::time::timeout(WAIT, async { while follow.next().await.is_some() {} }).await;
        assert!(end.is_ok(), "following logs ends when the container dies");

        let exited = runtime.inspect(&id).await.unwrap().unwrap();
        eprintln!("exited: {exited:?}");
        assert_eq!(
            (exited.state.status.as_str(), exited.state.running),
            ("exited", false)
        );
        assert_eq!(exited.state.exit_code, Some(137));
        assert!(exited.state.finished_at.is_some() && exited.ip.is_none());
        runtime.kill(&id, "SIGKILL").await.unwrap();
        runtime.stop(&id, Duration::from_secs(1)).await.unwrap();

        runtime.start(&id).await.unwrap();
        let started = std::time::Instant::now();
        runtime
            .stop(&id, Duration::from_millis(1500))
            .await
            .unwrap();
        let stopped = runtime.inspect(&id).await.unwrap().unwrap();
        eprintln!("stopped after {:?}: {:?}", started.elapsed(), stopped.state);

        let mut replayed = runtime
            .events(&selector, Some(die.time_nanos))
            .await
            .unwrap();
        let first_replayed = tokio::time::timeout(WAIT, replayed.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        eprintln!(
            "replayed from the die: {} at {}",
            first_replayed.action, first_replayed.time_nanos
        );

        runtime.remove(&id).await.unwrap();
        loop {
            let event = tokio::time::timeout(WAIT, events.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if event.action == "destroy" {
                break;
            }
        }
        assert_eq!(runtime.inspect(&id).await.unwrap(), None);
        runtime.remove(&id).await.unwrap();
        runtime.stop(&id, Duration::from_secs(1)).await.unwrap();
        runtime.kill(&id, "SIGKILL").await.unwrap();
        assert!(matches!(
            runtime.start(&id).await,
            Err(RuntimeError::NoSuchContainer(_))
        ));
        assert!(matches!(
            runtime.logs(&id, &LogOptions::default()).await,
            Err(RuntimeError::NoSuchContainer(_))
        ));
        assert!(runtime.list(&selector).await.unwrap().is_empty());
    }
}
