//! `/openapi/v3` and `/openapi/v2`: Kubernetes' own OpenAPI documents for the
//! group-versions Tugboat serves (see `controller/openapi/README.md` for where they
//! come from). kubectl reads them to validate `apply` server-side (it looks for the
//! `fieldValidation` parameter on each PATCH operation), to build strategic merge
//! patches and for `kubectl explain`.
//!
//! The documents are kept gzipped in the binary and sent as they are to clients
//! that accept gzip (kubectl does), decompressed for the others.

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::LazyLock;

use axum::body::Body;
use axum::extract::{Path, Query as AxumQuery};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tugboat_api::ApiError;
use tugboat_api::resource;

use super::{ApiResponse, json_response};

/// The documents, by the path kube-apiserver lists them under in `/openapi/v3`.
const DOCUMENTS: &[(&str, &[u8])] = &[
    ("api/v1", include_bytes!("../../openapi/v3/api__v1.json.gz")),
    (
        "apis/apps/v1",
        include_bytes!("../../openapi/v3/apis__apps__v1.json.gz"),
    ),
    (
        "apis/autoscaling/v2",
        include_bytes!("../../openapi/v3/apis__autoscaling__v2.json.gz"),
    ),
    (
        "apis/coordination.k8s.io/v1",
        include_bytes!("../../openapi/v3/apis__coordination.k8s.io__v1.json.gz"),
    ),
    (
        "apis/discovery.k8s.io/v1",
        include_bytes!("../../openapi/v3/apis__discovery.k8s.io__v1.json.gz"),
    ),
    (
        "apis/batch/v1",
        include_bytes!("../../openapi/v3/apis__batch__v1.json.gz"),
    ),
    (
        "apis/rbac.authorization.k8s.io/v1",
        include_bytes!("../../openapi/v3/apis__rbac.authorization.k8s.io__v1.json.gz"),
    ),
    (
        "apis/apiregistration.k8s.io/v1",
        include_bytes!("../../openapi/v3/apis__apiregistration.k8s.io__v1.json.gz"),
    ),
];

struct Document {
    gz: &'static [u8],
    /// SHA-512 of the document, upper-case hex, as kube-apiserver's `?hash=`.
    hash: String,
}

/// The documents of the group-versions we serve, by path.
static SERVED: LazyLock<HashMap<&'static str, Document>> = LazyLock::new(|| {
    DOCUMENTS
        .iter()
        .filter(|(path, _)| resource::ALL.iter().any(|r| gv_path(r) == *path))
        .map(|(path, gz)| {
            let digest = ring::digest::digest(&ring::digest::SHA512, gz);
            let hash = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
            (*path, Document { gz, hash })
        })
        .collect()
});

fn gv_path(r: &resource::ResourceInfo) -> String {
    if r.group.is_empty() {
        format!("api/{}", r.version)
    } else {
        format!("apis/{}/{}", r.group, r.version)
    }
}

fn decompress(gz: &[u8]) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::internal(format!("an embedded OpenAPI document is corrupt: {e}")))?;
    Ok(out)
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| e.split(';').next().unwrap_or("").trim() == "gzip")
}

