//! The claimer (River's producer): takes due rows in batches as large as the
//! free delivery slots, under a lease, and hands each to the dispatcher.
//!
//! When to claim is decided here, in one place: at once after a full batch
//! (more is waiting), on a NOTIFY from the listener, at the earliest scheduled
//! retry, and otherwise at the backstop poll (shorter while the listener is down).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use deadpool_postgres::Pool;
use tokio::sync::{watch, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::admission::{Admission, Quotas};
use super::claim_sql::claim_rows_sql;
use super::claim_sql::claimed_row_sql;
use super::{limits, Claimed, Slot, WebhookInfo};
use crate::db::row::position;
use crate::db::row::{col, Unreadable};
use crate::db::Timestamp;

/// Whether a webhook's previous secret and previous signing key were still
/// signing when it was decoded: their expiry changes no row (`updated_at`
/// stays), so the decoded webhook is kept only while these hold too.
type Live = (bool, bool);

/// Poll at least this often while the LISTEN connection is down.
pub const POLL_WHILE_LISTENER_DOWN: Duration = Duration::from_secs(1);
/// After a full batch, wait up to this long for a quarter of the slots to free,
/// so a busy queue is claimed in large batches rather than one row at a time.
pub const REFILL_WAIT: Duration = Duration::from_millis(2);
/// A claim that read more payload than this closes its connection after
/// (see `claim`).
pub const LARGE_READ_BYTES: usize = 4 * 1024 * 1024;
/// The shortest sleep between claims that found nothing to take.
pub const MIN_WAIT: Duration = Duration::from_millis(25);
/// Pause after a failed claim (the database may be restarting), doubling up
/// to ERROR_BACKOFF_MAX while failures go on.
pub const ERROR_BACKOFF: Duration = Duration::from_millis(500);
pub const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The claim of every webhook without limits of its own (see `admission`),
/// fair by construction ([`claim_rows_sql`]): each webhook may take what
/// its concurrency (the default, per instance) and its fair share leave.
/// Webhooks are walked from `webhooks`. A limited webhook (its own
/// max_concurrency, or a rate limit) takes nothing here: it is claimed apart
/// (`limits`), and one with a row due comes back as a marker row (id NULL,
/// its webhook_id), unless it is held off ($6). So a deployment without
/// limited webhooks pays for them one filter over `webhooks`, nothing more.
///
/// $1 rows to claim at most · $2 instance · $3 lease (s) · $4/$5 tracked
/// webhooks: id, held here · $6 limited webhooks held off · $7 default
/// max_concurrency · $8 max_in_flight · $9 default rate · $10 free slots ·
/// $11 light share · $12 reserve · $13 payload bytes left · $14 nothing in
/// flight.
pub const CLAIM_SQL: &str = concat!(
    "
WITH tracked AS (
    SELECT * FROM unnest($4::uuid[], $5::int4[]) AS t(webhook_id, held)
), quota AS (
    -- A disabled or deleted webhook's rows end unsent at once: its limits,
    -- which pace requests, do not apply to them.
    SELECT w.id AS webhook_id, coalesce(t.held, 0) AS held,
           CASE WHEN NOT w.enabled OR w.deleted_at IS NOT NULL THEN $1::int8
                WHEN w.max_concurrency IS NOT NULL OR coalesce(w.rate_limit_per_sec, $9::int4) > 0
                THEN 0 ELSE
           LEAST(LEAST($7::int4, $8::int4) - coalesce(t.held, 0),
                 -- No more than its light share and the room beyond the reserve
                 -- could give it: a webhook the share holds back is not read.
                 GREATEST($11::int8 - coalesce(t.held, 0), 0) + GREATEST($10::int8 - $12::int8, 0),
                 $1::int8) END AS n
    FROM webhooks w LEFT JOIN tracked t ON t.webhook_id = w.id
),",
    claim_rows_sql!(),
    ", limited_due AS (
    SELECT w.id FROM webhooks w
    -- The earliest due row, in the order of the (webhook_id, next_attempt_at)
    -- index, so the probe is one index descent per webhook whatever the
    -- estimates: as EXISTS, an unanalyzed `webhooks` got it planned as a hash
    -- over a scan of the whole queue.
    CROSS JOIN LATERAL (SELECT 1 FROM webhook_deliveries_ready p
                        WHERE p.webhook_id = w.id AND p.next_attempt_at <= now()
                        ORDER BY p.next_attempt_at
                        LIMIT 1) due
    WHERE w.enabled AND w.deleted_at IS NULL
      AND (w.max_concurrency IS NOT NULL OR coalesce(w.rate_limit_per_sec, $9::int4) > 0)
      AND w.id <> ALL($6::uuid[])
), d AS (
    SELECT * FROM claimed
    UNION ALL
    SELECT NULL, id, NULL, NULL, NULL, NULL, NULL FROM limited_due
)",
    claimed_row_sql!()
);

