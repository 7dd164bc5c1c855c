//! The node's service sandbox: a small container of our own (`tug pause`) on the
//! pods' Docker network, whose network namespace holds the Service range as a
//! local route (`ip route add local 10.96.0.0/16 dev lo`), so every ClusterIP
//! and the cluster DNS address are its own addresses. The agent opens the
//! ClusterIP and DNS sockets inside it ([`super::netns`]); each pod gets one route,
//! `10.96.0.0/16 via SANDBOX_IP`. Nothing on the host's own network changes, and
//! several agents sharing one Docker host each have their own sandbox — the way
//! Swarm keeps its virtual IPs inside the network's namespace.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::runtime::{ContainerRuntime, ContainerSpec, LABEL_NODE, RuntimeError};

use super::netns::{self, NetnsError};

/// Marks Tugboat's own infrastructure containers (value: what it is).
pub const LABEL_ROLE: &str = "io.tugboat.role";
pub const ROLE_SANDBOX: &str = "service-sandbox";
/// The image the sandbox runs (`tug pause`), built from the agent's own binary.
pub const SANDBOX_IMAGE: &str = "tugboat/sandbox:latest";

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the service sandbox container: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("the service sandbox {0} is not running with an address")]
    NotRunning(String),
    #[error("the service sandbox: {0}")]
    Netns(#[from] NetnsError),
    #[error(
        "process {pid} is not the sandbox's `tug pause` here: the agent does not share the \
         host's process namespace (run it on the host as root, or in a container with \
         --pid=host --privileged), so it cannot reach containers' network namespaces"
    )]
    ForeignPids { pid: i64 },
}

/// How many times (100 ms apart) a new sandbox's process is looked at before it
/// is taken for someone else's.
const PAUSE_CHECKS: usize = 30;

/// A running sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sandbox {
    pub id: String,
    pub pid: i64,
    pub ip: Ipv4Addr,
}

/// A CIDR (`10.96.0.0/16`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected an IPv4 CIDR such as 10.96.0.0/16"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{s:?}: {ip:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("{s:?}: expected a prefix length from 8 to 30"))?;
        let mask = u32::MAX << (32 - u32::from(prefix));
        Ok(Cidr {
            base: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }

    /// The address `n` into the range (`10.96.0.10` for 10).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base).wrapping_add(n))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

fn labels(node: &str) -> Vec<(String, String)> {
    vec![
        (LABEL_NODE.to_string(), node.to_string()),
        (LABEL_ROLE.to_string(), ROLE_SANDBOX.to_string()),
    ]
}

/// The node's sandbox, running and holding the Service range: the one found,
/// or a new one (stale ones removed). `known` (the one set up before) is returned
/// as it is while it still runs.
pub async fn ensure(
    runtime: &dyn ContainerRuntime,
    node: &str,
    network: Option<String>,
    cidr: Cidr,
    known: Option<&Sandbox>,
) -> Result<Sandbox, SandboxError> {
    let found = runtime.list(&labels(node)).await?;
    let mut sandbox = None;
    for c in found {
        let usable = c.state.running && c.pid.is_some() && c.ip.is_some() && sandbox.is_none();
        if usable {
            sandbox = Some(c);
        } else {
            let _ = runtime.remove(&c.id).await;
        }
    }
    let info = match sandbox {
        Some(c) => c,
        None => {
            let spec = ContainerSpec {
                name: format!("tug_sandbox_{node}"),
                image: SANDBOX_IMAGE.to_string(),
                args: Some(vec!["pause".to_string()]),
                labels: labels(node).into_iter().collect::<BTreeMap<_, _>>(),
                network,
                ..Default::default()
            };
            let id = runtime.create(&spec).await?;
            runtime.start(&id).await?;
            runtime
                .inspect(&id)
                .await?
                .ok_or_else(|| SandboxError::NotRunning(id.clone()))?
        }
    };
    let (Some(pid), Some(ip)) = (info.pid, info.ip.as_deref().and_then(|i| i.parse().ok())) else {
        return Err(SandboxError::NotRunning(info.id));
    };
    if let Some(k) = known
        && k.id == info.id
        && k.pid == pid
        && k.ip == ip
    {
        return Ok(k.clone());
    }
    // Docker's pids are the host's: make sure this process sees the same ones
    // before entering any namespace by pid (an agent in a container of its own
    // would otherwise enter whatever process has that number here).
    // Just started, the process may still be runc's on its way to exec `tug
    // pause`: look again for a moment before concluding.
    let mut is_pause = false;
    for _ in 0..PAUSE_CHECKS {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        is_pause = args.len() >= 2 && args[0].ends_with(b"tug") && args[1] == b"pause";
        if is_pause {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    if !is_pause {
        return Err(SandboxError::ForeignPids { pid });
    }
    let range = cidr.to_string();
    netns::ip(pid, &["route", "replace", "local", &range, "dev", "lo"])?;
    Ok(Sandbox {
        id: info.id,
        pid,
        ip,
    })
}

/// Sends the pod's Service traffic (and its DNS) to the sandbox: one route in the
/// network namespace of the pod container's process `pid`.
pub fn route_pod(pid: i64, cidr: Cidr, sandbox: Ipv4Addr) -> Result<(), NetnsError> {
    netns::ip(
        pid,
        &[
            "route",
            "replace",
            &cidr.to_string(),
            "via",
            &sandbox.to_string(),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_parsed_and_normalised() {
        let c = Cidr::parse("10.96.3.4/16").unwrap();
        assert_eq!(c.to_string(), "10.96.0.0/16");
        assert_eq!(c.nth(10), Ipv4Addr::new(10, 96, 0, 10));
        assert!(Cidr::parse("10.96.0.0").unwrap_err().contains("CIDR"));
        assert!(Cidr::parse("10.96.0.0/33").unwrap_err().contains("prefix"));
        assert!(Cidr::parse("ten/16").unwrap_err().contains("IPv4"));
    }
}
