//! Joining the cluster, k3s's way: the join token carries the SHA-256 of the
//! cluster CA, so the agent first fetches `/cacerts` (trusting nothing yet),
//! checks the hash, and only then — over TLS checked against that CA — sends
//! the token's secret with a CSR for a key it made itself. It keeps what it gets
//! as `STATE_DIR/node.kubeconfig` (mode 0600); later starts reuse it and need no
//! token.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tugboat_tls::config::{ServerCheck, client_config};
use tugboat_tls::identity::{CertIdentity, node_user};
use tugboat_tls::kubeconfig::Kubeconfig;
use tugboat_tls::token::JoinToken;

use crate::tls::NodeTls;

/// The credential file in the agent's state directory.
pub const NODE_KUBECONFIG: &str = "node.kubeconfig";
/// The largest answer read from the join endpoints.
const MAX_ANSWER: usize = 256 * 1024;
const TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("{0}")]
    Token(#[source] tugboat_tls::TlsError),
    #[error(
        "the server at {server} is not the cluster the token is for: its CA's SHA-256 is {got}, the token expects {expected}; nothing secret was sent"
    )]
    WrongCa {
        server: String,
        expected: String,
        got: String,
    },
    #[error("cannot reach {url}: {message}")]
    Http { url: String, message: String },
    #[error("the server refused to join node {node}: {message}")]
    Refused { node: String, message: String },
    #[error("{0}")]
    Tls(#[from] tugboat_tls::TlsError),
    #[error(
        "no node credential in {path}: pass --token (print one on the controller with `tug token create`) to join"
    )]
    NoCredential { path: PathBuf },
    #[error("{path} holds the credential of {holder}, not of node {node}; use another --state-dir")]
    OtherNode {
        path: PathBuf,
        holder: String,
        node: String,
    },
    #[error("joining needs an https:// server URL, got {0}")]
    NotHttps(String),
}

fn http_error(url: &str) -> impl Fn(reqwest::Error) -> JoinError + '_ {
    move |e| JoinError::Http {
        url: url.to_string(),
        message: error_chain(&e),
    }
}

/// An error with its causes, which reqwest keeps apart.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn body_limited(resp: reqwest::Response, url: &str) -> Result<Vec<u8>, JoinError> {
    let mut resp = resp;
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(http_error(url))? {
        out.extend_from_slice(&chunk);
        if out.len() > MAX_ANSWER {
            return Err(JoinError::Http {
                url: url.to_string(),
                message: format!("the answer is larger than {MAX_ANSWER} bytes"),
            });
        }
    }
    Ok(out)
}

