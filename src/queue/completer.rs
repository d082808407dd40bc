//! The completer: writes outcomes in batches, one statement per batch (the
//! delivery rows, their attempt log rows and the webhooks' health together),
//! fenced by the lease holder and the attempt number so an instance that lost
//! its lease can never overwrite the row's newer state.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use deadpool_postgres::Pool;
use time::OffsetDateTime;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Completion, Outcome, Status};

/// Backoff between tries to write a batch while the database is unreachable.
pub const WRITE_BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const WRITE_BACKOFF_MAX: Duration = Duration::from_secs(5);

const COMPLETE_SQL: &str = "
WITH r AS (
    SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::bigint[], $5::bool[], $6::int[],
                         $7::text[], $8::text[], $9::int[], $10::timestamptz[], $11::text[], $15::timestamptz[],
                         $16::text[])
        AS r(id, attempt, status, retry_in_ms, attempted, code, error, body, duration_ms, attempted_at,
             disable_reason, lease, error_kind)
), l AS (
    -- The fence: this instance's claim, and this very claim (its lease end
    -- and attempt number), so a late outcome of an earlier claim of the row
    -- can never apply. Deleting the lease ends the delivery's flight
    -- (sql/0020).
    DELETE FROM webhook_deliveries_leases l
    USING r
    WHERE l.delivery_id = r.id AND l.locked_by = $12 AND l.locked_until = r.lease AND l.attempt = r.attempt
    -- The outcomes that passed it, so that the update below joins one
    -- list by key (joining `r` again was a nested loop over it: 40,000
    -- comparisons for 200 outcomes).
    RETURNING r.*
), d AS (
    -- The delivery's one write on its way through the queue: no index of
    -- the wide table covers a column set here, so it is HOT.
    UPDATE webhook_deliveries d SET
        status = l.status,
        attempts = CASE WHEN l.attempted THEN l.attempt ELSE l.attempt - 1 END,
        next_attempt_at = CASE WHEN l.status = 'pending'
                               THEN now() + l.retry_in_ms * interval '1 millisecond'
                               ELSE d.next_attempt_at END,
        -- Set only on rows written 'delivering' (the test send, rows in
        -- flight at migration 20).
        locked_by = NULL,
        locked_until = NULL,
        last_response_code = CASE WHEN l.attempted THEN l.code ELSE d.last_response_code END,
        last_error = CASE WHEN l.attempted OR l.error IS NOT NULL THEN l.error ELSE d.last_error END,
        delivered_at = CASE WHEN l.status = 'success' THEN l.attempted_at ELSE d.delivered_at END,
        finished_at = CASE WHEN l.status IN ('success', 'failed') THEN now() END
    FROM l
    WHERE d.id = l.id
    RETURNING d.id, d.webhook_id, d.status, d.next_attempt_at,
              CASE WHEN d.status = 'pending'
                   THEN GREATEST(coalesce(d.payload_bytes, 0), pg_column_size(d.payload)) END AS bytes
), q AS (
    -- A retry (or a deferral) is due again.
    INSERT INTO webhook_deliveries_ready (delivery_id, webhook_id, next_attempt_at, bytes)
    SELECT id, webhook_id, next_attempt_at, bytes FROM d WHERE status = 'pending'
    -- A ready row written by hand beside the lease must not fail the batch.
    ON CONFLICT (delivery_id) DO UPDATE SET next_attempt_at = EXCLUDED.next_attempt_at, bytes = EXCLUDED.bytes
), a AS (
    INSERT INTO webhook_delivery_attempts
        (delivery_id, attempt, status_code, response_body, error, error_kind, duration_ms, attempted_at, instance)
    SELECT r.id, r.attempt, r.code, r.body, r.error, r.error_kind, r.duration_ms, r.attempted_at, $12
    FROM r JOIN d ON d.id = r.id
    WHERE r.attempted
), x AS (
    SELECT d.webhook_id,
           bool_or(r.status = 'success') AS succeeded,
           -- Only deliveries actually attempted count against a webhook's health
           -- (not those refused unsent because it is disabled or deleted).
           count(*) FILTER (WHERE r.status = 'failed' AND r.attempted) AS failed,
           (array_agg(r.error ORDER BY r.attempted_at DESC)
              FILTER (WHERE r.status = 'failed' AND r.attempted))[1] AS last_error,
           max(r.disable_reason) AS gone
    FROM d JOIN r ON r.id = d.id
    WHERE r.status <> 'pending'
    GROUP BY d.webhook_id
), y AS (
    SELECT x.*,
           w0.enabled AND (x.gone IS NOT NULL
               OR (NOT x.succeeded AND $13 > 0
                   AND w0.consecutive_failures + x.failed >= $13
                   AND coalesce(w0.failing_since, now()) <= now() - make_interval(secs => $14))) AS disable,
           coalesce(x.gone, format('%s consecutive deliveries failed since %s',
                                   w0.consecutive_failures + x.failed,
                                   coalesce(w0.failing_since, now()))) AS reason
    FROM x JOIN webhooks w0 ON w0.id = x.webhook_id
    WHERE x.failed > 0 OR x.gone IS NOT NULL OR w0.consecutive_failures > 0
    -- Two completions may run at once (`in_flight`): each locks the
    -- webhooks it updates in one order, so they never deadlock; a batch of
    -- successes of healthy webhooks locks none.
    ORDER BY w0.id
    FOR UPDATE OF w0
), h AS (
    -- Health: a success resets the streak (within one batch, a success wins);
    -- N failed deliveries spanning the configured time disable the webhook.
    UPDATE webhooks w SET
        consecutive_failures = CASE WHEN y.succeeded THEN 0 ELSE w.consecutive_failures + y.failed END,
        failing_since = CASE WHEN y.succeeded THEN NULL ELSE coalesce(w.failing_since, now()) END,
        last_failure = CASE WHEN y.failed > 0 THEN coalesce(y.last_error, w.last_failure) ELSE w.last_failure END,
        enabled = w.enabled AND NOT y.disable,
        disabled_reason = CASE WHEN y.disable THEN y.reason ELSE w.disabled_reason END,
        disabled_at = CASE WHEN y.disable THEN now() ELSE w.disabled_at END
    FROM y
    WHERE w.id = y.webhook_id
    RETURNING w.id, w.site_id, w.enabled, y.disable AS just_disabled, w.disabled_reason, w.name
)
SELECT 'done', d.id, NULL::bigint, NULL::text, NULL::text, NULL::text FROM d
UNION ALL
SELECT 'disabled', h.id, h.site_id, h.disabled_reason, h.name, (SELECT domain FROM sites WHERE id = h.site_id)
FROM h WHERE NOT h.enabled AND h.just_disabled";

