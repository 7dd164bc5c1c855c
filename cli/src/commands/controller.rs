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
    if let Some(crate::args::ControllerCommand::Migrate { from, to, store }) = args.command {
        return migrate(&from, &to, store, ctx).await;
    }
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
    store_config(&args.store, &mut config)?;
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

/// The store and the leader election, from the flags.
pub fn store_config(
    args: &crate::args::StoreArgs,
    config: &mut tugboat_controller::Config,
) -> anyhow::Result<()> {
    let secs = |flag: &str, v: f64| -> anyhow::Result<std::time::Duration> {
        if !v.is_finite() || v <= 0.0 {
            anyhow::bail!("--{flag}: expected a positive number of seconds, got {v}");
        }
        Ok(std::time::Duration::from_secs_f64(v))
    };
    let etcd = match args.store.as_deref() {
        None | Some("redb") => false,
        Some(url) if url.starts_with("etcd://") => true,
        Some(other) => {
            anyhow::bail!("--store {other:?}: expected `redb` or etcd://HOST:PORT[,HOST:PORT…]")
        }
    };
    if etcd {
        etcd_store(args, config)?;
    } else if args.etcd_ca.is_some() || args.etcd_cert.is_some() {
        anyhow::bail!("--etcd-ca and --etcd-cert need --store etcd://…");
    }
    if args.leader_elect.unwrap_or(etcd) {
        let timing = tugboat_controller::leader::Timing {
            lease_duration: secs(
                "leader-elect-lease-duration",
                args.leader_elect_lease_duration,
            )?,
            renew_deadline: secs(
                "leader-elect-renew-deadline",
                args.leader_elect_renew_deadline,
            )?,
            retry_period: secs("leader-elect-retry-period", args.leader_elect_retry_period)?,
        };
        timing
            .check()
            .map_err(|e| anyhow!("--leader-elect-*: {e}"))?;
        config.leader_election = Some(timing);
        config.leader_identity = args.leader_elect_identity.clone();
    }
    Ok(())
}

#[cfg(feature = "etcd")]
fn etcd_store(
    args: &crate::args::StoreArgs,
    config: &mut tugboat_controller::Config,
) -> anyhow::Result<()> {
    use tugboat_controller::store::etcd::{EtcdConfig, EtcdTls};
    let url = args.store.as_deref().unwrap_or_default();
    let endpoints = EtcdConfig::parse_url(url)
        .unwrap_or_else(|| Err(format!("{url:?} is not an etcd:// URL")))
        .map_err(|e| anyhow!("--store: {e}"))?;
    let mut etcd = EtcdConfig::new(endpoints);
    if !args.etcd_prefix.starts_with('/') || args.etcd_prefix.len() < 2 {
        anyhow::bail!(
            "--etcd-prefix {:?}: expected a path such as /tugboat",
            args.etcd_prefix
        );
    }
    etcd.prefix = args.etcd_prefix.clone();
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("--{flag}: cannot read {}", path.display()))
    };
    if args.etcd_ca.is_some() || args.etcd_cert.is_some() {
        etcd.tls = Some(EtcdTls {
            ca: args
                .etcd_ca
                .as_deref()
                .map(|p| read("etcd-ca", p))
                .transpose()?,
            identity: match (&args.etcd_cert, &args.etcd_key) {
                (Some(c), Some(k)) => Some((read("etcd-cert", c)?, read("etcd-key", k)?)),
                _ => None,
            },
        });
    }
    let interval = args.etcd_compaction_interval;
    if !interval.is_finite() || interval < 0.0 {
        anyhow::bail!("--etcd-compaction-interval: expected seconds (0: never), got {interval}");
    }
    etcd.compaction_interval = std::time::Duration::from_secs_f64(interval);
    config.store = tugboat_controller::StoreConfig::Etcd(etcd);
    Ok(())
}

