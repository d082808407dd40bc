//! `/api/webhooks` and one webhook's own routes: parse, call the core, reply.

use axum::extract::State;
use axum::response::Response;
use hyper::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::extract::{Caller, Json, OptionalJson, Query, WebhookId};
use super::reply::{json, with_deprecation};
use crate::admin::inputs::{
    NewWebhook, ReplayInput, RotateKey, RotateSecret, WebhookChanges, WebhookQuery,
};
use crate::admin::ops::{
    Created, Deleted, ExportedKey, KeyRotated, Replayed, Rotated, TestResult, WebhookDetail,
    WebhookList, WebhookView,
};
use crate::admin::state::Shared;

type Reply = Result<Response, ApiError>;

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, delete))
        .routes(routes!(restore))
        .routes(routes!(rotate_secret))
        .routes(routes!(rotate_key))
        .routes(routes!(export_key))
        .routes(routes!(test))
        .routes(routes!(replay))
}

/// The webhooks of the sites the caller may read (or of one site).
#[utoipa::path(get, path = "/api/webhooks", tag = "webhooks", params(WebhookQuery),
    responses((status = 200, body = WebhookList), (status = "4XX", body = crate::admin::error::ErrorBody)),
    security(("bearer" = [])))]
async fn list(
    State(s): State<Shared>,
    Caller(who): Caller,
    Query(q): Query<WebhookQuery>,
) -> Reply {
    let deprecated = q.site_id.is_none() && q.site.is_some();
    let list = s.admin.list_webhooks(&who, &q).await.map_err(|e| {
        let mut e = ApiError::from(e);
        if deprecated && e.body.error.field.as_deref() == Some("site_id") {
            e.body.error.field = Some("site".into());
        }
        e
    })?;
    Ok(with_deprecation(json(StatusCode::OK, &list), deprecated))
}

/// A webhook with its triggers; the secret is in the answer this once.
#[utoipa::path(post, path = "/api/webhooks", tag = "webhooks", request_body = NewWebhook,
    responses((status = 201, body = Created), (status = "4XX", body = crate::admin::error::ErrorBody)),
    security(("bearer" = [])))]
async fn create(State(s): State<Shared>, Caller(who): Caller, Json(n): Json<NewWebhook>) -> Reply {
    let deprecated = n.site_id.is_none() && n.site.is_some();
    let created = s.admin.create_webhook(&who, n).await?;
    Ok(with_deprecation(
        json(StatusCode::CREATED, &created),
        deprecated,
    ))
}

/// One webhook (never its secret) with its triggers.
#[utoipa::path(get, path = "/api/webhooks/{id}", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "The webhook's id")),
    responses((status = 200, body = WebhookDetail), (status = "4XX", body = crate::admin::error::ErrorBody)),
    security(("bearer" = [])))]
async fn show(State(s): State<Shared>, Caller(who): Caller, WebhookId(id): WebhookId) -> Reply {
    Ok(json(StatusCode::OK, &s.admin.show_webhook(&who, id).await?))
}

/// Changes settings and, with `enabled`, the state, in one commit. `{}` is refused.
#[utoipa::path(method(put, patch), path = "/api/webhooks/{id}", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "The webhook's id")),
    request_body = WebhookChanges,
    responses((status = 200, body = WebhookView), (status = "4XX", body = crate::admin::error::ErrorBody)),
    security(("bearer" = [])))]
async fn update(
    State(s): State<Shared>,
    Caller(who): Caller,
    WebhookId(id): WebhookId,
    Json(c): Json<WebhookChanges>,
) -> Reply {
    Ok(json(
        StatusCode::OK,
        &s.admin.update_webhook(&who, id, c).await?,
    ))
}

/// Soft delete: restorable until purged after `retention.days`.
#[utoipa::path(delete, path = "/api/webhooks/{id}", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "The webhook's id")),
    responses((status = 200, body = Deleted), (status = "4XX", body = crate::admin::error::ErrorBody)),
    security(("bearer" = [])))]
