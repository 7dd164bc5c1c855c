//! The Job controller: runs a Job's pods to completion. It creates pods from the
//! template (never more than `parallelism` active, never more successes than
//! `completions`; one pod per index for `completionMode: Indexed`), replaces
//! failed ones after an exponential back-off until `backoffLimit`, applies the
//! `podFailurePolicy` to failed pods' exit codes and conditions, stops at
//! `activeDeadlineSeconds`, deletes the active pods of a suspended Job, and
//! deletes a finished Job `ttlSecondsAfterFinished` later (Kubernetes' TTL
//! controller, folded in here).
//!
//! As Kubernetes 1.33 (pkg/controller/job): a finishing Job first gets
//! `SuccessCriteriaMet` or `FailureTarget`, then `Complete` or `Failed` once no
//! pod of it is still terminating. Finished pods are kept (their logs stay
//! readable) and go with the Job (the garbage collector follows their owner
//! reference).
//!
//! Counting: Tugboat keeps no `job-tracking` finalizer on pods, so the counts
//! are read from the pods that exist, never going below what the status already
//! recorded (a finished pod deleted by hand does not undo a success).
//! [`plan`] is the pure decision; [`reconcile`] reads and writes around it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{
    Job, JobCondition, JobSpec, JobStatus, PodFailurePolicy, PodFailurePolicyRule,
    UncountedTerminatedPods,
};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use tokio_util::sync::CancellationToken;
use tugboat_api::resource::{JOBS, PODS};
use tugboat_runtime::controller::{Action, Controller, backoff_policy};

use super::{Error, controller_ref, delete_pods, pod_ready_since};
use crate::events::{self, EventType, Recorder};
use crate::registry::{DeleteOptions, Propagation, Registry};

/// The index of an Indexed Job's pod (annotation and label).
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The environment variable an Indexed Job's containers read their index from.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// Kubernetes' cap on the back-off between failed-pod replacements.
const MAX_BACKOFF: Duration = Duration::from_secs(360);
/// At most this many pod creations or deletions in flight per Job.
const BURST: usize = 16;

/// How the Job controller paces itself.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// The back-off before the first replacement of a failed pod; it doubles
    /// with each failure since the last success, up to 6 minutes. Kubernetes'
    /// 10 s by default; tests shorten it.
    pub backoff_base: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backoff_base: Duration::from_secs(10),
        }
    }
}

pub struct Ctx {
    registry: Arc<Registry>,
    recorder: Recorder,
    config: Config,
}

pub async fn run(
    registry: Arc<Registry>,
    config: Config,
    concurrency: usize,
    shutdown: CancellationToken,
) {
    let ctx = Arc::new(Ctx {
        registry: registry.clone(),
        recorder: events::recorder(registry.clone(), "job-controller"),
        config,
    });
    Controller::new("job", registry, &JOBS)
        .owns(&PODS)
        .concurrency(concurrency)
        .run(reconcile, backoff_policy, ctx, shutdown)
        .await;
}

