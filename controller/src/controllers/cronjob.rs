//! The CronJob controller: creates a Job from `jobTemplate` at each time the
//! `schedule` names (in `timeZone`, UTC by default), named
//! `NAME-<scheduled time in minutes since the epoch>` as Kubernetes does, so a
//! run is never created twice, even across a controller restart. It honours
//! `startingDeadlineSeconds` (runs missed by longer are skipped),
//! `concurrencyPolicy` (Allow, Forbid, Replace) and `suspend`, keeps
//! `status.active`, `lastScheduleTime` and `lastSuccessfulTime`, deletes the
//! oldest finished Jobs beyond `successfulJobsHistoryLimit` and
//! `failedJobsHistoryLimit`, and looks again at the next scheduled time.
//!
//! The schedule is read on a [`Clock`]: real time, unless a test compresses
//! it (`Config::minute`), so that an every-minute CronJob runs every second or
//! two. [`plan`] holds the pure decisions; [`reconcile`] the reads and writes.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job, JobStatus};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use tokio_util::sync::CancellationToken;
use tugboat_api::cron::Schedule;
use tugboat_api::resource::{CRONJOBS, JOBS};
use tugboat_runtime::controller::{Action, Controller, backoff_policy};

use super::{Error, controller_ref, controller_uid};
use crate::events::{self, EventType, Recorder};
use crate::registry::{DeleteOptions, Propagation, Registry};

/// The annotation naming the time a Job was scheduled for (RFC 3339, in the
/// CronJob's time zone).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// More missed runs than this is reported (Kubernetes' `TooManyMissedTimes`).
const TOO_MANY_MISSED: usize = 100;
/// Looked at again this long after a scheduled time, so that the time has passed.
const AFTER_SCHEDULE: Duration = Duration::from_millis(100);

/// How the CronJob controller reads time.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// How long one minute of the schedules lasts in real time: 60 s, except in
    /// tests (`--cronjob-minute-seconds`, a test aid), where a shorter minute
    /// lets an every-minute CronJob run several times in a few seconds.
    pub minute: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            minute: Duration::from_secs(60),
        }
    }
}

/// The time schedules are read in: real time, or real time sped up from
/// `origin` (the controller's start) by `speed` when a test compresses it.
/// Times of objects (creation, completion) are mapped onto it the same way.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Timestamp,
    speed: f64,
}

impl Clock {
    pub fn new(config: &Config, origin: Timestamp) -> Clock {
        let minute = config.minute.as_secs_f64();
        let speed = if minute > 0.0 { 60.0 / minute } else { 1.0 };
        Clock { origin, speed }
    }

    /// Schedule time at real time `t`.
    pub fn virtual_at(&self, t: Timestamp) -> Timestamp {
        if self.speed == 1.0 || t <= self.origin {
            return t;
        }
        let real = t.duration_since(self.origin).as_secs_f64();
        let offset = jiff::SignedDuration::try_from_secs_f64(real * self.speed)
            .unwrap_or(jiff::SignedDuration::MAX);
        self.origin.checked_add(offset).unwrap_or(t)
    }

    /// Schedule time now.
    pub fn now(&self) -> Timestamp {
        self.virtual_at(Timestamp::now())
    }

    /// The real time until schedule time `later`, from schedule time `now`.
    pub fn real_until(&self, now: Timestamp, later: Timestamp) -> Duration {
        let d = now.duration_until(later).as_secs_f64().max(0.0);
        Duration::from_secs_f64(d / self.speed)
    }
}

pub struct Ctx {
    registry: Arc<Registry>,
    recorder: Recorder,
    clock: Clock,
}

