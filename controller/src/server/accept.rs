//! What a client asks to get back (`Accept`), read as kube-apiserver reads it:
//! plain objects, or the same objects as a `meta.k8s.io` Table (kubectl's server-side
//! printing) or as PartialObjectMetadata (metadata-only informers); and, for `/api`
//! and `/apis`, aggregated discovery.
//!
//! Media ranges are taken in the order the client lists them, the first one we can
//! answer wins (kube-apiserver's negotiation ignores `q` weights the same way).

use axum::http::{HeaderMap, header};
use tugboat_api::ApiError;

/// One media range of an `Accept` header: `type/subtype` and its parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaRange {
    pub essence: String,
    pub params: Vec<(String, String)>,
}

impl MediaRange {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn is_json(&self) -> bool {
        matches!(
            self.essence.as_str(),
            "application/json" | "application/*" | "*/*"
        )
    }
}

/// The media ranges of `Accept`, in order; none when the header is absent.
pub fn media_ranges(headers: &HeaderMap) -> Vec<MediaRange> {
    let mut out = Vec::new();
    for value in headers.get_all(header::ACCEPT) {
        let Ok(text) = value.to_str() else { continue };
        for range in text.split(',') {
            let mut parts = range.split(';');
            let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if essence.is_empty() {
                continue;
            }
            let params = parts
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
                })
                .collect();
            out.push(MediaRange { essence, params });
        }
    }
    out
}

/// The form a read answers in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// The objects themselves, as JSON.
    Json,
    /// A `meta.k8s.io` Table of the given version (`v1` or `v1beta1`).
    Table(&'static str),
    /// `PartialObjectMetadata` (a list of them for a list) of the given version.
    Metadata(&'static str),
    /// The objects themselves, as Kubernetes' protobuf.
    Protobuf,
}

fn meta_version(r: &MediaRange) -> Option<&'static str> {
    if r.param("g") != Some("meta.k8s.io") {
        return None;
    }
    match r.param("v") {
        Some("v1") => Some("v1"),
        Some("v1beta1") => Some("v1beta1"),
        _ => None,
    }
}

/// The shape a GET (get, list or watch) of a resource answers in.
pub fn read_shape(headers: &HeaderMap) -> Result<Shape, ApiError> {
    let ranges = media_ranges(headers);
    if ranges.is_empty() {
        return Ok(Shape::Json);
    }
    for r in &ranges {
        if r.essence == tugboat_api::protobuf::MEDIA_TYPE && r.param("as").is_none() {
            return Ok(Shape::Protobuf);
        }
        if !r.is_json() {
            continue;
        }
        match r.param("as") {
            None => return Ok(Shape::Json),
            Some("Table") => {
                if let Some(v) = meta_version(r) {
                    return Ok(Shape::Table(v));
                }
            }
            Some("PartialObjectMetadata" | "PartialObjectMetadataList") => {
                if let Some(v) = meta_version(r) {
                    return Ok(Shape::Metadata(v));
                }
            }
            Some(_) => {}
        }
    }
    Err(not_acceptable())
}

/// Whether the client takes aggregated discovery (`apidiscovery.k8s.io/v2`
/// `APIGroupDiscoveryList`) before the classic documents.
pub fn wants_aggregated_discovery(headers: &HeaderMap) -> bool {
    for r in media_ranges(headers) {
        if !r.is_json() {
            continue;
        }
        match r.param("as") {
            Some("APIGroupDiscoveryList")
                if r.param("g") == Some("apidiscovery.k8s.io") && r.param("v") == Some("v2") =>
            {
                return true;
            }
            None => return false,
            Some(_) => {}
        }
    }
    false
}

/// Whether a write's response is wanted as protobuf (the first media range we
/// can answer is protobuf).
pub fn prefers_protobuf(headers: &HeaderMap) -> bool {
    matches!(read_shape(headers), Ok(Shape::Protobuf))
}

pub fn not_acceptable() -> ApiError {
    ApiError::new(
        406,
        "NotAcceptable",
        "only the following media types are accepted: application/json, \
         application/vnd.kubernetes.protobuf, \
         application/json;as=Table;v=v1;g=meta.k8s.io, \
         application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        h
    }

    #[test]
    fn kubectl_get_asks_for_a_table_first() {
        let h = accept(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
        );
        assert_eq!(read_shape(&h).unwrap(), Shape::Table("v1"));
        let h = accept("application/json;as=Table;v=v1beta1;g=meta.k8s.io");
        assert_eq!(read_shape(&h).unwrap(), Shape::Table("v1beta1"));
    }

    #[test]
    fn plain_json_and_no_accept_are_objects() {
        assert_eq!(read_shape(&HeaderMap::new()).unwrap(), Shape::Json);
        assert_eq!(
            read_shape(&accept("application/json, */*")).unwrap(),
            Shape::Json
        );
    }

    #[test]
    fn metadata_only_clients_get_partial_object_metadata() {
        let h = accept(
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json",
        );
        assert_eq!(read_shape(&h).unwrap(), Shape::Metadata("v1"));
    }

    #[test]
    fn typed_clients_get_protobuf_when_they_list_it_first() {
        let h = accept("application/vnd.kubernetes.protobuf,application/json");
        assert_eq!(read_shape(&h).unwrap(), Shape::Protobuf);
        assert!(prefers_protobuf(&h));
        let h = accept("application/json,application/vnd.kubernetes.protobuf");
        assert_eq!(read_shape(&h).unwrap(), Shape::Json);
        // A protobuf Table is not served; the JSON one listed next is.
        let h = accept(
            "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1;g=meta.k8s.io",
        );
        assert_eq!(read_shape(&h).unwrap(), Shape::Table("v1"));
    }

    #[test]
    fn nothing_we_can_answer_is_406() {
        let e = read_shape(&accept("application/json;as=Table;v=v2;g=meta.k8s.io")).unwrap_err();
        assert_eq!(e.code, 406);
        assert_eq!(
            read_shape(&accept("text/html")).unwrap_err().reason,
            "NotAcceptable"
        );
    }

    #[test]
    fn aggregated_discovery_is_chosen_by_its_media_type() {
        let h = accept(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json",
        );
        assert!(wants_aggregated_discovery(&h));
        assert!(!wants_aggregated_discovery(&accept("application/json")));
        assert!(!wants_aggregated_discovery(&HeaderMap::new()));
    }
}
