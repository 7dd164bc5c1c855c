//! Ages and timestamps as kubectl prints them: `HumanDuration` from apimachinery
//! (`5s`, `3m5s`, `2d3h`…) and describe's RFC 1123 timestamps in local time; and
//! durations as kubectl's flags take them (`--timeout 1m30s`).

use jiff::{SignedDuration, Timestamp, tz::TimeZone};

pub use tugboat_api::duration::{human_duration, since, since_micro, since_time};

/// describe's timestamps: Go's `time.RFC1123Z` in the local zone,
/// `Mon, 02 Jan 2006 15:04:05 -0700`.
pub fn rfc1123(ts: Timestamp) -> String {
    ts.to_zoned(TimeZone::system())
        .strftime("%a, %d %b %Y %H:%M:%S %z")
        .to_string()
}

/// A duration flag such as `--timeout`, as kubectl takes it (`60s`, `2m`, `1m30s`,
/// `500ms`), or a number of seconds.
pub fn parse_flag(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    let d: SignedDuration = s
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 60s, 2m or 1m30s"))?;
    std::time::Duration::try_from(d).map_err(|_| format!("{s:?} must not be negative"))
}

/// A flag's duration as Go prints one, the way kubectl's messages show it:
/// `500ms`, `2s`, `1m30s`, `1h5m`.
pub fn format_flag(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut text = String::new();
    if h > 0 {
        text.push_str(&format!("{h}h"));
    }
    if m > 0 {
        text.push_str(&format!("{m}m"));
    }
    if s > 0 || text.is_empty() {
        text.push_str(&format!("{s}s"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_durations_read_like_kubectl_durations() {
        use std::time::Duration;
        assert_eq!(parse_flag("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_flag("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_flag("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_flag("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_flag("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_flag("0"), Ok(Duration::ZERO));
        assert!(parse_flag("soon").is_err());
        assert!(parse_flag("-5s").is_err());
    }

    #[test]
    fn flag_durations_print_as_they_are_written() {
        use std::time::Duration;
        assert_eq!(format_flag(Duration::from_millis(500)), "500ms");
        assert_eq!(format_flag(Duration::from_secs(2)), "2s");
        assert_eq!(format_flag(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_flag(Duration::from_secs(3900)), "1h5m");
        assert_eq!(format_flag(parse_flag("2m").unwrap()), "2m");
    }
}
