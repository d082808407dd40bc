//! A webhook's delivery log and retries: parse, call the core, reply.

use axum::extract::State;
use axum::response::Response;
use hyper::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::extract::{Caller, DeliveryPath, OptionalJson, Query, WebhookId};
use super::reply::json;
use crate::admin::inputs::{DeliveryQuery, RetryInput};
use crate::admin::ops::{DeliveryDetail, DeliveryPage, DeliveryStats, DeliveryView};
use crate::admin::state::Shared;

type Reply = Result<Response, ApiError>;

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(retry))
        .routes(routes!(stats))
}

/// The webhook's deliveries that ended in each of the last 24 hours, by outcome.
#[utoipa::path(get, path = "/api/webhooks/{id}/stats", tag = "deliveries",
    params(("id" = uuid::Uuid, Path, description = "The webhook's id")),
    responses((status = 200, body = DeliveryStats), (status = "4XX", body = crate::admin::error::ErrorBody)),
    security(("bearer" = [])))]
async fn stats(State(s): State<Shared>, Caller(who): Caller, WebhookId(id): WebhookId) -> Reply {
    Ok(json(
        StatusCode::OK,
        &s.admin.delivery_stats(&who, id).await?,
    ))
}

/// A page of the webhook's deliveries, the newest first; `next_cursor` fetches the next.
#[utoipa::path(get, path = "/api/webhooks/{id}/deliveries", tag = "deliveries",
    params(("id" = uuid::Uuid, Path, description = "The webhook's id"), DeliveryQuery),
    responses((status = 200, body = DeliveryPage), (status = "4XX", body = crate::admin::error::ErrorBody)),
    security(("bearer" = [])))]
async fn list(
    State(s): State<Shared>,
    Caller(who): Caller,
    WebhookId(id): WebhookId,
    Query(q): Query<DeliveryQuery>,
) -> Reply {
    Ok(json(
        StatusCode::OK,
        &s.admin.list_deliveries(&who, Some(id), &q).await?,
    ))
}

/// One delivery with its payload and every attempt.
#[utoipa::path(get, path = "/api/webhooks/{id}/deliveries/{delivery_id}", tag = "deliveries",
    params(("id" = uuid::Uuid, Path, description = "The webhook's id"),
           ("delivery_id" = uuid::Uuid, Path, description = "The delivery's id")),
    responses((status = 200, body = DeliveryDetail), (status = "4XX", body = crate::admin::error::ErrorBody)),
    security(("bearer" = [])))]
async fn show(
    State(s): State<Shared>,
    Caller(who): Caller,
    DeliveryPath(d): DeliveryPath,
) -> Reply {
    Ok(json(StatusCode::OK, &s.admin.show_delivery(&who, d).await?))
}

/// Sends one delivery again now, on the same id; a success only with `force`
/// (in the body or the query string).
#[utoipa::path(post, path = "/api/webhooks/{id}/deliveries/{delivery_id}/retry", tag = "deliveries",
    params(("id" = uuid::Uuid, Path, description = "The webhook's id"),
           ("delivery_id" = uuid::Uuid, Path, description = "The delivery's id"), RetryInput),
    request_body(content = RetryInput, description = "Optional"),
    responses((status = 200, body = DeliveryView), (status = "4XX", body = crate::admin::error::ErrorBody)),
    security(("bearer" = [])))]
async fn retry(
    State(s): State<Shared>,
    Caller(who): Caller,
    DeliveryPath(d): DeliveryPath,
    Query(q): Query<RetryInput>,
    OptionalJson(b): OptionalJson<RetryInput>,
) -> Reply {
    let input = RetryInput {
        force: q.force || b.force,
    };
    Ok(json(
        StatusCode::OK,
        &s.admin.retry_delivery(&who, d, input).await?,
    ))
}
