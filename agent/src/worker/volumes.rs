//! A pod's volumes on this host, the kubelet's way, under the agent's state
//! directory: `<root>/<pod uid>/volumes/<plugin>/<name>`. `emptyDir` is a
//! directory there (`medium: Memory`: a tmpfs named volume of the engine,
//! labelled with the pod's uid, so every container of the pod shares it);
//! `hostPath` is checked as the kubelet checks its `type`; `configMap`,
//! `secret`, `downwardAPI` and `projected` are written by [`write_atomic`]: the
//! files in a timestamped directory, `..data` pointing at it (swapped with a
//! rename), and each top-level name a symlink through `..data`, so a mounted
//! volume changes all at once when its object changes (a `subPath` mount pins
//! one file and does not follow, as in Kubernetes).
//!
//! [`desired_files`] (what a projected volume holds) and [`check_host_path`]
//! are what the worker calls; both are unit-tested here.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume,
};

use super::env::{Fetched, PodFacts, config_map_value, field_value, resource_value};
use crate::runtime::{Mount, MountSource};

/// Why a volume cannot be set up; the message is the kubelet's (after
/// `MountVolume.SetUp failed for volume "NAME" : `) and never holds a
/// Secret's data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume \"{volume}\" : {message}")]
pub struct VolumeError {
    pub volume: String,
    pub message: String,
}

/// A file a volume holds: its bytes and mode.
pub type Files = BTreeMap<String, (Vec<u8>, u32)>;

const DEFAULT_MODE: u32 = 0o644;

/// Where the pod's volumes live.
pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join(uid)
}

/// The engine's named volume for a memory-backed `emptyDir`.
pub fn memory_volume_name(uid: &str, volume: &str) -> String {
    format!("tug_{uid}_{volume}")
}

fn plugin(v: &Volume) -> Option<&'static str> {
    Some(if v.empty_dir.is_some() {
        "kubernetes.io~empty-dir"
    } else if v.config_map.is_some() {
        "kubernetes.io~configmap"
    } else if v.secret.is_some() {
        "kubernetes.io~secret"
    } else if v.downward_api.is_some() {
        "kubernetes.io~downward-api"
    } else if v.projected.is_some() {
        "kubernetes.io~projected"
    } else {
        return None;
    })
}

/// The host directory of volume `v` of the pod (for the kinds kept here).
pub fn volume_dir(root: &Path, uid: &str, v: &Volume) -> Option<PathBuf> {
    Some(
        pod_dir(root, uid)
            .join("volumes")
            .join(plugin(v)?)
            .join(&v.name),
    )
}

/// Whether the volume is written from objects (and so followed on resync).
pub fn is_projected(v: &Volume) -> bool {
    v.config_map.is_some()
        || v.secret.is_some()
        || v.downward_api.is_some()
        || v.projected.is_some()
}

