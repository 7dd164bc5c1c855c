//! Admission of an object into the API: decode into its Kubernetes type (naming any
//! unknown field), apply defaults, validate, and encode back. The API server runs
//! every create and update through [`admit`], whoever sends it.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, LimitRange, Namespace, Node, Pod, ReplicationController,
    ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::resource::ResourceInfo;
use crate::status::{ApiError, FieldError};
use crate::validation::{self, NameRule};
use crate::{defaults, manifest};

/// What to do with fields the type does not have (`?fieldValidation=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Refuse the request, naming the fields (the default here, as with `kubectl`).
    #[default]
    Strict,
    /// Drop them and name them in a `Warning` header.
    Warn,
    /// Drop them silently.
    Ignore,
}

impl FieldValidation {
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        match text {
            "Strict" | "" => Ok(FieldValidation::Strict),
            "Warn" => Ok(FieldValidation::Warn),
            "Ignore" => Ok(FieldValidation::Ignore),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

/// The admitted object and the warnings to send back.
#[derive(Debug)]
pub struct Admitted {
    pub object: Value,
    pub warnings: Vec<String>,
}

/// Decodes, defaults and validates `object` as a `info.kind`; `old` is the stored
/// object on updates (for the rules about what may not change).
pub fn admit(
    info: &ResourceInfo,
    object: Value,
    old: Option<&Value>,
    validation: FieldValidation,
) -> Result<Admitted, ApiError> {
    let mut admitted = admit_kind(info, object, old, validation)?;
    let (spec, path) = match info.kind {
        "Deployment" | "ReplicaSet" | "DaemonSet" | "ReplicationController" | "Job" => (
            admitted.object.pointer("/spec/template/spec"),
            "spec.template.spec",
        ),
        "Pod" => (admitted.object.get("spec"), "spec"),
        "CronJob" => (
            admitted
                .object
                .pointer("/spec/jobTemplate/spec/template/spec"),
            "spec.jobTemplate.spec.template.spec",
        ),
        _ => (None, ""),
    };
    if let Some(spec) = spec.and_then(|s| serde_json::from_value(s.clone()).ok()) {
        admitted
            .warnings
            .extend(crate::unsupported::pod_spec(&spec, path));
    }
    admitted
        .warnings
        .extend(kind_warnings(info, &admitted.object));
    if info.kind == "Namespace"
        && crate::pod_security::namespace_level(
            admitted
                .object
                .pointer("/metadata/labels")
                .and_then(|l| serde_json::from_value(l.clone()).ok())
                .as_ref(),
        ) == crate::pod_security::Level::Restricted
    {
        admitted.warnings.push(format!(
            "{}: restricted is enforced as baseline by Tugboat (the restricted checks are not implemented yet)",
            crate::pod_security::ENFORCE_LABEL
        ));
    }
    Ok(admitted)
}

/// What Tugboat stores of a kind but does not act on, named in a warning.
fn kind_warnings(info: &ResourceInfo, object: &Value) -> Vec<String> {
    let mut out = Vec::new();
    match info.kind {
        "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" => out.push(format!(
            "{}/{} {}: stored, but not enforced: Tugboat authorizes by its admin, node and token credentials, not by RBAC yet",
            info.group, info.version, info.kind
        )),
        "APIService" => out.push(format!(
            "{}/{} APIService: stored, but Tugboat does not proxy aggregated APIs (it serves metrics.k8s.io itself)",
            info.group, info.version
        )),
        "ResourceQuota" => {
            for field in ["scopes", "scopeSelector"] {
                if object.pointer(&format!("/spec/{field}")).is_some() {
                    out.push(format!(
                        "spec.{field}: accepted but not acted on by Tugboat yet (the quota counts every pod)"
                    ));
                }
            }
        }
        "Job" => {
            for field in ["successPolicy", "managedBy"] {
                if object.pointer(&format!("/spec/{field}")).is_some() {
                    out.push(format!(
                        "spec.{field}: accepted but not acted on by Tugboat yet"
                    ));
                }
            }
            if object.pointer("/spec/podReplacementPolicy") == Some(&Value::from("Failed")) {
                out.push(
                    "spec.podReplacementPolicy: Failed is treated as TerminatingOrFailed by Tugboat (replacements start once a pod is terminating)"
                        .to_string(),
                );
            }
        }
        "LimitRange" => {
            let pvc = object
                .pointer("/spec/limits")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .position(|l| l["type"] == "PersistentVolumeClaim");
            if let Some(i) = pvc {
                out.push(format!(
                    "spec.limits[{i}].type: PersistentVolumeClaim limits are accepted but not acted on by Tugboat yet"
                ));
            }
        }
        _ => {}
    }
    out
}

fn admit_kind(
    info: &ResourceInfo,
    object: Value,
    old: Option<&Value>,
    validation: FieldValidation,
) -> Result<Admitted, ApiError> {
    let name = crate::meta::name(&object).unwrap_or("").to_string();
    match info.kind {
        "Deployment" => run::<Deployment>(info, object, old, validation, &name, |d, old| {
            defaults::deployment(d);
            let mut errs = validation::deployment(d);
            if let (Some(old), Some(spec)) = (old, d.spec.as_ref())
                && let Some(old_spec) = old.spec.as_ref()
            {
                errs.extend(validation::selector_unchanged(
                    &old_spec.selector,
                    &spec.selector,
                ));
            }
            errs
        }),
        "ReplicaSet" => run::<ReplicaSet>(info, object, old, validation, &name, |rs, old| {
            defaults::replica_set(rs);
            let mut errs = validation::replica_set(rs);
            if let (Some(old), Some(spec)) = (old, rs.spec.as_ref())
                && let Some(old_spec) = old.spec.as_ref()
            {
                errs.extend(validation::selector_unchanged(
                    &old_spec.selector,
                    &spec.selector,
                ));
            }
            errs
        }),
        "Pod" => run::<Pod>(info, object, old, validation, &name, |p, old| {
            if let Some(spec) = p.spec.as_mut() {
                defaults::pod_spec(spec);
            }
            let mut errs = validation::pod(p);
            if let Some(old) = old {
                errs.extend(validation::pod_update(old, p));
            }
            errs
        }),
        "Node" => run::<Node>(info, object, old, validation, &name, |n, _| {
            validation::node(n)
        }),
        "Namespace" => run::<Namespace>(info, object, old, validation, &name, |ns, _| {
            defaults::namespace(ns);
            let mut errs = validation::object_meta(&ns.metadata, false, NameRule::Label);
            errs.extend(crate::pod_security::namespace_label_errors(
                ns.metadata.labels.as_ref(),
            ));
            errs
        }),
        "Event" => run::<Event>(info, object, old, validation, &name, |e, _| {
            let mut errs = validation::object_meta(&e.metadata, true, NameRule::Subdomain);
            if e.involved_object.kind.as_deref().is_none_or(str::is_empty) {
                errs.push(FieldError::required("involvedObject.kind"));
            }
            errs
        }),
        "Lease" => run::<Lease>(info, object, old, validation, &name, |l, _| {
            validation::object_meta(&l.metadata, true, NameRule::Subdomain)
        }),
        "Service" => run::<Service>(info, object, old, validation, &name, |s, old| {
            if let Some(old) = old {
                defaults::service_update(s, old);
            }
            defaults::service(s);
            let mut errs = validation::service(s);
            if let Some(old) = old {
                errs.extend(validation::service_update(old, s));
            }
            errs
        }),
        "Endpoints" => run::<Endpoints>(info, object, old, validation, &name, |e, _| {
            validation::endpoints(e)
        }),
        "EndpointSlice" => run::<EndpointSlice>(info, object, old, validation, &name, |e, _| {
            validation::endpoint_slice(e)
        }),
        "HorizontalPodAutoscaler" => {
            run::<HorizontalPodAutoscaler>(info, object, old, validation, &name, |h, _| {
                defaults::hpa(h);
                validation::hpa(h)
            })
        }
        "ConfigMap" => run::<ConfigMap>(info, object, old, validation, &name, |c, old| {
            let mut errs = validation::config_map(c);
            if let Some(old) = old {
                errs.extend(validation::config_map_update(old, c));
            }
            errs
        }),
        "Secret" => run::<Secret>(info, object, old, validation, &name, |s, old| {
            defaults::secret(s);
            let mut errs = validation::secret(s);
            if let Some(old) = old {
                errs.extend(validation::secret_update(old, s));
            }
            errs
        }),
        "ServiceAccount" => run::<ServiceAccount>(info, object, old, validation, &name, |s, _| {
            validation::service_account(s)
        }),
        "ResourceQuota" => run::<ResourceQuota>(info, object, old, validation, &name, |q, _| {
            validation::resource_quota(q)
        }),
        "LimitRange" => run::<LimitRange>(info, object, old, validation, &name, |l, _| {
            defaults::limit_range(l);
            validation::limit_range(l)
        }),
        "ReplicationController" => {
            run::<ReplicationController>(info, object, old, validation, &name, |rc, _| {
                defaults::replication_controller(rc);
                validation::replication_controller(rc)
            })
        }
        "DaemonSet" => run::<DaemonSet>(info, object, old, validation, &name, |ds, old| {
            defaults::daemon_set(ds);
            let mut errs = validation::daemon_set(ds);
            if let (Some(old), Some(spec)) = (old, ds.spec.as_ref())
                && let Some(old_spec) = old.spec.as_ref()
            {
                errs.extend(validation::selector_unchanged(
                    &old_spec.selector,
                    &spec.selector,
                ));
            }
            errs
        }),
        "Job" => run::<Job>(info, object, old, validation, &name, |j, old| {
            defaults::job(j);
            let mut errs = validation::job(j);
            if let Some(old) = old {
                errs.extend(validation::job_update(old, j));
            }
            errs
        }),
        "CronJob" => run::<CronJob>(info, object, old, validation, &name, |c, _| {
            defaults::cron_job(c);
            validation::cron_job(c)
        }),
        "Role" => run::<Role>(info, object, old, validation, &name, |r, _| {
            validation::role(r)
        }),
        "ClusterRole" => run::<ClusterRole>(info, object, old, validation, &name, |r, _| {
            validation::cluster_role(r)
        }),
        "RoleBinding" => run::<RoleBinding>(info, object, old, validation, &name, |b, old| {
            let mut errs = validation::role_binding(b);
            if let Some(old) = old {
                errs.extend(validation::role_ref_unchanged(&old.role_ref, &b.role_ref));
            }
            errs
        }),
        "ClusterRoleBinding" => {
            run::<ClusterRoleBinding>(info, object, old, validation, &name, |b, old| {
                let mut errs = validation::cluster_role_binding(b);
                if let Some(old) = old {
                    errs.extend(validation::role_ref_unchanged(&old.role_ref, &b.role_ref));
                }
                errs
            })
        }
        "APIService" => run::<APIService>(info, object, old, validation, &name, |s, _| {
            validation::api_service(s)
        }),
        other => Err(ApiError::internal(format!(
            "no admission rules for kind {other}"
        ))),
    }
}

fn run<T: DeserializeOwned + Serialize>(
    info: &ResourceInfo,
    object: Value,
    old: Option<&Value>,
    validation: FieldValidation,
    name: &str,
    check: impl FnOnce(&mut T, Option<&T>) -> Vec<FieldError>,
) -> Result<Admitted, ApiError> {
    let (mut typed, unknown) = decode::<T>(info, object)?;
    let mut warnings = Vec::new();
    if !unknown.is_empty() {
        match validation {
            FieldValidation::Strict => {
                let list = unknown
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {list}",
                    info.kind,
                    info.api_version(),
                    info.kind
                )));
            }
            FieldValidation::Warn => {
                warnings.extend(unknown.iter().map(|f| format!("unknown field \"{f}\"")));
            }
            FieldValidation::Ignore => {}
        }
    }
    let old_typed: Option<T> = match old {
        Some(o) => Some(decode::<T>(info, o.clone())?.0),
        None => None,
    };
    let errs = check(&mut typed, old_typed.as_ref());
    if !errs.is_empty() {
        return Err(ApiError::invalid(info.kind, info.group, name, errs));
    }
    let object = serde_json::to_value(&typed)
        .map_err(|e| ApiError::internal(format!("encoding {} {name}: {e}", info.kind)))?;
    Ok(Admitted { object, warnings })
}