#[derive(Debug, Clone)]
pub struct CompleterConfig {
    pub instance: String,
    pub batch_max: usize,
    /// Statements in flight at once. Two batches never hold the same delivery
    /// (a row is claimed once), so the order they commit in does not matter.
    pub in_flight: usize,
    /// 0 disables auto-disable.
    pub disable_after_failures: i32,
    pub disable_after: Duration,
}

pub struct Completer {
    cfg: CompleterConfig,
    pool: Pool,
    rx: mpsc::Receiver<Done>,
    wake: Arc<Notify>,
}

/// An outcome, with the delivery slot it holds until it is written (so a slow
/// database slows claiming instead of piling up unrecorded outcomes).
pub type Done = (Completion, Option<super::Slot>);

/// A channel sized so the deliverers feel back-pressure before memory grows.
pub fn channel(max_in_flight: usize) -> (mpsc::Sender<Done>, mpsc::Receiver<Done>) {
    mpsc::channel(max_in_flight.max(16))
}

impl Completer {
    /// `wake` is the claimer's: a batch that schedules retries (or deferrals)
    /// changes when the next row is due, so the claimer recomputes its timer.
    pub fn new(
        cfg: CompleterConfig,
        pool: Pool,
        rx: mpsc::Receiver<Done>,
        wake: Arc<Notify>,
    ) -> Result<Self> {
        anyhow::ensure!(cfg.batch_max > 0, "completer: batch_max must be > 0");
        anyhow::ensure!(cfg.in_flight > 0, "completer: in_flight must be > 0");
        Ok(Self {
            cfg,
            pool,
            rx,
            wake,
        })
    }