pub async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = job.metadata.namespace.as_deref().unwrap_or("default");
    let name = job.metadata.name.as_deref().unwrap_or("");
    let now = Timestamp::now();
    if let Some(finished_at) = finished_at(job.status.as_ref()) {
        return expire(&job, &ctx, finished_at, now).await;
    }
    let pods = owned_pods(&ctx.registry, &job, ns).await?;
    let plan = plan(&job, &pods, now, ctx.config.backoff_base);

    delete_pods(&ctx.registry, &ctx.recorder, &*job, ns, plan.delete.clone()).await?;
    let creations: Vec<_> = futures::stream::iter(plan.create.iter().copied())
        .map(|index| {
            let pod = pod_for(&job, index);
            let registry = ctx.registry.clone();
            async move { registry.create_typed(&PODS, Some(ns), &pod).await }
        })
        .buffer_unordered(BURST)
        .collect()
        .await;
    for r in creations {
        match r {
            Ok(pod) => {
                let pod_name = pod.metadata.name.as_deref().unwrap_or("");
                ctx.recorder
                    .publish(
                        &*job,
                        EventType::Normal,
                        "SuccessfulCreate",
                        &format!("Created pod: {pod_name}"),
                    )
                    .await;
            }
            Err(e) => {
                ctx.recorder
                    .publish(
                        &*job,
                        EventType::Warning,
                        "FailedCreate",
                        &format!("Error creating: {}", e.message),
                    )
                    .await;
                return Err(e.into());
            }
        }
    }
    ctx.registry
        .write_status(&JOBS, Some(ns), name, &plan.status)
        .await?;
    for (kind, reason, message) in &plan.events {
        ctx.recorder.publish(&*job, *kind, reason, message).await;
    }
    Ok(match plan.requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// A finished Job with `ttlSecondsAfterFinished` is deleted (with its pods,
/// in the background) that long after it finished.
async fn expire(
    job: &Job,
    ctx: &Ctx,
    finished_at: Timestamp,
    now: Timestamp,
) -> Result<Action, Error> {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
        return Ok(Action::await_change());
    };
    let wait = ttl_remaining(finished_at, ttl, now);
    if !wait.is_zero() {
        return Ok(Action::requeue(wait));
    }
    let ns = job.metadata.namespace.as_deref();
    let name = job.metadata.name.as_deref().unwrap_or("");
    tracing::info!(
        namespace = ns,
        job = name,
        "deleting finished Job whose TTL expired"
    );
    let opts = DeleteOptions {
        propagation: Propagation::Background,
        precondition_uid: job.metadata.uid.clone(),
        ..Default::default()
    };
    match ctx.registry.delete(&JOBS, ns, name, &opts).await {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if e.is_not_found() => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

/// How long until a Job that finished at `finished_at` expires (zero: now).
fn ttl_remaining(finished_at: Timestamp, ttl_seconds: i32, now: Timestamp) -> Duration {
    let expires = finished_at.as_second() + i64::from(ttl_seconds.max(0));
    Duration::from_secs(u64::try_from(expires - now.as_second()).unwrap_or(0))
}

async fn owned_pods(registry: &Registry, job: &Job, ns: &str) -> Result<Vec<Pod>, Error> {
    let uid = job.metadata.uid.as_deref().unwrap_or("");
    Ok(registry
        .list_controlled_typed::<Pod>(&PODS, Some(ns), uid)
        .await?)
}

/// When the Job finished (its `Complete` or `Failed` condition is true).
pub fn finished_at(status: Option<&JobStatus>) -> Option<Timestamp> {
    let status = status?;
    let cond = status
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
    Some(
        status
            .completion_time
            .as_ref()
            .or(cond.last_transition_time.as_ref())
            .map(|t| t.0)
            .unwrap_or_else(Timestamp::now),
    )
}

/// What one reconcile does.
#[derive(Debug, Default)]
pub struct Plan {
    /// Pods to create: their completion index (`None` for a non-indexed Job).
    pub create: Vec<Option<i32>>,
    /// Pods to delete, by name.
    pub delete: Vec<String>,
    /// The Job's status after this reconcile.
    pub status: JobStatus,
    pub events: Vec<(EventType, String, String)>,
    /// Look again after this long even if nothing changes (a back-off, a
    /// deadline).
    pub requeue: Option<Duration>,
}

impl Plan {
    fn requeue_within(&mut self, d: Duration) {
        self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
    }
}

/// What a failed pod's match against the `podFailurePolicy` decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureVerdict {
    /// Counts towards `backoffLimit` (no rule matched, or a `Count` rule).
    Count,
    /// Does not count; the pod is replaced.
    Ignore,
    /// The whole Job fails, with this message.
    FailJob(String),
    /// The pod's index fails (Indexed Jobs), with no more retries.
    FailIndex,
}

/// The pod failure policy's verdict on a failed pod: the first matching rule's
/// action, as Kubernetes' `matchPodFailurePolicy`.
pub fn failure_verdict(policy: Option<&PodFailurePolicy>, pod: &Pod) -> FailureVerdict {
    let Some(policy) = policy else {
        return FailureVerdict::Count;
    };
    let pod_name = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    );
    for (i, rule) in policy.rules.iter().enumerate() {
        let Some(why) = rule_matches(rule, pod) else {
            continue;
        };
        return match rule.action.as_str() {
            "Ignore" => FailureVerdict::Ignore,
            "FailIndex" => FailureVerdict::FailIndex,
            "Count" => FailureVerdict::Count,
            _ => FailureVerdict::FailJob(match why {
                Match::ExitCode { container, code } => format!(
                    "Container {container} for pod {pod_name} failed with exit code {code} matching FailJob rule at index {i}"
                ),
                Match::Condition(kind) => format!(
                    "Pod {pod_name} has condition {kind} matching FailJob rule at index {i}"
                ),
            }),
        };
    }
    FailureVerdict::Count
}

