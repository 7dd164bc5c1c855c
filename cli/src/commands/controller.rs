//! `tug controller`: binds the API address, records it in the client config so later
//! `tug` commands find the server, and runs the controller until Ctrl-C or SIGTERM.

use anyhow::{Context as _, anyhow};
use tokio::net::TcpListener;

use crate::args::ControllerArgs;
use crate::config::{self, ClientConfig};
use crate::context::Context;

pub async fn run(args: ControllerArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => config::data_dir(&ctx.env).ok_or_else(|| {
            anyhow!(
                "no data directory: pass --data-dir DIR (neither XDG_DATA_HOME nor HOME is set)"
            )
        })?,
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}; is another controller running? Pick another address with --listen", args.listen))?;
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
    tracing::info!(%addr, data_dir = %data_dir.display(), "controller listening on {url}");
    let config = tugboat_controller::Config {
        data_dir,
        ..Default::default()
    };
    tugboat_controller::run(listener, config, ctx.shutdown.clone())
        .await
        .context("the controller stopped")
}