/// What a `configMap`/`secret`/`downwardAPI`/`projected` volume holds now.
pub fn desired_files(
    pod: &Pod,
    v: &Volume,
    fetched: &Fetched,
    facts: &PodFacts,
) -> Result<Files, VolumeError> {
    let err = |message: String| VolumeError {
        volume: v.name.clone(),
        message,
    };
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut files = Files::new();
    if let Some(cm) = &v.config_map {
        let mode = mode_of(cm.default_mode);
        let obj = fetched.config_maps.get(&cm.name).cloned().flatten();
        config_map_files(
            &mut files,
            obj.as_ref(),
            &cm.name,
            cm.items.as_deref(),
            cm.optional,
            mode,
        )
        .map_err(err)?;
    } else if let Some(s) = &v.secret {
        let mode = mode_of(s.default_mode);
        let name = s.secret_name.clone().unwrap_or_default();
        let obj = fetched.secrets.get(&name).cloned().flatten();
        secret_files(
            &mut files,
            obj.as_ref(),
            &name,
            s.items.as_deref(),
            s.optional,
            mode,
        )
        .map_err(err)?;
    } else if let Some(d) = &v.downward_api {
        let mode = mode_of(d.default_mode);
        downward_files(&mut files, pod, d.items.as_deref(), facts, mode).map_err(err)?;
    } else if let Some(p) = &v.projected {
        let mode = mode_of(p.default_mode);
        for src in p.sources.iter().flatten() {
            if let Some(cm) = &src.config_map {
                let obj = fetched.config_maps.get(&cm.name).cloned().flatten();
                config_map_files(
                    &mut files,
                    obj.as_ref(),
                    &cm.name,
                    cm.items.as_deref(),
                    cm.optional,
                    mode,
                )
                .map_err(err)?;
            }
            if let Some(s) = &src.secret {
                let obj = fetched.secrets.get(&s.name).cloned().flatten();
                secret_files(
                    &mut files,
                    obj.as_ref(),
                    &s.name,
                    s.items.as_deref(),
                    s.optional,
                    mode,
                )
                .map_err(err)?;
            }
            if let Some(d) = &src.downward_api {
                downward_files(&mut files, pod, d.items.as_deref(), facts, mode).map_err(err)?;
            }
            // serviceAccountToken and clusterTrustBundle sources are not served
            // (the API answers them with a warning): nothing is written for them.
        }
    }
    for path in files.keys() {
        if !relative_and_inside(path) {
            return Err(err(format!(
                "invalid path {path:?} in volume {ns}/{}",
                v.name
            )));
        }
    }
    Ok(files)
}

fn mode_of(m: Option<i32>) -> u32 {
    m.and_then(|m| u32::try_from(m).ok())
        .map(|m| m & 0o777)
        .unwrap_or(DEFAULT_MODE)
}

fn config_map_files(
    files: &mut Files,
    cm: Option<&ConfigMap>,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: u32,
) -> Result<(), String> {
    let Some(cm) = cm else {
        return if optional == Some(true) {
            Ok(())
        } else {
            Err(format!("configmap \"{name}\" not found"))
        };
    };
    match items {
        Some(items) => {
            for it in items {
                match config_map_value(cm, &it.key) {
                    Some(v) => {
                        files.insert(
                            it.path.clone(),
                            (v.into_bytes(), it.mode.map_or(mode, |m| mode_of(Some(m)))),
                        );
                    }
                    None if optional == Some(true) => {}
                    None => {
                        return Err(format!(
                            "configmap references non-existent config key: {}",
                            it.key
                        ));
                    }
                }
            }
        }
        None => {
            for (k, v) in cm.data.iter().flatten() {
                files.insert(k.clone(), (v.clone().into_bytes(), mode));
            }
            for (k, v) in cm.binary_data.iter().flatten() {
                files.insert(k.clone(), (v.0.clone(), mode));
            }
        }
    }
    Ok(())
}

fn secret_files(
    files: &mut Files,
    s: Option<&Secret>,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: u32,
) -> Result<(), String> {
    let Some(s) = s else {
        return if optional == Some(true) {
            Ok(())
        } else {
            Err(format!("secret \"{name}\" not found"))
        };
    };
    let mut data: BTreeMap<String, Vec<u8>> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in s.string_data.iter().flatten() {
        data.insert(k.clone(), v.clone().into_bytes());
    }
    match items {
        Some(items) => {
            for it in items {
                match data.get(&it.key) {
                    Some(v) => {
                        files.insert(
                            it.path.clone(),
                            (v.clone(), it.mode.map_or(mode, |m| mode_of(Some(m)))),
                        );
                    }
                    None if optional == Some(true) => {}
                    None => return Err(format!("references non-existent secret key: {}", it.key)),
                }
            }
        }
        None => {
            for (k, v) in data {
                files.insert(k, (v, mode));
            }
        }
    }
    Ok(())
}

