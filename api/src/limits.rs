//! Every bound the API holds input to, in one place, with Kubernetes' numbers where
//! Kubernetes has one. The server checks bodies and objects against them before
//! anything is stored, and the store checks again before it writes, so nothing it
//! holds can be too large or too deep to read back.

use serde_json::Value;

/// The largest request body the API server reads (kube-apiserver: 3 MiB).
pub const MAX_REQUEST_BYTES: usize = 3 * 1024 * 1024;

/// The largest object the store keeps, encoded as JSON (etcd's default request
/// limit, which bounds every Kubernetes object: 1.5 MiB).
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

/// The total size of an object's annotations, keys and values (Kubernetes:
/// 256 KiB).
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// How deeply objects and arrays may nest in a request body or a stored object.
/// Well below serde_json's own recursion limit of 128, so anything the server
/// accepts can be read back by every decoder, including the store's own on start
/// and clients that wrap it in a list or a watch event. No Kubernetes kind that
/// Tugboat serves comes near it (a Deployment with affinity rules is about 14).
pub const MAX_DEPTH: usize = 64;

/// The most operations one JSON patch may carry (kube-apiserver: 10,000).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// How much a JSON patch's `copy` operations may add in all, encoded. Tighter
/// than kube-apiserver's (the whole object size): copying is the one operation
/// whose cost a small body does not bound, and 1.5 MiB of copied small objects
/// takes tens of milliseconds to build; no patch a client means needs more.
pub const MAX_JSON_PATCH_COPY_BYTES: usize = 256 * 1024;

/// The longest a client may take to send its request headers (kube-apiserver:
/// 32 s; shorter here, as Tugboat's clients are on the same network).
pub const HEADER_READ_TIMEOUT_SECS: u64 = 10;

/// How long a whole request body may take to arrive once the headers are in.
pub const BODY_READ_TIMEOUT_SECS: u64 = 60;

/// How long a keep-alive connection with no request in flight is kept open
/// (kube-apiserver: 90 s).
pub const IDLE_TIMEOUT_SECS: u64 = 90;

/// How many connections one client address may hold open at once; more are
/// closed as they arrive. Generous, because every agent of a one-machine cluster
/// and every test client shares 127.0.0.1.
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 512;

/// How many connections the server holds open in all.
pub const MAX_CONNECTIONS: usize = 4096;

/// The largest `limit` a list accepts; larger ones are served as this many.
pub const MAX_LIST_LIMIT: usize = 10_000;

/// How long a list or watch at a resourceVersion the store has not reached yet
/// waits for it before answering "Too large resource version" (kube-apiserver's
/// watch cache waits 3 s).
pub const FUTURE_REVISION_WAIT_SECS: u64 = 3;

/// The response header with which a node's agent names its node, so that the
/// controller relays only what the agent itself answered.
pub const AGENT_HEADER: &str = "x-tugboat-agent";

/// How long the controller waits to connect to an agent.
pub const AGENT_CONNECT_TIMEOUT_SECS: u64 = 5;

/// Why a value is outside the bounds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("{path}: nested more than {max} levels deep", max = MAX_DEPTH)]
    TooDeep { path: String },
    #[error("the object is {size} bytes encoded, more than the limit of {max} bytes", max = MAX_OBJECT_BYTES)]
    TooLarge { size: usize },
}

impl LimitError {
    /// The field the error is about (`spec.x.y`), or the root.
    pub fn field(&self) -> &str {
        match self {
            LimitError::TooDeep { path } => path,
            LimitError::TooLarge { .. } => "",
        }
    }
}

/// Checks how deeply `value` nests, without recursion (so a value too deep for
/// the stack is measured, not crashed on). The error names the path at which the
/// limit is crossed (`metadata.managedFields[0].fieldsV1.f:a…`), shortened to its
/// first segments.
pub fn check_depth(value: &Value) -> Result<(), LimitError> {
    check_depth_within(value, MAX_DEPTH)
}

/// Like [`check_depth`] against `max` levels (for a value that will sit `MAX_DEPTH
/// - max` levels down in an object).
pub fn check_depth_within(value: &Value, max: usize) -> Result<(), LimitError> {
    // The cheap walk first; the path is only worked out for the error.
    if depth(value, max) <= max {
        return Ok(());
    }
    Err(LimitError::TooDeep {
        path: deepest(value, max).unwrap_or_else(|| "(root)".to_string()),
    })
}

/// The depth of `value`: 0 for a scalar, 1 for `{}` or `[]`, and so on; at most
/// `cap + 1` (it stops looking once past `cap`).
pub fn depth(value: &Value, cap: usize) -> usize {
    let mut max = 0;
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((v, d)) = stack.pop() {
        let d = d + 1;
        match v {
            Value::Object(m) => {
                max = max.max(d);
                stack.extend(
                    m.values()
                        .filter(|c| matches!(c, Value::Object(_) | Value::Array(_)))
                        .map(|c| (c, d)),
                );
            }
            Value::Array(a) => {
                max = max.max(d);
                stack.extend(
                    a.iter()
                        .filter(|c| matches!(c, Value::Object(_) | Value::Array(_)))
                        .map(|c| (c, d)),
                );
            }
            _ => continue,
        }
        if max > cap {
            return max;
        }
    }
    max
}