pub async fn run(
    registry: Arc<Registry>,
    config: Config,
    concurrency: usize,
    shutdown: CancellationToken,
) {
    if config.minute != Config::default().minute {
        tracing::warn!(
            minute = ?config.minute,
            "CronJob schedules run on a compressed clock (a test aid): one minute lasts {:?}",
            config.minute
        );
    }
    let ctx = Arc::new(Ctx {
        registry: registry.clone(),
        recorder: events::recorder(registry.clone(), "cronjob-controller"),
        clock: Clock::new(&config, Timestamp::now()),
    });
    Controller::new("cronjob", registry, &CRONJOBS)
        .owns(&JOBS)
        .concurrency(concurrency)
        .run(reconcile, backoff_policy, ctx, shutdown)
        .await;
}

/// A child Job, as the decisions need it.
#[derive(Clone, Debug, PartialEq)]
pub struct Child {
    pub name: String,
    pub uid: String,
    /// `Complete` or `Failed` once finished.
    pub finished: Option<&'static str>,
    pub completion_time: Option<Timestamp>,
    /// When it was scheduled (its annotation), else started or created: the
    /// order in which history is pruned.
    pub order: Option<Timestamp>,
}

impl Child {
    pub fn of(job: &Job) -> Child {
        let status = job.status.as_ref();
        let finished = status.and_then(finished_condition);
        let scheduled = job
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SCHEDULED_TIMESTAMP))
            .and_then(|t| t.parse::<Timestamp>().ok());
        Child {
            name: job.metadata.name.clone().unwrap_or_default(),
            uid: job.metadata.uid.clone().unwrap_or_default(),
            finished,
            completion_time: status.and_then(|s| s.completion_time.as_ref()).map(|t| t.0),
            order: scheduled
                .or_else(|| status.and_then(|s| s.start_time.as_ref()).map(|t| t.0))
                .or_else(|| job.metadata.creation_timestamp.as_ref().map(|t| t.0)),
        }
    }
}

fn finished_condition(status: &JobStatus) -> Option<&'static str> {
    status.conditions.iter().flatten().find_map(|c| {
        (c.status == "True")
            .then_some(match c.type_.as_str() {
                "Complete" => Some("Complete"),
                "Failed" => Some("Failed"),
                _ => None,
            })
            .flatten()
    })
}

/// The runs due between the last one and `now`.
#[derive(Debug, PartialEq, Eq)]
pub struct Missed {
    /// The latest scheduled time not after `now`.
    pub most_recent: Option<Timestamp>,
    /// How many scheduled times fell in the window (counted up to 101).
    pub count: usize,
}

/// The scheduled times strictly after `earliest` and not after `now`: how many
/// (up to one more than [`TOO_MANY_MISSED`]) and the latest, found without
/// walking every one of them when there are many.
pub fn missed_runs(
    schedule: &Schedule,
    tz: &TimeZone,
    earliest: Timestamp,
    now: Timestamp,
) -> Missed {
    let mut most_recent = None;
    let mut count = 0;
    let mut t = earliest;
    while let Some(next) = schedule.next_after(t, tz) {
        if next > now {
            return Missed { most_recent, count };
        }
        most_recent = Some(next);
        count += 1;
        t = next;
        if count > TOO_MANY_MISSED {
            break;
        }
    }
    if count <= TOO_MANY_MISSED {
        return Missed { most_recent, count };
    }
    // Many: search back from now in growing windows for the latest one.
    for window in [
        60,
        3600,
        86_400,
        31 * 86_400,
        366 * 86_400,
        5 * 366 * 86_400,
    ] {
        let from = now
            .checked_sub(jiff::SignedDuration::from_secs(window))
            .unwrap_or(earliest)
            .max(t);
        let mut latest = None;
        let mut cursor = from;
        while let Some(next) = schedule.next_after(cursor, tz) {
            if next > now {
                break;
            }
            latest = Some(next);
            cursor = next;
        }
        if latest.is_some() {
            return Missed {
                most_recent: latest,
                count,
            };
        }
    }
    Missed { most_recent, count }
}

