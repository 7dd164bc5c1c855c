//! Between the runtime's types and bollard's models: the create request, the
//! container's state and address, engine events, usage samples, and the query
//! parameters.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerMemoryStats, ContainerStatsResponse,
    EventMessage, HostConfig, MountType, PortBinding,
};

use super::super::{
    ContainerInfo, ContainerSpec, ContainerState, ContainerStats, MountSource, RuntimeEvent,
};

/// Docker's zero time, which it reports for "never started" and "not finished".
const ZERO_TIME_PREFIX: &str = "0001-01-01T00:00:00";

/// Splits `repo[:tag]` / `repo@digest` into what `POST /images/create` wants.
pub(super) fn split_reference(image: &str) -> (&str, &str) {
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
pub(super) fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
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
    let mounts: Vec<bollard::models::Mount> = spec
        .mounts
        .iter()
        .map(|m| {
            let (typ, source) = match &m.source {
                MountSource::Bind(path) => (MountType::BIND, path.clone()),
                MountSource::Volume(name) => (MountType::VOLUME, name.clone()),
            };
            bollard::models::Mount {
                target: Some(m.target.clone()),
                source: Some(source),
                typ: Some(typ),
                read_only: m.read_only.then_some(true),
                ..Default::default()
            }
        })
        .collect();
    let host_config = HostConfig {
        mounts: (!mounts.is_empty()).then_some(mounts),
        memory: spec.memory_limit_bytes,
        nano_cpus: spec.nano_cpus,
        cpu_shares: spec.cpu_shares,
        network_mode: spec.network.clone(),
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        dns: (!spec.dns.is_empty()).then(|| spec.dns.clone()),
        dns_search: (!spec.dns_search.is_empty()).then(|| spec.dns_search.clone()),
        dns_options: (!spec.dns_options.is_empty()).then(|| spec.dns_options.clone()),
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
        domainname: spec.domainname.clone(),
        open_stdin: spec.stdin.then_some(true),
        stdin_once: spec.stdin_once.then_some(true),
        attach_stdin: spec.stdin.then_some(true),
        tty: spec.tty.then_some(true),
        exposed_ports: (!exposed_ports.is_empty()).then_some(exposed_ports),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// `None` for Docker's empty strings and zero times.
fn time_of(value: Option<String>) -> Option<String> {
    value.filter(|t| !t.is_empty() && !t.starts_with(ZERO_TIME_PREFIX))
}

pub(super) fn container_info(inspect: ContainerInspectResponse) -> ContainerInfo {
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
        pid: state.pid.filter(|p| *p > 0 && running),
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
pub(super) fn ip_of(
    networks: impl Iterator<Item = (String, Option<String>)>,
    network_mode: Option<&str>,
) -> Option<String> {
    let networks: BTreeMap<String, String> = networks
        .filter_map(|(name, ip)| ip.filter(|ip| !ip.is_empty()).map(|ip| (name, ip)))
        .collect();
    let preferred = network_mode.and_then(|mode| networks.get(mode)).cloned();
    preferred.or_else(|| networks.into_values().next())
}

pub(super) fn runtime_event(message: EventMessage) -> Option<RuntimeEvent> {
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

/// One frame of Docker's stats stream as a sample; `None` for the empty frames it
/// sends for a container that is not running (zero `read`, zero figures), which is
/// how a stream tells that its container stopped.
pub(super) fn stats_sample(frame: &ContainerStatsResponse) -> Option<ContainerStats> {
    let read = frame
        .read
        .as_deref()
        .filter(|t| !t.is_empty() && !t.starts_with(ZERO_TIME_PREFIX))?
        .parse::<jiff::Timestamp>()
        .ok()?;
    let cpu_total_ns = frame.cpu_stats.as_ref()?.cpu_usage.as_ref()?.total_usage?;
    Some(ContainerStats {
        read,
        cpu_total_ns,
        memory_working_set: frame.memory_stats.as_ref().map_or(0, working_set),
    })
}

/// Usage less the inactive file pages, never below 0, as cAdvisor computes it.
/// Under cgroup v1 the figure for the container's whole hierarchy is
/// `total_inactive_file` (its `inactive_file` leaves out child cgroups); cgroup v2
/// has only `inactive_file`, already hierarchical.
pub(super) fn working_set(memory: &ContainerMemoryStats) -> u64 {
    let inactive = memory.stats.as_ref().and_then(|stats| {
        stats
            .get("total_inactive_file")
            .or_else(|| stats.get("inactive_file"))
    });
    memory
        .usage
        .unwrap_or(0)
        .saturating_sub(inactive.copied().unwrap_or(0))
}

/// Docker's `since`: `seconds.nanoseconds`.
pub(super) fn since_param(nanos: i64) -> String {
    format!(
        "{}.{:09}",
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000)
    )
}

pub(super) fn label_filters(labels: &[(String, String)]) -> Vec<String> {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect()
}