enum Match {
    ExitCode { container: String, code: i32 },
    Condition(String),
}

fn rule_matches(rule: &PodFailurePolicyRule, pod: &Pod) -> Option<Match> {
    let status = pod.status.as_ref()?;
    if let Some(req) = &rule.on_exit_codes {
        let statuses = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        for cs in statuses {
            if req.container_name.as_ref().is_some_and(|n| *n != cs.name) {
                continue;
            }
            // Containers that succeeded are left out of the requirement, as in Kubernetes.
            let Some(code) = cs
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code)
                .filter(|c| *c != 0)
            else {
                continue;
            };
            let listed = req.values.contains(&code);
            if listed == (req.operator == "In") {
                return Some(Match::ExitCode {
                    container: cs.name.clone(),
                    code,
                });
            }
        }
        return None;
    }
    for pattern in rule.on_pod_conditions.iter().flatten() {
        let want = pattern.status.as_str();
        if status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == pattern.type_ && c.status == want)
        {
            return Some(Match::Condition(pattern.type_.clone()));
        }
    }
    None
}

/// The back-off before replacing a pod after `failures` failures since the
/// last success: `base` doubling, capped at 6 minutes.
pub fn backoff(base: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
    base.checked_mul(factor)
        .unwrap_or(MAX_BACKOFF)
        .min(MAX_BACKOFF)
}

/// When a finished pod finished: its containers' last `finishedAt`, else the
/// last condition change, else its creation.
pub fn pod_finished_at(pod: &Pod) -> Option<Timestamp> {
    let status = pod.status.as_ref();
    let finished = status
        .into_iter()
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    finished
        .or_else(|| {
            status?
                .conditions
                .iter()
                .flatten()
                .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
                .max()
        })
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// A pod's completion index, if it has a valid one.
pub fn pod_index(pod: &Pod) -> Option<i32> {
    let m = &pod.metadata;
    m.annotations
        .as_ref()
        .and_then(|a| a.get(COMPLETION_INDEX))
        .or_else(|| m.labels.as_ref().and_then(|l| l.get(COMPLETION_INDEX)))
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|i| *i >= 0)
}

/// `1,3-5,7`: a set of indexes as Kubernetes writes `completedIndexes`.
pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(first) = iter.next() {
        let mut last = first;
        while iter.peek() == Some(&(last + 1)) {
            last += 1;
            iter.next();
        }
        out.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
    }
    out.join(",")
}

/// The indexes of `completedIndexes` (what cannot be read is left out).
pub fn parse_indexes(text: &str, completions: i32) -> BTreeSet<i32> {
    let mut set = BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
            set.extend((a.max(0)..=b.min(completions - 1)).take(1_000_000));
        }
    }
    set
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Sets condition `type_` (the transition time moves only when the status does);
/// returns whether anything changed.
fn set_condition(
    conditions: &mut Vec<JobCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    let time = Some(Time(now));
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status == status
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(message)
        {
            return false;
        }
        if c.status != status {
            c.last_transition_time = time.clone();
        }
        c.status = status.to_string();
        c.reason = Some(reason.to_string());
        c.message = Some(message.to_string());
        c.last_probe_time = time;
        return true;
    }
    conditions.push(JobCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_probe_time: time.clone(),
        last_transition_time: time,
    });
    true
}

