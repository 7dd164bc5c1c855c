//! The API server over real HTTP: controllers reconcile, conflicts, watches,
//! validation, namespaces and garbage collection, against an in-process controller.

use futures::StreamExt;
use serde_json::{Value, json};
use tugboat_api::resource::{CONFIGMAPS, DEPLOYMENTS, EVENTS, NAMESPACES, PODS, REPLICASETS};
use tugboat_api::{Client, ListParams, PatchType};
use tugboat_tests::{TestController, deployment, eventually, within};

async fn pods_of(client: &Client, ns: &str, app: &str) -> Vec<Value> {
    let params = ListParams {
        label_selector: Some(format!("app={app}")),
        ..Default::default()
    };
    let list = client
        .list(&PODS, Some(ns), &params)
        .await
        .expect("list pods");
    list["items"].as_array().cloned().unwrap_or_default()
}

async fn wait_for_pods(
    client: &Client,
    ns: &str,
    app: &str,
    n: usize,
) -> anyhow::Result<Vec<Value>> {
    eventually(&format!("{n} pods of {app} exist"), || async {
        let pods = pods_of(client, ns, app).await;
        (pods.len() == n).then_some(pods)
    })
    .await
}

#[tokio::test]
async fn a_deployment_makes_a_replica_set_and_pending_pods_owned_by_it() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    let created = c
        .create(
            &DEPLOYMENTS,
            Some("default"),
            &deployment("web", "default", 3),
        )
        .await?;
    assert_eq!(created["metadata"]["generation"], 1);
    assert!(
        created["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );
    assert!(created["metadata"]["creationTimestamp"].is_string());
    assert_eq!(
        created["spec"]["strategy"]["type"], "RollingUpdate",
        "defaults applied"
    );

    let pods = wait_for_pods(c, "default", "web", 3).await?;
    let rs_list = c
        .list(&REPLICASETS, Some("default"), &ListParams::default())
        .await?;
    let rs = &rs_list["items"][0];
    assert_eq!(rs_list["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        rs["metadata"]["ownerReferences"][0]["uid"],
        created["metadata"]["uid"]
    );
    assert_eq!(rs["metadata"]["ownerReferences"][0]["controller"], true);
    for pod in &pods {
        assert_eq!(
            pod["metadata"]["ownerReferences"][0]["uid"],
            rs["metadata"]["uid"]
        );
        assert_eq!(pod["status"]["phase"], "Pending");
        assert!(pod["spec"].get("nodeName").is_none(), "no scheduler yet");
    }
    let d = eventually("the deployment reports 3 replicas", || async {
        let d = c.get(&DEPLOYMENTS, Some("default"), "web").await.ok()?;
        (d["status"]["replicas"] == 3 && d["status"]["observedGeneration"] == 1).then_some(d)
    })
    .await?;
    assert_eq!(d["status"]["updatedReplicas"], 3);
    assert_eq!(d["status"]["availableReplicas"], 0);
    tc.stop().await
}

#[tokio::test]
async fn scaling_through_the_scale_subresource_changes_the_pod_count() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    c.create(
        &DEPLOYMENTS,
        Some("default"),
        &deployment("web", "default", 2),
    )
    .await?;
    wait_for_pods(c, "default", "web", 2).await?;
    let scale = c.scale(&DEPLOYMENTS, Some("default"), "web", 5).await?;
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["spec"]["replicas"], 5);
    wait_for_pods(c, "default", "web", 5).await?;
    let got = c.get_scale(&DEPLOYMENTS, Some("default"), "web").await?;
    assert_eq!(got["status"]["selector"], "app=web");
    c.scale(&DEPLOYMENTS, Some("default"), "web", 1).await?;
    wait_for_pods(c, "default", "web", 1).await?;
    let d = c.get(&DEPLOYMENTS, Some("default"), "web").await?;
    assert_eq!(
        d["metadata"]["generation"], 3,
        "each scale is a spec change"
    );
    let err = c
        .scale(&DEPLOYMENTS, Some("default"), "web", -1)
        .await
        .unwrap_err();
    assert_eq!(err.api().map(|e| e.code), Some(422));
    tc.stop().await
}

