//! Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`), which
//! kubectl's typed clients (`kubectl create namespace|deployment|service`) send and
//! client libraries may ask for.
//!
//! Objects are read and written through descriptors of Kubernetes' own `.proto`
//! files (`api/proto`, compiled by `build.rs`) and converted to and from the JSON
//! form the rest of Tugboat works on. The conversion is Tugboat's own: no crate
//! maps Kubernetes' protobuf to its JSON, which differs from the standard proto3
//! JSON mapping — times are RFC 3339 strings, `Quantity` and `IntOrString` are
//! scalars, some nested messages are inlined in JSON (`Probe.handler`,
//! `Volume.volumeSource`, `*.localObjectReference`…), `RawExtension` holds JSON.
//!
//! On the wire an object is the magic `k8s\0` followed by a `runtime.Unknown`
//! whose `typeMeta` names the kind and whose `raw` is the object's message. A watch
//! is a sequence of frames, each a 4-byte big-endian length and a `WatchEvent`.

use std::sync::LazyLock;

use base64::Engine as _;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    ReflectMessage as _, Value as PValue,
};
use serde_json::{Map, Value};

pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// What starts every protobuf-encoded object.
const MAGIC: &[u8] = b"k8s\0";

/// How deep `RawExtension`s holding protobuf objects may nest.
const MAX_NESTED_OBJECTS: usize = 4;

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(&include_bytes!(concat!(env!("OUT_DIR"), "/kubernetes.bin"))[..])
        .expect("the descriptor set compiled by build.rs decodes")
});

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtobufError {
    #[error("the body is not a Kubernetes protobuf object: it does not start with \"k8s\\x00\"")]
    NoMagic,
    #[error("the protobuf envelope cannot be read: {0}")]
    Envelope(String),
    #[error("the protobuf envelope holds {0:?} content; only unencoded protobuf is read")]
    Encoding(String),
    #[error("{kind} in version {api_version:?} cannot be read as protobuf by this server")]
    UnknownKind { api_version: String, kind: String },
    #[error("{kind} cannot be read from protobuf: {error}")]
    Decode { kind: String, error: String },
    #[error("{path}: {error}")]
    Encode { path: String, error: String },
}

/// The message of `kind` in `api_version`: `apps/v1` `Deployment` is
/// `api.apps.v1.Deployment`; `Status` and the options kinds are meta's.
fn descriptor(api_version: &str, kind: &str) -> Option<MessageDescriptor> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let package = match group {
        "" => "api.core".to_string(),
        "meta.k8s.io" => "apimachinery.pkg.apis.meta".to_string(),
        g => format!("api.{}", g.split('.').next().unwrap_or(g)),
    };
    POOL.get_message_by_name(&format!("{package}.{version}.{kind}"))
        .or_else(|| POOL.get_message_by_name(&format!("apimachinery.pkg.apis.meta.v1.{kind}")))
}

fn envelope_descriptor() -> MessageDescriptor {
    POOL.get_message_by_name("apimachinery.pkg.runtime.Unknown")
        .expect("runtime.Unknown is in the descriptor set")
}

/// Reads one object: its JSON form, with `apiVersion` and `kind` from the envelope.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    decode_nested(body, 0)
}

fn decode_nested(body: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    let raw = body.strip_prefix(MAGIC).ok_or(ProtobufError::NoMagic)?;
    let unknown = DynamicMessage::decode(envelope_descriptor(), raw)
        .map_err(|e| ProtobufError::Envelope(e.to_string()))?;
    let text = |m: &DynamicMessage, f: &str| {
        m.get_field_by_name(f)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let encoding = text(&unknown, "contentEncoding");
    if !encoding.is_empty() {
        return Err(ProtobufError::Encoding(encoding));
    }
    let type_meta = unknown
        .get_field_by_name("typeMeta")
        .and_then(|v| v.as_message().cloned())
        .ok_or_else(|| ProtobufError::Envelope("no typeMeta".into()))?;
    let api_version = text(&type_meta, "apiVersion");
    let kind = text(&type_meta, "kind");
    let desc = descriptor(&api_version, &kind).ok_or_else(|| ProtobufError::UnknownKind {
        api_version: api_version.clone(),
        kind: kind.clone(),
    })?;
    let bytes = unknown
        .get_field_by_name("raw")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let msg = DynamicMessage::decode(desc, bytes).map_err(|e| ProtobufError::Decode {
        kind: kind.clone(),
        error: e.to_string(),
    })?;
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), Value::String(api_version));
    obj.insert("kind".into(), Value::String(kind.clone()));
    let Value::Object(fields) =
        message_to_json(&msg, depth).map_err(|error| ProtobufError::Decode { kind, error })?
    else {
        unreachable!("a message converts to an object")
    };
    obj.extend(fields);
    Ok(Value::Object(obj))
}

