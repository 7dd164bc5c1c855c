//! Joining nodes and managing tokens, beside the Kubernetes API:
//!
//! - `GET /cacerts` (anonymous): the cluster CA, PEM. A joining agent compares
//!   its SHA-256 with the hash its token carries before it sends anything secret.
//! - `POST /v1-tugboat/join` (authenticated by the join token in the body):
//!   `{"token": "ID.SECRET", "node": "NAME", "csr": "PEM"}` → `{"certificate",
//!   "ca"}`: a client and serving certificate for `system:node:NAME`, signed for
//!   the key of the agent's CSR (the key never leaves the node). A name that
//!   already has a credential is refused (409).
//! - `/v1-tugboat/tokens` (admins): `POST` makes a join or API token and shows
//!   its secret once, `GET` lists them (never their secrets),
//!   `DELETE /v1-tugboat/tokens/ID` deletes one.
//!
//! Tokens are not Kubernetes objects (bootstrap tokens are Secrets there, and
//! Tugboat does not serve Secrets yet), hence these paths of its own.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tugboat_api::{ApiError, meta, validation};
use tugboat_tls::ca::Leaf;
use tugboat_tls::identity::{CertIdentity, GROUP_NODES, MAX_NODE_NAME, node_dns_name, node_user};
use tugboat_tls::token::{JoinToken, Token};

use super::{ApiResponse, AppState, json_response};
use crate::auth::User;
use crate::registry::credentials::{NodeCredential, Role, TokenKind, TokenRecord};

pub const JOIN_PATH: &str = "/v1-tugboat/join";
pub const TOKENS_PATH: &str = "/v1-tugboat/tokens";
/// The largest body these endpoints read.
const MAX_BODY: usize = 64 * 1024;
/// The longest a token may live.
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn no_tls() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "this controller serves plain HTTP (--insecure-http): there is no cluster CA, no tokens, and agents connect without joining",
    )
}

pub(super) fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(|e| ApiResponse(e).into_response())
}

pub(super) async fn read_json<T: for<'de> Deserialize<'de>>(body: Body) -> Result<T, ApiError> {
    let bytes: Bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("the body is larger than {MAX_BODY} bytes"),
        )
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not the JSON expected: {e}")))
}

pub async fn cacerts(State(state): State<Arc<AppState>>) -> Response {
    respond((|| {
        let ca = state.auth.ca().ok_or_else(no_tls)?;
        let mut resp = Response::new(Body::from(ca.cert_pem().to_string()));
        resp.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            "application/x-pem-file".parse().expect("static header"),
        );
        Ok(resp)
    })())
}

#[derive(Deserialize)]
struct JoinRequest {
    token: String,
    node: String,
    csr: String,
}

pub async fn join(State(state): State<Arc<AppState>>, body: Body) -> Response {
    respond(join_inner(&state, body).await)
}

async fn join_inner(state: &AppState, body: Body) -> Result<Response, ApiError> {
    let ca = state.auth.ca().ok_or_else(no_tls)?;
    let req: JoinRequest = read_json(body).await?;
    let refused = || {
        ApiError::new(
            401,
            "Unauthorized",
            "the join token is unknown, expired or deleted; make a new one on the controller with `tug token create`",
        )
    };
    let token = Token::parse(&req.token).map_err(|_| refused())?;
    let record = state.registry.token(&token.id).await?.ok_or_else(refused)?;
    if record.kind != TokenKind::Join || !record.matches(&token) || record.expired() {
        return Err(refused());
    }
    if let Some(why) = validation::dns1123_subdomain(&req.node) {
        return Err(ApiError::new(
            422,
            "Invalid",
            format!("node name {:?}: {why}", req.node),
        ));
    }
    if req.node.len() > MAX_NODE_NAME {
        return Err(ApiError::new(
            422,
            "Invalid",
            format!(
                "node name {:?}: at most {MAX_NODE_NAME} characters (its certificate names it {})",
                req.node,
                node_dns_name("NAME")
            ),
        ));
    }
    let cert_pem = ca
        .sign_csr(
            &req.csr,
            &Leaf {
                common_name: node_user(&req.node),
                groups: vec![GROUP_NODES.to_string()],
                // The agent serves its endpoints with this certificate too:
                // whoever connects checks it names the node they meant to reach.
                dns_names: vec![node_dns_name(&req.node)],
                server: true,
                client: true,
                ..Default::default()
            },
        )
        .map_err(|e| ApiError::bad_request(format!("csr: {e}")))?;
    let der = tugboat_tls::config::cert_chain(cert_pem.as_bytes(), "the node certificate")
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let id = CertIdentity::from_der(&der[0]).map_err(|e| ApiError::internal(e.to_string()))?;
    state
        .registry
        .record_node_credential(&NodeCredential {
            node: req.node.clone(),
            fingerprint: id.fingerprint,
            issued: meta::now_rfc3339(),
        })
        .await?;
    tracing::info!(node = %req.node, token = %record.id, "a node joined");
    Ok(json_response(
        StatusCode::OK,
        &json!({"certificate": cert_pem, "ca": ca.cert_pem()}),
        &[],
    ))
}

