//! The host's own CPU and memory, read from the kernel: `/proc/stat` (jiffies spent
//! busy and in all, per CPU) and `/proc/meminfo` (`MemTotal - MemAvailable`, what
//! `free` calls used). Parsing is pure and tested on text; only [`read`] touches
//! the files.

use std::time::Duration;

use super::Rate;

/// The CPU lines of `/proc/stat`: jiffies since boot, all CPUs together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTimes {
    /// Everything but idle and iowait.
    pub busy: u64,
    /// Everything (guest time is already inside user and nice).
    pub total: u64,
    /// How many `cpuN` lines there are.
    pub cpus: u64,
}

/// One reading of the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostSample {
    pub at: jiff::Timestamp,
    pub cpu: CpuTimes,
    pub memory_working_set: u64,
}

/// The aggregate `cpu` line and the number of `cpuN` lines.
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let mut lines = text.lines();
    let fields: Vec<u64> = lines
        .find(|l| l.starts_with("cpu "))?
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    let cpus = text
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
        cpus: u64::try_from(cpus).ok().filter(|n| *n > 0)?,
    })
}

/// `MemTotal - MemAvailable`, in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let kib = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse::<u64>()
            .ok()
    };
    Some(
        kib("MemTotal")?
            .saturating_sub(kib("MemAvailable")?)
            .saturating_mul(1024),
    )
}

/// The host's CPU between two readings, and its memory at the later one. The
/// share of jiffies spent busy, times the number of CPUs, is how many CPUs were
/// busy: no need to know the kernel's tick rate (`USER_HZ`).
pub fn rate(earlier: &HostSample, later: &HostSample) -> Option<Rate> {
    let window = Duration::try_from(later.at.duration_since(earlier.at))
        .ok()
        .filter(|w| !w.is_zero())?;
    let busy = later.cpu.busy.checked_sub(earlier.cpu.busy)?;
    let total = later
        .cpu
        .total
        .checked_sub(earlier.cpu.total)
        .filter(|t| *t > 0)?;
    let nano_cores =
        u128::from(busy) * u128::from(later.cpu.cpus) * 1_000_000_000 / u128::from(total);
    Some(Rate {
        timestamp: later.at,
        window,
        cpu_nano_cores: u64::try_from(nano_cores).unwrap_or(u64::MAX),
        memory_working_set: later.memory_working_set,
    })
}

/// Reads the host now; `None` (logged) if `/proc` cannot be read or parsed.
pub async fn read() -> Option<HostSample> {
    let stat = tokio::fs::read_to_string("/proc/stat").await;
    let meminfo = tokio::fs::read_to_string("/proc/meminfo").await;
    let at = jiff::Timestamp::now();
    match (
        stat.as_deref().ok().and_then(parse_proc_stat),
        meminfo.as_deref().ok().and_then(parse_meminfo),
    ) {
        (Some(cpu), Some(memory_working_set)) => Some(HostSample {
            at,
            cpu,
            memory_working_set,
        }),
        _ => {
            tracing::debug!(
                stat = ?stat.err(),
                meminfo = ?meminfo.err(),
                "cannot read the host's CPU and memory from /proc"
            );
            None
        }
    }
}
