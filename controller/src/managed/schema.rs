//! The shape of each kind, as server-side apply needs it: which lists are merged
//! item by item and by which keys (`x-kubernetes-list-type: map` and
//! `x-kubernetes-list-map-keys`), which are sets, which are atomic, and which
//! objects are maps, and the defaults of list keys (a port's `protocol`). Read from
//! Kubernetes' own OpenAPI documents (the ones the server serves,
//! `crate::server::openapi`), with descriptions dropped.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use serde_json::Value;

/// How a list merges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListKind {
    /// Replaced whole.
    Atomic,
    /// Items are scalars, merged as a set.
    Set,
    /// Items are objects identified by these fields.
    Map(Vec<String>),
}

/// What a value at some place in an object is.
#[derive(Clone, Debug)]
pub enum Shape<'a> {
    /// A scalar, or anything replaced whole (untyped, atomic maps).
    Leaf,
    /// An object with named fields.
    Struct(&'a serde_json::Map<String, Value>),
    /// A map of keys to values of one schema.
    Map(&'a Value),
    List {
        items: &'a Value,
        kind: ListKind,
    },
}

/// The schemas of one group-version.
pub struct Schemas {
    by_name: HashMap<String, Value>,
    /// Kind → schema name.
    by_kind: HashMap<String, String>,
}

static LOADED: LazyLock<Mutex<HashMap<String, Arc<Schemas>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The schemas of `api_version` (`apps/v1`, `v1`), if the server has its document.
pub fn for_api_version(api_version: &str) -> Option<Arc<Schemas>> {
    let path = if api_version.contains('/') {
        format!("apis/{api_version}")
    } else {
        format!("api/{api_version}")
    };
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = loaded.get(&path) {
        return Some(s.clone());
    }
    let mut doc = crate::server::openapi::document_json(&path)?;
    strip_descriptions(&mut doc);
    let Value::Object(schemas) = doc.pointer_mut("/components/schemas").map(Value::take)? else {
        return None;
    };
    let mut by_kind = HashMap::new();
    for (name, s) in &schemas {
        for gvk in s["x-kubernetes-group-version-kind"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let group = gvk["group"].as_str().unwrap_or("");
            let version = gvk["version"].as_str().unwrap_or("");
            let gv = if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            };
            if gv == api_version
                && let Some(kind) = gvk["kind"].as_str()
            {
                by_kind.insert(kind.to_string(), name.clone());
            }
        }
    }
    let schemas = Arc::new(Schemas {
        by_name: schemas.into_iter().collect(),
        by_kind,
    });
    loaded.insert(path, schemas.clone());
    Some(schemas)
}

fn strip_descriptions(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("description");
            for child in m.values_mut() {
                strip_descriptions(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}

impl Schemas {
    /// The schema of `kind`'s objects.
    pub fn kind(&self, kind: &str) -> Option<&Value> {
        self.by_name.get(self.by_kind.get(kind)?)
    }

    /// Follows `$ref` and single-element `allOf` to the schema itself (a bounded
    /// number of hops: the documents do not chain more than a few).
    fn resolve<'a>(&'a self, mut s: &'a Value) -> &'a Value {
        for _ in 0..8 {
            if let Some(r) = s.get("$ref").and_then(Value::as_str) {
                match r
                    .strip_prefix("#/components/schemas/")
                    .and_then(|n| self.by_name.get(n))
                {
                    Some(next) => s = next,
                    None => return s,
                }
            } else if let Some([only]) = s.get("allOf").and_then(Value::as_array).map(Vec::as_slice)
            {
                s = only;
            } else {
                return s;
            }
        }
        s
    }

    /// The default of field `name` of the objects `s` describes, if it has one.
    pub fn field_default<'a>(&'a self, s: &'a Value, name: &str) -> Option<&'a Value> {
        match self.shape(s) {
            Shape::Struct(props) => {
                let field = self.resolve(props.get(name)?);
                field
                    .get("default")
                    .or_else(|| props.get(name)?.get("default"))
            }
            _ => None,
        }
    }

    /// What `s` describes.
    pub fn shape<'a>(&'a self, s: &'a Value) -> Shape<'a> {
        let s = self.resolve(s);
        if s.get("x-kubernetes-int-or-string").is_some() || s.get("oneOf").is_some() {
            return Shape::Leaf;
        }
        if s.get("x-kubernetes-preserve-unknown-fields").is_some() {
            return Shape::Leaf;
        }
        match s.get("type").and_then(Value::as_str) {
            Some("array") => {
                let items = s.get("items").unwrap_or(&Value::Null);
                let kind = match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
                    Some("map") => ListKind::Map(
                        s["x-kubernetes-list-map-keys"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect(),
                    ),
                    Some("set") => ListKind::Set,
                    Some(_) => ListKind::Atomic,
                    // Lists merged by key in strategic merge patch are merged by
                    // that key here too.
                    None => match s
                        .get("x-kubernetes-patch-merge-key")
                        .and_then(Value::as_str)
                    {
                        Some(k) => ListKind::Map(vec![k.to_string()]),
                        None => ListKind::Atomic,
                    },
                };
                match kind {
                    ListKind::Map(ref keys) if keys.is_empty() => Shape::List {
                        items,
                        kind: ListKind::Atomic,
                    },
                    kind => Shape::List { items, kind },
                }
            }
            Some("object") | None => {
                if s.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic") {
                    return Shape::Leaf;
                }
                if let Some(p) = s.get("properties").and_then(Value::as_object) {
                    return Shape::Struct(p);
                }
                match s.get("additionalProperties") {
                    Some(v) if v.is_object() => Shape::Map(v),
                    _ => Shape::Leaf,
                }
            }
            _ => Shape::Leaf,
        }
    }
}
