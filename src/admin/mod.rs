//! The admin: one core with three faces.
//!
//! - The core, bottom first: `validate` (the rules of each field), `error`
//!   (the typed outcomes every face maps once), `inputs` (the operations'
//!   input types, parsed alike from JSON, forms and clap), `access` (who may
//!   do what: the caller, Plausible's roles, locked sites and teams),
//!   `auth` (a bearer token to a caller), `test_slots` and `test_sender`
//!   (test sends: their bounds, their client), `core` (what the operations
//!   share) and `ops` (the operations, `core::Admin`'s methods).
//! - Who is calling, beside `auth`: `plausible_session` (Plausible's own
//!   browser session, verified as Plausible does) and `portal` (the web
//!   page's own sessions and the links that start them); `web_setup`, what
//!   the web page is given from the configuration.
//! - The faces, which only parse, call and render: `cli`; the HTTP listener
//!   (`http`) with `health`, `metrics`, the REST `api`, the `web` page, and
//!   the request bounds every HTTP face reads bodies within (`body`).
//!
//! Handlers share `state`, which the daemon fills with what it hands over.
//! Imports run from the faces down to `validate`, never back (tests/layers.rs).

pub mod access;
pub mod api;
pub mod auth;
pub mod body;
pub mod catalog;
pub mod cli;
pub mod core;
pub mod error;
pub mod health;
pub mod http;
pub mod inputs;
pub mod metrics;
pub mod ops;
pub mod plausible_session;
pub mod portal;
pub mod state;
pub mod test_sender;
pub mod test_slots;
pub mod validate;
pub mod web;
pub mod web_setup;
