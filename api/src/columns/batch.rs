//! The columns of Jobs (STATUS, COMPLETIONS, DURATION) and CronJobs (SCHEDULE,
//! TIMEZONE, SUSPEND, ACTIVE, LAST SCHEDULE), as kubectl's `printJob` and
//! `printCronJob` compute them; both with CONTAINERS, IMAGES and SELECTOR under
//! `-o wide`.

use k8s_openapi::api::batch::v1::{CronJob, Job, JobCondition};

use super::workloads::template_columns;
use super::{
    AGE, CONTAINERS, Column, IMAGES, Layout, NAME, SELECTOR, age, boolean, col, int, name,
};
use crate::duration::{human_duration, since, since_time};

pub(super) const JOB: &[Column] = &[
    NAME,
    col("Status", "Status of the job."),
    col(
        "Completions",
        "The number of pods which reached phase Succeeded.",
    ),
    col("Duration", "Time required to complete the job."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

pub(super) const CRON_JOB: &[Column] = &[
    NAME,
    col(
        "Schedule",
        "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.",
    ),
    col(
        "Timezone",
        "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones.",
    ),
    boolean(
        "Suspend",
        "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions. Defaults to false.",
    ),
    int("Active", "A list of pointers to currently running jobs."),
    col(
        "Last Schedule",
        "Information when was the last time the job was successfully scheduled.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

/// Whether the first condition of type `kind` is True (kubectl's
/// `hasJobCondition`).
fn has_condition(conditions: &[JobCondition], kind: &str) -> bool {
    conditions
        .iter()
        .find(|c| c.type_ == kind)
        .is_some_and(|c| c.status == "True")
}

/// A Job's STATUS: finished (Complete, Failed) first, then being deleted, then
/// what is holding it (Suspended) or about to finish it (FailureTarget,
/// SuccessCriteriaMet), else Running.
pub fn job_status(job: &Job) -> &'static str {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    if has_condition(conditions, "Complete") {
        "Complete"
    } else if has_condition(conditions, "Failed") {
        "Failed"
    } else if job.metadata.deletion_timestamp.is_some() {
        "Terminating"
    } else if has_condition(conditions, "Suspended") {
        "Suspended"
    } else if has_condition(conditions, "FailureTarget") {
        "FailureTarget"
    } else if has_condition(conditions, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    }
}

pub(super) fn job_row(job: &Job, layout: &Layout) -> Vec<String> {
    let spec = job.spec.as_ref();
    let status = job.status.clone().unwrap_or_default();
    let succeeded = status.succeeded.unwrap_or(0);
    let completions = match spec.and_then(|s| s.completions) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match spec.and_then(|s| s.parallelism).unwrap_or(0) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (&status.start_time, &status.completion_time) {
        (None, _) => String::new(),
        (Some(start), None) => since(Some(start.0), layout.now),
        (Some(start), Some(end)) => human_duration(end.0.duration_since(start.0)),
    };
    let mut cells = vec![
        name(&job.metadata),
        job_status(job).to_string(),
        completions,
        duration,
        age(&job.metadata, layout),
    ];
    if layout.wide {
        cells.extend(template_columns(
            spec.map(|s| &s.template),
            spec.and_then(|s| s.selector.as_ref()),
        ));
    }
    cells
}

/// `True`, `False`, or `<unset>` (kubectl's `printBoolPtr`).
fn bool_ptr(b: Option<bool>) -> String {
    match b {
        Some(true) => "True".to_string(),
        Some(false) => "False".to_string(),
        None => "<unset>".to_string(),
    }
}

pub(super) fn cron_job_row(cj: &CronJob, layout: &Layout) -> Vec<String> {
    let spec = cj.spec.clone().unwrap_or_default();
    let status = cj.status.clone().unwrap_or_default();
    let last = match &status.last_schedule_time {
        Some(t) => since_time(Some(t), layout.now),
        None => "<none>".to_string(),
    };
    let mut cells = vec![
        name(&cj.metadata),
        spec.schedule.clone(),
        spec.time_zone
            .clone()
            .unwrap_or_else(|| "<none>".to_string()),
        bool_ptr(spec.suspend),
        status.active.as_ref().map_or(0, Vec::len).to_string(),
        last,
        age(&cj.metadata, layout),
    ];
    if layout.wide {
        let job_spec = spec.job_template.spec.as_ref();
        cells.extend(template_columns(
            job_spec.map(|s| &s.template),
            job_spec.and_then(|s| s.selector.as_ref()),
        ));
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columns::tests::layout;
    use crate::columns::{header, row};
    use crate::resource::{CRONJOBS, JOBS};
    use serde_json::{Value, json};

    fn job(conditions: Value, extra_meta: Value) -> Value {
        let mut meta = json!({"name": "pi", "creationTimestamp": "2026-01-01T11:00:00Z"});
        meta.as_object_mut()
            .unwrap()
            .extend(extra_meta.as_object().unwrap().clone());
        json!({
            "metadata": meta,
            "spec": {"completions": 3, "parallelism": 2,
                     "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
                     "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
            "status": {"succeeded": 1, "startTime": "2026-01-01T11:58:00Z", "conditions": conditions}
        })
    }

    fn status_of(conditions: Value, extra_meta: Value) -> String {
        let j: Job = serde_json::from_value(job(conditions, extra_meta)).unwrap();
        job_status(&j).to_string()
    }

    #[test]
    fn job_status_follows_kubectls_precedence() {
        let c = |t: &str, s: &str| json!({"type": t, "status": s});
        let none = json!({});
        assert_eq!(status_of(json!([]), none.clone()), "Running");
        assert_eq!(
            status_of(
                json!([c("SuccessCriteriaMet", "True"), c("Complete", "True")]),
                none.clone()
            ),
            "Complete"
        );
        assert_eq!(
            status_of(
                json!([c("FailureTarget", "True"), c("Failed", "True")]),
                none.clone()
            ),
            "Failed"
        );
        assert_eq!(
            status_of(json!([c("FailureTarget", "True")]), none.clone()),
            "FailureTarget"
        );
        assert_eq!(
            status_of(json!([c("SuccessCriteriaMet", "True")]), none.clone()),
            "SuccessCriteriaMet"
        );
        assert_eq!(
            status_of(json!([c("Suspended", "True")]), none.clone()),
            "Suspended"
        );
        // A condition that is not True does not count.
        assert_eq!(
            status_of(json!([c("Suspended", "False")]), none.clone()),
            "Running"
        );
        let deleting = json!({"deletionTimestamp": "2026-01-01T11:59:00Z"});
        assert_eq!(
            status_of(json!([c("Suspended", "True")]), deleting.clone()),
            "Terminating"
        );
        assert_eq!(
            status_of(json!([c("Complete", "True")]), deleting),
            "Complete"
        );
    }

    #[test]
    fn a_job_row_shows_completions_and_how_long_it_ran() {
        let mut l = layout();
        assert_eq!(
            header(&JOBS, &l),
            ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
        );
        let running = job(json!([]), json!({}));
        assert_eq!(
            row(&JOBS, &running, &l).unwrap(),
            ["pi", "Running", "1/3", "2m", "60m"]
        );
        let mut done = running.clone();
        done["status"]["completionTime"] = json!("2026-01-01T11:58:45Z");
        done["status"]["succeeded"] = json!(3);
        done["status"]["conditions"] = json!([{"type": "Complete", "status": "True"}]);
        assert_eq!(
            row(&JOBS, &done, &l).unwrap(),
            ["pi", "Complete", "3/3", "45s", "60m"]
        );
        // No completions: one success finishes it, or one of N parallel pods.
        let mut work_queue = running.clone();
        work_queue["spec"]
            .as_object_mut()
            .unwrap()
            .remove("completions");
        assert_eq!(row(&JOBS, &work_queue, &l).unwrap()[2], "1/1 of 2");
        work_queue["spec"]["parallelism"] = json!(1);
        assert_eq!(row(&JOBS, &work_queue, &l).unwrap()[2], "1/1");
        // Not started: no duration.
        let mut pending = running.clone();
        pending["status"]
            .as_object_mut()
            .unwrap()
            .remove("startTime");
        assert_eq!(row(&JOBS, &pending, &l).unwrap()[3], "");
        l.wide = true;
        assert_eq!(
            row(&JOBS, &running, &l).unwrap()[5..],
            ["pi", "perl", "batch.kubernetes.io/controller-uid=u1"]
        );
    }

    #[test]
    fn a_cron_job_row_shows_its_schedule_and_last_run() {
        let cj = json!({
            "metadata": {"name": "nightly", "creationTimestamp": "2026-01-01T10:00:00Z"},
            "spec": {"schedule": "0 3 * * *", "suspend": false,
                     "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "backup", "image": "tool"}]}}}}},
            "status": {"active": [{"name": "nightly-1"}], "lastScheduleTime": "2026-01-01T11:59:30Z"}
        });
        let mut l = layout();
        assert_eq!(
            header(&CRONJOBS, &l),
            [
                "NAME",
                "SCHEDULE",
                "TIMEZONE",
                "SUSPEND",
                "ACTIVE",
                "LAST SCHEDULE",
                "AGE"
            ]
        );
        assert_eq!(
            row(&CRONJOBS, &cj, &l).unwrap(),
            [
                "nightly",
                "0 3 * * *",
                "<none>",
                "False",
                "1",
                "30s",
                "120m"
            ]
        );
        let mut zoned = cj.clone();
        zoned["spec"]["timeZone"] = json!("Europe/Berlin");
        zoned["spec"].as_object_mut().unwrap().remove("suspend");
        zoned.as_object_mut().unwrap().remove("status");
        assert_eq!(
            row(&CRONJOBS, &zoned, &l).unwrap()[2..6],
            ["Europe/Berlin", "<unset>", "0", "<none>"]
        );
        l.wide = true;
        assert_eq!(
            row(&CRONJOBS, &cj, &l).unwrap()[7..],
            ["backup", "tool", "<none>"]
        );
    }
}