#[tokio::test]
async fn deleting_a_deployment_deletes_its_replica_sets_and_pods() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    c.create(
        &DEPLOYMENTS,
        Some("default"),
        &deployment("web", "default", 3),
    )
    .await?;
    wait_for_pods(c, "default", "web", 3).await?;
    c.delete(&DEPLOYMENTS, Some("default"), "web").await?;
    eventually("the replica set and pods are gone", || async {
        let rs = c
            .list(&REPLICASETS, Some("default"), &ListParams::default())
            .await
            .ok()?;
        let pods = pods_of(c, "default", "web").await;
        (rs["items"].as_array()?.is_empty() && pods.is_empty()).then_some(())
    })
    .await?;
    let err = c
        .get(&DEPLOYMENTS, Some("default"), "web")
        .await
        .unwrap_err();
    assert!(err.is_not_found());
    tc.stop().await
}

/// Owner references work across kinds, as users set them: a ConfigMap owned
/// by a Secret goes with it, one owned by something that lives stays.
#[tokio::test]
async fn objects_of_any_kind_go_with_their_owner() -> anyhow::Result<()> {
    use tugboat_api::resource::{CONFIGMAPS, SECRETS};
    let tc = TestController::start().await?;
    let c = &tc.client;
    let owner = c
        .create(
            &SECRETS,
            Some("default"),
            &json!({"metadata": {"name": "owner"}, "stringData": {"k": "v"}}),
        )
        .await?;
    let keeper = c
        .create(
            &SECRETS,
            Some("default"),
            &json!({"metadata": {"name": "keeper"}}),
        )
        .await?;
    for (name, o) in [("owned", &owner), ("kept", &keeper)] {
        let reference = json!([{"apiVersion": "v1", "kind": "Secret",
            "name": o["metadata"]["name"], "uid": o["metadata"]["uid"]}]);
        c.create(
            &CONFIGMAPS,
            Some("default"),
            &json!({"metadata": {"name": name, "ownerReferences": reference}}),
        )
        .await?;
    }
    c.delete(&SECRETS, Some("default"), "owner").await?;
    eventually("the owned ConfigMap is collected", || async {
        c.get(&CONFIGMAPS, Some("default"), "owned")
            .await
            .err()
            .filter(|e| e.is_not_found())
            .map(|_| ())
    })
    .await?;
    c.get(&CONFIGMAPS, Some("default"), "kept").await?;
    tc.stop().await
}

#[tokio::test]
async fn orphan_propagation_keeps_the_dependents() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    c.create(
        &DEPLOYMENTS,
        Some("default"),
        &deployment("web", "default", 1),
    )
    .await?;
    wait_for_pods(c, "default", "web", 1).await?;
    let http = reqwest_delete(
        &tc,
        "/apis/apps/v1/namespaces/default/deployments/web?propagationPolicy=Orphan",
    )
    .await?;
    assert_eq!(http, 200);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let rs = c
        .list(&REPLICASETS, Some("default"), &ListParams::default())
        .await?;
    let items = rs["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "the replica set stays");
    assert!(
        items[0]["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(Vec::is_empty)
    );
    assert_eq!(pods_of(c, "default", "web").await.len(), 1);
    tc.stop().await
}

async fn reqwest_delete(tc: &TestController, path: &str) -> anyhow::Result<u16> {
    let base = &tc.url;
    let out = tokio::process::Command::new("curl")
        .args(tc.curl_args()?)
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "DELETE",
            &format!("{base}{path}"),
        ])
        .output()
        .await?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