    /// Runs until every sender is dropped and the channel is drained.
    /// `stop_retrying` ends retries of a batch the database keeps refusing (at
    /// shutdown); its rows stay leased and the rescuer returns them later.
    pub fn start(self, stop_retrying: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(stop_retrying))
    }

    async fn run(self, stop_retrying: CancellationToken) {
        let Completer {
            cfg,
            pool,
            mut rx,
            wake,
        } = self;
        let (batch_max, in_flight) = (cfg.batch_max, cfg.in_flight);
        let writer = Arc::new(Writer { cfg, pool, wake });
        let mut writes = tokio::task::JoinSet::new();
        loop {
            // At most `in_flight` statements at once: the outcomes that
            // arrive meanwhile gather into the next batch.
            while writes.len() >= in_flight {
                reaped(writes.join_next().await);
            }
            while let Some(done) = writes.try_join_next() {
                reaped(Some(done));
            }
            let Some((first, slot)) = rx.recv().await else {
                break;
            };
            let mut batch = Vec::with_capacity(batch_max);
            let mut slots = Vec::with_capacity(batch_max);
            batch.push(first);
            slots.push(slot);
            while batch.len() < batch_max {
                match rx.try_recv() {
                    Ok((c, slot)) => {
                        batch.push(c);
                        slots.push(slot);
                    }
                    Err(_) => break,
                }
            }
            let writer = writer.clone();
            let stop_retrying = stop_retrying.clone();
            writes.spawn(async move {
                writer.write_until_done(&batch, &stop_retrying).await;
                drop(slots); // the delivery slots free only now: claims follow what is recorded
            });
        }
        while let Some(done) = writes.join_next().await {
            reaped(Some(done));
        }
        tracing::debug!("completer stopped");
    }
}

/// A finished write task (a panic is a bug: said, and the rows' leases
/// expire, so the rescuer returns them).
fn reaped(done: Option<Result<(), tokio::task::JoinError>>) {
    if let Some(Err(e)) = done {
        tracing::error!(error = %e, "a completion write task failed; its deliveries' leases will expire and they are sent again");
    }
}

/// What a write needs, shared by the writes in flight.
struct Writer {
    cfg: CompleterConfig,
    pool: Pool,
    wake: Arc<Notify>,
}

impl Writer {
    /// Writes `batch`, retrying with backoff while the database is unreachable.
    async fn write_until_done(&self, batch: &[Completion], stop_retrying: &CancellationToken) {
        let mut backoff = WRITE_BACKOFF_MIN;
        loop {
            match self.write_isolating_bad_rows(batch).await {
                Ok(()) => {
                    if batch.iter().any(|c| c.outcome.requeues()) {
                        self.wake.notify_one();
                    }
                    return;
                }
                Err(e) => {
                    // Said once per batch; the retries fail the same way.
                    if backoff == WRITE_BACKOFF_MIN {
                        tracing::warn!(
                            error = crate::logging::error_line(e.as_ref()),
                            batch = batch.len(),
                            "recording delivery outcomes failed; retrying with backoff (the deliveries wait, none is lost)"
                        );
                    } else {
                        tracing::debug!(
                            error = crate::logging::error_line(e.as_ref()),
                            batch = batch.len(),
                            "recording delivery outcomes still fails"
                        );
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop_retrying.cancelled() => {
                            tracing::warn!(batch = batch.len(), "shutting down with outcomes unrecorded; these deliveries are returned to the queue and sent again");
                            return;
                        }
                    }
                    backoff = (backoff * 2).min(WRITE_BACKOFF_MAX);
                }
            }
        }
    }

