//! Tugboat on a real network: HTTPS with the cluster CA, authentication (client
//! certificates, join and API tokens), the Node authorizer, the agent's mutual
//! TLS and Pod Security's baseline — each checked from the outside, the way a
//! client, an agent or an attacker meets it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tugboat_api::resource::{DEPLOYMENTS, EVENTS, NAMESPACES, NODES, PODS, SERVICES};
use tugboat_api::{Client, ClientError, Credentials, ListParams, PatchType};
use tugboat_tests::fake_agent::FakeAgent;
use tugboat_tests::{TestController, eventually, tug, within};

fn pod(name: &str, node: Option<&str>, spec: Value) -> Value {
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "c", "image": "tugboat/sample:latest"}]);
    }
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
}

fn node_object(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
}

/// The API error of a failed call.
fn refused<T: std::fmt::Debug>(r: Result<T, ClientError>) -> tugboat_api::ApiError {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(e) => e
            .api()
            .cloned()
            .unwrap_or_else(|| panic!("expected an API error, got {e}")),
    }
}

/// A client with only the cluster CA (and `token`, if given).
fn client_with(tc: &TestController, token: Option<&str>) -> anyhow::Result<Client> {
    let ca = tc.credentials.as_ref().and_then(|c| c.ca_pem.clone());
    Ok(Client::with_credentials(
        &tc.url,
        &Credentials {
            ca_pem: ca,
            token: token.map(str::to_string),
            ..Default::default()
        },
    )?)
}

#[tokio::test]
async fn anonymous_requests_are_refused_except_health_and_version() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let anonymous = tc.http(true)?;
    for path in ["/healthz", "/livez", "/readyz", "/version", "/cacerts"] {
        let r = anonymous.get(format!("{}{path}", tc.url)).send().await?;
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    let ca = anonymous
        .get(format!("{}/cacerts", tc.url))
        .send()
        .await?
        .text()
        .await?;
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    for path in [
        "/api",
        "/apis",
        "/api/v1/pods",
        "/api/v1/namespaces/default/pods",
        "/apis/apps/v1/deployments",
        "/v1-tugboat/tokens",
    ] {
        let r = anonymous.get(format!("{}{path}", tc.url)).send().await?;
        assert_eq!(r.status().as_u16(), 401, "{path}");
        let body: Value = r.json().await?;
        assert_eq!(body["kind"], "Status", "{path}: {body}");
        assert_eq!(body["reason"], "Unauthorized", "{path}: {body}");
    }
    // Plain HTTP to the HTTPS port gets nothing.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/api/v1/pods", tc.addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.as_ref().is_ok_and(|r| r.status().is_success()),
        "plain HTTP was served: {plain:?}"
    );
    tc.stop().await
}

#[tokio::test]
async fn the_api_speaks_http2_to_clients_that_ask_and_http1_to_the_rest() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let creds = tc.credentials.clone().unwrap_or_default();
    let client = |alpn: &[&[u8]]| -> anyhow::Result<reqwest::Client> {
        let mut tls = creds.tls_config()?;
        tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .use_preconfigured_tls(tls)
            .build()?)
    };
    let pods = format!("{}/api/v1/namespaces/default/pods", tc.url);

    let h1 = client(&[b"http/1.1"])?;
    let r = h1.get(&pods).send().await?;
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, reqwest::Version::HTTP_11)
    );

    // HTTP/2: a watch and 50 requests at once, all on one connection.
    let h2 = client(&[b"h2", b"http/1.1"])?;
    let watch = h2
        .get(format!("{pods}?watch=1&resourceVersion=0"))
        .send()
        .await?;
    assert_eq!(
        (watch.status().as_u16(), watch.version()),
        (200, reqwest::Version::HTTP_2)
    );
    let creates = (0..50).map(|i| {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("h2-{i}")}});
        h2.post(format!("{}/api/v1/namespaces/default/configmaps", tc.url))
            .json(&cm)
            .send()
    });
    for r in futures::future::join_all(creates).await {
        let r = r?;
        assert_eq!(
            (r.status().as_u16(), r.version()),
            (201, reqwest::Version::HTTP_2)
        );
    }
    // The watch is still live on the shared connection: a pod made now shows.
    tc.client
        .create(&PODS, Some("default"), &pod("h2-watched", None, json!({})))
        .await?;
    let mut body = watch.bytes_stream();
    let seen = within("the pod on the HTTP/2 watch", async {
        let mut text = String::new();
        while let Some(chunk) = futures::StreamExt::next(&mut body).await {
            text.push_str(&String::from_utf8_lossy(&chunk?));
            if text.contains("h2-watched") {
                return Ok::<_, anyhow::Error>(());
            }
        }
        anyhow::bail!("the watch ended before the pod showed: {text}")
    })
    .await?;
    assert!(seen.is_ok(), "{seen:?}");
    // Tugboat's own client asks for HTTP/2 and keeps working.
    let listed = tc
        .client
        .list(&NAMESPACES, None, &ListParams::default())
        .await?;
    assert!(listed["items"].as_array().is_some_and(|i| !i.is_empty()));
    tc.stop().await
}

