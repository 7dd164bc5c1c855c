//! Hostile and careless input over real HTTP, one test per defect found by trying
//! the controller as an attacker would (issue 8). Each test sends the input and
//! checks that the answer is a Kubernetes `Status` naming the field or parameter,
//! that the store did not move (its revision is unchanged), that the server still
//! answers other clients, and that the controller restarts cleanly on the same
//! data afterwards.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tugboat_agent::runtime::fake::FakeRuntime;
use tugboat_api::resource::{DEPLOYMENTS, NAMESPACES, NODES, PODS};
use tugboat_tests::fake_agent::FakeAgent;
use tugboat_tests::{TestController, deployment, eventually, within};

/// A controller on a data directory the test owns, so it can be restarted on it.
struct Cluster {
    dir: tempfile::TempDir,
    tc: Option<TestController>,
    http: reqwest::Client,
}

/// What the server answered.
struct Answer {
    code: u16,
    body: Value,
    text: String,
    headers: reqwest::header::HeaderMap,
}

impl Cluster {
    async fn start() -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let tc = TestController::start_in(dir.path()).await?;
        Ok(Cluster {
            dir,
            http: tc.http(false)?,
            tc: Some(tc),
        })
    }

    fn tc(&self) -> &TestController {
        self.tc.as_ref().expect("the controller is running")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.tc().url)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> anyhow::Result<Answer> {
        let resp = self
            .http
            .request(method, self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await?;
        let code = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer {
            code,
            body,
            text,
            headers,
        })
    }

    /// `send` with `body` as JSON.
    async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<Answer> {
        self.send(method, path, content_type, serde_json::to_vec(body)?)
            .await
    }

    async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.send(reqwest::Method::GET, path, "application/json", "")
            .await
    }

    /// The store's revision once the controllers have stopped writing (the same
    /// for 400 ms), as the baseline a refused request must not move.
    async fn settled_revision(&self) -> anyhow::Result<u64> {
        let mut last = self.revision().await?;
        let mut stable_since = tokio::time::Instant::now();
        let deadline = stable_since + tugboat_tests::WAIT;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.revision().await?;
            if now != last {
                last = now;
                stable_since = tokio::time::Instant::now();
            } else if stable_since.elapsed() >= Duration::from_millis(400) {
                return Ok(now);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the store never settled"
            );
        }
    }

    /// The store's revision: any list answers it as its resourceVersion.
    async fn revision(&self) -> anyhow::Result<u64> {
        let a = self.get("/api/v1/namespaces").await?;
        Ok(a.body["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .parse()?)
    }

    /// PATCH the test's Deployment `web`, with `query` (`""` or `?…`).
    async fn patch_web(
        &self,
        query: &str,
        content_type: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<Answer> {
        self.send_json(
            reqwest::Method::PATCH,
            &format!("{DEPLOY_PATH}/web{query}"),
            content_type,
            body,
        )
        .await
    }

    /// How every refused request ends: the store did not move from `rev`, other
    /// clients are still served, and the controller restarts cleanly.
    async fn changed_nothing_since(&mut self, rev: u64) -> anyhow::Result<()> {
        assert_eq!(self.revision().await?, rev, "a refused request wrote");
        self.still_serves().await?;
        self.restarts_cleanly().await
    }

    /// Another client is still served: discovery and a list both answer.
    async fn still_serves(&self) -> anyhow::Result<()> {
        let a = within("the server to answer /readyz", self.get("/readyz")).await??;
        anyhow::ensure!(a.code == 200, "readyz answered {}", a.code);
        let a = self.get("/api/v1/namespaces/default/pods").await?;
        anyhow::ensure!(
            a.code == 200,
            "a pod list answered {}: {}",
            a.code,
            short(&a.text)
        );
        Ok(())
    }

    /// Stops the controller and starts it again on the same data; it must come up
    /// with the same revision.
    async fn restarts_cleanly(&mut self) -> anyhow::Result<()> {
        let before = self.revision().await?;
        if let Some(tc) = self.tc.take() {
            tc.stop().await?;
        }
        let tc = TestController::start_in(self.dir.path()).await?;
        self.tc = Some(tc);
        let after = self.revision().await?;
        anyhow::ensure!(
            after >= before,
            "the revision went back from {before} to {after} over a restart"
        );
        self.still_serves().await
    }
}

/// At most the first 600 characters of a body, for assertion messages.
fn short(text: &str) -> String {
    text.chars().take(600).collect()
}

/// Checks that `a` is a Kubernetes `Status` with `code` whose message mentions
/// every one of `needles`.
fn assert_status(a: &Answer, code: u16, needles: &[&str]) {
    assert_eq!(
        a.code,
        code,
        "expected HTTP {code}, got {}: {}",
        a.code,
        short(&a.text)
    );
    assert_eq!(a.body["kind"], "Status", "not a Status: {}", short(&a.text));
    assert_eq!(a.body["code"], code, "{}", short(&a.text));
    let message = a.body["message"].as_str().unwrap_or("");
    for n in needles {
        assert!(
            message.contains(n),
            "the message does not name {n:?}: {message}"
        );
    }
}

fn nested(depth: usize) -> Value {
    let mut v = json!({});
    for _ in 0..depth {
        v = json!({ "f:a": v });
    }
    v
}

async fn create_deployment(c: &Cluster, name: &str) -> anyhow::Result<()> {
    c.tc()
        .client
        .create(
            &DEPLOYMENTS,
            Some("default"),
            &deployment(name, "default", 0),
        )
        .await?;
    Ok(())
}

const DEPLOY_PATH: &str = "/apis/apps/v1/namespaces/default/deployments";

// ---------------------------------------------------------------------------
// 1. Crash from one request: a JSON patch whose copy operations double the object.

#[tokio::test]
async fn a_json_patch_of_copies_that_double_the_object_is_refused() -> anyhow::Result<()> {
    let mut c = Cluster::start().await?;
    create_deployment(&c, "web").await?;
    let rev = c.settled_revision().await?;
    // Each copy doubles /spec: 40 of them would need 2^40 times its size.
    let ops: Vec<Value> = (0..40)
        .map(|i| json!({"op": "copy", "from": "/spec", "path": format!("/spec/x{i}")}))
        .collect();
    let a = c.patch_web("", "application/json-patch+json", &ops).await?;
    assert_status(&a, 422, &["copy from spec to spec.x", "262144 bytes"]);
    c.changed_nothing_since(rev).await
}

#[tokio::test]
async fn copies_that_nest_managed_fields_into_themselves_do_not_crash_the_server()
-> anyhow::Result<()> {
    let mut c = Cluster::start().await?;
    create_deployment(&c, "web").await?;
    let rev = c.settled_revision().await?;
    // managedFields are added, then copied into their own deepest point again and
    // again: every copy doubles the depth (2^11 levels after eleven of them).
    let field = "/metadata/managedFields/0/fieldsV1";
    let mut ops = vec![
        json!({"op": "add", "path": "/metadata/managedFields", "value": [{
            "manager": "m", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}
        }]}),
    ];
    let mut chain = 0usize;
    for _ in 0..11 {
        ops.push(json!({"op": "copy", "from": field,
                        "path": format!("{field}{}/f:x", "/f:x".repeat(chain))}));
        chain = 2 * chain + 1;
    }
    let a = c.patch_web("", "application/json-patch+json", &ops).await?;
    assert_status(&a, 422, &["metadata.managedFields[0].fieldsV1", "levels"]);
    c.changed_nothing_since(rev).await
}

// ---------------------------------------------------------------------------
// 2. Store poisoning: an object nested deeper than the decoder reads back.

#[tokio::test]
async fn an_object_nested_deeper_than_the_decoder_reads_is_refused_and_the_store_reopens()
-> anyhow::Result<()> {
    let mut c = Cluster::start().await?;
    create_deployment(&c, "web").await?;
    let rev = c.settled_revision().await?;
    // Adds of 50 levels each, one inside the other: no body is deep, the object
    // they build would be.
    let ops = vec![
        json!({"op": "add", "path": "/spec/deep", "value": nested(50)}),
        json!({"op": "add", "path": format!("/spec/deep{}/f:b", "/f:a".repeat(50)), "value": nested(50)}),
    ];
    let a = c
        .patch_web(
            "?fieldValidation=Ignore",
            "application/json-patch+json",
            &ops,
        )
        .await?;
    assert_status(&a, 422, &["spec.deep", "levels"]);
    // The same through managedFields, which updates used to keep.
    let ops = vec![
        json!({"op": "add", "path": "/metadata/managedFields", "value": [{
            "manager": "m", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": nested(50)
        }]}),
        json!({"op": "add", "path": format!("/metadata/managedFields/0/fieldsV1{}/f:b", "/f:a".repeat(50)), "value": nested(50)}),
    ];
    let a = c.patch_web("", "application/json-patch+json", &ops).await?;
    assert_status(&a, 422, &["metadata.managedFields", "levels"]);
    // A body just below serde_json's own limit is refused for its depth too.
    let mut body = deployment("deep", "default", 0);
    body["spec"]["template"]["metadata"]["annotations"] = json!({});
    body["metadata"]["labels"] = json!({"a": "b"});
    body["spec"]["x"] = nested(110);
    let a = c
        .send_json(
            reqwest::Method::POST,
            DEPLOY_PATH,
            "application/json",
            &body,
        )
        .await?;
    assert_status(&a, 400, &["levels"]);
    c.changed_nothing_since(rev).await
}

// ---------------------------------------------------------------------------
// 3. SSRF through the logs proxy.

/// A plain TCP server that records the request lines it gets and answers each with
/// `response`.
struct Recorder {
    port: u16,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start(response: String) -> anyhow::Result<Recorder> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let log = log.clone();
                let response = response.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).to_string();
                    log.lock()
                        .unwrap()
                        .push(head.lines().next().unwrap_or("").to_string());
                    let _ = s.write_all(response.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Ok(Recorder { port, seen, task })
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn ok_response(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn node(name: &str, address: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name},
        "status": {
            "addresses": [{"type": "InternalIP", "address": address}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        }
    })
}

fn bound_pod(name: &str, node: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "tugboat/sample:latest"}]}
    })
}