    /// Writes the batch. A data error (one row the database refuses, not a
    /// connection problem) must not block every other outcome: the rows are then
    /// written one by one, and a row still refused is written without the
    /// receiver's answer, the error saying why.
    async fn write_isolating_bad_rows(&self, batch: &[Completion]) -> Result<()> {
        match self.write(batch).await {
            Err(e) if is_data_error(&e) => {
                tracing::warn!(
                    error = crate::logging::error_line(e.as_ref()),
                    "a delivery outcome was refused; writing the batch row by row"
                );
                for c in batch {
                    match self.write(std::slice::from_ref(c)).await {
                        Err(e) if is_data_error(&e) => {
                            let mut plain = c.clone();
                            let dropped = format!(
                                "the receiver's answer could not be stored ({}); it was dropped",
                                e.root_cause()
                            );
                            match &mut plain.outcome {
                                Outcome::NotSent { why } => *why = dropped,
                                Outcome::Deferred | Outcome::Local { .. } => {}
                                Outcome::Delivered(a)
                                | Outcome::Failed(a)
                                | Outcome::Retry { attempt: a, .. }
                                | Outcome::Gone { attempt: a, .. } => {
                                    a.response_body = None;
                                    a.error = Some(dropped);
                                }
                            }
                            if let Err(e) = self.write(std::slice::from_ref(&plain)).await {
                                tracing::error!(delivery_id = %c.id, error = crate::logging::error_line(e.as_ref()),
                                    "cannot record this delivery's outcome; its lease will expire and it will be sent again");
                            }
                        }
                        other => other?,
                    }
                }
                Ok(())
            }
            other => other,
        }
    }

    async fn write(&self, batch: &[Completion]) -> Result<()> {
        let n = batch.len();
        let mut ids = Vec::with_capacity(n);
        let mut attempts = Vec::with_capacity(n);
        let mut statuses = Vec::with_capacity(n);
        let mut retry_in = Vec::with_capacity(n);
        let mut attempted = Vec::with_capacity(n);
        let mut codes = Vec::with_capacity(n);
        let mut errors = Vec::with_capacity(n);
        let mut bodies = Vec::with_capacity(n);
        let mut durations = Vec::with_capacity(n);
        let mut times: Vec<Option<OffsetDateTime>> = Vec::with_capacity(n);
        let mut gone = Vec::with_capacity(n);
        let mut leases: Vec<OffsetDateTime> = Vec::with_capacity(n);
        let mut kinds = Vec::with_capacity(n);
        for c in batch {
            let col = Columns::of(&c.outcome);
            ids.push(c.id);
            attempts.push(c.attempt);
            statuses.push(col.status.as_str());
            retry_in.push(col.retry_in_ms);
            attempted.push(col.attempt.is_some());
            codes.push(col.attempt.and_then(|a| a.status_code));
            errors.push(col.error);
            bodies.push(col.attempt.and_then(|a| a.response_body.as_deref()));
            durations.push(col.attempt.map(|a| a.duration_ms));
            times.push(col.attempt.map(|a| a.attempted_at));
            gone.push(col.disable_reason);
            leases.push(c.lease);
            kinds.push(col.attempt.and_then(|a| a.error_kind).map(|k| k.as_str()));
        }
        let client = self
            .pool
            .get()
            .await
            .context("getting a database connection")?;
        let stmt = client
            .prepare_cached(COMPLETE_SQL)
            .await
            .context("preparing the completion")?;
        let rows = client
            .query(
                &stmt,
                &[
                    &ids,
                    &attempts,
                    &statuses,
                    &retry_in,
                    &attempted,
                    &codes,
                    &errors,
                    &bodies,
                    &durations,
                    &times,
                    &gone,
                    &self.cfg.instance,
                    &self.cfg.disable_after_failures,
                    &self.cfg.disable_after.as_secs_f64(),
                    &leases,
                    &kinds,
                ],
            )
            .await
            .context("recording delivery outcomes")?;
        let mut done = std::collections::HashSet::with_capacity(n);
        for r in &rows {
            let kind: &str = r.get(0);
            let id: Uuid = r.get(1);
            if kind == "done" {
                done.insert(id);
            } else {
                let site_id: Option<i64> = r.get(2);
                let reason: Option<String> = r.get(3);
                let name: Option<String> = r.get(4);
                let site: Option<String> = r.get(5);
                tracing::warn!(
                    webhook_id = %id,
                    webhook_name = name.as_deref().unwrap_or(""),
                    // The names of docs/api.md#names: site_id is the domain.
                    site_id = site.as_deref().unwrap_or(""),
                    plausible_site_id = site_id.unwrap_or_default(),
                    reason = reason.as_deref().unwrap_or(""),
                    "webhook disabled; re-enable it once the receiver is fixed"
                );
            }
        }
        for c in batch.iter().filter(|c| !done.contains(&c.id)) {
            tracing::warn!(
                delivery_id = %c.id,
                attempt = c.attempt,
                "outcome not recorded: this instance no longer holds the lease (the delivery was rescued and is retried)"
            );
        }
        Ok(())
    }
}

