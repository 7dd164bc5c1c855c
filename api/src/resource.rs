//! The resources Tugboat serves: their group, version, kind, plural name, scope and
//! short names. One table, used by the API server (routing, discovery), the store
//! (keys) and the CLI (`tug get deploy`).

/// What the API knows about one resource type.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ResourceInfo {
    /// API group; empty for the core group (`v1`).
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Lower-case plural, as in URLs (`deployments`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Has a `/status` subresource (status is ignored on the main resource's writes).
    pub has_status: bool,
    /// Has a `/scale` subresource (`autoscaling/v1` Scale).
    pub has_scale: bool,
    /// Writes to `spec` bump `metadata.generation`.
    pub has_spec: bool,
}

impl ResourceInfo {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The name the store keys this resource by: `deployments.apps`, `pods`.
    pub fn store_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// How kubectl names the resource in messages: `deployment.apps`, `pod`.
    pub fn qualified_singular(&self) -> String {
        if self.group.is_empty() {
            self.singular.to_string()
        } else {
            format!("{}.{}", self.singular, self.group)
        }
    }

    /// URL prefix of the collection, e.g. `/apis/apps/v1/namespaces/default/deployments`.
    /// `namespace` is ignored for cluster-scoped resources; `None` lists across namespaces.
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        let root = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{root}/namespaces/{ns}/{}", self.plural),
            _ => format!("{root}/{}", self.plural),
        }
    }

    /// URL of one object.
    pub fn object_path(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}/{}", self.collection_path(namespace), name)
    }

    /// The Kubernetes list kind, `DeploymentList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

pub const DEPLOYMENTS: ResourceInfo = ResourceInfo {
    group: "apps",
    version: "v1",
    kind: "Deployment",
    plural: "deployments",
    singular: "deployment",
    namespaced: true,
    short_names: &["deploy"],
    has_status: true,
    has_scale: true,
    has_spec: true,
};

pub const REPLICASETS: ResourceInfo = ResourceInfo {
    group: "apps",
    version: "v1",
    kind: "ReplicaSet",
    plural: "replicasets",
    singular: "replicaset",
    namespaced: true,
    short_names: &["rs"],
    has_status: true,
    has_scale: true,
    has_spec: true,
};

pub const PODS: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Pod",
    plural: "pods",
    singular: "pod",
    namespaced: true,
    short_names: &["po"],
    has_status: true,
    has_scale: false,
    has_spec: true,
};

pub const NODES: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Node",
    plural: "nodes",
    singular: "node",
    namespaced: false,
    short_names: &["no"],
    has_status: true,
    has_scale: false,
    has_spec: true,
};

pub const EVENTS: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    namespaced: true,
    short_names: &["ev"],
    has_status: false,
    has_scale: false,
    has_spec: false,
};

pub const NAMESPACES: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Namespace",
    plural: "namespaces",
    singular: "namespace",
    namespaced: false,
    short_names: &["ns"],
    has_status: true,
    has_scale: false,
    has_spec: true,
};

/// Node heartbeats (`kube-node-lease` namespace, one per node), as kubelets renew them.
pub const LEASES: ResourceInfo = ResourceInfo {
    group: "coordination.k8s.io",
    version: "v1",
    kind: "Lease",
    plural: "leases",
    singular: "lease",
    namespaced: true,
    short_names: &[],
    has_status: false,
    has_scale: false,
    has_spec: true,
};

/// Services: a stable virtual IP (ClusterIP), node ports and a name for a set of pods.
pub const SERVICES: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Service",
    plural: "services",
    singular: "service",
    namespaced: true,
    short_names: &["svc"],
    has_status: true,
    has_scale: false,
    has_spec: true,
};

/// The v1 Endpoints of a Service (one object per Service, kept for old clients).
pub const ENDPOINTS: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Endpoints",
    plural: "endpoints",
    singular: "endpoints",
    namespaced: true,
    short_names: &["ep"],
    has_status: false,
    has_scale: false,
    has_spec: false,
};

/// EndpointSlices: what the proxies read — a Service's endpoints with their
/// `ready`/`serving`/`terminating` conditions, node and resolved ports.
pub const ENDPOINTSLICES: ResourceInfo = ResourceInfo {
    group: "discovery.k8s.io",
    version: "v1",
    kind: "EndpointSlice",
    plural: "endpointslices",
    singular: "endpointslice",
    namespaced: true,
    short_names: &[],
    has_status: false,
    has_scale: false,
    has_spec: false,
};

