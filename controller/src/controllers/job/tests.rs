use std::collections::BTreeSet;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, JobStatus, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodSpec, PodStatus,
    PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::*;

const BASE: Duration = Duration::from_secs(10);

fn t0() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn at(secs: i64) -> Timestamp {
    t0() + SignedDuration::from_secs(secs)
}

/// A Job as admission leaves it: `completions`, `parallelism`, restartPolicy Never.
fn job(completions: Option<i32>, parallelism: i32) -> Job {
    Job {
        metadata: ObjectMeta {
            name: Some("pi".into()),
            namespace: Some("ns".into()),
            uid: Some("job-uid".into()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            completions,
            parallelism: Some(parallelism),
            backoff_limit: Some(6),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some([("job-name".to_string(), "pi".to_string())].into()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![Container {
                        name: "main".into(),
                        image: Some("busybox".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: Some(JobStatus {
            start_time: Some(Time(t0())),
            ..Default::default()
        }),
    }
}

fn pod(name: &str, phase: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            creation_timestamp: Some(Time(t0())),
            ..Default::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        }),
    }
}

/// A pod whose only container exited with `code` at `finished`.
fn exited(name: &str, code: i32, finished: Timestamp) -> Pod {
    let mut p = pod(name, if code == 0 { "Succeeded" } else { "Failed" });
    p.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
        name: "main".into(),
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                finished_at: Some(Time(finished)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    p
}

fn with_index(mut p: Pod, i: i32) -> Pod {
    p.metadata.annotations = Some([(COMPLETION_INDEX.to_string(), i.to_string())].into());
    p
}

fn indexed(completions: i32, parallelism: i32) -> Job {
    let mut j = job(Some(completions), parallelism);
    j.spec.as_mut().unwrap().completion_mode = Some("Indexed".into());
    j
}

fn condition<'a>(plan: &'a Plan, kind: &str) -> Option<(&'a str, Option<&'a str>)> {
    plan.status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.as_str(), c.reason.as_deref()))
}

#[test]
fn a_new_job_starts_parallelism_pods_at_most() {
    let p = plan(&job(Some(5), 2), &[], at(1), BASE);
    assert_eq!(p.create, vec![None, None]);
    assert_eq!(p.status.active, Some(2));
    assert!(p.delete.is_empty());
}

#[test]
fn never_more_pods_than_the_completions_still_needed() {
    let pods = [
        exited("a", 0, at(1)),
        exited("b", 0, at(1)),
        exited("c", 0, at(1)),
        pod("d", "Running"),
    ];
    // min(parallelism 2, 5 - 3 succeeded) - 1 active = 1.
    let p = plan(&job(Some(5), 2), &pods, at(2), BASE);
    assert_eq!(p.create.len(), 1);
    let pods = [
        exited("a", 0, at(1)),
        exited("b", 0, at(1)),
        exited("c", 0, at(1)),
        exited("e", 0, at(1)),
        pod("d", "Running"),
    ];
    let p = plan(&job(Some(5), 2), &pods, at(2), BASE);
    assert!(p.create.is_empty(), "4 succeeded + 1 running is all of 5");
    assert_eq!(p.status.active, Some(1));
    assert_eq!(p.status.succeeded, Some(4));
}

#[test]
fn lowering_parallelism_deletes_the_excess_pods() {
    let pods = [
        pod("a", "Running"),
        pod("b", "Running"),
        pod("c", "Pending"),
    ];
    let p = plan(&job(Some(10), 1), &pods, at(1), BASE);
    assert_eq!(p.delete, vec!["c".to_string(), "a".to_string()]);
    assert!(p.create.is_empty());
    assert_eq!(p.status.active, Some(1));
}

#[test]
fn enough_successes_complete_the_job_with_both_conditions() {
    let pods: Vec<Pod> = (0..5).map(|i| exited(&format!("p{i}"), 0, at(1))).collect();
    let p = plan(&job(Some(5), 2), &pods, at(3), BASE);
    assert_eq!(
        condition(&p, "SuccessCriteriaMet"),
        Some(("True", Some("CompletionsReached")))
    );
    assert_eq!(
        condition(&p, "Complete"),
        Some(("True", Some("CompletionsReached")))
    );
    assert_eq!(p.status.completion_time, Some(Time(at(3))));
    assert_eq!(p.status.succeeded, Some(5));
    assert!(
        p.events
            .iter()
            .any(|(_, r, m)| r == "Completed" && m == "Job completed")
    );
    assert!(finished_at(Some(&p.status)).is_some());
}

#[test]
fn a_work_queue_job_completes_when_one_succeeded_and_none_run() {
    let p = plan(
        &job(None, 2),
        &[exited("a", 0, at(1)), pod("b", "Running")],
        at(2),
        BASE,
    );
    assert!(p.create.is_empty(), "no new pods once one succeeded");
    assert_eq!(condition(&p, "Complete"), None);
    let p = plan(
        &job(None, 2),
        &[exited("a", 0, at(1)), exited("b", 0, at(2))],
        at(3),
        BASE,
    );
    assert_eq!(condition(&p, "Complete").map(|c| c.0), Some("True"));
}

#[test]
fn back_off_doubles_from_the_base_up_to_six_minutes() {
    assert_eq!(backoff(BASE, 0), Duration::ZERO);
    assert_eq!(backoff(BASE, 1), Duration::from_secs(10));
    assert_eq!(backoff(BASE, 2), Duration::from_secs(20));
    assert_eq!(backoff(BASE, 4), Duration::from_secs(80));
    assert_eq!(backoff(BASE, 6), Duration::from_secs(320));
    assert_eq!(backoff(BASE, 7), Duration::from_secs(360));
    assert_eq!(backoff(BASE, 60), Duration::from_secs(360));
}

#[test]
fn a_failed_pod_is_replaced_after_the_back_off() {
    let pods = [exited("a", 1, at(10))];
    let p = plan(&job(Some(1), 1), &pods, at(13), BASE);
    assert!(p.create.is_empty(), "still backing off");
    assert_eq!(p.requeue, Some(Duration::from_secs(7)));
    assert_eq!(p.status.failed, Some(1));
    let p = plan(&job(Some(1), 1), &pods, at(20), BASE);
    assert_eq!(p.create, vec![None]);
    // The second failure waits twice as long.
    let pods = [exited("a", 1, at(10)), exited("b", 1, at(30))];
    let p = plan(&job(Some(1), 1), &pods, at(45), BASE);
    assert!(p.create.is_empty());
    assert_eq!(p.requeue, Some(Duration::from_secs(5)));
}

#[test]
fn failures_before_the_last_success_do_not_delay() {
    let pods = [exited("a", 1, at(10)), exited("b", 0, at(20))];
    let p = plan(&job(Some(3), 1), &pods, at(21), BASE);
    assert_eq!(p.create, vec![None]);
}

#[test]
fn more_failures_than_the_backoff_limit_fail_the_job() {
    let mut j = job(Some(1), 1);
    j.spec.as_mut().unwrap().backoff_limit = Some(1);
    let p = plan(&j, &[exited("a", 1, at(1))], at(100), BASE);
    assert_eq!(
        condition(&p, "Failed"),
        None,
        "one failure is within the limit"
    );
    assert_eq!(p.create.len(), 1);
    let p = plan(
        &j,
        &[exited("a", 1, at(1)), exited("b", 1, at(20))],
        at(21),
        BASE,
    );
    assert!(p.create.is_empty());
    assert_eq!(
        condition(&p, "FailureTarget"),
        Some(("True", Some("BackoffLimitExceeded")))
    );
    assert_eq!(
        condition(&p, "Failed"),
        Some(("True", Some("BackoffLimitExceeded")))
    );
    assert_eq!(p.status.failed, Some(2));
    assert_eq!(
        p.status.completion_time, None,
        "only a success has a completion time"
    );
    assert!(p.events.iter().any(|(t, r, m)| *t == EventType::Warning
        && r == "BackoffLimitExceeded"
        && m == "Job has reached the specified backoff limit"));
}

#[test]
fn with_restart_policy_on_failure_container_restarts_count_against_the_limit() {
    let mut j = job(Some(1), 1);
    let spec = j.spec.as_mut().unwrap();
    spec.backoff_limit = Some(2);
    spec.template.spec.as_mut().unwrap().restart_policy = Some("OnFailure".into());
    let mut running = pod("a", "Running");
    running.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
        name: "main".into(),
        restart_count: 1,
        ..Default::default()
    }]);
    let p = plan(&j, std::slice::from_ref(&running), at(1), BASE);
    assert_eq!(condition(&p, "FailureTarget"), None);
    running
        .status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()[0]
        .restart_count = 2;
    let p = plan(&j, &[running], at(1), BASE);
    assert_eq!(
        condition(&p, "FailureTarget"),
        Some(("True", Some("BackoffLimitExceeded")))
    );
    assert_eq!(p.delete, vec!["a".to_string()]);
    assert_eq!(condition(&p, "Failed"), None, "waits for the pod to go");
}

