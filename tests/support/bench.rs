//! What the benchmarks in `benches/` share: their round count from the environment,
//! and the facts a recorded run states (date, code, load).

use std::process::Command;

use anyhow::Context as _;

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
