//! The local cluster as a background process: `tug up` records its pid in
//! `DATA_DIR/tug-up.pid` while it runs (in the foreground or not), `tug up -d`
//! starts `tug up` again detached (this very program, its own arguments less
//! `-d`, in a process group of its own, stdin closed, output to
//! `DATA_DIR/tug-up.log`), and `tug down` stops whichever is running with
//! SIGTERM. A pid is only ever signalled while `/proc/PID/cmdline` says it is a
//! `tug … up`, so a stale file naming a reused pid is harmless.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Where a running `tug up` records its pid, in the data directory.
pub const PID_FILE: &str = "tug-up.pid";
/// Where a background `tug up` writes its output, in the data directory.
pub const LOG_FILE: &str = "tug-up.log";

/// Whether a command line (`/proc/PID/cmdline`: NUL-separated arguments) is a
/// `tug … up`: a program named `tug` whose verb is `up`.
pub fn is_tug_up(cmdline: &[u8]) -> bool {
    let mut args = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy);
    let Some(program) = args.next() else {
        return false;
    };
    let name = program.rsplit('/').next().unwrap_or("");
    name == "tug" && args.any(|a| a == "up")
}

/// Whether `pid` is a live (not zombie) `tug … up`.
fn is_running_tug_up(pid: i32) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let cmdline = std::fs::read(proc.join("cmdline")).unwrap_or_default();
    is_tug_up(&cmdline) && alive(pid)
}

/// Whether `pid` exists and has not exited (a zombie, not yet reaped by its
/// parent, has).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `PID (comm) STATE …`; comm may hold spaces and parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The pid of the `tug up` running on `data_dir`, if its pid file names a live one.
pub fn running(data_dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data_dir.join(PID_FILE)).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    (pid > 0 && is_running_tug_up(pid)).then_some(pid)
}

/// The pid file of the running `tug up`, removed when it ends (if it still
/// names this process).
pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    /// Claims `data_dir` for this process, or says which `tug up` already has it.
    pub fn claim(data_dir: &Path) -> anyhow::Result<PidFile> {
        let pid = std::process::id();
        if let Some(other) = running(data_dir).filter(|p| *p as u32 != pid) {
            anyhow::bail!("{}", already_running(data_dir, other));
        }
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let path = data_dir.join(PID_FILE);
        std::fs::write(&path, format!("{pid}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(PidFile { path, pid })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours =
            std::fs::read_to_string(&self.path).is_ok_and(|t| t.trim() == self.pid.to_string());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The refusal when a cluster is already up.
pub fn already_running(data_dir: &Path, pid: i32) -> String {
    format!(
        "a local cluster is already running on {} (tug up, pid {pid}; its log: {}); stop it with `tug down`",
        data_dir.display(),
        data_dir.join(LOG_FILE).display()
    )
}

/// Starts this program again with `args` in the background: its own process
/// group (so the terminal's Ctrl-C and hangup do not reach it), stdin closed,
/// stdout and stderr appended to the log.
pub fn spawn(args: Vec<OsString>, data_dir: &Path) -> anyhow::Result<std::process::Child> {
    use std::os::unix::process::CommandExt as _;
    let exe = std::env::current_exe().context("cannot find the tug program to run again")?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let log_path = data_dir.join(LOG_FILE);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let err = log.try_clone()?;
    std::process::Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
        .context("cannot start tug up in the background")
}

/// This process's arguments without `-d`/`--detach`: the same `tug up`, in
/// the foreground of its own process.
pub fn foreground_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .skip(1)
        .filter(|a| a != "-d" && a != "--detach")
        .collect()
}

/// The last `n` lines of the log, to show why a background start failed.
pub fn log_tail(data_dir: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(data_dir.join(LOG_FILE)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// How stopping went.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// No `tug up` was running.
    NotRunning,
    /// It exited after SIGTERM.
    Stopped(i32),
}

/// Sends SIGTERM to the `tug up` running on `data_dir` and waits up to `wait`
/// for it to exit.
pub async fn stop(data_dir: &Path, wait: Duration) -> anyhow::Result<Stopped> {
    let Some(pid) = running(data_dir) else {
        // A stale file (a crash, a reboot) only misleads.
        let _ = std::fs::remove_file(data_dir.join(PID_FILE));
        return Ok(Stopped::NotRunning);
    };
    kill(Pid::from_raw(pid), Signal::SIGTERM)
        .with_context(|| format!("cannot stop tug up (pid {pid})"))?;
    let deadline = tokio::time::Instant::now() + wait;
    while alive(pid) {
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "tug up (pid {pid}) did not stop within {}s of SIGTERM; see {}",
                wait.as_secs(),
                data_dir.join(LOG_FILE).display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Stopped::Stopped(pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_tug_whose_verb_is_up_counts() {
        assert!(is_tug_up(b"/usr/local/bin/tug\0up\0--agents\x002\0"));
        assert!(is_tug_up(b"tug\0--config\0/c.json\0up\0"));
        assert!(is_tug_up(b"./target/release/tug\0up\0-d\0"));
        assert!(!is_tug_up(b"tug\0controller\0"));
        assert!(!is_tug_up(b"/usr/bin/python3\0up\0"));
        assert!(!is_tug_up(b"/usr/bin/tugboat\0up\0"));
        assert!(!is_tug_up(b""));
    }

    #[test]
    fn the_background_run_is_the_same_command_without_detach() {
        let args = ["tug", "up", "-d", "--agents", "1", "--detach"].map(OsString::from);
        assert_eq!(
            foreground_args(args),
            ["up", "--agents", "1"].map(OsString::from)
        );
    }

    #[test]
    fn a_stale_or_foreign_pid_file_is_not_a_running_cluster() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(running(dir.path()), None);
        // This test process is alive but is no `tug up`.
        std::fs::write(dir.path().join(PID_FILE), std::process::id().to_string()).unwrap();
        assert_eq!(running(dir.path()), None);
        std::fs::write(dir.path().join(PID_FILE), "not a pid").unwrap();
        assert_eq!(running(dir.path()), None);
    }

    #[test]
    fn the_pid_file_is_claimed_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let file = PidFile::claim(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(PID_FILE)).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        drop(file);
        assert!(!dir.path().join(PID_FILE).exists());
    }

    #[tokio::test]
    async fn stopping_nothing_says_so_and_clears_a_stale_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PID_FILE), "999999999").unwrap();
        assert_eq!(
            stop(dir.path(), Duration::from_secs(1)).await.unwrap(),
            Stopped::NotRunning
        );
        assert!(!dir.path().join(PID_FILE).exists());
    }

    #[test]
    fn the_log_tail_is_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOG_FILE), "a\nb\nc\n").unwrap();
        assert_eq!(log_tail(dir.path(), 2), "b\nc");
        assert_eq!(log_tail(dir.path(), 9), "a\nb\nc");
    }
}
