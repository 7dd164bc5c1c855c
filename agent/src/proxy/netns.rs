//! Work inside a container's network namespace, from the agent's own process: a
//! short-lived thread joins the namespace (`setns`), does the work — opening
//! sockets, which stay in that namespace wherever they are used afterwards, or
//! running `ip` to set a route — and ends. The agent's other threads never change
//! namespace. Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and the host's /proc,
//! as a CNI plugin does.

use std::fs::File;
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open the network namespace of process {pid}: {source}")]
    Open {
        pid: i64,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enter the network namespace of process {pid}: {source}")]
    Enter { pid: i64, source: nix::Error },
    #[error("`ip {args}` in the network namespace of process {pid}: {message}")]
    Ip {
        pid: i64,
        args: String,
        message: String,
    },
    #[error("the thread working in the network namespace of process {0} failed")]
    Thread(i64),
}

/// Runs `work` on a thread inside the network namespace of process `pid`.
pub fn run_in<T: Send + 'static>(
    pid: i64,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetnsError> {
    let ns = File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|source| NetnsError::Open { pid, source })?;
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|source| NetnsError::Enter { pid, source })?;
        Ok(work())
    })
    .join()
    .map_err(|_| NetnsError::Thread(pid))?
}

/// Runs `ip ARGS` inside the network namespace of process `pid` (a child
/// process started from a thread in a namespace is in it too).
pub fn ip(pid: i64, args: &[&str]) -> Result<(), NetnsError> {
    let owned: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let shown = owned.join(" ");
    let out = run_in(pid, move || Command::new("ip").args(&owned).output())?;
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(NetnsError::Ip {
            pid,
            args: shown,
            message: String::from_utf8_lossy(&o.stderr).trim().to_string(),
        }),
        Err(e) => Err(NetnsError::Ip {
            pid,
            args: shown,
            message: format!("cannot run ip (iproute2): {e}"),
        }),
    }
}
