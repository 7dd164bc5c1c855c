//! An agent running in this test's process on the in-memory container runtime:
//! for tests of the control plane that need live nodes (heartbeats, pod status)
//! but not real containers.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tugboat_agent::runtime::fake::FakeRuntime;

use crate::within;

/// The image the fake engine has unless told otherwise.
pub const IMAGE: &str = "tugboat/sample:latest";

/// An in-process agent, stopped (its task cancelled) on drop.
pub struct FakeAgent {
    token: CancellationToken,
    handle: Option<JoinHandle<()>>,
}

impl FakeAgent {
    /// Node `node` of controller `tc` (joined with a token), on an engine
    /// holding [`IMAGE`].
    pub async fn start(tc: &crate::TestController, node: &str) -> anyhow::Result<FakeAgent> {
        Ok(FakeAgent::start_with(tc.agent_config(node).await?))
    }

    pub fn start_with(config: tugboat_agent::Config) -> FakeAgent {
        FakeAgent::start_on(config, Arc::new(FakeRuntime::new().with_images(&[IMAGE])))
    }

    /// On an engine the test set up (containers left from before, slow stops…).
    pub fn start_on(config: tugboat_agent::Config, runtime: Arc<FakeRuntime>) -> FakeAgent {
        let token = CancellationToken::new();
        let shutdown = token.clone();
        let handle = tokio::spawn(async move {
            if let Err(e) = tugboat_agent::run(config, runtime, shutdown).await {
                eprintln!("test agent failed: {e}");
            }
        });
        FakeAgent {
            token,
            handle: Some(handle),
        }
    }

    /// Stops the agent and waits for it: its heartbeats stop and nobody looks
    /// after its pods (its "containers" stay, as real ones would).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.token.cancel();
        if let Some(h) = self.handle.take() {
            within("the agent to stop", h).await??;
        }
        Ok(())
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.token.cancel();
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}
