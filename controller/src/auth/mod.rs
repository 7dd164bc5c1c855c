//! Who is asking: every API request is authenticated here before it is routed,
//! then authorized per resource in [`authorize`].
//!
//! - A client certificate signed by the cluster CA names a user (CN) and groups
//!   (O), as in Kubernetes. `system:masters` is an admin; `system:node:NAME` in
//!   `system:nodes` is a node, accepted only with the very certificate the
//!   controller last issued to it (so deleting the Node revokes it).
//! - `Authorization: Bearer ID.SECRET` is an API token confined to one
//!   namespace and role.
//! - Anything else is anonymous: only `/healthz`, `/livez`, `/readyz`,
//!   `/version`, `/cacerts` and the join endpoint answer it; the rest is 401.
//!
//! With `--insecure-http` there is no TLS and every request is an admin's: the
//! controller's behaviour before authentication existed, for local experiments.

pub mod authorize;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tugboat_api::ApiError;
use tugboat_serve::PeerCertificates;
use tugboat_tls::ca::Authority;
use tugboat_tls::identity::{CertIdentity, GROUP_MASTERS};
use tugboat_tls::token::Token;

use crate::registry::Registry;
use crate::registry::credentials::{Role, TokenKind};
use crate::server::{ApiResponse, AppState};

/// Paths anonymous clients may use.
pub const PUBLIC_PATHS: [&str; 6] = [
    "/healthz",
    "/livez",
    "/readyz",
    "/version",
    "/cacerts",
    crate::server::join::JOIN_PATH,
];

/// What an authenticated user may be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// In `system:masters` (or anyone, with `--insecure-http`): may do everything.
    Admin,
    /// A node's credential: confined to its own Node, Lease and pods.
    Node(String),
    /// An API token: `role` within `namespace`.
    Token { namespace: String, role: Role },
    /// A valid certificate that grants nothing (the controller's own, say).
    Nobody,
}

/// The user a request was authenticated as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
    pub kind: Kind,
}

impl User {
    pub fn admin(name: &str) -> User {
        User {
            name: name.to_string(),
            groups: vec![GROUP_MASTERS.to_string()],
            kind: Kind::Admin,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.kind == Kind::Admin
    }
}

/// How the API server authenticates.
pub enum Mode {
    /// HTTPS with the cluster CA.
    Tls(Arc<Authority>),
    /// Plain HTTP, everyone an admin (`--insecure-http`).
    InsecureHttp,
}

pub struct Auth {
    pub mode: Mode,
    registry: Arc<Registry>,
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(401, "Unauthorized", message)
}

impl Auth {
    pub fn new(mode: Mode, registry: Arc<Registry>) -> Auth {
        Auth { mode, registry }
    }

    /// The CA, unless the server runs without TLS.
    pub fn ca(&self) -> Option<&Arc<Authority>> {
        match &self.mode {
            Mode::Tls(ca) => Some(ca),
            Mode::InsecureHttp => None,
        }
    }

    /// Who sent a request with these certificates and `Authorization` header:
    /// `Ok(None)` when it carries no credential, an error when the one it
    /// carries is refused.
    pub async fn authenticate_parts(
        &self,
        certs: Option<PeerCertificates>,
        bearer: Option<axum::http::HeaderValue>,
    ) -> Result<Option<User>, ApiError> {
        if let Some(PeerCertificates(chain)) = certs
            && let Some(leaf) = chain.first()
        {
            return self.certificate_user(leaf).await.map(Some);
        }
        if let Some(value) = bearer {
            return self.bearer_user(&value).await.map(Some);
        }
        Ok(None)
    }

    async fn certificate_user(&self, der: &[u8]) -> Result<User, ApiError> {
        let id = CertIdentity::from_der(der).map_err(|e| {
            unauthorized(format!("Unauthorized: unreadable client certificate: {e}"))
        })?;
        if let Some(node) = id.node() {
            let record = self.registry.node_credential(node).await?;
            if record.is_none_or(|r| r.fingerprint != id.fingerprint) {
                return Err(unauthorized(format!(
                    "Unauthorized: the credential of node {node} was revoked (its Node was deleted) or replaced; join it again with a token (`tug token create`, then `tug agent --token …`)"
                )));
            }
            return Ok(User {
                kind: Kind::Node(node.to_string()),
                name: id.user,
                groups: id.groups,
            });
        }
        let kind = if id.in_group(GROUP_MASTERS) {
            Kind::Admin
        } else {
            Kind::Nobody
        };
        Ok(User {
            name: id.user,
            groups: id.groups,
            kind,
        })
    }

    async fn bearer_user(&self, value: &axum::http::HeaderValue) -> Result<User, ApiError> {
        let refused =
            || unauthorized("Unauthorized: the bearer token is unknown, expired or deleted");
        let text = value.to_str().map_err(|_| refused())?;
        let Some(raw) = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
        else {
            return Err(unauthorized(
                "Unauthorized: only bearer tokens (Authorization: Bearer ID.SECRET) are accepted",
            ));
        };
        let token = Token::parse(raw).map_err(|_| refused())?;
        let record = self.registry.token(&token.id).await?.ok_or_else(refused)?;
        if record.kind != TokenKind::Api || !record.matches(&token) || record.expired() {
            return Err(refused());
        }
        let (Some(namespace), Some(role)) = (record.namespace, record.role) else {
            return Err(refused());
        };
        Ok(User {
            name: format!("tugboat:token:{}", record.id),
            groups: vec!["tugboat:tokens".to_string()],
            kind: Kind::Token { namespace, role },
        })
    }
}

/// The middleware in front of every route: attaches the [`User`] to the
/// request, or answers 401.
pub async fn middleware(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let public = PUBLIC_PATHS.contains(&req.uri().path());
    let authenticated = match state.auth.mode {
        Mode::InsecureHttp => Ok(Some(User::admin("system:admin"))),
        Mode::Tls(_) => {
            let certs = req.extensions().get::<PeerCertificates>().cloned();
            let bearer = req
                .headers()
                .get(axum::http::header::AUTHORIZATION)
                .cloned();
            state.auth.authenticate_parts(certs, bearer).await
        }
    };
    match authenticated {
        Ok(Some(user)) => {
            req.extensions_mut().insert(user);
            next.run(req).await
        }
        // A refused credential still may ask whether the server is up.
        Ok(None) | Err(_) if public => next.run(req).await,
        Ok(None) => ApiResponse(unauthorized(
            "Unauthorized: the request carried no credentials; use the admin kubeconfig (`tug kubeconfig`), a node credential or a bearer token",
        ))
        .into_response(),
        Err(e) => {
            tracing::debug!(path = req.uri().path(), error = %e.message, "refused a credential");
            ApiResponse(e).into_response()
        }
    }
}
