//! Label and field selectors, in Kubernetes' syntax: `app=web,tier!=db`,
//! `env in (prod,staging)`, `!canary`; `spec.nodeName=node-1,status.phase!=Failed`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector {selector:?}: {message}")]
pub struct SelectorError {
    pub selector: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    /// `labels` borrows, so matching allocates nothing: controllers and lists
    /// match every pod of a namespace this way.
    fn matches<'a>(&self, labels: &dyn Fn(&str) -> Option<&'a str>) -> bool {
        match self {
            Requirement::Equals(k, v) => labels(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => labels(k) != Some(v.as_str()),
            Requirement::In(k, vs) => labels(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => labels(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => labels(k).is_some(),
            Requirement::DoesNotExist(k) => labels(k).is_none(),
        }
    }
}

/// A parsed label selector. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
    /// A `LabelSelector` that can never match (an unknown operator, say).
    nothing: bool,
}

impl Selector {
    pub fn everything() -> Self {
        Selector::default()
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty() && !self.nothing
    }

    /// Parses the query-string form (`app=web,env in (a,b),!canary`).
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let err = |message: &str| SelectorError {
            selector: text.to_string(),
            message: message.to_string(),
        };
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            if let Some(key) = part.strip_prefix('!') {
                requirements.push(Requirement::DoesNotExist(valid_key(key.trim(), &err)?));
                continue;
            }
            if let Some((k, v)) = part.split_once("!=") {
                let key = valid_key(k.trim(), &err)?;
                let value = valid_value(&key, v.trim(), &err)?;
                requirements.push(Requirement::NotEquals(key, value));
                continue;
            }
            if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                let key = valid_key(k.trim(), &err)?;
                let value = valid_value(&key, v.trim(), &err)?;
                requirements.push(Requirement::Equals(key, value));
                continue;
            }
            let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
            if words.len() == 2 {
                let key = valid_key(words[0], &err)?;
                let rest = words[1].trim();
                let (op, list) = if let Some(l) = rest.strip_prefix("notin") {
                    ("notin", l)
                } else if let Some(l) = rest.strip_prefix("in") {
                    ("in", l)
                } else {
                    return Err(err(&format!("expected `in` or `notin` after {key:?}")));
                };
                let list = list.trim();
                let inner = list
                    .strip_prefix('(')
                    .and_then(|l| l.strip_suffix(')'))
                    .ok_or_else(|| err("expected a parenthesised list of values, e.g. (a,b)"))?;
                let values = inner
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(|v| valid_value(&key, v, &err))
                    .collect::<Result<Vec<_>, _>>()?;
                requirements.push(if op == "in" {
                    Requirement::In(key, values)
                } else {
                    Requirement::NotIn(key, values)
                });
                continue;
            }
            requirements.push(Requirement::Exists(valid_key(part, &err)?));
        }
        Ok(Selector {
            requirements,
            nothing: false,
        })
    }

    /// From a `LabelSelector` (`matchLabels` + `matchExpressions`).
    pub fn from_label_selector(sel: &LabelSelector) -> Selector {
        let mut requirements = Vec::new();
        let mut nothing = false;
        for (k, v) in sel.match_labels.iter().flatten() {
            requirements.push(Requirement::Equals(k.clone(), v.clone()));
        }
        for e in sel.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            requirements.push(match e.operator.as_str() {
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                _ => {
                    nothing = true;
                    continue;
                }
            });
        }
        Selector {
            requirements,
            nothing,
        }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.nothing
            && self
                .requirements
                .iter()
                .all(|r| r.matches(&|k| labels.get(k).map(String::as_str)))
    }

    /// Matches an untyped object's `metadata.labels`.
    pub fn matches_object(&self, obj: &Value) -> bool {
        let labels: Option<&Map<String, Value>> = crate::meta::labels(obj);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        !self.nothing && self.requirements.iter().all(|r| r.matches(&get))
    }
}

/// A label key must be a qualified name (`app`, `example.com/tier`), as in
/// Kubernetes, which refuses selectors on keys no label can have.
fn valid_key(key: &str, err: &dyn Fn(&str) -> SelectorError) -> Result<String, SelectorError> {
    if let Some(why) = crate::validation::qualified_name(key) {
        return Err(err(&format!("{key:?} is not a valid label key: {why}")));
    }
    Ok(key.to_string())
}

