//! Printing whole objects: `-o json` (kubectl's four-space indent), `-o yaml`, `-o name`
//! (`deployment.apps/web`), and the `List` kubectl wraps several objects in.

use std::io::Write;

use anyhow::Context as _;
use serde::Serialize as _;
use serde_json::{Value, json};
use tugboat_api::ResourceInfo;

/// `kind/name` as kubectl prints it: `deployment.apps/web`, `pod/web-abc`.
pub fn qualified_name(r: &ResourceInfo, name: &str) -> String {
    format!("{}/{}", r.qualified_singular(), name)
}

/// `name` of an object, empty when it has none.
pub fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn namespace_of(obj: &Value) -> &str {
    obj.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Fills in `apiVersion` and `kind`, which list items may lack.
pub fn with_type_meta(r: &ResourceInfo, mut obj: Value) -> Value {
    if let Some(map) = obj.as_object_mut() {
        map.entry("apiVersion")
            .or_insert_with(|| Value::String(r.api_version()));
        map.entry("kind")
            .or_insert_with(|| Value::String(r.kind.to_string()));
    }
    obj
}

/// kubectl's wrapper for several objects.
pub fn list(items: Vec<Value>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": items,
        "metadata": {"resourceVersion": ""},
    })
}

pub fn write_json(out: &mut dyn Write, value: &Value) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut buf,
        serde_json::ser::PrettyFormatter::with_indent(b"    "),
    );
    value
        .serialize(&mut ser)
        .context("cannot format the object as JSON")?;
    buf.push(b'\n');
    out.write_all(&buf)?;
    Ok(())
}

pub fn write_yaml(out: &mut dyn Write, value: &Value) -> anyhow::Result<()> {
    let mut text = serde_saphyr::to_string(value).context("cannot format the object as YAML")?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    out.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tugboat_api::resource::{DEPLOYMENTS, PODS};

    #[test]
    fn names_are_qualified_by_group_like_kubectl() {
        assert_eq!(qualified_name(&DEPLOYMENTS, "web"), "deployment.apps/web");
        assert_eq!(qualified_name(&PODS, "web-abc"), "pod/web-abc");
    }

    #[test]
    fn json_is_indented_by_four_spaces() {
        let mut out = Vec::new();
        write_json(&mut out, &json!({"a": {"b": 1}})).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\n    \"a\": {\n        \"b\": 1\n    }\n}\n"
        );
    }

    #[test]
    fn yaml_lists_items_like_kubectl() {
        let mut out = Vec::new();
        let item = with_type_meta(&PODS, json!({"metadata": {"name": "p"}}));
        write_yaml(&mut out, &list(vec![item])).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("items:\n- apiVersion: v1\n  kind: Pod\n"),
            "{text}"
        );
        assert!(text.contains("kind: List"), "{text}");
    }
}
