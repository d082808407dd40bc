//! The REST API under `/api/`: a router per resource (`webhooks`,
//! `triggers`, `deliveries`), each handler only parsing its input
//! (`extract`), calling the core (`crate::admin::core::Admin`, which decides
//! access) and replying (`reply`); every refusal is an [`error::ApiError`]
//! that renders itself. The OpenAPI document is generated from the same
//! handlers and types (utoipa) and served at `/api/openapi.json`.
//!
//! Bodies are the core's own (`ops::WebhookList`, ...), which the CLI's
//! `--json` prints too; `site_id` is a site's domain (docs/api.md#names).
//!
//! Errors: `{"error": {"code", "message", "field"?, "errors"?}}` with 400
//! (not JSON), 401 (no or unknown token; `invalid_api_key`: a team-less key
//! on a set-up team's site), 402 (`site_locked`), 403 (role too low), 404
//! (missing, or on a site the caller has no role on: not told apart), 405,
//! 408 (the body was too slow), 409 (state forbids it), 413, 422 (a field
//! breaks a rule; `code` is the first rule, `errors` lists every field
//! refused), 429 (`too_many_tests`, with Retry-After), 500, 503.

pub mod deliveries;
pub mod error;
pub mod extract;
pub mod reply;
pub mod sites;
pub mod triggers;
pub mod webhooks;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::admin::state::Shared;

/// The document's frame; its paths and schemas come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "plausible-webhooks admin API",
        description = "Manage, test and debug the webhooks of Plausible Analytics sites. \
            Authenticate with `Authorization: Bearer <token>`: an operator token (every site) \
            or a Plausible API key (the key's user's role on each site: owner, admin and editor \
            manage, viewer reads).",
        license(name = "AGPL-3.0-or-later")
    ),
    modifiers(&Bearer),
    tags(
        (name = "sites", description = "The caller's sites, their goals, and the event types webhooks subscribe to"),
        (name = "webhooks", description = "A site's webhooks"),
        (name = "triggers", description = "What makes events for a webhook"),
        (name = "deliveries", description = "The delivery log, retries and replays"),
        (name = "health", description = "Health, readiness and metrics (no token)")
    )
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An operator token (admin.operator_token_sha256) or a Plausible API key",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every route of the REST API, with the document describing them.
pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .merge(sites::routes())
        .merge(webhooks::routes())
        .merge(triggers::routes())
        .merge(deliveries::routes())
}