fn downward_files(
    files: &mut Files,
    pod: &Pod,
    items: Option<&[DownwardAPIVolumeFile]>,
    facts: &PodFacts,
    mode: u32,
) -> Result<(), String> {
    for it in items.into_iter().flatten() {
        let value = if let Some(f) = &it.field_ref {
            field_value(pod, &f.field_path, facts)?
        } else if let Some(r) = &it.resource_field_ref {
            resource_value(pod, None, r, facts)?
        } else {
            continue;
        };
        files.insert(
            it.path.clone(),
            (
                value.into_bytes(),
                it.mode.map_or(mode, |m| mode_of(Some(m))),
            ),
        );
    }
    Ok(())
}

/// A relative path that stays inside its directory (no `..`, not absolute).
pub fn relative_and_inside(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Writes `files` into `dir` the kubelet's way (see the module's doc): nothing
/// changes when they are what is there already. Returns whether it wrote.
pub fn write_atomic(dir: &Path, files: &Files) -> io::Result<bool> {
    std::fs::create_dir_all(dir)?;
    let data = dir.join("..data");
    if let Ok(current) = std::fs::read_link(&data)
        && read_tree(&dir.join(&current)).ok().as_ref() == Some(files)
    {
        return Ok(false);
    }
    let stamp = jiff::Timestamp::now()
        .strftime("%Y_%m_%d_%H_%M_%S.%f")
        .to_string();
    let ts_name = format!("..{stamp}");
    let ts_dir = dir.join(&ts_name);
    std::fs::create_dir(&ts_dir)?;
    for (path, (bytes, mode)) in files {
        let target = ts_dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, bytes)?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode))?;
    }
    let old = std::fs::read_link(&data).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&ts_name, &tmp)?;
    // The swap: readers see the old set or the new one, never a mix.
    std::fs::rename(&tmp, &data)?;
    let tops: std::collections::BTreeSet<String> = files
        .keys()
        .filter_map(|p| p.split('/').next().map(str::to_string))
        .collect();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(top), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !tops.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old.filter(|o| *o != Path::new(&ts_name)) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

/// The files under `dir` (relative paths), with their modes.
fn read_tree(dir: &Path) -> io::Result<Files> {
    fn walk(base: &Path, dir: &Path, out: &mut Files) -> io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let meta = entry.metadata()?;
            if meta.is_dir() {
                walk(base, &path, out)?;
            } else {
                let rel = path
                    .strip_prefix(base)
                    .map_err(io::Error::other)?
                    .to_string_lossy()
                    .into_owned();
                out.insert(
                    rel,
                    (std::fs::read(&path)?, meta.permissions().mode() & 0o777),
                );
            }
        }
        Ok(())
    }
    let mut out = Files::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// Checks (and for the `…OrCreate` types makes) a `hostPath` as the kubelet
/// does; the error names the path.
pub fn check_host_path(path: &str, kind: Option<&str>) -> Result<(), String> {
    let p = Path::new(path);
    let meta = std::fs::metadata(p);
    let is = |want: &str, ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(format!(
                "hostPath type check failed: {path} is not a {want}"
            ))
        }
    };
    match kind.unwrap_or("") {
        "" => Ok(()),
        "DirectoryOrCreate" => match meta {
            Ok(m) => is("directory", m.is_dir()),
            Err(_) => {
                std::fs::create_dir_all(p)
                    .map_err(|e| format!("cannot create directory {path}: {e}"))?;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| format!("cannot set the mode of {path}: {e}"))
            }
        },
        "FileOrCreate" => match meta {
            Ok(m) => is("file", m.is_file()),
            Err(_) => {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| format!("cannot create directory of {path}: {e}"))?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map(|_| ())
                    .map_err(|e| format!("cannot create file {path}: {e}"))?;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644))
                    .map_err(|e| format!("cannot set the mode of {path}: {e}"))
            }
        },
        other => {
            let m = meta.map_err(|_| match other {
                "Directory" => format!("hostPath type check failed: {path} is not a directory"),
                "File" => format!("hostPath type check failed: {path} is not a file"),
                "Socket" => format!("hostPath type check failed: {path} is not a socket file"),
                "CharDevice" => {
                    format!("hostPath type check failed: {path} is not a character device")
                }
                "BlockDevice" => {
                    format!("hostPath type check failed: {path} is not a block device")
                }
                _ => format!("hostPath type {other:?} is not a valid type"),
            })?;
            let t = m.file_type();
            match other {
                "Directory" => is("directory", m.is_dir()),
                "File" => is("file", m.is_file()),
                "Socket" => is("socket file", t.is_socket()),
                "CharDevice" => is("character device", t.is_char_device()),
                "BlockDevice" => is("block device", t.is_block_device()),
                _ => Err(format!("hostPath type {other:?} is not a valid type")),
            }
        }
    }
}

