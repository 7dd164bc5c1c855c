//! [`DockerRuntime`]: the [`ContainerRuntime`] over a real Docker engine, through bollard.
//!
//! bollard 0.21 speaks API 1.53 unless told otherwise, so [`DockerRuntime::connect`]
//! negotiates the version down to what the engine offers (1.41 on Debian's docker.io
//! 20.10). Every error carries Docker's own message and names the operation and the
//! object it was about.

mod convert;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StatsOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::Semaphore;

use self::convert::{
    container_info, create_body, label_filters, runtime_event, since_param, split_reference,
    stats_sample,
};
use super::{
    ContainerInfo, ContainerRuntime, ContainerSpec, EventStream, ExecOutput, HostInfo, LogOptions,
    LogStream, RuntimeError, Session, SessionId, StatsStream, StreamOutput, StreamRequest,
    VolumeSpec,
};

/// How long connecting (version negotiation and ping) may take before we give up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How many containers `list` inspects at once.
const LIST_INSPECT_CONCURRENCY: usize = 8;
/// How many container creates and starts the agent has in flight at once: a
/// bound, so that a burst of pods cannot pile unbounded requests on the engine.
/// Chosen by measurement: `cargo bench -p tugboat-tests --bench compare` prints
/// creates+starts per second at 2…32 at a time, and on the 2-core test machine
/// (Docker 20.10) the rate still grew up to 32 (3.7/s at 2, 5.5/s at 8, 6.9/s at
/// 32), so the bound is 32: below it the agent was slower than the engine allows.
/// `tug agent --create-concurrency` sets another bound.
pub const CREATE_CONCURRENCY: usize = 32;
/// How much of an exec's output is kept (a probe's output only ends up in an event).
const EXEC_OUTPUT_LIMIT: usize = 64 * 1024;