/// Nested messages that Kubernetes' JSON inlines into their parent (`json:",inline"`
/// in Go): a field of one of these types under this name.
fn inlined(field: &FieldDescriptor) -> bool {
    let Kind::Message(m) = field.kind() else {
        return false;
    };
    matches!(
        (field.name(), m.name()),
        ("localObjectReference", "LocalObjectReference")
            | ("handler", "ProbeHandler")
            | ("volumeSource", "VolumeSource")
            | ("persistentVolumeSource", "PersistentVolumeSource")
            | ("ephemeralContainerCommon", "EphemeralContainerCommon")
    )
}

fn message_to_json(msg: &DynamicMessage, depth: usize) -> Result<Value, String> {
    let desc = msg.descriptor();
    match desc.full_name() {
        "apimachinery.pkg.apis.meta.v1.Time" => return Ok(time_to_json(msg, false)),
        "apimachinery.pkg.apis.meta.v1.MicroTime" => return Ok(time_to_json(msg, true)),
        "apimachinery.pkg.api.resource.Quantity" => {
            return Ok(Value::String(
                msg.get_field_by_name("string")
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
            ));
        }
        "apimachinery.pkg.util.intstr.IntOrString" => {
            let is_string = msg
                .get_field_by_name("type")
                .and_then(|v| v.as_i64())
                .unwrap_or(0)
                == 1;
            return Ok(if is_string {
                Value::String(
                    msg.get_field_by_name("strVal")
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                )
            } else {
                Value::from(
                    msg.get_field_by_name("intVal")
                        .and_then(|v| v.as_i32())
                        .unwrap_or(0),
                )
            });
        }
        "apimachinery.pkg.runtime.RawExtension" | "apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            let bytes = msg
                .fields()
                .find_map(|(_, v)| v.as_bytes().cloned())
                .unwrap_or_default();
            return raw_to_json(&bytes, depth);
        }
        "apimachinery.pkg.apis.meta.v1.Duration" => {
            let nanos = msg
                .get_field_by_name("duration")
                .and_then(|v| v.as_i64())
                .unwrap_or(0);
            return Ok(Value::String(go_duration(nanos)));
        }
        _ => {}
    }
    let mut out = Map::new();
    for (field, value) in msg.fields() {
        if inlined(&field) {
            if let Some(m) = value.as_message()
                && let Value::Object(inner) = message_to_json(m, depth)?
            {
                out.extend(inner);
            }
            continue;
        }
        if let Some(v) = value_to_json(&field, value, depth)? {
            out.insert(field.name().to_string(), v);
        }
    }
    Ok(Value::Object(out))
}

/// A field's JSON value; `None` for what Go's JSON would leave out (an empty
/// string, a zero time).
fn value_to_json(
    field: &FieldDescriptor,
    value: &PValue,
    depth: usize,
) -> Result<Option<Value>, String> {
    if let PValue::Map(map) = value {
        let value_field = match field.kind() {
            Kind::Message(entry) => entry.map_entry_value_field(),
            _ => return Err(format!("{}: a map without an entry type", field.name())),
        };
        let mut out = Map::new();
        for (k, v) in map {
            let key = match k {
                MapKey::String(s) => s.clone(),
                other => format!("{other:?}"),
            };
            let v = scalar_to_json(&value_field, v, depth, true)?.unwrap_or(Value::Null);
            out.insert(key, v);
        }
        return Ok(Some(Value::Object(out)));
    }
    if let PValue::List(items) = value {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            out.push(scalar_to_json(field, item, depth, true)?.unwrap_or(Value::Null));
        }
        return Ok(Some(Value::Array(out)));
    }
    scalar_to_json(field, value, depth, false)
}

