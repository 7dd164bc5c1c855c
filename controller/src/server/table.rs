//! Server-side printing: a list, an object or a watch event answered as a
//! `meta.k8s.io` Table with kubectl's columns ([`tugboat_api::columns`], the code
//! `tug get` prints with), or as PartialObjectMetadata.

use jiff::Timestamp;
use serde_json::{Map, Value, json};
use tugboat_api::columns::{self, CellType};
use tugboat_api::resource::ResourceInfo;
use tugboat_api::{ApiError, meta};

use super::accept::Shape;
use super::query::Query;
use crate::store::Stored;

/// What each Table row carries besides its cells (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn from_query(query: &Query) -> Result<Include, ApiError> {
        match query.get("includeObject") {
            None | Some("") | Some("Metadata") => Ok(Include::Metadata),
            Some("None") => Ok(Include::None),
            Some("Object") => Ok(Include::Object),
            Some(other) => Err(ApiError::bad_parameter(
                "includeObject",
                other,
                "supported values: \"None\", \"Metadata\", \"Object\"",
            )),
        }
    }
}

/// `metadata` of `obj` as a `PartialObjectMetadata` of `version`.
pub fn partial(obj: &Value, version: &str) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

fn column_definitions(info: &ResourceInfo) -> Vec<Value> {
    columns::columns(info)
        .iter()
        .map(|c| {
            let mut def = json!({
                "name": c.name,
                "type": c.cell.as_str(),
                "format": "",
                "description": c.description,
                "priority": c.priority,
            });
            if c.name == "Name" {
                def["format"] = "name".into();
            }
            def
        })
        .collect()
}

fn row(info: &ResourceInfo, obj: &Value, include: Include, version: &str, now: Timestamp) -> Value {
    let cells: Vec<Value> = match columns::cells(info, obj, now) {
        Ok(cells) => columns::columns(info)
            .iter()
            .zip(cells)
            .map(|(c, cell)| match c.cell {
                CellType::Integer => cell
                    .parse::<i64>()
                    .map(Value::from)
                    .unwrap_or(Value::String(cell)),
                CellType::String | CellType::Boolean | CellType::Date => Value::String(cell),
            })
            .collect(),
        // A stored object always decodes; should one not, its row still names it.
        Err(e) => {
            tracing::warn!(error = %e, "cannot print a row");
            let mut cells = vec![Value::String(meta::name(obj).unwrap_or("").to_string())];
            cells.resize(columns::columns(info).len(), Value::String(String::new()));
            cells
        }
    };
    let mut row = Map::new();
    row.insert("cells".into(), Value::Array(cells));
    match include {
        Include::None => {}
        Include::Metadata => {
            row.insert("object".into(), partial(obj, version));
        }
        Include::Object => {
            row.insert("object".into(), obj.clone());
        }
    }
    Value::Object(row)
}

/// A Table of `objects`; `list_meta` is the list's `metadata` (resourceVersion,
/// continue). `with_columns` is false for watch events after the first, as
/// kube-apiserver sends the column definitions once per watch.
pub fn table(
    info: &ResourceInfo,
    objects: &[&Value],
    include: Include,
    version: &str,
    list_meta: Value,
    with_columns: bool,
) -> Value {
    let now = Timestamp::now();
    let columns = if with_columns {
        column_definitions(info)
    } else {
        Vec::new()
    };
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": list_meta,
        "columnDefinitions": columns,
        "rows": objects.iter().map(|o| row(info, o, include, version, now)).collect::<Vec<_>>(),
    })
}

/// One object (a get, or a watch event) in `shape`; a Table carries its column
/// definitions when `with_columns` (a watch sends them with its first event only).
pub fn object(
    info: &ResourceInfo,
    obj: &Value,
    shape: Shape,
    include: Include,
    with_columns: bool,
) -> Value {
    match shape {
        Shape::Json | Shape::Protobuf => obj.clone(),
        Shape::Metadata(v) => partial(obj, v),
        Shape::Table(v) => {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or_default();
            table(
                info,
                &[obj],
                include,
                v,
                json!({"resourceVersion": rv}),
                with_columns,
            )
        }
    }
}

/// A list in `shape`; `list_meta` as for [`table`].
pub fn list(
    info: &ResourceInfo,
    items: &[&Value],
    shape: Shape,
    include: Include,
    list_meta: Value,
) -> Value {
    match shape {
        Shape::Json | Shape::Protobuf => json!({
            "kind": info.list_kind(),
            "apiVersion": info.api_version(),
            "metadata": list_meta,
            "items": items,
        }),
        Shape::Metadata(v) => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": format!("meta.k8s.io/{v}"),
            "metadata": list_meta,
            "items": items.iter().map(|o| partial(o, v)).collect::<Vec<_>>(),
        }),
        Shape::Table(v) => table(info, items, include, v, list_meta, true),
    }
}