/// The name of the Job for the run scheduled at `scheduled`, as Kubernetes
/// names it (minutes since the epoch).
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// The finished Jobs to delete beyond the history limits, oldest first.
pub fn history_to_delete(children: &[Child], successful: i32, failed: i32) -> Vec<String> {
    let mut out = Vec::new();
    for (condition, limit) in [("Complete", successful), ("Failed", failed)] {
        let mut done: Vec<&Child> = children
            .iter()
            .filter(|c| c.finished == Some(condition))
            .collect();
        let keep = usize::try_from(limit.max(0)).unwrap_or(0);
        if done.len() <= keep {
            continue;
        }
        done.sort_by(|a, b| a.order.cmp(&b.order).then_with(|| a.name.cmp(&b.name)));
        let excess = done.len() - keep;
        out.extend(done[..excess].iter().map(|c| c.name.clone()));
    }
    out
}

/// The scheduled time as Kubernetes writes the annotation: RFC 3339 in the
/// CronJob's time zone.
pub fn scheduled_timestamp(scheduled: Timestamp, tz: &TimeZone) -> String {
    let zoned = scheduled.to_zoned(tz.clone());
    if zoned.offset() == jiff::tz::Offset::UTC {
        scheduled.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// What to do about the schedule at `now`.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing is due.
    Wait,
    /// A run is due but was missed by more than `startingDeadlineSeconds`.
    TooLate(Timestamp),
    /// The run is due and its Job exists already.
    AlreadyCreated(Timestamp),
    /// A run is due, but `Forbid` and a Job is still running.
    Forbidden(Timestamp),
    /// Start the run scheduled at this time (after deleting the active Jobs,
    /// when `replace`).
    Start { scheduled: Timestamp, replace: bool },
}

/// Whether to start a run: the latest due time, the deadline, whether its Job
/// exists, and the concurrency policy with the active Jobs.
pub fn decide(
    cronjob: &CronJob,
    missed: &Missed,
    now: Timestamp,
    existing: &[Child],
    active: usize,
) -> Decision {
    let Some(scheduled) = missed.most_recent else {
        return Decision::Wait;
    };
    let spec = cronjob.spec.as_ref();
    if let Some(deadline) = spec.and_then(|s| s.starting_deadline_seconds)
        && scheduled.as_second().saturating_add(deadline) < now.as_second()
    {
        return Decision::TooLate(scheduled);
    }
    let name = job_name(cronjob.metadata.name.as_deref().unwrap_or(""), scheduled);
    if existing.iter().any(|c| c.name == name) {
        return Decision::AlreadyCreated(scheduled);
    }
    match spec.and_then(|s| s.concurrency_policy.as_deref()) {
        Some("Forbid") if active > 0 => Decision::Forbidden(scheduled),
        Some("Replace") => Decision::Start {
            scheduled,
            replace: active > 0,
        },
        _ => Decision::Start {
            scheduled,
            replace: false,
        },
    }
}

/// The earliest time runs may be due after: the last scheduled run (or the
/// CronJob's creation), no earlier than `startingDeadlineSeconds` ago.
pub fn earliest(cronjob: &CronJob, clock: &Clock, now: Timestamp) -> Timestamp {
    let status = cronjob.status.as_ref();
    let mut earliest = status
        .and_then(|s| s.last_schedule_time.as_ref())
        .map(|t| t.0)
        .or_else(|| {
            cronjob
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| clock.virtual_at(t.0))
        })
        .unwrap_or(now);
    if let Some(deadline) = cronjob
        .spec
        .as_ref()
        .and_then(|s| s.starting_deadline_seconds)
        && let Ok(window_start) = now.checked_sub(jiff::SignedDuration::from_secs(deadline))
    {
        earliest = earliest.max(window_start);
    }
    earliest
}

fn job_ref(ns: &str, child: &Child) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: Some(child.name.clone()),
        namespace: Some(ns.to_string()),
        uid: Some(child.uid.clone()),
        ..Default::default()
    }
}

