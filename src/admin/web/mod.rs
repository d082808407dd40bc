//! The web page for site owners (docs/web.md): the third face of the core.
//! Like the CLI and the REST API it only parses (forms and query strings,
//! into the core's own input types), calls the core (which decides access)
//! and renders (server-side HTML, askama templates, escaped by default);
//! it has no rule of its own.
//!
//! Served by the admin listener under `web.base_path` (`/webhooks`), behind
//! the reverse proxy that serves Plausible, so the browser sends
//! Plausible's session cookie (`super::plausible_session`). Where the page
//! is on another host, a visitor signs in with a Plausible API key or a
//! portal link, for a session of the daemon's own (`super::portal`).
//!
//! Every form carries a CSRF token bound to the sign-in, and a POST whose
//! `Origin` (or `Sec-Fetch-Site`) says another site sent it is refused.
//! Pages are sent with a Content-Security-Policy allowing no inline script
//! and no framing. Everything works without JavaScript; `assets/app.js`
//! only adds conveniences (copy buttons, confirmations, showing the fields
//! a trigger type takes).

pub mod assets;
pub mod deliveries;
pub mod error;
pub mod signin;
pub mod sites;
pub mod view;
pub mod visitor;
pub mod webhooks;

use axum::routing::{get, post};
use axum::Router;

use super::state::Shared;

/// The page's routes under `base`.
pub fn routes(base: &str) -> Router<Shared> {
    let at = |p: &str| format!("{base}{p}");
    Router::new()
        .route(base, get(sites::home))
        .route(&at("/"), get(sites::home))
        .route(&at("/assets/{file}"), get(assets::serve))
        .route(&at("/signin"), get(signin::form).post(signin::with_key))
        .route(&at("/signout"), post(signin::sign_out))
        .route(&at("/link/{token}"), get(signin::link))
        .route(
            &at("/sites/{site}"),
            get(sites::site).post(sites::mint_link),
        )
        .route(
            &at("/sites/{site}/new"),
            get(webhooks::new_form).post(webhooks::create),
        )
        .route(&at("/webhooks/{id}"), get(webhooks::show))
        .route(
            &at("/webhooks/{id}/edit"),
            get(webhooks::edit_form).post(webhooks::update),
        )
        .route(&at("/webhooks/{id}/test"), post(webhooks::test))
        .route(&at("/webhooks/{id}/state"), post(webhooks::state))
        .route(&at("/webhooks/{id}/rotate"), post(webhooks::rotate))
        .route(&at("/webhooks/{id}/rotate-key"), post(webhooks::rotate_key))
        .route(&at("/webhooks/{id}/triggers"), post(webhooks::add_trigger))
        .route(
            &at("/webhooks/{id}/triggers/preview"),
            post(webhooks::preview_trigger),
        )
        .route(
            &at("/webhooks/{id}/triggers/{trigger_id}/remove"),
            post(webhooks::remove_trigger),
        )
        .route(&at("/webhooks/{id}/deliveries"), get(deliveries::log))
        .route(
            &at("/webhooks/{id}/deliveries/{delivery_id}"),
            get(deliveries::show),
        )
        .route(
            &at("/webhooks/{id}/deliveries/{delivery_id}/retry"),
            post(deliveries::retry),
        )
        .route(
            &at("/webhooks/{id}/replay"),
            get(deliveries::replay_preview).post(deliveries::replay),
        )
}