/// Seconds until the earliest pending row of a webhook not in $1 is due
/// (negative: overdue); $1 are the webhooks admission blocks now, whose rows
/// wait for a slot or a token, not for the clock.
pub const NEXT_DUE_SQL: &str = "
SELECT extract(epoch FROM min(x.next_attempt_at) - clock_timestamp())::float8
FROM webhooks w
CROSS JOIN LATERAL (
    SELECT p.next_attempt_at FROM webhook_deliveries_ready p
    -- 'infinity' is never due (and no interval holds the wait for it).
    WHERE p.webhook_id = w.id AND p.next_attempt_at < 'infinity'
    ORDER BY p.next_attempt_at
    LIMIT 1
) x
WHERE w.id <> ALL($1::uuid[])";

/// Receives each claimed delivery with the slot it occupies.
pub type Dispatch = Arc<dyn Fn(Claimed, Slot) + Send + Sync>;

#[derive(Debug, Clone)]
pub struct ClaimerConfig {
    pub instance: String,
    pub lease: Duration,
    pub max_in_flight: usize,
    pub batch_max: usize,
    pub poll_interval: Duration,
}

impl ClaimerConfig {
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(self.max_in_flight > 0, "claimer: max_in_flight must be > 0");
        anyhow::ensure!(self.batch_max > 0, "claimer: batch_max must be > 0");
        anyhow::ensure!(!self.lease.is_zero(), "claimer: lease must be > 0");
        Ok(())
    }
}

pub struct Claimer {
    cfg: ClaimerConfig,
    pool: Pool,
    slots: Arc<Semaphore>,
    admission: Arc<Admission>,
    wake: Arc<Notify>,
    listener_up: watch::Receiver<bool>,
    dispatch: Dispatch,
    cache: HashMap<Uuid, (Timestamp, Live, Arc<WebhookInfo>)>,
    /// Limited webhooks the last claim found due but had no room for.
    limited_due: Vec<Uuid>,
}

impl Claimer {
    pub fn new(
        cfg: ClaimerConfig,
        pool: Pool,
        admission: Arc<Admission>,
        wake: Arc<Notify>,
        listener_up: watch::Receiver<bool>,
        dispatch: Dispatch,
    ) -> Result<Self> {
        cfg.validate()?;
        anyhow::ensure!(
            admission.config().max_in_flight == cfg.max_in_flight,
            "claimer: admission and claimer disagree on max_in_flight"
        );
        Ok(Self {
            slots: Arc::new(Semaphore::new(cfg.max_in_flight)),
            cfg,
            pool,
            admission,
            wake,
            listener_up,
            dispatch,
            cache: HashMap::new(),
            limited_due: Vec::new(),
        })
    }

    /// The delivery slots (a permit per delivery in flight).
    pub fn slots(&self) -> Arc<Semaphore> {
        self.slots.clone()
    }