#[tokio::test]
async fn an_update_with_a_stale_resource_version_is_a_409_conflict() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    let first = c
        .create(
            &DEPLOYMENTS,
            Some("default"),
            &deployment("web", "default", 0),
        )
        .await?;
    // A read-modify-write as clients do it: the controller's status writes may
    // slip in between, and then the client reads again.
    let updated = loop {
        let mut second = c.get(&DEPLOYMENTS, Some("default"), "web").await?;
        second["spec"]["replicas"] = json!(2);
        match c
            .replace(&DEPLOYMENTS, Some("default"), "web", &second)
            .await
        {
            Ok(updated) => break updated,
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    };
    assert_ne!(
        updated["metadata"]["resourceVersion"],
        first["metadata"]["resourceVersion"]
    );
    assert_eq!(updated["metadata"]["generation"], 2);
    let mut stale = first.clone();
    stale["spec"]["replicas"] = json!(7);
    let err = c
        .replace(&DEPLOYMENTS, Some("default"), "web", &stale)
        .await
        .unwrap_err();
    let api = err.api().expect("an API error");
    assert_eq!((api.code, api.reason.as_str()), (409, "Conflict"));
    assert!(
        api.message.contains("the object has been modified"),
        "{}",
        api.message
    );
    let now = c.get(&DEPLOYMENTS, Some("default"), "web").await?;
    assert_eq!(
        now["spec"]["replicas"], 2,
        "the stale write changed nothing"
    );
    tc.stop().await
}

#[tokio::test]
async fn a_watch_from_an_old_revision_replays_what_came_after_it() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "replay"}});
    let created = c.create(&NAMESPACES, None, &ns).await?;
    let from = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    c.create(&DEPLOYMENTS, Some("replay"), &deployment("a", "replay", 0))
        .await?;
    c.create(&DEPLOYMENTS, Some("replay"), &deployment("b", "replay", 0))
        .await?;
    c.scale(&DEPLOYMENTS, Some("replay"), "a", 0).await?;
    c.patch(
        &DEPLOYMENTS,
        Some("replay"),
        "a",
        &json!({"metadata": {"labels": {"x": "y"}}}),
        PatchType::Merge,
    )
    .await?;
    c.delete(&DEPLOYMENTS, Some("replay"), "b").await?;

    let mut stream = Box::pin(
        c.watch(
            &DEPLOYMENTS,
            Some("replay"),
            &ListParams::default(),
            Some(&from),
        )
        .await?,
    );
    // Keep the user's writes; the controller's status writes interleave with them.
    let mut seen = Vec::new();
    loop {
        let ev = within("a replayed event", stream.next())
            .await?
            .expect("stream open")?;
        let name = ev.object["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let labelled = ev.object["metadata"]["labels"]["x"] == "y";
        let step = match (ev.event_type.as_str(), name.as_str()) {
            ("ADDED", n) => format!("added {n}"),
            ("MODIFIED", "a") if labelled && !seen.contains(&"labelled a".to_string()) => {
                "labelled a".to_string()
            }
            ("DELETED", n) => format!("deleted {n}"),
            _ => continue,
        };
        seen.push(step);
        if seen.last().map(String::as_str) == Some("deleted b") {
            break;
        }
    }
    assert_eq!(seen, ["added a", "added b", "labelled a", "deleted b"]);

    // A live change arrives on the same stream.
    c.create(&DEPLOYMENTS, Some("replay"), &deployment("c", "replay", 0))
        .await?;
    loop {
        let ev = within("a live event", stream.next())
            .await?
            .expect("stream open")?;
        if ev.event_type == "ADDED" && ev.object["metadata"]["name"] == "c" {
            break;
        }
    }
    tc.stop().await
}