/// Decodes into `T`, collecting the paths of fields `T` does not have
/// (`spec.template.spec.containers[0].imag`). A value of the wrong type is a 400
/// that names its path.
pub fn decode<T: DeserializeOwned>(
    info: &ResourceInfo,
    object: Value,
) -> Result<(T, Vec<String>), ApiError> {
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(format_path(&path));
    let ignored = serde_ignored::Deserializer::new(object, &mut record);
    let typed: Result<T, _> = serde_path_to_error::deserialize(ignored);
    match typed {
        Ok(t) => Ok((t, unknown)),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            Err(ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {}: {inner}",
                info.kind,
                info.api_version(),
                info.kind,
                if path == "." {
                    "(root)".to_string()
                } else {
                    path
                }
            )))
        }
    }
}

fn format_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", format_path(parent)),
        Path::Map { parent, key } => {
            let p = format_path(parent);
            if p.is_empty() {
                key.clone()
            } else {
                format!("{p}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => format_path(parent),
    }
}

/// Checks that a manifest's `apiVersion` and `kind` are those of the resource it is
/// sent to (a missing one is taken as meant).
pub fn check_type(info: &ResourceInfo, object: &Value) -> Result<(), ApiError> {
    if !object.is_object() {
        return Err(ApiError::bad_request(format!(
            "expected a {} object, got {}",
            info.kind,
            manifest::json_type(object)
        )));
    }
    let api_version = object.get("apiVersion").and_then(Value::as_str);
    let kind = object.get("kind").and_then(Value::as_str);
    if api_version.is_some_and(|v| v != info.api_version()) || kind.is_some_and(|k| k != info.kind)
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({}) and kind ({}) do not match the resource {} (expected {}, {})",
            api_version.unwrap_or(""),
            kind.unwrap_or(""),
            info.store_name(),
            info.api_version(),
            info.kind
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{DEPLOYMENTS, PODS};
    use serde_json::json;

    fn manifest() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "tugboat/sample:latest"}]}}
            }
        })
    }

    #[test]
    fn a_typo_is_refused_with_its_path_in_strict_mode() {
        let mut m = manifest();
        m["spec"]["replcas"] = json!(3);
        m["spec"]["template"]["spec"]["containers"][0]["imag"] = json!("x");
        let err = admit(&DEPLOYMENTS, m, None, FieldValidation::Strict).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(
            err.message.contains("unknown field \"spec.replcas\""),
            "{}",
            err.message
        );
        assert!(
            err.message
                .contains("unknown field \"spec.template.spec.containers[0].imag\""),
            "{}",
            err.message
        );
    }

    #[test]
    fn warn_mode_admits_and_names_the_unknown_fields() {
        let mut m = manifest();
        m["spec"]["replcas"] = json!(3);
        let admitted = admit(&DEPLOYMENTS, m, None, FieldValidation::Warn).unwrap();
        assert_eq!(admitted.warnings, vec!["unknown field \"spec.replcas\""]);
        assert!(admitted.object["spec"].get("replcas").is_none());
        assert_eq!(admitted.object["spec"]["replicas"], 2);
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_path() {
        let mut m = manifest();
        m["spec"]["replicas"] = json!("three");
        let err = admit(&DEPLOYMENTS, m, None, FieldValidation::Strict).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(err.message.contains("spec.replicas"), "{}", err.message);
    }

    #[test]
    fn defaults_are_applied_and_invalid_objects_are_422() {
        let admitted = admit(&DEPLOYMENTS, manifest(), None, FieldValidation::Strict).unwrap();
        assert_eq!(admitted.object["spec"]["strategy"]["type"], "RollingUpdate");
        let mut m = manifest();
        m["spec"]["replicas"] = json!(-1);
        let err = admit(&DEPLOYMENTS, m, None, FieldValidation::Strict).unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(err.causes[0].field, "spec.replicas");
    }

    #[test]
    fn the_selector_of_a_deployment_cannot_change() {
        let old = admit(&DEPLOYMENTS, manifest(), None, FieldValidation::Strict)
            .unwrap()
            .object;
        let mut m = manifest();
        m["spec"]["selector"]["matchLabels"]["tier"] = json!("x");
        m["spec"]["template"]["metadata"]["labels"]["tier"] = json!("x");
        let err = admit(&DEPLOYMENTS, m, Some(&old), FieldValidation::Strict).unwrap_err();
        assert!(
            err.message.contains("spec.selector: Invalid value"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("field is immutable"),
            "{}",
            err.message
        );
    }

    #[test]
    fn kind_and_api_version_must_match_the_endpoint() {
        assert!(check_type(&DEPLOYMENTS, &manifest()).is_ok());
        let err = check_type(&PODS, &manifest()).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(check_type(&PODS, &json!({"metadata": {"name": "p"}})).is_ok());
    }

    #[test]
    fn the_kinds_of_real_manifests_are_admitted_with_kubernetes_defaults() {
        use crate::resource::*;
        let template = json!({"metadata": {"labels": {"app": "a"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl"}]}});
        let mut job = json!({"metadata": {"name": "pi", "uid": "u-1"},
            "spec": {"backoffLimit": 4, "template": template}});
        let admitted = admit(&JOBS, job.clone(), None, FieldValidation::Strict).unwrap();
        let o = admitted.object;
        assert_eq!(o["spec"]["completions"], 1);
        assert_eq!(
            o["spec"]["selector"]["matchLabels"][crate::defaults::JOB_CONTROLLER_UID],
            "u-1"
        );
        assert_eq!(
            o["spec"]["template"]["metadata"]["labels"]["job-name"],
            "pi"
        );
        job["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        let err = admit(&JOBS, job, None, FieldValidation::Strict).unwrap_err();
        assert!(
            err.message
                .contains("spec.template.spec.restartPolicy: Unsupported value: \"Always\""),
            "{}",
            err.message
        );

        let cron = json!({"metadata": {"name": "c"}, "spec": {"schedule": "*/1 * * * *",
            "jobTemplate": {"spec": {"template": template}}}});
        let o = admit(&CRONJOBS, cron.clone(), None, FieldValidation::Strict)
            .unwrap()
            .object;
        assert_eq!(o["spec"]["successfulJobsHistoryLimit"], 3);
        let mut bad = cron;
        bad["spec"]["schedule"] = json!("every minute");
        let err = admit(&CRONJOBS, bad, None, FieldValidation::Strict).unwrap_err();
        assert_eq!(err.causes[0].field, "spec.schedule");

        let ds = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
        let o = admit(&DAEMONSETS, ds, None, FieldValidation::Strict)
            .unwrap()
            .object;
        assert_eq!(
            o["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
            1
        );

        let rc = json!({"metadata": {"name": "r"}, "spec": {"replicas": 2,
            "template": {"metadata": {"labels": {"app": "r"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
        let o = admit(&REPLICATIONCONTROLLERS, rc, None, FieldValidation::Strict)
            .unwrap()
            .object;
        assert_eq!(o["spec"]["selector"]["app"], "r");

        let secret = json!({"metadata": {"name": "s"}, "stringData": {"password": "hunter2"}});
        let o = admit(&SECRETS, secret, None, FieldValidation::Strict)
            .unwrap()
            .object;
        assert_eq!(o["type"], "Opaque");
        assert_eq!(o["data"]["password"], "aHVudGVyMg==");
        assert!(o.get("stringData").is_none());
        let bad = json!({"metadata": {"name": "s"}, "data": {"k": "not base64!"}});
        let err = admit(&SECRETS, bad, None, FieldValidation::Strict).unwrap_err();
        assert!(err.message.contains("data.k"), "{}", err.message);

        let binding = json!({"metadata": {"name": "system:b"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}]});
        admit(&CLUSTERROLEBINDINGS, binding, None, FieldValidation::Strict).unwrap();
        let api = json!({"metadata": {"name": "v1beta1.metrics.k8s.io"}, "spec": {"group": "metrics.k8s.io",
            "version": "v1beta1", "groupPriorityMinimum": 100, "versionPriority": 100,
            "service": {"name": "metrics-server", "namespace": "kube-system"}}});
        admit(&APISERVICES, api, None, FieldValidation::Strict).unwrap();

        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x",
            "volumeMounts": [{"name": "missing", "mountPath": "/m"}]}]}});
        let err = admit(&PODS, pod, None, FieldValidation::Strict).unwrap_err();
        assert_eq!(
            err.causes[0].field,
            "spec.containers[0].volumeMounts[0].name"
        );
    }
}