    pub fn start(self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(stop))
    }

    async fn run(mut self, stop: CancellationToken) {
        // A claim takes rows beyond the light shares only while the reserve
        // stays free: after a full batch, wait for an eighth of the slots to
        // free beyond the reserve, so a busy webhook is claimed in large
        // batches rather than one row at a time.
        let reserve = self.admission.config().reserve();
        let low_water = (self.cfg.max_in_flight / 8).max(1);
        let refill_to = (reserve + low_water).min(self.cfg.max_in_flight);
        let mut last_full = false;
        let mut backoff = ERROR_BACKOFF;
        while !stop.is_cancelled() {
            if last_full && self.slots.available_permits() < refill_to {
                tokio::select! {
                    _ = self.slots.acquire_many(refill_to as u32) => {}
                    _ = tokio::time::sleep(REFILL_WAIT) => {}
                    _ = stop.cancelled() => break,
                }
            }
            if self.slots.available_permits() == 0 {
                tokio::select! {
                    _ = self.slots.acquire() => {}
                    _ = stop.cancelled() => break,
                }
            }
            let free = self.slots.available_permits();
            let n = free.min(self.cfg.batch_max);
            let mut quotas = self.admission.quotas(free);
            match self.claim(n, free, &mut quotas).await {
                Ok(rows) => {
                    backoff = ERROR_BACKOFF;
                    // Full: as many as the slots beyond the reserve allowed
                    // (more may be due).
                    last_full = rows.len() >= n.min(free.saturating_sub(reserve).max(1));
                    if rows.is_empty() {
                        // Nothing fitted (a share, the bytes, a limit just
                        // lowered): a delivery ending may change that.
                        self.admission.wake_on_release();
                    }
                    for row in rows {
                        let delivery = self
                            .slots
                            .clone()
                            .try_acquire_owned()
                            .expect("the claimer is the only taker of slots");
                        let wh = &row.webhook;
                        let limits = if wh.enabled && !wh.deleted {
                            self.admission
                                .limits(wh.max_concurrency, wh.rate_limit_per_sec)
                        } else {
                            // Ended unsent at once: nothing to pace (as in CLAIM_SQL).
                            self.admission.limits(Some(u32::MAX), Some(0))
                        };
                        let webhook = self.admission.admit(wh.id, limits, row.payload.len());
                        (self.dispatch)(row, Slot { delivery, webhook });
                    }
                    if last_full {
                        continue;
                    }
                }
                Err(e) => {
                    // Said once per outage; the retries fail the same way.
                    if backoff == ERROR_BACKOFF {
                        tracing::warn!(
                            error = crate::logging::error_line(e.as_ref()),
                            "claiming deliveries failed; retrying with backoff"
                        );
                    } else {
                        tracing::debug!(
                            error = crate::logging::error_line(e.as_ref()),
                            retry_in_ms = backoff.as_millis() as u64,
                            "claiming deliveries still fails"
                        );
                    }
                    last_full = false;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        // The listener reconnecting means the database is back.
                        _ = self.wake.notified() => {}
                        _ = stop.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(ERROR_BACKOFF_MAX);
                    continue;
                }
            }
            let wait = self.next_wait(&quotas).await;
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => break,
            }
        }
        tracing::debug!("claimer stopped");
    }

    /// How long to sleep when nothing is due: until the earliest retry of a
    /// webhook that may send, or the next rate token of one that may not,
    /// capped by the (jittered) backstop poll. (A slot freed for a blocked
    /// webhook wakes the claimer through admission.)
    async fn next_wait(&self, quotas: &Quotas) -> Duration {
        let mut poll = self.cfg.poll_interval.mul_f64(0.8 + fastrand::f64() * 0.4);
        if !*self.listener_up.borrow() {
            poll = poll.min(POLL_WHILE_LISTENER_DOWN);
        }
        let due = async {
            let client = self.pool.get().await?;
            let row = client.query_one(NEXT_DUE_SQL, &[&quotas.blocked]).await?;
            Ok::<_, anyhow::Error>(row.get::<_, Option<f64>>(0))
        }
        .await;
        if let Some(t) = quotas.next_token_in {
            poll = poll.min(t.max(MIN_WAIT));
        }
        match due {
            // Due already but not claimed: another transaction holds the row.
            // Pause briefly rather than spin (a NOTIFY still wakes us at once).
            Ok(Some(secs)) => poll.min(
                Duration::try_from_secs_f64(secs.max(0.0))
                    .unwrap_or(poll) // an infinite next_attempt_at
                    .max(MIN_WAIT),
            ),
            Ok(None) => poll,
            Err(_) => poll.min(ERROR_BACKOFF),
        }
    }

    /// Claims up to `n` rows with `free` slots free: the other claim
    /// ([`CLAIM_SQL`]) and, for limited webhooks it found due, the limited
    /// one (`limits`); records what the latter found in admission and adds
    /// its hold-offs to `q` (for the wait).
    async fn claim(&mut self, n: usize, free: usize, q: &mut Quotas) -> Result<Vec<Claimed>> {
        let mut client = self
            .pool
            .get()
            .await
            .context("getting a database connection")?;
        // Measured on our own clock from before the claim, so the lease left is
        // never overestimated, whatever the skew between us and the database.
        let lease_deadline = Instant::now() + self.cfg.lease;
        let mut out = Vec::new();
        // Limited webhooks found due when the other claim left no room go
        // first now: a busy backlog of other webhooks cannot keep them
        // waiting batch after batch.
        let first: Vec<Uuid> = std::mem::take(&mut self.limited_due)
            .into_iter()
            .filter(|id| !q.is_blocked(id))
            .collect();
        if !first.is_empty() {
            self.claim_limited(&mut client, &first, n, free, q, lease_deadline, &mut out)
                .await;
        }
        if out.len() >= n {
            return Ok(out);
        }
        let cfg = self.admission.config();
        let defaults = cfg.defaults;
        let taken: i64 = out.iter().map(|c| c.payload.len() as i64).sum();
        let claimed = async {
            let stmt = client
                .prepare_cached(CLAIM_SQL)
                .await
                .context("preparing the claim")?;
            client
                .query(
                    &stmt,
                    &[
                        &((n - out.len()) as i64),
                        &self.cfg.instance,
                        &self.cfg.lease.as_secs_f64(),
                        &q.webhook_ids,
                        &q.held,
                        &q.blocked,
                        &(defaults.max_concurrency.min(i32::MAX as u32) as i32),
                        &(self.cfg.max_in_flight.min(i32::MAX as usize) as i32),
                        &(defaults.rate_per_sec.min(i32::MAX as u32) as i32),
                        &(free.saturating_sub(out.len()) as i64),
                        &(cfg.light() as i64),
                        &(cfg.reserve() as i64),
                        &(q.bytes_room - taken),
                        &(q.idle && out.is_empty()),
                    ],
                )
                .await
                .context("claiming due deliveries")
        }
        .await;
        let rows = match claimed {
            Ok(rows) => rows,
            Err(e) if out.is_empty() => return Err(e),
            // The limited claim's rows are ours: they go out.
            Err(e) => {
                tracing::warn!(
                    error = crate::logging::error_line(e.as_ref()),
                    "claiming deliveries failed; the limited webhooks' rows claimed before go out, the rest at the next claim"
                );
                return Ok(out);
            }
        };
        // Marker rows (no id) name the limited webhooks with rows due.
        let mut due_limited = Vec::new();
        let mut rows_claimed = Vec::with_capacity(rows.len());
        // The marker rows share the claimed rows' columns: found by name once.
        let cols = match rows.first() {
            Some(first) => Some(
                ClaimedColumns::find(first.columns())
                    .context("reading the claimed rows (a bug: CLAIM_SQL lacks a column)")?,
            ),
            None => None,
        };
        for r in rows {
            let Some(cols) = &cols else { break };
            match r.try_get::<_, Option<Uuid>>(cols.id) {
                Ok(None) => match r.try_get::<_, Uuid>(cols.webhook_id) {
                    Ok(w) if !first.contains(&w) => due_limited.push(w),
                    _ => {}
                },
                _ => rows_claimed.push(r),
            }
        }
        self.read_rows(&client, &rows_claimed, lease_deadline, &mut out)
            .await?;
        if !due_limited.is_empty() {
            if out.len() < n && out.len() < free {
                self.claim_limited(
                    &mut client,
                    &due_limited,
                    n,
                    free,
                    q,
                    lease_deadline,
                    &mut out,
                )
                .await;
            } else {
                self.limited_due = due_limited;
            }
        }
        if self.cache.len() > 10_000 {
            self.cache.clear();
        }
        let read: usize = out.iter().map(|c| c.payload.len()).sum();
        if read > LARGE_READ_BYTES {
            // Its read buffer grew to hold these rows and would stay that
            // large for the connection's life (per pooled connection):
            // closed, so the memory goes with it.
            drop(deadpool_postgres::Object::take(client));
        }
        Ok(out)
    }

    /// The limited claim of `webhooks` with the room `out` leaves of `n`
    /// rows and `free` slots. A failure is logged, not returned: rows the
    /// other claim took are ours and go out; these webhooks are tried again
    /// at the next claim.
    #[allow(clippy::too_many_arguments)]
    async fn claim_limited(
        &mut self,
        client: &mut deadpool_postgres::Client,
        webhooks: &[Uuid],
        n: usize,
        free: usize,
        q: &mut Quotas,
        lease_deadline: Instant,
        out: &mut Vec<Claimed>,
    ) {
        let cfg = self.admission.config();
        let defaults = cfg.defaults;
        let releases = self.admission.releases();
        let taken: i64 = out.iter().map(|c| c.payload.len() as i64).sum();
        let args = limits::ClaimArgs {
            n: n.saturating_sub(out.len()) as i64,
            instance: &self.cfg.instance,
            lease_secs: self.cfg.lease.as_secs_f64(),
            tracked_ids: &q.webhook_ids,
            tracked_held: &q.held,
            default_max_concurrency: defaults.max_concurrency.min(i32::MAX as u32) as i32,
            max_in_flight: self.cfg.max_in_flight.min(i32::MAX as usize) as i32,
            default_rate: defaults.rate_per_sec.min(i32::MAX as u32) as i32,
            free: free.saturating_sub(out.len()) as i64,
            light: cfg.light() as i64,
            reserve: cfg.reserve() as i64,
            bytes_room: q.bytes_room - taken,
            idle: q.idle && out.is_empty(),
        };
        let limited = match limits::claim(client, webhooks, &args).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(
                    error = crate::logging::error_line(e.as_ref()),
                    webhooks = webhooks.len(),
                    "claiming the deliveries of rate- or concurrency-limited webhooks failed; trying again at the next claim"
                );
                return;
            }
        };
        let before = out.len();
        if let Err(e) = self
            .read_rows(client, &limited.rows, lease_deadline, out)
            .await
        {
            tracing::error!(
                error = crate::logging::error_line(e.as_ref()),
                "reading limited claimed rows"
            );
        }
        for (id, blocked) in limited.outcomes {
            let claimed = out[before..].iter().filter(|c| c.webhook.id == id).count();
            self.admission
                .limited_outcome(id, claimed, blocked, releases);
        }
        self.admission.apply_hold_offs(q);
    }

    /// Decodes claimed rows into `out`. A row that cannot be read ends alone
    /// (failed, saying why); the others go out as claimed.
    async fn read_rows(
        &mut self,
        client: &deadpool_postgres::Client,
        rows: &[tokio_postgres::Row],
        lease_deadline: Instant,
        out: &mut Vec<Claimed>,
    ) -> Result<()> {
        let Some(first) = rows.first() else {
            return Ok(());
        };
        // Every row of one statement has its columns: found by name once.
        let cols = ClaimedColumns::find(first.columns())
            .context("reading the claimed rows (a bug: CLAIM_SQL lacks a column)")?;
        let mut unreadable: Vec<(Uuid, String)> = Vec::new();
        for r in rows.iter() {
            match self.decode(&cols, r, lease_deadline) {
                Ok(c) => out.push(c),
                Err(u) => match col::<Uuid>(r, cols.id) {
                    Ok(id) => {
                        tracing::warn!(delivery_id = %id, error = %u, "a claimed delivery cannot be read; it fails without being sent");
                        unreadable.push((id, format!("not sent: this delivery's row cannot be read: {u}; correct the row, then replay it (`retry {id}`)")));
                    }
                    // Without its id the row cannot be fenced: its lease
                    // expires and the rescuer ends it after its retries.
                    Err(e) => {
                        tracing::error!(error = %e, "a claimed delivery without a readable id")
                    }
                },
            }
        }
        if !unreadable.is_empty() {
            if let Err(e) = fail_unreadable(client, &self.cfg.instance, &unreadable).await {
                tracing::error!(error = crate::logging::error_line(e.as_ref()), deliveries = unreadable.len(),
                    "cannot fail the unreadable deliveries; their leases will expire and the rescuer returns them");
            }
        }
        Ok(())
    }

    /// One claimed row, every column read without panicking; the webhook
    /// decoded once per version (rows of one webhook share it).
    fn decode(
        &mut self,
        cols: &ClaimedColumns,
        r: &tokio_postgres::Row,
        lease_deadline: Instant,
    ) -> Result<Claimed, Unreadable> {
        let webhook_id: Uuid = col(r, cols.webhook_id)?;
        // Only compared (the cache key), never computed with: any value
        // PostgreSQL holds will do, `infinity` included.
        let updated_at: Timestamp = col(r, cols.webhook_updated_at)?;
        let previous: Option<&str> = col(r, cols.previous_secret)?;
        let previous_key: Option<&[u8]> = col(r, cols.previous_signing_key)?;
        let live = (previous.is_some(), previous_key.is_some());
        let webhook = match self.cache.get(&webhook_id) {
            Some((at, prev, w)) if *at == updated_at && *prev == live => w.clone(),
            _ => {
                let w = Arc::new(cols.webhook(r)?);
                self.cache.insert(webhook_id, (updated_at, live, w.clone()));
                w
            }
        };
        cols.claimed(r, webhook, lease_deadline)
    }
}

