//! Deletion: what a DELETE does to each kind (through its [`strategy`](super::strategy)),
//! preconditions, and orphaning dependents.

use serde_json::{Value, json};
use tugboat_api::resource::{self, ResourceInfo};
use tugboat_api::{ApiError, meta};

use super::strategy::{self, Deletion};
use super::{
    CONFLICT_RETRIES, DeleteOptions, Propagation, Registry, Subresource, conflict, store_error,
};
use crate::store::StoreError;

impl Registry {
    /// DELETE. Bound pods and objects with finalizers are marked for deletion
    /// (`deletionTimestamp`) and finished later; everything else goes at once. A
    /// namespace is marked `Terminating` and emptied by the namespace controller.
    pub async fn delete(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let key = Self::key(info, ns, name);
        let kind = strategy::of(info);
        kind.validate_delete(name)?;
        // Deleting a Node revokes its credential first, and fails if it cannot:
        // a finalizer on the Node, or a crash between the two, must not leave a
        // credential whose Node is gone. A credential with no Node at all
        // (joined, never registered) is revoked this way too.
        let is_node = info == &resource::NODES && !opts.dry_run;
        let mut revoked = false;
        for _ in 0..CONFLICT_RETRIES {
            let Some(current) = self.store.get(&key).await.map_err(store_error)? else {
                if is_node && self.revoke_node_credential(name).await? {
                    return Ok(json!({
                        "kind": "Status", "apiVersion": "v1", "status": "Success",
                        "message": format!("node {name} has no Node object; its credential is revoked"),
                        "details": {"name": name, "kind": "nodes"},
                    }));
                }
                return Err(ApiError::not_found(&info.store_name(), name));
            };
            let obj = &*current.object;
            if let Some(uid) = &opts.precondition_uid
                && meta::uid(obj) != Some(uid.as_str())
            {
                return Err(ApiError::conflict(
                    &info.store_name(),
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta::uid(obj).unwrap_or("")
                    ),
                ));
            }
            if let Some(rv) = &opts.precondition_resource_version
                && meta::resource_version(obj) != Some(rv.as_str())
            {
                return Err(conflict(info, name));
            }
            if is_node && !revoked {
                self.revoke_node_credential(name).await?;
                revoked = true;
            }
            if opts.propagation == Propagation::Orphan && !opts.dry_run {
                self.orphan_dependents(obj).await?;
            }
            let deletion = kind.deletion(obj, opts);
            if deletion != Deletion::Now {
                let graceful = match deletion {
                    Deletion::Graceful { grace_seconds } => Some(grace_seconds),
                    _ => None,
                };
                if meta::is_deleting(obj) && graceful.is_none() {
                    return Ok(obj.clone());
                }
                let mut marked = obj.clone();
                let m = meta::metadata_mut(&mut marked);
                if !meta::is_deleting(obj) {
                    m.insert("deletionTimestamp".into(), json!(meta::now_rfc3339()));
                }
                if let Some(grace) = graceful {
                    // A second delete may shorten the grace period, never lengthen it.
                    let previous = obj
                        .pointer("/metadata/deletionGracePeriodSeconds")
                        .and_then(Value::as_i64);
                    if previous.is_some_and(|p| p <= grace) {
                        return Ok(obj.clone());
                    }
                    m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                }
                kind.prepare_for_mark(&mut marked);
                if opts.dry_run {
                    return Ok(marked);
                }
                match self
                    .store
                    .update(&key, marked, Some(current.revision))
                    .await
                {
                    Ok(stored) => return Ok((*stored.object).clone()),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(store_error(e)),
                }
            }
            if opts.dry_run {
                return Ok(obj.clone());
            }
            match self.store.delete(&key, Some(current.revision)).await {
                Ok(stored) => {
                    self.release(info, &stored.object).await;
                    return Ok((*stored.object).clone());
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound(_)) => {
                    return Err(ApiError::not_found(&info.store_name(), name));
                }
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(conflict(info, name))
    }

    /// Removes the object now, whatever its grace period or finalizers (the agent's
    /// last word on a pod, the namespace controller's on a namespace).
    pub async fn delete_now(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        match self.store.delete(&Self::key(info, ns, name), None).await {
            Ok(stored) => {
                self.release(info, &stored.object).await;
                Ok((*stored.object).clone())
            }
            Err(StoreError::NotFound(_)) => Err(ApiError::not_found(&info.store_name(), name)),
            Err(e) => Err(store_error(e)),
        }
    }

    /// Drops `owner`'s references from everything that names it.
    async fn orphan_dependents(&self, owner: &Value) -> Result<(), ApiError> {
        let Some(uid) = meta::uid(owner) else {
            return Ok(());
        };
        for info in resource::ALL.iter().copied().filter(|r| r.namespaced) {
            for dep in self.list_all(info, meta::namespace(owner)).await? {
                if !meta::owner_uids(&dep).contains(&uid) {
                    continue;
                }
                let name = meta::name(&dep).unwrap_or("").to_string();
                let result = self
                    .update_with(info, meta::namespace(&dep), &name, Subresource::Main, |o| {
                        let Some(refs) = o
                            .pointer_mut("/metadata/ownerReferences")
                            .and_then(Value::as_array_mut)
                        else {
                            return false;
                        };
                        let before = refs.len();
                        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
                        refs.len() != before
                    })
                    .await;
                match result {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}