#[tokio::test]
async fn the_logs_proxy_cannot_be_pointed_at_another_url() -> anyhow::Result<()> {
    let mut c = Cluster::start().await?;
    let secret = Recorder::start(ok_response("SECRET")).await?;
    let client = &c.tc().client;

    // An address that smuggles a path into the URL is refused as a Node address
    // (the node's own credential sets it; nobody else may).
    let evil = c.tc().node_client("evil").await?;
    let rev = c.settled_revision().await?;
    let bad = node(
        "evil",
        &format!("127.0.0.1:{}/secret?x=", secret.port),
        10250,
    );
    let err = evil
        .create(&NODES, None, &bad)
        .await
        .expect_err("a Node address with a path");
    let api = err.api().expect("a Status");
    assert_eq!(api.code, 422, "{api:?}");
    assert!(
        api.message.contains("status.addresses[0].address"),
        "{api:?}"
    );
    let a = c
        .send_json(
            reqwest::Method::POST,
            "/api/v1/nodes",
            "application/json",
            &node("evil", "127.0.0.1", secret.port),
        )
        .await?;
    assert_status(&a, 403, &["status.addresses", "only node evil"]);
    assert_eq!(c.revision().await?, rev);

    // A node whose "agent" is some other server: its answer is not relayed (the
    // controller's TLS check wants the node's own certificate).
    let other = c.tc().node_client("other").await?;
    other
        .create(&NODES, None, &node("other", "127.0.0.1", secret.port))
        .await?;
    client
        .create(&PODS, Some("default"), &bound_pod("p1", "other"))
        .await?;
    let a = c.get("/api/v1/namespaces/default/pods/p1/log").await?;
    assert!(a.code >= 500, "{} {}", a.code, short(&a.text));
    assert!(!a.text.contains("SECRET"), "relayed: {}", short(&a.text));
    assert_eq!(a.body["kind"], "Status", "{}", short(&a.text));

    // An "agent" answering with a redirect is not followed (nor even asked:
    // it holds no certificate of the node's).
    let target = Recorder::start(ok_response("SECRET2")).await?;
    let redirect = Recorder::start(format!(
        "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{}/secret\r\nx-tugboat-agent: redirector\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        target.port
    ))
    .await?;
    let redirector = c.tc().node_client("redirector").await?;
    redirector
        .create(
            &NODES,
            None,
            &node("redirector", "127.0.0.1", redirect.port),
        )
        .await?;
    client
        .create(&PODS, Some("default"), &bound_pod("p2", "redirector"))
        .await?;
    let a = c.get("/api/v1/namespaces/default/pods/p2/log").await?;
    assert!(a.code >= 400, "{} {}", a.code, short(&a.text));
    assert!(!a.text.contains("SECRET2"), "followed: {}", short(&a.text));
    assert!(target.seen().is_empty(), "followed to {:?}", target.seen());
    assert!(
        redirect
            .seen()
            .iter()
            .all(|line| !line.contains("containerLogs")),
        "the request reached a server without the node's certificate: {:?}",
        redirect.seen()
    );
    c.still_serves().await?;
    c.restarts_cleanly().await
}