/// Where each column of a claimed row is ([`claimed_row_sql`]), found by
/// name once per statement so each row is read by index.
#[derive(Debug, Clone)]
pub struct ClaimedColumns {
    id: usize,
    webhook_id: usize,
    event_type: usize,
    payload: usize,
    attempts: usize,
    inserted_at: usize,
    url: usize,
    secret: usize,
    previous_secret: usize,
    signing_key: usize,
    signing_public_key: usize,
    previous_signing_key: usize,
    previous_signing_public_key: usize,
    headers: usize,
    enabled: usize,
    deleted: usize,
    disabled_reason: usize,
    retry_schedule_secs: usize,
    rate_limit_per_sec: usize,
    max_concurrency: usize,
    format: usize,
    site_domain: usize,
    webhook_updated_at: usize,
    locked_until: usize,
}

impl ClaimedColumns {
    /// The columns of a statement ending in [`claimed_row_sql`]; Err names
    /// the one missing.
    pub fn find(columns: &[tokio_postgres::Column]) -> Result<Self> {
        let at = |name: &str| position(columns, name);
        Ok(Self {
            id: at("id")?,
            webhook_id: at("webhook_id")?,
            event_type: at("event_type")?,
            payload: at("payload")?,
            attempts: at("attempts")?,
            inserted_at: at("inserted_at")?,
            url: at("url")?,
            secret: at("secret")?,
            previous_secret: at("previous_secret")?,
            signing_key: at("signing_key")?,
            signing_public_key: at("signing_public_key")?,
            previous_signing_key: at("previous_signing_key")?,
            previous_signing_public_key: at("previous_signing_public_key")?,
            headers: at("headers")?,
            enabled: at("enabled")?,
            deleted: at("deleted")?,
            disabled_reason: at("disabled_reason")?,
            retry_schedule_secs: at("retry_schedule_secs")?,
            rate_limit_per_sec: at("rate_limit_per_sec")?,
            max_concurrency: at("max_concurrency")?,
            format: at("format")?,
            site_domain: at("site_domain")?,
            webhook_updated_at: at("webhook_updated_at")?,
            locked_until: at("locked_until")?,
        })
    }

