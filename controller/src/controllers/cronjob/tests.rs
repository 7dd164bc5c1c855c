use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, CronJobStatus, JobTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::*;

fn t(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn every_minute() -> Schedule {
    Schedule::parse("* * * * *").unwrap()
}

fn cronjob(schedule: &str) -> CronJob {
    CronJob {
        metadata: ObjectMeta {
            name: Some("tick".into()),
            namespace: Some("ns".into()),
            uid: Some("cj-uid".into()),
            creation_timestamp: Some(Time(t("2026-01-01T00:00:30Z"))),
            ..Default::default()
        },
        spec: Some(CronJobSpec {
            schedule: schedule.into(),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some([("app".to_string(), "tick".to_string())].into()),
                    ..Default::default()
                }),
                spec: Some(Default::default()),
            },
            ..Default::default()
        }),
        status: None,
    }
}

fn child(name: &str, finished: Option<&'static str>, order: &str) -> Child {
    Child {
        name: name.into(),
        uid: format!("{name}-uid"),
        finished,
        completion_time: None,
        order: Some(t(order)),
    }
}

#[test]
fn jobs_are_named_by_their_scheduled_minute() {
    assert_eq!(job_name("tick", t("1970-01-01T00:02:00Z")), "tick-2");
    assert_eq!(
        job_name("tick", t("2026-01-01T00:01:00Z")),
        format!("tick-{}", t("2026-01-01T00:01:00Z").as_second() / 60)
    );
}

#[test]
fn the_latest_due_run_is_found_and_missed_runs_counted() {
    let m = missed_runs(
        &every_minute(),
        &TimeZone::UTC,
        t("2026-01-01T00:00:30Z"),
        t("2026-01-01T00:03:10Z"),
    );
    assert_eq!(
        m,
        Missed {
            most_recent: Some(t("2026-01-01T00:03:00Z")),
            count: 3
        }
    );
    let none = missed_runs(
        &every_minute(),
        &TimeZone::UTC,
        t("2026-01-01T00:03:00Z"),
        t("2026-01-01T00:03:59Z"),
    );
    assert_eq!(none.most_recent, None);
}

#[test]
fn very_many_missed_runs_still_find_the_latest() {
    let m = missed_runs(
        &every_minute(),
        &TimeZone::UTC,
        t("2025-01-01T00:00:00Z"),
        t("2026-01-01T12:34:56Z"),
    );
    assert!(m.count > 100);
    assert_eq!(m.most_recent, Some(t("2026-01-01T12:34:00Z")));
    let daily = Schedule::parse("@daily").unwrap();
    let m = missed_runs(
        &daily,
        &TimeZone::UTC,
        t("2020-01-01T00:00:00Z"),
        t("2026-03-05T12:00:00Z"),
    );
    assert!(m.count > 100);
    assert_eq!(m.most_recent, Some(t("2026-03-05T00:00:00Z")));
}

#[test]
fn schedules_run_in_their_time_zone() {
    let tz = TimeZone::get("Europe/Berlin").unwrap();
    let daily9 = Schedule::parse("0 9 * * *").unwrap();
    let m = missed_runs(
        &daily9,
        &tz,
        t("2026-01-01T00:00:00Z"),
        t("2026-01-01T12:00:00Z"),
    );
    assert_eq!(m.most_recent, Some(t("2026-01-01T08:00:00Z")));
    assert_eq!(
        scheduled_timestamp(t("2026-01-01T08:00:00Z"), &tz),
        "2026-01-01T09:00:00+01:00"
    );
    assert_eq!(
        scheduled_timestamp(t("2026-01-01T08:00:00Z"), &TimeZone::UTC),
        "2026-01-01T08:00:00Z"
    );
}

#[test]
fn the_starting_deadline_bounds_how_far_back_runs_are_due() {
    let clock = Clock::new(&Config::default(), t("2026-01-01T00:00:00Z"));
    let mut cj = cronjob("* * * * *");
    let now = t("2026-01-01T01:00:10Z");
    assert_eq!(earliest(&cj, &clock, now), t("2026-01-01T00:00:30Z"));
    cj.spec.as_mut().unwrap().starting_deadline_seconds = Some(30);
    assert_eq!(earliest(&cj, &clock, now), t("2026-01-01T00:59:40Z"));
    cj.status = Some(CronJobStatus {
        last_schedule_time: Some(Time(t("2026-01-01T00:59:50Z"))),
        ..Default::default()
    });
    assert_eq!(earliest(&cj, &clock, now), t("2026-01-01T00:59:50Z"));
    // A run due longer ago than the deadline is too late.
    let missed = Missed {
        most_recent: Some(t("2026-01-01T01:00:00Z")),
        count: 1,
    };
    assert_eq!(
        decide(&cj, &missed, t("2026-01-01T01:00:31Z"), &[], 0),
        Decision::TooLate(t("2026-01-01T01:00:00Z"))
    );
    assert!(matches!(
        decide(&cj, &missed, t("2026-01-01T01:00:29Z"), &[], 0),
        Decision::Start { .. }
    ));
}

