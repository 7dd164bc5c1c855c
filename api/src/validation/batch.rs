//! Jobs and CronJobs (`batch/v1`): completions and parallelism, the back-off
//! limit and deadlines, the completion mode, pod failure policy rules, and the
//! CronJob's schedule, time zone and concurrency policy.

use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec};

use super::meta::{NameRule, object_meta};
use super::workloads::selector_and_template_of;
use super::{Errors, non_negative};
use crate::status::FieldError;

/// The restart policies a Job's pods may have.
const JOB_RESTART_POLICIES: &[&str] = &["OnFailure", "Never"];

pub fn job(j: &Job) -> Errors {
    let mut errs = object_meta(&j.metadata, true, NameRule::Subdomain);
    match &j.spec {
        Some(spec) => errs.extend(job_spec(spec, "spec", true)),
        None => errs.push(FieldError::required("spec")),
    }
    errs
}

/// A Job spec at `path` (`spec`, or a CronJob's `spec.jobTemplate.spec`);
/// `has_selector`: the selector is set (by the defaults, on a Job).
fn job_spec(spec: &JobSpec, path: &str, has_selector: bool) -> Errors {
    let mut errs = Vec::new();
    for (field, v) in [
        ("parallelism", spec.parallelism),
        ("completions", spec.completions),
        ("backoffLimit", spec.backoff_limit),
        ("ttlSecondsAfterFinished", spec.ttl_seconds_after_finished),
    ] {
        non_negative(&mut errs, &format!("{path}.{field}"), v.map(i64::from));
    }
    if let Some(d) = spec.active_deadline_seconds
        && d <= 0
    {
        errs.push(FieldError::invalid(
            format!("{path}.activeDeadlineSeconds"),
            d,
            "must be greater than 0",
        ));
    }
    match spec.completion_mode.as_deref() {
        None | Some("NonIndexed") => {}
        Some("Indexed") => {
            if spec.completions.is_none() {
                errs.push(FieldError::required(format!("{path}.completions")));
            }
        }
        Some(other) => errs.push(FieldError::not_supported(
            format!("{path}.completionMode"),
            other,
            &["NonIndexed", "Indexed"],
        )),
    }
    if let Some(policy) = &spec.pod_failure_policy {
        for (i, rule) in policy.rules.iter().enumerate() {
            let rp = format!("{path}.podFailurePolicy.rules[{i}]");
            if !["FailJob", "Ignore", "Count", "FailIndex"].contains(&rule.action.as_str()) {
                errs.push(FieldError::not_supported(
                    format!("{rp}.action"),
                    &rule.action,
                    &["Count", "FailIndex", "FailJob", "Ignore"],
                ));
            }
            match (&rule.on_exit_codes, &rule.on_pod_conditions) {
                (Some(_), Some(c)) if !c.is_empty() => errs.push(FieldError::invalid(
                    rp.clone(),
                    "",
                    "specifying both OnExitCodes and OnPodConditions is not supported",
                )),
                (None, None) => errs.push(FieldError::invalid(
                    rp.clone(),
                    "",
                    "specifying one of OnExitCodes and OnPodConditions is required",
                )),
                _ => {}
            }
            if let Some(codes) = &rule.on_exit_codes {
                if !["In", "NotIn"].contains(&codes.operator.as_str()) {
                    errs.push(FieldError::not_supported(
                        format!("{rp}.onExitCodes.operator"),
                        &codes.operator,
                        &["In", "NotIn"],
                    ));
                }
                if codes.values.is_empty() {
                    errs.push(FieldError::required(format!("{rp}.onExitCodes.values")));
                }
                if codes.operator == "In" && codes.values.contains(&0) {
                    errs.push(FieldError::invalid(
                        format!("{rp}.onExitCodes.values"),
                        0,
                        "must not be 0 for the In operator",
                    ));
                }
            }
        }
        if let Some(t) = &spec.template.spec
            && t.restart_policy.as_deref() != Some("Never")
        {
            errs.push(FieldError::invalid(
                format!("{path}.template.spec.restartPolicy"),
                format!("\"{}\"", t.restart_policy.as_deref().unwrap_or("")),
                "only \"Never\" is supported when podFailurePolicy is specified",
            ));
        }
    }
    let selector = spec.selector.clone().unwrap_or_default();
    let mut template =
        selector_and_template_of(&selector, Some(&spec.template), JOB_RESTART_POLICIES);
    if !has_selector {
        // A CronJob's template gets its selector when its Job is made.
        template.retain(|e| !e.field.starts_with("spec.selector"));
    }
    for e in &mut template {
        if let Some(rest) = e.field.strip_prefix("spec.") {
            e.field = format!("{path}.{rest}");
        }
    }
    errs.extend(template);
    errs
}

