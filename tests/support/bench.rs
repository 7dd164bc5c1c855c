//! What the benchmarks in `benches/` share: their round count from the environment,
//! and the facts a recorded run states (date, code, load).

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::docker::docker;

/// A positive round count from `var`, else `default`.
pub fn rounds_from_env(var: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(var) {
        Ok(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("{var}={v:?}: expected a positive whole number")),
        Err(_) => Ok(default),
    }
}

/// What `program ARGS` printed, run in this crate's directory; `?` if it could not run.
pub fn output_of(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".to_string())
}

/// The code measured: `git describe --always --dirty` of this workspace.
pub fn git_describe() -> String {
    output_of("git", &["describe", "--always", "--dirty"])
}

pub fn utc_now() -> String {
    output_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_string())
}

/// Leaves the daemon in the swarm state it was found in: a daemon outside any swarm
/// becomes a single-node swarm for the run and leaves it on drop; one already in a
/// swarm (as a manager) is used as it is and stays.
pub struct Swarm {
    joined_by_us: bool,
    /// `swarm init` creates the `docker_gwbridge` network and `leave` keeps it.
    gwbridge_existed: bool,
}

impl Swarm {
    pub fn join() -> anyhow::Result<Self> {
        let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"])?;
        match state.as_str() {
            "active" => {
                if docker(&["info", "--format", "{{.Swarm.ControlAvailable}}"])? != "true" {
                    bail!("this daemon is a swarm worker: services are created on managers");
                }
                Ok(Swarm {
                    joined_by_us: false,
                    gwbridge_existed: true,
                })
            }
            "inactive" => {
                let gwbridge =
                    docker(&["network", "ls", "-q", "--filter", "name=^docker_gwbridge$"])?;
                // The guard exists before `init`, so even a half-done init is undone.
                let swarm = Swarm {
                    joined_by_us: true,
                    gwbridge_existed: !gwbridge.is_empty(),
                };
                docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
                eprintln!("the daemon was in no swarm: made it a single-node swarm for the run");
                Ok(swarm)
            }
            other => bail!(
                "the daemon's swarm state is {other:?}; this benchmark needs it inactive, or \
                 active as a manager"
            ),
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if !self.joined_by_us {
            return;
        }
        match docker(&["swarm", "leave", "--force"]) {
            Ok(_) => eprintln!("the daemon left the swarm made for the run"),
            Err(e) => eprintln!("LEAVE THE SWARM BY HAND (`docker swarm leave --force`): {e}"),
        }
        if !self.gwbridge_existed {
            let _ = docker(&["network", "rm", "docker_gwbridge"]);
        }
    }
}

/// The resident memory of process `pid` in MB (NaN when it cannot be read).
pub fn rss_mb(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else {
        return f64::NAN;
    };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// A Swarm service of the sample image, removed on drop.
pub struct SwarmService {
    pub name: String,
}

impl Drop for SwarmService {
    fn drop(&mut self) {
        let _ = docker(&["service", "rm", &self.name]);
    }
}

/// A Swarm service `name` of `image` with `replicas`, published on port `port`
/// through the ingress routing mesh and labelled `label` (`key=value`), once
/// its mesh address and one task's address both answer `GET /`; fails (and
/// removes the service) after `wait` — as it does where the kernel has no IPVS.
pub async fn swarm_mesh_service(
    name: &str,
    image: &str,
    replicas: usize,
    port: u16,
    label: &str,
    wait: std::time::Duration,
) -> anyhow::Result<(SwarmService, std::net::SocketAddr, std::net::SocketAddr)> {
    let _ = docker(&["service", "rm", name]);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    docker(&[
        "service",
        "create",
        "--detach",
        "--quiet",
        "--name",
        name,
        "--replicas",
        &replicas.to_string(),
        "--publish",
        &format!("published={port},target=8080"),
        "--label",
        label,
        "--container-label",
        label,
        image,
    ])?;
    let service = SwarmService {
        name: name.to_string(),
    };
    let mesh: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let task = crate::eventually_within(wait, "the swarm service runs and answers", || async {
        let ids = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name={name}"),
        ])
        .ok()?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.len() != replicas {
            return None;
        }
        // The task's address on the ingress network is the one the mesh uses;
        // any of its addresses answers.
        let ips = docker(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            ids[0],
        ])
        .ok()?;
        let ip = ips.split_whitespace().next()?.to_string();
        let task: std::net::SocketAddr = format!("{ip}:8080").parse().ok()?;
        (crate::load::get(mesh).await.is_ok() && crate::load::get(task).await.is_ok())
            .then_some(task)
    })
    .await?;
    Ok((service, mesh, task))
}
