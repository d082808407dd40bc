//! The rescuer: returns deliveries whose lease expired (their instance crashed
//! or stalled) to `pending`, logging the lost attempt, so nothing stays stuck.
//! The lease is always longer than the request timeout plus a margin, so a
//! delivery still in flight is never rescued. At shutdown the same statement
//! releases this instance's own unfinished claims.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::service::{FirstRun, PeriodicService};

/// Most rows returned per statement; the loop repeats while batches come back full.
pub const RESCUE_BATCH: i64 = 1_000;

const RESCUE_SQL: &str = "
WITH x AS (
    SELECT d.id, d.locked_by AS holder
    FROM webhook_deliveries d
    -- The lease index leads with webhook_id (sql/0008, so a limited claim
    -- counts one webhook's leases): this reads all of it, which holds only
    -- the rows in flight (1,500 of them: 1.5 ms).
    WHERE d.status = 'delivering' AND (d.locked_until < now() OR d.locked_by = $2)
    ORDER BY d.locked_until
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), u AS (
    UPDATE webhook_deliveries d SET
        status = CASE WHEN d.attempts >= 1 + coalesce(cardinality(w.retry_schedule_secs), $3)
                      THEN 'failed' ELSE 'pending' END,
        next_attempt_at = now(),
        locked_by = NULL,
        locked_until = NULL,
        last_response_code = NULL,
        last_error = $4,
        finished_at = CASE WHEN d.attempts >= 1 + coalesce(cardinality(w.retry_schedule_secs), $3)
                           THEN now() END
    FROM x, webhooks w
    WHERE d.id = x.id AND w.id = d.webhook_id
    RETURNING d.id, d.attempts, d.status, x.holder
), a AS (
    INSERT INTO webhook_delivery_attempts (delivery_id, attempt, error, duration_ms, attempted_at, instance)
    SELECT u.id, u.attempts, $4, 0, now(), u.holder FROM u
)
SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'failed') FROM u";

pub const LEASE_EXPIRED: &str =
    "outcome unknown: the instance holding this delivery stopped before recording the attempt (crash or stall); the lease expired and the delivery is sent again with the same webhook-id";
pub const RELEASED_AT_SHUTDOWN: &str =
    "outcome unknown: the request was interrupted by shutdown; the delivery is sent again with the same webhook-id";

#[derive(Debug, Clone)]
pub struct RescuerConfig {
    pub interval: Duration,
    /// Retries in the global schedule (for webhooks without their own).
    pub default_retries: i32,
}

impl RescuerConfig {
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            interval: Duration::from_millis(cfg.queue.rescue_interval_ms),
            default_retries: default_retries(cfg),
        }
    }
}

/// Retries in the configured schedule: the rescuer's, and the release of
/// this instance's claims at shutdown.
pub fn default_retries(cfg: &Config) -> i32 {
    cfg.delivery.retry_schedule_secs.len() as i32
}

pub struct Rescuer {
    cfg: RescuerConfig,
    pool: Pool,
    wake: Arc<Notify>,
}

impl Rescuer {
    /// `wake` is the claimer's: rescued rows are due at once.
    pub fn new(cfg: RescuerConfig, pool: Pool, wake: Arc<Notify>) -> Result<Self> {
        anyhow::ensure!(!cfg.interval.is_zero(), "rescuer: interval must be > 0");
        Ok(Self { cfg, pool, wake })
    }

    /// Returns every expired lease.
    pub async fn rescue_expired(&self) -> Result<Released> {
        let r = release(&self.pool, None, self.cfg.default_retries, LEASE_EXPIRED).await?;
        if r.pending > 0 {
            self.wake.notify_one();
        }
        if !r.is_empty() {
            tracing::warn!(
                retried = r.pending,
                failed = r.failed,
                "rescued deliveries whose lease expired"
            );
        }
        Ok(r)
    }
}

impl PeriodicService for Rescuer {
    const NAME: &'static str = "rescuer";
    const WORK: &'static str = "rescuing expired leases";
    const AFTER_FAILURE: &'static str = "will retry";
    /// No lease this process took can have expired at start; one left by a
    /// crashed predecessor waits one interval, as it would have anyway.
    const FIRST_RUN: FirstRun = FirstRun::AfterPause;
    type Outcome = Released;

    /// Jittered by ±10 % so instances started together do not rescue in step.
    fn interval(&self) -> Duration {
        self.cfg.interval.mul_f64(0.9 + fastrand::f64() * 0.2)
    }

    async fn run_once(&mut self, _stop: &CancellationToken) -> Result<Released> {
        self.rescue_expired().await
    }
}

/// Deliveries returned to the queue by one `release`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    /// Back to `pending`, due at once.
    pub pending: i64,
    /// Out of attempts: `failed` for good.
    pub failed: i64,
}

impl Released {
    pub fn is_empty(&self) -> bool {
        self.pending + self.failed == 0
    }
}

/// Returns expired leases, and those held by `holder` when given, to the queue.
pub async fn release(
    pool: &Pool,
    holder: Option<&str>,
    default_retries: i32,
    why: &str,
) -> Result<Released> {
    let client = pool.get().await.context("getting a database connection")?;
    let mut total = Released::default();
    loop {
        let row = client
            .query_one(
                RESCUE_SQL,
                &[&RESCUE_BATCH, &holder, &default_retries, &why],
            )
            .await
            .context("returning leased deliveries to the queue")?;
        let (p, f): (i64, i64) = (row.get(0), row.get(1));
        total.pending += p;
        total.failed += f;
        if p + f < RESCUE_BATCH {
            return Ok(total);
        }
    }
}
