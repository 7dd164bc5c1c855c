//! `POST /v1-tugboat/activate` (a node or an admin): a node proxy holds a
//! connection to a Service with no endpoints that an autoscaler scales from
//! zero, and asks for its target to be scaled up. Body:
//! `{"namespace": "default", "service": "web"}`; answers
//! `{"scaled": N}` (0 when the target was already scaling up), 404 when no
//! autoscaler scales that Service from zero.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use tugboat_api::ApiError;

use super::join::{read_json, respond};
use super::{AppState, json_response};
use crate::auth::{Kind, User};

pub use tugboat_api::metrics::ACTIVATE_PATH;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Activate {
    namespace: String,
    service: String,
}

pub async fn activate(
    State(state): State<Arc<AppState>>,
    user: Option<Extension<User>>,
    body: Body,
) -> Response {
    respond(
        async {
            match user.as_deref().map(|u| &u.kind) {
                Some(Kind::Admin | Kind::Node(_)) => {}
                Some(_) => {
                    return Err(ApiError::forbidden(
                        "only nodes (and admins) may activate a Service scaled to zero",
                    ));
                }
                None => return Err(ApiError::new(401, "Unauthorized", "Unauthorized")),
            }
            let req: Activate = read_json(body).await?;
            for (field, value) in [("namespace", &req.namespace), ("service", &req.service)] {
                if let Some(problem) = tugboat_api::validation::dns1123_label(value) {
                    return Err(ApiError::bad_request(format!(
                        "{field}: {value:?}: {problem}"
                    )));
                }
            }
            let recorder =
                crate::events::recorder(state.registry.clone(), "horizontal-pod-autoscaler");
            let scaled = crate::controllers::hpa::activate(
                &state.registry,
                &state.activations,
                &recorder,
                &req.namespace,
                &req.service,
            )
            .await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "scaled": scaled }),
                &[],
            ))
        }
        .await,
    )
}