/// A label-selector watch from a revision: an object that matched then and was
/// relabelled before the watch began is still sent as DELETED (an informer
/// would otherwise keep it forever), as is one that stops matching while watched;
/// one that starts matching comes as ADDED.
#[tokio::test]
async fn a_selector_watch_sends_deleted_when_an_object_stops_matching() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    let mut a = deployment("a", "default", 0);
    a["metadata"]["labels"] = json!({"team": "x"});
    let mut b = deployment("b", "default", 0);
    b["metadata"]["labels"] = json!({"team": "x"});
    c.create(&DEPLOYMENTS, Some("default"), &a).await?;
    c.create(&DEPLOYMENTS, Some("default"), &b).await?;
    let params = ListParams {
        label_selector: Some("team=x".into()),
        ..Default::default()
    };
    let listed = c.list(&DEPLOYMENTS, Some("default"), &params).await?;
    let rv = listed["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let relabel = |name: &'static str, team: &'static str| async move {
        c.patch(
            &DEPLOYMENTS,
            Some("default"),
            name,
            &json!({"metadata": {"labels": {"team": team}}}),
            PatchType::Merge,
        )
        .await
    };
    // Between the list and the watch: `a` leaves the selection.
    relabel("a", "y").await?;
    let mut stream = Box::pin(
        c.watch(&DEPLOYMENTS, Some("default"), &params, Some(&rv))
            .await?,
    );
    let mut next = async || -> anyhow::Result<(String, String)> {
        loop {
            let ev = within("a watch event", stream.next())
                .await?
                .expect("stream open")?;
            // The controller's status writes on matching objects come as MODIFIED.
            if ev.event_type != "MODIFIED" {
                let name = ev.object["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                return Ok((ev.event_type, name));
            }
        }
    };
    assert_eq!(next().await?, ("DELETED".into(), "a".into()));
    relabel("b", "y").await?;
    assert_eq!(next().await?, ("DELETED".into(), "b".into()));
    relabel("a", "x").await?;
    assert_eq!(next().await?, ("ADDED".into(), "a".into()));
    tc.stop().await
}

/// The store encodes each object once, when it is written, and a plain JSON
/// watch, get and list send those bytes: every frame parses to the object as
/// written, escapes, non-ASCII text and all; other shapes still get their own.
#[tokio::test]
async fn watch_frames_gets_and_lists_send_the_stored_objects_unchanged() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    let http = tc.http(false)?;
    let base = c.base_url().to_string();
    let before = c
        .list(&CONFIGMAPS, Some("default"), &ListParams::default())
        .await?["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "frames", "namespace": "default", "labels": {"app": "frames"}},
        "data": {"quote": "say \"hi\"\n\t\\ </script>", "unicode": "grüße 🚢 \u{2028}", "n": "1e400"},
    });
    let created = c.create(&CONFIGMAPS, Some("default"), &cm).await?;
    cm["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"].clone();
    cm["data"]["more"] = json!("ü".repeat(3000));
    let replaced = c
        .replace(&CONFIGMAPS, Some("default"), "frames", &cm)
        .await?;
    assert_eq!(
        c.get(&CONFIGMAPS, Some("default"), "frames").await?,
        replaced
    );
    let listed = c
        .list(&CONFIGMAPS, Some("default"), &ListParams::default())
        .await?;
    let items = listed["items"].as_array().cloned().unwrap_or_default();
    assert!(items.contains(&replaced), "{listed}");
    assert_eq!(listed["kind"], "ConfigMapList");
    c.delete(&CONFIGMAPS, Some("default"), "frames").await?;

    let url = format!(
        "{base}/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={before}&timeoutSeconds=2"
    );
    let body = within("the watch", async {
        http.get(&url).send().await?.text().await
    })
    .await??;
    let frames: Vec<Value> = body
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let ours: Vec<&Value> = frames
        .iter()
        .filter(|f| f["object"]["metadata"]["name"] == "frames")
        .collect();
    assert_eq!(ours.len(), 3, "{body}");
    assert_eq!(
        (&ours[0]["type"], &ours[0]["object"]),
        (&json!("ADDED"), &created)
    );
    assert_eq!(
        (&ours[1]["type"], &ours[1]["object"]),
        (&json!("MODIFIED"), &replaced)
    );
    assert_eq!(ours[2]["type"], "DELETED");
    let mut last = replaced.clone();
    last["metadata"]["resourceVersion"] = ours[2]["object"]["metadata"]["resourceVersion"].clone();
    assert_eq!(ours[2]["object"], last);

    // A Table watch is still made for the watcher.
    let table = within("the table watch", async {
        http.get(&url)
            .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
            .send()
            .await?
            .text()
            .await
    })
    .await??;
    let first: Value = serde_json::from_str(table.lines().next().unwrap_or(""))?;
    assert_eq!(first["object"]["kind"], "Table", "{table}");
    tc.stop().await
}

