//! Aids for tests of this crate and of the workspace that run real processes.

use std::process::{Child, Command, Stdio};

/// A shell loop that kills process `$2` once process `$1` (the test) is gone.
const WATCHDOG: &str = "while kill -0 \"$1\" 2>/dev/null && kill -0 \"$2\" 2>/dev/null; do sleep 1; done; kill -9 \"$2\" 2>/dev/null; true";

/// Watches that `pid` does not outlive this process: a test that is killed or
/// aborts (a stack overflow) runs no destructor, and its servers would be left
/// running. A process of its own, since the workspace has no unsafe code for
/// `PR_SET_PDEATHSIG`. Kill and wait for the returned child when `pid` is
/// stopped on purpose.
pub fn watchdog(pid: u32) -> std::io::Result<Child> {
    Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("watchdog")
        .arg(std::process::id().to_string())
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}
