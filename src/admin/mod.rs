//! Administration: Prometheus metrics, the admin HTTP listener (health,
//! readiness, metrics, REST API) and its authentication.

pub mod api;
pub mod auth;
pub mod http;
pub mod metrics;