    /// The delivery of a row, with its (already decoded) webhook.
    pub fn claimed(
        &self,
        r: &tokio_postgres::Row,
        webhook: Arc<WebhookInfo>,
        lease_deadline: Instant,
    ) -> Result<Claimed, Unreadable> {
        Ok(Claimed {
            id: col(r, self.id)?,
            event_type: col(r, self.event_type)?,
            payload: col(r, self.payload)?,
            attempt: col(r, self.attempts)?,
            // The envelope's timestamp: it must be a real time (sql/0004
            // refuses others at insert; this is for a row that got past it).
            inserted_at: col(r, self.inserted_at)?,
            lease_deadline,
            lease: col(r, self.locked_until)?,
            webhook,
        })
    }

    /// The webhook of a row.
    pub fn webhook(&self, r: &tokio_postgres::Row) -> Result<WebhookInfo, Unreadable> {
        let id: Uuid = col(r, self.webhook_id)?;
        let url: String = col(r, self.url)?;
        let secret: String = col(r, self.secret)?;
        let previous: Option<String> = col(r, self.previous_secret)?;
        let headers: serde_json::Value = col(r, self.headers)?;
        let mut secrets = vec![secret];
        secrets.extend(previous);
        let mut signing_keys = Vec::new();
        for (seed, public) in [
            (self.signing_key, self.signing_public_key),
            (self.previous_signing_key, self.previous_signing_public_key),
        ] {
            let seed: Option<Vec<u8>> = col(r, seed)?;
            let public: Option<Vec<u8>> = col(r, public)?;
            signing_keys.extend(seed.zip(public));
        }
        Ok(WebhookInfo {
            id,
            uri: url.parse().ok(),
            url,
            headers: WebhookInfo::parse_headers(&headers),
            secrets,
            signing_keys,
            enabled: col(r, self.enabled)?,
            deleted: col(r, self.deleted)?,
            disabled_reason: col(r, self.disabled_reason)?,
            // The table's constraint keeps this a flat array of positive numbers;
            // should a row still hold something else, use the global schedule
            // rather than fail the whole claim.
            retry_schedule: match r.try_get::<_, Option<Vec<i32>>>(self.retry_schedule_secs) {
                Ok(v) => v.map(|v| v.into_iter().map(|s| s.max(1) as u32).collect()),
                Err(e) => {
                    tracing::warn!(webhook_id = %id, error = %e, "unreadable retry_schedule_secs; using the configured schedule");
                    None
                }
            },
            rate_limit_per_sec: col::<Option<i32>>(r, self.rate_limit_per_sec)?.map(|v| v as u32),
            max_concurrency: col::<Option<i32>>(r, self.max_concurrency)?.map(|v| v as u32),
            format: col(r, self.format)?,
            site_domain: col(r, self.site_domain)?,
        })
    }
}