/// HorizontalPodAutoscalers: replicas of a scalable object from its pods'
/// metrics.
pub const HORIZONTALPODAUTOSCALERS: ResourceInfo = ResourceInfo {
    group: "autoscaling",
    version: "v2",
    kind: "HorizontalPodAutoscaler",
    plural: "horizontalpodautoscalers",
    singular: "horizontalpodautoscaler",
    namespaced: true,
    short_names: &["hpa"],
    has_status: true,
    has_scale: false,
    has_spec: true,
};

/// Configuration as key-value pairs, read by pods through env and volumes.
pub const CONFIGMAPS: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "ConfigMap",
    plural: "configmaps",
    singular: "configmap",
    namespaced: true,
    short_names: &["cm"],
    has_status: false,
    has_scale: false,
    has_spec: false,
};

/// Like ConfigMaps, for credentials: values are base64 in `data`, never logged.
pub const SECRETS: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Secret",
    plural: "secrets",
    singular: "secret",
    namespaced: true,
    short_names: &[],
    has_status: false,
    has_scale: false,
    has_spec: false,
};

/// Pods' identities; every namespace has a `default` one.
pub const SERVICEACCOUNTS: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "ServiceAccount",
    plural: "serviceaccounts",
    singular: "serviceaccount",
    namespaced: true,
    short_names: &["sa"],
    has_status: false,
    has_scale: false,
    has_spec: false,
};

/// Caps on what a namespace's pods may request (enforced at admission).
pub const RESOURCEQUOTAS: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "ResourceQuota",
    plural: "resourcequotas",
    singular: "resourcequota",
    namespaced: true,
    short_names: &["quota"],
    has_status: true,
    has_scale: false,
    has_spec: true,
};

/// Per-container defaults and bounds of requests and limits (applied at admission).
pub const LIMITRANGES: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "LimitRange",
    plural: "limitranges",
    singular: "limitrange",
    namespaced: true,
    short_names: &["limits"],
    has_status: false,
    has_scale: false,
    has_spec: true,
};

/// v1 ReplicationControllers: the ReplicaSet's predecessor, managed the same way.
pub const REPLICATIONCONTROLLERS: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "ReplicationController",
    plural: "replicationcontrollers",
    singular: "replicationcontroller",
    namespaced: true,
    short_names: &["rc"],
    has_status: true,
    has_scale: true,
    has_spec: true,
};

/// DaemonSets: one pod on every eligible node.
pub const DAEMONSETS: ResourceInfo = ResourceInfo {
    group: "apps",
    version: "v1",
    kind: "DaemonSet",
    plural: "daemonsets",
    singular: "daemonset",
    namespaced: true,
    short_names: &["ds"],
    has_status: true,
    has_scale: false,
    has_spec: true,
};

/// Jobs: pods run to completion.
pub const JOBS: ResourceInfo = ResourceInfo {
    group: "batch",
    version: "v1",
    kind: "Job",
    plural: "jobs",
    singular: "job",
    namespaced: true,
    short_names: &[],
    has_status: true,
    has_scale: false,
    has_spec: true,
};

/// CronJobs: Jobs on a schedule.
pub const CRONJOBS: ResourceInfo = ResourceInfo {
    group: "batch",
    version: "v1",
    kind: "CronJob",
    plural: "cronjobs",
    singular: "cronjob",
    namespaced: true,
    short_names: &["cj"],
    has_status: true,
    has_scale: false,
    has_spec: true,
};

/// RBAC: a namespace's permissions (stored; Tugboat's authorizer does not read them yet).
pub const ROLES: ResourceInfo = ResourceInfo {
    group: "rbac.authorization.k8s.io",
    version: "v1",
    kind: "Role",
    plural: "roles",
    singular: "role",
    namespaced: true,
    short_names: &[],
    has_status: false,
    has_scale: false,
    has_spec: false,
};

/// RBAC: cluster-wide permissions (stored).
pub const CLUSTERROLES: ResourceInfo = ResourceInfo {
    group: "rbac.authorization.k8s.io",
    version: "v1",
    kind: "ClusterRole",
    plural: "clusterroles",
    singular: "clusterrole",
    namespaced: false,
    short_names: &[],
    has_status: false,
    has_scale: false,
    has_spec: false,
};