fn scalar_to_json(
    field: &FieldDescriptor,
    value: &PValue,
    depth: usize,
    in_collection: bool,
) -> Result<Option<Value>, String> {
    Ok(match value {
        PValue::Bool(b) => Some(Value::Bool(*b)),
        PValue::I32(n) => Some(Value::from(*n)),
        PValue::I64(n) => Some(Value::from(*n)),
        PValue::U32(n) => Some(Value::from(*n)),
        PValue::U64(n) => Some(Value::from(*n)),
        PValue::F32(n) => serde_json::Number::from_f64(f64::from(*n)).map(Value::Number),
        PValue::F64(n) => serde_json::Number::from_f64(*n).map(Value::Number),
        // Go writes every string field; its JSON leaves the empty ones out.
        PValue::String(s) if s.is_empty() && !in_collection => None,
        PValue::String(s) => Some(Value::String(s.clone())),
        PValue::Bytes(b) => Some(Value::String(
            base64::engine::general_purpose::STANDARD.encode(b),
        )),
        PValue::EnumNumber(n) => Some(Value::from(*n)),
        PValue::Message(m) => {
            let v = message_to_json(m, depth)?;
            // A zero time is written as an empty message: JSON leaves it out.
            if v.is_null() && !in_collection {
                None
            } else {
                Some(v)
            }
        }
        PValue::List(_) | PValue::Map(_) => {
            return Err(format!("{}: a nested list or map", field.name()));
        }
    })
}

fn raw_to_json(bytes: &[u8], depth: usize) -> Result<Value, String> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    if bytes.starts_with(MAGIC) {
        if depth >= MAX_NESTED_OBJECTS {
            return Err(format!(
                "objects nest deeper than {MAX_NESTED_OBJECTS} levels"
            ));
        }
        return decode_nested(bytes, depth + 1).map_err(|e| e.to_string());
    }
    crate::json::parse(bytes)
        .map(|p| p.value)
        .map_err(|e| format!("embedded JSON: {e}"))
}

fn time_to_json(msg: &DynamicMessage, micro: bool) -> Value {
    let seconds = msg.get_field_by_name("seconds").and_then(|v| v.as_i64());
    let nanos = msg
        .get_field_by_name("nanos")
        .and_then(|v| v.as_i32())
        .unwrap_or(0);
    let Some(seconds) = seconds.filter(|_| msg.has_field_by_name("seconds")) else {
        return Value::Null;
    };
    match jiff::Timestamp::new(seconds, if micro { nanos / 1000 * 1000 } else { 0 }) {
        Ok(ts) if micro => Value::String(ts.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()),
        Ok(ts) => Value::String(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        Err(_) => Value::Null,
    }
}

/// Go's `time.Duration.String()`: `1h2m3s`, `1.5s`, `0s`.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", n as f64 / 1e6);
    }
    let (h, rem) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
    let (m, rem) = (rem / 60_000_000_000, rem % 60_000_000_000);
    let secs = rem as f64 / 1e9;
    let mut out = sign.to_string();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{secs}s"));
    out
}

