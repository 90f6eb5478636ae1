//! The API's error answers (`{"code","message"}` with a status) and JSON body helpers, shared
//! by every route.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

/// An error answer: `{"code","message"}` with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({"code": self.code, "message": self.message})),
        )
            .into_response()
    }
}

pub(crate) type Answer = Result<Response, ApiError>;

pub(crate) fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::invalid(format!("request body: {e}"))
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed",
                format!("request body: {e}"),
            )
        }
    })
}

pub(crate) fn json_answer<T: serde::Serialize>(status: StatusCode, value: T) -> Answer {
    Ok((status, axum::Json(value)).into_response())
}
