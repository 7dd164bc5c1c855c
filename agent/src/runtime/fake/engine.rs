//! The fake's [`ContainerRuntime`] implementation: each call changes the
//! in-memory state under one lock and emits the events Docker would.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::names::*;
use super::{
    FakeContainer, FakeOp, FakeRuntime, LOG_CHANNEL, Meter, NEXT_CONTAINER, STATS_PERIOD,
    lock_meter, pod_of, resolve,
};
use crate::runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ContainerState, EventStream, ExecOutput,
    HostInfo, LogOptions, LogStream, NodeFigures, RuntimeError, RuntimeEvent, StatsStream,
    VolumeSpec,
};

#[async_trait::async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn create_volume(&self, spec: &VolumeSpec) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        state
            .volumes
            .entry(spec.name.clone())
            .or_insert_with(|| spec.clone());
        Ok(())
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        self.lock().volumes.remove(name);
        Ok(())
    }

    async fn host_info(&self) -> Result<HostInfo, RuntimeError> {
        Ok(self.lock().host.clone())
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>, RuntimeError> {
        let state = self.lock();
        let by_name = state.images.get(&normalize(image)).cloned();
        Ok(by_name.or_else(|| state.images.values().find(|id| *id == image).cloned()))
    }

    async fn pull_image(&self, image: &str) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        state.pulls.push(image.to_owned());
        if let Some(message) = self.injected(&mut state, FakeOp::Pull) {
            return Err(RuntimeError::Pull {
                image: image.to_owned(),
                message,
            });
        }
        if !state.pullable.contains(&normalize(image)) {
            return Err(RuntimeError::Pull {
                image: image.to_owned(),
                message: format!(
                    "pull access denied for {}, repository does not exist or may require 'docker login'",
                    repository(image)
                ),
            });
        }
        drop(state);
        self.add_image(image);
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let operation = format!("create container {}", spec.name);
        let engine = |message: String| RuntimeError::Engine {
            operation: operation.clone(),
            message,
        };
        let mut state = self.lock();
        if let Some(message) = self.injected(&mut state, FakeOp::Create) {
            return Err(engine(message));
        }
        let seq = NEXT_CONTAINER.fetch_add(1, Ordering::Relaxed);
        let id = hex_id(splitmix(seq));
        let name = if spec.name.is_empty() {
            format!("fake_{seq}")
        } else {
            spec.name.clone()
        };
        if !valid_name(&name) {
            return Err(engine(format!(
                "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        if let Some(other) = state.containers.values().find(|c| c.info.name == name) {
            return Err(engine(format!(
                "Conflict. The container name \"/{name}\" is already in use by container \"{}\". \
                 You have to remove (or rename) that container to be able to reuse that name.",
                other.info.id
            )));
        }
        let Some(image_id) = state.images.get(&normalize(&spec.image)).cloned() else {
            return Err(engine(format!("No such image: {}", spec.image)));
        };
        let info = ContainerInfo {
            id: id.clone(),
            name,
            image: spec.image.clone(),
            image_id,
            labels: spec.labels.clone(),
            state: ContainerState {
                status: "created".into(),
                ..Default::default()
            },
            ip: None,
            pid: None,
            created: Some(jiff::Timestamp::now().to_string()),
        };
        let (log_tx, _) = broadcast::channel(LOG_CHANNEL);
        let usage = pod_of(&info)
            .and_then(|(ns, name)| state.pod_usage.get(&(ns.to_owned(), name.to_owned())))
            .copied()
            .unwrap_or_default();
        let stopped = CancellationToken::new();
        stopped.cancel();
        let container = FakeContainer {
            seq,
            spec: spec.clone(),
            info,
            logs: Vec::new(),
            log_tx,
            meter: Arc::new(Mutex::new(Meter::new(usage))),
            stopped,
        };
        state.containers.insert(id.clone(), container);
        self.emit(&mut state, &id, "create", []);
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let delay = self.lock().start_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut state = self.lock();
        let key =
            resolve(&state, id).ok_or_else(|| RuntimeError::NoSuchContainer(id.to_owned()))?;
        if let Some(message) = self.injected(&mut state, FakeOp::Start) {
            state
                .containers
                .get_mut(&key)
                .expect("resolved")
                .info
                .state
                .error = Some(message.clone());
            return Err(RuntimeError::Engine {
                operation: format!("start container {id}"),
                message,
            });
        }
        let container = state.containers.get_mut(&key).expect("resolved");
        if container.info.state.running {
            return Ok(());
        }
        container.info.state = ContainerState {
            status: "running".into(),
            running: true,
            started_at: Some(jiff::Timestamp::now().to_string()),
            ..Default::default()
        };
        // A container joining another's network namespace (a pod sandbox's) has
        // that one's address, as in Docker; the pod's containers share one IP.
        let joined = container
            .spec
            .network
            .as_deref()
            .and_then(|n| n.strip_prefix("container:"))
            .map(str::to_owned);
        let ip = match joined {
            Some(other) => {
                let other = resolve(&state, &other)
                    .and_then(|o| state.containers[&o].info.ip.clone())
                    .ok_or_else(|| RuntimeError::Engine {
                        operation: format!("start container {id}"),
                        message: format!("cannot join network of a non running container: {other}"),
                    })?;
                Some(other)
            }
            None => Some(next_address()),
        };
        let container = state.containers.get_mut(&key).expect("resolved");
        container.info.ip = ip;
        container.stopped = CancellationToken::new();
        self.emit(&mut state, &key, "start", []);
        Ok(())
    }

    /// Stops at once (nothing runs to take the grace period), with the stop exit
    /// code; unless SIGTERM is ignored, then after the grace with SIGKILL's.
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let (delay, ignore_sigterm) = {
            let mut state = self.lock();
            state.stops.push((id.to_owned(), grace));
            if let Some(message) = self.injected(&mut state, FakeOp::Stop) {
                return Err(RuntimeError::Engine {
                    operation: format!("stop container {id}"),
                    message,
                });
            }
            (state.stop_delay, state.ignore_sigterm)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let key = {
            let mut state = self.lock();
            let Some(key) = resolve(&state, id) else {
                return Ok(());
            };
            if !state.containers[&key].info.state.running {
                return Ok(());
            }
            self.emit(&mut state, &key, "kill", [("signal", "15".into())]);
            if !ignore_sigterm {
                let code = state.stop_exit_code;
                self.exit(&mut state, &key, code, false);
                self.emit(&mut state, &key, "stop", []);
                return Ok(());
            }
            key
        };
        tokio::time::sleep(grace).await;
        let mut state = self.lock();
        if !state
            .containers
            .get(&key)
            .is_some_and(|c| c.info.state.running)
        {
            return Ok(());
        }
        self.emit(&mut state, &key, "kill", [("signal", "9".into())]);
        self.exit(&mut state, &key, 137, false);
        self.emit(&mut state, &key, "stop", []);
        Ok(())
    }

    /// Every signal is fatal here; the exit code is 128 + the signal's number.
    async fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        if let Some(message) = self.injected(&mut state, FakeOp::Kill) {
            return Err(RuntimeError::Engine {
                operation: format!("kill container {id} with {signal}"),
                message,
            });
        }
        let Some(key) = resolve(&state, id) else {
            return Ok(());
        };
        if !state.containers[&key].info.state.running {
            return Ok(());
        }
        self.emit(
            &mut state,
            &key,
            "kill",
            [("signal", signal_number(signal).to_string())],
        );
        self.exit(&mut state, &key, signal_exit_code(signal), false);
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        if let Some(message) = self.injected(&mut state, FakeOp::Remove) {
            return Err(RuntimeError::Engine {
                operation: format!("remove container {id}"),
                message,
            });
        }
        let Some(key) = resolve(&state, id) else {
            return Ok(());
        };
        if state.containers[&key].info.state.running {
            self.emit(&mut state, &key, "kill", [("signal", "9".into())]);
            self.exit(&mut state, &key, 137, false);
        }
        self.emit(&mut state, &key, "destroy", []);
        if let Some(container) = state.containers.remove(&key) {
            let _ = container.log_tx.send(None);
            container.stopped.cancel();
        }
        Ok(())
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        let mut state = self.lock();
        if let Some(message) = self.injected(&mut state, FakeOp::Inspect) {
            return Err(RuntimeError::Engine {
                operation: format!("inspect container {id}"),
                message,
            });
        }
        Ok(resolve(&state, id).map(|key| state.containers[&key].info.clone()))
    }

    /// Newest first, as Docker lists them.
    async fn list(&self, labels: &[(String, String)]) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let mut state = self.lock();
        state.lists += 1;
        if let Some(message) = self.injected(&mut state, FakeOp::List) {
            return Err(RuntimeError::Engine {
                operation: "list containers".into(),
                message,
            });
        }
        let mut matching: Vec<&FakeContainer> = state
            .containers
            .values()
            .filter(|c| has_labels(&c.info.labels, labels))
            .collect();
        matching.sort_by_key(|c| std::cmp::Reverse(c.seq));
        Ok(matching.into_iter().map(|c| c.info.clone()).collect())
    }

    async fn events(
        &self,
        labels: &[(String, String)],
        since_nanos: Option<i64>,
    ) -> Result<EventStream, RuntimeError> {
        let (past, live) = {
            let state = self.lock();
            // Subscribing under the lock that every emit holds: nothing is missed or
            // seen twice between the replay and the live stream.
            let live = self.events.subscribe();
            let past: Vec<RuntimeEvent> = match since_nanos {
                Some(since) => state
                    .history
                    .iter()
                    .filter(|e| e.time_nanos >= since && has_labels(&e.labels, labels))
                    .cloned()
                    .collect(),
                None => Vec::new(),
            };
            (past, live)
        };
        let labels = labels.to_vec();
        let live = BroadcastStream::new(live).filter_map(move |item| {
            let item = match item {
                Ok(event) => has_labels(&event.labels, &labels).then_some(Ok(event)),
                Err(BroadcastStreamRecvError::Lagged(n)) => Some(Err(RuntimeError::Engine {
                    operation: "watch container events".into(),
                    message: format!("the watcher fell behind and lost {n} events"),
                })),
            };
            futures::future::ready(item)
        });
        Ok(Box::pin(
            futures::stream::iter(past.into_iter().map(Ok)).chain(live),
        ))
    }

    /// With `follow`, goes on with what is pushed until the container stops.
    async fn logs(&self, id: &str, opts: &LogOptions) -> Result<LogStream, RuntimeError> {
        let state = self.lock();
        let key =
            resolve(&state, id).ok_or_else(|| RuntimeError::NoSuchContainer(id.to_owned()))?;
        let container = &state.containers[&key];
        let past = futures::stream::iter(render_lines(&container.logs, opts).into_iter().map(Ok));
        if !(opts.follow && container.info.state.running) {
            return Ok(Box::pin(past));
        }
        let timestamps = opts.timestamps;
        let live = BroadcastStream::new(container.log_tx.subscribe())
            .take_while(|item| futures::future::ready(!matches!(item, Ok(None))))
            .map(move |item| match item {
                Ok(line) => Ok(line
                    .map(|line| render_line(&line, timestamps))
                    .unwrap_or_default()),
                Err(BroadcastStreamRecvError::Lagged(n)) => Err(RuntimeError::Engine {
                    operation: format!("follow logs of container {key}"),
                    message: format!("the reader fell behind and lost {n} lines"),
                }),
            });
        Ok(Box::pin(past.chain(live)))
    }

    /// A sample at once, then one every [`STATS_PERIOD`] of tokio's clock, until
    /// the container stops or is removed.
    async fn stats(&self, id: &str) -> Result<StatsStream, RuntimeError> {
        let (meter, stopped) = {
            let state = self.lock();
            let key =
                resolve(&state, id).ok_or_else(|| RuntimeError::NoSuchContainer(id.to_owned()))?;
            let container = &state.containers[&key];
            (container.meter.clone(), container.stopped.clone())
        };
        let ticks = tokio::time::interval(STATS_PERIOD);
        let stream = futures::stream::unfold(
            (meter, stopped, ticks),
            |(meter, stopped, mut ticks)| async move {
                tokio::select! {
                    biased;
                    _ = stopped.cancelled() => None,
                    _ = ticks.tick() => {
                        let sample = lock_meter(&meter).sample();
                        Some((Ok(sample), (meter, stopped, ticks)))
                    }
                }
            },
        );
        Ok(Box::pin(stream))
    }

    /// Nothing runs here: the node's figures are its pods'.
    fn node_figures(&self) -> NodeFigures {
        NodeFigures::SumOfPods
    }

    /// Answers with the configured result at once; the timeout never fires.
    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        _timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let operation = format!("exec {cmd:?} in container {id}");
        let (handler, info) = {
            let mut state = self.lock();
            let key =
                resolve(&state, id).ok_or_else(|| RuntimeError::NoSuchContainer(id.to_owned()))?;
            if let Some(message) = self.injected(&mut state, FakeOp::Exec) {
                return Err(RuntimeError::Engine { operation, message });
            }
            let info = state.containers[&key].info.clone();
            if !info.state.running {
                return Err(not_running(operation, &info.id));
            }
            (state.exec.clone(), info)
        };
        handler(&info, cmd)
    }
}
