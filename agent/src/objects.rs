//! Where pod workers read the ConfigMaps and Secrets their pods refer to (env
//! `valueFrom`/`envFrom`, `configMap`/`secret`/`projected` volumes): a small
//! trait, [`ObjectSource`], so unit tests need no API server; [`ApiObjects`]
//! reads them from the controller (`GET /api/v1/namespaces/{ns}/configmaps/{name}`
//! and `…/secrets/{name}`, which the node authorizer allows a node for the
//! objects its pods refer to).

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use tugboat_api::Client;

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The API could not answer; the message never holds a Secret's data.
    #[error("cannot read {kind} {namespace}/{name}: {message}")]
    Unavailable {
        kind: &'static str,
        namespace: String,
        name: String,
        message: String,
    },
}

/// ConfigMaps and Secrets by namespace and name; `Ok(None)` when there is no such
/// object.
#[async_trait::async_trait]
pub trait ObjectSource: Send + Sync + 'static {
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, ObjectError>;
    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, ObjectError>;
}

/// Reads them from the API server, one GET each time (workers ask again at each
/// sync, which is what makes mounted files follow edits).
pub struct ApiObjects {
    pub client: Client,
}

impl ApiObjects {
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        kind: &'static str,
        plural: &str,
        ns: &str,
        name: &str,
    ) -> Result<Option<T>, ObjectError> {
        let unavailable = |message: String| ObjectError::Unavailable {
            kind,
            namespace: ns.to_string(),
            name: name.to_string(),
            message,
        };
        let path = format!("/api/v1/namespaces/{ns}/{plural}/{name}");
        match self.client.get_path(&path).await {
            Ok(value) => serde_json::from_value(value)
                .map(Some)
                // serde's message names the field, never its value.
                .map_err(|e| unavailable(format!("does not decode: {e}"))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(unavailable(e.to_string())),
        }
    }
}

#[async_trait::async_trait]
impl ObjectSource for ApiObjects {
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, ObjectError> {
        self.get("configmap", "configmaps", ns, name).await
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, ObjectError> {
        self.get("secret", "secrets", ns, name).await
    }
}

/// ConfigMaps and Secrets held in memory (unit tests; hollow nodes with no
/// objects).
#[derive(Default)]
pub struct MemoryObjects {
    config_maps: Mutex<HashMap<(String, String), ConfigMap>>,
    secrets: Mutex<HashMap<(String, String), Secret>>,
}

impl MemoryObjects {
    pub fn put_config_map(&self, ns: &str, name: &str, data: &[(&str, &str)]) {
        let cm = ConfigMap {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(ns.to_string()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        };
        lock(&self.config_maps).insert((ns.to_string(), name.to_string()), cm);
    }

    pub fn put_secret(&self, ns: &str, name: &str, data: &[(&str, &[u8])]) {
        let secret = Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(ns.to_string()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), k8s_openapi::ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        lock(&self.secrets).insert((ns.to_string(), name.to_string()), secret);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait::async_trait]
impl ObjectSource for MemoryObjects {
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, ObjectError> {
        Ok(lock(&self.config_maps)
            .get(&(ns.to_string(), name.to_string()))
            .cloned())
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, ObjectError> {
        Ok(lock(&self.secrets)
            .get(&(ns.to_string(), name.to_string()))
            .cloned())
    }
}
