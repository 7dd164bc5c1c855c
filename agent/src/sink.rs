//! Where a pod's worker writes what it found: the pod's status, its release once
//! its containers are gone, and events about it. [`ApiSink`] writes to the
//! controller over HTTP; tests give the worker an in-memory one instead.
//!
//! This is the worker's HTTP edge: pods go out and come back as JSON here, and
//! typed everywhere behind it.

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tugboat_api::resource::PODS;
use tugboat_api::{Client, ClientError, PatchType};
use tugboat_runtime::events::{EventType, Recorder};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Api(#[from] ClientError),
    #[error("cannot encode the status of pod {pod}: {source}")]
    Encode {
        pod: String,
        #[source]
        source: serde_json::Error,
    },
}

/// What a worker writes about its pod.
#[async_trait::async_trait]
pub trait PodSink: Send + Sync + 'static {
    /// Replaces the pod's status (a merge patch: the lists go whole, the agent
    /// owns every condition and container status it writes). The pod as stored
    /// after, `Ok(None)` when the pod is gone or its answer cannot be read.
    async fn patch_status(&self, pod: &Pod, status: &PodStatus) -> Result<Option<Pod>, SinkError>;

    /// Tells the API the pod's containers are gone, so the object can go. A pod
    /// already gone is fine.
    async fn release(&self, pod: &Pod) -> Result<(), SinkError>;

    /// Records an event about the pod. A report, never part of the work: it does
    /// not fail.
    async fn event(&self, pod: &Pod, event_type: EventType, reason: &str, message: &str);
}

/// A pod's namespace and name, for logs and requests.
pub fn pod_key(pod: &Pod) -> (&str, &str) {
    (
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or(""),
    )
}

/// The controller's API over HTTP, events through the agent's queued recorder.
pub struct ApiSink {
    pub client: Client,
    pub events: Recorder,
}

#[async_trait::async_trait]
impl PodSink for ApiSink {
    async fn patch_status(&self, pod: &Pod, status: &PodStatus) -> Result<Option<Pod>, SinkError> {
        let (ns, name) = pod_key(pod);
        let status = serde_json::to_value(status).map_err(|source| SinkError::Encode {
            pod: format!("{ns}/{name}"),
            source,
        })?;
        let patch = serde_json::json!({ "status": status });
        match self
            .client
            .patch_status(&PODS, Some(ns), name, &patch, PatchType::Merge)
            .await
        {
            Ok(updated) => Ok(serde_json::from_value(updated).ok()),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn release(&self, pod: &Pod) -> Result<(), SinkError> {
        let (ns, name) = pod_key(pod);
        match self
            .client
            .delete_with_grace(&PODS, Some(ns), name, Some(0))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn event(&self, pod: &Pod, event_type: EventType, reason: &str, message: &str) {
        // The recorder names the object by its metadata (and apiVersion and kind).
        let about = Pod {
            metadata: pod.metadata.clone(),
            ..Default::default()
        };
        match serde_json::to_value(&about) {
            Ok(object) => {
                self.events
                    .record(&object, event_type, reason, message)
                    .await
            }
            Err(e) => tracing::debug!(error = %e, reason, "cannot encode a pod for an event"),
        }
    }
}
