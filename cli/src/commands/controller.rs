//! `tug controller`: binds the API address, records it in the client config so later
//! `tug` commands find the server, and runs the controller until Ctrl-C or SIGTERM.

use anyhow::{Context as _, anyhow};
use tokio::net::TcpListener;

use crate::args::ControllerArgs;
use crate::config::{self, ClientConfig};
use crate::context::Context;

pub async fn run(args: ControllerArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let data_dir = data_dir(args.data_dir, ctx)?;
    let (listener, _url) = bind_and_record(args.listen, ctx).await?;
    tracing::info!(data_dir = %data_dir.display(), "controller data directory");
    let config = controller_config(data_dir, &args.tuning)?;
    tugboat_controller::run(listener, config, ctx.shutdown.clone())
        .await
        .context("the controller stopped")
}

/// The controller's configuration from the flags.
pub fn controller_config(
    data_dir: std::path::PathBuf,
    tuning: &crate::args::ControllerTuning,
) -> anyhow::Result<tugboat_controller::Config> {
    let secs = |flag: &str, v: f64| -> anyhow::Result<std::time::Duration> {
        if !v.is_finite() || v <= 0.0 {
            anyhow::bail!("--{flag}: expected a positive number of seconds, got {v}");
        }
        Ok(std::time::Duration::from_secs_f64(v))
    };
    Ok(tugboat_controller::Config {
        data_dir,
        node_grace: secs("node-grace", tuning.node_grace)?,
        eviction_delay: secs("eviction-delay", tuning.eviction_delay)?,
        event_ttl: secs("event-ttl", tuning.event_ttl)?,
        connections: tugboat_controller::server::ConnLimits {
            header_read_timeout: secs("header-timeout", tuning.header_timeout)?,
            idle_timeout: secs("idle-timeout", tuning.idle_timeout)?,
            per_client: match tuning.max_connections_per_client {
                0 => anyhow::bail!("--max-connections-per-client: expected at least 1"),
                n => n,
            },
            ..Default::default()
        },
        service_cidr: tuning.service_cidr,
        node_port_range: tuning.service_node_port_range,
        ..Default::default()
    })
}

/// The data directory: the flag's, else the default under XDG_DATA_HOME or HOME.
pub fn data_dir(
    flag: Option<std::path::PathBuf>,
    ctx: &Context<'_>,
) -> anyhow::Result<std::path::PathBuf> {
    match flag {
        Some(dir) => Ok(dir),
        None => config::data_dir(&ctx.env).ok_or_else(|| {
            anyhow!(
                "no data directory: pass --data-dir DIR (neither XDG_DATA_HOME nor HOME is set)"
            )
        }),
    }
}

/// Binds the API address (warning when it is not loopback) and records the URL in
/// the client config so later `tug` commands find the server. Returns the listener
/// and the URL clients use.
pub async fn bind_and_record(
    listen: std::net::SocketAddr,
    ctx: &mut Context<'_>,
) -> anyhow::Result<(TcpListener, String)> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}; is another controller running? Pick another address with --listen"))?;
    let addr = listener
        .local_addr()
        .context("cannot read the address the controller listens on")?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "listening on a non-loopback address: anyone who can reach it can use the API, there is no authentication yet"
        );
    }
    // Clients connect to loopback when the controller listens on every interface.
    let client_addr = if addr.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        std::net::SocketAddr::new(loopback, addr.port())
    } else {
        addr
    };
    let url = format!("http://{client_addr}");
    match ctx.config_path() {
        Some(path) => {
            config::write_config(
                &path,
                &ClientConfig {
                    server: Some(url.clone()),
                },
            )?;
            tracing::info!(config = %path.display(), server = %url, "recorded the server for tug");
        }
        None => tracing::warn!(
            "no client config written: neither TUG_CONFIG, XDG_CONFIG_HOME nor HOME is set"
        ),
    }
    tracing::info!(%addr, "controller listening on {url}");
    Ok((listener, url))
}