fn has_condition(conditions: &[JobCondition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

const SUCCESS_MESSAGE: &str = "Reached expected number of succeeded pods";

/// The pure decision of one reconcile: which pods to create and delete, the
/// status, events and when to look again, from the Job and its pods at `now`.
pub fn plan(job: &Job, pods: &[Pod], now: Timestamp, backoff_base: Duration) -> Plan {
    let default_spec = JobSpec::default();
    let spec = job.spec.as_ref().unwrap_or(&default_spec);
    let old = job.status.clone().unwrap_or_default();
    let mut p = Plan::default();
    let mut conditions = old.conditions.clone().unwrap_or_default();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let suspended = spec.suspend == Some(true);
    let restart_policy = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Never");

    let mut active: Vec<&Pod> = Vec::new();
    let mut terminating = 0;
    let mut succeeded_pods: Vec<&Pod> = Vec::new();
    let mut failed_pods: Vec<(&Pod, FailureVerdict)> = Vec::new();
    for pod in pods {
        match phase(pod) {
            "Succeeded" => succeeded_pods.push(pod),
            "Failed" => {
                failed_pods.push((pod, failure_verdict(spec.pod_failure_policy.as_ref(), pod)))
            }
            _ if pod.metadata.deletion_timestamp.is_some() => terminating += 1,
            _ => active.push(pod),
        }
    }
    // Oldest first, so that the first FailJob match is the first failure.
    failed_pods.sort_by_key(|(pod, _)| pod_finished_at(pod));

    let counted_failures: Vec<&Pod> = failed_pods
        .iter()
        .filter(|(_, v)| !matches!(v, FailureVerdict::Ignore))
        .map(|(pod, _)| *pod)
        .collect();
    let failed = (counted_failures.len() as i32).max(old.failed.unwrap_or(0));

    // Indexed Jobs: which indexes succeeded, and which failed for good.
    let index_range = |i: &i32| completions.is_some_and(|c| *i < c);
    let mut succeeded_indexes: BTreeSet<i32> = old
        .completed_indexes
        .as_deref()
        .map(|t| parse_indexes(t, completions.unwrap_or(0)))
        .unwrap_or_default();
    let mut failed_indexes: BTreeSet<i32> = old
        .failed_indexes
        .as_deref()
        .map(|t| parse_indexes(t, completions.unwrap_or(0)))
        .unwrap_or_default();
    if indexed {
        succeeded_indexes.extend(
            succeeded_pods
                .iter()
                .filter_map(|p| pod_index(p))
                .filter(index_range),
        );
        let mut failures_per_index: BTreeMap<i32, i32> = BTreeMap::new();
        for (pod, verdict) in &failed_pods {
            let Some(i) = pod_index(pod).filter(index_range) else {
                continue;
            };
            match verdict {
                FailureVerdict::FailIndex => {
                    failed_indexes.insert(i);
                }
                FailureVerdict::Count => *failures_per_index.entry(i).or_default() += 1,
                _ => {}
            }
        }
        if let Some(limit) = spec.backoff_limit_per_index {
            failed_indexes.extend(
                failures_per_index
                    .iter()
                    .filter(|(_, n)| **n > limit)
                    .map(|(i, _)| *i),
            );
        }
        // An index that succeeded once is done, whatever else happened to it.
        failed_indexes.retain(|i| !succeeded_indexes.contains(i));
    }
    let succeeded = if indexed {
        succeeded_indexes.len() as i32
    } else {
        (succeeded_pods.len() as i32).max(old.succeeded.unwrap_or(0))
    };

    let mut status = JobStatus {
        start_time: old.start_time.clone(),
        completion_time: old.completion_time.clone(),
        succeeded: Some(succeeded),
        failed: Some(failed),
        terminating: Some(terminating),
        completed_indexes: indexed.then(|| format_indexes(&succeeded_indexes)),
        failed_indexes: (indexed && spec.backoff_limit_per_index.is_some())
            .then(|| format_indexes(&failed_indexes)),
        uncounted_terminated_pods: Some(UncountedTerminatedPods::default()),
        ..Default::default()
    };

    // Suspension: no pods, the clock stops; resuming starts it again.
    let was_suspended = has_condition(&conditions, "Suspended");
    if suspended {
        p.delete.extend(active.iter().map(|p| name_of(p)));
        if set_condition(
            &mut conditions,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
            now,
        ) {
            p.events.push((
                EventType::Normal,
                "Suspended".into(),
                "Job suspended".into(),
            ));
        }
        status.active = Some(0);
        status.ready = Some(0);
        status.terminating = Some(terminating + active.len() as i32);
        status.conditions = Some(conditions);
        p.status = status;
        return p;
    }
    if was_suspended {
        set_condition(
            &mut conditions,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
            now,
        );
        p.events
            .push((EventType::Normal, "Resumed".into(), "Job resumed".into()));
        status.start_time = Some(Time(now));
    }
    let start = status.start_time.get_or_insert(Time(now)).0;

    // Has the Job failed, or succeeded?
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let restarts: i32 = active
        .iter()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum();
    let past_restart_limit = restart_policy == "OnFailure"
        && if backoff_limit == 0 {
            restarts > 0
        } else {
            restarts >= backoff_limit
        };
    let deadline = spec
        .active_deadline_seconds
        .map(|s| start.as_second().saturating_add(s));
    let all_indexes_resolved =
        completions.is_some_and(|c| (succeeded_indexes.len() + failed_indexes.len()) as i32 >= c);
    let failure: Option<(String, String)> = if let Some(msg) =
        failed_pods.iter().find_map(|(_, v)| match v {
            FailureVerdict::FailJob(m) => Some(m.clone()),
            _ => None,
        }) {
        Some(("PodFailurePolicy".to_string(), msg))
    } else if spec
        .max_failed_indexes
        .is_some_and(|m| failed_indexes.len() as i32 > m)
    {
        Some((
            "MaxFailedIndexesExceeded".to_string(),
            "Job has exceeded the specified maximal number of failed indexes".into(),
        ))
    } else if (spec.backoff_limit_per_index.is_none() && failed > backoff_limit)
        || past_restart_limit
    {
        Some((
            "BackoffLimitExceeded".to_string(),
            "Job has reached the specified backoff limit".into(),
        ))
    } else if deadline.is_some_and(|d| now.as_second() >= d) {
        Some((
            "DeadlineExceeded".to_string(),
            "Job was active longer than specified deadline".into(),
        ))
    } else if indexed && all_indexes_resolved && !failed_indexes.is_empty() {
        Some(("FailedIndexes".into(), "Job has failed indexes".into()))
    } else {
        None
    };
    // A Job already marked as finishing stays so.
    let failure = failure.or_else(|| {
        conditions
            .iter()
            .find(|c| c.type_ == "FailureTarget" && c.status == "True")
            .map(|c| {
                (
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default(),
                )
            })
    });
    let complete = failure.is_none()
        && (has_condition(&conditions, "SuccessCriteriaMet")
            || if indexed {
                completions.is_some_and(|c| succeeded >= c)
            } else {
                match completions {
                    Some(c) => succeeded >= c,
                    None => succeeded > 0 && active.is_empty(),
                }
            });

    if failure.is_some() || complete {
        // Finishing: no pod keeps running; the final condition waits for them to go.
        p.delete.extend(active.iter().map(|p| name_of(p)));
        let still_running = terminating + active.len() as i32;
        status.active = Some(0);
        status.ready = Some(0);
        status.terminating = Some(still_running);
        if let Some((reason, message)) = failure {
            set_condition(
                &mut conditions,
                "FailureTarget",
                "True",
                &reason,
                &message,
                now,
            );
            if still_running == 0 {
                set_condition(&mut conditions, "Failed", "True", &reason, &message, now);
                p.events.push((EventType::Warning, reason, message));
            }
        } else {
            set_condition(
                &mut conditions,
                "SuccessCriteriaMet",
                "True",
                "CompletionsReached",
                SUCCESS_MESSAGE,
                now,
            );
            if still_running == 0 {
                set_condition(
                    &mut conditions,
                    "Complete",
                    "True",
                    "CompletionsReached",
                    SUCCESS_MESSAGE,
                    now,
                );
                status.completion_time = Some(Time(now));
                p.events.push((
                    EventType::Normal,
                    "Completed".into(),
                    "Job completed".into(),
                ));
            }
        }
        status.conditions = Some(conditions).filter(|c| !c.is_empty());
        p.status = status;
        return p;
    }
    if let Some(d) = deadline {
        p.requeue_within(Duration::from_secs(
            u64::try_from(d - now.as_second()).unwrap_or(0).max(1),
        ));
    }

    // How many pods should run, and which.
    let mut keep: Vec<&Pod> = Vec::new();
    let mut wanted_new: Vec<Option<i32>> = Vec::new();
    if indexed {
        let c = completions.unwrap_or(0);
        let mut by_index: BTreeMap<i32, Vec<&Pod>> = BTreeMap::new();
        for pod in &active {
            match pod_index(pod).filter(|i| *i < c) {
                Some(i) if !succeeded_indexes.contains(&i) && !failed_indexes.contains(&i) => {
                    by_index.entry(i).or_default().push(pod)
                }
                // No valid index, or one that is already done: not needed.
                _ => p.delete.push(name_of(pod)),
            }
        }
        for (_, mut dups) in by_index {
            dups.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
            keep.push(dups[0]);
            p.delete.extend(dups[1..].iter().map(|p| name_of(p)));
        }
        let running: BTreeSet<i32> = keep.iter().filter_map(|p| pod_index(p)).collect();
        let room = usize::try_from(parallelism)
            .unwrap_or(0)
            .saturating_sub(keep.len());
        wanted_new.extend(
            (0..c)
                .filter(|i| {
                    !succeeded_indexes.contains(i)
                        && !failed_indexes.contains(i)
                        && !running.contains(i)
                })
                .take(room)
                .map(Some),
        );
        // More active than allowed (parallelism lowered): the highest indexes go.
        if keep.len() > usize::try_from(parallelism).unwrap_or(0) {
            keep.sort_by_key(|p| pod_index(p));
            let excess = keep.split_off(usize::try_from(parallelism).unwrap_or(0));
            p.delete.extend(excess.iter().map(|p| name_of(p)));
        }
    } else {
        let want = match completions {
            Some(c) => (c - succeeded).clamp(0, parallelism),
            // A work queue: once one pod succeeded, no new ones start.
            None if succeeded > 0 => (active.len() as i32).min(parallelism),
            None => parallelism,
        } as usize;
        keep = active.clone();
        if keep.len() > want {
            keep.sort_by_key(|p| super::replicaset::deletion_rank(p));
            let excess = keep.len() - want;
            let victims: Vec<&Pod> = keep.drain(..excess).collect();
            p.delete.extend(victims.iter().map(|p| name_of(p)));
        } else {
            wanted_new.extend(std::iter::repeat_n(None, want - keep.len()));
        }
    }

    // Replacements of failed pods wait out the back-off.
    if !wanted_new.is_empty() {
        let last_success = succeeded_pods
            .iter()
            .filter_map(|p| pod_finished_at(p))
            .max();
        let failures: Vec<Timestamp> = counted_failures
            .iter()
            .filter_map(|p| pod_finished_at(p))
            .filter(|t| last_success.is_none_or(|s| *t > s))
            .collect();
        let delay = backoff(backoff_base, failures.len() as u32);
        if let Some(last) = failures.iter().max() {
            let ready_at = last
                .checked_add(jiff::SignedDuration::try_from(delay).unwrap_or_default())
                .unwrap_or(*last);
            if now < ready_at {
                let wait = now.duration_until(ready_at);
                p.requeue_within(Duration::try_from(wait).unwrap_or(Duration::from_secs(1)));
                wanted_new.clear();
            }
        }
    }
    p.create = wanted_new;

    status.active = Some(keep.len() as i32 + p.create.len() as i32);
    status.ready = Some(keep.iter().filter(|p| pod_ready_since(p).is_some()).count() as i32);
    status.conditions = Some(conditions).filter(|c| !c.is_empty());
    p.status = status;
    p
}

fn name_of(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// A pod for `job` from its template, owned by it; an Indexed Job's pod carries
/// its index (annotation, label, hostname `JOB-INDEX` and `JOB_COMPLETION_INDEX`
/// in every container, read from the annotation).
pub fn pod_for(job: &Job, index: Option<i32>) -> Pod {
    let job_name = job.metadata.name.as_deref().unwrap_or("job");
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let metadata = template.metadata.unwrap_or_default();
    let mut spec = template.spec.unwrap_or_default();
    let mut labels = metadata.labels.unwrap_or_default();
    let mut annotations = metadata.annotations.unwrap_or_default();
    let generate_name = match index {
        Some(i) => {
            labels.insert(COMPLETION_INDEX.into(), i.to_string());
            annotations.insert(COMPLETION_INDEX.into(), i.to_string());
            if spec.hostname.is_none() {
                spec.hostname = Some(format!("{job_name}-{i}"));
            }
            let env = EnvVar {
                name: COMPLETION_INDEX_ENV.into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: Some("v1".into()),
                        field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                    }),
                    ..Default::default()
                }),
            };
            for c in spec
                .containers
                .iter_mut()
                .chain(spec.init_containers.iter_mut().flatten())
            {
                let vars = c.env.get_or_insert_with(Vec::new);
                if !vars.iter().any(|v| v.name == COMPLETION_INDEX_ENV) {
                    vars.push(env.clone());
                }
            }
            format!("{job_name}-{i}-")
        }
        None => format!("{job_name}-"),
    };
    Pod {
        metadata: ObjectMeta {
            name: None,
            generate_name: Some(generate_name),
            owner_references: Some(vec![controller_ref(job)]),
            labels: Some(labels).filter(|l| !l.is_empty()),
            annotations: Some(annotations).filter(|a| !a.is_empty()),
            ..metadata
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests;
