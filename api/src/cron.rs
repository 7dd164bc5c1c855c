//! CronJob schedules in Kubernetes' syntax: five fields (minute, hour, day of
//! month, month, day of week; `*`, lists, ranges, steps, `JAN`-`DEC`,
//! `SUN`-`SAT`, `?`) or a descriptor (`@hourly`, `@daily`/`@midnight`,
//! `@weekly`, `@monthly`, `@yearly`/`@annually`), evaluated in a time zone.
//!
//! The matching is the `jiff-cron` crate's; this module turns the standard
//! five fields into its seven (seconds and years added) and rewrites the day
//! of week, which standard cron numbers 0–7 from Sunday (0 and 7 both Sunday)
//! and `jiff-cron` numbers 1–7, into day names both agree on.

use std::str::FromStr;

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// A parsed schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    inner: jiff_cron::Schedule,
}

const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Schedule {
    /// Parses `text`; the error says what is wrong, in words for a 422.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        let seven = match text {
            "@yearly" | "@annually" => "0 0 0 1 1 * *".to_string(),
            "@monthly" => "0 0 0 1 * * *".to_string(),
            "@weekly" => "0 0 0 * * SUN *".to_string(),
            "@daily" | "@midnight" => "0 0 0 * * * *".to_string(),
            "@hourly" => "0 0 * * * * *".to_string(),
            t if t.starts_with('@') => {
                return Err(format!(
                    "unrecognized descriptor: {t} (expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)"
                ));
            }
            t => {
                let fields: Vec<&str> = t.split_whitespace().collect();
                if fields.len() != 5 {
                    return Err(format!(
                        "expected exactly 5 fields (minute hour day-of-month month day-of-week), found {}",
                        fields.len()
                    ));
                }
                let dow = day_of_week(fields[4])?;
                format!(
                    "0 {} {} {} {} {dow} *",
                    fields[0], fields[1], fields[2], fields[3]
                )
            }
        };
        let inner = jiff_cron::Schedule::from_str(&seven).map_err(|e| e.to_string())?;
        Ok(Schedule { inner })
    }

    /// The first time the schedule fires strictly after `after`, in `tz`.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        self.inner
            .after(after.to_zoned(tz.clone()))
            .next()
            .map(|z| z.timestamp())
    }
}

/// The day-of-week field as day names (`*` stays `*`).
fn day_of_week(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok("*".into());
    }
    let mut days = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: usize = s
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("day of week: invalid step {s:?}"))?;
                (r, step)
            }
            None => (item, 1),
        };
        let (lo, hi) = match range {
            "*" | "?" => (0, 6),
            r => match r.split_once('-') {
                Some((a, b)) => (day(a)?, day(b)?),
                // `5/2` means from 5 to the end, as in standard cron.
                None if step > 1 => (day(r)?, 6),
                None => {
                    let d = day(r)?;
                    (d, d)
                }
            },
        };
        // 7 is Sunday again: `5-7` is Friday to Sunday.
        let hi = if hi == 0 && lo > 0 { 7 } else { hi };
        if lo > hi {
            return Err(format!("day of week: range {range:?} runs backwards"));
        }
        for d in (lo..=hi).step_by(step) {
            days[d % 7] = true;
        }
    }
    Ok(DAYS
        .iter()
        .zip(days)
        .filter(|(_, on)| *on)
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(","))
}

/// One day: 0–7 (0 and 7 are Sunday) or a name (`sun`, `Mon`).
fn day(text: &str) -> Result<usize, String> {
    if let Ok(n) = text.parse::<usize>() {
        return if n <= 7 {
            Ok(n)
        } else {
            Err(format!("day of week: {n} is out of range 0-7"))
        };
    }
    DAYS.iter()
        .position(|d| d.eq_ignore_ascii_case(text))
        .ok_or_else(|| format!("day of week: {text:?} is not a day (0-7 or SUN-SAT)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(expr: &str, after: &str, tz: &str) -> String {
        let s = Schedule::parse(expr).unwrap();
        let tz = TimeZone::get(tz).unwrap();
        s.next_after(after.parse().unwrap(), &tz)
            .unwrap()
            .to_string()
    }

    #[test]
    fn every_minute_fires_at_the_next_whole_minute() {
        assert_eq!(
            next("* * * * *", "2026-12-05T10:00:30Z", "UTC"),
            "2026-12-05T10:01:00Z"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-12-05T10:01:00Z", "UTC"),
            "2026-12-05T10:15:00Z"
        );
    }

    #[test]
    fn days_of_week_count_from_sunday_as_zero_or_seven() {
        // 2026-12-05 is a Saturday.
        assert_eq!(
            next("0 9 * * 0", "2026-12-05T10:00:00Z", "UTC"),
            "2026-12-06T09:00:00Z"
        );
        assert_eq!(
            next("0 9 * * 7", "2026-12-05T10:00:00Z", "UTC"),
            "2026-12-06T09:00:00Z"
        );
        assert_eq!(
            next("0 9 * * 1-5", "2026-12-05T10:00:00Z", "UTC"),
            "2026-12-07T09:00:00Z"
        );
        assert_eq!(
            next("0 9 * * fri-sun", "2026-12-05T10:00:00Z", "UTC"),
            "2026-12-06T09:00:00Z"
        );
        assert_eq!(
            next("0 9 * * 5-7", "2026-12-04T10:00:00Z", "UTC"),
            "2026-12-05T09:00:00Z"
        );
    }

    #[test]
    fn a_time_zone_moves_the_firing_time() {
        assert_eq!(
            next("0 9 * * *", "2026-12-05T00:00:00Z", "Europe/Berlin"),
            "2026-12-05T08:00:00Z"
        );
        assert_eq!(
            next("@daily", "2026-12-05T00:00:00Z", "UTC"),
            "2026-12-06T00:00:00Z"
        );
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        assert!(Schedule::parse("* * * *").unwrap_err().contains("5 fields"));
        assert!(
            Schedule::parse("* * * * 9")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(
            Schedule::parse("@every 5m")
                .unwrap_err()
                .contains("descriptor")
        );
    }
}