/// One outcome as the completion statement's columns: the one place where
/// a variant decides the row's status, when it is due again, whether an
/// attempt is counted and logged, and whether the webhook is disabled.
struct Columns<'a> {
    status: Status,
    /// For `pending`: when to try again, from now.
    retry_in_ms: Option<i64>,
    /// The HTTP attempt, when one was made: it is counted and logged.
    attempt: Option<&'a super::Attempt>,
    error: Option<&'a str>,
    /// Disable the webhook with this reason.
    disable_reason: Option<&'a str>,
}

impl<'a> Columns<'a> {
    fn of(o: &'a Outcome) -> Self {
        let attempted = |status, a: &'a super::Attempt| Columns {
            status,
            retry_in_ms: None,
            attempt: Some(a),
            error: a.error.as_deref(),
            disable_reason: None,
        };
        match o {
            Outcome::Delivered(a) => attempted(Status::Success, a),
            Outcome::Retry { attempt, after } => Columns {
                retry_in_ms: Some(after.as_millis().min(i64::MAX as u128) as i64),
                ..attempted(Status::Pending, attempt)
            },
            Outcome::Failed(a) => attempted(Status::Failed, a),
            Outcome::Gone { attempt, reason } => Columns {
                disable_reason: Some(reason),
                ..attempted(Status::Failed, attempt)
            },
            Outcome::Deferred => Columns {
                status: Status::Pending,
                retry_in_ms: Some(0),
                attempt: None,
                error: None,
                disable_reason: None,
            },
            Outcome::NotSent { why } => Columns {
                status: Status::Failed,
                retry_in_ms: None,
                attempt: None,
                error: Some(why),
                disable_reason: None,
            },
            Outcome::Local { why, after } => Columns {
                status: Status::Pending,
                retry_in_ms: Some(after.as_millis().min(i64::MAX as u128) as i64),
                attempt: None,
                error: Some(why),
                disable_reason: None,
            },
        }
    }
}

/// The database refused the data (SQLSTATE class 22 or 23): retrying the same
/// statement cannot succeed, unlike a lost connection or a deadlock.
fn is_data_error(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<tokio_postgres::Error>())
        .filter_map(|pe| pe.as_db_error())
        .any(|db| matches!(&db.code().code()[..2], "22" | "23"))
}
