//! The registry as a [`Source`] of lists and watches, so the controllers run on
//! the same watcher as the agent (which reads the API over HTTP).

use std::sync::Arc;

use futures::StreamExt;
use serde_json::Value;
use tugboat_api::ApiError;
use tugboat_api::resource::ResourceInfo;
use tugboat_api::selector::{FieldSelector, Selector};
use tugboat_runtime::{EventStream, RawEvent, RawList, Source, SourceError, WatchParams};

use crate::registry::Registry;

fn source_error(e: ApiError) -> SourceError {
    if e.code == 410 {
        SourceError::Gone(e.message)
    } else {
        SourceError::Other(e.message)
    }
}

fn selectors(p: &WatchParams) -> Result<(Selector, FieldSelector), SourceError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        SourceError::Other(format!("the watcher's {what} selector: {e}"))
    };
    let labels = match &p.label_selector {
        Some(l) => Selector::parse(l).map_err(|e| bad("label", &e))?,
        None => Selector::everything(),
    };
    let fields = match &p.field_selector {
        Some(f) => FieldSelector::parse(f).map_err(|e| bad("field", &e))?,
        None => FieldSelector::default(),
    };
    Ok((labels, fields))
}

#[async_trait::async_trait]
impl Source for Registry {
    async fn get(
        &self,
        resource: &'static ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Arc<Value>>, SourceError> {
        self.try_get(resource, namespace, name)
            .await
            .map_err(source_error)
    }

    async fn list(
        &self,
        resource: &'static ResourceInfo,
        params: &WatchParams,
    ) -> Result<RawList, SourceError> {
        let (labels, fields) = selectors(params)?;
        let (items, rev) = Registry::list(
            self,
            resource,
            params.namespace.as_deref(),
            &labels,
            &fields,
        )
        .await
        .map_err(source_error)?;
        Ok(RawList {
            items,
            undecodable: Vec::new(),
            resource_version: rev.to_string(),
        })
    }

    async fn watch(
        &self,
        resource: &'static ResourceInfo,
        params: &WatchParams,
        resource_version: &str,
    ) -> Result<EventStream, SourceError> {
        let (labels, fields) = selectors(params)?;
        let rev = resource_version.parse().map_err(|_| {
            SourceError::Other(format!(
                "resourceVersion {resource_version:?} is not a revision"
            ))
        })?;
        let stream = Registry::watch(
            self,
            resource,
            params.namespace.as_deref(),
            labels,
            fields,
            crate::registry::WatchStart::After(rev),
        )
        .await
        .map_err(source_error)?;
        Ok(stream
            .live
            .map(|item| {
                let item = item.map_err(source_error)?;
                Ok(match item.event_type {
                    "ADDED" => RawEvent::Added(item.object),
                    "DELETED" => RawEvent::Deleted(item.object),
                    _ => RawEvent::Modified(item.object),
                })
            })
            .boxed())
    }
}
