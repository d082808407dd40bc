//! The REST API under `/api/`.

use bytes::Bytes;
use hyper::StatusCode;

use super::auth::Principal;
use super::http::{error_response, AdminState, HttpResponse};

pub async fn handle(
    state: &AdminState,
    parts: hyper::http::request::Parts,
    _body: Bytes,
) -> HttpResponse {
    let db = match state.pool.get().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "admin API: no database connection");
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the database cannot be reached; try again shortly",
            );
        }
    };
    let authorization = parts
        .headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let _who: Principal = match state.auth.authenticate(&db, authorization).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return error_response(StatusCode::UNAUTHORIZED, "unauthorized", e.message()),
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "admin API: authentication failed");
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the token could not be checked; try again shortly",
            );
        }
    };
    error_response(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}