/// A Docker engine reached through bollard.
#[derive(Clone, Debug)]
pub struct DockerRuntime {
    docker: Docker,
    /// Bounds the creates and starts in flight ([`CREATE_CONCURRENCY`]).
    creating: Arc<Semaphore>,
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
        Ok(Self::with_docker(docker))
    }

    /// At most `n` creates and starts in flight at once (at least 1).
    pub fn with_create_concurrency(self, n: usize) -> Self {
        Self {
            creating: Arc::new(Semaphore::new(n.max(1))),
            ..self
        }
    }

    fn with_docker(docker: Docker) -> Self {
        Self {
            docker,
            creating: Arc::new(Semaphore::new(CREATE_CONCURRENCY)),
        }
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
        let _turn = self.creating.acquire().await;
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
        let _turn = self.creating.acquire().await;
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

    async fn create_volume(&self, spec: &VolumeSpec) -> Result<(), RuntimeError> {
        let mut opts = HashMap::from([
            ("type".to_string(), "tmpfs".to_string()),
            ("device".to_string(), "tmpfs".to_string()),
        ]);
        if let Some(size) = spec.size_bytes {
            opts.insert("o".to_string(), format!("size={size}"));
        }
        let request = bollard::models::VolumeCreateRequest {
            name: Some(spec.name.clone()),
            driver: Some("local".to_string()),
            driver_opts: Some(opts),
            labels: Some(spec.labels.clone().into_iter().collect()),
            ..Default::default()
        };
        // Creating a volume that exists answers it as it is: fine.
        self.docker
            .create_volume(request)
            .await
            .map(|_| ())
            .map_err(|e| engine(format!("create volume {}", spec.name), &e))
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        let options = bollard::query_parameters::RemoveVolumeOptionsBuilder::default()
            .force(true)
            .build();
        match self.docker.remove_volume(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(engine(format!("remove volume {name}"), &e)),
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

    /// Docker's own stream (`stream=true`), a frame about every second. For a
    /// container that stops it goes on with empty frames until the container is
    /// removed; the first empty frame ends the stream here.
    async fn stats(&self, id: &str) -> Result<StatsStream, RuntimeError> {
        // As with logs: a missing container is a plain error, not the stream's
        // first item; one that is not running has no samples to give.
        match self.inspect(id).await? {
            None => return Err(RuntimeError::NoSuchContainer(id.to_owned())),
            Some(info) if !info.state.running => return Ok(Box::pin(futures::stream::empty())),
            Some(_) => {}
        }
        let options = StatsOptionsBuilder::default()
            .stream(true)
            .one_shot(false)
            .build();
        let operation = format!("read stats of container {id}");
        let id = id.to_owned();
        let stream = self
            .docker
            .stats(&id, Some(options))
            .map(move |frame| match frame {
                Ok(frame) => Ok(stats_sample(&frame)),
                Err(e) => Err(container_error(operation.clone(), &id, &e)),
            })
            .take_while(|item| futures::future::ready(!matches!(item, Ok(None))))
            .filter_map(|item| futures::future::ready(item.transpose()));
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
    async fn session(&self, id: &str, req: &StreamRequest) -> Result<Session, RuntimeError> {
        let split = |output: LogOutput| match output {
            LogOutput::StdErr { message } => StreamOutput::Stderr(message),
            other => StreamOutput::Stdout(other.into_bytes()),
        };
        if req.command.is_empty() {
            let operation = format!("attach to container {id}");
            let options = bollard::query_parameters::AttachContainerOptionsBuilder::default()
                .stdin(req.stdin)
                .stdout(req.stdout)
                .stderr(req.stderr)
                .stream(true)
                .logs(false)
                .build();
            let attached = self
                .docker
                .attach_container(id, Some(options))
                .await
                .map_err(|e| container_error(operation.clone(), id, &e))?;
            let output = attached
                .output
                .map_ok(split)
                .map_err(move |e| engine(&operation, &e));
            return Ok(Session {
                id: SessionId::Attach(id.to_owned()),
                output: Box::pin(output),
                input: attached.input,
            });
        }
        let operation = format!("exec {:?} in container {id}", req.command);
        let options = CreateExecOptions {
            attach_stdin: Some(req.stdin),
            attach_stdout: Some(req.stdout),
            attach_stderr: Some(req.stderr),
            tty: Some(req.tty),
            cmd: Some(req.command.clone()),
            ..Default::default()
        };
        let exec = self
            .docker
            .create_exec(id, options)
            .await
            .map_err(|e| container_error(operation.clone(), id, &e))?;
        let started = self
            .docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: req.tty,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(|e| engine(&operation, &e))?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(RuntimeError::Engine {
                operation,
                message: "the engine started the exec detached".into(),
            });
        };
        let output = output
            .map_ok(split)
            .map_err(move |e| engine(&operation, &e));
        Ok(Session {
            id: SessionId::Exec(exec.id),
            output: Box::pin(output),
            input,
        })
    }

    async fn resize(
        &self,
        session: &SessionId,
        width: u16,
        height: u16,
    ) -> Result<(), RuntimeError> {
        match session {
            SessionId::Exec(id) => self
                .docker
                .resize_exec(id, bollard::exec::ResizeExecOptions { height, width })
                .await
                .map_err(|e| engine("resize an exec's terminal", &e)),
            SessionId::Attach(id) => {
                let options =
                    bollard::query_parameters::ResizeContainerTTYOptionsBuilder::default()
                        .h(i32::from(height))
                        .w(i32::from(width))
                        .build();
                self.docker
                    .resize_container_tty(id, options)
                    .await
                    .map_err(|e| engine("resize a container's terminal", &e))
            }
        }
    }

    async fn exit_code(&self, session: &SessionId) -> Result<Option<i64>, RuntimeError> {
        let SessionId::Exec(id) = session else {
            return Ok(None);
        };
        // The output ends when the process does; its exit code can lag a moment behind.
        for _ in 0..250 {
            let inspect = self
                .docker
                .inspect_exec(id)
                .await
                .map_err(|e| engine("read an exec's exit code", &e))?;
            match (inspect.running, inspect.exit_code) {
                (Some(true), _) | (_, None) => tokio::time::sleep(Duration::from_millis(20)).await,
                (_, Some(code)) => return Ok(Some(code)),
            }
        }
        Ok(None)
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
mod tests;
