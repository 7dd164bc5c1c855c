//! The namespace lifecycle: a namespace marked for deletion (`Terminating`) has
//! everything in it deleted, then goes itself.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use tokio_util::sync::CancellationToken;
use tugboat_api::resource::{self, NAMESPACES};
use tugboat_api::{ApiError, meta};

use super::Error;
use crate::registry::{DeleteOptions, Registry};
use tugboat_runtime::controller::{Action, Controller, backoff_policy};

pub async fn run(registry: Arc<Registry>, shutdown: CancellationToken) {
    Controller::new("namespace", registry.clone(), &NAMESPACES)
        .run(reconcile, backoff_policy, registry, shutdown)
        .await;
}

pub async fn reconcile(ns: Arc<Namespace>, registry: Arc<Registry>) -> Result<Action, Error> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let name = ns.metadata.name.clone().unwrap_or_default();
    let mut remaining = 0;
    for info in resource::ALL.iter().copied().filter(|r| r.namespaced) {
        for obj in registry.list_all(info, Some(&name)).await? {
            remaining += 1;
            if meta::is_deleting(&obj) && info.kind != "Pod" {
                continue;
            }
            let obj_name = meta::name(&obj).unwrap_or("");
            match registry
                .delete(info, Some(&name), obj_name, &DeleteOptions::default())
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if remaining > 0 {
        tracing::debug!(namespace = %name, remaining, "waiting for the namespace to empty");
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    match registry.delete_now(&NAMESPACES, None, &name).await {
        Ok(_) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => {
            return Err(Error::Api(ApiError::internal(format!(
                "deleting namespace {name}: {}",
                e.message
            ))));
        }
    }
    tracing::info!(namespace = %name, "namespace deleted");
    // A system namespace marked for deletion by an older version, before they
    // were protected, comes straight back.
    if crate::registry::SYSTEM_NAMESPACES.contains(&name.as_str()) {
        registry.ensure_namespace(&name).await?;
    }
    Ok(Action::await_change())
}
