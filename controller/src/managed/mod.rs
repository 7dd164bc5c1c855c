//! Field management (`metadata.managedFields`) and server-side apply, as
//! kube-apiserver does them with structured-merge-diff: every client write
//! records which fields its manager set, an apply (`application/apply-patch+yaml`)
//! merges the manager's whole intent into the object, removes the fields it set
//! before and no longer does, and refuses — 409, naming the other manager and the
//! fields — to change a field another manager set, unless forced.
//!
//! Field sets are written as Kubernetes writes them (`fieldsV1`): `f:NAME` for a
//! field or map key, `k:{"name":"web"}` for an item of a list merged by key,
//! `v:VALUE` for an item of a set, `.` for an item itself. This is Tugboat's own
//! implementation (no Rust crate does structured merge); the list types and keys
//! come from Kubernetes' OpenAPI documents ([`schema`]).

pub mod schema;

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use tugboat_api::{ApiError, FieldError, meta};

use schema::{ListKind, Schemas, Shape};

/// How deep a field set may nest (objects are bounded by the store's depth limit
/// already; a client's `managedFields` are not read).
const MAX_DEPTH: usize = 64;
/// The longest manager name kube-apiserver takes.
pub const MAX_MANAGER_LEN: usize = 128;

/// A set of fields: a tree whose nodes are path elements; `member` marks the
/// paths in the set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    fn insert(&mut self, path: &[String]) {
        let mut node = self;
        for p in path {
            node = node.children.entry(p.clone()).or_default();
        }
        node.member = true;
    }

    pub fn contains(&self, path: &[String]) -> bool {
        let mut node = self;
        for p in path {
            match node.children.get(p) {
                Some(n) => node = n,
                None => return false,
            }
        }
        node.member
    }

    fn remove(&mut self, path: &[String]) {
        fn go(node: &mut FieldSet, path: &[String]) -> bool {
            match path.split_first() {
                None => node.member = false,
                Some((first, rest)) => {
                    if let Some(child) = node.children.get_mut(first)
                        && go(child, rest)
                    {
                        node.children.remove(first);
                    }
                }
            }
            !node.member && node.children.is_empty()
        }
        go(self, path);
    }

    /// Every path in the set, and whether it has members beneath it (a list
    /// item with fields).
    pub fn paths(&self) -> Vec<(Vec<String>, bool)> {
        fn go(node: &FieldSet, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, bool)>) {
            if node.member {
                out.push((prefix.clone(), !node.children.is_empty()));
            }
            for (k, child) in &node.children {
                prefix.push(k.clone());
                go(child, prefix, out);
                prefix.pop();
            }
        }
        let mut out = Vec::new();
        go(self, &mut Vec::new(), &mut out);
        out
    }

    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    /// `fieldsV1`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, child) in &self.children {
            m.insert(k.clone(), child.to_json());
        }
        Value::Object(m)
    }

    pub fn from_json(v: &Value) -> FieldSet {
        fn go(v: &Value, depth: usize) -> FieldSet {
            let mut node = FieldSet::default();
            let Some(m) = v.as_object().filter(|_| depth < MAX_DEPTH) else {
                return node;
            };
            if m.is_empty() {
                node.member = true;
            }
            for (k, child) in m {
                if k == "." {
                    node.member = true;
                } else {
                    node.children.insert(k.clone(), go(child, depth + 1));
                }
            }
            node
        }
        let mut set = go(v, 0);
        set.member = false;
        set
    }
}

/// The fields `obj` sets, as a manager owns them: everything but `apiVersion`,
/// `kind`, `status` and the metadata the server keeps.
pub fn fields_of(schemas: Option<&Schemas>, obj: &Value) -> FieldSet {
    let mut set = FieldSet::default();
    let Some(o) = obj.as_object() else {
        return set;
    };
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let top = schemas.and_then(|s| s.kind(kind));
    let props = match (schemas, top) {
        (Some(s), Some(t)) => match s.shape(t) {
            Shape::Struct(p) => Some(p),
            _ => None,
        },
        _ => None,
    };
    let mut prefix = Vec::new();
    for (k, v) in o {
        match k.as_str() {
            "apiVersion" | "kind" | "status" => {}
            "metadata" => {
                for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(child) = v.get(field) {
                        let child_schema = schemas.and_then(|s| {
                            let m = props?.get("metadata")?;
                            match s.shape(m) {
                                Shape::Struct(mp) => mp.get(field),
                                _ => None,
                            }
                        });
                        prefix.push("f:metadata".to_string());
                        prefix.push(format!("f:{field}"));
                        collect(schemas, child_schema, child, &mut prefix, &mut set, 0);
                        prefix.truncate(0);
                    }
                }
            }
            _ => {
                prefix.push(format!("f:{k}"));
                let child = props.and_then(|p| p.get(k));
                collect(schemas, child, v, &mut prefix, &mut set, 0);
                prefix.pop();
            }
        }
    }
    set
}

