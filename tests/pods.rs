//! Pods on real Docker: the containers of a pod share its sandbox's network
//! (localhost) and its emptyDir volumes; init containers run in order, to
//! completion, before the app containers, and a failing one shows as
//! `Init:CrashLoopBackOff`. Each test's containers are removed by the
//! cluster's Drop (by the test's namespace label), even when it fails.

use serde_json::{Value, json};
use tugboat_api::resource::PODS;
use tugboat_tests::docker::{BUSYBOX_IMAGE, DockerCluster, busybox_image};
use tugboat_tests::{eventually, tug};

fn pod(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
}

fn busybox(name: &str, script: &str) -> Value {
    json!({"name": name, "image": BUSYBOX_IMAGE, "imagePullPolicy": "IfNotPresent",
           "command": ["sh", "-c", script],
           "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]})
}

async fn get_pod(c: &DockerCluster, name: &str) -> Option<Value> {
    c.client.get(&PODS, Some(&c.namespace), name).await.ok()
}

/// The pod's emptyDir `shared` on the agent's host.
fn shared_dir(c: &DockerCluster, pod: &Value) -> std::path::PathBuf {
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    c.agent_state_dir(0)
        .join("pods")
        .join(uid)
        .join("volumes/kubernetes.io~empty-dir/shared")
}

#[tokio::test]
async fn two_containers_share_an_empty_dir_and_reach_each_other_on_localhost() -> anyhow::Result<()>
{
    busybox_image().await?;
    let c = DockerCluster::start("pods-share", 1).await?;
    let spec = json!({
        "terminationGracePeriodSeconds": 1,
        "volumes": [{"name": "shared", "emptyDir": {}}],
        "containers": [
            busybox("web", "echo hello > /shared/index.html; exec httpd -f -p 8081 -h /shared"),
            busybox("client", "until wget -qO /shared/got http://127.0.0.1:8081/index.html; do sleep 0.2; done; exec sleep 3600"),
        ]
    });
    c.client
        .create(&PODS, Some(&c.namespace), &pod("pair", spec))
        .await?;
    let p = eventually("the pod runs with a pod IP", || async {
        let p = get_pod(&c, "pair").await?;
        (p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string()).then_some(p)
    })
    .await?;
    let dir = shared_dir(&c, &p);
    let got = eventually(
        "the client fetched the web container's file over localhost",
        || async {
            std::fs::read_to_string(dir.join("got"))
                .ok()
                .filter(|s| !s.is_empty())
        },
    )
    .await?;
    assert_eq!(got, "hello\n");
    // One sandbox holds the pod's network: both containers join it.
    let containers = c.all_containers(true)?;
    let sandboxes = containers
        .iter()
        .filter(|d| d.name.contains("_POD_"))
        .count();
    let names: Vec<&str> = containers.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(sandboxes, 1, "{names:?}");
    c.client.delete(&PODS, Some(&c.namespace), "pair").await?;
    eventually("the pod's containers and volume are gone", || async {
        let left = c.all_containers(false).ok()?;
        (left.is_empty() && !dir.exists()).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn init_containers_run_in_order_before_the_app_and_a_failing_one_crash_loops()
-> anyhow::Result<()> {
    busybox_image().await?;
    let c = DockerCluster::start("pods-init", 1).await?;
    let spec = json!({
        "terminationGracePeriodSeconds": 1,
        "volumes": [{"name": "shared", "emptyDir": {}}],
        "initContainers": [
            busybox("one", "echo one >> /shared/order"),
            busybox("two", "sleep 1; echo two >> /shared/order"),
        ],
        "containers": [busybox("app", "echo app >> /shared/order; exec sleep 3600")]
    });
    c.client
        .create(&PODS, Some(&c.namespace), &pod("ordered", spec))
        .await?;
    let p = eventually("the pod runs after its init containers", || async {
        let p = get_pod(&c, "ordered").await?;
        (p["status"]["phase"] == "Running").then_some(p)
    })
    .await?;
    let order = eventually("the app wrote its line", || async {
        std::fs::read_to_string(shared_dir(&c, &p).join("order"))
            .ok()
            .filter(|s| s.contains("app"))
    })
    .await?;
    assert_eq!(order, "one\ntwo\napp\n");
    let inits = p["status"]["initContainerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(inits.len(), 2);
    for s in &inits {
        assert_eq!(s["state"]["terminated"]["reason"], "Completed", "{s}");
    }
    let initialized = p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Initialized" && c["status"] == "True");
    assert!(initialized, "{}", p["status"]);

    let failing = json!({
        "terminationGracePeriodSeconds": 1,
        "volumes": [{"name": "shared", "emptyDir": {}}],
        "initContainers": [busybox("fails", "exit 3")],
        "containers": [busybox("app", "exec sleep 3600")]
    });
    c.client
        .create(&PODS, Some(&c.namespace), &pod("stuck", failing))
        .await?;
    let server = c.controller.url.clone();
    let status = eventually("tug get pods shows Init:CrashLoopBackOff", || async {
        let out = tug(
            &server,
            c.config_dir(),
            &["get", "pods", "-n", &c.namespace],
        )
        .await
        .ok()?;
        let line = out.lines().find(|l| l.starts_with("stuck "))?.to_string();
        line.contains("Init:CrashLoopBackOff").then_some(line)
    })
    .await?;
    assert!(status.contains("0/1"), "{status}");
    let p = get_pod(&c, "stuck").await.unwrap_or_default();
    assert_eq!(p["status"]["phase"], "Pending");
    assert!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "PodInitializing",
        "{}",
        p["status"]
    );
    let app_started = c
        .containers(false)?
        .iter()
        .any(|d| d.name.contains("_stuck_app_"));
    assert!(
        !app_started,
        "the app container waits for its init containers"
    );
    Ok(())
}

#[tokio::test]
async fn config_maps_and_secrets_reach_env_and_volumes_and_a_mounted_file_follows_edits()
-> anyhow::Result<()> {
    use tugboat_api::resource::{CONFIGMAPS, SECRETS};
    busybox_image().await?;
    let c = DockerCluster::start("pods-objects", 1).await?;
    let ns = c.namespace.clone();
    let spec = json!({
        "terminationGracePeriodSeconds": 1,
        "volumes": [{"name": "shared", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "app-config"}}],
        "containers": [{
            "name": "app", "image": BUSYBOX_IMAGE, "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", "echo \"$PASS $(COLOR)\" > /shared/env; while true; do cat /cfg/color > /shared/mounted; sleep 0.3; done"],
            "env": [
                {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "color"}}}
            ],
            "volumeMounts": [{"name": "shared", "mountPath": "/shared"}, {"name": "cfg", "mountPath": "/cfg"}]
        }]
    });
    c.client
        .create(&PODS, Some(&ns), &pod("conf", spec))
        .await?;
    // The ConfigMap is missing: the pod waits, and says why.
    eventually("a FailedMount naming the missing ConfigMap", || async {
        let events = c
            .client
            .list(&tugboat_api::resource::EVENTS, Some(&ns), &Default::default())
            .await
            .ok()?;
        events["items"].as_array()?.iter().find(|e| {
            e["reason"] == "FailedMount"
                && e["message"]
                    == "MountVolume.SetUp failed for volume \"cfg\" : configmap \"app-config\" not found"
        })?;
        Some(())
    })
    .await?;
    assert_eq!(
        get_pod(&c, "conf").await.unwrap_or_default()["status"]["phase"],
        "Pending"
    );
    let cm = |color: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config"},
               "data": {"color": color}})
    };
    c.client.create(&CONFIGMAPS, Some(&ns), &cm("blue")).await?;
    c.client
        .create(
            &SECRETS,
            Some(&ns),
            &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
                    "data": {"password": "czNjcjN0"}}),
        )
        .await?;
    let p = eventually("the pod runs once its objects exist", || async {
        let p = get_pod(&c, "conf").await?;
        (p["status"]["phase"] == "Running").then_some(p)
    })
    .await?;
    let dir = shared_dir(&c, &p);
    let env = eventually("the env came from the Secret and the ConfigMap", || async {
        std::fs::read_to_string(dir.join("env"))
            .ok()
            .filter(|s| !s.is_empty())
    })
    .await?;
    assert_eq!(env, "s3cr3t blue\n");
    let mut edited = c.client.get(&CONFIGMAPS, Some(&ns), "app-config").await?;
    edited["data"]["color"] = json!("green");
    c.client
        .replace(&CONFIGMAPS, Some(&ns), "app-config", &edited)
        .await?;
    eventually("the mounted file follows the edit", || async {
        let now = std::fs::read_to_string(dir.join("mounted")).ok()?;
        (now == "green").then_some(())
    })
    .await?;
    Ok(())
}