#[tokio::test]
async fn the_admin_kubeconfig_works_with_tug_and_kubectl() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let agent = FakeAgent::start(&tc, "n1").await?;
    eventually("node n1 registers", || async {
        tc.client.get(&NODES, None, "n1").await.ok()
    })
    .await?;
    let kubeconfig = tc.kubeconfig();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&kubeconfig)?.permissions().mode() & 0o777,
        0o600
    );
    let cache = tempfile::tempdir()?;
    let out = within(
        "kubectl get nodes",
        tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(cache.path())
            .args(["get", "nodes"])
            .output(),
    )
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("n1"), "{stdout}");

    // tug with the same file, and its kubeconfig verb printing it.
    let dir = tempfile::tempdir()?;
    let nodes = tug(&tc.url, dir.path(), &["get", "nodes"]).await?;
    assert!(nodes.contains("n1"), "{nodes}");
    let printed = tug(
        &tc.url,
        dir.path(),
        &["kubeconfig", "--data-dir", &tc.data_dir().to_string_lossy()],
    )
    .await?;
    assert!(printed.contains("current-context: tugboat"), "{printed}");
    assert!(printed.contains("client-key-data"), "{printed}");

    // Merged into another kubeconfig as context `tugboat`, kept beside the rest.
    let theirs = dir.path().join("kube-config");
    std::fs::write(
        &theirs,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster: {server: https://other:6443}\nusers:\n- name: me\n  user: {token: abc}\ncontexts:\n- name: other\n  context: {cluster: other, user: me}\ncurrent-context: other\n",
    )?;
    let said = tug(
        &tc.url,
        dir.path(),
        &[
            "kubeconfig",
            "--merge",
            "--data-dir",
            &tc.data_dir().to_string_lossy(),
            "--kubeconfig",
            &theirs.to_string_lossy(),
        ],
    )
    .await?;
    assert!(said.contains("tugboat"), "{said}");
    let merged = std::fs::read_to_string(&theirs)?;
    assert!(merged.contains("current-context: tugboat"), "{merged}");
    assert!(merged.contains("https://other:6443"), "{merged}");
    let out = within(
        "kubectl with the merged file",
        tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&theirs)
            .arg("--cache-dir")
            .arg(cache.path())
            .args(["get", "nodes", "-o", "name"])
            .output(),
    )
    .await??;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("node/n1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.stop().await?;
    tc.stop().await
}

