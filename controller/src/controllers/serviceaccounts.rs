//! The serviceaccounts controller: every namespace has a `default`
//! ServiceAccount (made again if deleted), as Kubernetes' controller of that
//! name keeps it. The registry already makes it with each new namespace; this
//! covers namespaces from before and accounts deleted since.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use tokio_util::sync::CancellationToken;
use tugboat_api::meta;
use tugboat_api::resource::{NAMESPACES, SERVICEACCOUNTS};
use tugboat_runtime::ObjectRef;
use tugboat_runtime::controller::{Action, Controller, backoff_policy};

use super::Error;
use crate::registry::Registry;
use crate::registry::policy::DEFAULT_SERVICE_ACCOUNT;

pub async fn run(registry: Arc<Registry>, shutdown: CancellationToken) {
    // A change to a namespace's `default` account (its deletion above all)
    // looks at the namespace again.
    let of_default =
        Arc::new(
            |sa: &serde_json::Value| match (meta::name(sa), meta::namespace(sa)) {
                (Some(DEFAULT_SERVICE_ACCOUNT), Some(ns)) => vec![ObjectRef::new(None, ns)],
                _ => Vec::new(),
            },
        );
    Controller::new("serviceaccounts", registry.clone(), &NAMESPACES)
        .watches(&SERVICEACCOUNTS, of_default)
        .run(reconcile, backoff_policy, registry, shutdown)
        .await;
}

pub async fn reconcile(ns: Arc<Namespace>, registry: Arc<Registry>) -> Result<Action, Error> {
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = ns.metadata.name.as_deref().unwrap_or("");
    if registry
        .try_get(&SERVICEACCOUNTS, Some(name), DEFAULT_SERVICE_ACCOUNT)
        .await?
        .is_none()
    {
        tracing::info!(namespace = name, "creating the default service account");
        registry
            .ensure_service_account(name, DEFAULT_SERVICE_ACCOUNT)
            .await;
    }
    Ok(Action::await_change())
}
