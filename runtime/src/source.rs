//! Where lists and watches come from. The controllers read the in-process
//! registry, the agent reads the API over HTTP; both are a [`Source`], so the
//! [`watcher`](crate::watcher) and everything above it are the same code.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::Value;
use tugboat_api::resource::ResourceInfo;
use tugboat_api::{Client, ClientError, ListParams};

/// What to list and watch: one resource, in one namespace or all, filtered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchParams {
    /// `None`: every namespace (and cluster-scoped resources).
    pub namespace: Option<String>,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
}

impl WatchParams {
    pub fn fields(selector: impl Into<String>) -> WatchParams {
        WatchParams {
            field_selector: Some(selector.into()),
            ..Default::default()
        }
    }
}

/// A list: the objects that could be read, why the others could not, and the
/// revision to watch from.
#[derive(Clone, Debug, Default)]
pub struct RawList {
    pub items: Vec<Arc<Value>>,
    /// One line per object that could not be read (`item 3: …`).
    pub undecodable: Vec<String>,
    pub resource_version: String,
}

/// One change on a watch.
#[derive(Clone, Debug)]
pub enum RawEvent {
    Added(Arc<Value>),
    Modified(Arc<Value>),
    /// The object's last state, with the deletion's resourceVersion.
    Deleted(Arc<Value>),
    /// Nothing changed up to this resourceVersion.
    Bookmark(String),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// 410: the history no longer reaches the resourceVersion asked for; relist.
    #[error("the watch history is gone: {0}")]
    Gone(String),
    /// An object the source sent cannot be read; resuming would replay it.
    #[error("an object cannot be read: {0}")]
    Decode(String),
    /// Anything else (connection refused, server error…): retry later.
    #[error("{0}")]
    Other(String),
}

pub type EventStream = BoxStream<'static, Result<RawEvent, SourceError>>;

#[async_trait::async_trait]
pub trait Source: Send + Sync + 'static {
    /// The objects now, and the resourceVersion of that moment.
    async fn list(
        &self,
        resource: &'static ResourceInfo,
        params: &WatchParams,
    ) -> Result<RawList, SourceError>;

    /// The changes after `resource_version` (exclusive). The stream may end at
    /// any time; the caller resumes from the last resourceVersion it saw.
    async fn watch(
        &self,
        resource: &'static ResourceInfo,
        params: &WatchParams,
        resource_version: &str,
    ) -> Result<EventStream, SourceError>;

    /// One object as it is now; `None` when there is no such object.
    async fn get(
        &self,
        resource: &'static ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Arc<Value>>, SourceError>;
}

fn client_error(e: ClientError) -> SourceError {
    match &e {
        ClientError::Decode { message, .. } => SourceError::Decode(message.clone()),
        _ if e.api().is_some_and(|a| a.code == 410) => SourceError::Gone(e.to_string()),
        _ => SourceError::Other(e.to_string()),
    }
}

fn list_params(p: &WatchParams) -> ListParams {
    ListParams {
        label_selector: p.label_selector.clone(),
        field_selector: p.field_selector.clone(),
    }
}

/// The API over HTTP (what the agent reads).
#[async_trait::async_trait]
impl Source for Client {
    async fn get(
        &self,
        resource: &'static ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Arc<Value>>, SourceError> {
        match Client::get(self, resource, namespace, name).await {
            Ok(v) => Ok(Some(Arc::new(v))),
            Err(e) if e.api().is_some_and(|a| a.code == 404) => Ok(None),
            Err(e) => Err(client_error(e)),
        }
    }

    async fn list(
        &self,
        resource: &'static ResourceInfo,
        params: &WatchParams,
    ) -> Result<RawList, SourceError> {
        let list = self
            .list_lenient(resource, params.namespace.as_deref(), &list_params(params))
            .await
            .map_err(client_error)?;
        Ok(RawList {
            items: list.items.into_iter().map(Arc::new).collect(),
            undecodable: list.undecodable,
            // A server that gives no resourceVersion gets watched from "now".
            resource_version: list.resource_version.unwrap_or_default(),
        })
    }

    async fn watch(
        &self,
        resource: &'static ResourceInfo,
        params: &WatchParams,
        resource_version: &str,
    ) -> Result<EventStream, SourceError> {
        let rv = (!resource_version.is_empty()).then_some(resource_version);
        let stream = Client::watch(
            self,
            resource,
            params.namespace.as_deref(),
            &list_params(params),
            rv,
        )
        .await
        .map_err(client_error)?;
        Ok(stream
            .map(|item| {
                let ev = item.map_err(client_error)?;
                let object = ev.object;
                match ev.event_type.as_str() {
                    "ADDED" => Ok(RawEvent::Added(Arc::new(object))),
                    "MODIFIED" => Ok(RawEvent::Modified(Arc::new(object))),
                    "DELETED" => Ok(RawEvent::Deleted(Arc::new(object))),
                    "BOOKMARK" => Ok(RawEvent::Bookmark(
                        tugboat_api::meta::resource_version(&object)
                            .unwrap_or_default()
                            .to_string(),
                    )),
                    "ERROR" => {
                        let message = object["message"].as_str().unwrap_or("").to_string();
                        if object["code"] == 410 {
                            Err(SourceError::Gone(message))
                        } else {
                            Err(SourceError::Other(format!("watch error: {message}")))
                        }
                    }
                    other => Err(SourceError::Other(format!(
                        "watch event of unknown type {other:?}"
                    ))),
                }
            })
            .boxed())
    }
}