/// The v3 document of a served group-version (`apis/apps/v1`), parsed.
pub(crate) fn document_json(path: &str) -> Option<Value> {
    let doc = SERVED.get(path)?;
    let bytes = decompress(doc.gz).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `GET /openapi/v3`: where each group-version's document is.
pub async fn index() -> Response {
    let mut paths: Vec<(&&str, &Document)> = SERVED.iter().collect();
    paths.sort_by_key(|(p, _)| **p);
    let paths: Map<String, Value> = paths
        .into_iter()
        .map(|(path, doc)| {
            (
                path.to_string(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", doc.hash)}),
            )
        })
        .collect();
    json_response(StatusCode::OK, &json!({"paths": paths}), &[])
}

/// `GET /openapi/v3/{path}[?hash=H]`.
pub async fn document(
    Path(path): Path<String>,
    AxumQuery(query): AxumQuery<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(doc) = SERVED.get(path.as_str()) else {
        return ApiResponse(ApiError::new(
            404,
            "NotFound",
            format!("the server has no OpenAPI document for {path:?}"),
        ))
        .into_response();
    };
    let mut resp = match query.get("hash") {
        // An old hash: where the current document is, as kube-apiserver answers.
        Some(h) if *h != doc.hash => {
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
            if let Ok(v) = HeaderValue::from_str(&format!("/openapi/v3/{path}?hash={}", doc.hash)) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            return resp;
        }
        hash => {
            let gzip = accepts_gzip(&headers);
            let body = if gzip {
                Body::from(doc.gz)
            } else {
                match decompress(doc.gz) {
                    Ok(bytes) => Body::from(bytes),
                    Err(e) => return ApiResponse(e).into_response(),
                }
            };
            let mut resp = Response::new(body);
            let cache = if hash.is_some() {
                "public, immutable"
            } else {
                "no-cache, private"
            };
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
            if gzip {
                resp.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            resp
        }
    };
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", doc.hash)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    resp
}

/// `GET /openapi/v2`: one Swagger 2.0 document, derived from the v3 documents
/// (kubectl reads v3; older clients and tools still read this one).
pub async fn v2(headers: HeaderMap) -> Response {
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|a| {
            a.split(',').any(|r| {
                matches!(
                    r.split(';').next().unwrap_or("").trim(),
                    "application/json" | "*/*" | "application/*" | ""
                )
            })
        });
    if !wants_json {
        return ApiResponse(ApiError::new(
            406,
            "NotAcceptable",
            "the OpenAPI v2 document is served as application/json only; read /openapi/v3",
        ))
        .into_response();
    }
    match swagger() {
        Ok(doc) => json_response(StatusCode::OK, &doc, &[]),
        Err(e) => ApiResponse(e).into_response(),
    }
}

fn swagger() -> Result<Value, ApiError> {
    let mut definitions = Map::new();
    let mut paths = Map::new();
    let mut served: Vec<&&str> = SERVED.keys().collect();
    served.sort();
    for path in served {
        let doc: Value = serde_json::from_slice(&decompress(SERVED[*path].gz)?)
            .map_err(|e| ApiError::internal(format!("OpenAPI document {path}: {e}")))?;
        let mut doc = rewrite_refs(doc);
        if let Some(Value::Object(schemas)) =
            doc.pointer_mut("/components/schemas").map(Value::take)
        {
            definitions.extend(schemas);
        }
        if let Some(Value::Object(p)) = doc.get_mut("paths").map(Value::take) {
            for (k, item) in p {
                paths.insert(k, path_item_v2(item));
            }
        }
    }
    Ok(json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "definitions": definitions,
        "securityDefinitions": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header"}},
        "security": [{"BearerToken": []}],
    }))
}

/// `#/components/schemas/X` → `#/definitions/X`, everywhere in `v`.
fn rewrite_refs(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("$ref", Value::String(s)) => {
                            Value::String(s.replace("#/components/schemas/", "#/definitions/"))
                        }
                        (_, v) => rewrite_refs(v),
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(rewrite_refs).collect()),
        other => other,
    }
}

/// A v3 parameter (`schema: {type}`) as a v2 one (`type` on the parameter).
fn parameter_v2(p: Value) -> Value {
    let Value::Object(mut p) = p else { return p };
    if let Some(Value::Object(schema)) = p.remove("schema") {
        for (k, v) in schema {
            p.entry(k).or_insert(v);
        }
    }
    Value::Object(p)
}

