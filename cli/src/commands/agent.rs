//! `tug agent --node NAME`: runs a node agent against the controller until Ctrl-C or
//! SIGTERM; its containers keep running after it stops.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::args::AgentArgs;
use crate::context::Context;

fn seconds(flag: &str, v: f64) -> anyhow::Result<Duration> {
    if !v.is_finite() || v <= 0.0 {
        bail!("--{flag}: expected a positive number of seconds, got {v}");
    }
    Ok(Duration::from_secs_f64(v))
}

pub async fn run(args: AgentArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let client = ctx.client()?;
    if !args.listen.ip().is_loopback() {
        tracing::warn!(addr = %args.listen, "the agent's log endpoint listens on a non-loopback address; there is no authentication yet");
    }
    let mut config = tugboat_agent::Config::new(client.base_url(), &args.node);
    config.listen = args.listen;
    config.address = args.address;
    config.heartbeat = seconds("heartbeat", args.heartbeat)?;
    config.backoff_initial = seconds("backoff-initial", args.backoff_initial)?;
    config.backoff_max = seconds("backoff-max", args.backoff_max)?;
    if config.backoff_max < config.backoff_initial {
        bail!(
            "--backoff-max ({}s) must not be less than --backoff-initial ({}s)",
            args.backoff_max,
            args.backoff_initial
        );
    }
    if args.max_pods < 1 {
        bail!("--max-pods: expected at least 1, got {}", args.max_pods);
    }
    config.max_pods = args.max_pods;
    let runtime = tugboat_agent::runtime::docker::DockerRuntime::connect(args.docker.as_deref())
        .await
        .context("cannot connect to Docker (is the daemon running? see --docker)")?;
    tugboat_agent::run(config, Arc::new(runtime), ctx.shutdown.clone())
        .await
        .context("the agent stopped")
}