// ---------------------------------------------------------------------------
// 4. dryRun=All on DELETE.

#[tokio::test]
async fn a_dry_run_delete_deletes_nothing() -> anyhow::Result<()> {
    let mut c = Cluster::start().await?;
    let client = &c.tc().client;
    client
        .create(&PODS, Some("default"), &bound_pod("p", "nowhere"))
        .await?;
    client
        .create(
            &NAMESPACES,
            None,
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
        )
        .await?;
    create_deployment(&c, "web").await?;
    let rev = c.settled_revision().await?;
    for path in [
        "/api/v1/namespaces/default/pods/p?dryRun=All".to_string(),
        "/api/v1/namespaces/team?dryRun=All".to_string(),
        format!("{DEPLOY_PATH}/web?dryRun=All"),
    ] {
        let a = c
            .send(reqwest::Method::DELETE, &path, "application/json", "")
            .await?;
        assert!(
            a.code == 200 || a.code == 202,
            "{path}: {} {}",
            a.code,
            short(&a.text)
        );
    }
    // The same through DeleteOptions in the body.
    let a = c
        .send_json(reqwest::Method::DELETE, "/api/v1/namespaces/default/pods/p", "application/json", &json!({"kind": "DeleteOptions", "apiVersion": "v1", "dryRun": ["All"], "gracePeriodSeconds": 0}))
        .await?;
    assert!(
        a.code == 200 || a.code == 202,
        "{} {}",
        a.code,
        short(&a.text)
    );
    assert_eq!(c.revision().await?, rev, "a dry run wrote something");
    let pod = client.get(&PODS, Some("default"), "p").await?;
    assert!(pod["metadata"].get("deletionTimestamp").is_none());
    let ns = client.get(&NAMESPACES, None, "team").await?;
    assert_eq!(ns["status"]["phase"], "Active");
    client.get(&DEPLOYMENTS, Some("default"), "web").await?;
    let a = c
        .send(
            reqwest::Method::DELETE,
            "/api/v1/namespaces/default/pods/p?dryRun=Some",
            "application/json",
            "",
        )
        .await?;
    assert_status(&a, 400, &["dryRun"]);
    c.still_serves().await?;
    c.restarts_cleanly().await
}