/// A TLS server with a CA of its own that answers `/cacerts` and records
/// whatever reaches its join endpoint: a server impersonating the cluster.
async fn impostor() -> anyhow::Result<(
    String,
    Arc<std::sync::Mutex<Vec<String>>>,
    tokio_util::sync::CancellationToken,
)> {
    let ca = tugboat_tls::ca::Authority::generate("impostor")?;
    let serving = ca.issue(&tugboat_tls::ca::Leaf {
        common_name: "impostor".into(),
        ips: vec!["127.0.0.1".parse()?],
        server: true,
        ..Default::default()
    })?;
    let tls = tugboat_tls::config::server_config(
        serving.cert_pem.as_bytes(),
        serving.key_pem.as_bytes(),
        ca.cert_pem().as_bytes(),
        tugboat_tls::config::ClientAuth::Optional,
    )?;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ca_pem = ca.cert_pem().to_string();
    let log = seen.clone();
    let app = axum::Router::new()
        .route(
            "/cacerts",
            axum::routing::get(move || async move { ca_pem }),
        )
        .route(
            "/v1-tugboat/join",
            axum::routing::post(move |body: String| async move {
                log.lock().unwrap().push(body);
                "{}"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("https://{}", listener.local_addr()?);
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(tugboat_serve::serve(
        listener,
        app,
        Default::default(),
        Some(tls),
        stop.clone(),
    ));
    Ok((url, seen, stop))
}

#[tokio::test]
async fn joining_checks_the_ca_first_and_takes_only_live_tokens() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let token = tc.join_token().await?;

    // A server with another CA, given the real token: refused before the secret
    // is sent, which the impostor never sees.
    let (fake, seen, stop) = impostor().await?;
    let err = tugboat_agent::join::join(&fake, &token, "n1")
        .await
        .expect_err("an impostor's CA");
    assert!(
        matches!(err, tugboat_agent::join::JoinError::WrongCa { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("nothing secret was sent"), "{err}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "the secret reached the impostor"
    );
    stop.cancel();

    // The real server with a token carrying another hash: refused the same way.
    let wrong = format!(
        "K10{}::{}",
        tugboat_tls::sha256_hex(b"another CA"),
        token.split("::").nth(1).unwrap_or_default()
    );
    let err = tugboat_agent::join::join(&tc.url, &wrong, "n1")
        .await
        .expect_err("a token for another cluster");
    assert!(
        matches!(err, tugboat_agent::join::JoinError::WrongCa { .. }),
        "{err}"
    );

    // An expired token, and a deleted one.
    let short = tc
        .client
        .post_path(
            "/v1-tugboat/tokens",
            &json!({"kind": "join", "ttlSeconds": 1}),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let err = tugboat_agent::join::join(&tc.url, short["token"].as_str().unwrap_or(""), "n2")
        .await
        .expect_err("an expired token");
    assert!(
        err.to_string().contains("unknown, expired or deleted"),
        "{err}"
    );
    let gone = tc
        .client
        .post_path("/v1-tugboat/tokens", &json!({"kind": "join"}))
        .await?;
    let dir = tempfile::tempdir()?;
    let listed = tug(&tc.url, dir.path(), &["token", "list"]).await?;
    assert!(
        listed.contains(gone["id"].as_str().unwrap_or("?")),
        "{listed}"
    );
    assert!(
        !listed.contains(short["id"].as_str().unwrap_or("?")),
        "an expired token is listed: {listed}"
    );
    tug(
        &tc.url,
        dir.path(),
        &["token", "delete", gone["id"].as_str().unwrap_or("")],
    )
    .await?;
    let err = tugboat_agent::join::join(&tc.url, gone["token"].as_str().unwrap_or(""), "n2")
        .await
        .expect_err("a deleted token");
    assert!(
        err.to_string().contains("unknown, expired or deleted"),
        "{err}"
    );

    // A good token joins once per name; a second agent claiming the name with
    // another credential is refused, saying what to do.
    let made = tug(&tc.url, dir.path(), &["token", "create", "--ttl", "10m"]).await?;
    let made = made.trim();
    assert!(made.starts_with("K10"), "{made}");
    let state = tempfile::tempdir()?;
    let (server, first) =
        tugboat_agent::join::load_or_join(Some(&tc.url), Some(made), "n3", state.path()).await?;
    assert_eq!(server, tc.url);
    use std::os::unix::fs::PermissionsExt as _;
    let kept = state.path().join(tugboat_agent::join::NODE_KUBECONFIG);
    assert_eq!(
        std::fs::metadata(&kept)?.permissions().mode() & 0o777,
        0o600
    );
    let err = tugboat_agent::join::join(&tc.url, made, "n3")
        .await
        .expect_err("a second claim on n3");
    assert!(err.to_string().contains("already joined"), "{err}");
    // A restart needs no token: the kept credential is used, and works.
    let (_, again) = tugboat_agent::join::load_or_join(None, None, "n3", state.path()).await?;
    assert_eq!(again.cert_pem, first.cert_pem);
    let n3 = Client::with_credentials(&server, &again.credentials())?;
    n3.create(&NODES, None, &node_object("n3")).await?;
    // The state directory of n3 is not n4's.
    let err = tugboat_agent::join::load_or_join(None, None, "n4", state.path())
        .await
        .expect_err("another node's state directory");
    assert!(err.to_string().contains("system:node:n3"), "{err}");
    tc.stop().await
}

#[tokio::test]
async fn a_node_credential_does_only_a_nodes_work() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let admin = &tc.client;
    let a = tc.node_client("a").await?;
    let b = tc.node_client("b").await?;
    a.create(&NODES, None, &node_object("a")).await?;
    b.create(&NODES, None, &node_object("b")).await?;
    admin
        .create(&PODS, Some("default"), &pod("pa", Some("a"), json!({})))
        .await?;
    admin
        .create(&PODS, Some("default"), &pod("pb", Some("b"), json!({})))
        .await?;
    let on = |n: &str| ListParams {
        field_selector: Some(format!("spec.nodeName={n}")),
        ..Default::default()
    };

    // Its own work.
    let mine = a.list(&PODS, None, &on("a")).await?;
    assert_eq!(mine["items"].as_array().map(Vec::len), Some(1));
    a.patch_status(
        &NODES,
        None,
        "a",
        &json!({"status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}}),
        PatchType::Merge,
    )
    .await?;
    a.patch_status(
        &PODS,
        Some("default"),
        "pa",
        &json!({"status": {"phase": "Running"}}),
        PatchType::Merge,
    )
    .await?;
    a.get(&PODS, Some("default"), "pa").await?;
    a.list(&SERVICES, None, &ListParams::default()).await?;
    a.create(
        &EVENTS,
        Some("default"),
        &json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "pa.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "pa", "namespace": "default"},
            "reason": "Started", "message": "started", "type": "Normal"}),
    )
    .await?;

    // Not another node's.
    let e = refused(a.list(&PODS, None, &on("b")).await);
    assert_eq!(e.code, 403, "{e:?}");
    assert!(
        e.message
            .contains("User \"system:node:a\" cannot list resource \"pods\""),
        "{}",
        e.message
    );
    let e = refused(a.list(&PODS, Some("default"), &ListParams::default()).await);
    assert_eq!(e.code, 403, "{e:?}");
    let e = refused(
        a.patch_status(
            &NODES,
            None,
            "b",
            &json!({"status": {"conditions": []}}),
            PatchType::Merge,
        )
        .await,
    );
    assert_eq!(e.code, 403, "{e:?}");
    assert!(
        e.message.contains("cannot patch resource \"nodes/status\""),
        "{}",
        e.message
    );
    for e in [
        refused(a.get(&PODS, Some("default"), "pb").await),
        refused(
            a.patch_status(
                &PODS,
                Some("default"),
                "pb",
                &json!({"status": {"phase": "Failed"}}),
                PatchType::Merge,
            )
            .await,
        ),
        refused(a.delete(&PODS, Some("default"), "pb").await),
    ] {
        assert_eq!(e.code, 403, "{e:?}");
        assert!(
            e.message.contains("no relationship found between node 'a'"),
            "{}",
            e.message
        );
    }
    // Nor anything else.
    let e = refused(
        a.create(
            &DEPLOYMENTS,
            Some("default"),
            &tugboat_tests::deployment("web", "default", 1),
        )
        .await,
    );
    assert_eq!(e.code, 403, "{e:?}");
    assert!(
        e.message.contains(
            "User \"system:node:a\" cannot create resource \"deployments\" in API group \"apps\""
        ),
        "{}",
        e.message
    );
    assert_eq!(
        refused(a.create(&NODES, None, &node_object("c")).await).code,
        403
    );
    assert_eq!(refused(a.delete(&NODES, None, "a").await).code, 403);
    assert_eq!(
        refused(a.list(&NAMESPACES, None, &ListParams::default()).await).code,
        403
    );
    assert_eq!(
        refused(
            a.post_path("/v1-tugboat/tokens", &json!({"kind": "join"}))
                .await
        )
        .code,
        403
    );
    // Nobody else sets where a node's agent is, not even an admin.
    let e = refused(
        admin
            .patch_status(
                &NODES,
                None,
                "a",
                &json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.9.9.9"}]}}),
                PatchType::Merge,
            )
            .await,
    );
    assert_eq!(e.code, 403, "{e:?}");
    assert!(
        e.message.contains("only node a's own credential"),
        "{}",
        e.message
    );

    // A deleted node's credential is refused from then on.
    admin.delete(&NODES, None, "b").await?;
    let e = refused(b.get(&NODES, None, "b").await);
    assert_eq!(e.code, 401, "{e:?}");
    assert!(e.message.contains("revoked"), "{}", e.message);
    tc.stop().await
}

#[tokio::test]
async fn api_tokens_act_in_their_namespace_with_their_role() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let dir = tempfile::tempdir()?;
    tug(&tc.url, dir.path(), &["create", "namespace", "team"]).await?;
    let edit = tug(
        &tc.url,
        dir.path(),
        &[
            "token",
            "create",
            "--role",
            "edit",
            "-n",
            "team",
            "--description",
            "ci",
        ],
    )
    .await?;
    let view = tug(
        &tc.url,
        dir.path(),
        &[
            "token", "create", "--role", "view", "-n", "team", "--ttl", "0",
        ],
    )
    .await?;
    let edit_secret = edit.trim().split('.').nth(1).unwrap_or("?").to_string();
    let edit = client_with(&tc, Some(edit.trim()))?;
    let view = client_with(&tc, Some(view.trim()))?;
    edit.create(
        &DEPLOYMENTS,
        Some("team"),
        &tugboat_tests::deployment("web", "team", 1),
    )
    .await?;
    view.get(&DEPLOYMENTS, Some("team"), "web").await?;
    let e = refused(view.scale(&DEPLOYMENTS, Some("team"), "web", 3).await);
    assert_eq!(e.code, 403, "{e:?}");
    for e in [
        refused(
            edit.list(&PODS, Some("default"), &ListParams::default())
                .await,
        ),
        refused(edit.list(&PODS, None, &ListParams::default()).await),
        refused(edit.list(&NODES, None, &ListParams::default()).await),
    ] {
        assert_eq!(e.code, 403, "{e:?}");
        assert!(
            e.message.contains("bound in namespace \"team\""),
            "{}",
            e.message
        );
    }
    // A made-up token, and one deleted, are 401.
    let bogus = client_with(&tc, Some("abcdef.0123456789abcdef"))?;
    assert_eq!(
        refused(
            bogus
                .list(&PODS, Some("team"), &ListParams::default())
                .await
        )
        .code,
        401
    );
    let listed = tug(&tc.url, dir.path(), &["token", "list"]).await?;
    let id = listed
        .lines()
        .find(|l| l.contains("ci"))
        .and_then(|l| l.split_whitespace().next())
        .expect("the edit token is listed")
        .to_string();
    assert!(
        !listed.contains(&edit_secret),
        "a secret is listed: {listed}"
    );
    tug(&tc.url, dir.path(), &["token", "delete", &id]).await?;
    assert_eq!(
        refused(edit.list(&PODS, Some("team"), &ListParams::default()).await).code,
        401
    );
    tc.stop().await
}

#[tokio::test]
async fn the_agents_endpoints_take_only_the_controller_and_the_logs_proxy_only_the_node()
-> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let runtime = Arc::new(
        tugboat_agent::runtime::fake::FakeRuntime::new()
            .with_images(&[tugboat_tests::fake_agent::IMAGE]),
    );
    let agent_b = FakeAgent::start_on(tc.agent_config("b").await?, runtime.clone());
    let admin = &tc.client;
    admin
        .create(&PODS, Some("default"), &pod("pb", Some("b"), json!({})))
        .await?;
    let port = eventually("pod pb runs and b publishes its log port", || async {
        let p = admin.get(&PODS, Some("default"), "pb").await.ok()?;
        (p["status"]["phase"] == "Running").then_some(())?;
        let n = admin.get(&NODES, None, "b").await.ok()?;
        n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64()
    })
    .await?;
    // Through the controller, the logs come.
    let log = admin
        .get_text("/api/v1/namespaces/default/pods/pb/log")
        .await;
    assert!(log.is_ok(), "{log:?}");

    // Straight at the agent: no certificate, another CA's, or an admin's — none
    // of them is the controller.
    let url = format!("https://127.0.0.1:{port}/containerLogs/default/pb/c");
    let ca = tc
        .credentials
        .as_ref()
        .and_then(|c| c.ca_pem.clone())
        .unwrap_or_default();
    let named_b = tugboat_tls::config::ServerCheck::Node {
        name: "b".into(),
        fingerprint: None,
    };
    let no_cert = reqwest::Client::builder()
        .use_preconfigured_tls(tugboat_tls::config::client_config(
            Some(&ca),
            None,
            named_b.clone(),
        )?)
        .build()?;
    assert!(
        no_cert.get(&url).send().await.is_err(),
        "served without a certificate"
    );
    let stranger_ca = tugboat_tls::ca::Authority::generate("stranger")?;
    let stranger = stranger_ca.issue(&tugboat_tls::ca::Leaf {
        common_name: "system:tugboat-controller".into(),
        groups: vec!["tugboat:controllers".into()],
        client: true,
        ..Default::default()
    })?;
    let foreign = reqwest::Client::builder()
        .use_preconfigured_tls(tugboat_tls::config::client_config(
            Some(&ca),
            Some((stranger.cert_pem.as_bytes(), stranger.key_pem.as_bytes())),
            named_b.clone(),
        )?)
        .build()?;
    assert!(
        foreign.get(&url).send().await.is_err(),
        "served another CA's certificate"
    );
    let creds = tc.credentials.clone().unwrap_or_default();
    let as_admin = reqwest::Client::builder()
        .use_preconfigured_tls(tugboat_tls::config::client_config(
            Some(&ca),
            Some((
                creds.client_cert_pem.as_deref().unwrap_or_default(),
                creds.client_key_pem.as_deref().unwrap_or_default(),
            )),
            named_b,
        )?)
        .build()?;
    let r = as_admin.get(&url).send().await?;
    assert_eq!(r.status().as_u16(), 403);

    // Node c points its Node at b's agent: the controller wants c's certificate
    // there, so it relays nothing.
    let c = tc.node_client("c").await?;
    c.create(
        &NODES,
        None,
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "c"},
            "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}}),
    )
    .await?;
    admin
        .create(&PODS, Some("default"), &pod("pc", Some("c"), json!({})))
        .await?;
    let e = admin
        .get_text("/api/v1/namespaces/default/pods/pc/log")
        .await
        .expect_err("b's agent answered for node c");
    let e = e.api().cloned().expect("a Status");
    assert!(e.code >= 500, "{e:?}");
    assert!(
        e.message.contains("cannot reach the agent of node c"),
        "{}",
        e.message
    );
    agent_b.stop().await?;
    tc.stop().await
}

#[tokio::test]
async fn privileged_pods_and_the_docker_socket_need_a_namespace_that_allows_them()
-> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let c = &tc.client;
    let privileged = json!({"containers": [{"name": "c", "image": "tugboat/sample:latest",
        "securityContext": {"privileged": true}}]});
    let socket = json!({
        "containers": [{"name": "c", "image": "tugboat/sample:latest",
            "volumeMounts": [{"name": "docker", "mountPath": "/var/run/docker.sock"}]}],
        "volumes": [{"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}}]});
    let host = json!({"hostNetwork": true, "hostPID": true,
        "containers": [{"name": "c", "image": "tugboat/sample:latest",
            "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]});
    for (name, spec, says) in [
        (
            "priv",
            &privileged,
            "privileged (container \"c\" must not set securityContext.privileged=true)",
        ),
        ("sock", &socket, "hostPath volumes (volume \"docker\")"),
        (
            "host",
            &host,
            "host namespaces (hostNetwork=true, hostPID=true)",
        ),
        (
            "host",
            &host,
            "non-default capabilities (container \"c\" must not include \"SYS_ADMIN\"",
        ),
    ] {
        let e = refused(
            c.create(&PODS, Some("default"), &pod(name, None, spec.clone()))
                .await,
        );
        assert_eq!(e.code, 403, "{e:?}");
        assert!(
            e.message
                .contains("violates PodSecurity \"baseline:latest\""),
            "{}",
            e.message
        );
        assert!(e.message.contains(says), "{}", e.message);
    }
    // A bad level is refused; a namespace labelled privileged admits them.
    let e = refused(
        c.create(
            &NAMESPACES,
            None,
            &json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "x", "labels": {"pod-security.kubernetes.io/enforce": "anything"}}}),
        )
        .await,
    );
    assert_eq!(e.code, 422, "{e:?}");
    c.create(
        &NAMESPACES,
        None,
        &json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "infra", "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}),
    )
    .await?;
    for (name, spec) in [("priv", &privileged), ("sock", &socket), ("host", &host)] {
        c.create(&PODS, Some("infra"), &pod(name, None, spec.clone()))
            .await?;
    }
    // A Deployment's pods are held to it too: admitted with a warning, its
    // ReplicaSet's pods refused and the reason in an event.
    let mut d = tugboat_tests::deployment("agentish", "default", 1);
    d["spec"]["template"]["spec"] = socket.clone();
    c.create(&DEPLOYMENTS, Some("default"), &d).await?;
    let warned = c.take_warnings();
    assert!(
        warned
            .iter()
            .any(|w| w.contains("would violate PodSecurity")),
        "{warned:?}"
    );
    eventually("a FailedCreate event names the violation", || async {
        let evs = c
            .list(&EVENTS, Some("default"), &ListParams::default())
            .await
            .ok()?;
        evs["items"]
            .as_array()?
            .iter()
            .any(|e| {
                e["reason"] == "FailedCreate"
                    && e["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("hostPath volumes")
            })
            .then_some(())
    })
    .await?;
    tc.stop().await
}

#[tokio::test]
async fn a_node_may_not_change_what_an_admin_decides_about_it() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let a = tc.node_client("a").await?;
    a.create(
        &NODES,
        None,
        &json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "a", "labels": {"kubernetes.io/hostname": "a", "disk": "ssd"}}}),
    )
    .await?;
    // Its own labels, yes; a cordon, a finalizer or a restricted label, no.
    a.patch(
        &NODES,
        None,
        "a",
        &json!({"metadata": {"labels": {"disk": "nvme"}}}),
        PatchType::Merge,
    )
    .await?;
    for (patch, says) in [
        (json!({"spec": {"unschedulable": true}}), "spec"),
        (
            json!({"metadata": {"finalizers": ["example.com/keep"]}}),
            "metadata.finalizers",
        ),
        (
            json!({"metadata": {"labels": {"node-restriction.kubernetes.io/pool": "gold"}}}),
            "label node-restriction.kubernetes.io/pool",
        ),
        (
            json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}}),
            "label node-role.kubernetes.io/control-plane",
        ),
    ] {
        let e = refused(a.patch(&NODES, None, "a", &patch, PatchType::Merge).await);
        assert_eq!(e.code, 403, "{patch}: {e:?}");
        assert!(e.message.contains(says), "{patch}: {}", e.message);
    }
    // An admin's finalizer does not keep the credential alive through a delete.
    tc.client
        .patch(
            &NODES,
            None,
            "a",
            &json!({"metadata": {"finalizers": ["example.com/keep"]}}),
            PatchType::Merge,
        )
        .await?;
    tc.client.delete(&NODES, None, "a").await?;
    assert_eq!(refused(a.get(&NODES, None, "a").await).code, 401);
    // A node that joined but never registered frees its name when "deleted".
    let ghost = tc.node_client("ghost").await?;
    tc.client.delete(&NODES, None, "ghost").await?;
    assert_eq!(
        refused(ghost.list(&SERVICES, None, &ListParams::default()).await).code,
        401
    );
    let token = tc.join_token().await?;
    tugboat_agent::join::join(&tc.url, &token, "ghost").await?;
    // A method the API has no verb for is refused before anything is read.
    let r = tc
        .http(false)?
        .request(
            reqwest::Method::from_bytes(b"PURGE")?,
            format!(
                "{}/apis/apps/v1/namespaces/default/deployments/x/scale",
                tc.url
            ),
        )
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 405);
    tc.stop().await
}