/// `k:{...}` for a list item: its key fields, as JSON with sorted keys.
fn item_key(item: &Value, keys: &[String]) -> Option<String> {
    let mut m = BTreeMap::new();
    for k in keys {
        if let Some(v) = item.get(k) {
            m.insert(k.clone(), v.clone());
        }
    }
    if m.is_empty() {
        return None;
    }
    Some(format!("k:{}", serde_json::to_string(&m).ok()?))
}

fn collect(
    schemas: Option<&Schemas>,
    schema: Option<&Value>,
    v: &Value,
    prefix: &mut Vec<String>,
    out: &mut FieldSet,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        out.insert(prefix);
        return;
    }
    let shape = match (schemas, schema) {
        (Some(s), Some(sc)) => s.shape(sc),
        // No schema: objects by field, lists whole.
        _ => match v {
            Value::Object(_) => Shape::Map(&Value::Null),
            _ => Shape::Leaf,
        },
    };
    match (shape, v) {
        (Shape::Struct(props), Value::Object(m)) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push(format!("f:{k}"));
                collect(schemas, props.get(k), child, prefix, out, depth + 1);
                prefix.pop();
            }
        }
        (Shape::Map(values), Value::Object(m)) if !m.is_empty() => {
            let values = (!values.is_null()).then_some(values);
            for (k, child) in m {
                prefix.push(format!("f:{k}"));
                collect(schemas, values, child, prefix, out, depth + 1);
                prefix.pop();
            }
        }
        (
            Shape::List {
                items,
                kind: ListKind::Map(keys),
            },
            Value::Array(a),
        ) => {
            for item in a {
                let Some(key) = item_key(item, &keys) else {
                    continue;
                };
                prefix.push(key);
                out.insert(prefix);
                if let Some(fields) = item.as_object() {
                    let props = schemas.and_then(|s| match s.shape(items) {
                        Shape::Struct(p) => Some(p),
                        _ => None,
                    });
                    for (k, child) in fields {
                        prefix.push(format!("f:{k}"));
                        collect(
                            schemas,
                            props.and_then(|p| p.get(k)),
                            child,
                            prefix,
                            out,
                            depth + 1,
                        );
                        prefix.pop();
                    }
                }
                prefix.pop();
            }
        }
        (
            Shape::List {
                kind: ListKind::Set,
                ..
            },
            Value::Array(a),
        ) => {
            for item in a {
                prefix.push(format!("v:{item}"));
                out.insert(prefix);
                prefix.pop();
            }
        }
        _ => out.insert(prefix),
    }
}

/// The value at a field path, if the object has it.
pub fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut v = obj;
    for p in path {
        v = step(v, p)?;
    }
    Some(v)
}

fn step<'a>(v: &'a Value, p: &str) -> Option<&'a Value> {
    if let Some(f) = p.strip_prefix("f:") {
        return v.get(f);
    }
    let items = v.as_array()?;
    if let Some(k) = p.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).ok()?;
        return items
            .iter()
            .find(|item| key.iter().all(|(kk, kv)| item.get(kk) == Some(kv)));
    }
    if let Some(val) = p.strip_prefix("v:") {
        let want: Value = serde_json::from_str(val).ok()?;
        return items.iter().find(|i| **i == want);
    }
    None
}