/// A streaming list: the current objects, then a BOOKMARK annotated as the end
/// of the initial events at the list's revision; then live events.
#[tokio::test]
async fn send_initial_events_ends_with_an_annotated_bookmark() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let http = tc.http(false)?;
    let base = tc.client.base_url().to_string();
    tc.client
        .create(
            &DEPLOYMENTS,
            Some("default"),
            &deployment("s", "default", 0),
        )
        .await?;
    let url = format!(
        "{base}/apis/apps/v1/namespaces/default/deployments?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=5"
    );
    let body = within("the streaming list", async {
        http.get(&url).send().await?.text().await
    })
    .await??;
    let events: Vec<Value> = body
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(events[0]["type"], "ADDED", "{body}");
    assert_eq!(events[0]["object"]["metadata"]["name"], "s");
    let end = events
        .iter()
        .position(|e| e["type"] == "BOOKMARK")
        .expect("a bookmark");
    assert_eq!(
        events[end]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(events[end]["object"]["kind"], "Deployment");
    // Without allowWatchBookmarks it is refused, as kube-apiserver refuses it.
    let refused = http
        .get(url.replace("allowWatchBookmarks=true", "allowWatchBookmarks=false"))
        .send()
        .await?;
    assert_eq!(refused.status().as_u16(), 400);
    tc.stop().await
}

#[tokio::test]
async fn a_watch_without_a_revision_starts_with_the_current_objects() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    c.create(
        &DEPLOYMENTS,
        Some("default"),
        &deployment("a", "default", 0),
    )
    .await?;
    let mut stream = Box::pin(
        c.watch(&DEPLOYMENTS, Some("default"), &ListParams::default(), None)
            .await?,
    );
    let ev = within("the initial event", stream.next())
        .await?
        .expect("stream open")?;
    assert_eq!(ev.event_type, "ADDED");
    assert_eq!(ev.object["metadata"]["name"], "a");
    tc.stop().await
}

#[tokio::test]
async fn invalid_manifests_are_refused_with_the_field_named_and_nothing_stored()
-> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Mutation, u16, &str)> = vec![
        (
            "negative replicas",
            Box::new(|d| d["spec"]["replicas"] = json!(-1)),
            422,
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        ),
        (
            "bad name",
            Box::new(|d| d["metadata"]["name"] = json!("Web_1")),
            422,
            "metadata.name: Invalid value: \"Web_1\"",
        ),
        (
            "no image",
            Box::new(|d| {
                d["spec"]["template"]["spec"]["containers"][0]
                    .as_object_mut()
                    .map(|c| c.remove("image"))
                    .map(|_| ())
                    .unwrap_or(())
            }),
            422,
            "spec.template.spec.containers[0].image: Required value",
        ),
        (
            "no container name",
            Box::new(|d| {
                d["spec"]["template"]["spec"]["containers"][0]
                    .as_object_mut()
                    .map(|c| c.remove("name"))
                    .map(|_| ())
                    .unwrap_or(())
            }),
            422,
            "spec.template.spec.containers[0].name: Required value",
        ),
        (
            "selector mismatch",
            Box::new(|d| d["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"})),
            422,
            "`selector` does not match template `labels`",
        ),
        (
            "typo",
            Box::new(|d| d["spec"]["replcas"] = json!(3)),
            400,
            "unknown field \"spec.replcas\"",
        ),
        (
            "wrong type",
            Box::new(|d| d["spec"]["replicas"] = json!("three")),
            400,
            "spec.replicas",
        ),
    ];
    for (what, mutate, code, text) in cases {
        let mut d = deployment("web", "default", 1);
        mutate(&mut d);
        let before = tc
            .client
            .list(&DEPLOYMENTS, None, &ListParams::default())
            .await?["metadata"]["resourceVersion"]
            .clone();
        let err = c
            .create(&DEPLOYMENTS, Some("default"), &d)
            .await
            .unwrap_err();
        let api = err
            .api()
            .unwrap_or_else(|| panic!("{what}: not an API error: {err}"));
        assert_eq!(api.code, code, "{what}: {}", api.message);
        assert!(
            api.message.contains(text),
            "{what}: {:?} lacks {text:?}",
            api.message
        );
        if code == 422 {
            assert_eq!(api.reason, "Invalid", "{what}");
            assert!(!api.causes.is_empty(), "{what}: a 422 lists its causes");
        }
        let after = tc
            .client
            .list(&DEPLOYMENTS, None, &ListParams::default())
            .await?;
        assert_eq!(
            after["items"].as_array().map(Vec::len),
            Some(0),
            "{what}: nothing stored"
        );
        assert_eq!(
            after["metadata"]["resourceVersion"], before,
            "{what}: no write at all"
        );
    }
    tc.stop().await
}