#[tokio::test]
async fn no_service_can_be_pointed_at_a_node_itself() -> anyhow::Result<()> {
    let tc = TestController::start().await?;
    let slice = |ip: &str| {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "evil", "labels": {"kubernetes.io/service-name": "evil"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip]}],
            "ports": [{"port": 2375}]})
    };
    for ip in ["127.0.0.1", "169.254.169.254", "0.0.0.0"] {
        let e = refused(
            tc.client
                .create(
                    &tugboat_api::resource::ENDPOINTSLICES,
                    Some("default"),
                    &slice(ip),
                )
                .await,
        );
        assert_eq!(e.code, 422, "{ip}: {e:?}");
        assert!(
            e.message.contains("endpoints[0].addresses[0]"),
            "{}",
            e.message
        );
    }
    // And an edit token writes no endpoints at all (Kubernetes' edit since 1.22).
    let dir = tempfile::tempdir()?;
    let edit = tug(
        &tc.url,
        dir.path(),
        &["token", "create", "--role", "edit", "-n", "default"],
    )
    .await?;
    let edit = client_with(&tc, Some(edit.trim()))?;
    let e = refused(
        edit.create(
            &tugboat_api::resource::ENDPOINTSLICES,
            Some("default"),
            &slice("10.1.2.3"),
        )
        .await,
    );
    assert_eq!(e.code, 403, "{e:?}");
    tc.stop().await
}

#[tokio::test]
async fn without_tls_agents_still_register_and_run_pods() -> anyhow::Result<()> {
    let tc = TestController::start_tuned(|c| {
        c.security = tugboat_controller::Security::InsecureHttp;
    })
    .await?;
    assert!(tc.url.starts_with("http://"), "{}", tc.url);
    let agent = FakeAgent::start(&tc, "plain").await?;
    tc.client
        .create(&PODS, Some("default"), &pod("p", Some("plain"), json!({})))
        .await?;
    eventually("the pod runs on the plain-HTTP node", || async {
        let p = tc.client.get(&PODS, Some("default"), "p").await.ok()?;
        (p["status"]["phase"] == "Running").then_some(())
    })
    .await?;
    agent.stop().await?;
    tc.stop().await
}