/// Removes what is at `path` from `obj`.
fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut v = obj;
    for p in parents {
        let next = if let Some(f) = p.strip_prefix("f:") {
            v.get_mut(f)
        } else {
            let idx = index_of(v, p);
            match (idx, v.as_array_mut()) {
                (Some(i), Some(a)) => a.get_mut(i),
                _ => None,
            }
        };
        match next {
            Some(n) => v = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = v.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(i) = index_of(v, last)
        && let Some(a) = v.as_array_mut()
    {
        a.remove(i);
    }
}

fn index_of(v: &Value, p: &str) -> Option<usize> {
    let items = v.as_array()?;
    let target = step(v, p)?;
    items.iter().position(|i| std::ptr::eq(i, target))
}

/// `live` with `applied` merged in: fields set, lists merged as their schema says.
fn merge(
    schemas: Option<&Schemas>,
    schema: Option<&Value>,
    live: &Value,
    applied: &Value,
    depth: usize,
) -> Value {
    if depth > MAX_DEPTH {
        return applied.clone();
    }
    let shape = match (schemas, schema) {
        (Some(s), Some(sc)) => s.shape(sc),
        _ => match applied {
            Value::Object(_) => Shape::Map(&Value::Null),
            _ => Shape::Leaf,
        },
    };
    match (shape, live, applied) {
        (Shape::Struct(_) | Shape::Map(_), Value::Object(l), Value::Object(a)) => {
            let child_schema = |k: &str| -> Option<&Value> {
                match (schemas, schema) {
                    (Some(s), Some(sc)) => match s.shape(sc) {
                        Shape::Struct(p) => p.get(k),
                        Shape::Map(v) if !v.is_null() => Some(v),
                        _ => None,
                    },
                    _ => None,
                }
            };
            let mut out = l.clone();
            for (k, av) in a {
                let merged = match l.get(k) {
                    Some(lv) => merge(schemas, child_schema(k), lv, av, depth + 1),
                    None => av.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (
            Shape::List {
                items,
                kind: ListKind::Map(keys),
            },
            Value::Array(l),
            Value::Array(a),
        ) => {
            let mut out: Vec<Value> = Vec::with_capacity(l.len().max(a.len()));
            let key = |i: &Value| item_key(i, &keys);
            for li in l {
                match a.iter().find(|ai| key(ai).is_some() && key(ai) == key(li)) {
                    Some(ai) => out.push(merge(schemas, Some(items), li, ai, depth + 1)),
                    None => out.push(li.clone()),
                }
            }
            for ai in a {
                if !l.iter().any(|li| key(li).is_some() && key(li) == key(ai)) {
                    out.push(ai.clone());
                }
            }
            Value::Array(out)
        }
        (
            Shape::List {
                kind: ListKind::Set,
                ..
            },
            Value::Array(l),
            Value::Array(a),
        ) => {
            let mut out = l.clone();
            for ai in a {
                if !out.contains(ai) {
                    out.push(ai.clone());
                }
            }
            Value::Array(out)
        }
        _ => applied.clone(),
    }
}

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    fields: FieldSet,
}

impl Entry {
    fn parse(v: &Value) -> Option<Entry> {
        Some(Entry {
            manager: v.get("manager")?.as_str()?.to_string(),
            operation: v.get("operation")?.as_str()?.to_string(),
            api_version: v
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            time: v.get("time").and_then(Value::as_str).map(str::to_string),
            subresource: v
                .get("subresource")
                .and_then(Value::as_str)
                .map(str::to_string),
            fields: FieldSet::from_json(v.get("fieldsV1").unwrap_or(&Value::Null)),
        })
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "fieldsType": "FieldsV1",
            "fieldsV1": self.fields.to_json(),
        });
        if let Some(t) = &self.time {
            v["time"] = json!(t);
        }
        if let Some(s) = &self.subresource {
            v["subresource"] = json!(s);
        }
        v
    }

    fn is(&self, manager: &str, operation: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource.is_none()
    }
}

fn entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Entry::parse)
        .collect()
}

fn set_entries(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(Entry::to_json)
        .collect();
    let m = meta::metadata_mut(obj);
    if list.is_empty() {
        m.remove("managedFields");
    } else {
        m.insert("managedFields".into(), Value::Array(list));
    }
}

/// `.spec.template.spec.containers[name="web"].image`: a path as kube-apiserver
/// names it in a conflict.
pub fn path_string(path: &[String]) -> String {
    let mut out = String::new();
    for p in path {
        if let Some(f) = p.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = p.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = p.strip_prefix("v:") {
            out.push_str(&format!("[{v}]"));
        }
    }
    out
}