#[test]
fn the_active_deadline_fails_the_job_and_deletes_its_pods() {
    let mut j = job(Some(1), 1);
    j.spec.as_mut().unwrap().active_deadline_seconds = Some(30);
    let p = plan(&j, &[pod("a", "Running")], at(10), BASE);
    assert_eq!(p.requeue, Some(Duration::from_secs(20)));
    assert!(p.delete.is_empty());
    let p = plan(&j, &[pod("a", "Running")], at(30), BASE);
    assert_eq!(p.delete, vec!["a".to_string()]);
    assert_eq!(
        condition(&p, "FailureTarget"),
        Some(("True", Some("DeadlineExceeded")))
    );
    // Once the pod is gone, the Job has failed.
    let mut j2 = j.clone();
    j2.status = Some(p.status.clone());
    let p = plan(&j2, &[], at(31), BASE);
    assert_eq!(
        condition(&p, "Failed"),
        Some(("True", Some("DeadlineExceeded")))
    );
    assert!(
        p.events.iter().any(|(_, r, m)| r == "DeadlineExceeded"
            && m == "Job was active longer than specified deadline")
    );
}

fn policy(action: &str, operator: &str, values: Vec<i32>) -> PodFailurePolicy {
    PodFailurePolicy {
        rules: vec![PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: None,
                operator: operator.into(),
                values,
            }),
            on_pod_conditions: None,
        }],
    }
}

