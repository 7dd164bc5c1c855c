//! Ages as kubectl prints them: `HumanDuration` from apimachinery (`5s`, `3m5s`,
//! `2d3h`…), for the AGE columns computed by the server and by `tug`.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

/// kubectl's `duration.HumanDuration`: two significant units while they matter, one
/// after. A clock up to a second ahead of ours still reads `0s`, not an error.
pub fn human_duration(d: SignedDuration) -> String {
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The AGE column: time since `ts`, or `<unknown>` when there is no timestamp.
pub fn since(ts: Option<Timestamp>, now: Timestamp) -> String {
    match ts {
        Some(ts) => human_duration(now.duration_since(ts)),
        None => "<unknown>".to_string(),
    }
}

pub fn since_time(ts: Option<&Time>, now: Timestamp) -> String {
    since(ts.map(|t| t.0), now)
}

pub fn since_micro(ts: Option<&MicroTime>, now: Timestamp) -> String {
    since(ts.map(|t| t.0), now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: i64) -> String {
        human_duration(SignedDuration::from_secs(s))
    }

    #[test]
    fn short_ages_are_in_seconds_up_to_two_minutes() {
        assert_eq!(secs(0), "0s");
        assert_eq!(secs(5), "5s");
        assert_eq!(secs(119), "119s");
    }

    #[test]
    fn a_clock_slightly_ahead_reads_zero_and_far_ahead_reads_invalid() {
        assert_eq!(human_duration(SignedDuration::from_millis(-1500)), "0s");
        assert_eq!(secs(-1), "0s");
        assert_eq!(secs(-2), "<invalid>");
    }

    #[test]
    fn under_ten_minutes_seconds_are_kept() {
        assert_eq!(secs(120), "2m");
        assert_eq!(secs(185), "3m5s");
        assert_eq!(secs(599), "9m59s");
    }

    #[test]
    fn under_three_hours_only_minutes_show() {
        assert_eq!(secs(600), "10m");
        assert_eq!(secs(3 * 3600 - 1), "179m");
    }

    #[test]
    fn hours_keep_minutes_under_eight_hours() {
        assert_eq!(secs(3 * 3600), "3h");
        assert_eq!(secs(3 * 3600 + 25 * 60), "3h25m");
        assert_eq!(secs(8 * 3600 + 25 * 60), "8h");
        assert_eq!(secs(47 * 3600), "47h");
    }

    #[test]
    fn days_keep_hours_under_eight_days() {
        assert_eq!(secs(48 * 3600), "2d");
        assert_eq!(secs(50 * 3600), "2d2h");
        assert_eq!(secs(8 * 24 * 3600 + 3600), "8d");
        assert_eq!(secs(400 * 24 * 3600), "400d");
    }

    #[test]
    fn years_keep_days_under_eight_years() {
        assert_eq!(secs(2 * 365 * 24 * 3600), "2y");
        assert_eq!(secs((3 * 365 + 10) * 24 * 3600), "3y10d");
        assert_eq!(secs(9 * 365 * 24 * 3600), "9y");
    }

    #[test]
    fn a_missing_timestamp_has_an_unknown_age() {
        assert_eq!(since(None, Timestamp::UNIX_EPOCH), "<unknown>");
        let now = Timestamp::from_second(1_000).unwrap();
        let then = Timestamp::from_second(1_000 - 185).unwrap();
        assert_eq!(since(Some(then), now), "3m5s");
    }
}