#[tokio::test]
async fn an_update_that_fails_validation_leaves_the_stored_object_alone() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    c.create(
        &DEPLOYMENTS,
        Some("default"),
        &deployment("web", "default", 2),
    )
    .await?;
    let err = c
        .patch(
            &DEPLOYMENTS,
            Some("default"),
            "web",
            &json!({"spec": {"replicas": -3}}),
            PatchType::Merge,
        )
        .await
        .unwrap_err();
    assert_eq!(err.api().map(|e| e.code), Some(422));
    assert_eq!(
        c.get(&DEPLOYMENTS, Some("default"), "web").await?["spec"]["replicas"],
        2
    );
    tc.stop().await
}

#[tokio::test]
async fn unknown_fields_may_be_let_through_with_a_warning() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let mut d = deployment("web", "default", 1);
    d["spec"]["replcas"] = json!(3);
    let out = tokio::process::Command::new("curl")
        .args(tc.curl_args()?)
        .args([
            "-s",
            "-D",
            "-",
            "-H",
            "Content-Type: application/json",
            "-d",
            &d.to_string(),
        ])
        .arg(format!(
            "{}/apis/apps/v1/namespaces/default/deployments?fieldValidation=Warn",
            tc.url
        ))
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    // curl asks for HTTP/2 over TLS, and gets it.
    assert!(
        text.starts_with("HTTP/2 201") || text.starts_with("HTTP/1.1 201"),
        "{text}"
    );
    assert!(
        text.to_ascii_lowercase()
            .contains("warning: 299 - \"unknown field \\\"spec.replcas\\\"\""),
        "{text}"
    );
    tc.stop().await
}

#[tokio::test]
async fn namespaces_must_exist_and_deleting_one_deletes_its_contents() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    let err = c
        .create(
            &DEPLOYMENTS,
            Some("nowhere"),
            &deployment("web", "nowhere", 1),
        )
        .await
        .unwrap_err();
    let api = err.api().expect("API error");
    assert_eq!(api.code, 404);
    assert_eq!(api.message, "namespaces \"nowhere\" not found");

    let default = c.get(&NAMESPACES, None, "default").await?;
    assert_eq!(default["status"]["phase"], "Active");

    c.create(
        &NAMESPACES,
        None,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
    )
    .await?;
    c.create(&DEPLOYMENTS, Some("team"), &deployment("web", "team", 2))
        .await?;
    wait_for_pods(c, "team", "web", 2).await?;
    let deleted = c.delete(&NAMESPACES, None, "team").await?;
    assert_eq!(deleted["status"]["phase"], "Terminating");
    eventually("the namespace and everything in it are gone", || async {
        let gone = c.get(&NAMESPACES, None, "team").await.err()?.is_not_found();
        let pods = pods_of(c, "team", "web").await;
        let deploys = c
            .list(&DEPLOYMENTS, Some("team"), &ListParams::default())
            .await
            .ok()?;
        (gone && pods.is_empty() && deploys["items"].as_array()?.is_empty()).then_some(())
    })
    .await?;
    tc.stop().await
}