/// Where each volume of the pod is on the host, once set up.
pub type Sources = BTreeMap<String, MountSource>;

/// The container's mounts from its `volumeMounts`: `subPath` (or `subPathExpr`,
/// expanded against the container's environment) picks a path inside the
/// volume (made as a directory if it is missing, as the kubelet does).
pub fn container_mounts(
    c: &k8s_openapi::api::core::v1::Container,
    sources: &Sources,
    env: &[(String, String)],
    read_only_volumes: &std::collections::BTreeSet<String>,
) -> Result<Vec<Mount>, String> {
    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let Some(source) = sources.get(&m.name) else {
            // A volume kind not served here (answered by the API with a warning).
            tracing::warn!(container = %c.name, volume = %m.name, "volume not available on this node; not mounted");
            continue;
        };
        let sub = match (&m.sub_path, &m.sub_path_expr) {
            (Some(s), _) if !s.is_empty() => Some(s.clone()),
            (_, Some(e)) if !e.is_empty() => Some(super::env::expand(e, |name| {
                env.iter()
                    .rev()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            })),
            _ => None,
        };
        let source = match (source, sub) {
            (MountSource::Bind(dir), Some(sub)) => {
                if !relative_and_inside(&sub) {
                    return Err(format!("invalid subPath {sub:?} for volume {:?}", m.name));
                }
                let path = Path::new(dir).join(&sub);
                if std::fs::symlink_metadata(&path).is_err() {
                    std::fs::create_dir_all(&path).map_err(|e| {
                        format!("cannot create subPath {sub:?} of volume {:?}: {e}", m.name)
                    })?;
                }
                // Resolved now (through `..data`), so the mount pins this file.
                let real = std::fs::canonicalize(&path)
                    .map_err(|e| format!("subPath {sub:?} of volume {:?}: {e}", m.name))?;
                MountSource::Bind(real.to_string_lossy().into_owned())
            }
            (s, _) => s.clone(),
        };
        mounts.push(Mount {
            source,
            target: m.mount_path.clone(),
            read_only: m.read_only == Some(true) || read_only_volumes.contains(&m.name),
        });
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn files(pairs: &[(&str, &str)]) -> Files {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), (v.as_bytes().to_vec(), 0o644)))
            .collect()
    }

    #[test]
    fn the_atomic_writer_swaps_data_and_keeps_top_level_links() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        assert!(write_atomic(&dir, &files(&[("a", "1"), ("sub/b", "2")])).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.join("sub/b")).unwrap(), "2");
        assert_eq!(
            std::fs::read_link(dir.join("a")).unwrap(),
            Path::new("..data/a")
        );
        let first = std::fs::read_link(dir.join("..data")).unwrap();
        assert!(
            !write_atomic(&dir, &files(&[("a", "1"), ("sub/b", "2")])).unwrap(),
            "unchanged"
        );

        assert!(write_atomic(&dir, &files(&[("a", "3"), ("c", "4")])).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "3");
        assert_eq!(std::fs::read_to_string(dir.join("c")).unwrap(), "4");
        assert!(
            std::fs::symlink_metadata(dir.join("sub")).is_err(),
            "a removed key goes"
        );
        assert!(!dir.join(&first).exists(), "the old timestamped dir goes");
        let entries: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != "..data")
            .collect();
        assert_eq!(entries.len(), 1, "one timestamped dir: {entries:?}");
    }

    #[test]
    fn modes_are_written_and_a_mode_change_is_a_change() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        let mut f = files(&[("k", "v")]);
        write_atomic(&dir, &f).unwrap();
        f.get_mut("k").unwrap().1 = 0o400;
        assert!(write_atomic(&dir, &f).unwrap());
        let mode = std::fs::metadata(dir.join("k"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o400);
    }

    #[test]
    fn host_paths_are_checked_by_type() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().display().to_string();
        let file = format!("{base}/f");
        std::fs::write(&file, "x").unwrap();
        assert!(check_host_path(&base, Some("Directory")).is_ok());
        assert!(check_host_path(&file, Some("File")).is_ok());
        let err = check_host_path(&file, Some("Directory")).unwrap_err();
        assert!(
            err.contains(&file) && err.contains("not a directory"),
            "{err}"
        );
        let missing = format!("{base}/missing");
        assert!(
            check_host_path(&missing, Some("File"))
                .unwrap_err()
                .contains(&missing)
        );
        assert!(check_host_path(&missing, None).is_ok(), "no type: no check");
        let made = format!("{base}/made/dir");
        check_host_path(&made, Some("DirectoryOrCreate")).unwrap();
        assert!(Path::new(&made).is_dir());
        let made_file = format!("{base}/made/file");
        check_host_path(&made_file, Some("FileOrCreate")).unwrap();
        assert!(Path::new(&made_file).is_file());
        assert!(
            check_host_path(&base, Some("Socket"))
                .unwrap_err()
                .contains("not a socket")
        );
        assert!(check_host_path("/dev/null", Some("CharDevice")).is_ok());
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"a": "1", "b": "2"}},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi"}}}]}
        }))
        .unwrap()
    }

    fn volume(v: serde_json::Value) -> Volume {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_missing_config_map_names_the_volume_and_the_object() {
        let v = volume(json!({"name": "cfg", "configMap": {"name": "app-config"}}));
        let err = desired_files(&pod(), &v, &Fetched::default(), &PodFacts::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "MountVolume.SetUp failed for volume \"cfg\" : configmap \"app-config\" not found"
        );
        let v =
            volume(json!({"name": "cfg", "configMap": {"name": "app-config", "optional": true}}));
        assert!(
            desired_files(&pod(), &v, &Fetched::default(), &PodFacts::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn projected_volumes_gather_their_sources_with_items_and_modes() {
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": "cm"}, "data": {"x": "1", "y": "2"}}),
        )
        .unwrap();
        let s: Secret =
            serde_json::from_value(json!({"metadata": {"name": "s"}, "data": {"pw": "aGk="}}))
                .unwrap();
        let fetched = Fetched {
            config_maps: HashMap::from([("cm".into(), Some(cm))]),
            secrets: HashMap::from([("s".into(), Some(s))]),
        };
        let v = volume(
            json!({"name": "all", "projected": {"defaultMode": 0o440, "sources": [
                {"configMap": {"name": "cm", "items": [{"key": "y", "path": "conf/y.txt", "mode": 0o600}]}},
                {"secret": {"name": "s"}},
                {"downwardAPI": {"items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}}
                ]}}
            ]}}),
        );
        let f = desired_files(&pod(), &v, &fetched, &PodFacts::default()).unwrap();
        assert_eq!(f["conf/y.txt"], (b"2".to_vec(), 0o600));
        assert_eq!(f["pw"], (b"hi".to_vec(), 0o440));
        assert_eq!(f["labels"].0, b"a=\"1\"\nb=\"2\"".to_vec());
        assert_eq!(f["mem"].0, b"64".to_vec());
        assert!(!f.contains_key("x"));
    }

    #[test]
    fn sub_paths_must_stay_inside_the_volume() {
        assert!(relative_and_inside("a/b"));
        assert!(!relative_and_inside("../a"));
        assert!(!relative_and_inside("/etc"));
        assert!(!relative_and_inside(""));
    }
}