/// A plain JSON list of objects as stored, their bytes as they were encoded
/// when written (objects without them are encoded here): the same document
/// [`list`] makes for [`Shape::Json`], keys in the same order.
pub fn json_list(info: &ResourceInfo, items: &[Stored], list_meta: &Value) -> Vec<u8> {
    let size: usize = items
        .iter()
        .map(|s| s.json().map_or(1024, |j| j.len() + 1))
        .sum();
    let mut out = Vec::with_capacity(size + 256);
    let text = |v: &str| Value::from(v).to_string();
    out.extend_from_slice(br#"{"apiVersion":"#);
    out.extend_from_slice(text(&info.api_version()).as_bytes());
    out.extend_from_slice(br#","items":["#);
    for (i, stored) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match stored.json() {
            Some(json) => out.extend_from_slice(json),
            None => out.extend_from_slice(stored.object.to_string().as_bytes()),
        }
    }
    out.extend_from_slice(br#"],"kind":"#);
    out.extend_from_slice(text(&info.list_kind()).as_bytes());
    out.extend_from_slice(br#","metadata":"#);
    out.extend_from_slice(list_meta.to_string().as_bytes());
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tugboat_api::resource::{DEPLOYMENTS, PODS};

    #[test]
    fn a_json_list_of_stored_bytes_is_the_list_encoding_would_make() {
        use std::sync::Arc;

        use crate::store::Encoded;
        let pod = |name: &str, text: &str| {
            Arc::new(json!({"metadata": {"name": name}, "spec": {"note": text}}))
        };
        let with_bytes = |object: Arc<Value>| {
            let bytes = serde_json::to_vec(&*object).unwrap().into();
            Stored {
                encoded: Some(Encoded::new(&object, bytes)),
                object,
                revision: 1,
            }
        };
        let a = with_bytes(pod("a", "\"quoted\" ü"));
        let b = Stored {
            object: pod("b", "no bytes kept"),
            revision: 2,
            encoded: None,
        };
        // Bytes that belong to another object are not used.
        let c = Stored {
            object: pod("c", "replaced"),
            ..with_bytes(pod("c", "original"))
        };
        let meta = json!({"resourceVersion": "9", "continue": "x"});
        for items in [vec![], vec![a, b, c]] {
            let values: Vec<&Value> = items.iter().map(|s| &*s.object).collect();
            let encoded = list(&PODS, &values, Shape::Json, Include::None, meta.clone());
            assert_eq!(
                String::from_utf8(json_list(&PODS, &items, &meta)).unwrap(),
                encoded.to_string()
            );
        }
    }

    fn deployment() -> Value {
        json!({
            "kind": "Deployment", "apiVersion": "apps/v1",
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "7",
                         "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"app": "web"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        })
    }

    #[test]
    fn a_table_has_kubectls_columns_with_wide_ones_at_priority_one() {
        let d = deployment();
        let t = list(
            &DEPLOYMENTS,
            &[&d],
            Shape::Table("v1"),
            Include::Metadata,
            json!({"resourceVersion": "9"}),
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
        assert_eq!(t["columnDefinitions"][0]["format"], "name");
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "web");
        assert_eq!(cells[1], "2/3");
        // Integer columns carry numbers, as kube-apiserver's do.
        assert_eq!(cells[2], 3);
        assert_eq!(cells[7], "app=web");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["labels"]["app"], "web");
        assert_eq!(t["metadata"]["resourceVersion"], "9");
    }

    #[test]
    fn include_object_chooses_what_rows_carry() {
        let d = deployment();
        let t = object(&DEPLOYMENTS, &d, Shape::Table("v1"), Include::Object, true);
        assert_eq!(t["rows"][0]["object"]["spec"]["replicas"], 3);
        let t = object(&DEPLOYMENTS, &d, Shape::Table("v1"), Include::None, true);
        assert!(t["rows"][0].get("object").is_none());
        let q = Query::parse(Some("includeObject=Everything")).unwrap();
        assert_eq!(Include::from_query(&q).unwrap_err().code, 400);
    }

    #[test]
    fn metadata_shapes_keep_only_metadata() {
        let d = deployment();
        let m = object(
            &DEPLOYMENTS,
            &d,
            Shape::Metadata("v1"),
            Include::Metadata,
            true,
        );
        assert_eq!(m["kind"], "PartialObjectMetadata");
        assert!(m.get("spec").is_none());
        let l = list(
            &PODS,
            &[&d],
            Shape::Metadata("v1"),
            Include::Metadata,
            json!({}),
        );
        assert_eq!(l["kind"], "PartialObjectMetadataList");
        assert_eq!(l["items"][0]["metadata"]["name"], "web");
    }
}
