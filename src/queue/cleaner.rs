//! The cleaner: prunes finished deliveries (their attempts go with them by
//! cascade) older than the retention period, and purges webhooks soft-deleted
//! longer ago than that (their deliveries first), in bounded batches so no
//! statement holds locks long. `restore` is refused from the same moment on.

use std::time::Duration;

use anyhow::{Context, Result};
use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::service::PeriodicService;

const PRUNE_SQL: &str = "
WITH x AS (
    SELECT id FROM webhook_deliveries
    WHERE status IN ('success', 'failed') AND inserted_at < now() - make_interval(days => $1)
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM webhook_deliveries d USING x WHERE d.id = x.id";

/// The deliveries of webhooks soft-deleted past retention, whatever their
/// status, in batches: purging such a webhook must not cascade over millions
/// of rows in one statement.
const PURGE_DELIVERIES_SQL: &str = "
WITH x AS (
    SELECT d.id FROM webhook_deliveries d
    WHERE d.webhook_id IN (SELECT id FROM webhooks WHERE deleted_at < now() - make_interval(days => $1))
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM webhook_deliveries d USING x WHERE d.id = x.id";

/// Then the webhooks themselves (and their triggers), once their deliveries are gone.
const PURGE_WEBHOOKS_SQL: &str = "
DELETE FROM webhooks WHERE id IN (
    SELECT w.id FROM webhooks w
    WHERE w.deleted_at < now() - make_interval(days => $1)
      AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.webhook_id = w.id)
    LIMIT 100)";

#[derive(Debug, Clone)]
pub struct CleanerConfig {
    pub retention_days: i32,
    pub interval: Duration,
    pub batch: i64,
}

impl CleanerConfig {
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            retention_days: cfg.retention.days as i32,
            interval: Duration::from_secs(cfg.retention.prune_interval_secs),
            batch: cfg.retention.prune_batch,
        }
    }
}

pub struct Cleaner {
    cfg: CleanerConfig,
    pool: Pool,
}

impl Cleaner {
    pub fn new(cfg: CleanerConfig, pool: Pool) -> Result<Self> {
        anyhow::ensure!(
            cfg.retention_days > 0,
            "cleaner: retention must be at least one day"
        );
        anyhow::ensure!(cfg.batch > 0, "cleaner: batch must be > 0");
        Ok(Self { cfg, pool })
    }

    /// One pruning pass; returns the deliveries deleted (finished ones past
    /// retention, and every delivery of the webhooks purged).
    pub async fn prune(&self, stop: &CancellationToken) -> Result<u64> {
        let client = self
            .pool
            .get()
            .await
            .context("getting a database connection")?;
        let mut total = 0;
        while !stop.is_cancelled() {
            let n = client
                .execute(PRUNE_SQL, &[&self.cfg.retention_days, &self.cfg.batch])
                .await
                .context("pruning old deliveries")?;
            total += n;
            if (n as i64) < self.cfg.batch {
                break;
            }
        }
        while !stop.is_cancelled() {
            let n = client
                .execute(
                    PURGE_DELIVERIES_SQL,
                    &[&self.cfg.retention_days, &self.cfg.batch],
                )
                .await
                .context("purging the deliveries of deleted webhooks")?;
            total += n;
            if (n as i64) < self.cfg.batch {
                break;
            }
        }
        let purged = client
            .execute(PURGE_WEBHOOKS_SQL, &[&self.cfg.retention_days])
            .await
            .context("purging soft-deleted webhooks")?;
        if total > 0 || purged > 0 {
            tracing::info!(
                deleted = total,
                webhooks_purged = purged,
                "pruned deliveries past retention"
            );
        }
        Ok(total)
    }
}

impl PeriodicService for Cleaner {
    const NAME: &'static str = "cleaner";
    const WORK: &'static str = "pruning old deliveries";
    const AFTER_FAILURE: &'static str = "will retry";
    /// Deliveries deleted.
    type Outcome = u64;

    fn interval(&self) -> Duration {
        self.cfg.interval
    }

    async fn run_once(&mut self, stop: &CancellationToken) -> Result<u64> {
        self.prune(stop).await
    }
}