#[test]
fn a_run_whose_job_exists_is_not_started_again() {
    let cj = cronjob("* * * * *");
    let due = t("2026-01-01T00:01:00Z");
    let missed = Missed {
        most_recent: Some(due),
        count: 1,
    };
    let existing = [child(&job_name("tick", due), None, "2026-01-01T00:01:00Z")];
    assert_eq!(
        decide(&cj, &missed, due, &existing, 1),
        Decision::AlreadyCreated(due)
    );
}

#[test]
fn the_concurrency_policy_decides_about_running_jobs() {
    let mut cj = cronjob("* * * * *");
    let due = t("2026-01-01T00:02:00Z");
    let missed = Missed {
        most_recent: Some(due),
        count: 1,
    };
    let start = |replace| Decision::Start {
        scheduled: due,
        replace,
    };
    assert_eq!(decide(&cj, &missed, due, &[], 1), start(false), "Allow");
    cj.spec.as_mut().unwrap().concurrency_policy = Some("Forbid".into());
    assert_eq!(decide(&cj, &missed, due, &[], 1), Decision::Forbidden(due));
    assert_eq!(decide(&cj, &missed, due, &[], 0), start(false));
    cj.spec.as_mut().unwrap().concurrency_policy = Some("Replace".into());
    assert_eq!(decide(&cj, &missed, due, &[], 1), start(true));
    assert_eq!(
        decide(
            &cj,
            &Missed {
                most_recent: None,
                count: 0
            },
            due,
            &[],
            0
        ),
        Decision::Wait
    );
}

#[test]
fn history_keeps_the_newest_finished_jobs_within_the_limits() {
    let children = [
        child("tick-3", Some("Complete"), "2026-01-01T00:03:00Z"),
        child("tick-1", Some("Complete"), "2026-01-01T00:01:00Z"),
        child("tick-2", Some("Complete"), "2026-01-01T00:02:00Z"),
        child("tick-4", Some("Failed"), "2026-01-01T00:04:00Z"),
        child("tick-5", Some("Failed"), "2026-01-01T00:05:00Z"),
        child("tick-6", None, "2026-01-01T00:06:00Z"),
    ];
    assert_eq!(
        history_to_delete(&children, 1, 1),
        vec!["tick-1", "tick-2", "tick-4"]
    );
    assert_eq!(history_to_delete(&children, 3, 2), Vec::<String>::new());
    assert_eq!(
        history_to_delete(&children, 0, 0).len(),
        5,
        "running jobs stay"
    );
}

#[test]
fn a_compressed_clock_runs_minutes_in_seconds() {
    let origin = t("2026-01-01T00:00:00Z");
    let clock = Clock::new(
        &Config {
            minute: Duration::from_secs(2),
        },
        origin,
    );
    assert_eq!(
        clock.virtual_at(origin + SignedDuration::from_secs(4)),
        t("2026-01-01T00:02:00Z")
    );
    assert_eq!(
        clock.virtual_at(t("2025-12-31T00:00:00Z")),
        t("2025-12-31T00:00:00Z")
    );
    assert_eq!(
        clock.real_until(t("2026-01-01T00:02:00Z"), t("2026-01-01T00:03:00Z")),
        Duration::from_secs(2)
    );
    let real = Clock::new(&Config::default(), origin);
    let later = origin + SignedDuration::from_secs(90);
    assert_eq!(real.virtual_at(later), later);
    assert_eq!(real.real_until(origin, later), Duration::from_secs(90));
}

#[test]
fn a_scheduled_job_copies_the_template_and_names_its_time() {
    let cj = cronjob("* * * * *");
    let due = t("2026-01-01T00:01:00Z");
    let job = job_for(&cj, due, &TimeZone::UTC);
    assert_eq!(job.metadata.name, Some(job_name("tick", due)));
    assert_eq!(
        job.metadata.labels.as_ref().unwrap().get("app"),
        Some(&"tick".to_string())
    );
    assert_eq!(
        job.metadata
            .annotations
            .as_ref()
            .unwrap()
            .get(SCHEDULED_TIMESTAMP),
        Some(&"2026-01-01T00:01:00Z".to_string())
    );
    let owner = &job.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("CronJob", "cj-uid")
    );
    assert_eq!(owner.controller, Some(true));
    // The scheduled time orders the history.
    let mut stored = job_for(&cj, due, &TimeZone::UTC);
    stored.metadata.creation_timestamp = Some(Time(t("2026-01-01T00:07:00Z")));
    assert_eq!(Child::of(&stored).order, Some(due));
}
