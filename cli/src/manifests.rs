//! Reading `-f` arguments: files, directories of `.yaml`/`.yml`/`.json` files (sorted,
//! not recursive) and `-` for stdin, into documents that remember where they came
//! from, each resolved to its resource type, namespace and name.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;
use tugboat_api::ResourceInfo;
use tugboat_api::manifest::parse_documents;
use tugboat_api::resource::by_kind;

/// One object from a manifest, with where it came from for error messages.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// The file's path as given, or `-` for stdin.
    pub source: String,
    /// 1-based position among the file's objects.
    pub index: usize,
    pub object: Value,
}

impl Document {
    /// `web.yaml (document 2)`, for messages.
    pub fn location(&self) -> String {
        format!("{} (document {})", self.source, self.index)
    }
}

/// Every document of every source, in order: files as listed, a directory's files
/// sorted by name.
pub fn read_sources(paths: &[PathBuf]) -> anyhow::Result<Vec<Document>> {
    let mut docs = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read manifests from stdin")?;
            docs.extend(parse("-", &text)?);
            continue;
        }
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            for file in manifest_files(path)? {
                docs.extend(read_file(&file)?);
            }
        } else {
            docs.extend(read_file(path)?);
        }
    }
    if docs.is_empty() {
        bail!("no objects passed: the manifests given hold no documents");
    }
    Ok(docs)
}

/// The `.yaml`, `.yml` and `.json` files directly in `dir`, sorted.
fn manifest_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list the directory {}", dir.display()))?;
    for entry in entries {
        let entry =
            entry.with_context(|| format!("cannot list the directory {}", dir.display()))?;
        let path = entry.path();
        let is_manifest = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        if is_manifest && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read_file(path: &Path) -> anyhow::Result<Vec<Document>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&path.display().to_string(), &text)
}

fn parse(source: &str, text: &str) -> anyhow::Result<Vec<Document>> {
    let objects =
        parse_documents(text).with_context(|| format!("cannot read manifests from {source}"))?;
    Ok(objects
        .into_iter()
        .enumerate()
        .map(|(i, object)| Document {
            source: source.to_string(),
            index: i + 1,
            object,
        })
        .collect())
}

/// Where a document's object lives on the server.
#[derive(Clone, Debug, PartialEq)]
pub struct Located {
    pub resource: &'static ResourceInfo,
    /// `None` for cluster-scoped resources.
    pub namespace: Option<String>,
    pub name: String,
}

/// Resolves a document's type, name and namespace: its own namespace, else
/// `default_ns`. `explicit_ns` is `-n` when given; like kubectl, it may not contradict
/// the manifest.
pub fn locate(
    doc: &Document,
    default_ns: &str,
    explicit_ns: Option<&str>,
) -> anyhow::Result<Located> {
    let api_version = doc
        .object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = doc.object.get("kind").and_then(Value::as_str).unwrap_or("");
    let resource = by_kind(api_version, kind).ok_or_else(|| {
        let served = tugboat_api::resource::ALL
            .iter()
            .map(|r| format!("{} {}", r.api_version(), r.kind))
            .collect::<Vec<_>>()
            .join(", ");
        anyhow!(
            "{}: no resource type for apiVersion {api_version:?}, kind {kind:?}; Tugboat serves {served}",
            doc.location()
        )
    })?;
    let name = doc
        .object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| anyhow!("{}: the {kind} has no metadata.name", doc.location()))?
        .to_string();
    let namespace = if resource.namespaced {
        let own = doc
            .object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty());
        match (own, explicit_ns) {
            (Some(own), Some(flag)) if own != flag => bail!(
                "{}: the namespace from the provided object {own:?} does not match the namespace {flag:?}; pass `-n {own}` or remove the namespace from the manifest",
                doc.location()
            ),
            (Some(own), _) => Some(own.to_string()),
            (None, _) => Some(default_ns.to_string()),
        }
    } else {
        None
    };
    Ok(Located {
        resource,
        namespace,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tugboat_api::resource::{DEPLOYMENTS, NAMESPACES};

    fn doc(object: Value) -> Document {
        Document {
            source: "web.yaml".into(),
            index: 2,
            object,
        }
    }

    #[test]
    fn a_document_without_a_namespace_goes_to_the_default_one() {
        let d = doc(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}),
        );
        let l = locate(&d, "team", None).unwrap();
        assert_eq!(l.resource, &DEPLOYMENTS);
        assert_eq!(l.namespace.as_deref(), Some("team"));
        assert_eq!(l.name, "web");
    }

    #[test]
    fn cluster_scoped_objects_have_no_namespace() {
        let d = doc(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}));
        let l = locate(&d, "default", Some("other")).unwrap();
        assert_eq!(l.resource, &NAMESPACES);
        assert_eq!(l.namespace, None);
    }

    #[test]
    fn an_unknown_kind_names_the_file_document_api_version_and_kind() {
        let d = doc(
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}),
        );
        let err = locate(&d, "default", None).unwrap_err().to_string();
        for part in [
            "web.yaml",
            "document 2",
            "\"example.com/v1\"",
            "\"Widget\"",
            "apps/v1 Deployment",
        ] {
            assert!(err.contains(part), "{part} missing from {err}");
        }
    }

    #[test]
    fn a_namespace_flag_contradicting_the_manifest_is_an_error() {
        let d = doc(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "a"}}),
        );
        assert!(locate(&d, "b", Some("b")).is_err());
        assert_eq!(
            locate(&d, "a", Some("a")).unwrap().namespace.as_deref(),
            Some("a")
        );
    }

    #[test]
    fn a_document_without_a_name_is_an_error() {
        let d = doc(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}}));
        assert!(
            locate(&d, "default", None)
                .unwrap_err()
                .to_string()
                .contains("metadata.name")
        );
    }

    #[test]
    fn directories_yield_their_manifest_files_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let ns = |n: &str| format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {n}\n");
        std::fs::write(dir.path().join("b.yml"), ns("b")).unwrap();
        std::fs::write(dir.path().join("a.yaml"), ns("a")).unwrap();
        std::fs::write(
            dir.path().join("c.json"),
            r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"c"}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        let docs = read_sources(&[dir.path().to_path_buf()]).unwrap();
        let names: Vec<_> = docs
            .iter()
            .map(|d| d.object["metadata"]["name"].clone())
            .collect();
        assert_eq!(names, vec![json!("a"), json!("b"), json!("c")]);
    }
}
