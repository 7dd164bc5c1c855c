//! Typed reads and writes for the controllers: objects decode into the
//! k8s-openapi types here, and statuses are written from them, so reconcilers
//! never look up JSON paths. The store and the HTTP edge keep JSON.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tugboat_api::resource::ResourceInfo;
use tugboat_api::{ApiError, meta};

use super::{Registry, Subresource, WriteOptions};

/// A stored object that does not decode as its kind: it passed admission, so
/// this is Tugboat's bug, answered as an internal error naming the object.
fn undecodable(info: &ResourceInfo, obj: &Value, e: serde_json::Error) -> ApiError {
    ApiError::internal(format!(
        "stored {} {:?} does not decode: {e}",
        info.store_name(),
        meta::name(obj).unwrap_or("")
    ))
}

pub fn decode<K: DeserializeOwned>(info: &ResourceInfo, obj: &Value) -> Result<K, ApiError> {
    K::deserialize(obj).map_err(|e| undecodable(info, obj, e))
}

pub fn encode<K: Serialize>(info: &ResourceInfo, obj: &K) -> Result<Value, ApiError> {
    serde_json::to_value(obj)
        .map_err(|e| ApiError::internal(format!("encoding a {}: {e}", info.kind)))
}

impl Registry {
    /// Everything of `info` in `ns` (every namespace when `None`), typed.
    pub async fn list_typed<K: DeserializeOwned>(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
    ) -> Result<Vec<K>, ApiError> {
        self.list_all(info, ns)
            .await?
            .iter()
            .map(|o| decode(info, o))
            .collect()
    }

    /// [`Registry::list_controlled`], typed.
    pub async fn list_controlled_typed<K: DeserializeOwned>(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        owner_uid: &str,
    ) -> Result<Vec<K>, ApiError> {
        self.list_controlled(info, ns, owner_uid)
            .await?
            .iter()
            .map(|o| decode(info, o))
            .collect()
    }

    /// One object, typed; `None` when absent.
    pub async fn get_typed<K: DeserializeOwned>(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<K>, ApiError> {
        match self.try_get(info, ns, name).await? {
            Some(o) => Ok(Some(decode(info, &o)?)),
            None => Ok(None),
        }
    }

    /// Creates `obj` and returns it as stored.
    pub async fn create_typed<K: Serialize + DeserializeOwned>(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        obj: &K,
    ) -> Result<K, ApiError> {
        let written = self
            .create(info, ns, encode(info, obj)?, WriteOptions::default())
            .await?;
        decode(info, &written.object)
    }

    /// Read-modify-write of the typed object: `change` edits it and returns
    /// false when nothing needs writing; retried on conflict. Returns the object
    /// written, if anything was.
    pub async fn update_typed<K: Serialize + DeserializeOwned>(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        sub: Subresource,
        mut change: impl FnMut(&mut K) -> bool,
    ) -> Result<Option<K>, ApiError> {
        let mut failed: Option<ApiError> = None;
        let written = self
            .update_with(info, ns, name, sub, |o| {
                let mut typed: K = match decode(info, o) {
                    Ok(t) => t,
                    Err(e) => {
                        failed = Some(e);
                        return false;
                    }
                };
                if !change(&mut typed) {
                    return false;
                }
                match encode(info, &typed) {
                    Ok(v) => {
                        *o = v;
                        true
                    }
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                }
            })
            .await?;
        if let Some(e) = failed {
            return Err(e);
        }
        written.map(|w| decode(info, &w)).transpose()
    }

    /// Writes `status` through the status subresource when it differs from the
    /// stored one; returns whether it wrote.
    pub async fn write_status<S: Serialize>(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        status: &S,
    ) -> Result<bool, ApiError> {
        let status = encode(info, status)?;
        let written = self
            .update_with(info, ns, name, Subresource::Status, |o| {
                if o.get("status") == Some(&status) {
                    return false;
                }
                o["status"] = status.clone();
                true
            })
            .await?;
        Ok(written.is_some())
    }
}
