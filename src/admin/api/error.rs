//! The API's one error type: every refusal, whatever raised it (an
//! operation's [`OpError`], a body that cannot be read, a missing token),
//! renders itself as `{"error": {"code", "message", "field"?, "errors"?}}`
//! (`ErrorBody`, the CLI's `--json` refusals alike) with the status that
//! says its kind.

use axum::response::{IntoResponse, Response};
use hyper::header::{HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::StatusCode;

use super::reply::json;
use crate::admin::error::{ErrorBody, OpError};
use crate::admin::inputs::InputError;

/// An answer that is not a success.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
    /// Seconds for a `Retry-After` header (429).
    pub retry_after: Option<u64>,
}

/// What an API client is told of an internal error; the cause is logged.
pub const INTERNAL_MESSAGE: &str =
    "the operation failed on the server; the daemon's log has the cause";

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody::new(code, &message.into(), None),
            retry_after: None,
        }
    }

    /// 401: no token, or one that is neither an operator token nor a current API key.
    pub fn unauthorized(message: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404 for a path no route serves.
    pub fn no_endpoint() -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint; the API is under /api/webhooks (its OpenAPI document: /api/openapi.json)",
        )
    }

    pub fn code(&self) -> &str {
        &self.body.error.code
    }
}

/// The refusal with its status (`OpError::http_status`, shared with the page).
impl From<OpError> for ApiError {
    fn from(e: OpError) -> ApiError {
        let status = e.http_status();
        let retry_after = match &e {
            OpError::Busy { retry_after, .. } => {
                Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
            _ => None,
        };
        if let OpError::Internal(cause) = &e {
            crate::admin::error::log_internal("admin API", cause);
        }
        ApiError {
            status,
            body: e.body(INTERNAL_MESSAGE),
            retry_after,
        }
    }
}

impl From<InputError> for ApiError {
    fn from(e: InputError) -> ApiError {
        match e {
            InputError::NotJson(m) => ApiError::new(StatusCode::BAD_REQUEST, "bad_json", m),
            InputError::Invalid(i) => OpError::Invalid(i).into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = json(self.status, &self.body);
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED && self.body.error.code == "unauthorized" {
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}
