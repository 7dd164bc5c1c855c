//! Jobs and CronJobs end to end on the real Docker engine: a Job runs exactly its
//! completions, never more pods at once than its parallelism (counted from a
//! watch, so a short spike is seen); a failing Job stops at its backoff limit; a
//! CronJob on a compressed clock runs again and again and keeps its history
//! limit; and `tug create job --from=cronjob/…`, `tug wait` and `tug logs job/…`
//! work on real pods. Each test has its own namespace and removes its containers
//! even when it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tugboat_api::resource::{EVENTS, JOBS, PODS};
use tugboat_api::{Client, ListParams};
use tugboat_tests::docker::{BUSYBOX_IMAGE, DockerCluster, busybox_image};
use tugboat_tests::{eventually_within, tug, tug_exit};

/// Long enough for a few pods to start, run and stop on a busy machine.
const JOB_WAIT: Duration = Duration::from_secs(120);

fn job(name: &str, completions: i64, parallelism: i64, script: &str) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completions": completions, "parallelism": parallelism,
            "template": {"spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": BUSYBOX_IMAGE,
                    "command": ["sh", "-c", script]}],
            }},
        },
    })
}

fn has_condition(obj: &Value, kind: &str) -> Option<Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind && c["status"] == "True")
        .cloned()
}

/// Pods counted as active: neither finished nor deleted.
fn active(pod: &Value) -> bool {
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    phase != "Succeeded" && phase != "Failed" && pod["metadata"]["deletionTimestamp"].is_null()
}

/// Watches pods matching `selector` and records the most active at once (the
/// watch resumes from its last revision if the server ends it).
fn track_active(
    client: Client,
    ns: String,
    selector: String,
) -> (Arc<Mutex<usize>>, tokio::task::JoinHandle<()>) {
    let max = Arc::new(Mutex::new(0usize));
    let seen = max.clone();
    let task = tokio::spawn(async move {
        let params = ListParams {
            label_selector: Some(selector),
            ..Default::default()
        };
        let mut pods: BTreeMap<String, bool> = BTreeMap::new();
        let mut revision: Option<String> = None;
        loop {
            let Ok(events) = client
                .watch(&PODS, Some(&ns), &params, revision.as_deref())
                .await
            else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut events = std::pin::pin!(events);
            while let Some(Ok(ev)) = events.next().await {
                let name = ev.object["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                if let Some(rv) = ev.object["metadata"]["resourceVersion"].as_str() {
                    revision = Some(rv.to_string());
                }
                match ev.event_type.as_str() {
                    "ADDED" | "MODIFIED" => {
                        pods.insert(name, active(&ev.object));
                    }
                    "DELETED" => {
                        pods.remove(&name);
                    }
                    _ => continue,
                }
                let now = pods.values().filter(|a| **a).count();
                let mut max = seen.lock().unwrap();
                *max = (*max).max(now);
            }
        }
    });
    (max, task)
}

async fn get_job(c: &DockerCluster, name: &str) -> Option<Value> {
    c.client.get(&JOBS, Some(&c.namespace), name).await.ok()
}

