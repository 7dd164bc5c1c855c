//! `tug controller`: binds the API address, records it (and the admin
//! kubeconfig the controller writes) in the client config so later `tug`
//! commands on this machine find the server, and runs the controller until
//! Ctrl-C or SIGTERM.

use anyhow::{Context as _, anyhow};
use tokio::net::TcpListener;

use crate::args::ControllerArgs;
use crate::config::{self, ClientConfig};
use crate::context::Context;

pub async fn run(args: ControllerArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let data_dir = data_dir(args.data_dir, ctx)?;
    let security = security(&args.security);
    let insecure = security == tugboat_controller::Security::InsecureHttp;
    let listen = match args.listen {
        Some(l) if insecure && !l.ip().is_loopback() => anyhow::bail!(
            "--insecure-http serves without authentication, so it listens on loopback only (got --listen {l}); drop --insecure-http to serve HTTPS on the network"
        ),
        Some(l) => l,
        None if insecure => std::net::SocketAddr::from(([127, 0, 0, 1], 6443)),
        None => std::net::SocketAddr::from(([0, 0, 0, 0], 6443)),
    };
    let (listener, _url) = bind_and_record(listen, &security, &data_dir, ctx).await?;
    tracing::info!(data_dir = %data_dir.display(), "controller data directory");
    let mut config = controller_config(data_dir, &args.tuning)?;
    config.security = security;
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
            total: match tuning.max_connections {
                0 => anyhow::bail!("--max-connections: expected at least 1"),
                n => n,
            },
        },
        max_mutating_inflight: match tuning.max_mutating_requests_inflight {
            0 => anyhow::bail!("--max-mutating-requests-inflight: expected at least 1"),
            n => n,
        },
        service_cidr: tuning.service_cidr,
        node_port_range: tuning.service_node_port_range,
        metrics_interval: secs("metrics-interval", tuning.metrics_interval)?,
        hpa: tugboat_controller::controllers::hpa::Config {
            sync_period: secs("hpa-sync-period", tuning.hpa_sync_period)?,
            scale_to_zero: tuning.hpa_scale_to_zero,
        },
        job: tugboat_controller::controllers::job::Config {
            backoff_base: secs("job-backoff-base", tuning.job_backoff_base)?,
        },
        cronjob: tugboat_controller::controllers::cronjob::Config {
            minute: secs("cronjob-minute-seconds", tuning.cronjob_minute_seconds)?,
        },
        ..Default::default()
    })
}

/// How the API is secured, from the flags.
pub fn security(args: &crate::args::SecurityArgs) -> tugboat_controller::Security {
    if args.insecure_http {
        tugboat_controller::Security::InsecureHttp
    } else {
        tugboat_controller::Security::Tls {
            extra_sans: args.tls_san.clone(),
        }
    }
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

/// Binds the API address (warning when it is not loopback and there is no
/// authentication) and records the URL and the admin kubeconfig in the client
/// config so later `tug` commands find the server. Returns the listener and the
/// URL clients use.
pub async fn bind_and_record(
    listen: std::net::SocketAddr,
    security: &tugboat_controller::Security,
    data_dir: &std::path::Path,
    ctx: &mut Context<'_>,
) -> anyhow::Result<(TcpListener, String)> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}; is another controller running? Pick another address with --listen"))?;
    let addr = listener
        .local_addr()
        .context("cannot read the address the controller listens on")?;
    let insecure = *security == tugboat_controller::Security::InsecureHttp;
    if insecure && !addr.ip().is_loopback() {
        anyhow::bail!(
            "--insecure-http serves without authentication, so it listens on loopback only (got {addr})"
        );
    }
    // Clients connect to loopback when the controller listens on every interface.
    let url = tugboat_controller::client_url(addr, security);
    let kubeconfig = (!insecure).then(|| {
        let path = data_dir.join(tugboat_controller::pki::ADMIN_KUBECONFIG);
        std::path::absolute(&path).unwrap_or(path)
    });
    match ctx.config_path() {
        Some(path) => {
            config::write_config(
                &path,
                &ClientConfig {
                    server: Some(url.clone()),
                    kubeconfig,
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
