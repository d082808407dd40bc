//! A webhook's triggers: parse, call the core, reply.

use axum::extract::State;
use axum::response::Response;
use hyper::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::extract::{Caller, Json, TriggerPath, WebhookId};
use super::reply::json;
use super::sites::SitePath;
use crate::admin::inputs::{NewTrigger, PreviewInput};
use crate::admin::ops::{TriggerList, TriggerPreview, TriggerView};
use crate::admin::state::Shared;

type Reply = Result<Response, ApiError>;

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list, add))
        .routes(routes!(remove))
        .routes(routes!(preview))
}

/// How often a trigger would have fired on the site over its recent
/// history (nothing is created): a spike or drop replayed through the
/// evaluator's rule at its cadence, with the instants it fires and the
/// threshold it would derive; a goal or custom-event trigger's completions
/// per day of the site's timezone. `since`: up to 90 days (default 30d).
#[utoipa::path(post, path = "/api/sites/{site}/triggers/preview", tag = "triggers",
    params(("site" = String, Path, description = "The site's domain or numeric id")),
    request_body = PreviewInput,
    responses((status = 200, body = TriggerPreview), (status = "4XX", body = crate::admin::error::ErrorBody)),
    security(("bearer" = [])))]
async fn preview(
    State(s): State<Shared>,
    Caller(who): Caller,
    SitePath(site): SitePath,
    Json(p): Json<PreviewInput>,
) -> Reply {
    Ok(json(
        StatusCode::OK,
        &s.admin.preview_trigger(&who, &site, p).await?,
    ))
}

/// The webhook's triggers.
#[utoipa::path(get, path = "/api/webhooks/{id}/triggers", tag = "triggers",
    params(("id" = uuid::Uuid, Path, description = "The webhook's id")),
    responses((status = 200, body = TriggerList), (status = "4XX", body = crate::admin::error::ErrorBody)),
    security(("bearer" = [])))]
async fn list(State(s): State<Shared>, Caller(who): Caller, WebhookId(id): WebhookId) -> Reply {
    Ok(json(
        StatusCode::OK,
        &s.admin.list_triggers(&who, id).await?,
    ))
}

/// A new trigger: what makes events for the webhook.
#[utoipa::path(post, path = "/api/webhooks/{id}/triggers", tag = "triggers",
    params(("id" = uuid::Uuid, Path, description = "The webhook's id")),
    request_body = NewTrigger,
    responses((status = 201, body = TriggerView), (status = "4XX", body = crate::admin::error::ErrorBody)),
    security(("bearer" = [])))]
async fn add(
    State(s): State<Shared>,
    Caller(who): Caller,
    WebhookId(id): WebhookId,
    Json(t): Json<NewTrigger>,
) -> Reply {
    Ok(json(
        StatusCode::CREATED,
        &s.admin.add_trigger(&who, id, t).await?,
    ))
}

/// Removes one of the webhook's triggers.
#[utoipa::path(delete, path = "/api/webhooks/{id}/triggers/{trigger_id}", tag = "triggers",
    params(("id" = uuid::Uuid, Path, description = "The webhook's id"),
           ("trigger_id" = uuid::Uuid, Path, description = "The trigger's id")),
    responses((status = 200, body = TriggerView), (status = "4XX", body = crate::admin::error::ErrorBody)),
    security(("bearer" = [])))]
async fn remove(
    State(s): State<Shared>,
    Caller(who): Caller,
    TriggerPath(t): TriggerPath,
) -> Reply {
    Ok(json(
        StatusCode::OK,
        &s.admin.remove_trigger(&who, t).await?,
    ))
}
