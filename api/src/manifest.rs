//! Manifests: one or more YAML (or JSON) documents, each a Kubernetes object.

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot parse YAML: {0}")]
    Yaml(String),
    #[error("document {index}: expected a mapping with apiVersion, kind and metadata, got {found}")]
    NotAnObject { index: usize, found: &'static str },
    #[error("document {index}: missing `{field}`")]
    MissingField { index: usize, field: &'static str },
}

/// Every non-empty document of a multi-document YAML stream (JSON is YAML too),
/// checked to carry `apiVersion` and `kind`. A `kind: List` is flattened into its items.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, ManifestError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(text, yaml_options())
        .map_err(|e| ManifestError::Yaml(e.to_string()))?;
    let mut out = Vec::new();
    for (index, doc) in docs.into_iter().enumerate() {
        let index = index + 1;
        if doc.is_null() {
            continue;
        }
        if !doc.is_object() {
            return Err(ManifestError::NotAnObject {
                index,
                found: json_type(&doc),
            });
        }
        for field in ["apiVersion", "kind"] {
            if doc
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(ManifestError::MissingField { index, field });
            }
        }
        if doc["kind"] == "List" {
            if let Some(items) = doc.get("items").and_then(Value::as_array) {
                out.extend(items.iter().cloned());
            }
            continue;
        }
        out.push(doc);
    }
    Ok(out)
}

/// The YAML reader's bounds: nesting no deeper than JSON bodies may
/// ([`limits::MAX_DEPTH`]), duplicate keys refused, and serde-saphyr's budget for
/// alias expansion ("billion laughs"), node and document counts left at its
/// defaults (50,000 aliases, 250,000 nodes, 1,024 documents).
///
/// [`limits::MAX_DEPTH`]: crate::limits::MAX_DEPTH
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: crate::limits::MAX_DEPTH,
        },
        duplicate_keys: serde_saphyr::options::DuplicateKeyPolicy::Error,
    }
}

/// Serializes a value as YAML (for `-o yaml`).
pub fn to_yaml(value: &Value) -> Result<String, ManifestError> {
    serde_saphyr::to_string(value).map_err(|e| ManifestError::Yaml(e.to_string()))
}

pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_documents_are_read_in_order_and_empty_ones_skipped() {
        let text = "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n";
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["kind"], "Namespace");
        assert_eq!(docs[1]["spec"]["replicas"], 3);
    }

    #[test]
    fn a_document_without_kind_is_refused_with_its_index() {
        let err = parse_documents("apiVersion: v1\nkind: Pod\n---\napiVersion: v1\nmetadata: {}\n")
            .unwrap_err();
        assert_eq!(err.to_string(), "document 2: missing `kind`");
    }

    #[test]
    fn deep_nesting_duplicate_keys_and_alias_bombs_are_refused() {
        let deep = format!(
            "apiVersion: v1\nkind: Pod\nx: {}1{}\n",
            "[".repeat(70),
            "]".repeat(70)
        );
        assert!(parse_documents(&deep).is_err());
        let dup = "apiVersion: v1\nkind: Pod\nkind: Node\n";
        assert!(parse_documents(dup).is_err());
        let mut bomb =
            String::from("apiVersion: v1\nkind: Pod\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        assert!(
            parse_documents(&bomb).is_err(),
            "a billion laughs was expanded"
        );
    }

    #[test]
    fn broken_yaml_reports_where() {
        let err = parse_documents("apiVersion: v1\nkind: [Pod\n").unwrap_err();
        assert!(err.to_string().contains("cannot parse YAML"), "{err}");
    }
}