/// Joins node `node` to the cluster at `server` with `token`; returns the node's
/// kubeconfig (not yet written anywhere). `server` may name several controllers
/// of one cluster (`https://a:6443,https://b:6443`): the first that answers
/// takes the join, and the kubeconfig keeps them all, so the agent fails over.
pub async fn join(server: &str, token: &str, node: &str) -> Result<Kubeconfig, JoinError> {
    let servers: Vec<&str> = server.split(',').map(str::trim).collect();
    let mut last = None;
    for one in &servers {
        match join_one(one, token, node).await {
            Ok(mut config) => {
                if servers.len() > 1 {
                    for cluster in &mut config.clusters {
                        cluster.cluster.server = Some(servers.join(","));
                    }
                }
                return Ok(config);
            }
            Err(e @ JoinError::Http { .. }) if servers.len() > 1 => {
                tracing::warn!(server = one, error = %e, "cannot join through this controller; trying the next");
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| JoinError::NotHttps(server.to_string())))
}

async fn join_one(server: &str, token: &str, node: &str) -> Result<Kubeconfig, JoinError> {
    let server = server.trim_end_matches('/');
    if !server.starts_with("https://") {
        return Err(JoinError::NotHttps(server.to_string()));
    }
    let token = JoinToken::parse(token).map_err(JoinError::Token)?;
    tugboat_tls::install_default_provider();
    // 1. The CA, from whoever answers: nothing is trusted, nothing is sent.
    let url = format!("{server}/cacerts");
    let anyone = reqwest::Client::builder()
        .use_preconfigured_tls(client_config(None, None, ServerCheck::Nothing)?)
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(http_error(&url))?;
    let resp = anyone.get(&url).send().await.map_err(http_error(&url))?;
    if !resp.status().is_success() {
        return Err(JoinError::Http {
            url: url.clone(),
            message: format!("answered {}", resp.status()),
        });
    }
    let ca_pem = body_limited(resp, &url).await?;
    let got = tugboat_tls::sha256_hex(&ca_pem);
    if got != token.ca_hash {
        return Err(JoinError::WrongCa {
            server: server.to_string(),
            expected: token.ca_hash,
            got,
        });
    }
    // 2. The secret and a CSR, to the server that holds that CA's certificate.
    let url = format!("{server}/v1-tugboat/join");
    let (key_pem, csr) = tugboat_tls::ca::key_and_csr(&node_user(node))?;
    let trusted = reqwest::Client::builder()
        .use_preconfigured_tls(client_config(Some(&ca_pem), None, ServerCheck::Hostname)?)
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(http_error(&url))?;
    let resp = trusted
        .post(&url)
        .json(&serde_json::json!({"token": token.token.reveal(), "node": node, "csr": csr}))
        .send()
        .await
        .map_err(http_error(&url))?;
    let status = resp.status();
    let body = body_limited(resp, &url).await?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{status}"));
        return Err(JoinError::Refused {
            node: node.to_string(),
            message,
        });
    }
    #[derive(Deserialize)]
    struct Joined {
        certificate: String,
    }
    let joined: Joined = serde_json::from_slice(&body).map_err(|e| JoinError::Http {
        url: url.clone(),
        message: format!("unexpected answer: {e}"),
    })?;
    let ca = String::from_utf8_lossy(&ca_pem).into_owned();
    Ok(Kubeconfig::single(
        "tugboat",
        &node_user(node),
        server,
        &ca,
        Some((&joined.certificate, &key_pem)),
        None,
    ))
}

/// The node's credential: from `STATE_DIR/node.kubeconfig` when it is there
/// (the server URL too, unless `server` says otherwise), else by joining with
/// `token` and keeping the result there. Returns the server URL and the
/// credential.
pub async fn load_or_join(
    server: Option<&str>,
    token: Option<&str>,
    node: &str,
    state_dir: &Path,
) -> Result<(String, NodeTls), JoinError> {
    let path = state_dir.join(NODE_KUBECONFIG);
    let config = match Kubeconfig::read(&path)? {
        Some(config) => config,
        None => {
            let (Some(server), Some(token)) = (server, token) else {
                return Err(JoinError::NoCredential { path });
            };
            let config = join(server, token, node).await?;
            config.write(&path)?;
            tracing::info!(node, credential = %path.display(), "joined the cluster");
            config
        }
    };
    let r = config.resolve(None, &path.display().to_string())?;
    let missing = |what: &str| {
        JoinError::Tls(tugboat_tls::TlsError::Kubeconfig {
            path: path.display().to_string(),
            message: format!("no {what}"),
        })
    };
    let ca = r
        .credentials
        .ca_pem
        .ok_or_else(|| missing("certificate-authority-data"))?;
    let cert = r
        .credentials
        .client_cert_pem
        .ok_or_else(|| missing("client-certificate-data"))?;
    let key = r
        .credentials
        .client_key_pem
        .ok_or_else(|| missing("client-key-data"))?;
    let der = tugboat_tls::config::cert_chain(&cert, "the node certificate")?;
    let holder = CertIdentity::from_der(&der[0])?.user;
    if holder != node_user(node) {
        return Err(JoinError::OtherNode {
            path,
            holder,
            node: node.to_string(),
        });
    }
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    let tls = NodeTls::new(&text(ca), &text(cert), &text(key))?;
    let server = server.map(str::to_string).unwrap_or(r.server);
    Ok((server, tls))
}