/// The path to the first container found deeper than `max`, if any.
fn deepest(value: &Value, max: usize) -> Option<String> {
    // Depth-first with an explicit stack of (value, depth, path segment index);
    // the path is rebuilt only for the error.
    let mut stack: Vec<(&Value, usize, Vec<String>)> = vec![(value, 0, Vec::new())];
    while let Some((v, d, path)) = stack.pop() {
        let is_container = matches!(v, Value::Object(_) | Value::Array(_));
        if !is_container {
            continue;
        }
        let d = d + 1;
        if d > max {
            return Some(render_path(&path));
        }
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    if matches!(c, Value::Object(_) | Value::Array(_)) {
                        let mut p = path.clone();
                        if p.len() < 12 {
                            p.push(k.clone());
                        }
                        stack.push((c, d, p));
                    }
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    if matches!(c, Value::Object(_) | Value::Array(_)) {
                        let mut p = path.clone();
                        if p.len() < 12 {
                            p.push(format!("[{i}]"));
                        }
                        stack.push((c, d, p));
                    }
                }
            }
            _ => {}
        }
    }
    None
}

fn render_path(segments: &[String]) -> String {
    if segments.is_empty() {
        return "(root)".to_string();
    }
    let mut out = String::new();
    for s in segments {
        if s.starts_with('[') {
            out.push_str(s);
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(s);
        }
    }
    if segments.len() >= 12 {
        out.push('…');
    }
    out
}

/// The length of `value` encoded as JSON, counting no further than `cap` bytes
/// (so measuring a huge value costs no more than measuring `cap` bytes of it).
/// Exact up to `cap`; anything larger reports a number above `cap`.
pub fn encoded_len(value: &Value, cap: usize) -> usize {
    let mut total: usize = 0;
    let mut stack: Vec<&Value> = vec![value];
    while let Some(v) = stack.pop() {
        total = total.saturating_add(match v {
            Value::Null => 4,
            Value::Bool(true) => 4,
            Value::Bool(false) => 5,
            Value::Number(n) => n.to_string().len(),
            Value::String(s) => string_len(s),
            Value::Array(a) => {
                stack.extend(a.iter());
                // brackets and commas
                2 + a.len().saturating_sub(1)
            }
            Value::Object(m) => {
                let keys: usize = m.keys().map(|k| string_len(k) + 1).sum();
                stack.extend(m.values());
                2 + m.len().saturating_sub(1) + keys
            }
        });
        if total > cap {
            return total;
        }
    }
    total
}

/// The encoded length of a JSON string, with serde_json's escaping.
fn string_len(s: &str) -> usize {
    2 + s
        .chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{08}' | '\u{0c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        })
        .sum::<usize>()
}

/// Checks an object before it is stored: depth, then encoded size.
pub fn check_object(value: &Value) -> Result<(), LimitError> {
    check_depth(value)?;
    let size = encoded_len(value, MAX_OBJECT_BYTES);
    if size > MAX_OBJECT_BYTES {
        return Err(LimitError::TooLarge { size });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(depth: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..depth {
            v = json!({ "a": v });
        }
        v
    }

    #[test]
    fn depth_counts_containers_and_stops_at_the_cap() {
        assert_eq!(depth(&json!(1), 10), 0);
        assert_eq!(depth(&json!({}), 10), 1);
        assert_eq!(depth(&json!({"a": [1, {"b": []}]}), 10), 4);
        assert_eq!(depth(&nested(1000), 10), 11);
    }

    #[test]
    fn a_value_deeper_than_the_limit_is_named_by_its_path() {
        assert!(check_depth(&nested(MAX_DEPTH)).is_ok());
        let err = check_depth(&nested(MAX_DEPTH + 1)).unwrap_err();
        assert!(err.to_string().starts_with("a.a.a."), "{err}");
        assert!(err.to_string().ends_with("nested more than 64 levels deep"));
        let mut obj = json!({"spec": {"list": [{}]}});
        obj["spec"]["list"][0] = nested(200);
        let err = check_depth(&obj).unwrap_err();
        assert!(err.field().starts_with("spec.list[0].a"), "{err}");
    }

    #[test]
    fn a_value_far_too_deep_for_the_stack_is_measured_without_recursion() {
        // Built and dropped iteratively: serde_json's own drop would recurse.
        let mut v = Value::Null;
        for _ in 0..100_000 {
            v = Value::Array(vec![v]);
        }
        assert!(check_depth(&v).is_err());
        assert_eq!(depth(&v, 5), 6);
        let mut cur = v;
        while let Value::Array(mut a) = cur {
            cur = a.pop().unwrap_or(Value::Null);
        }
    }

    #[test]
    fn the_encoded_length_is_exact_and_bounded() {
        for v in [
            json!(null),
            json!({"a": [1, true, false, "x\"y\n", {"é": "\u{1}"}], "b": -1.5e300}),
            json!([]),
            json!({}),
            json!("plain"),
        ] {
            assert_eq!(
                encoded_len(&v, usize::MAX),
                serde_json::to_vec(&v).unwrap().len(),
                "{v}"
            );
        }
        let big = json!({"a": "x".repeat(10_000)});
        assert!(encoded_len(&big, 100) > 100);
    }

    #[test]
    fn objects_over_the_size_limit_are_refused() {
        assert!(check_object(&json!({"a": "x".repeat(1000)})).is_ok());
        let err = check_object(&json!({"a": "x".repeat(MAX_OBJECT_BYTES)})).unwrap_err();
        assert!(matches!(err, LimitError::TooLarge { .. }), "{err}");
    }
}