/// Writes one object (its `apiVersion` and `kind` say which message) in the
/// envelope.
pub fn encode(obj: &Value) -> Result<Vec<u8>, ProtobufError> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let desc = descriptor(api_version, kind).ok_or_else(|| ProtobufError::UnknownKind {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
    })?;
    let msg = json_to_message(&desc, obj, kind)?;
    let envelope = envelope_descriptor();
    let mut unknown = DynamicMessage::new(envelope.clone());
    let mut type_meta = DynamicMessage::new(
        POOL.get_message_by_name("apimachinery.pkg.runtime.TypeMeta")
            .expect("runtime.TypeMeta is in the descriptor set"),
    );
    type_meta.set_field_by_name("apiVersion", PValue::String(api_version.into()));
    type_meta.set_field_by_name("kind", PValue::String(kind.into()));
    unknown.set_field_by_name("typeMeta", PValue::Message(type_meta));
    unknown.set_field_by_name("raw", PValue::Bytes(msg.encode_to_vec().into()));
    let mut out = MAGIC.to_vec();
    out.extend(unknown.encode_to_vec());
    Ok(out)
}

/// One watch event as a frame of a protobuf watch stream.
pub fn encode_watch_event(event_type: &str, obj: &Value) -> Result<Vec<u8>, ProtobufError> {
    let object = encode(obj)?;
    let desc = POOL
        .get_message_by_name("apimachinery.pkg.apis.meta.v1.WatchEvent")
        .expect("meta.v1.WatchEvent is in the descriptor set");
    let mut raw = DynamicMessage::new(
        POOL.get_message_by_name("apimachinery.pkg.runtime.RawExtension")
            .expect("runtime.RawExtension is in the descriptor set"),
    );
    raw.set_field_by_name("raw", PValue::Bytes(object.into()));
    let mut event = DynamicMessage::new(desc);
    event.set_field_by_name("type", PValue::String(event_type.into()));
    event.set_field_by_name("object", PValue::Message(raw));
    let body = event.encode_to_vec();
    let len = u32::try_from(body.len()).map_err(|_| ProtobufError::Encode {
        path: "watch event".into(),
        error: "larger than 4 GiB".into(),
    })?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend(body);
    Ok(out)
}

fn encode_error(path: &str, error: impl Into<String>) -> ProtobufError {
    ProtobufError::Encode {
        path: path.to_string(),
        error: error.into(),
    }
}

fn json_to_message(
    desc: &MessageDescriptor,
    v: &Value,
    path: &str,
) -> Result<DynamicMessage, ProtobufError> {
    let mut msg = DynamicMessage::new(desc.clone());
    let set = |msg: &mut DynamicMessage, name: &str, value: PValue| {
        msg.set_field_by_name(name, value);
    };
    match desc.full_name() {
        "apimachinery.pkg.apis.meta.v1.Time" | "apimachinery.pkg.apis.meta.v1.MicroTime" => {
            let text = v
                .as_str()
                .ok_or_else(|| encode_error(path, "a time must be a string"))?;
            let ts: jiff::Timestamp = text
                .parse()
                .map_err(|e| encode_error(path, format!("{text:?} is not a time: {e}")))?;
            set(&mut msg, "seconds", PValue::I64(ts.as_second()));
            if ts.subsec_nanosecond() != 0 {
                set(&mut msg, "nanos", PValue::I32(ts.subsec_nanosecond()));
            }
            return Ok(msg);
        }
        "apimachinery.pkg.api.resource.Quantity" => {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(encode_error(path, "a quantity must be a string")),
            };
            set(&mut msg, "string", PValue::String(text));
            return Ok(msg);
        }
        "apimachinery.pkg.util.intstr.IntOrString" => {
            match v {
                Value::String(s) => {
                    set(&mut msg, "type", PValue::I64(1));
                    set(&mut msg, "strVal", PValue::String(s.clone()));
                }
                Value::Number(n) => {
                    let n = n
                        .as_i64()
                        .and_then(|n| i32::try_from(n).ok())
                        .ok_or_else(|| encode_error(path, "not a 32-bit integer"))?;
                    set(&mut msg, "type", PValue::I64(0));
                    set(&mut msg, "intVal", PValue::I32(n));
                }
                _ => return Err(encode_error(path, "must be an integer or a string")),
            }
            return Ok(msg);
        }
        "apimachinery.pkg.runtime.RawExtension" | "apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            let field = desc
                .fields()
                .next()
                .ok_or_else(|| encode_error(path, "no field"))?;
            let bytes = serde_json::to_vec(v).map_err(|e| encode_error(path, e.to_string()))?;
            msg.set_field(&field, PValue::Bytes(bytes.into()));
            return Ok(msg);
        }
        "apimachinery.pkg.apis.meta.v1.Duration" => {
            return Err(encode_error(path, "durations are not written as protobuf"));
        }
        _ => {}
    }
    let obj = v
        .as_object()
        .ok_or_else(|| encode_error(path, "expected an object"))?;
    for field in desc.fields() {
        let child = format!("{path}.{}", field.name());
        if inlined(&field) {
            let Kind::Message(inner) = field.kind() else {
                continue;
            };
            let sub: Map<String, Value> = obj
                .iter()
                .filter(|(k, _)| inner.get_field_by_name(k).is_some())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if !sub.is_empty() {
                let m = json_to_message(&inner, &Value::Object(sub), &child)?;
                msg.set_field(&field, PValue::Message(m));
            }
            continue;
        }
        let Some(value) = obj.get(field.name()).filter(|v| !v.is_null()) else {
            continue;
        };
        let pv = json_to_value(&field, value, &child)?;
        msg.set_field(&field, pv);
    }
    Ok(msg)
}