/// A Job's pod template and selector stay as they were made.
pub fn job_update(old: &Job, new: &Job) -> Errors {
    let mut errs = Vec::new();
    let (Some(o), Some(n)) = (&old.spec, &new.spec) else {
        return errs;
    };
    if o.selector != n.selector {
        errs.push(FieldError::invalid(
            "spec.selector",
            "",
            "field is immutable",
        ));
    }
    // Kubernetes lets a suspended Job that never started change its template;
    // here the template is fixed once made.
    if o.template != n.template {
        errs.push(FieldError::invalid(
            "spec.template",
            "",
            "field is immutable",
        ));
    }
    if o.completions != n.completions {
        errs.push(FieldError::invalid(
            "spec.completions",
            n.completions.unwrap_or(0),
            "field is immutable",
        ));
    }
    if o.completion_mode != n.completion_mode {
        errs.push(FieldError::invalid(
            "spec.completionMode",
            format!("\"{}\"", n.completion_mode.as_deref().unwrap_or("")),
            "field is immutable",
        ));
    }
    errs
}

pub fn cron_job(c: &CronJob) -> Errors {
    let mut errs = object_meta(&c.metadata, true, NameRule::Subdomain);
    let Some(spec) = &c.spec else {
        errs.push(FieldError::required("spec"));
        return errs;
    };
    if spec.schedule.trim().is_empty() {
        errs.push(FieldError::required("spec.schedule"));
    } else if let Err(why) = crate::cron::Schedule::parse(&spec.schedule) {
        errs.push(FieldError::invalid(
            "spec.schedule",
            format!("\"{}\"", spec.schedule),
            &why,
        ));
    }
    if let Some(tz) = spec.time_zone.as_deref()
        && jiff::tz::TimeZone::get(tz).is_err()
    {
        errs.push(FieldError::invalid(
            "spec.timeZone",
            format!("\"{tz}\""),
            "unknown time zone",
        ));
    }
    if spec.schedule.contains("TZ=") {
        errs.push(FieldError::invalid(
            "spec.schedule",
            format!("\"{}\"", spec.schedule),
            "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
        ));
    }
    if let Some(p) = spec.concurrency_policy.as_deref()
        && !["Allow", "Forbid", "Replace"].contains(&p)
    {
        errs.push(FieldError::not_supported(
            "spec.concurrencyPolicy",
            p,
            &["Allow", "Forbid", "Replace"],
        ));
    }
    for (field, v) in [
        ("startingDeadlineSeconds", spec.starting_deadline_seconds),
        (
            "successfulJobsHistoryLimit",
            spec.successful_jobs_history_limit.map(i64::from),
        ),
        (
            "failedJobsHistoryLimit",
            spec.failed_jobs_history_limit.map(i64::from),
        ),
    ] {
        non_negative(&mut errs, &format!("spec.{field}"), v);
    }
    match &spec.job_template.spec {
        Some(js) => errs.extend(job_spec(js, "spec.jobTemplate.spec", false)),
        None => errs.push(FieldError::required("spec.jobTemplate.spec")),
    }
    errs
}
