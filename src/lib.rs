//! plausible-webhooks: webhooks for Plausible Analytics.
//!
//! The house follows the data. Layers, bottom first; a module imports only
//! from layers below its own, and no file imports, through any chain of
//! files, one that imports it (`tests/layers.rs` checks both on every run):
//!
//! 1. `metrics`, `logging`, `https`: the process-wide registry, log setup
//!    and how an error is written in a log line, and what the HTTPS clients
//!    share (trusted certificates, User-Agent); they import nothing of the
//!    crate, so every layer may use them.
//!    `service`, above them: the periodic-service loop every layer's
//!    services are built on.
//! 2. `config`: the configuration file and environment, validated.
//! 3. `db`: pool, migrations, settings, the LISTEN connection; reading rows
//!    (columns by name, `Unreadable`) and timestamps (`rfc3339_seconds`).
//! 4. `queue`: the delivery job (`Claimed`, `WebhookInfo`, `Completion`) and
//!    the services over `webhook_deliveries`: admission, claim, complete,
//!    rescue, prune; the lease holder's name.
//! 5. `delivery`: HTTPS client, address guard, signing, envelope, retry
//!    policy, the worker that turns a claimed job into its completion.
//! 6. `triggers`: analytics sources, the spike/drop evaluator, the goal scanner.
//! 7. `admin`: validation, operations shared by the CLI and the HTTP API, the
//!    CLI, the admin HTTP listener (imports run http → api → state → ops).
//!    The daemon hands it what it needs (`admin::state::Handed`).
//! 8. `daemon` (wiring, shutdown) and `testkit` (the throwaway PostgreSQL
//!    cluster, HTTPS receiver and ClickHouse used by the demo, the tests and
//!    the benchmarks).
//! 9. `demo`: the demo and the playground tools (`demo --keep`, `listen`).

pub mod admin;
pub mod config;
pub mod daemon;
pub mod db;
pub mod delivery;
// Built with the test kit it runs on, so the tests reach the playground and
// the `listen` receiver; the binary offers them with the `demo` feature.
#[cfg(feature = "testkit")]
pub mod demo;
pub mod https;
pub mod logging;
pub mod metrics;
pub mod queue;
pub mod service;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod triggers;