/// Fills in the defaults of list keys an applied item leaves out (a container
/// port's `protocol: TCP`), so that it is the same item as the stored one, whose
/// key the server defaulted: what structured-merge-diff does with key defaults.
fn fill_key_defaults(schemas: &Schemas, schema: &Value, v: &mut Value, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match (schemas.shape(schema), v) {
        (Shape::Struct(props), Value::Object(m)) => {
            for (k, child) in m.iter_mut() {
                if let Some(s) = props.get(k) {
                    fill_key_defaults(schemas, s, child, depth + 1);
                }
            }
        }
        (Shape::Map(values), Value::Object(m)) => {
            for child in m.values_mut() {
                fill_key_defaults(schemas, values, child, depth + 1);
            }
        }
        (
            Shape::List {
                items,
                kind: ListKind::Map(keys),
            },
            Value::Array(a),
        ) => {
            for item in a.iter_mut() {
                if let Some(obj) = item.as_object_mut() {
                    for k in &keys {
                        if !obj.contains_key(k)
                            && let Some(d) = schemas.field_default(items, k)
                        {
                            obj.insert(k.clone(), d.clone());
                        }
                    }
                }
                fill_key_defaults(schemas, items, item, depth + 1);
            }
        }
        (Shape::List { items, .. }, Value::Array(a)) => {
            for item in a.iter_mut() {
                fill_key_defaults(schemas, items, item, depth + 1);
            }
        }
        _ => {}
    }
}

/// Server-side apply of `applied` by `manager` to `live` (`None`: the object
/// does not exist yet). Returns the object to write, its `managedFields` set.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
) -> Result<Value, ApiError> {
    let api_version = applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let kind = applied.get("kind").and_then(Value::as_str).unwrap_or("");
    let schemas = schema::for_api_version(&api_version);
    let schemas = schemas.as_deref();
    let top = schemas.and_then(|s| s.kind(kind));
    let mut defaulted = applied.clone();
    if let (Some(s), Some(t)) = (schemas, top) {
        fill_key_defaults(s, t, &mut defaulted, 0);
    }
    let applied = &defaulted;
    let applied_set = fields_of(schemas, applied);
    let empty = json!({});
    let live = live.unwrap_or(&empty);
    let mut list = entries(live);
    let previous = list
        .iter()
        .find(|e| e.is(manager, "Apply"))
        .map(|e| e.fields.clone())
        .unwrap_or_default();

    // Conflicts: a field set here to another value than another manager set.
    let mut conflicts: Vec<(String, String, Vec<String>)> = Vec::new();
    for (path, has_children) in applied_set.paths() {
        if has_children || value_at(applied, &path) == value_at(live, &path) {
            continue;
        }
        for e in list.iter().filter(|e| !e.is(manager, "Apply")) {
            if e.fields.contains(&path) {
                conflicts.push((e.manager.clone(), e.api_version.clone(), path.clone()));
            }
        }
    }
    if !conflicts.is_empty() {
        if !force {
            return Err(conflict_error(&conflicts));
        }
        for e in list.iter_mut().filter(|e| !e.is(manager, "Apply")) {
            for (_, _, path) in &conflicts {
                e.fields.remove(path);
            }
        }
    }

    let mut merged = merge(schemas, top, live, applied, 0);
    // What this manager applied before and no longer does, and nobody else
    // owns, goes.
    let mut dropped: Vec<Vec<String>> = previous
        .paths()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| !applied_set.contains(p))
        .filter(|p| {
            !list
                .iter()
                .any(|e| !e.is(manager, "Apply") && e.fields.contains(p))
        })
        .collect();
    // Shallowest first: an item goes whole (found by its key, which its own
    // fields being removed first would lose), and what was beneath it with it.
    dropped.sort_by_key(Vec::len);
    for p in &dropped {
        remove_at(&mut merged, p);
    }

    match list.iter_mut().find(|e| e.is(manager, "Apply")) {
        Some(e) => {
            if e.fields != applied_set || e.api_version != api_version {
                e.fields = applied_set;
                e.api_version = api_version;
                e.time = Some(meta::now_rfc3339());
            }
        }
        None => list.push(Entry {
            manager: manager.to_string(),
            operation: "Apply".into(),
            api_version,
            time: Some(meta::now_rfc3339()),
            subresource: None,
            fields: applied_set,
        }),
    }
    set_entries(&mut merged, &list);
    Ok(merged)
}

