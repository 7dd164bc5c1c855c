//! `tug-sample pause`: the process of a pod sandbox (Kubernetes' pause
//! container). The sandbox exists only to hold the pod's network namespace (and
//! its hostname, /etc/hosts and resolv.conf) for the pod's other containers, so
//! this sleeps until SIGTERM or SIGINT and then exits 0 at once. As PID 1 of its
//! container it also reaps any child re-parented to it, so none stays a zombie.

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use tokio::signal::unix::{SignalKind, signal};

/// Sleeps until SIGTERM or SIGINT, reaping children on SIGCHLD.
pub fn run() -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut child = signal(SignalKind::child())?;
        loop {
            tokio::select! {
                _ = term.recv() => return Ok(()),
                _ = int.recv() => return Ok(()),
                _ = child.recv() => reap(),
            }
        }
    })
}

/// Collects every child that has exited (several may share one SIGCHLD).
fn reap() {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}