#[test]
fn failure_policy_rules_match_non_zero_exit_codes() {
    let failed = exited("a", 42, at(1));
    assert_eq!(failure_verdict(None, &failed), FailureVerdict::Count);
    assert_eq!(
        failure_verdict(Some(&policy("Ignore", "In", vec![42])), &failed),
        FailureVerdict::Ignore
    );
    assert_eq!(
        failure_verdict(Some(&policy("Ignore", "In", vec![1, 2])), &failed),
        FailureVerdict::Count
    );
    assert_eq!(
        failure_verdict(Some(&policy("Ignore", "NotIn", vec![1, 2])), &failed),
        FailureVerdict::Ignore
    );
    // A container that succeeded never matches, even NotIn.
    let ok = exited("b", 0, at(1));
    assert_eq!(
        failure_verdict(Some(&policy("FailJob", "NotIn", vec![1])), &ok),
        FailureVerdict::Count
    );
    match failure_verdict(Some(&policy("FailJob", "In", vec![42])), &failed) {
        FailureVerdict::FailJob(m) => assert_eq!(
            m,
            "Container main for pod ns/a failed with exit code 42 matching FailJob rule at index 0"
        ),
        other => panic!("expected FailJob, got {other:?}"),
    }
}

#[test]
fn a_fail_job_rule_fails_the_job_at_once() {
    let mut j = job(Some(2), 2);
    j.spec.as_mut().unwrap().pod_failure_policy = Some(policy("FailJob", "In", vec![42]));
    let p = plan(
        &j,
        &[exited("a", 42, at(1)), pod("b", "Running")],
        at(2),
        BASE,
    );
    assert_eq!(
        condition(&p, "FailureTarget"),
        Some(("True", Some("PodFailurePolicy")))
    );
    assert_eq!(p.delete, vec!["b".to_string()]);
}

#[test]
fn ignored_failures_neither_count_nor_delay_the_replacement() {
    let mut j = job(Some(1), 1);
    let spec = j.spec.as_mut().unwrap();
    spec.backoff_limit = Some(0);
    spec.pod_failure_policy = Some(policy("Ignore", "In", vec![3]));
    let p = plan(&j, &[exited("a", 3, at(1))], at(2), BASE);
    assert_eq!(condition(&p, "FailureTarget"), None);
    assert_eq!(p.status.failed, Some(0));
    assert_eq!(p.create, vec![None]);
}

#[test]
fn an_indexed_job_starts_the_lowest_missing_indexes() {
    let pods = [
        with_index(exited("a", 0, at(1)), 0),
        with_index(pod("b", "Running"), 2),
    ];
    let p = plan(&indexed(5, 3), &pods, at(2), BASE);
    assert_eq!(p.create, vec![Some(1), Some(3)]);
    assert_eq!(p.status.completed_indexes.as_deref(), Some("0"));
    assert_eq!(p.status.succeeded, Some(1));
    // A second pod for a running index is deleted.
    let pods = [
        with_index(pod("b", "Running"), 2),
        with_index(pod("c", "Running"), 2),
    ];
    let p = plan(&indexed(3, 3), &pods, at(2), BASE);
    assert_eq!(p.delete.len(), 1);
    assert_eq!(p.create, vec![Some(0), Some(1)]);
}

