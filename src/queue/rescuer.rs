//! The rescuer: returns deliveries whose lease expired and whose instance is
//! gone (crashed, or cut off from the database) to `pending`, logging the
//! lost attempt, so nothing stays stuck. The lease is always longer than the
//! request timeout plus a margin, so a delivery still in flight is never
//! rescued; and an instance that is alive (it holds its lock, see
//! `db::listener`) records its own outcomes however long the database made
//! it wait (read-only longer than a lease), so its rows are left to it. At shutdown the same statement
//! releases this instance's own unfinished claims.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::listener::HOLDER_LOCK_SPACE;
use crate::service::{FirstRun, PeriodicService};

/// Most rows returned per statement; the loop repeats while batches come back full.
pub const RESCUE_BATCH: i64 = 1_000;

/// A lease whose holder is alive is left to it this long past its end
/// (its completer keeps retrying a write the database refuses); after
/// that it is rescued anyway, so a holder that lost track of a row (a bug)
/// cannot keep it forever. An outage longer than this can still send a
/// delivery twice.
pub const LIVE_HOLDER_GRACE: Duration = Duration::from_secs(3600);

/// $1 batch · $2 this instance at shutdown (its own leases, expired or
/// not) · $3 retries of the configured schedule · $4 the error logged ·
/// $5 the live holders' lock space · $6 seconds after which even a live
/// holder's expired lease is rescued.
const RESCUE_SQL: &str = "
WITH live AS MATERIALIZED (
    -- The lease holders whose process is up and connected: each holds its
    -- lock (db::listener) while its LISTEN connection lives.
    SELECT l.objid FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $5::int4::oid AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
), x AS (
    SELECT l.delivery_id AS id, l.locked_by AS holder, l.attempt
    FROM webhook_deliveries_leases l
    -- Reads every lease row, which are only the rows in flight (1,500 of
    -- them: about a millisecond).
    WHERE l.locked_by = $2 OR (l.locked_until < now() AND (
        -- A live holder records the outcome itself, however late (its
        -- completer retries until the database takes it): rescuing the row
        -- would send it twice.
        NOT EXISTS (SELECT 1 FROM live WHERE live.objid = hashtext(l.locked_by)::oid)
        OR l.locked_until < now() - make_interval(secs => $6)))
    ORDER BY l.locked_until
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM webhook_deliveries_leases l
    WHERE l.delivery_id = ANY(ARRAY(SELECT id FROM x))
), u AS (
    -- The attempt under way is counted: its outcome is unknown.
    UPDATE webhook_deliveries d SET
        status = CASE WHEN x.attempt >= 1 + coalesce(cardinality(w.retry_schedule_secs), $3)
                      THEN 'failed' ELSE 'pending' END,
        attempts = LEAST(x.attempt, 1000),
        next_attempt_at = now(),
        locked_by = NULL,
        locked_until = NULL,
        last_response_code = NULL,
        last_error = $4,
        finished_at = CASE WHEN x.attempt >= 1 + coalesce(cardinality(w.retry_schedule_secs), $3)
                           THEN now() END
    FROM x, webhooks w
    -- A lease beside a finished row (written by hand) is only dropped.
    WHERE d.id = x.id AND w.id = d.webhook_id AND d.status IN ('pending', 'delivering')
    RETURNING d.id, d.webhook_id, d.attempts, d.status, d.next_attempt_at, x.holder,
              GREATEST(coalesce(d.payload_bytes, 0), pg_column_size(d.payload)) AS bytes
), q AS (
    INSERT INTO webhook_deliveries_ready (delivery_id, webhook_id, next_attempt_at, bytes)
    SELECT id, webhook_id, next_attempt_at, bytes FROM u WHERE status = 'pending'
    ON CONFLICT (delivery_id) DO UPDATE SET next_attempt_at = EXCLUDED.next_attempt_at, bytes = EXCLUDED.bytes
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
                &[
                    &RESCUE_BATCH,
                    &holder,
                    &default_retries,
                    &why,
                    &HOLDER_LOCK_SPACE,
                    &LIVE_HOLDER_GRACE.as_secs_f64(),
                ],
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