#[tokio::test]
async fn errors_are_kubernetes_status_objects() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let status = tc
        .client
        .get_path("/apis/apps/v1/namespaces/default/deployments/missing")
        .await;
    let err = status.unwrap_err();
    let api = err.api().expect("API error");
    assert_eq!((api.code, api.reason.as_str()), (404, "NotFound"));
    assert_eq!(api.message, "deployments.apps \"missing\" not found");
    let raw = tokio::process::Command::new("curl")
        .args(tc.curl_args()?)
        .args([
            "-s",
            &format!(
                "{}/apis/apps/v1/namespaces/default/deployments/missing",
                tc.url
            ),
        ])
        .output()
        .await?;
    let body: Value = serde_json::from_slice(&raw.stdout)?;
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["apiVersion"], "v1");
    assert_eq!(body["status"], "Failure");
    assert_eq!(body["code"], 404);
    assert_eq!(body["details"]["name"], "missing");
    tc.stop().await
}

#[tokio::test]
async fn selectors_filter_lists() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    c.create(
        &DEPLOYMENTS,
        Some("default"),
        &deployment("a", "default", 2),
    )
    .await?;
    c.create(
        &DEPLOYMENTS,
        Some("default"),
        &deployment("b", "default", 1),
    )
    .await?;
    wait_for_pods(c, "default", "a", 2).await?;
    wait_for_pods(c, "default", "b", 1).await?;
    let params = ListParams {
        label_selector: Some("app in (a,b)".into()),
        field_selector: Some("status.phase=Pending,spec.nodeName=".into()),
    };
    let all = c.list(&PODS, None, &params).await?;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(3));
    let by_name = ListParams {
        field_selector: Some("metadata.name=a".into()),
        ..Default::default()
    };
    assert_eq!(
        c.list(&DEPLOYMENTS, Some("default"), &by_name).await?["items"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let bad = ListParams {
        label_selector: Some("app in a".into()),
        ..Default::default()
    };
    assert_eq!(
        c.list(&PODS, None, &bad)
            .await
            .unwrap_err()
            .api()
            .map(|e| e.code),
        Some(400)
    );
    tc.stop().await
}

#[tokio::test]
async fn scaling_records_events_about_the_deployment() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    c.create(
        &DEPLOYMENTS,
        Some("default"),
        &deployment("web", "default", 2),
    )
    .await?;
    let params = ListParams {
        field_selector: Some("involvedObject.kind=Deployment,involvedObject.name=web".into()),
        ..Default::default()
    };
    let events = eventually("a ScalingReplicaSet event exists", || async {
        let list = c.list(&EVENTS, Some("default"), &params).await.ok()?;
        let items = list["items"].as_array()?.clone();
        (!items.is_empty()).then_some(items)
    })
    .await?;
    assert_eq!(events[0]["reason"], "ScalingReplicaSet");
    assert!(
        events[0]["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("Scaled up replica set web-"),
        "{}",
        events[0]["message"]
    );
    tc.stop().await
}

#[tokio::test]
async fn changing_the_template_rolls_to_a_new_replica_set() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    c.create(
        &DEPLOYMENTS,
        Some("default"),
        &deployment("web", "default", 2),
    )
    .await?;
    wait_for_pods(c, "default", "web", 2).await?;
    let patch = json!({"spec": {"strategy": {"type": "Recreate", "rollingUpdate": null}, "template": {"spec": {"containers": [{"name": "web", "image": "tugboat/sample:v2"}]}}}});
    c.patch(
        &DEPLOYMENTS,
        Some("default"),
        "web",
        &patch,
        PatchType::Merge,
    )
    .await?;
    eventually("two replica sets, the new one with the pods", || async {
        let list = c
            .list(&REPLICASETS, Some("default"), &ListParams::default())
            .await
            .ok()?;
        let items = list["items"].as_array()?.clone();
        let new = items.iter().find(|rs| {
            rs["spec"]["template"]["spec"]["containers"][0]["image"] == "tugboat/sample:v2"
        })?;
        let old = items.iter().find(|rs| {
            rs["spec"]["template"]["spec"]["containers"][0]["image"] == "tugboat/sample:latest"
        })?;
        (new["spec"]["replicas"] == 2
            && old["spec"]["replicas"] == 0
            && new["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2")
            .then_some(())
    })
    .await?;
    let pods = wait_for_pods(c, "default", "web", 2).await?;
    assert!(
        pods.iter()
            .all(|p| p["spec"]["containers"][0]["image"] == "tugboat/sample:v2")
    );
    tc.stop().await
}

#[tokio::test]
async fn fields_accepted_but_not_acted_on_are_named_in_warnings() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let mut d = deployment("web", "default", 0);
    // emptyDir is served; a PersistentVolumeClaim is not.
    d["spec"]["template"]["spec"]["volumes"] = json!([
        {"name": "data", "emptyDir": {}},
        {"name": "claim", "persistentVolumeClaim": {"claimName": "c"}}
    ]);
    d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "data", "mountPath": "/data"}]);
    tc.client.create(&DEPLOYMENTS, Some("default"), &d).await?;
    let warnings = tc.client.take_warnings();
    assert_eq!(
        warnings,
        vec![
            "spec.template.spec.volumes[1].persistentVolumeClaim: accepted but not acted on by Tugboat yet",
        ]
    );
    assert!(tc.client.take_warnings().is_empty(), "taken once");
    tc.stop().await
}