fn json_to_value(field: &FieldDescriptor, v: &Value, path: &str) -> Result<PValue, ProtobufError> {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return Err(encode_error(path, "a map without an entry type"));
        };
        let value_field = entry.map_entry_value_field();
        let obj = v
            .as_object()
            .ok_or_else(|| encode_error(path, "expected an object"))?;
        let mut map = std::collections::HashMap::new();
        for (k, item) in obj {
            map.insert(
                MapKey::String(k.clone()),
                json_to_scalar(&value_field.kind(), item, &format!("{path}.{k}"))?,
            );
        }
        return Ok(PValue::Map(map));
    }
    if field.is_list() {
        let items = v
            .as_array()
            .ok_or_else(|| encode_error(path, "expected a list"))?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            out.push(json_to_scalar(
                &field.kind(),
                item,
                &format!("{path}[{i}]"),
            )?);
        }
        return Ok(PValue::List(out));
    }
    json_to_scalar(&field.kind(), v, path)
}

fn json_to_scalar(kind: &Kind, v: &Value, path: &str) -> Result<PValue, ProtobufError> {
    let int = || {
        v.as_i64()
            .ok_or_else(|| encode_error(path, "expected an integer"))
    };
    Ok(match kind {
        Kind::Bool => PValue::Bool(
            v.as_bool()
                .ok_or_else(|| encode_error(path, "expected a boolean"))?,
        ),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => PValue::I32(
            i32::try_from(int()?).map_err(|_| encode_error(path, "out of 32-bit range"))?,
        ),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => PValue::I64(int()?),
        Kind::Uint32 | Kind::Fixed32 => PValue::U32(
            u32::try_from(int()?).map_err(|_| encode_error(path, "out of 32-bit range"))?,
        ),
        Kind::Uint64 | Kind::Fixed64 => PValue::U64(
            v.as_u64()
                .ok_or_else(|| encode_error(path, "expected a non-negative integer"))?,
        ),
        Kind::Float => PValue::F32(
            v.as_f64()
                .ok_or_else(|| encode_error(path, "expected a number"))? as f32,
        ),
        Kind::Double => PValue::F64(
            v.as_f64()
                .ok_or_else(|| encode_error(path, "expected a number"))?,
        ),
        Kind::String => PValue::String(
            v.as_str()
                .ok_or_else(|| encode_error(path, "expected a string"))?
                .to_string(),
        ),
        Kind::Bytes => {
            let text = v
                .as_str()
                .ok_or_else(|| encode_error(path, "expected base64 text"))?;
            PValue::Bytes(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| encode_error(path, format!("not base64: {e}")))?
                    .into(),
            )
        }
        Kind::Enum(_) => PValue::EnumNumber(
            i32::try_from(int()?).map_err(|_| encode_error(path, "out of 32-bit range"))?,
        ),
        Kind::Message(m) => PValue::Message(json_to_message(m, v, path)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(v: Value) -> Value {
        let bytes = encode(&v).unwrap();
        assert!(bytes.starts_with(MAGIC));
        decode(&bytes).unwrap()
    }

    #[test]
    fn a_namespace_round_trips() {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "prod", "labels": {"team": "a", "empty": ""},
                         "creationTimestamp": "2026-01-02T03:04:05Z"}});
        assert_eq!(round_trip(ns.clone()), ns);
    }

    #[test]
    fn a_deployment_keeps_quantities_int_or_strings_and_inlined_fields() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "tugboat/sample:latest",
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 2},
                        "envFrom": [{"configMapRef": {"name": "cfg"}}]}],
                        "volumes": [{"name": "data", "emptyDir": {}}]}}}});
        assert_eq!(round_trip(d.clone()), d);
    }

    #[test]
    fn micro_times_keep_microseconds_and_lists_keep_empty_strings() {
        let l = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "n1", "finalizers": ["", "x"]},
            "spec": {"holderIdentity": "n1", "renewTime": "2026-01-02T03:04:05.123456Z"}});
        assert_eq!(round_trip(l.clone()), l);
    }

    #[test]
    fn go_writes_empty_strings_which_json_leaves_out() {
        let desc = descriptor("v1", "Namespace").unwrap();
        let mut meta = DynamicMessage::new(
            POOL.get_message_by_name("apimachinery.pkg.apis.meta.v1.ObjectMeta")
                .unwrap(),
        );
        meta.set_field_by_name("name", PValue::String("x".into()));
        meta.set_field_by_name("namespace", PValue::String(String::new()));
        meta.set_field_by_name(
            "creationTimestamp",
            PValue::Message(DynamicMessage::new(
                POOL.get_message_by_name("apimachinery.pkg.apis.meta.v1.Time")
                    .unwrap(),
            )),
        );
        let mut ns = DynamicMessage::new(desc);
        ns.set_field_by_name("metadata", PValue::Message(meta));
        let v = message_to_json(&ns, 0).unwrap();
        assert_eq!(v, json!({"metadata": {"name": "x"}}));
    }

    #[test]
    fn bad_envelopes_are_errors_that_say_why() {
        assert_eq!(decode(b"{}").unwrap_err(), ProtobufError::NoMagic);
        assert!(matches!(
            decode(b"k8s\0\xff\xff").unwrap_err(),
            ProtobufError::Envelope(_)
        ));
        let mut widget = encode(&json!({"apiVersion": "v1", "kind": "Namespace"})).unwrap();
        // Rename the kind in place: same length, unknown to us.
        let at = widget.windows(9).position(|w| w == b"Namespace").unwrap();
        widget[at..at + 9].copy_from_slice(b"Widgetzzz");
        assert!(matches!(
            decode(&widget).unwrap_err(),
            ProtobufError::UnknownKind { .. }
        ));
    }

    /// Bytes written by hand to the wire format (also the fuzzer's seeds), not by
    /// this module: what a Go client sends reads as the object it meant.
    #[test]
    fn hand_encoded_objects_read_as_their_json() {
        let ns = decode(include_bytes!("../../fuzz/seeds/protobuf/namespace")).unwrap();
        assert_eq!(
            ns,
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "prod", "labels": {"team": "a"}}})
        );
        let d = decode(include_bytes!("../../fuzz/seeds/protobuf/deployment")).unwrap();
        assert_eq!(d["spec"]["replicas"], 3);
        assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
        assert_eq!(d["metadata"]["name"], "web");
    }

    #[test]
    fn watch_events_are_length_prefixed_frames() {
        let frame =
            encode_watch_event("ADDED", &json!({"apiVersion": "v1", "kind": "Namespace"})).unwrap();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
    }

    #[test]
    fn secret_bytes_are_base64_in_json() {
        let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                       "data": {"k": "aGVsbG8="}});
        assert_eq!(round_trip(s.clone()), s);
    }
}
