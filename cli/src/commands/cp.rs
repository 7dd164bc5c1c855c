//! `tug cp SRC DEST`: files to and from a pod's container, one side written
//! `[NAMESPACE/]POD:PATH`. As with `kubectl cp`, a tar archive travels over exec,
//! so the container needs `tar`: into the pod `tar -xmf - -C DIR`, out of it
//! `tar cf - PATH`.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, bail};

use super::exec::{Ended, run_in_pod};
use crate::args::CpArgs;
use crate::context::Context;

/// Where a side of the copy is.
#[derive(Debug, PartialEq, Eq)]
enum Side {
    Local(PathBuf),
    Pod {
        namespace: Option<String>,
        pod: String,
        path: String,
    },
}

fn side(s: &str) -> Side {
    // `C:\…` and `./a:b` are local; `pod:path` and `ns/pod:path` are remote.
    match s.split_once(':') {
        Some((pod, path)) if !pod.is_empty() && !pod.starts_with('.') && !pod.contains('\\') => {
            let (namespace, pod) = match pod.split_once('/') {
                Some((ns, p)) => (Some(ns.to_string()), p.to_string()),
                None => (None, pod.to_string()),
            };
            Side::Pod {
                namespace,
                pod,
                path: path.to_string(),
            }
        }
        _ => Side::Local(PathBuf::from(s)),
    }
}

pub async fn run(args: CpArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let default_ns = ctx.namespace().to_string();
    match (side(&args.src), side(&args.dest)) {
        (
            Side::Local(src),
            Side::Pod {
                namespace,
                pod,
                path,
            },
        ) => {
            let ns = namespace.unwrap_or(default_ns);
            if path.is_empty() {
                bail!("{}: name the destination path in the pod", args.dest);
            }
            let dest = Path::new(&path);
            let name = dest
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "".into());
            let dir = dest
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| ".".into());
            let archive = tokio::task::spawn_blocking(move || pack(&src, &name))
                .await
                .context("packing the archive")??;
            let command: Vec<String> = ["tar", "-xmf", "-", "-C", &dir]
                .into_iter()
                .map(str::to_string)
                .collect();
            let mut out = Vec::new();
            let mut err = Vec::new();
            let stdin: Box<dyn tokio::io::AsyncRead + Send + Unpin> =
                Box::new(std::io::Cursor::new(archive));
            let ended = run_in_pod(
                &client,
                &ns,
                &pod,
                args.container.as_deref(),
                &command,
                Some(stdin),
                false,
                &mut out,
                &mut err,
            )
            .await?;
            finish(ended, &err)
        }
        (
            Side::Pod {
                namespace,
                pod,
                path,
            },
            Side::Local(dest),
        ) => {
            let ns = namespace.unwrap_or(default_ns);
            if path.is_empty() {
                bail!("{}: name the source path in the pod", args.src);
            }
            let command: Vec<String> = ["tar", "cf", "-", &path]
                .into_iter()
                .map(str::to_string)
                .collect();
            let mut archive = Vec::new();
            let mut err = Vec::new();
            let ended = run_in_pod(
                &client,
                &ns,
                &pod,
                args.container.as_deref(),
                &command,
                None,
                false,
                &mut archive,
                &mut err,
            )
            .await?;
            finish(ended, &err)?;
            let prefix = path
                .trim_start_matches('/')
                .trim_end_matches('/')
                .to_string();
            tokio::task::spawn_blocking(move || unpack(&archive, &prefix, &dest))
                .await
                .context("unpacking the archive")?
        }
        (Side::Local(_), Side::Local(_)) => {
            bail!("one of SRC and DEST must be in a pod: POD:PATH or NAMESPACE/POD:PATH")
        }
        (Side::Pod { .. }, Side::Pod { .. }) => {
            bail!("copying between two pods is not supported: copy through a local path")
        }
    }
}