/// Ends claimed rows that cannot be read: `failed` with the reason, and the
/// attempt the claim counted logged with it (no request was made; the
/// webhook's health is not touched, the receiver did nothing wrong).
const FAIL_UNREADABLE_SQL: &str = "
WITH r AS (
    SELECT * FROM unnest($1::uuid[], $2::text[]) AS r(id, error)
), l AS (
    -- As the completer: the lease rows this claim holds carry the rows on.
    DELETE FROM webhook_deliveries_leases l
    USING r
    WHERE l.delivery_id = r.id AND l.locked_by = $3
    RETURNING l.delivery_id, l.attempt, r.error
), f AS (
    UPDATE webhook_deliveries d SET
        status = 'failed', attempts = l.attempt, locked_by = NULL, locked_until = NULL,
        last_response_code = NULL, last_error = l.error, finished_at = now()
    FROM l
    WHERE d.id = l.delivery_id
    RETURNING d.id, d.attempts, l.error
)
INSERT INTO webhook_delivery_attempts (delivery_id, attempt, error, duration_ms, attempted_at, instance)
SELECT f.id, f.attempts, f.error, 0, now(), $3 FROM f";

async fn fail_unreadable(
    client: &deadpool_postgres::Client,
    instance: &str,
    rows: &[(Uuid, String)],
) -> Result<()> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let errors: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    client
        .execute(FAIL_UNREADABLE_SQL, &[&ids, &errors, &instance])
        .await
        .context("failing unreadable deliveries")?;
    Ok(())
}
