//! What a handler takes from a request, each refusing with an [`ApiError`]:
//! the caller (authenticated from `Authorization`, before anything else is
//! read), a JSON body or a query string as an input type, and the ids in
//! the path. Axum runs the caller's extractor before the body's, so an
//! unauthenticated request is answered without its body being read.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use hyper::header::AUTHORIZATION;
use hyper::http::request::Parts;
use hyper::StatusCode;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::ApiError;
use crate::admin::access::{self, Principal};
use crate::admin::body;
use crate::admin::inputs::{from_json, from_json_or_empty, from_query};
use crate::admin::ops::{DeliveryRef, TriggerRef};
use crate::admin::state::AdminState;

/// The authenticated caller.
pub struct Caller(pub Principal);

impl FromRequestParts<Arc<AdminState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AdminState>,
    ) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match state.auth.authenticate(state.admin.pool(), header).await {
            Ok(Ok(p)) => Ok(Caller(p)),
            Ok(Err(e)) => Err(ApiError::unauthorized(e.message())),
            Err(e) => {
                tracing::warn!(
                    error = crate::logging::error_line(e.as_ref()),
                    "admin API: cannot check a token"
                );
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the token could not be checked; try again shortly",
                ))
            }
        }
    }
}

async fn body_bytes(req: Request) -> Result<bytes::Bytes, ApiError> {
    let (parts, b) = req.into_parts();
    body::read(&parts.headers, b).await.map_err(|e| {
        let status = match e {
            body::BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            body::BodyError::TooSlow => StatusCode::REQUEST_TIMEOUT,
            body::BodyError::Broken => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.code(), e.message())
    })
}

/// The body as the input `T`: a JSON object, or (`empty_ok`) nothing.
async fn parsed<T: DeserializeOwned>(req: Request, empty_ok: bool) -> Result<T, ApiError> {
    let bytes = body_bytes(req).await?;
    Ok(match empty_ok {
        true => from_json_or_empty(&bytes)?,
        false => from_json(&bytes)?,
    })
}

/// A JSON object body as the input `T`.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        parsed(req, false).await.map(Json)
    }
}

/// A JSON object body as `T`, or no body at all (every field optional).
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        parsed(req, true).await.map(OptionalJson)
    }
}

/// The query string as the input `T` (unknown parameters refused).
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Query(from_query(parts.uri.query())?))
    }
}

/// The path's parameter `name`.
async fn param<S: Send + Sync>(parts: &mut Parts, s: &S, name: &str) -> Option<String> {
    let params = RawPathParams::from_request_parts(parts, s).await.ok()?;
    params
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The webhook of the path (`{id}`); one that is not an id is not found.
pub struct WebhookId(pub Uuid);

async fn webhook_id<S: Send + Sync>(parts: &mut Parts, s: &S) -> Result<Uuid, ApiError> {
    let raw = param(parts, s, "id").await.unwrap_or_default();
    Uuid::parse_str(&raw).map_err(|_| ApiError::from(access::no_webhook(&raw)))
}

impl<S: Send + Sync> FromRequestParts<S> for WebhookId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, ApiError> {
        webhook_id(parts, s).await.map(WebhookId)
    }
}

/// A trigger of the path's webhook (`{id}/triggers/{trigger_id}`).
pub struct TriggerPath(pub TriggerRef);

impl<S: Send + Sync> FromRequestParts<S> for TriggerPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, ApiError> {
        let webhook = webhook_id(parts, s).await?;
        let raw = param(parts, s, "trigger_id").await.unwrap_or_default();
        let id = Uuid::parse_str(&raw).map_err(|_| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("webhook {webhook} has no trigger {}", access::quote(&raw)),
            )
        })?;
        Ok(TriggerPath(TriggerRef { webhook, id }))
    }
}

/// A delivery of the path's webhook (`{id}/deliveries/{delivery_id}`).
pub struct DeliveryPath(pub DeliveryRef);

impl<S: Send + Sync> FromRequestParts<S> for DeliveryPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, ApiError> {
        let webhook = webhook_id(parts, s).await?;
        let raw = param(parts, s, "delivery_id").await.unwrap_or_default();
        let id = Uuid::parse_str(&raw).map_err(|_| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "webhook {webhook} has no delivery {} (deliveries are pruned after retention.days)",
                    access::quote(&raw)
                ),
            )
        })?;
        Ok(DeliveryPath(DeliveryRef { webhook, id }))
    }
}