#[tokio::test]
async fn events_expire_after_the_event_ttl() -> anyhow::Result<()> {
    let tc =
        TestController::start_tuned(|c| c.event_ttl = std::time::Duration::from_secs(2)).await?;
    let c = &tc.client;
    let now = tugboat_api::meta::now_rfc3339();
    let event = json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "web.1", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
        "reason": "Tested", "message": "expires", "type": "Normal", "count": 1,
        "firstTimestamp": now, "lastTimestamp": now});
    c.create(&EVENTS, Some("default"), &event).await?;
    // An old one goes at once; a fresh one about two seconds later.
    let mut old = event.clone();
    old["metadata"]["name"] = json!("web.0");
    old["firstTimestamp"] = json!("2020-01-01T00:00:00Z");
    old["lastTimestamp"] = json!("2020-01-01T00:00:00Z");
    c.create(&EVENTS, Some("default"), &old).await?;
    let names = |list: Value| -> Vec<String> {
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    };
    eventually("the old event is deleted", || async {
        let list = c
            .list(&EVENTS, Some("default"), &Default::default())
            .await
            .ok()?;
        let names = names(list);
        (!names.contains(&"web.0".to_string())).then_some(names)
    })
    .await?;
    eventually(
        "the fresh event is deleted once its TTL is past",
        || async {
            let list = c
                .list(&EVENTS, Some("default"), &Default::default())
                .await
                .ok()?;
            names(list).is_empty().then_some(())
        },
    )
    .await?;
    tc.stop().await
}

/// Writes past `--max-mutating-requests-inflight` wait their turn rather than
/// fail: with one slot, 40 creates sent at once all succeed.
#[tokio::test]
async fn writes_past_the_in_flight_limit_wait_their_turn_and_all_succeed() -> anyhow::Result<()> {
    let tc = TestController::start_tuned(|c| c.max_mutating_inflight = 1).await?;
    let creates = (0..40).map(|i| {
        let client = tc.client.clone();
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("cm-{i}")}, "data": {"i": i.to_string()}});
        async move { client.create(&CONFIGMAPS, Some("default"), &cm).await }
    });
    for r in within("40 creates", futures::future::join_all(creates)).await? {
        r?;
    }
    let list = tc
        .client
        .list(&CONFIGMAPS, Some("default"), &ListParams::default())
        .await?;
    let names = tugboat_tests::names_in(&list);
    let stored = (0..40)
        .filter(|i| names.contains(&format!("cm-{i}")))
        .count();
    assert_eq!(stored, 40, "every create was stored: {names:?}");
    Ok(())
}