#[test]
fn an_indexed_job_completes_when_every_index_succeeded() {
    let pods: Vec<Pod> = (0..3)
        .map(|i| with_index(exited(&format!("p{i}"), 0, at(1)), i))
        .chain([with_index(exited("dup", 0, at(1)), 1)])
        .collect();
    let p = plan(&indexed(3, 3), &pods, at(2), BASE);
    assert_eq!(p.status.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!(p.status.succeeded, Some(3), "an index counts once");
    assert_eq!(condition(&p, "Complete").map(|c| c.0), Some("True"));
}

#[test]
fn fail_index_fails_only_that_index() {
    let mut j = indexed(3, 3);
    let spec = j.spec.as_mut().unwrap();
    spec.backoff_limit_per_index = Some(1);
    spec.pod_failure_policy = Some(policy("FailIndex", "In", vec![9]));
    let pods = [
        with_index(exited("a", 9, at(1)), 1),
        with_index(exited("b", 0, at(1)), 0),
    ];
    let p = plan(&j, &pods, at(2), BASE);
    assert_eq!(p.create, vec![Some(2)]);
    assert_eq!(p.status.failed_indexes.as_deref(), Some("1"));
    let pods = [
        with_index(exited("a", 9, at(1)), 1),
        with_index(exited("b", 0, at(1)), 0),
        with_index(exited("c", 0, at(1)), 2),
    ];
    let p = plan(&j, &pods, at(2), BASE);
    assert_eq!(
        condition(&p, "Failed"),
        Some(("True", Some("FailedIndexes")))
    );
}

#[test]
fn indexes_print_and_parse_as_ranges() {
    let set: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into();
    assert_eq!(format_indexes(&set), "0-2,4,6-7");
    assert_eq!(parse_indexes("0-2,4,6-7", 10), set);
    assert_eq!(parse_indexes("0-2,4,6-7", 5), [0, 1, 2, 4].into());
    assert_eq!(format_indexes(&BTreeSet::new()), "");
}

#[test]
fn an_indexed_pod_carries_its_index_hostname_and_env() {
    let pod = pod_for(&indexed(3, 1), Some(2));
    assert_eq!(pod.metadata.generate_name.as_deref(), Some("pi-2-"));
    assert_eq!(
        pod.metadata
            .annotations
            .as_ref()
            .unwrap()
            .get(COMPLETION_INDEX),
        Some(&"2".to_string())
    );
    assert_eq!(
        pod.metadata.labels.as_ref().unwrap().get(COMPLETION_INDEX),
        Some(&"2".to_string())
    );
    let spec = pod.spec.unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("pi-2"));
    let env = spec.containers[0].env.as_ref().unwrap();
    let var = env.iter().find(|e| e.name == COMPLETION_INDEX_ENV).unwrap();
    assert_eq!(
        var.value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    );
    let owner = &pod.metadata.owner_references.unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("Job", Some(true)));
    let plain = pod_for(&job(Some(1), 1), None);
    assert_eq!(plain.metadata.generate_name.as_deref(), Some("pi-"));
    assert!(plain.spec.unwrap().containers[0].env.is_none());
}

#[test]
fn a_suspended_job_deletes_its_active_pods_and_says_so() {
    let mut j = job(Some(3), 2);
    j.spec.as_mut().unwrap().suspend = Some(true);
    let p = plan(
        &j,
        &[pod("a", "Running"), exited("b", 0, at(1))],
        at(5),
        BASE,
    );
    assert_eq!(p.delete, vec!["a".to_string()]);
    assert!(p.create.is_empty());
    assert_eq!(
        condition(&p, "Suspended"),
        Some(("True", Some("JobSuspended")))
    );
    // Resuming restarts the clock and the pods.
    let mut resumed = j.clone();
    resumed.spec.as_mut().unwrap().suspend = Some(false);
    resumed.status = Some(p.status.clone());
    let p = plan(&resumed, &[exited("b", 0, at(1))], at(50), BASE);
    assert_eq!(
        condition(&p, "Suspended"),
        Some(("False", Some("JobResumed")))
    );
    assert_eq!(p.status.start_time, Some(Time(at(50))));
    assert_eq!(p.create.len(), 2);
}

#[test]
fn a_finished_job_expires_after_its_ttl() {
    assert_eq!(ttl_remaining(at(0), 100, at(30)), Duration::from_secs(70));
    assert_eq!(ttl_remaining(at(0), 100, at(100)), Duration::ZERO);
    assert_eq!(ttl_remaining(at(0), 0, at(0)), Duration::ZERO);
}

#[test]
fn the_status_is_stable_when_nothing_changes() {
    let j = job(Some(5), 2);
    let pods = [pod("a", "Running"), pod("b", "Running")];
    let first = plan(&j, &pods, at(1), BASE);
    let mut again = j.clone();
    again.status = Some(first.status.clone());
    let second = plan(&again, &pods, at(9), BASE);
    assert_eq!(first.status, second.status);
    assert!(second.create.is_empty() && second.delete.is_empty());
}