fn conflict_error(conflicts: &[(String, String, Vec<String>)]) -> ApiError {
    let n = conflicts.len();
    let lines: Vec<String> = conflicts
        .iter()
        .map(|(m, v, p)| format!("conflict with \"{m}\" using {v}: {}", path_string(p)))
        .collect();
    let message = if n == 1 {
        format!("Apply failed with 1 conflict: {}", lines[0])
    } else {
        format!("Apply failed with {n} conflicts: {}", lines.join("\n"))
    };
    let mut e = ApiError::new(409, "Conflict", message);
    for (m, v, p) in conflicts {
        e.causes.push(FieldError {
            reason: "FieldManagerConflict",
            message: format!("conflict with \"{m}\" using {v}"),
            field: path_string(p),
        });
    }
    e
}

/// Records a non-apply write (create, update, patch) by `manager`: it owns the
/// fields it changed (all of them for a create), no other manager still owns
/// those, and fields the object no longer has are nobody's.
pub fn record_update(old: Option<&Value>, new: &mut Value, manager: &str) {
    let api_version = new
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let schemas = schema::for_api_version(&api_version);
    let schemas = schemas.as_deref();
    let now_set = fields_of(schemas, new);
    let empty = json!({});
    let before = old.unwrap_or(&empty);
    let mut list = entries(before);
    let mut changed = FieldSet::default();
    for (path, has_children) in now_set.paths() {
        let differs = if has_children {
            value_at(before, &path).is_none()
        } else {
            value_at(before, &path) != value_at(new, &path)
        };
        if differs {
            changed.insert(&path);
        }
    }
    for e in list.iter_mut() {
        let owned: Vec<Vec<String>> = e.fields.paths().into_iter().map(|(p, _)| p).collect();
        for p in owned {
            if changed.contains(&p) && !e.is(manager, "Update") || !now_set.contains(&p) {
                e.fields.remove(&p);
            }
        }
    }
    if !changed.is_empty() {
        match list.iter_mut().find(|e| e.is(manager, "Update")) {
            Some(e) => {
                for (p, _) in changed.paths() {
                    e.fields.insert(&p);
                }
                e.time = Some(meta::now_rfc3339());
                e.api_version = api_version;
            }
            None => list.push(Entry {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version,
                time: Some(meta::now_rfc3339()),
                subresource: None,
                fields: changed,
            }),
        }
    }
    set_entries(new, &list);
}

/// `managedFields` a client sent (kubectl sends them to move fields from its
/// client-side apply to server-side apply), read as entries and written back, so
/// only well-formed entries are kept. `None` when there are none to keep.
pub fn from_client(sent: &Value) -> Option<Value> {
    let list: Vec<Value> = sent
        .as_array()?
        .iter()
        .filter_map(Entry::parse)
        .filter(|e| !e.manager.is_empty() && !e.fields.is_empty())
        .map(|e| e.to_json())
        .collect();
    (!list.is_empty()).then_some(Value::Array(list))
}

/// The manager a write is recorded under: `fieldManager`, else the client's
/// name from its `User-Agent` (`kubectl/v1.32.4 (linux/amd64) …` → `kubectl`),
/// as kube-apiserver names it.
pub fn manager_name(
    field_manager: Option<&str>,
    user_agent: Option<&str>,
) -> Result<Option<String>, ApiError> {
    if let Some(m) = field_manager.filter(|m| !m.is_empty()) {
        if m.len() > MAX_MANAGER_LEN || m.chars().any(|c| c.is_control()) {
            return Err(ApiError::bad_parameter(
                "fieldManager",
                m,
                &format!("must be at most {MAX_MANAGER_LEN} printable characters"),
            ));
        }
        return Ok(Some(m.to_string()));
    }
    Ok(user_agent
        .and_then(|ua| ua.split('/').next())
        .map(|n| {
            n.chars()
                .filter(|c| !c.is_control())
                .take(MAX_MANAGER_LEN)
                .collect::<String>()
        })
        .filter(|n| !n.is_empty()))
}

#[cfg(test)]
mod tests;
