//! `tug agent --node NAME`: runs a node agent against the controller until Ctrl-C or
//! SIGTERM; its containers keep running after it stops. The first start joins
//! with `--server https://HOST:6443 --token K10…`; the credential it gets is kept
//! in the state directory and used by every later start.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};

use std::net::{IpAddr, SocketAddr};

use tugboat_agent::image;
use tugboat_agent::proxy::cluster::{ClusterConfig, resolv_conf_servers};
use tugboat_agent::proxy::sandbox::{Cidr, SANDBOX_IMAGE};
use tugboat_agent::runtime::docker::DockerRuntime;

use crate::args::{AgentArgs, ClusterNetArgs};
use crate::context::Context;

fn seconds(flag: &str, v: f64) -> anyhow::Result<Duration> {
    if !v.is_finite() || v <= 0.0 {
        bail!("--{flag}: expected a positive number of seconds, got {v}");
    }
    Ok(Duration::from_secs_f64(v))
}

/// The agent's state directory: the flag's, else `agents/NAME` under the data
/// directory's parent default.
fn state_dir(args: &AgentArgs, ctx: &Context<'_>) -> anyhow::Result<std::path::PathBuf> {
    match &args.state_dir {
        Some(d) => Ok(d.clone()),
        None => crate::config::data_dir(&ctx.env)
            .map(|d| d.join("agents").join(&args.node))
            .ok_or_else(|| {
                anyhow::anyhow!("no state directory: pass --state-dir DIR (neither XDG_DATA_HOME nor HOME is set)")
            }),
    }
}

/// The server and the node's credential: joined with the token the first
/// time, read from the state directory after. A plain `http://` server
/// (`--insecure-http`) needs none.
pub async fn credential(
    server: Option<&str>,
    token: Option<&str>,
    node: &str,
    state_dir: &std::path::Path,
) -> anyhow::Result<(String, Option<Arc<tugboat_agent::tls::NodeTls>>)> {
    if let Some(url) = server.filter(|s| s.starts_with("http://")) {
        if token.is_some() {
            tracing::warn!(
                "the controller serves plain HTTP (--insecure-http): the token is not used"
            );
        }
        return Ok((url.to_string(), None));
    }
    let (url, tls) = tugboat_agent::join::load_or_join(server, token, node, state_dir)
        .await
        .with_context(|| format!("node {node} cannot get its credential"))?;
    Ok((url, Some(Arc::new(tls))))
}

pub async fn run(args: AgentArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let state_dir = state_dir(&args, ctx)?;
    // The server: --server or $TUG_SERVER, else the one in the node's kept
    // credential, else the local controller's (tug's client config).
    let recorded = match ctx.config_path() {
        Some(p) => crate::config::read_config(&p)?.and_then(|c| c.server),
        None => None,
    };
    let kept = state_dir
        .join(tugboat_agent::join::NODE_KUBECONFIG)
        .exists();
    let server = ctx
        .server_flag
        .clone()
        .or_else(|| ctx.env.tug_server.clone())
        .or(if kept { None } else { recorded });
    let (server, credential) = credential(
        server.as_deref(),
        args.token.as_deref(),
        &args.node,
        &state_dir,
    )
    .await?;
    let mut config = tugboat_agent::Config::new(&server, &args.node);
    config.listen = match args.listen {
        Some(l) => l,
        None if credential.is_some() => std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        None => std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    if credential.is_none() && !config.listen.ip().is_loopback() {
        tracing::warn!(addr = %config.listen, "the agent serves plain HTTP without authentication (the controller runs with --insecure-http) on a non-loopback address");
    }
    config.credential = credential;
    config.state_dir = Some(state_dir.clone());
    config.pod_infra = tugboat_agent::worker::sandbox::PodInfra::with_image(&args.pod_infra_image);
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
    config.proxy_port = args.proxy_port;
    if let Some(ip) = &args.host_port_ip {
        ip.parse::<std::net::IpAddr>()
            .map_err(|_| anyhow::anyhow!("--host-port-ip: expected an IP address, got {ip:?}"))?;
        config.host_port_ip = Some(ip.clone());
    }
    let quantity = |flag: &str,
                    v: &Option<String>,
                    parse: fn(&str) -> Option<i64>|
     -> anyhow::Result<Option<i64>> {
        match v {
            None => Ok(None),
            Some(text) => match parse(text) {
                Some(n) if n >= 0 => Ok(Some(n)),
                _ => bail!("--{flag}: expected a quantity such as 500m, 2 or 512Mi, got {text:?}"),
            },
        }
    };
    config.reserved_cpu_millis = quantity(
        "reserve-cpu",
        &args.reserve_cpu,
        tugboat_api::quantity::cpu_millis,
    )?
    .unwrap_or(0);
    config.reserved_memory = quantity(
        "reserve-memory",
        &args.reserve_memory,
        tugboat_api::quantity::bytes,
    )?
    .unwrap_or(0);
    config.memory_override = quantity("memory", &args.memory, tugboat_api::quantity::bytes)?;
    if let Some(cpus) = args.cpus {
        if cpus < 1 {
            bail!("--cpus: expected at least 1, got {cpus}");
        }
        config.cpus_override = Some(cpus);
    }
    if args.create_concurrency < 1 {
        bail!(
            "--create-concurrency: expected at least 1, got {}",
            args.create_concurrency
        );
    }
    let runtime = tugboat_agent::runtime::docker::DockerRuntime::connect(args.docker.as_deref())
        .await
        .context("cannot connect to Docker (is the daemon running? see --docker)")?
        .with_create_concurrency(args.create_concurrency);
    config.cluster = cluster_config(&args.cluster, &args.service_cidr, &runtime).await?;
    tugboat_agent::run(config, Arc::new(runtime), ctx.shutdown.clone())
        .await
        .context("the agent stopped")
}

/// The agent's ClusterIP and cluster DNS settings from its flags; builds the
/// service sandbox image from this binary when it is missing. `None` with
/// `--no-cluster-ip`, or (with a warning) when the image cannot be built.
pub async fn cluster_config(
    args: &ClusterNetArgs,
    service_cidr: &str,
    runtime: &DockerRuntime,
) -> anyhow::Result<Option<ClusterConfig>> {
    // The image of the node's service sandbox is also the default of every
    // pod's sandbox: built whether or not this node serves ClusterIPs.
    let built = match std::env::current_exe() {
        Ok(exe) => image::ensure_image(runtime, &exe, SANDBOX_IMAGE, &image::SANDBOX, false)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = &built {
        tracing::warn!(image = SANDBOX_IMAGE, error = %e, "cannot build the sandbox image from this binary; pods need --pod-infra-image");
    }
    if args.no_cluster_ip {
        return Ok(None);
    }
    let cidr = Cidr::parse(service_cidr).map_err(|e| anyhow::anyhow!("--service-cidr {e}"))?;
    let mut upstream = Vec::new();
    for u in &args.dns_upstream {
        let addr = u
            .parse::<SocketAddr>()
            .or_else(|_| u.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .map_err(|_| anyhow::anyhow!("--dns-upstream: expected IP or IP:PORT, got {u:?}"))?;
        upstream.push(addr);
    }
    if upstream.is_empty() {
        let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        upstream = resolv_conf_servers(&conf);
    }
    if let Err(e) = built {
        tracing::warn!(error = %e, "cannot build the service sandbox image; this node serves node ports only");
        return Ok(None);
    }
    Ok(Some(ClusterConfig::new(cidr, upstream)))
}