async fn events_of(c: &DockerCluster, name: &str, reason: &str) -> Vec<Value> {
    let params = ListParams {
        field_selector: Some(format!("involvedObject.name={name},reason={reason}")),
        ..Default::default()
    };
    c.client
        .list(&EVENTS, Some(&c.namespace), &params)
        .await
        .ok()
        .and_then(|l| l["items"].as_array().cloned())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_job_runs_exactly_its_completions_never_more_than_parallelism_at_once()
-> anyhow::Result<()> {
    busybox_image().await?;
    let c = DockerCluster::start("job-parallel", 1).await?;
    let (max_active, watch) = track_active(
        c.client.clone(),
        c.namespace.clone(),
        "job-name=count".into(),
    );
    c.apply(&job("count", 5, 2, "sleep 1")).await?;
    let done = eventually_within(JOB_WAIT, "the Job is Complete", || async {
        let j = get_job(&c, "count").await?;
        has_condition(&j, "Complete").map(|_| j)
    })
    .await;
    watch.abort();
    let done = done?;
    let pods = c.pods("job-name=count").await?;
    let succeeded = pods
        .iter()
        .filter(|p| p["status"]["phase"] == "Succeeded")
        .count();
    assert_eq!(succeeded, 5, "exactly the completions succeeded: {pods:#?}");
    assert_eq!(pods.len(), 5, "no pod beyond the completions");
    let max = *max_active.lock().unwrap();
    assert_eq!(max, 2, "at most parallelism pods at once, and that many");
    assert_eq!(done["status"]["succeeded"], 5);
    assert_eq!(done["status"]["active"], 0);
    assert!(done["status"]["completionTime"].is_string());
    assert!(
        has_condition(&done, "SuccessCriteriaMet").is_some(),
        "{done:#}"
    );
    assert_eq!(
        has_condition(&done, "Complete").unwrap()["reason"],
        "CompletionsReached"
    );
    // Every pod is the Job's: its labels and its controller reference.
    for p in &pods {
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Job");
        assert_eq!(
            p["metadata"]["labels"]["batch.kubernetes.io/controller-uid"],
            done["metadata"]["uid"]
        );
    }
    assert_eq!(events_of(&c, "count", "SuccessfulCreate").await.len(), 5);
    // The Completed Event is written just after the status: wait for it.
    let completed = eventually_within(JOB_WAIT, "the Job's Completed Event", || async {
        let events = events_of(&c, "count", "Completed").await;
        (!events.is_empty()).then_some(events)
    })
    .await?;
    assert_eq!(completed.len(), 1, "{completed:#?}");
    // A finished pod's sandbox is stopped (as the kubelet does); the pod keeps
    // its address in its status.
    eventually_within(JOB_WAIT, "the finished pods' sandboxes stop", || async {
        let running = c.all_containers(true).ok()?;
        (!running.iter().any(|d| d.sandbox)).then_some(())
    })
    .await?;
    let after = c.pods("job-name=count").await?;
    assert!(
        after.iter().all(|p| p["status"]["podIP"].is_string()),
        "{after:#?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_failing_job_stops_at_its_backoff_limit() -> anyhow::Result<()> {
    busybox_image().await?;
    let c = DockerCluster::start_tuned("job-backoff", 1, |config| {
        config.job.backoff_base = Duration::from_millis(200);
    })
    .await?;
    let mut manifest = job("fail", 1, 1, "exit 1");
    manifest["spec"]["backoffLimit"] = json!(1);
    c.apply(&manifest).await?;
    let failed = eventually_within(JOB_WAIT, "the Job has Failed", || async {
        let j = get_job(&c, "fail").await?;
        has_condition(&j, "Failed").map(|cond| (j, cond))
    })
    .await?;
    let (j, cond) = failed;
    assert_eq!(cond["reason"], "BackoffLimitExceeded", "{j:#}");
    assert_eq!(
        cond["message"],
        "Job has reached the specified backoff limit"
    );
    assert_eq!(j["status"]["failed"], 2);
    assert!(has_condition(&j, "FailureTarget").is_some());
    assert!(has_condition(&j, "Complete").is_none());
    // Many back-offs later, still no third pod.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pods = c.pods("job-name=fail").await?;
    assert_eq!(pods.len(), 2, "{pods:#?}");
    assert!(pods.iter().all(|p| p["status"]["phase"] == "Failed"));
    assert_eq!(events_of(&c, "fail", "BackoffLimitExceeded").await.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_cronjob_every_minute_runs_and_keeps_its_history_limit() -> anyhow::Result<()> {
    busybox_image().await?;
    // One schedule minute lasts 3 real seconds (the controller's test clock).
    let c = DockerCluster::start_tuned("cronjob", 1, |config| {
        config.cronjob.minute = Duration::from_secs(3);
    })
    .await?;
    c.apply(&json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "tick"},
        "spec": {
            "schedule": "* * * * *",
            "successfulJobsHistoryLimit": 1,
            "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": BUSYBOX_IMAGE,
                    "command": ["sh", "-c", "echo tick"]}],
            }}}},
        },
    }))
    .await?;
    let names: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let cj_jobs = |c: &DockerCluster| {
        let client = c.client.clone();
        let ns = c.namespace.clone();
        async move {
            let list = client
                .list(&JOBS, Some(&ns), &ListParams::default())
                .await
                .ok()?;
            Some(list["items"].as_array().cloned().unwrap_or_default())
        }
    };
    let history = eventually_within(
        JOB_WAIT,
        "3 runs, of which only the newest finished one is kept",
        || async {
            let jobs = cj_jobs(&c).await?;
            let mut seen = names.lock().unwrap();
            seen.extend(
                jobs.iter()
                    .filter_map(|j| j["metadata"]["name"].as_str().map(str::to_string)),
            );
            let complete: Vec<&Value> = jobs
                .iter()
                .filter(|j| has_condition(j, "Complete").is_some())
                .collect();
            (seen.len() >= 3 && complete.len() == 1).then(|| jobs.clone())
        },
    )
    .await?;
    let seen = names.lock().unwrap().clone();
    for name in &seen {
        let minutes = name
            .strip_prefix("tick-")
            .and_then(|m| m.parse::<i64>().ok());
        assert!(
            minutes.is_some(),
            "named tick-<minutes since the epoch>: {name}"
        );
    }
    for j in &history {
        assert!(
            j["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
                .is_string(),
            "{j:#}"
        );
        assert_eq!(j["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    }
    // The controller writes its status and Events after the Jobs it creates
    // and deletes, and a slow run may have kept the only finished one so far:
    // wait for them.
    eventually_within(
        JOB_WAIT,
        "the CronJob's status and Events record its runs and a deleted one",
        || async {
            let cj = c
                .client
                .get(&tugboat_api::resource::CRONJOBS, Some(&c.namespace), "tick")
                .await
                .ok()?;
            (cj["status"]["lastScheduleTime"].is_string()
                && cj["status"]["lastSuccessfulTime"].is_string()
                && events_of(&c, "tick", "SuccessfulCreate").await.len() >= 3
                && !events_of(&c, "tick", "SuccessfulDelete").await.is_empty())
            .then_some(())
        },
    )
    .await?;
    // The deleted runs' pods go with them (the garbage collector).
    eventually_within(JOB_WAIT, "only the kept Jobs have pods", || async {
        let jobs = cj_jobs(&c).await?;
        let uids: BTreeSet<String> = jobs
            .iter()
            .filter_map(|j| j["metadata"]["uid"].as_str().map(str::to_string))
            .collect();
        let pods = c.pods("batch.kubernetes.io/job-name").await.ok()?;
        pods.iter()
            .all(|p| {
                p["metadata"]["ownerReferences"][0]["uid"]
                    .as_str()
                    .is_some_and(|u| uids.contains(u))
            })
            .then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn tug_creates_a_job_from_a_cronjob_waits_for_it_and_shows_its_logs() -> anyhow::Result<()> {
    busybox_image().await?;
    let c = DockerCluster::start_tuned("job-cli", 1, |config| {
        config.job.backoff_base = Duration::from_millis(200);
    })
    .await?;
    let url = c.controller.url.clone();
    let ns = c.namespace.clone();
    let run = |args: Vec<String>| {
        let url = url.clone();
        let dir = c.config_dir().to_path_buf();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            tug(&url, &dir, &args).await
        }
    };
    let args = |a: &[&str]| -> Vec<String> {
        // The namespace first: after `--` it would be the container's command.
        ["-n".to_string(), ns.clone()]
            .into_iter()
            .chain(a.iter().map(|s| s.to_string()))
            .collect()
    };
    let out = run(args(&[
        "create",
        "cronjob",
        "greet",
        "--image",
        BUSYBOX_IMAGE,
        "--schedule",
        "@yearly",
        "--",
        "sh",
        "-c",
        "echo hello from greet",
    ]))
    .await?;
    assert_eq!(out.trim(), "cronjob.batch/greet created");
    let out = run(args(&[
        "create",
        "job",
        "greet-now",
        "--from=cronjob/greet",
    ]))
    .await?;
    assert_eq!(out.trim(), "job.batch/greet-now created");
    let j = c.client.get(&JOBS, Some(&ns), "greet-now").await?;
    assert_eq!(
        j["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    assert_eq!(j["metadata"]["ownerReferences"][0]["name"], "greet");

    let out = run(args(&[
        "wait",
        "--for=condition=complete",
        "job/greet-now",
        "--timeout=90s",
    ]))
    .await?;
    assert_eq!(out.trim(), "job.batch/greet-now condition met");
    let j = c.client.get(&JOBS, Some(&ns), "greet-now").await?;
    assert!(
        has_condition(&j, "Complete").is_some(),
        "wait returned early: {j:#}"
    );
    let logs = eventually_within(JOB_WAIT, "the Job's logs", || async {
        let text = run(args(&["logs", "job/greet-now"])).await.ok()?;
        text.contains("hello from greet").then_some(text)
    })
    .await?;
    assert_eq!(logs.trim(), "hello from greet");

    // A Job that never completes: wait gives up with kubectl's words.
    let out = run(args(&[
        "create",
        "job",
        "never",
        "--image",
        BUSYBOX_IMAGE,
        "--",
        "sh",
        "-c",
        "exit 3",
    ]))
    .await?;
    assert_eq!(out.trim(), "job.batch/never created");
    let argv = args(&[
        "wait",
        "--for=condition=complete",
        "jobs/never",
        "--timeout=2s",
    ]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let (code, _, result) = tug_exit(&url, c.config_dir(), &argv).await?;
    assert_eq!(code, 1);
    let err = result.unwrap_err().to_string();
    assert_eq!(err, "timed out waiting for the condition on jobs/never");
    // Deleting is a condition too.
    c.client.delete(&JOBS, Some(&ns), "never").await?;
    let out = run(args(&[
        "wait",
        "--for=delete",
        "job/never",
        "--timeout=30s",
    ]))
    .await?;
    assert_eq!(out.trim(), "job.batch/never condition met");
    Ok(())
}

#[tokio::test]
async fn a_finished_job_with_a_ttl_is_deleted_with_its_pods() -> anyhow::Result<()> {
    busybox_image().await?;
    let c = DockerCluster::start("job-ttl", 1).await?;
    let mut manifest = job("brief", 1, 1, "true");
    manifest["spec"]["ttlSecondsAfterFinished"] = json!(2);
    c.apply(&manifest).await?;
    eventually_within(JOB_WAIT, "the Job is Complete", || async {
        has_condition(&get_job(&c, "brief").await?, "Complete")
    })
    .await?;
    assert_eq!(
        c.pods("job-name=brief").await?.len(),
        1,
        "the finished pod is kept"
    );
    eventually_within(JOB_WAIT, "the Job and its pod are gone", || async {
        let gone = c
            .client
            .get(&JOBS, Some(&c.namespace), "brief")
            .await
            .is_err_and(|e| e.is_not_found());
        (gone && c.pods("job-name=brief").await.ok()?.is_empty()).then_some(())
    })
    .await?;
    Ok(())
}