async fn delete(State(s): State<Shared>, Caller(who): Caller, WebhookId(id): WebhookId) -> Reply {
    Ok(json(
        StatusCode::OK,
        &s.admin.delete_webhook(&who, id).await?,
    ))
}

/// Brings back a deleted webhook.
#[utoipa::path(post, path = "/api/webhooks/{id}/restore", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "The webhook's id")),
    responses((status = 200, body = WebhookView), (status = "4XX", body = crate::admin::error::ErrorBody)),
    security(("bearer" = [])))]
async fn restore(State(s): State<Shared>, Caller(who): Caller, WebhookId(id): WebhookId) -> Reply {
    Ok(json(
        StatusCode::OK,
        &s.admin.restore_webhook(&who, id).await?,
    ))
}

/// A new secret (given or generated); the old one signs beside it for the grace period.
#[utoipa::path(post, path = "/api/webhooks/{id}/rotate-secret", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "The webhook's id")),
    request_body(content = RotateSecret, description = "Optional: every field may be left out"),
    responses((status = 200, body = Rotated), (status = "4XX", body = crate::admin::error::ErrorBody)),
    security(("bearer" = [])))]
async fn rotate_secret(
    State(s): State<Shared>,
    Caller(who): Caller,
    WebhookId(id): WebhookId,
    OptionalJson(r): OptionalJson<RotateSecret>,
) -> Reply {
    Ok(json(
        StatusCode::OK,
        &s.admin.rotate_secret(&who, id, r).await?,
    ))
}

/// A new ed25519 key pair (given or generated); the old one signs beside it for the grace period.
#[utoipa::path(post, path = "/api/webhooks/{id}/rotate-key", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "The webhook's id")),
    request_body(content = RotateKey, description = "Optional: every field may be left out"),
    responses((status = 200, body = KeyRotated), (status = "4XX", body = crate::admin::error::ErrorBody)),
    security(("bearer" = [])))]
async fn rotate_key(
    State(s): State<Shared>,
    Caller(who): Caller,
    WebhookId(id): WebhookId,
    OptionalJson(r): OptionalJson<RotateKey>,
) -> Reply {
    Ok(json(
        StatusCode::OK,
        &s.admin.rotate_signing_key(&who, id, r).await?,
    ))
}

/// The webhook's ed25519 private key (whsk_, the 32-byte seed): for the site's owners and admins only.
#[utoipa::path(post, path = "/api/webhooks/{id}/export-key", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "The webhook's id")),
    responses((status = 200, body = ExportedKey), (status = "4XX", body = crate::admin::error::ErrorBody)),
    security(("bearer" = [])))]
async fn export_key(
    State(s): State<Shared>,
    Caller(who): Caller,
    WebhookId(id): WebhookId,
) -> Reply {
    Ok(json(
        StatusCode::OK,
        &s.admin.export_signing_key(&who, id).await?,
    ))
}

/// Sends a `test` event now and answers with the receiver's answer (or why it failed).
#[utoipa::path(post, path = "/api/webhooks/{id}/test", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "The webhook's id")),
    responses((status = 200, body = TestResult), (status = "4XX", body = crate::admin::error::ErrorBody)),
    security(("bearer" = [])))]
async fn test(State(s): State<Shared>, Caller(who): Caller, WebhookId(id): WebhookId) -> Reply {
    Ok(json(StatusCode::OK, &s.admin.send_test(&who, id).await?))
}

/// Sends failed deliveries since a time again, on the same delivery ids (`dry_run` counts them).
#[utoipa::path(post, path = "/api/webhooks/{id}/replay", tag = "deliveries",
    params(("id" = uuid::Uuid, Path, description = "The webhook's id")),
    request_body = ReplayInput,
    responses((status = 200, body = Replayed), (status = "4XX", body = crate::admin::error::ErrorBody)),
    security(("bearer" = [])))]
async fn replay(
    State(s): State<Shared>,
    Caller(who): Caller,
    WebhookId(id): WebhookId,
    Json(r): Json<ReplayInput>,
) -> Reply {
    Ok(json(StatusCode::OK, &s.admin.replay(&who, id, r).await?))
}