// ---------------------------------------------------------------------------
// 5. System namespaces.

#[tokio::test]
async fn system_namespaces_cannot_be_deleted() -> anyhow::Result<()> {
    let mut c = Cluster::start().await?;
    eventually("kube-public exists", || async {
        c.tc()
            .client
            .get(&NAMESPACES, None, "kube-public")
            .await
            .ok()
    })
    .await?;
    let rev = c.settled_revision().await?;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let a = c
            .send(
                reqwest::Method::DELETE,
                &format!("/api/v1/namespaces/{ns}"),
                "application/json",
                "",
            )
            .await?;
        assert_status(&a, 403, &[ns, "may not be deleted"]);
    }
    assert_eq!(c.revision().await?, rev);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let got = c.tc().client.get(&NAMESPACES, None, ns).await?;
        assert_eq!(got["status"]["phase"], "Active", "{ns}");
    }
    c.still_serves().await?;
    c.restarts_cleanly().await
}

// ---------------------------------------------------------------------------
// 6. A watch (or list) from a future resourceVersion.

#[tokio::test]
async fn a_watch_or_list_from_a_future_resource_version_is_too_large() -> anyhow::Result<()> {
    let mut c = Cluster::start().await?;
    let rev = c.settled_revision().await?;
    let future = rev + 1000;
    for path in [
        format!("/api/v1/namespaces/default/pods?watch=true&resourceVersion={future}"),
        format!("/api/v1/namespaces/default/pods?resourceVersion={future}"),
    ] {
        let a = within(
            "the server to answer a future resourceVersion",
            c.get(&path),
        )
        .await??;
        assert_status(&a, 504, &["Too large resource version"]);
        assert_eq!(
            a.body["details"]["causes"][0]["reason"],
            "ResourceVersionTooLarge",
            "{}",
            short(&a.text)
        );
        assert!(a.body["details"]["retryAfterSeconds"].as_i64().is_some());
    }
    c.changed_nothing_since(rev).await
}

// ---------------------------------------------------------------------------
// 7. The scale subresource with no replicas.

