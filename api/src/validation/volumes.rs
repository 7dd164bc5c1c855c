//! A pod's volumes and what refers to them: each volume has one source and a
//! unique name, each mount names a volume at a path once, and env sources
//! name what they read (`valueFrom` one source, `envFrom` one reference).

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Container, PodSpec, Volume};

use super::Errors;
use super::names::{dns1123_label, dns1123_subdomain};
use crate::status::FieldError;

/// The sources a volume may have, by field name.
fn sources(v: &Volume) -> Vec<&'static str> {
    [
        ("emptyDir", v.empty_dir.is_some()),
        ("hostPath", v.host_path.is_some()),
        ("configMap", v.config_map.is_some()),
        ("secret", v.secret.is_some()),
        ("downwardAPI", v.downward_api.is_some()),
        ("projected", v.projected.is_some()),
        ("persistentVolumeClaim", v.persistent_volume_claim.is_some()),
        ("nfs", v.nfs.is_some()),
        ("csi", v.csi.is_some()),
        ("ephemeral", v.ephemeral.is_some()),
        ("image", v.image.is_some()),
        ("iscsi", v.iscsi.is_some()),
        ("gitRepo", v.git_repo.is_some()),
    ]
    .into_iter()
    .filter(|(_, set)| *set)
    .map(|(n, _)| n)
    .collect()
}

/// The volumes of `spec` at `path`, and every container's mounts and env
/// sources.
pub fn volumes(spec: &PodSpec, path: &str) -> Errors {
    let mut errs = Vec::new();
    let mut names = HashSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let vp = format!("{path}.volumes[{i}]");
        if v.name.is_empty() {
            errs.push(FieldError::required(format!("{vp}.name")));
        } else if let Some(why) = dns1123_label(&v.name) {
            errs.push(FieldError::invalid(
                format!("{vp}.name"),
                format!("\"{}\"", v.name),
                &why,
            ));
        } else if !names.insert(v.name.as_str()) {
            errs.push(FieldError {
                reason: "FieldValueDuplicate",
                field: format!("{vp}.name"),
                message: format!("Duplicate value: \"{}\"", v.name),
            });
        }
        match sources(v).len() {
            0 => errs.push(FieldError::required(format!(
                "{vp}: must specify a volume type"
            ))),
            1 => {}
            _ => errs.push(FieldError::forbidden(
                vp.clone(),
                "may not specify more than 1 volume type",
            )),
        }
        if let Some(h) = &v.host_path {
            if !h.path.starts_with('/') {
                errs.push(FieldError::invalid(
                    format!("{vp}.hostPath.path"),
                    format!("\"{}\"", h.path),
                    "must be an absolute path",
                ));
            }
            const TYPES: &[&str] = &[
                "",
                "DirectoryOrCreate",
                "Directory",
                "FileOrCreate",
                "File",
                "Socket",
                "CharDevice",
                "BlockDevice",
            ];
            if let Some(t) = h.type_.as_deref()
                && !TYPES.contains(&t)
            {
                errs.push(FieldError::not_supported(
                    format!("{vp}.hostPath.type"),
                    t,
                    TYPES,
                ));
            }
        }
        if let Some(c) = &v.config_map {
            reference(&mut errs, &format!("{vp}.configMap.name"), Some(&c.name));
        }
        if let Some(s) = &v.secret {
            reference(
                &mut errs,
                &format!("{vp}.secret.secretName"),
                s.secret_name.as_ref(),
            );
        }
        for (mode_path, mode) in [
            (
                "configMap.defaultMode",
                v.config_map.as_ref().and_then(|c| c.default_mode),
            ),
            (
                "secret.defaultMode",
                v.secret.as_ref().and_then(|s| s.default_mode),
            ),
            (
                "downwardAPI.defaultMode",
                v.downward_api.as_ref().and_then(|d| d.default_mode),
            ),
            (
                "projected.defaultMode",
                v.projected.as_ref().and_then(|p| p.default_mode),
            ),
        ] {
            if let Some(m) = mode
                && !(0..=0o777).contains(&m)
            {
                errs.push(FieldError::invalid(
                    format!("{vp}.{mode_path}"),
                    m,
                    "must be a number between 0 and 0777 (octal), both inclusive",
                ));
            }
        }
    }
    let all = spec
        .containers
        .iter()
        .map(|c| ("containers", c))
        .enumerate()
        .chain(
            spec.init_containers
                .iter()
                .flatten()
                .map(|c| ("initContainers", c))
                .enumerate(),
        );
    for (i, (list, c)) in all {
        errs.extend(mounts_and_env(c, &format!("{path}.{list}[{i}]"), &names));
    }
    errs
}