/// RBAC: who holds a Role or ClusterRole in a namespace (stored).
pub const ROLEBINDINGS: ResourceInfo = ResourceInfo {
    group: "rbac.authorization.k8s.io",
    version: "v1",
    kind: "RoleBinding",
    plural: "rolebindings",
    singular: "rolebinding",
    namespaced: true,
    short_names: &[],
    has_status: false,
    has_scale: false,
    has_spec: false,
};

/// RBAC: who holds a ClusterRole cluster-wide (stored).
pub const CLUSTERROLEBINDINGS: ResourceInfo = ResourceInfo {
    group: "rbac.authorization.k8s.io",
    version: "v1",
    kind: "ClusterRoleBinding",
    plural: "clusterrolebindings",
    singular: "clusterrolebinding",
    namespaced: false,
    short_names: &[],
    has_status: false,
    has_scale: false,
    has_spec: false,
};

/// Registrations of aggregated API group-versions (stored; not proxied).
pub const APISERVICES: ResourceInfo = ResourceInfo {
    group: "apiregistration.k8s.io",
    version: "v1",
    kind: "APIService",
    plural: "apiservices",
    singular: "apiservice",
    namespaced: false,
    short_names: &[],
    has_status: true,
    has_scale: false,
    has_spec: true,
};

/// Every resource the server serves, in discovery order.
pub const ALL: &[&ResourceInfo] = &[
    &NAMESPACES,
    &NODES,
    &PODS,
    &EVENTS,
    &DEPLOYMENTS,
    &REPLICASETS,
    &LEASES,
    &SERVICES,
    &ENDPOINTS,
    &ENDPOINTSLICES,
    &HORIZONTALPODAUTOSCALERS,
    &CONFIGMAPS,
    &SECRETS,
    &SERVICEACCOUNTS,
    &RESOURCEQUOTAS,
    &LIMITRANGES,
    &REPLICATIONCONTROLLERS,
    &DAEMONSETS,
    &JOBS,
    &CRONJOBS,
    &ROLES,
    &CLUSTERROLES,
    &ROLEBINDINGS,
    &CLUSTERROLEBINDINGS,
    &APISERVICES,
];

/// The resource served at `group`/`version`/`plural`.
pub fn by_path(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    ALL.iter()
        .copied()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource an object with this `apiVersion` and `kind` belongs to.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    ALL.iter()
        .copied()
        .find(|r| r.api_version() == api_version && r.kind == kind)
}

/// The resource a user means by `deploy`, `deployments`, `Deployment`,
/// `deployment.apps` or `deployments.apps` (what kubectl accepts).
pub fn by_user_name(name: &str) -> Option<&'static ResourceInfo> {
    let lower = name.to_ascii_lowercase();
    let (base, group) = match lower.split_once('.') {
        Some((b, g)) => (b.to_string(), Some(g.to_string())),
        None => (lower.clone(), None),
    };
    ALL.iter().copied().find(|r| {
        let name_matches = r.plural == base
            || r.singular == base
            || r.kind.eq_ignore_ascii_case(&base)
            || r.short_names.contains(&base.as_str());
        let group_matches = match &group {
            Some(g) => r.group == g,
            None => true,
        };
        name_matches && group_matches
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_resolve_like_kubectl() {
        for name in [
            "deploy",
            "deployments",
            "Deployment",
            "deployment.apps",
            "deployments.apps",
        ] {
            assert_eq!(by_user_name(name), Some(&DEPLOYMENTS), "{name}");
        }
        assert_eq!(by_user_name("po"), Some(&PODS));
        assert_eq!(by_user_name("ev"), Some(&EVENTS));
        assert_eq!(by_user_name("no"), Some(&NODES));
        assert_eq!(by_user_name("rs"), Some(&REPLICASETS));
        assert_eq!(by_user_name("pods.apps"), None);
        assert_eq!(by_user_name("widgets"), None);
    }

    #[test]
    fn paths_follow_kubernetes_conventions() {
        assert_eq!(
            DEPLOYMENTS.object_path(Some("default"), "web"),
            "/apis/apps/v1/namespaces/default/deployments/web"
        );
        assert_eq!(PODS.collection_path(None), "/api/v1/pods");
        assert_eq!(NODES.object_path(Some("ignored"), "n1"), "/api/v1/nodes/n1");
        assert_eq!(DEPLOYMENTS.store_name(), "deployments.apps");
        assert_eq!(PODS.store_name(), "pods");
    }
}