/// `tug controller migrate`: every object of a redb store into etcd.
#[cfg(feature = "etcd")]
async fn migrate(
    from: &str,
    to: &str,
    mut store: crate::args::StoreArgs,
    ctx: &mut Context<'_>,
) -> anyhow::Result<()> {
    use std::collections::BTreeMap;
    use tugboat_controller::store::Store as _;
    use tugboat_controller::store::etcd::EtcdStore;
    use tugboat_controller::store::redb::RedbStore;

    let path = from.strip_prefix("redb:").ok_or_else(|| {
        anyhow!("--from {from:?}: expected redb:DIR (the controller's data directory) or redb:FILE")
    })?;
    let path = std::path::Path::new(path);
    let (file, data_dir) = if path.is_dir() {
        (path.join("tugboat.redb"), Some(path))
    } else {
        (path.to_path_buf(), path.parent())
    };
    if !file.exists() {
        anyhow::bail!("--from: {} does not exist", file.display());
    }
    store.store = Some(to.to_string());
    let mut config = tugboat_controller::Config::default();
    etcd_store(&store, &mut config)?;
    let tugboat_controller::StoreConfig::Etcd(mut etcd) = config.store else {
        anyhow::bail!("--to {to:?}: expected etcd://HOST:PORT[,HOST:PORT…]");
    };
    // Nothing of etcd's compaction is needed for a copy.
    etcd.compaction_interval = std::time::Duration::ZERO;
    let source = RedbStore::open(&file, tugboat_controller::store::redb::DEFAULT_HISTORY)
        .with_context(|| {
            format!(
                "cannot open {} (is its controller still running?)",
                file.display()
            )
        })?;
    let target = EtcdStore::connect(etcd)
        .await
        .with_context(|| format!("cannot reach etcd at {to}"))?;
    let objects = source.dump();
    let mut resources: BTreeMap<&str, usize> = BTreeMap::new();
    for (key, _) in &objects {
        *resources.entry(key.resource.as_str()).or_default() += 1;
    }
    for resource in resources.keys() {
        let (there, _) = target.list(resource, None).await?;
        if !there.is_empty() {
            anyhow::bail!(
                "etcd already holds {} {resource} under {}: migrate into an empty prefix (--etcd-prefix)",
                there.len(),
                store.etcd_prefix
            );
        }
    }
    for (i, (key, stored)) in objects.iter().enumerate() {
        target
            .create(key, stored.object.as_ref().clone())
            .await
            .with_context(|| format!("copying {key} ({i} of {} copied)", objects.len()))?;
    }
    // Check: everything arrived as it was, but for its resourceVersion.
    let strip = |v: &serde_json::Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            m.remove("resourceVersion");
        }
        v
    };
    for (key, stored) in &objects {
        let copied = target
            .get(key)
            .await?
            .ok_or_else(|| anyhow!("{key} is missing in etcd after the copy"))?;
        if strip(&copied.object) != strip(&stored.object) {
            anyhow::bail!("{key} differs in etcd after the copy");
        }
    }
    if let Some(dir) = data_dir.filter(|d| d.join("tls").join("ca.key").exists()) {
        target
            .share_cluster_ca(dir)
            .await
            .context("cannot copy the cluster CA to etcd")?;
    }
    let out = &mut *ctx.out;
    for (resource, n) in &resources {
        writeln!(out, "{resource}\t{n}")?;
    }
    writeln!(
        out,
        "copied {} objects from {} to {to} (prefix {}), each checked",
        objects.len(),
        file.display(),
        store.etcd_prefix
    )?;
    Ok(())
}

#[cfg(not(feature = "etcd"))]
async fn migrate(
    _: &str,
    _: &str,
    _: crate::args::StoreArgs,
    _: &mut Context<'_>,
) -> anyhow::Result<()> {
    anyhow::bail!(
        "migrate: this tug was built without etcd; build it with `cargo build --release --features etcd` (which needs protoc: Debian's protobuf-compiler)"
    )
}

#[cfg(not(feature = "etcd"))]
fn etcd_store(
    _: &crate::args::StoreArgs,
    _: &mut tugboat_controller::Config,
) -> anyhow::Result<()> {
    anyhow::bail!(
        "--store etcd://…: this tug was built without etcd; build it with `cargo build --release --features etcd` (which needs protoc: Debian's protobuf-compiler)"
    )
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