/// A value must be a label value (so `a=b=c` and non-ASCII values are refused).
fn valid_value(
    key: &str,
    value: &str,
    err: &dyn Fn(&str) -> SelectorError,
) -> Result<String, SelectorError> {
    if let Some(why) = crate::validation::label_value_problem(value, true) {
        return Err(err(&format!(
            "{value:?} is not a valid value for label key {key:?}: {why}"
        )));
    }
    Ok(value.to_string())
}

/// Reads a field selector value with Kubernetes' escapes (`\\`, `\,`, `\=`);
/// an unescaped `=` is an error, as there (`metadata.name=a=b`).
fn unescape_field_value(v: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                Some(other) => {
                    return Err(format!("invalid escape sequence \\{other} in {v:?}"));
                }
                None => return Err(format!("{v:?} ends in an unfinished escape")),
            },
            '=' => return Err(format!("invalid field selector value {v:?}: unescaped '='")),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Splits a field selector on the commas not escaped with a backslash.
fn split_unescaped_commas(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A parsed field selector: `path=value` / `path!=value` terms joined by commas, where
/// a path is any dotted path into the object (`metadata.name`, `spec.nodeName`,
/// `status.phase`, `involvedObject.name`). A missing field reads as the empty string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    pub fn parse(text: &str) -> Result<FieldSelector, SelectorError> {
        let mut terms = Vec::new();
        for part in split_unescaped_commas(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (path, equal, value) = if let Some((p, v)) = part.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (p, true, v)
            } else {
                return Err(SelectorError {
                    selector: text.to_string(),
                    message: format!("{part:?}: expected FIELD=VALUE or FIELD!=VALUE"),
                });
            };
            let path = path.trim();
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(SelectorError {
                    selector: text.to_string(),
                    message: format!("{path:?} is not a field path such as metadata.name"),
                });
            }
            let value = unescape_field_value(value.trim()).map_err(|message| SelectorError {
                selector: text.to_string(),
                message,
            })?;
            terms.push((path.to_string(), equal, value));
        }
        Ok(FieldSelector { terms })
    }

    /// Checks that every field is one Kubernetes can select `kind` by (its
    /// `metadata.name` and `metadata.namespace`, plus a few per kind), as
    /// kube-apiserver does: `field label not supported: spec.foo`.
    pub fn check_supported(&self, kind: &str) -> Result<(), SelectorError> {
        let per_kind: &[&str] = match kind {
            "Pod" => &[
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.podIPs",
                "status.nominatedNodeName",
            ],
            "Event" => &[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ],
            "Node" => &["spec.unschedulable"],
            "Namespace" => &["status.phase"],
            "ReplicaSet" => &["status.replicas"],
            _ => &[],
        };
        for (path, _, _) in &self.terms {
            let supported = matches!(path.as_str(), "metadata.name" | "metadata.namespace")
                || per_kind.contains(&path.as_str());
            if !supported {
                return Err(SelectorError {
                    selector: path.clone(),
                    message: format!("field label not supported: {path}"),
                });
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value a term requires for `path` with `=`, if any (used to narrow a
    /// watch to one namespace or one node).
    pub fn required(&self, path: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|(p, eq, _)| *eq && p == path)
            .map(|(_, _, v)| v.as_str())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|(path, equal, want)| {
            let mut cur = Some(obj);
            // An event's `source` selects by its component, as in Kubernetes.
            let path = if path == "source" {
                "source.component"
            } else {
                path.as_str()
            };
            for part in path.split('.') {
                cur = cur.and_then(|c| c.get(part));
            }
            let have = match cur {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (have == *want) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equality_and_inequality_terms_all_have_to_hold() {
        let s = Selector::parse("app=web,tier!=db").unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "front")])));
        assert!(s.matches(&labels(&[("app", "web")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("app", "api")])));
        assert_eq!(
            Selector::parse("app==web").unwrap(),
            Selector::parse("app=web").unwrap()
        );
    }

    #[test]
    fn set_based_terms_and_existence_work() {
        let s = Selector::parse("env in (prod, staging),track notin (canary),app,!legacy").unwrap();
        assert!(s.matches(&labels(&[("env", "prod"), ("app", "x")])));
        assert!(!s.matches(&labels(&[("env", "dev"), ("app", "x")])));
        assert!(!s.matches(&labels(&[
            ("env", "prod"),
            ("app", "x"),
            ("track", "canary")
        ])));
        assert!(!s.matches(&labels(&[("env", "prod")])));
        assert!(!s.matches(&labels(&[("env", "prod"), ("app", "x"), ("legacy", "1")])));
    }

    #[test]
    fn the_empty_selector_matches_everything() {
        assert!(Selector::parse("").unwrap().matches(&labels(&[])));
        assert!(Selector::parse("").unwrap().is_empty());
    }

    #[test]
    fn malformed_selectors_are_errors_that_quote_the_input() {
        let err = Selector::parse("env in prod").unwrap_err();
        assert!(err.to_string().contains("env in prod"), "{err}");
        assert!(Selector::parse("a b c").is_err());
        assert!(FieldSelector::parse("metadata.name").is_err());
        assert!(FieldSelector::parse("spec..x=1").is_err());
    }

    #[test]
    fn keys_and_values_must_be_what_labels_can_hold() {
        for bad in [
            "a=b=c",
            "ключ=1",
            "app=веб",
            "app in (a,b=c)",
            "-x",
            "a/b/c=1",
            "!=x",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
        assert!(Selector::parse("example.com/tier=front,app=").is_ok());
    }

    #[test]
    fn field_selector_values_take_escapes_and_refuse_a_bare_equals_sign() {
        assert!(FieldSelector::parse("metadata.name=a=b").is_err());
        assert!(FieldSelector::parse("metadata.name=a\\q").is_err());
        let s = FieldSelector::parse("metadata.name=a\\=b\\,c,spec.nodeName=n").unwrap();
        assert_eq!(s.required("metadata.name"), Some("a=b,c"));
        assert_eq!(s.required("spec.nodeName"), Some("n"));
    }

    #[test]
    fn only_the_fields_kubernetes_selects_by_are_supported() {
        let s = FieldSelector::parse("spec.nodeName=n,metadata.name=x").unwrap();
        assert!(s.check_supported("Pod").is_ok());
        let err = s.check_supported("Deployment").unwrap_err();
        assert!(
            err.to_string()
                .contains("field label not supported: spec.nodeName")
        );
        let e = FieldSelector::parse("source=kubelet").unwrap();
        assert!(e.check_supported("Event").is_ok());
        assert!(e.matches(&json!({"source": {"component": "kubelet"}})));
    }

    #[test]
    fn label_selector_objects_match_like_their_query_form() {
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]
        }))
        .unwrap();
        let s = Selector::from_label_selector(&sel);
        assert!(s.matches(&labels(&[("app", "web"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        let bad: LabelSelector = serde_json::from_value(json!({
            "matchExpressions": [{"key": "env", "operator": "Near"}]
        }))
        .unwrap();
        assert!(!Selector::from_label_selector(&bad).matches(&labels(&[])));
    }

    #[test]
    fn field_selectors_read_dotted_paths_and_missing_fields_are_empty() {
        let pod = json!({"metadata": {"name": "a", "namespace": "default"}, "spec": {"nodeName": "node-1"}, "status": {"phase": "Running"}});
        assert!(
            FieldSelector::parse("spec.nodeName=node-1")
                .unwrap()
                .matches(&pod)
        );
        assert!(
            FieldSelector::parse("status.phase!=Failed,metadata.name=a")
                .unwrap()
                .matches(&pod)
        );
        assert!(
            !FieldSelector::parse("metadata.namespace=kube-system")
                .unwrap()
                .matches(&pod)
        );
        let unbound = json!({"metadata": {"name": "b"}, "spec": {}});
        assert!(
            FieldSelector::parse("spec.nodeName=")
                .unwrap()
                .matches(&unbound)
        );
        assert_eq!(
            FieldSelector::parse("spec.nodeName=n2")
                .unwrap()
                .required("spec.nodeName"),
            Some("n2")
        );
    }

    #[test]
    fn label_matching_on_untyped_objects_reads_metadata_labels() {
        let obj = json!({"metadata": {"labels": {"app": "web"}}});
        assert!(Selector::parse("app=web").unwrap().matches_object(&obj));
        assert!(!Selector::parse("app=api").unwrap().matches_object(&obj));
        assert!(Selector::parse("!app").unwrap().matches_object(&json!({})));
    }
}
