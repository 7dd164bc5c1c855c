//! What the runtime needs of an object: its name and namespace.

use std::fmt;

use serde_json::Value;
use tugboat_api::meta;

/// Which object: its namespace (none for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    pub fn new(namespace: Option<&str>, name: &str) -> ObjectRef {
        ObjectRef {
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        }
    }

    /// The reference of a JSON object, when it has a name.
    pub fn of(obj: &Value) -> Option<ObjectRef> {
        Some(ObjectRef::new(meta::namespace(obj), meta::name(obj)?))
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// An object the runtime can key. Implemented for JSON objects and for the
/// k8s-openapi types Tugboat serves.
pub trait Object {
    fn object_ref(&self) -> ObjectRef;
}

impl Object for Value {
    fn object_ref(&self) -> ObjectRef {
        ObjectRef::new(meta::namespace(self), meta::name(self).unwrap_or(""))
    }
}

macro_rules! typed_objects {
    ($($t:ty),* $(,)?) => {$(
        impl Object for $t {
            fn object_ref(&self) -> ObjectRef {
                ObjectRef::new(
                    self.metadata.namespace.as_deref(),
                    self.metadata.name.as_deref().unwrap_or(""),
                )
            }
        }
    )*};
}

typed_objects!(
    k8s_openapi::api::core::v1::Pod,
    k8s_openapi::api::core::v1::Node,
    k8s_openapi::api::core::v1::Namespace,
    k8s_openapi::api::core::v1::Event,
    k8s_openapi::api::core::v1::Service,
    k8s_openapi::api::core::v1::Endpoints,
    k8s_openapi::api::discovery::v1::EndpointSlice,
    k8s_openapi::api::apps::v1::Deployment,
    k8s_openapi::api::apps::v1::ReplicaSet,
    k8s_openapi::api::coordination::v1::Lease,
    k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler,
    k8s_openapi::api::core::v1::ConfigMap,
    k8s_openapi::api::core::v1::Secret,
    k8s_openapi::api::core::v1::ServiceAccount,
    k8s_openapi::api::core::v1::ResourceQuota,
    k8s_openapi::api::core::v1::LimitRange,
    k8s_openapi::api::core::v1::ReplicationController,
    k8s_openapi::api::apps::v1::DaemonSet,
    k8s_openapi::api::batch::v1::Job,
    k8s_openapi::api::batch::v1::CronJob,
);
