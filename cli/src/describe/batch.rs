//! Jobs and CronJobs as kubectl describes them: parallelism, completions, back-off,
//! when it ran and how its pods fared; a CronJob's schedule, policies, job template
//! and active jobs.

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, Job, JobTemplateSpec};
use k8s_openapi::api::core::v1::Event;

use super::template::pod_template;
use super::{Writer, annotations, controlled_by, events, labels, time};
use crate::columns::selector_string;
use crate::duration::{human_duration, rfc1123};

pub fn job(j: &Job, evs: &[Event], now: Timestamp) -> String {
    let mut w = Writer::default();
    let m = &j.metadata;
    let spec = j.spec.clone().unwrap_or_default();
    let status = j.status.clone().unwrap_or_default();
    w.line(0, &format!("Name:\t{}", m.name.as_deref().unwrap_or("")));
    w.line(
        0,
        &format!("Namespace:\t{}", m.namespace.as_deref().unwrap_or("")),
    );
    w.line(
        0,
        &format!(
            "Selector:\t{}",
            spec.selector
                .as_ref()
                .map(selector_string)
                .unwrap_or_default()
        ),
    );
    labels(&mut w, "Labels", m.labels.as_ref());
    annotations(&mut w, "Annotations", m.annotations.as_ref());
    if let Some(owner) = controlled_by(m) {
        w.line(0, &format!("Controlled By:\t{owner}"));
    }
    if let Some(p) = spec.parallelism {
        w.line(0, &format!("Parallelism:\t{p}"));
    }
    match spec.completions {
        Some(c) => w.line(0, &format!("Completions:\t{c}")),
        None => w.line(0, "Completions:\t<unset>"),
    }
    if let Some(mode) = &spec.completion_mode {
        w.line(0, &format!("Completion Mode:\t{mode}"));
    }
    if let Some(suspend) = spec.suspend {
        w.line(0, &format!("Suspend:\t{suspend}"));
    }
    if let Some(limit) = spec.backoff_limit {
        w.line(0, &format!("Backoff Limit:\t{limit}"));
    }
    if let Some(ttl) = spec.ttl_seconds_after_finished {
        w.line(0, &format!("TTL Seconds After Finished:\t{ttl}"));
    }
    if let Some(start) = &status.start_time {
        w.line(0, &format!("Start Time:\t{}", rfc1123(start.0)));
    }
    if let Some(end) = &status.completion_time {
        w.line(0, &format!("Completed At:\t{}", rfc1123(end.0)));
    }
    if let (Some(start), Some(end)) = (&status.start_time, &status.completion_time) {
        w.line(
            0,
            &format!(
                "Duration:\t{}",
                human_duration(end.0.duration_since(start.0))
            ),
        );
    }
    if let Some(deadline) = spec.active_deadline_seconds {
        w.line(0, &format!("Active Deadline Seconds:\t{deadline}s"));
    }
    let (active, succeeded, failed) = (
        status.active.unwrap_or(0),
        status.succeeded.unwrap_or(0),
        status.failed.unwrap_or(0),
    );
    match status.ready {
        None => w.line(
            0,
            &format!("Pods Statuses:\t{active} Active / {succeeded} Succeeded / {failed} Failed"),
        ),
        Some(ready) => w.line(
            0,
            &format!(
                "Pods Statuses:\t{active} Active ({ready} Ready) / {succeeded} Succeeded / {failed} Failed"
            ),
        ),
    }
    if spec.completion_mode.as_deref() == Some("Indexed") {
        let done = status.completed_indexes.as_deref().unwrap_or("");
        w.line(
            0,
            &format!("Completed Indexes:\t{}", super::none_if_empty(done)),
        );
    }
    pod_template(&mut w, Some(&spec.template));
    events(&mut w, evs, now);
    w.finish()
}

/// `<unset>` for a field left out, else its value.
fn or_unset<T: std::fmt::Display>(v: Option<T>, suffix: &str) -> String {
    v.map_or_else(|| "<unset>".to_string(), |v| format!("{v}{suffix}"))
}

/// The job a CronJob makes: selector, parallelism, completions, pod template.
fn job_template(w: &mut Writer, t: &JobTemplateSpec) {
    let spec = t.spec.clone().unwrap_or_default();
    w.line(
        0,
        &format!(
            "Selector:\t{}",
            spec.selector
                .as_ref()
                .map_or_else(|| "<unset>".to_string(), selector_string)
        ),
    );
    w.line(
        0,
        &format!("Parallelism:\t{}", or_unset(spec.parallelism, "")),
    );
    w.line(
        0,
        &format!("Completions:\t{}", or_unset(spec.completions, "")),
    );
    if let Some(deadline) = spec.active_deadline_seconds {
        w.line(0, &format!("Active Deadline Seconds:\t{deadline}s"));
    }
    pod_template(w, Some(&spec.template));
}

