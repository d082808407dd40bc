//! plausible-webhooks: webhooks for Plausible Analytics.
//!
//! The house follows the data: `config` → `db` (pool, migrations, listener) →
//! `queue` (claim, complete, rescue, prune) → `delivery` (client, address guard,
//! signing, retry policy, worker) → `triggers` (analytics sources, spike/drop
//! evaluator, goal scanner) → `admin` (validation, operations and CLI
//! commands for operators; the admin HTTP listener, its auth and metrics) →
//! `daemon` (wiring, shutdown). `testkit` holds
//! the throwaway PostgreSQL cluster and HTTPS receiver used by the demo, the
//! tests and the benchmark.

pub mod admin;
pub mod config;
pub mod daemon;
pub mod db;
pub mod delivery;
pub mod demo;
pub mod logging;
pub mod queue;
pub mod testkit;
pub mod triggers;