#[tokio::test]
async fn a_scale_without_replicas_is_invalid_and_changes_nothing() -> anyhow::Result<()> {
    let mut c = Cluster::start().await?;
    c.tc()
        .client
        .create(
            &DEPLOYMENTS,
            Some("default"),
            &deployment("web", "default", 2),
        )
        .await?;
    // Let the controllers settle so that the revision stays put.
    eventually("the deployment settles", || async {
        let d = c
            .tc()
            .client
            .get(&DEPLOYMENTS, Some("default"), "web")
            .await
            .ok()?;
        (d["status"]["replicas"] == 2).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rev = c.settled_revision().await?;
    let scale = format!("{DEPLOY_PATH}/web/scale");
    for (method, ct, body) in [
        (reqwest::Method::PUT, "application/json", "{}"),
        (reqwest::Method::PUT, "application/json", "[]"),
        (
            reqwest::Method::PUT,
            "application/json",
            r#"{"spec":{"replicas":null}}"#,
        ),
        (
            reqwest::Method::PATCH,
            "application/merge-patch+json",
            r#"{"spec":{"replicas":null}}"#,
        ),
        (
            reqwest::Method::PATCH,
            "application/json-patch+json",
            r#"[{"op":"remove","path":"/spec/replicas"}]"#,
        ),
        (
            reqwest::Method::PATCH,
            "application/merge-patch+json",
            r#"{"spec":null}"#,
        ),
    ] {
        let a = c.send(method.clone(), &scale, ct, body).await?;
        assert_status(&a, 422, &["spec.replicas"]);
        assert_eq!(
            a.body["details"]["causes"][0]["field"],
            "spec.replicas",
            "{method} {body}: {}",
            short(&a.text)
        );
    }
    let d = c
        .tc()
        .client
        .get(&DEPLOYMENTS, Some("default"), "web")
        .await?;
    assert_eq!(d["spec"]["replicas"], 2);
    c.changed_nothing_since(rev).await
}

// ---------------------------------------------------------------------------
// 8. Query parameters that cannot be read.

#[tokio::test]
async fn every_unreadable_query_parameter_is_a_bad_request_naming_it() -> anyhow::Result<()> {
    let mut c = Cluster::start().await?;
    let rev = c.settled_revision().await?;
    for (query, param) in [
        ("labelSelector=app%3Dweb%ff", "labelSelector"),
        ("fieldSelector=%zz", "fieldSelector"),
        ("watch=%ff", "watch"),
        ("watch=maybe", "watch"),
        ("labelSelector=a%3Db%3Dc", "labelSelector"),
        (
            "labelSelector=%D0%BA%D0%BB%D1%8E%D1%87%3D1",
            "labelSelector",
        ),
        ("labelSelector=app%3D%D0%B2%D0%B5%D0%B1", "labelSelector"),
        ("timeoutSeconds=soon", "timeoutSeconds"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("resourceVersion=abc", "resourceVersion"),
        ("%ff=1", "query"),
    ] {
        let a = c
            .get(&format!("/api/v1/namespaces/default/pods?{query}"))
            .await?;
        assert_status(&a, 400, &[param]);
    }
    c.changed_nothing_since(rev).await
}

// ---------------------------------------------------------------------------
// 9. Sizes: bodies, objects, annotations, history and the file.

#[tokio::test]
async fn oversized_bodies_objects_and_annotations_are_refused_and_the_file_stays_small()
-> anyhow::Result<()> {
    let mut c = Cluster::start().await?;
    create_deployment(&c, "web").await?;
    let rev = c.settled_revision().await?;

    // A body over 3 MiB: 413, as a Status.
    let mut big = deployment("big", "default", 0);
    big["metadata"]["annotations"] = json!({"a": "x".repeat(4 << 20)});
    let a = c
        .send_json(reqwest::Method::POST, DEPLOY_PATH, "application/json", &big)
        .await?;
    assert_status(&a, 413, &["3145728"]);

    // Annotations over 256 KiB in all.
    let mut ann = deployment("ann", "default", 0);
    ann["metadata"]["annotations"] =
        json!({"a": "x".repeat(200 << 10), "b": "y".repeat(100 << 10)});
    let a = c
        .send_json(reqwest::Method::POST, DEPLOY_PATH, "application/json", &ann)
        .await?;
    assert_status(&a, 422, &["metadata.annotations", "262144"]);

    // An object over 1.5 MiB (here: environment values in a template).
    let mut huge = deployment("huge", "default", 0);
    huge["spec"]["template"]["spec"]["containers"][0]["env"] = json!(
        (0..8)
            .map(|i| json!({"name": format!("V{i}"), "value": "v".repeat(250 << 10)}))
            .collect::<Vec<_>>()
    );
    let a = c
        .send_json(
            reqwest::Method::POST,
            DEPLOY_PATH,
            "application/json",
            &huge,
        )
        .await?;
    assert_status(&a, 413, &["1572864"]);

    // The defect's own load: 100 patches of a 1.9 MB annotation.
    let patch =
        serde_json::to_vec(&json!({"metadata": {"annotations": {"blob": "z".repeat(1_900_000)}}}))?;
    for _ in 0..100 {
        let a = c
            .send(
                reqwest::Method::PATCH,
                &format!("{DEPLOY_PATH}/web"),
                "application/merge-patch+json",
                patch.clone(),
            )
            .await?;
        assert_status(&a, 422, &["metadata.annotations"]);
    }
    assert_eq!(c.revision().await?, rev, "nothing was written");
    let file = c.dir.path().join("tugboat.redb");
    let size = std::fs::metadata(&file)?.len();
    assert!(size < 16 << 20, "the store file grew to {size} bytes");
    c.still_serves().await?;
    c.restarts_cleanly().await
}

// ---------------------------------------------------------------------------
// 10. Integer overflow in the scheduler.

#[tokio::test]
async fn requests_that_overflow_when_summed_do_not_fit_any_node() -> anyhow::Result<()> {
    let mut c = Cluster::start().await?;
    let client = &c.tc().client;
    // A live node of 2 CPUs, on the in-memory runtime.
    let mut config = c.tc().agent_config("small").await?;
    config.cpus_override = Some(2);
    let agent = FakeAgent::start_with(config);
    eventually("the node is Ready", || async {
        let n = client.get(&NODES, None, "small").await.ok()?;
        n["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
            .then_some(())
    })
    .await?;
    let huge = "9223372036854775807m";
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "greedy", "namespace": "default"},
        "spec": {"containers": [
            {"name": "a", "image": "tugboat/sample:latest", "resources": {"requests": {"cpu": huge}}},
            {"name": "b", "image": "tugboat/sample:latest", "resources": {"requests": {"cpu": huge}}}
        ]}
    });
    client.create(&PODS, Some("default"), &pod).await?;
    let p = eventually("the pod is found unschedulable", || async {
        let p = client.get(&PODS, Some("default"), "greedy").await.ok()?;
        let conds = p["status"]["conditions"].as_array()?.clone();
        conds
            .iter()
            .any(|c| c["type"] == "PodScheduled" && c["status"] == "False")
            .then_some(p)
    })
    .await?;
    assert!(p["spec"].get("nodeName").is_none(), "scheduled: {p}");
    let message = p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "PodScheduled")
        .and_then(|c| c["message"].as_str())
        .unwrap_or("")
        .to_string();
    assert!(message.contains("Insufficient cpu"), "{message}");
    c.still_serves().await?;
    agent.stop().await?;
    c.restarts_cleanly().await
}

// ---------------------------------------------------------------------------
// 11. Slow clients.

