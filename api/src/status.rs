//! Errors as the Kubernetes API reports them: a `meta/v1` `Status` object with a
//! reason, an HTTP code and, for invalid objects, one cause per field.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};

/// One problem with one field, in Kubernetes' words:
/// `spec.replicas: Invalid value: -1: must be greater than or equal to 0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, …
    pub reason: &'static str,
    /// Dotted path such as `spec.template.spec.containers[0].image`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn invalid(field: impl Into<String>, value: impl std::fmt::Display, detail: &str) -> Self {
        FieldError {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {value}: {detail}"),
        }
    }

    pub fn required(field: impl Into<String>) -> Self {
        FieldError {
            reason: "FieldValueRequired",
            field: field.into(),
            message: "Required value".to_string(),
        }
    }

    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let list = supported
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ");
        FieldError {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!("Unsupported value: \"{value}\": supported values: {list}"),
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        FieldError {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {detail}"),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// An API failure: what the server answers and what the client gets back.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: u16,
    /// Kubernetes' `StatusReason`: `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`,
    /// `BadRequest`, `Gone`/`Expired`, `MethodNotAllowed`, `Forbidden`, `InternalError`…
    pub reason: String,
    pub message: String,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub group: Option<String>,
    pub causes: Vec<FieldError>,
    /// `details.retryAfterSeconds`: when the client may try again.
    pub retry_after_seconds: Option<i32>,
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason: reason.to_string(),
            message: message.into(),
            kind: None,
            name: None,
            group: None,
            causes: Vec::new(),
            retry_after_seconds: None,
        }
    }

    /// `deployments.apps "web" not found`
    pub fn not_found(resource: &str, name: &str) -> Self {
        ApiError::new(404, "NotFound", format!("{resource} \"{name}\" not found"))
            .with_details(resource, name)
    }

    pub fn already_exists(resource: &str, name: &str) -> Self {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{resource} \"{name}\" already exists"),
        )
        .with_details(resource, name)
    }

    pub fn conflict(resource: &str, name: &str, detail: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {resource} \"{name}\": {detail}"),
        )
        .with_details(resource, name)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(500, "InternalError", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        ApiError::new(405, "MethodNotAllowed", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(403, "Forbidden", message)
    }

    /// 422 Invalid, in Kubernetes' words:
    /// `Deployment.apps "web" is invalid: spec.replicas: Invalid value: -1: …`
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<FieldError>) -> Self {
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let list = causes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let list = if causes.len() > 1 {
            format!("[{list}]")
        } else {
            list
        };
        ApiError {
            code: 422,
            reason: "Invalid".to_string(),
            message: format!("{qualified} \"{name}\" is invalid: {list}"),
            kind: Some(kind.to_string()),
            name: Some(name.to_string()),
            group: Some(group.to_string()),
            causes,
            retry_after_seconds: None,
        }
    }

    /// 400 for a query parameter that cannot be read, with the parameter as the
    /// cause's field: `labelSelector: Invalid value: "a=b=c": …`.
    pub fn bad_parameter(param: &str, value: &str, detail: &str) -> Self {
        let cause = FieldError::invalid(param, format!("{value:?}"), detail);
        let mut e = ApiError::bad_request(format!("invalid query parameter {}", cause));
        e.causes.push(cause);
        e
    }

    /// 413, as kube-apiserver answers a body over its limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        ApiError::new(413, "RequestEntityTooLarge", message)
    }

    /// 504 with a `ResourceVersionTooLarge` cause: a list or watch asked for a
    /// revision the store has not reached (kube-apiserver's words).
    pub fn resource_version_too_large(requested: u64, current: u64) -> Self {
        let mut e = ApiError::new(
            504,
            "Timeout",
            format!("Timeout: Too large resource version: {requested}, current: {current}"),
        );
        e.causes.push(FieldError {
            reason: "ResourceVersionTooLarge",
            field: String::new(),
            message: "Too large resource version".to_string(),
        });
        e.retry_after_seconds = Some(1);
        e
    }

    fn with_details(mut self, resource: &str, name: &str) -> Self {
        let (kind, group) = match resource.split_once('.') {
            Some((k, g)) => (k.to_string(), Some(g.to_string())),
            None => (resource.to_string(), None),
        };
        self.kind = Some(kind);
        self.group = group;
        self.name = Some(name.to_string());
        self
    }

    /// The `meta/v1` `Status` object for this error.
    pub fn to_status(&self) -> Status {
        let details = if self.kind.is_some()
            || self.name.is_some()
            || !self.causes.is_empty()
            || self.retry_after_seconds.is_some()
        {
            Some(StatusDetails {
                kind: self.kind.clone(),
                name: self.name.clone(),
                group: self.group.clone().filter(|g| !g.is_empty()),
                causes: (!self.causes.is_empty()).then(|| {
                    self.causes
                        .iter()
                        .map(|c| StatusCause {
                            field: (!c.field.is_empty()).then(|| c.field.clone()),
                            message: Some(c.message.clone()),
                            reason: Some(c.reason.to_string()),
                        })
                        .collect()
                }),
                retry_after_seconds: self.retry_after_seconds,
                uid: None,
            })
        } else {
            None
        };
        Status {
            code: Some(i32::from(self.code)),
            details,
            message: Some(self.message.clone()),
            metadata: Default::default(),
            reason: Some(self.reason.clone()),
            status: Some("Failure".to_string()),
        }
    }

    /// Reads a `Status` a server sent back.
    pub fn from_status(status: &Status, http_code: u16) -> Self {
        let details = status.details.as_ref();
        ApiError {
            code: status
                .code
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(http_code),
            reason: status.reason.clone().unwrap_or_default(),
            message: status.message.clone().unwrap_or_default(),
            kind: details.and_then(|d| d.kind.clone()),
            name: details.and_then(|d| d.name.clone()),
            group: details.and_then(|d| d.group.clone()),
            causes: details
                .and_then(|d| d.causes.as_ref())
                .map(|causes| {
                    causes
                        .iter()
                        .map(|c| FieldError {
                            reason: static_reason(c.reason.as_deref().unwrap_or("")),
                            field: c.field.clone().unwrap_or_default(),
                            message: c.message.clone().unwrap_or_default(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            retry_after_seconds: details.and_then(|d| d.retry_after_seconds),
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code == 404
    }

    pub fn is_conflict(&self) -> bool {
        self.code == 409 && self.reason == "Conflict"
    }
}

fn static_reason(reason: &str) -> &'static str {
    match reason {
        "FieldValueRequired" => "FieldValueRequired",
        "FieldValueNotSupported" => "FieldValueNotSupported",
        "FieldValueForbidden" => "FieldValueForbidden",
        "FieldValueDuplicate" => "FieldValueDuplicate",
        "FieldValueTooLong" => "FieldValueTooLong",
        "FieldValueNotFound" => "FieldValueNotFound",
        "ResourceVersionTooLarge" => "ResourceVersionTooLarge",
        _ => "FieldValueInvalid",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_status_names_every_field_like_kubernetes() {
        let err = ApiError::invalid(
            "Deployment",
            "apps",
            "web",
            vec![FieldError::invalid(
                "spec.replicas",
                -1,
                "must be greater than or equal to 0",
            )],
        );
        assert_eq!(
            err.message,
            "Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
        let status = err.to_status();
        assert_eq!(status.code, Some(422));
        assert_eq!(status.status.as_deref(), Some("Failure"));
        let causes = status.details.unwrap().causes.unwrap();
        assert_eq!(causes[0].field.as_deref(), Some("spec.replicas"));
        assert_eq!(ApiError::from_status(&err.to_status(), 422), err);
    }
}