pub async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = cj.metadata.namespace.as_deref().unwrap_or("default");
    let name = cj.metadata.name.as_deref().unwrap_or("");
    let uid = cj.metadata.uid.as_deref().unwrap_or("");
    let Some(spec) = cj.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let old = cj.status.clone().unwrap_or_default();
    let mut status = CronJobStatus {
        active: None,
        last_schedule_time: old.last_schedule_time.clone(),
        last_successful_time: old.last_successful_time.clone(),
    };
    let mut children: Vec<Child> = ctx
        .registry
        .list_typed::<Job>(&JOBS, Some(ns))
        .await?
        .iter()
        .filter(|j| controller_uid(&j.metadata) == Some(uid))
        .map(Child::of)
        .collect();

    // The active list follows the children: finished ones leave it (seen once),
    // running ones join it, vanished ones are dropped.
    let was_active: Vec<String> = old
        .active
        .iter()
        .flatten()
        .filter_map(|r| r.name.clone())
        .collect();
    for name in &was_active {
        if !children.iter().any(|c| &c.name == name) {
            ctx.recorder
                .publish(
                    &*cj,
                    EventType::Normal,
                    "MissingJob",
                    &format!("Active job went missing: {name}"),
                )
                .await;
        }
    }
    for child in &children {
        if let Some(condition) = child.finished {
            if was_active.contains(&child.name) {
                ctx.recorder
                    .publish(
                        &*cj,
                        EventType::Normal,
                        "SawCompletedJob",
                        &format!("Saw completed job: {}, condition: {condition}", child.name),
                    )
                    .await;
            }
            if condition == "Complete"
                && let Some(done) = child.completion_time
                && status
                    .last_successful_time
                    .as_ref()
                    .is_none_or(|t| t.0 < done)
            {
                status.last_successful_time = Some(Time(done));
            }
        }
    }

    // History beyond the limits goes, oldest first.
    let doomed = history_to_delete(
        &children,
        spec.successful_jobs_history_limit.unwrap_or(3),
        spec.failed_jobs_history_limit.unwrap_or(1),
    );
    for job in &doomed {
        delete_job(&ctx, &cj, ns, job).await?;
    }
    children.retain(|c| !doomed.contains(&c.name));

    let tz = match spec.time_zone.as_deref() {
        None => TimeZone::UTC,
        Some(zone) => match TimeZone::get(zone) {
            Ok(tz) => tz,
            Err(e) => {
                ctx.recorder
                    .publish(
                        &*cj,
                        EventType::Warning,
                        "UnknownTimeZone",
                        &format!("invalid timeZone: {zone:?}: {e}"),
                    )
                    .await;
                write_status(&ctx, ns, name, &children, status).await?;
                return Ok(Action::await_change());
            }
        },
    };
    let schedule = match Schedule::parse(&spec.schedule) {
        Ok(s) => s,
        Err(e) => {
            ctx.recorder
                .publish(
                    &*cj,
                    EventType::Warning,
                    "UnparseableSchedule",
                    &format!("unparseable schedule: {:?} : {e}", spec.schedule),
                )
                .await;
            write_status(&ctx, ns, name, &children, status).await?;
            return Ok(Action::await_change());
        }
    };
    if spec.suspend == Some(true) {
        write_status(&ctx, ns, name, &children, status).await?;
        return Ok(Action::await_change());
    }

    let now = ctx.clock.now();
    let missed = missed_runs(&schedule, &tz, earliest(&cj, &ctx.clock, now), now);
    if missed.count > TOO_MANY_MISSED {
        ctx.recorder
            .publish(
                &*cj,
                EventType::Warning,
                "TooManyMissedTimes",
                &format!(
                    "too many missed start times: {}. Set or decrease .spec.startingDeadlineSeconds or check clock skew",
                    missed.count
                ),
            )
            .await;
    }
    let running = children.iter().filter(|c| c.finished.is_none()).count();
    match decide(&cj, &missed, now, &children, running) {
        Decision::Wait | Decision::AlreadyCreated(_) => {}
        Decision::TooLate(scheduled) => {
            ctx.recorder
                .publish(
                    &*cj,
                    EventType::Warning,
                    "MissSchedule",
                    &format!(
                        "Missed scheduled time to start a job: {}",
                        scheduled_timestamp(scheduled, &tz)
                    ),
                )
                .await;
        }
        Decision::Forbidden(_) => {
            ctx.recorder
                .publish(
                    &*cj,
                    EventType::Normal,
                    "JobAlreadyActive",
                    "Not starting job because prior execution is running and concurrency policy is Forbid",
                )
                .await;
        }
        Decision::Start { scheduled, replace } => {
            if replace {
                let running: Vec<String> = children
                    .iter()
                    .filter(|c| c.finished.is_none())
                    .map(|c| c.name.clone())
                    .collect();
                for job in &running {
                    delete_job(&ctx, &cj, ns, job).await?;
                }
                children.retain(|c| !running.contains(&c.name));
            }
            let job = job_for(&cj, scheduled, &tz);
            match ctx.registry.create_typed(&JOBS, Some(ns), &job).await {
                Ok(created) => {
                    ctx.recorder
                        .publish(
                            &*cj,
                            EventType::Normal,
                            "SuccessfulCreate",
                            &format!(
                                "Created job {}",
                                created.metadata.name.as_deref().unwrap_or("")
                            ),
                        )
                        .await;
                    children.push(Child::of(&created));
                    status.last_schedule_time = Some(Time(scheduled));
                }
                Err(e) if e.reason == "AlreadyExists" => {
                    // Not ours (ours were listed): someone else made it; leave it be.
                    tracing::info!(
                        namespace = ns,
                        cronjob = name,
                        "job for the scheduled time exists and is not owned by the CronJob"
                    );
                }
                Err(e) => {
                    ctx.recorder
                        .publish(
                            &*cj,
                            EventType::Warning,
                            "FailedCreate",
                            &format!("Error creating job: {}", e.message),
                        )
                        .await;
                    return Err(e.into());
                }
            }
        }
    }
    write_status(&ctx, ns, name, &children, status).await?;
    let next = schedule.next_after(now, &tz);
    Ok(match next {
        Some(next) => Action::requeue(ctx.clock.real_until(now, next) + AFTER_SCHEDULE),
        None => Action::await_change(),
    })
}

