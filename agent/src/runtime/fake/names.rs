//! The fake's small rules, as Docker has them: image references, IDs and
//! addresses, signals and their exit codes, container names, label filters, and
//! how log lines are rendered.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};

use super::{LogLine, NEXT_ADDRESS};
use crate::runtime::{LogOptions, RuntimeError};

/// `nginx` → `nginx:latest`, `docker.io/library/nginx` → `nginx:latest`.
pub(super) fn normalize(image: &str) -> String {
    let image = image.strip_prefix("docker.io/").unwrap_or(image);
    let image = image.strip_prefix("library/").unwrap_or(image);
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    if image.contains('@') || image[name_start..].contains(':') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

/// The repository of a reference, as Docker names it in pull errors.
pub(super) fn repository(image: &str) -> &str {
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    let end = image[name_start..]
        .find(['@', ':'])
        .map_or(image.len(), |i| name_start + i);
    &image[..end]
}

pub(super) fn hash(bytes: &[u8]) -> u64 {
    // FNV-1a: stable across runs, unlike std's hasher.
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub(super) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// 64 hex digits, like Docker's IDs.
pub(super) fn hex_id(seed: u64) -> String {
    (0..4)
        .map(|i| format!("{:016x}", splitmix(seed ^ (i * 0x1000_0000_0000_0001))))
        .collect()
}

pub(super) fn next_address() -> String {
    let n = NEXT_ADDRESS.fetch_add(1, Ordering::Relaxed);
    format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

/// The exit code a process killed by `signal` has (128 + its number).
pub(super) fn signal_exit_code(signal: &str) -> i64 {
    let name = signal.trim().to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let number = name.parse().unwrap_or(match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ABRT" => 6,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => 9,
    });
    128 + number
}

pub(super) fn signal_number(signal: &str) -> i64 {
    signal_exit_code(signal) - 128
}

pub(super) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

pub(super) fn has_labels(labels: &BTreeMap<String, String>, wanted: &[(String, String)]) -> bool {
    wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub(super) fn not_running(operation: String, id: &str) -> RuntimeError {
    RuntimeError::Engine {
        operation,
        message: format!("Container {id} is not running"),
    }
}

/// Log lines as Docker would send them: the last `tail`, with timestamps if asked.
pub(super) fn render_lines(lines: &[LogLine], opts: &LogOptions) -> Vec<Bytes> {
    let skip = opts.tail.map_or(0, |tail| {
        lines
            .len()
            .saturating_sub(usize::try_from(tail).unwrap_or(usize::MAX))
    });
    lines[skip..]
        .iter()
        .map(|line| render_line(line, opts.timestamps))
        .collect()
}

pub(super) fn render_line(line: &LogLine, timestamps: bool) -> Bytes {
    if !timestamps {
        return line.bytes.clone();
    }
    let mut out = BytesMut::from(format!("{} ", line.time).as_bytes());
    out.extend_from_slice(&line.bytes);
    out.freeze()
}
