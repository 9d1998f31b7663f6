//! Every error the server returns goes through [`ApiError`]: OpenAI's
//! `{"error": {"message", "type", "param", "code"}}` with the matching HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// What went wrong, in OpenAI's categories.
#[derive(Debug, Clone)]
pub enum ApiError {
    /// 400: malformed body, wrong field type or value, prompt too long.
    BadRequest { message: String, param: Option<String> },
    /// 401: missing or wrong API key.
    Unauthorized,
    /// 404: unknown model.
    ModelNotFound(String),
    /// 404: unknown route.
    RouteNotFound { method: String, path: String },
    /// 405: known route, wrong method.
    MethodNotAllowed { method: String, path: String },
    /// 413: body over the limit.
    TooLarge { limit: usize },
    /// 503: queue full or shutting down.
    Overloaded(String),
    /// 500: a failure inside the engine.
    Internal(String),
}

impl ApiError {
    pub fn bad(message: impl Into<String>, param: Option<&str>) -> ApiError {
        ApiError::BadRequest {
            message: message.into(),
            param: param.map(str::to_string),
        }
    }

    /// A 400 about the field at `param`.
    pub fn bad_at(message: impl Into<String>, param: String) -> ApiError {
        ApiError::BadRequest {
            message: message.into(),
            param: Some(param),
        }
    }

    /// Status, error type, param and code: the one mapping of errors to responses.
    fn parts(&self) -> (StatusCode, &'static str, Option<String>, Option<&'static str>, String) {
        match self {
            ApiError::BadRequest { message, param } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                param.clone(),
                None,
                message.clone(),
            ),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
                "Incorrect or missing API key. Send it as 'Authorization: Bearer KEY'.".into(),
            ),
            ApiError::ModelNotFound(m) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model".into()),
                Some("model_not_found"),
                format!("The model '{m}' does not exist; GET /v1/models lists the one served."),
            ),
            ApiError::RouteNotFound { method, path } => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                None,
                Some("unknown_url"),
                format!("Unknown request URL: {method} {path}."),
            ),
            ApiError::MethodNotAllowed { method, path } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                None,
                Some("method_not_allowed"),
                format!("Method {method} is not allowed for {path}."),
            ),
            ApiError::TooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                None,
                Some("request_too_large"),
                format!("The request body is larger than the limit of {limit} bytes."),
            ),
            ApiError::Overloaded(m) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                None,
                Some("server_overloaded"),
                m.clone(),
            ),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, None, m.clone()),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The JSON body (also sent as an SSE event when a stream fails midway).
    pub fn body(&self) -> serde_json::Value {
        let (_, ty, param, code, message) = self.parts();
        json!({"error": {"message": message, "type": ty, "param": param, "code": code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(self.body())).into_response()
    }
}