fn admin_only(user: Option<&User>) -> Result<(), ApiError> {
    match user {
        Some(u) if u.is_admin() => Ok(()),
        Some(u) => Err(ApiError::forbidden(format!(
            "User {:?} cannot manage tokens: only admins (group system:masters) can",
            u.name
        ))),
        None => Err(ApiError::new(401, "Unauthorized", "Unauthorized")),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenRequest {
    kind: TokenKind,
    /// 0: never expires.
    #[serde(default)]
    ttl_seconds: u64,
    #[serde(default)]
    description: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    role: Option<String>,
}

fn shown(r: &TokenRecord) -> serde_json::Value {
    json!({
        "id": r.id,
        "kind": r.kind,
        "created": r.created,
        "expires": r.expires,
        "description": r.description,
        "namespace": r.namespace,
        "role": r.role,
    })
}

pub async fn create_token(
    State(state): State<Arc<AppState>>,
    user: Option<Extension<User>>,
    body: Body,
) -> Response {
    respond(
        async {
            admin_only(user.as_deref())?;
            let ca = state.auth.ca().ok_or_else(no_tls)?;
            let req: TokenRequest = read_json(body).await?;
            if Duration::from_secs(req.ttl_seconds) > MAX_TTL {
                return Err(ApiError::bad_request(format!(
                    "ttlSeconds: at most {} (ten years), or 0 for a token that never expires",
                    MAX_TTL.as_secs()
                )));
            }
            if req.description.len() > 256 {
                return Err(ApiError::bad_request("description: at most 256 bytes"));
            }
            let (namespace, role) = match req.kind {
                TokenKind::Join => {
                    if req.namespace.is_some() || req.role.is_some() {
                        return Err(ApiError::bad_request(
                            "a join token has no namespace or role (they are for API tokens)",
                        ));
                    }
                    (None, None)
                }
                TokenKind::Api => {
                    let ns = req.namespace.filter(|n| !n.is_empty()).ok_or_else(|| {
                        ApiError::bad_request(
                            "namespace: an API token needs the namespace it acts in",
                        )
                    })?;
                    if let Some(why) = validation::dns1123_label(&ns) {
                        return Err(ApiError::bad_request(format!("namespace {ns:?}: {why}")));
                    }
                    let role = req.role.as_deref().unwrap_or("");
                    let role = Role::parse(role).ok_or_else(|| {
                        ApiError::bad_request(format!("role: expected view or edit, got {role:?}"))
                    })?;
                    (Some(ns), Some(role))
                }
            };
            let token = Token::generate();
            let now = jiff::Timestamp::now();
            let expires = (req.ttl_seconds > 0)
                .then(|| now + jiff::SignedDuration::from_secs(req.ttl_seconds as i64))
                .map(|t| t.to_string());
            let record = TokenRecord {
                id: token.id.clone(),
                kind: req.kind,
                secret_hash: token.secret_hash(),
                created: now.to_string(),
                expires,
                description: req.description,
                namespace,
                role,
            };
            state.registry.create_token(&record).await?;
            let revealed = match req.kind {
                TokenKind::Join => JoinToken {
                    ca_hash: ca.hash(),
                    token,
                }
                .reveal(),
                TokenKind::Api => token.reveal(),
            };
            let mut body = shown(&record);
            body["token"] = json!(revealed);
            Ok(json_response(StatusCode::CREATED, &body, &[]))
        }
        .await,
    )
}

pub async fn list_tokens(
    State(state): State<Arc<AppState>>,
    user: Option<Extension<User>>,
) -> Response {
    respond(
        async {
            admin_only(user.as_deref())?;
            state.auth.ca().ok_or_else(no_tls)?;
            let items: Vec<_> = state.registry.tokens().await?.iter().map(shown).collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({ "items": items }),
                &[],
            ))
        }
        .await,
    )
}

pub async fn delete_token(
    State(state): State<Arc<AppState>>,
    user: Option<Extension<User>>,
    Path(id): Path<String>,
) -> Response {
    respond(
        async {
            admin_only(user.as_deref())?;
            state.auth.ca().ok_or_else(no_tls)?;
            if !Token::is_id(&id) {
                return Err(ApiError::bad_request(format!(
                    "{id:?} is not a token ID (6 characters of a-z and 0-9, as `tug token list` shows)"
                )));
            }
            state.registry.delete_token(&id).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": id}}),
                &[],
            ))
        }
        .await,
    )
}