fn finish(ended: Ended, stderr: &[u8]) -> anyhow::Result<()> {
    let text = String::from_utf8_lossy(stderr).trim().to_string();
    match ended {
        Ended::Exited(0) => Ok(()),
        Ended::Exited(code) if text.is_empty() => {
            bail!("tar in the container exited with {code} (does the image have tar?)")
        }
        Ended::Exited(_) => bail!("{text}"),
        Ended::Failed(m) => bail!("{m}"),
    }
}

/// A tar of `src` (a file or a directory) whose entries are named under `name`.
fn pack(src: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let meta = std::fs::symlink_metadata(src).with_context(|| format!("{}", src.display()))?;
    if meta.is_dir() {
        builder
            .append_dir_all(name, src)
            .with_context(|| format!("archiving {}", src.display()))?;
    } else {
        builder
            .append_path_with_name(src, name)
            .with_context(|| format!("archiving {}", src.display()))?;
    }
    builder.into_inner().context("finishing the archive")
}

/// Unpacks what `tar cf - PREFIX` made into `dest`: the entry named PREFIX
/// becomes `dest` (or `dest/NAME` when `dest` is a directory that exists), the
/// rest goes beneath it. Entries that would land outside `dest` are refused.
fn unpack(archive: &[u8], prefix: &str, dest: &Path) -> anyhow::Result<()> {
    let base_name = Path::new(prefix)
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let root = if dest.is_dir() && !base_name.is_empty() {
        dest.join(&base_name)
    } else {
        dest.to_path_buf()
    };
    let mut ar = tar::Archive::new(archive);
    let mut count = 0usize;
    for entry in ar.entries().context("reading the archive from the pod")? {
        let mut entry = entry.context("reading the archive from the pod")?;
        let path = entry.path()?.into_owned();
        let rel = path
            .strip_prefix(prefix)
            .map(Path::to_path_buf)
            .unwrap_or(path.clone());
        if rel.components().any(|c| {
            matches!(
                c,
                Component::ParentDir | Component::RootDir | Component::Prefix(_)
            )
        }) {
            bail!(
                "the archive holds {} , which would land outside {}",
                path.display(),
                dest.display()
            );
        }
        let target = if rel.as_os_str().is_empty() {
            root.clone()
        } else {
            root.join(&rel)
        };
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        entry
            .unpack(&target)
            .with_context(|| format!("writing {}", target.display()))?;
        count += 1;
    }
    if count == 0 {
        bail!("{prefix}: nothing to copy");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_sides_are_pod_colon_path() {
        assert_eq!(
            side("web-abc:/tmp/x"),
            Side::Pod {
                namespace: None,
                pod: "web-abc".into(),
                path: "/tmp/x".into()
            }
        );
        assert_eq!(
            side("prod/web:/a"),
            Side::Pod {
                namespace: Some("prod".into()),
                pod: "web".into(),
                path: "/a".into()
            }
        );
        assert_eq!(side("./a:b"), Side::Local(PathBuf::from("./a:b")));
        assert_eq!(side("/tmp/file"), Side::Local(PathBuf::from("/tmp/file")));
    }

    #[test]
    fn a_packed_directory_unpacks_where_it_is_asked_to() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f.txt"), "hello").unwrap();
        // What `tar cf - tmp/data` in a pod would hold.
        let archive = pack(&src, "tmp/data").unwrap();
        let out = dir.path().join("out");
        unpack(&archive, "tmp/data", &out).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("sub/f.txt")).unwrap(),
            "hello"
        );
    }

    #[test]
    fn entries_outside_the_destination_are_refused() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_old();
        h.set_size(1);
        h.set_mode(0o644);
        // Written by hand: the tar crate itself refuses to name an entry so.
        let name = b"x/../../evil";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, &b"!"[..]).unwrap();
        let archive = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        assert!(unpack(&archive, "x", &dir.path().join("out")).is_err());
    }
}
