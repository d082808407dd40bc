//! The admin's one core: what every operation needs, built once and shared
//! by the three faces (the CLI, the REST API, the web page). The operations
//! themselves are `Admin`'s methods, one file per subject in ops/;
//! each takes the caller ([`super::access::Principal`]), decides access
//! through `super::access`, validates its typed input (`super::inputs`) and
//! answers with a serializable value or an [`OpError`]. Nothing here prints
//! or knows HTTP.
//!
//! The daemon hands the core what only it can build (its address guard and
//! a test sender beside its pipeline); the CLI builds its own from the
//! configuration ([`Admin::from_config`]).

use std::sync::Arc;

use anyhow::Context as _;
use deadpool_postgres::{Object, Pool};

use super::error::{pool_error, OpResult};
use super::test_sender::TestSender;
use super::test_slots::{TestSlots, TestSlotsConfig};
use crate::config::Config;
use crate::delivery::guard::AddressGuard;
use crate::triggers::source::AnalyticsSource;

/// The CLI's connections: one for the command, one for a test's recording.
pub const CLI_POOL_SIZE: usize = 2;

/// What the operations share.
pub struct Admin {
    pool: Pool,
    guard: Arc<AddressGuard>,
    retention_days: u32,
    web_url: String,
    pub(crate) tests: TestSender,
    pub(crate) test_slots: TestSlots,
    /// Trigger previews' own analytics source (a longer query timeout than
    /// the daemon's rounds, `PREVIEW_QUERY_TIMEOUT`), or why there is none.
    analytics: Result<Arc<AnalyticsSource>, String>,
    /// The evaluator's cadence (`triggers.evaluation_interval_secs`): the
    /// instants a preview replays a spike or drop at.
    evaluation_interval: time::Duration,
}

/// A preview reads up to 90 days of a site's events in one statement: it
/// may take longer than a round's query (`analytics.query_timeout_ms`).
pub const PREVIEW_QUERY_TIMEOUT_MS: u64 = 120_000;

impl Admin {
    /// The core over `pool`, checking webhook URLs with `guard` (the one
    /// deliveries are sent by) and sending tests with `tests`.
    pub fn new(
        pool: Pool,
        guard: Arc<AddressGuard>,
        tests: TestSender,
        cfg: &Config,
    ) -> anyhow::Result<Admin> {
        Ok(Admin {
            pool,
            guard,
            retention_days: cfg.retention.days,
            web_url: cfg.web_url(),
            tests,
            test_slots: TestSlots::new(TestSlotsConfig::default())?,
            analytics: {
                let mut c = cfg.clone();
                c.analytics.query_timeout_ms =
                    c.analytics.query_timeout_ms.max(PREVIEW_QUERY_TIMEOUT_MS);
                AnalyticsSource::from_config(&c)
                    .map(Arc::new)
                    .map_err(|e| format!("{e:#}"))
            },
            evaluation_interval: time::Duration::seconds(
                cfg.triggers.evaluation_interval_secs as i64,
            ),
        })
    }

    /// The core of a process that runs no daemon (the CLI): its own pool,
    /// address guard and test sender, from the configuration.
    pub fn from_config(cfg: &Config) -> anyhow::Result<Admin> {
        let pool = crate::db::pool(&cfg.database.url, CLI_POOL_SIZE)?;
        let guard = Arc::new(AddressGuard::from_config(cfg)?);
        let tests = TestSender::from_config(cfg, None)
            .context("building the HTTPS client for test events")?;
        Admin::new(pool, guard, tests, cfg)
    }

    /// A connection, or `Unavailable` when the database cannot be reached.
    pub(crate) async fn db(&self) -> OpResult<Object> {
        self.pool.get().await.map_err(pool_error)
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(crate) fn guard(&self) -> &AddressGuard {
        &self.guard
    }

    /// How long a deleted webhook can be restored (`retention.days`).
    pub fn retention_days(&self) -> u32 {
        self.retention_days
    }

    /// Where the web page is, as links to it are written.
    pub fn web_url(&self) -> &str {
        &self.web_url
    }

    /// The analytics source previews read.
    pub(crate) fn analytics(&self) -> OpResult<&AnalyticsSource> {
        self.analytics.as_deref().map_err(|e| {
            super::error::OpError::Unavailable(format!("no analytics source to preview with: {e}"))
        })
    }

    pub(crate) fn evaluation_interval(&self) -> time::Duration {
        self.evaluation_interval
    }

    /// How long a test waits for the receiver at most.
    pub fn test_timeout(&self) -> std::time::Duration {
        self.tests.timeout()
    }
}
