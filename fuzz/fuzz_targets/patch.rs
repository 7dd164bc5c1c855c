//! Every patch type against every kind, through the registry's real write path
//! (patch, merge, admission, limits, store) on an in-memory store: whatever is
//! written must read back, and a refused patch must write nothing.
//!
//! Input: byte 0 picks the kind, byte 1 the patch type, the rest is the body.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tugboat_api::resource::{self, ResourceInfo};
use tugboat_controller::patch::Patch;
use tugboat_controller::registry::{Registry, Subresource, WriteOptions};
use tugboat_controller::store::Store;
use tugboat_controller::store::redb::RedbStore;

#[path = "common.rs"]
mod common;

fn base(info: &ResourceInfo) -> Value {
    let pod_spec = json!({"containers": [{"name": "c", "image": "tugboat/sample:latest",
        "ports": [{"containerPort": 8080, "name": "http"}],
        "env": [{"name": "A", "value": "1"}],
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]});
    let template = json!({"metadata": {"labels": {"app": "f"}}, "spec": pod_spec});
    let meta = json!({"name": name_of(info), "labels": {"app": "f"}, "annotations": {"a": "b"}});
    match info.kind {
        "Deployment" => json!({"metadata": meta, "spec": {"replicas": 1,
            "selector": {"matchLabels": {"app": "f"}}, "template": template}}),
        "ReplicaSet" => json!({"metadata": meta, "spec": {"replicas": 1,
            "selector": {"matchLabels": {"app": "f"}}, "template": template}}),
        "Pod" => json!({"metadata": meta, "spec": pod_spec}),
        "Node" => json!({"metadata": meta, "status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}}),
        "Event" => json!({"metadata": meta, "involvedObject": {"kind": "Pod", "name": "f"},
            "reason": "R", "message": "m"}),
        "Lease" => json!({"metadata": meta, "spec": {"holderIdentity": "f"}}),
        "Service" => json!({"metadata": meta, "spec": {"type": "NodePort",
            "selector": {"app": "f"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"},
                      {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
        "Endpoints" => json!({"metadata": meta, "subsets": [{
            "addresses": [{"ip": "10.244.0.5"}], "ports": [{"name": "http", "port": 8080}]}]}),
        "EndpointSlice" => json!({"metadata": meta, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}),
        "HorizontalPodAutoscaler" => json!({"metadata": meta, "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "f"},
            "minReplicas": 1, "maxReplicas": 5,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50}}}]}}),
        "ConfigMap" => json!({"metadata": meta, "data": {"k": "v"}, "binaryData": {"b": "AAE="}}),
        "Secret" => json!({"metadata": meta, "type": "Opaque", "data": {"k": "dg=="}}),
        "DaemonSet" => json!({"metadata": meta, "spec": {
            "selector": {"matchLabels": {"app": "f"}}, "template": template}}),
        "ReplicationController" => json!({"metadata": meta, "spec": {"replicas": 1,
            "selector": {"app": "f"}, "template": template}}),
        "Job" | "CronJob" => {
            let mut job_template = template.clone();
            job_template["spec"]["restartPolicy"] = json!("Never");
            let job = json!({"completions": 2, "parallelism": 1, "backoffLimit": 1,
                "template": job_template});
            if info.kind == "Job" {
                json!({"metadata": meta, "spec": job})
            } else {
                json!({"metadata": meta, "spec": {"schedule": "*/5 * * * *",
                    "timeZone": "Europe/Berlin", "jobTemplate": {"spec": job}}})
            }
        }
        "ResourceQuota" => {
            json!({"metadata": meta, "spec": {"hard": {"pods": "10", "requests.cpu": "2"}}})
        }
        "LimitRange" => json!({"metadata": meta, "spec": {"limits": [{"type": "Container",
            "default": {"cpu": "500m"}, "defaultRequest": {"cpu": "100m"}}]}}),
        "RoleBinding" | "ClusterRoleBinding" => json!({"metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}]}),
        "Role" | "ClusterRole" => json!({"metadata": meta, "rules": [{"apiGroups": [""],
            "resources": ["pods"], "verbs": ["get"]}]}),
        "APIService" => json!({"metadata": meta, "spec": {"group": "f", "version": "v1",
            "groupPriorityMinimum": 100, "versionPriority": 10}}),
        _ => json!({"metadata": meta}),
    }
}

/// The base object's name: `f`, or `v1.f` for an APIService (named
/// `version.group`).
fn name_of(info: &ResourceInfo) -> &'static str {
    if info.kind == "APIService" {
        "v1.f"
    } else {
        "f"
    }
}

const CONTENT_TYPES: [&str; 3] = [
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/json-patch+json",
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let info = resource::ALL[usize::from(data[0]) % resource::ALL.len()];
    let content_type = CONTENT_TYPES[usize::from(data[1]) % CONTENT_TYPES.len()];
    let sub = if data[1] & 0x80 != 0 && info.has_status {
        Subresource::Status
    } else {
        Subresource::Main
    };
    let Ok(patch) = Patch::parse(content_type, &data[2..]) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let store = Arc::new(RedbStore::in_memory(100).expect("an in-memory store"));
        let registry = Registry::new(store.clone());
        registry
            .ensure_namespace("default")
            .await
            .expect("the namespace");
        let ns = info.namespaced.then_some("default");
        let created = registry
            .create(info, ns, base(info), WriteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("the base {} is refused: {}", info.kind, e.message));
        let before = store.revision();
        match registry
            .patch(
                info,
                ns,
                name_of(info),
                &patch,
                sub,
                WriteOptions::default(),
                None,
            )
            .await
        {
            Ok(written) => common::assert_storable(&written.object),
            Err(e) => {
                assert!(
                    e.code < 500,
                    "a patch failed as a server error: {}",
                    e.message
                );
                assert_eq!(store.revision(), before, "a refused patch wrote something");
            }
        }
        let stored = registry
            .get(info, ns, name_of(info))
            .await
            .expect("the object is there");
        common::assert_storable(&stored);
        drop(created);
    });
});