/// Sends a request's headers one byte every half second or so (what the server
/// reads of them); whether the server closes the connection before 60 bytes.
async fn dribbled_headers_are_cut_off(addr: std::net::SocketAddr) -> anyhow::Result<bool> {
    let mut s = TcpStream::connect(addr).await?;
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n";
    for b in request.iter().cycle().take(60) {
        if s.write_all(&[*b]).await.is_err() {
            return Ok(true);
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(true),
            // A 408 answer before the close is fine.
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    Ok(false)
}

#[tokio::test]
async fn a_client_sending_its_headers_a_byte_at_a_time_is_cut_off() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let started = tokio::time::Instant::now();
    assert!(
        dribbled_headers_are_cut_off(c.tc().addr).await?,
        "the connection was still open after {:?}",
        started.elapsed()
    );
    c.still_serves().await
}

/// The agent's log server is reachable from anything on the node's network
/// (pods included): it has the same bounds as the API.
#[tokio::test]
async fn the_agents_log_server_cuts_off_slow_clients_too() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let mut config = tc.agent_config("n1").await?;
    config.connections = tugboat_controller::server::ConnLimits {
        header_read_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let agent = FakeAgent::start_with(config);
    let client = tc.client.clone();
    let port = eventually("the node publishes its log port", || async {
        let n = client.get(&NODES, None, "n1").await.ok()?;
        n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64()
    })
    .await?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], u16::try_from(port)?));
    let started = tokio::time::Instant::now();
    assert!(
        dribbled_headers_are_cut_off(addr).await?,
        "the agent kept a dribbling client for {:?}",
        started.elapsed()
    );
    // Others are still answered (a peer node is told it may not ask).
    let peer = tc
        .node_tls("n2")
        .await?
        .expect("a TLS controller gives node credentials");
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tugboat_tls::config::client_config(
            Some(peer.ca_pem.as_bytes()),
            Some((peer.cert_pem.as_bytes(), peer.key_pem.as_bytes())),
            tugboat_tls::config::ServerCheck::Node {
                name: "n1".into(),
                fingerprint: None,
            },
        )?)
        .build()?;
    let answer = within(
        "an answer",
        http.get(format!("https://{addr}/healthz")).send(),
    )
    .await??;
    assert_eq!(answer.status().as_u16(), 403);
    agent.stop().await?;
    tc.stop().await
}

// ---------------------------------------------------------------------------
// 12. Smaller ones.

#[tokio::test]
async fn hostnames_subdomains_and_env_names_are_validated() -> anyhow::Result<()> {
    let mut c = Cluster::start().await?;
    let rev = c.settled_revision().await?;
    for (field, spec) in [
        (
            "spec.hostname",
            json!({"hostname": "Not_A_Label", "containers": [{"name": "c", "image": "i"}]}),
        ),
        (
            "spec.subdomain",
            json!({"subdomain": "a.b", "containers": [{"name": "c", "image": "i"}]}),
        ),
        (
            "spec.containers[0].env[0].name",
            json!({"containers": [{"name": "c", "image": "i", "env": [{"name": "1BAD=X", "value": "v"}]}]}),
        ),
    ] {
        let pod =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec});
        let a = c
            .send_json(
                reqwest::Method::POST,
                "/api/v1/namespaces/default/pods",
                "application/json",
                &pod,
            )
            .await?;
        assert_status(&a, 422, &[field]);
    }
    c.changed_nothing_since(rev).await
}

#[tokio::test]
async fn duplicate_json_keys_are_refused_in_strict_mode_and_warned_otherwise() -> anyhow::Result<()>
{
    let mut c = Cluster::start().await?;
    let rev = c.settled_revision().await?;
    let body = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a","name":"b"}}"#;
    let a = c
        .send(
            reqwest::Method::POST,
            "/api/v1/namespaces",
            "application/json",
            body,
        )
        .await?;
    assert_status(&a, 400, &["duplicate field", "metadata.name"]);
    assert_eq!(c.revision().await?, rev);
    let a = c
        .send(
            reqwest::Method::POST,
            "/api/v1/namespaces?fieldValidation=Warn",
            "application/json",
            body,
        )
        .await?;
    assert_eq!(a.code, 201, "{}", short(&a.text));
    let warnings: Vec<&str> = a
        .headers
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(
        warnings.iter().any(|w| w.contains("duplicate field")),
        "{warnings:?}"
    );
    c.still_serves().await?;
    c.restarts_cleanly().await
}

// ---------------------------------------------------------------------------
// 2 (agent side): an object the agent cannot read on its watch.

use tugboat_controller::store::redb::{DEFAULT_HISTORY, RedbStore};
use tugboat_controller::store::{
    Key, Revision, Store, StoreError, StoreEvent, Stored, WatchStream,
};

/// A store that serves every object labelled `poison=true` with a field nested
/// 200 levels deep, past what any JSON decoder reads by default: what an agent
/// would get from a store an older version had poisoned. It counts the lists and
/// watches of pods, to tell a relist from a hot loop.
struct PoisonStore {
    inner: RedbStore,
    pod_reads: std::sync::atomic::AtomicUsize,
}

impl PoisonStore {
    fn poison(object: Arc<Value>) -> Arc<Value> {
        if object["metadata"]["labels"]["poison"] != "true" {
            return object;
        }
        let mut o = (*object).clone();
        o["poison"] = nested(200);
        Arc::new(o)
    }

    fn poison_stored(s: Stored) -> Stored {
        // The stored encoding stays beside the poisoned object on purpose: it
        // belongs to the original, so nothing may send it for this one.
        Stored {
            object: Self::poison(s.object),
            ..s
        }
    }