pub fn cron_job(cj: &CronJob, evs: &[Event], now: Timestamp) -> String {
    let mut w = Writer::default();
    let m = &cj.metadata;
    let spec = cj.spec.clone().unwrap_or_default();
    let status = cj.status.clone().unwrap_or_default();
    w.line(0, &format!("Name:\t{}", m.name.as_deref().unwrap_or("")));
    w.line(
        0,
        &format!("Namespace:\t{}", m.namespace.as_deref().unwrap_or("")),
    );
    labels(&mut w, "Labels", m.labels.as_ref());
    annotations(&mut w, "Annotations", m.annotations.as_ref());
    w.line(0, &format!("Schedule:\t{}", spec.schedule));
    w.line(
        0,
        &format!(
            "Concurrency Policy:\t{}",
            spec.concurrency_policy.as_deref().unwrap_or("")
        ),
    );
    let suspend = match spec.suspend {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    w.line(0, &format!("Suspend:\t{suspend}"));
    w.line(
        0,
        &format!(
            "Successful Job History Limit:\t{}",
            or_unset(spec.successful_jobs_history_limit, "")
        ),
    );
    w.line(
        0,
        &format!(
            "Failed Job History Limit:\t{}",
            or_unset(spec.failed_jobs_history_limit, "")
        ),
    );
    w.line(
        0,
        &format!(
            "Starting Deadline Seconds:\t{}",
            or_unset(spec.starting_deadline_seconds, "s")
        ),
    );
    job_template(&mut w, &spec.job_template);
    w.line(
        0,
        &format!(
            "Last Schedule Time:\t{}",
            time(status.last_schedule_time.as_ref())
        ),
    );
    let active: Vec<String> = status
        .active
        .iter()
        .flatten()
        .filter_map(|r| r.name.clone())
        .collect();
    w.line(
        0,
        &format!(
            "Active Jobs:\t{}",
            if active.is_empty() {
                "<none>".to_string()
            } else {
                active.join(", ")
            }
        ),
    );
    events(&mut w, evs, now);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe::tests::now;
    use serde_json::json;

    fn pi() -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "pi", "namespace": "default",
                         "labels": {"batch.kubernetes.io/job-name": "pi"},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly", "uid": "c1", "controller": true}]},
            "spec": {"parallelism": 1, "completions": 1, "completionMode": "NonIndexed", "suspend": false,
                     "backoffLimit": 6, "activeDeadlineSeconds": 600,
                     "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
                     "template": {"metadata": {"labels": {"batch.kubernetes.io/job-name": "pi"}},
                                  "spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "pi", "image": "perl:5.34", "command": ["perl", "-e", "print 1"]}]}}},
            "status": {"active": 0, "ready": 0, "succeeded": 1, "failed": 0,
                       "startTime": "2026-01-01T11:00:00Z", "completionTime": "2026-01-01T11:00:42Z"}
        }))
        .unwrap()
    }

    #[test]
    fn a_job_reads_like_kubectl_describe() {
        let text = job(&pi(), &[], now());
        for expected in [
            "Selector:                 batch.kubernetes.io/controller-uid=u1\n",
            "Controlled By:            CronJob/nightly\n",
            "Parallelism:              1\n",
            "Completions:              1\n",
            "Completion Mode:          NonIndexed\n",
            "Suspend:                  false\n",
            "Backoff Limit:            6\n",
            "Duration:                 42s\n",
            "Active Deadline Seconds:  600s\n",
            "Pods Statuses:            0 Active (0 Ready) / 1 Succeeded / 0 Failed\n",
            "Pod Template:\n",
            "    Image:      perl:5.34\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(text.trim_end().ends_with("<none>"), "{text}");
    }

    #[test]
    fn a_cron_job_reads_like_kubectl_describe() {
        let cj: CronJob = serde_json::from_value(json!({
            "metadata": {"name": "nightly", "namespace": "default"},
            "spec": {"schedule": "0 3 * * *", "concurrencyPolicy": "Allow", "suspend": false,
                     "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
                     "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure",
                         "containers": [{"name": "backup", "image": "tool:1"}]}}}}},
            "status": {"active": [{"name": "nightly-290000"}, {"name": "nightly-290060"}]}
        }))
        .unwrap();
        let text = cron_job(&cj, &[], now());
        for expected in [
            "Schedule:                      0 3 * * *\n",
            "Concurrency Policy:            Allow\n",
            "Suspend:                       False\n",
            "Successful Job History Limit:  3\n",
            "Failed Job History Limit:      1\n",
            "Starting Deadline Seconds:     <unset>\n",
            "Selector:                      <unset>\n",
            "Parallelism:                   <unset>\n",
            "    Image:           tool:1\n",
            "Last Schedule Time:  <unset>\n",
            "Active Jobs:         nightly-290000, nightly-290060\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }
}
