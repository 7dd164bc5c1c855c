//! Reading JSON bodies the way kube-apiserver's strict decoder does: a key that
//! appears twice in one object is reported (`duplicate field "metadata.name"`)
//! instead of silently keeping the last value, and nesting is bounded by
//! [`limits::MAX_DEPTH`].
//!
//! Written by hand because serde_json's `Value` keeps the last of duplicate keys
//! without telling, and no maintained crate reports them with their paths; this is
//! a small `DeserializeSeed` over serde_json's own parser, which still does all
//! the reading (and its recursion limit still holds).

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::limits;

/// A body read as JSON, with the paths of the keys that occurred more than once.
#[derive(Debug)]
pub struct Parsed {
    pub value: Value,
    /// `metadata.name`, `spec.template.spec.containers[0].image`, …
    pub duplicates: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("{0}")]
    Syntax(String),
    #[error(transparent)]
    Limit(#[from] limits::LimitError),
}

/// Parses `bytes` as one JSON value, collecting duplicate keys and refusing
/// anything nested deeper than [`limits::MAX_DEPTH`].
pub fn parse(bytes: &[u8]) -> Result<Parsed, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut state = State {
        path: Vec::new(),
        duplicates: Vec::new(),
        depth: 0,
        too_deep: None,
    };
    let value = ValueSeed { state: &mut state }
        .deserialize(&mut de)
        .map_err(|e| match state.too_deep.take() {
            Some(path) => JsonError::Limit(limits::LimitError::TooDeep { path }),
            None => JsonError::Syntax(e.to_string()),
        })?;
    de.end().map_err(|e| JsonError::Syntax(e.to_string()))?;
    Ok(Parsed {
        value,
        duplicates: state.duplicates,
    })
}

enum Segment {
    Key(String),
    Index(usize),
}

struct State {
    path: Vec<Segment>,
    duplicates: Vec<String>,
    depth: usize,
    /// Set when the depth limit stops the parse, with the path where it did.
    too_deep: Option<String>,
}

impl State {
    fn render(&self, last: Option<&str>) -> String {
        let mut out = String::new();
        for s in &self.path {
            match s {
                Segment::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        if let Some(k) = last {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(k);
        }
        if out.is_empty() {
            out.push_str("(root)");
        }
        out
    }

    fn enter<E: de::Error>(&mut self) -> Result<(), E> {
        self.depth += 1;
        if self.depth > limits::MAX_DEPTH {
            self.too_deep = Some(self.render(None));
            return Err(E::custom("nested too deep"));
        }
        Ok(())
    }
}

struct ValueSeed<'a> {
    state: &'a mut State,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor { state: self.state })
    }
}

struct ValueVisitor<'a> {
    state: &'a mut State,
}

impl<'de> Visitor<'de> for ValueVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.state.enter()?;
        let mut out = Vec::new();
        loop {
            self.state.path.push(Segment::Index(out.len()));
            let next = seq.next_element_seed(ValueSeed {
                state: &mut *self.state,
            });
            self.state.path.pop();
            match next? {
                Some(v) => out.push(v),
                None => break,
            }
        }
        self.state.depth -= 1;
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.state.enter()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                let path = self.state.render(Some(&key));
                self.state.duplicates.push(path);
            }
            self.state.path.push(Segment::Key(key.clone()));
            let value = map.next_value_seed(ValueSeed {
                state: &mut *self.state,
            });
            self.state.path.pop();
            out.insert(key, value?);
        }
        self.state.depth -= 1;
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_plain_document_reads_like_serde_json() {
        let text = br#"{"a": [1, -2, 3.5, true, null, "x"], "b": {"c": {}}}"#;
        let parsed = parse(text).unwrap();
        assert_eq!(parsed.value, serde_json::from_slice::<Value>(text).unwrap());
        assert!(parsed.duplicates.is_empty());
    }

    #[test]
    fn duplicate_keys_are_reported_with_their_paths_and_the_last_one_kept() {
        let parsed = parse(
            br#"{"metadata": {"name": "a", "name": "b"}, "spec": {"c": [{"x": 1, "x": 2}]}}"#,
        )
        .unwrap();
        assert_eq!(parsed.duplicates, vec!["metadata.name", "spec.c[0].x"]);
        assert_eq!(parsed.value["metadata"]["name"], "b");
    }

    #[test]
    fn nesting_past_the_limit_is_refused_with_its_path() {
        let deep = format!("{}{}", "[".repeat(70), "]".repeat(70));
        let err = parse(deep.as_bytes()).unwrap_err();
        assert!(matches!(err, JsonError::Limit(_)), "{err}");
        assert!(err.to_string().contains("nested more than 64"), "{err}");
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(parse(ok.as_bytes()).is_ok());
        let obj = format!("{}1{}", r#"{"a":"#.repeat(80), "}".repeat(80));
        let err = parse(obj.as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("a.a.a"), "{err}");
    }

    #[test]
    fn syntax_errors_and_trailing_garbage_are_errors() {
        assert!(matches!(parse(b"{"), Err(JsonError::Syntax(_))));
        assert!(matches!(parse(b"{} x"), Err(JsonError::Syntax(_))));
        assert_eq!(parse(b" {} ").unwrap().value, json!({}));
    }
}