    fn count(&self, resource: &str) {
        if resource == "pods" {
            self.pod_reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[async_trait::async_trait]
impl Store for PoisonStore {
    async fn get(&self, key: &Key) -> Result<Option<Stored>, StoreError> {
        Ok(self.inner.get(key).await?.map(Self::poison_stored))
    }

    async fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<(Vec<Stored>, Revision), StoreError> {
        self.count(resource);
        let (items, rev) = self.inner.list(resource, namespace).await?;
        Ok((items.into_iter().map(Self::poison_stored).collect(), rev))
    }

    async fn create(&self, key: &Key, object: Value) -> Result<Stored, StoreError> {
        self.inner.create(key, object).await
    }

    async fn update(
        &self,
        key: &Key,
        object: Value,
        expected: Option<Revision>,
    ) -> Result<Stored, StoreError> {
        self.inner.update(key, object, expected).await
    }

    async fn delete(&self, key: &Key, expected: Option<Revision>) -> Result<Stored, StoreError> {
        self.inner.delete(key, expected).await
    }

    async fn watch(
        &self,
        resource: &str,
        namespace: Option<&str>,
        after: Revision,
    ) -> Result<WatchStream, StoreError> {
        use futures::StreamExt;
        self.count(resource);
        let stream = self.inner.watch(resource, namespace, after).await?;
        Ok(Box::pin(stream.map(|e| {
            e.map(|e| StoreEvent {
                object: Self::poison(e.object),
                ..e
            })
        })))
    }

    async fn list_at(
        &self,
        resource: &str,
        namespace: Option<&str>,
        revision: Revision,
        after_key: Option<&Key>,
    ) -> Result<Vec<Stored>, StoreError> {
        self.count(resource);
        let items = self
            .inner
            .list_at(resource, namespace, revision, after_key)
            .await?;
        Ok(items.into_iter().map(Self::poison_stored).collect())
    }

    async fn wait_for(&self, revision: Revision, timeout: Duration) -> bool {
        self.inner.wait_for(revision, timeout).await
    }

    fn revision(&self) -> Revision {
        self.inner.revision()
    }
}

async fn pod_phase(client: &tugboat_api::Client, name: &str) -> Option<String> {
    let p = client.get(&PODS, Some("default"), name).await.ok()?;
    p["status"]["phase"].as_str().map(str::to_string)
}

async fn node_ready(client: &tugboat_api::Client, node: &str) -> Option<String> {
    let n = client.get(&NODES, None, node).await.ok()?;
    n["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str())
        .map(str::to_string)
}

#[tokio::test]
async fn the_agent_sets_an_unreadable_pod_aside_and_runs_the_others() -> anyhow::Result<()> {
    tugboat_tests::init_tracing();
    let store = Arc::new(PoisonStore {
        inner: RedbStore::in_memory(DEFAULT_HISTORY)?,
        pod_reads: Default::default(),
    });
    let tc = TestController::start_on_store(store.clone()).await?;
    let client = tc.client.clone();
    let agent = FakeAgent::start(&tc, "n1").await?;
    eventually("the node is Ready", || async {
        (node_ready(&client, "n1").await? == "True").then_some(())
    })
    .await?;

    // On the watch: the poisoned pod first, then a good one.
    let mut bad = bound_pod("bad", "n1");
    bad["metadata"]["labels"] = json!({"poison": "true"});
    client.create(&PODS, Some("default"), &bad).await?;
    client
        .create(&PODS, Some("default"), &bound_pod("good", "n1"))
        .await?;
    eventually("the good pod runs", || async {
        (pod_phase(&client, "good").await? == "Running").then_some(())
    })
    .await?;
    // The agent relisted and went on: no request loop.
    let before = store.pod_reads.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reads = store.pod_reads.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(reads <= 4, "{reads} pod lists and watches in 3 s");
    // The agent never touched it (clients cannot read it either: ask the store).
    let stored = store
        .inner
        .get(&Key::new("pods", Some("default"), "bad"))
        .await?
        .expect("the bad pod is stored");
    assert_eq!(stored.object["status"]["phase"], "Pending");

    // After a restart, the first list holds the poisoned pod: the rest still run.
    agent.stop().await?;
    let agent = FakeAgent::start(&tc, "n1").await?;
    client
        .create(&PODS, Some("default"), &bound_pod("good2", "n1"))
        .await?;
    eventually("a pod created after the restart runs", || async {
        (pod_phase(&client, "good2").await? == "Running").then_some(())
    })
    .await?;
    agent.stop().await?;
    tc.stop().await
}

#[tokio::test]
async fn a_restarted_agent_heartbeats_while_it_fences_slow_containers() -> anyhow::Result<()> {
    use tugboat_agent::runtime::{
        ContainerRuntime, ContainerSpec, LABEL_CONTAINER_NAME, LABEL_NODE, LABEL_POD_NAME,
        LABEL_POD_NAMESPACE, LABEL_POD_UID,
    };
    let c = Cluster::start().await?;
    let client = &c.tc().client;
    // A container left from a pod that is gone, whose stop takes longer than the
    // node's grace (3 s).
    let runtime = Arc::new(
        FakeRuntime::new()
            .with_images(&["tugboat/sample:latest"])
            .with_stop_delay(Duration::from_secs(6)),
    );
    let labels = [
        (LABEL_NODE, "slow"),
        (LABEL_POD_UID, "ghost-uid"),
        (LABEL_POD_NAME, "ghost"),
        (LABEL_POD_NAMESPACE, "default"),
        (LABEL_CONTAINER_NAME, "c"),
    ];
    let id = runtime
        .create(&ContainerSpec {
            name: "tug_default_ghost_c_0".into(),
            image: "tugboat/sample:latest".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
        .await?;
    runtime.start(&id).await?;
    let agent = FakeAgent::start_on(c.tc().agent_config("slow").await?, runtime.clone());
    let mut seen_ready = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while runtime.container_count() > 0 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the stale container was not removed"
        );
        match node_ready(client, "slow").await.as_deref() {
            Some("True") => seen_ready = true,
            Some(other) if seen_ready => {
                anyhow::bail!("the node went {other} while its agent fenced")
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen_ready, "the node was never Ready");
    assert_eq!(node_ready(client, "slow").await.as_deref(), Some("True"));
    agent.stop().await
}

// ---------------------------------------------------------------------------
// 11 (continued): idle connections and connections per client.

async fn tuned(limits: tugboat_controller::server::ConnLimits) -> anyhow::Result<TestController> {
    TestController::start_tuned(move |c| c.connections = limits).await
}

/// Whether the server closes `s` within `limit` (reads return 0 or fail).
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() -> anyhow::Result<()> {
    let tc = tuned(tugboat_controller::server::ConnLimits {
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await?;
    let mut s = tc.connect_tls().await?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let mut buf = [0u8; 1024];
    let n = within("the answer", s.read(&mut buf)).await??;
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = tokio::time::Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "an idle connection was kept open"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    // A watch with nothing to say is not idle: it stays open past the timeout.
    let mut w = tc.connect_tls().await?;
    w.write_all(b"GET /api/v1/namespaces/default/pods?watch=true HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    assert!(
        !closed_within(&mut w, Duration::from_secs(3)).await,
        "a quiet watch was cut as idle"
    );
    tc.stop().await
}

#[tokio::test]
async fn one_client_cannot_hold_more_connections_than_its_share() -> anyhow::Result<()> {
    let tc = tuned(tugboat_controller::server::ConnLimits {
        per_client: 4,
        ..Default::default()
    })
    .await?;
    // The test's own client may hold a pooled connection too: count what is
    // served out of ten.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..10 {
        // A refused connection is closed before the TLS handshake.
        let Ok(mut s) = tc.connect_tls().await else {
            refused += 1;
            continue;
        };
        let _ = s
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let mut buf = [0u8; 512];
        match within("an answer or a close", s.read(&mut buf)).await? {
            Ok(n) if n > 0 => held.push(s),
            _ => refused += 1,
        }
    }
    assert!(
        (3..=4).contains(&held.len()),
        "{} connections of one client were served",
        held.len()
    );
    assert!(refused >= 6, "only {refused} were refused");
    // Giving one back makes room again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = tc.connect_tls().await?;
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut text = String::new();
    // A TLS peer may close without close_notify after `Connection: close`.
    let _ = within("an answer", again.read_to_string(&mut text)).await?;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    drop(held);
    tc.stop().await
}

// ---------------------------------------------------------------------------
// Bounds: list pagination.

#[tokio::test]
async fn lists_come_in_pages_that_all_show_one_moment() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let client = &c.tc().client;
    for i in 0..7 {
        client
            .create(
                &PODS,
                Some("default"),
                &bound_pod(&format!("p{i}"), "nowhere"),
            )
            .await?;
    }
    let path = "/api/v1/namespaces/default/pods?limit=3";
    let first = c.get(path).await?;
    assert_eq!(first.code, 200, "{}", short(&first.text));
    let names = |a: &Answer| -> Vec<String> {
        a.body["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(names(&first), ["p0", "p1", "p2"]);
    assert_eq!(first.body["metadata"]["remainingItemCount"], 4);
    let token = first.body["metadata"]["continue"]
        .as_str()
        .unwrap()
        .to_string();
    let second = c.get(&format!("{path}&continue={token}")).await?;
    assert_eq!(names(&second), ["p3", "p4", "p5"]);
    assert_eq!(
        second.body["metadata"]["resourceVersion"],
        first.body["metadata"]["resourceVersion"]
    );
    let token2 = second.body["metadata"]["continue"]
        .as_str()
        .unwrap()
        .to_string();
    let third = c.get(&format!("{path}&continue={token2}")).await?;
    assert_eq!(names(&third), ["p6"]);
    assert!(third.body["metadata"].get("continue").is_none());
    // A change in what is left to list: that moment is gone, list again.
    client.delete(&PODS, Some("default"), "p6").await?;
    let stale = c.get(&format!("{path}&continue={token2}")).await?;
    assert_status(&stale, 410, &["continue"]);
    let bad = c.get(&format!("{path}&continue=garbage")).await?;
    assert_status(&bad, 400, &["continue"]);
    Ok(())
}
