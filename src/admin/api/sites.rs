//! The caller's sites and a site's goals: parse, call the core, reply.

use axum::extract::{FromRequestParts, RawPathParams, State};
use axum::response::Response;
use hyper::http::request::Parts;
use hyper::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::extract::{Caller, OptionalJson};
use super::reply::json;
use crate::admin::catalog::EventTypeList;
use crate::admin::inputs::{NewPortalLink, SiteRef};
use crate::admin::ops::{GoalList, PortalLink, SiteList};
use crate::admin::state::Shared;

type Reply = Result<Response, ApiError>;

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(goals))
        .routes(routes!(portal_link))
        .routes(routes!(event_types))
}

/// A one-use link that signs its holder in to the site's webhooks on the
/// web page (owners, admins and operators hand them out).
#[utoipa::path(post, path = "/api/sites/{site}/portal-links", tag = "sites",
    params(("site" = String, Path, description = "The site's domain or numeric id")),
    request_body(content = NewPortalLink, description = "Optional: every field may be left out"),
    responses((status = 201, body = PortalLink), (status = "4XX", body = crate::admin::error::ErrorBody)),
    security(("bearer" = [])))]
async fn portal_link(
    State(s): State<Shared>,
    Caller(who): Caller,
    SitePath(site): SitePath,
    OptionalJson(l): OptionalJson<NewPortalLink>,
) -> Reply {
    Ok(json(
        StatusCode::CREATED,
        &s.admin.mint_portal_link(&who, &site, l).await?,
    ))
}

/// The site of the path (`{site}`: its domain or numeric id).
pub struct SitePath(pub SiteRef);

impl<S: Send + Sync> FromRequestParts<S> for SitePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, s)
            .await
            .map_err(|_| ApiError::no_endpoint())?;
        let site = params
            .iter()
            .find(|(k, _)| *k == "site")
            .map(|(_, v)| SiteRef::new(v))
            .unwrap_or_default();
        Ok(SitePath(site))
    }
}

/// The sites the caller may read, with what they may do there and how
/// their webhooks fare.
#[utoipa::path(get, path = "/api/sites", tag = "sites",
    responses((status = 200, body = SiteList), (status = "4XX", body = crate::admin::error::ErrorBody)),
    security(("bearer" = [])))]
async fn list(State(s): State<Shared>, Caller(who): Caller) -> Reply {
    Ok(json(StatusCode::OK, &s.admin.list_sites(&who).await?))
}

/// The site's Plausible goals (what a goal trigger may name).
#[utoipa::path(get, path = "/api/sites/{site}/goals", tag = "sites",
    params(("site" = String, Path, description = "The site's domain or numeric id")),
    responses((status = 200, body = GoalList), (status = "4XX", body = crate::admin::error::ErrorBody)),
    security(("bearer" = [])))]
async fn goals(State(s): State<Shared>, Caller(who): Caller, SitePath(site): SitePath) -> Reply {
    Ok(json(
        StatusCode::OK,
        &s.admin.list_goals(&who, &site).await?,
    ))
}

/// Every built-in event type a webhook can subscribe to, with a JSON Schema
/// of its `data` and an example (docs/events.md); any other name in the
/// same format is a type the host publishes.
#[utoipa::path(get, path = "/api/event-types", tag = "sites",
    responses((status = 200, body = EventTypeList), (status = "4XX", body = crate::admin::error::ErrorBody)),
    security(("bearer" = [])))]
async fn event_types(State(s): State<Shared>, Caller(who): Caller) -> Reply {
    Ok(json(StatusCode::OK, &s.admin.event_types(&who).await?))
}