async fn write_status(
    ctx: &Ctx,
    ns: &str,
    name: &str,
    children: &[Child],
    mut status: CronJobStatus,
) -> Result<(), Error> {
    let mut active: Vec<ObjectReference> = children
        .iter()
        .filter(|c| c.finished.is_none())
        .map(|c| job_ref(ns, c))
        .collect();
    active.sort_by(|a, b| a.name.cmp(&b.name));
    status.active = Some(active).filter(|a| !a.is_empty());
    ctx.registry
        .write_status(&CRONJOBS, Some(ns), name, &status)
        .await?;
    Ok(())
}

async fn delete_job(ctx: &Ctx, cj: &CronJob, ns: &str, job: &str) -> Result<(), Error> {
    let opts = DeleteOptions {
        propagation: Propagation::Background,
        ..Default::default()
    };
    match ctx.registry.delete(&JOBS, Some(ns), job, &opts).await {
        Ok(_) => {
            ctx.recorder
                .publish(
                    cj,
                    EventType::Normal,
                    "SuccessfulDelete",
                    &format!("Deleted job {job}"),
                )
                .await;
            Ok(())
        }
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The Job of the run scheduled at `scheduled`: the template's labels and
/// annotations, the scheduled-time annotation, owned by the CronJob.
pub fn job_for(cj: &CronJob, scheduled: Timestamp, tz: &TimeZone) -> Job {
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP.into(),
        scheduled_timestamp(scheduled, tz),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(
                cj.metadata.name.as_deref().unwrap_or(""),
                scheduled,
            )),
            namespace: cj.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cj)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

#[cfg(test)]
mod tests;
