//! Query parameters, read strictly: a parameter that cannot be decoded or does not
//! hold a value of its kind is a 400 that names it (`watch: Invalid value:
//! "maybe": …`), never dropped, because a dropped `labelSelector` turns a filtered
//! list into an unfiltered one and a dropped `watch` turns a watch into a list.
//! Parameters Tugboat does not know are ignored, as kube-apiserver ignores them.

use std::collections::HashMap;

use tugboat_api::ApiError;
use tugboat_api::selector::{FieldSelector, Selector};

use crate::registry::RevisionMatch;
use crate::store::Revision;

/// The decoded parameters of one request; the first of repeated ones counts, as
/// with Go's `url.Values.Get`.
#[derive(Clone, Debug, Default)]
pub struct Query {
    values: HashMap<String, String>,
}

impl Query {
    /// Decodes a raw query string (`a=b&c=%20d`); `+` is a space.
    pub fn parse(raw: Option<&str>) -> Result<Query, ApiError> {
        let mut values = HashMap::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(k).ok_or_else(|| {
                ApiError::bad_parameter(
                    "query",
                    k,
                    "a parameter name that is not percent-encoded UTF-8",
                )
            })?;
            let value = decode(v)
                .ok_or_else(|| ApiError::bad_parameter(&key, v, "not percent-encoded UTF-8"))?;
            values.entry(key).or_insert(value);
        }
        Ok(Query { values })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// A boolean as Go's `strconv.ParseBool` reads it (what kube-apiserver uses):
    /// `1 t T TRUE true True 0 f F FALSE false False`; absent or empty is false.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(false),
            Some("1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(true),
            Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(false),
            Some(other) => Err(ApiError::bad_parameter(
                name,
                other,
                "must be a boolean (true or false)",
            )),
        }
    }

    /// A non-negative whole number, if given.
    pub fn count(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
                ApiError::bad_parameter(name, v, "must be a non-negative whole number")
            }),
        }
    }

    /// `labelSelector` and `fieldSelector`, parsed; `kind` decides which fields
    /// may be selected on.
    pub fn selectors(&self, kind: &str) -> Result<(Selector, FieldSelector), ApiError> {
        let labels = match self.get("labelSelector") {
            Some(s) => Selector::parse(s)
                .map_err(|e| ApiError::bad_parameter("labelSelector", s, &e.message))?,
            None => Selector::everything(),
        };
        let fields = match self.get("fieldSelector") {
            Some(s) => {
                let f = FieldSelector::parse(s)
                    .map_err(|e| ApiError::bad_parameter("fieldSelector", s, &e.message))?;
                f.check_supported(kind)
                    .map_err(|e| ApiError::bad_parameter("fieldSelector", s, &e.message))?;
                f
            }
            None => FieldSelector::default(),
        };
        Ok((labels, fields))
    }

    /// `resourceVersion` as a revision: `None` when absent, empty or `0` (any).
    pub fn resource_version(&self) -> Result<Option<Revision>, ApiError> {
        match self.get("resourceVersion") {
            None | Some("") | Some("0") => Ok(None),
            Some(rv) => rv.parse::<Revision>().map(Some).map_err(|_| {
                ApiError::bad_parameter("resourceVersion", rv, "must be a decimal revision")
            }),
        }
    }

    /// Which state a list shows, from `resourceVersion` and
    /// `resourceVersionMatch`, with kube-apiserver's rules for combining them.
    pub fn revision_match(&self) -> Result<RevisionMatch, ApiError> {
        let rv = self.resource_version()?;
        let given = self.get("resourceVersion").is_some_and(|v| !v.is_empty());
        match (self.get("resourceVersionMatch"), rv) {
            (None | Some(""), None) => Ok(RevisionMatch::Latest),
            (None | Some("") | Some("NotOlderThan"), Some(rv)) => {
                Ok(RevisionMatch::NotOlderThan(rv))
            }
            (Some("NotOlderThan"), None) if given => Ok(RevisionMatch::Latest),
            (Some("Exact"), Some(rv)) => Ok(RevisionMatch::Exact(rv)),
            (Some(m @ ("Exact" | "NotOlderThan")), None) => Err(ApiError::bad_parameter(
                "resourceVersionMatch",
                m,
                if m == "Exact" && given {
                    "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\""
                } else {
                    "resourceVersionMatch is forbidden unless resourceVersion is provided"
                },
            )),
            (Some(other), _) => Err(ApiError::bad_parameter(
                "resourceVersionMatch",
                other,
                "supported values: \"Exact\", \"NotOlderThan\"",
            )),
        }
    }
}

fn decode(s: &str) -> Option<String> {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_decoded_and_the_first_of_repeats_counts() {
        let q = Query::parse(Some("labelSelector=app%3Dweb&watch=1&watch=0&x")).unwrap();
        assert_eq!(q.get("labelSelector"), Some("app=web"));
        assert!(q.flag("watch").unwrap());
        assert_eq!(q.get("x"), Some(""));
    }

    #[test]
    fn undecodable_parameters_are_errors_naming_them() {
        let e = Query::parse(Some("labelSelector=%ff")).unwrap_err();
        assert_eq!((e.code, e.causes[0].field.as_str()), (400, "labelSelector"));
        let e = Query::parse(Some("%ff=1")).unwrap_err();
        assert_eq!(e.causes[0].field, "query");
        let q = Query::parse(Some("watch=maybe&limit=-1&timeoutSeconds=x")).unwrap();
        assert!(q.flag("watch").unwrap_err().message.contains("watch"));
        assert!(q.count("limit").is_err());
        assert!(q.count("timeoutSeconds").is_err());
    }

    #[test]
    fn resource_version_match_follows_kubernetes_rules() {
        let m = |s| Query::parse(Some(s)).unwrap().revision_match();
        assert_eq!(m("").unwrap(), RevisionMatch::Latest);
        assert_eq!(m("resourceVersion=0").unwrap(), RevisionMatch::Latest);
        assert_eq!(
            m("resourceVersion=5").unwrap(),
            RevisionMatch::NotOlderThan(5)
        );
        assert_eq!(
            m("resourceVersion=5&resourceVersionMatch=Exact").unwrap(),
            RevisionMatch::Exact(5)
        );
        assert!(m("resourceVersionMatch=Exact").is_err());
        assert!(m("resourceVersion=5&resourceVersionMatch=Sometimes").is_err());
        assert!(m("resourceVersion=abc").is_err());
    }
}