fn reference(errs: &mut Errors, path: &str, name: Option<&String>) {
    match name.map(String::as_str) {
        None | Some("") => errs.push(FieldError::required(path)),
        Some(n) => {
            if let Some(why) = dns1123_subdomain(n) {
                errs.push(FieldError::invalid(path, format!("\"{n}\""), &why));
            }
        }
    }
}

fn mounts_and_env(c: &Container, path: &str, volumes: &HashSet<&str>) -> Errors {
    let mut errs = Vec::new();
    let mut paths = HashSet::new();
    for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
        let mp = format!("{path}.volumeMounts[{j}]");
        if m.name.is_empty() {
            errs.push(FieldError::required(format!("{mp}.name")));
        } else if !volumes.contains(m.name.as_str()) {
            errs.push(FieldError {
                reason: "FieldValueNotFound",
                field: format!("{mp}.name"),
                message: format!("Not found: \"{}\"", m.name),
            });
        }
        if m.mount_path.is_empty() {
            errs.push(FieldError::required(format!("{mp}.mountPath")));
        } else if !paths.insert(m.mount_path.as_str()) {
            errs.push(FieldError::invalid(
                format!("{mp}.mountPath"),
                format!("\"{}\"", m.mount_path),
                "must be unique",
            ));
        }
        for (field, sub) in [("subPath", &m.sub_path), ("subPathExpr", &m.sub_path_expr)] {
            if let Some(s) = sub.as_deref().filter(|s| !s.is_empty()) {
                if s.starts_with('/') {
                    errs.push(FieldError::invalid(
                        format!("{mp}.{field}"),
                        format!("\"{s}\""),
                        "must be a relative path",
                    ));
                }
                if s.split('/').any(|p| p == "..") {
                    errs.push(FieldError::invalid(
                        format!("{mp}.{field}"),
                        format!("\"{s}\""),
                        "must not contain '..'",
                    ));
                }
            }
        }
        if m.sub_path.as_deref().is_some_and(|s| !s.is_empty())
            && m.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty())
        {
            errs.push(FieldError::invalid(
                format!("{mp}.subPathExpr"),
                format!("\"{}\"", m.sub_path_expr.as_deref().unwrap_or("")),
                "subPathExpr and subPath are mutually exclusive",
            ));
        }
    }
    for (j, e) in c.env.iter().flatten().enumerate() {
        let Some(from) = &e.value_from else { continue };
        let ep = format!("{path}.env[{j}]");
        if e.value.as_deref().is_some_and(|v| !v.is_empty()) {
            errs.push(FieldError::invalid(
                format!("{ep}.valueFrom"),
                "",
                "may not be specified when `value` is not empty",
            ));
        }
        let set = [
            from.config_map_key_ref.is_some(),
            from.secret_key_ref.is_some(),
            from.field_ref.is_some(),
            from.resource_field_ref.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set != 1 {
            errs.push(FieldError::invalid(
                format!("{ep}.valueFrom"),
                "",
                "may not have more than one field specified at a time",
            ));
        }
        if let Some(r) = &from.config_map_key_ref {
            reference(
                &mut errs,
                &format!("{ep}.valueFrom.configMapKeyRef.name"),
                Some(&r.name),
            );
            if r.key.is_empty() {
                errs.push(FieldError::required(format!(
                    "{ep}.valueFrom.configMapKeyRef.key"
                )));
            }
        }
        if let Some(r) = &from.secret_key_ref {
            reference(
                &mut errs,
                &format!("{ep}.valueFrom.secretKeyRef.name"),
                Some(&r.name),
            );
            if r.key.is_empty() {
                errs.push(FieldError::required(format!(
                    "{ep}.valueFrom.secretKeyRef.key"
                )));
            }
        }
    }
    for (j, e) in c.env_from.iter().flatten().enumerate() {
        let ep = format!("{path}.envFrom[{j}]");
        match (&e.config_map_ref, &e.secret_ref) {
            (Some(r), None) => {
                reference(&mut errs, &format!("{ep}.configMapRef.name"), Some(&r.name))
            }
            (None, Some(r)) => reference(&mut errs, &format!("{ep}.secretRef.name"), Some(&r.name)),
            _ => errs.push(FieldError::invalid(
                ep,
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            )),
        }
    }
    errs
}
