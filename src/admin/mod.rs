//! What operators use: edge validation (`validate`), the operations over the
//! database (`ops`, shared by the CLI and the HTTP API), the CLI (`cli`), and
//! the admin HTTP listener (`http`: health, readiness, `metrics`, the REST
//! `api`) with its authentication (`auth`) and its bounds on test sends
//! (`test_slots`). Handlers share `state`, which the daemon fills with what
//! it hands over. Imports run http → api → state → ops → validate, never back.

pub mod api;
pub mod auth;
pub mod cli;
pub mod http;
pub mod metrics;
pub mod ops;
pub mod state;
pub mod test_slots;
pub mod validate;
