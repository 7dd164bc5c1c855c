//! What the controller keeps about credentials, beside the API's objects but not
//! served by it: one record per node credential issued (its certificate's
//! fingerprint, so a node's requests are accepted only with the certificate it
//! was last given, and deleting the Node revokes it), and one per token (join and
//! API tokens; only a hash of the secret is kept).
//!
//! They live in the store under resource names no API path reaches, so they
//! share its durability (and, later, its replication) without being readable by
//! any client.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tugboat_api::ApiError;

use super::{Registry, store_error};
use crate::store::{Key, StoreError};

/// The store resource of node credential records.
pub const NODE_CREDENTIALS: &str = "nodecredentials.internal.tugboat.io";
/// The store resource of token records.
pub const TOKENS: &str = "tokens.internal.tugboat.io";

/// The most tokens kept at once (expired ones are dropped when listing).
pub const MAX_TOKENS: usize = 1000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCredential {
    pub node: String,
    /// SHA-256 of the issued certificate's DER, hex.
    pub fingerprint: String,
    /// RFC 3339.
    pub issued: String,
}

/// What a token lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Join the cluster once as a new node (`tug agent --token`).
    Join,
    /// Use the API as a bearer token, within one namespace and role.
    Api,
}

/// The roles an API token may hold in its namespace (Kubernetes' `view` and
/// `edit` cluster roles, bound in one namespace).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// get, list and watch (and pod logs).
    View,
    /// Everything on the namespace's objects.
    Edit,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "view" => Some(Role::View),
            "edit" => Some(Role::Edit),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::View => "view",
            Role::Edit => "edit",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub id: String,
    pub kind: TokenKind,
    /// SHA-256 of the secret, hex.
    pub secret_hash: String,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339; `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// For API tokens: the namespace and the role in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

impl TokenRecord {
    /// Past its expiry; one whose expiry cannot be read counts as expired.
    pub fn expired(&self) -> bool {
        match self.expires.as_deref() {
            None => false,
            Some(e) => e
                .parse::<jiff::Timestamp>()
                .map_or(true, |e| e <= jiff::Timestamp::now()),
        }
    }

    /// Whether `secret` is this token's, compared in constant time.
    pub fn matches(&self, token: &tugboat_tls::token::Token) -> bool {
        use subtle::ConstantTimeEq as _;
        token.id == self.id
            && bool::from(
                token
                    .secret_hash()
                    .as_bytes()
                    .ct_eq(self.secret_hash.as_bytes()),
            )
    }
}

fn to_value<T: Serialize>(name: &str, record: &T) -> Value {
    let mut v = serde_json::to_value(record).unwrap_or_default();
    // The store keeps its revision in `metadata`, as for every object.
    v["metadata"] = serde_json::json!({ "name": name });
    v
}

fn from_value<T: for<'de> Deserialize<'de>>(v: &Value) -> Option<T> {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
    }
    serde_json::from_value(v).ok()
}

impl Registry {
    pub async fn node_credential(&self, node: &str) -> Result<Option<NodeCredential>, ApiError> {
        let stored = self
            .store
            .get(&Key::new(NODE_CREDENTIALS, None, node))
            .await
            .map_err(store_error)?;
        Ok(stored.and_then(|s| from_value(&s.object)))
    }

    /// Records a new node credential; `AlreadyExists` (409) when the node has one.
    pub async fn record_node_credential(&self, cred: &NodeCredential) -> Result<(), ApiError> {
        self.store
            .create(
                &Key::new(NODE_CREDENTIALS, None, cred.node.as_str()),
                to_value(&cred.node, cred),
            )
            .await
            .map(|_| ())
            .map_err(|e| match e {
                StoreError::AlreadyExists(_) => ApiError::new(
                    409,
                    "AlreadyExists",
                    format!(
                        "node {} has already joined with another credential; if that machine is gone, delete the node (`tug delete node {}`) to free the name, or join with another --node name",
                        cred.node, cred.node
                    ),
                ),
                other => store_error(other),
            })
    }

    /// Forgets node `node`'s credential: its certificate is refused from now on.
    pub async fn revoke_node_credential(&self, node: &str) -> Result<bool, ApiError> {
        match self
            .store
            .delete(&Key::new(NODE_CREDENTIALS, None, node), None)
            .await
        {
            Ok(_) => {
                tracing::info!(node, "revoked the node's credential");
                Ok(true)
            }
            Err(StoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(store_error(e)),
        }
    }

    pub async fn token(&self, id: &str) -> Result<Option<TokenRecord>, ApiError> {
        let stored = self
            .store
            .get(&Key::new(TOKENS, None, id))
            .await
            .map_err(store_error)?;
        Ok(stored.and_then(|s| from_value(&s.object)))
    }

    /// Every token, expired ones removed on the way.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, ApiError> {
        let (items, _) = self.store.list(TOKENS, None).await.map_err(store_error)?;
        let mut out = Vec::new();
        for item in items {
            let Some(record) = from_value::<TokenRecord>(&item.object) else {
                continue;
            };
            if record.expired() {
                let _ = self.delete_token(&record.id).await;
                continue;
            }
            out.push(record);
        }
        Ok(out)
    }

    pub async fn create_token(&self, record: &TokenRecord) -> Result<(), ApiError> {
        if self.tokens().await?.len() >= MAX_TOKENS {
            return Err(ApiError::new(
                422,
                "Invalid",
                format!(
                    "there are already {MAX_TOKENS} tokens; delete some (`tug token list`, `tug token delete ID`)"
                ),
            ));
        }
        self.store
            .create(
                &Key::new(TOKENS, None, record.id.as_str()),
                to_value(&record.id, record),
            )
            .await
            .map(|_| ())
            .map_err(store_error)
    }

    pub async fn delete_token(&self, id: &str) -> Result<(), ApiError> {
        match self.store.delete(&Key::new(TOKENS, None, id), None).await {
            Ok(_) => Ok(()),
            Err(StoreError::NotFound(_)) => Err(ApiError::new(
                404,
                "NotFound",
                format!("token {id} not found (`tug token list` shows the tokens)"),
            )),
            Err(e) => Err(store_error(e)),
        }
    }
}