fn path_item_v2(item: Value) -> Value {
    let Value::Object(item) = item else {
        return item;
    };
    let mut out = Map::new();
    for (k, v) in item {
        match k.as_str() {
            "parameters" => {
                let list = v.as_array().cloned().unwrap_or_default();
                out.insert(k, list.into_iter().map(parameter_v2).collect());
            }
            "get" | "put" | "post" | "patch" | "delete" | "head" | "options" => {
                out.insert(k, operation_v2(v));
            }
            _ => {
                out.insert(k, v);
            }
        }
    }
    Value::Object(out)
}

fn operation_v2(op: Value) -> Value {
    let Value::Object(op) = op else { return op };
    let mut out = Map::new();
    let mut parameters: Vec<Value> = Vec::new();
    let mut produces: Vec<String> = Vec::new();
    for (k, v) in op {
        match k.as_str() {
            "parameters" => {
                parameters.extend(
                    v.as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(parameter_v2),
                );
            }
            "requestBody" => {
                let content = v.get("content").and_then(Value::as_object);
                let consumes: Vec<&String> =
                    content.map(|c| c.keys().collect()).unwrap_or_default();
                let schema = content
                    .and_then(|c| c.values().next())
                    .and_then(|m| m.get("schema"))
                    .cloned()
                    .unwrap_or_else(|| json!({}));
                out.insert("consumes".into(), json!(consumes));
                parameters.push(json!({
                    "name": "body", "in": "body",
                    "required": v.get("required").cloned().unwrap_or(Value::Bool(true)),
                    "schema": schema,
                }));
            }
            "responses" => {
                let mut responses = Map::new();
                for (code, r) in v.as_object().cloned().unwrap_or_default() {
                    let mut resp = json!({
                        "description": r.get("description").cloned().unwrap_or_else(|| json!("")),
                    });
                    if let Some(content) = r.get("content").and_then(Value::as_object) {
                        for mt in content.keys() {
                            if !produces.contains(mt) {
                                produces.push(mt.clone());
                            }
                        }
                        if let Some(schema) = content.values().next().and_then(|m| m.get("schema"))
                        {
                            resp["schema"] = schema.clone();
                        }
                    }
                    responses.insert(code, resp);
                }
                out.insert(k, Value::Object(responses));
            }
            _ => {
                out.insert(k, v);
            }
        }
    }
    if !parameters.is_empty() {
        out.insert("parameters".into(), Value::Array(parameters));
    }
    if !produces.is_empty() {
        out.insert("produces".into(), json!(produces));
    }
    out.insert("schemes".into(), json!(["https"]));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(path: &str) -> Value {
        serde_json::from_slice(&decompress(SERVED[path].gz).unwrap()).unwrap()
    }

    /// Every kind we serve has its schema, tagged with its group-version-kind (what
    /// `kubectl explain` looks for), and a PATCH operation with `fieldValidation`
    /// (what `kubectl apply --validate=strict` looks for).
    #[test]
    fn every_served_kind_has_a_schema_and_a_validated_patch() {
        for r in resource::ALL {
            let doc = load(&gv_path(r));
            let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            assert!(
                schemas
                    .values()
                    .any(|s| s["x-kubernetes-group-version-kind"]
                        .as_array()
                        .is_some_and(|a| a.contains(&gvk))),
                "no schema for {}",
                r.kind
            );
            let patched = doc["paths"].as_object().unwrap().values().any(|p| {
                p["patch"]["x-kubernetes-group-version-kind"] == gvk
                    && p["patch"]["parameters"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .chain(p["parameters"].as_array().into_iter().flatten())
                        .any(|q| q["name"] == "fieldValidation")
            });
            assert!(patched, "no PATCH with fieldValidation for {}", r.kind);
        }
    }

    #[test]
    fn the_v2_document_has_definitions_with_v2_references() {
        let doc = swagger().unwrap();
        let d = &doc["definitions"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            d["properties"]["spec"]["allOf"][0]["$ref"],
            "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
        );
        let op = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert!(
            op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["in"] == "body")
        );
        assert!(!doc.to_string().contains("#/components/"));
    }
}
