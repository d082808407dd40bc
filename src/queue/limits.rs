//! The limited claim: rows of webhooks whose limits hold deployment-wide
//! (their own `max_concurrency`, a rate limit: see `admission`), claimed in
//! one transaction of three statements.
//!
//! 1. [`LOCK_SQL`] locks the webhooks' state rows (`webhook_limit_state`,
//!    sql/0008), `FOR UPDATE SKIP LOCKED`: an instance never waits for
//!    another; a webhook another instance is claiming is skipped this round.
//! 2. [`LIMITED_CLAIM_SQL`], a new statement and so, in READ COMMITTED, a
//!    snapshot taken after the locks were granted: it sees every claim that
//!    an earlier holder of a lock committed. It counts each webhook's live
//!    leases (its lease rows with `locked_until` ahead: a crashed
//!    instance's stop counting when they expire), refills and spends its
//!    rate tokens, and claims. Counting in the statement that takes the lock
//!    would not do: its snapshot predates the lock, and two instances could
//!    both see "0 held" and both take the limit.
//! 3. [`REPORT_SQL`] says which webhooks are full or out of tokens, and when
//!    the next token comes, so the claimer holds them off instead of
//!    claiming again for nothing (see `admission`).
//!
//! Held deliveries are counted from the rows, never kept as a counter, so
//! nothing can leak. Tokens follow the database's clock
//! (`statement_timestamp()`, taken after the lock, so the holders of a
//! bucket see its times in order); the burst is one second's worth, so any
//! window of t seconds carries at most rate × (1 + t) requests.

use anyhow::{Context, Result};
use deadpool_postgres::Transaction;
use std::time::Duration;
use uuid::Uuid;

use super::admission::Blocked;
use super::claim_sql::{claim_rows_sql, claimed_row_sql};

/// Locks the state rows of the webhooks in $1 that no other instance holds,
/// making those missing (a webhook's first limited claim). A row made here is
/// this transaction's alone until it commits (another instance's insert of it
/// waits for that, then does nothing), so it counts as locked.
pub const LOCK_SQL: &str = "
WITH made AS (
    INSERT INTO webhook_limit_state (webhook_id)
    SELECT m.id FROM unnest($1::uuid[]) AS m(id)
    WHERE NOT EXISTS (SELECT 1 FROM webhook_limit_state s WHERE s.webhook_id = m.id)
      AND EXISTS (SELECT 1 FROM webhooks w WHERE w.id = m.id)
    ON CONFLICT DO NOTHING
    RETURNING webhook_id
), locked AS (
    SELECT s.webhook_id FROM webhook_limit_state s
    WHERE s.webhook_id = ANY($1::uuid[])
    FOR UPDATE SKIP LOCKED
)
SELECT webhook_id FROM locked UNION SELECT webhook_id FROM made";

/// The claim of the locked webhooks ($6), as fair as the other (see
/// `claimer::CLAIM_SQL`, whose parameters these are), with the limits
/// counted over every instance: the webhook's own max_concurrency against
/// its live leases; the default one (per instance) against this instance's
/// count ($4/$5); the rate against the bucket, refilled to now and capped
/// at one second's worth, then charged with what was claimed. A webhook
/// disabled or deleted since goes back to the other claim.
pub const LIMITED_CLAIM_SQL: &str = concat!(
    "
WITH tracked AS (
    SELECT * FROM unnest($4::uuid[], $5::int4[]) AS t(webhook_id, held)
), lim AS (
    SELECT w.id AS webhook_id, coalesce(t.held, 0) AS held, w.max_concurrency AS own_cap,
           r.rate, s.tokens AS stored, s.refilled_at
    FROM webhook_limit_state s
    JOIN webhooks w ON w.id = s.webhook_id
    LEFT JOIN tracked t ON t.webhook_id = w.id
    CROSS JOIN LATERAL (SELECT coalesce(w.rate_limit_per_sec, $9::int4) AS rate) r
    WHERE s.webhook_id = ANY($6::uuid[]) AND w.enabled AND w.deleted_at IS NULL
), quota AS (
    SELECT l.webhook_id, l.held, l.rate, b.tokens,
           LEAST(
               CASE WHEN l.own_cap IS NULL THEN $7::int4 - l.held
                    ELSE l.own_cap - (
                        SELECT count(*) FROM webhook_deliveries_leases x
                        WHERE x.webhook_id = l.webhook_id AND x.locked_until > statement_timestamp()) END,
               $8::int4 - l.held,
               CASE WHEN l.rate = 0 THEN $1::int8 ELSE GREATEST(floor(b.tokens), 0)::int8 END,
               GREATEST($11::int8 - l.held, 0) + GREATEST($10::int8 - $12::int8, 0),
               $1::int8) AS n
    FROM lim l
    CROSS JOIN LATERAL (
        SELECT CASE WHEN l.rate = 0 THEN NULL::float8
                    WHEN l.stored IS NULL OR l.refilled_at IS NULL THEN l.rate::float8
                    ELSE LEAST(l.rate::float8, l.stored + l.rate * GREATEST(
                        extract(epoch FROM statement_timestamp() - l.refilled_at)::float8, 0))
               END AS tokens
    ) b
),",
    claim_rows_sql!(),
    ", spend AS (
    UPDATE webhook_limit_state s
    SET tokens = q.tokens - (SELECT count(*) FROM claimed k WHERE k.webhook_id = q.webhook_id),
        refilled_at = GREATEST(statement_timestamp(), s.refilled_at)
    FROM quota q
    WHERE s.webhook_id = q.webhook_id AND q.rate > 0
), d AS (
    SELECT * FROM claimed
)",
    claimed_row_sql!()
);

/// After the claim, in its transaction (so it sees the claim's own rows):
/// for each locked webhook ($1), whether it is at its own max_concurrency
/// over every instance, and the seconds until its next whole token (NULL:
/// it has one, or no rate limit). $2 is the default rate.
pub const REPORT_SQL: &str = "
SELECT s.webhook_id,
       w.enabled AND w.deleted_at IS NULL AND w.max_concurrency IS NOT NULL
         AND (SELECT count(*) FROM webhook_deliveries_leases x
              WHERE x.webhook_id = s.webhook_id AND x.locked_until > statement_timestamp()) >= w.max_concurrency AS at_cap,
       CASE WHEN coalesce(w.rate_limit_per_sec, $2::int4) > 0 AND s.tokens < 1
            THEN (1 - s.tokens) / coalesce(w.rate_limit_per_sec, $2::int4) END AS next_token_secs
FROM webhook_limit_state s
JOIN webhooks w ON w.id = s.webhook_id
WHERE s.webhook_id = ANY($1::uuid[])";

/// The claim's parameters (as `claimer::CLAIM_SQL` takes them).
#[derive(Debug, Clone)]
pub struct ClaimArgs<'a> {
    /// Rows to claim at most.
    pub n: i64,
    pub instance: &'a str,
    pub lease_secs: f64,
    /// This instance's deliveries in flight, per webhook.
    pub tracked_ids: &'a [Uuid],
    pub tracked_held: &'a [i32],
    pub default_max_concurrency: i32,
    pub max_in_flight: i32,
    pub default_rate: i32,
    pub free: i64,
    pub light: i64,
    pub reserve: i64,
    pub bytes_room: i64,
    pub idle: bool,
}

/// What one limited claim did.
pub struct Limited {
    /// Claimed rows, as [`claimed_row_sql`] reads them.
    pub rows: Vec<tokio_postgres::Row>,
    /// Every webhook asked for, and why it may take no more now (None: it may).
    pub outcomes: Vec<(Uuid, Option<Blocked>)>,
}

/// Step 1: the webhooks of `webhooks` whose state rows this transaction now holds.
pub async fn lock(tx: &Transaction<'_>, webhooks: &[Uuid]) -> Result<Vec<Uuid>> {
    let stmt = tx.prepare_cached(LOCK_SQL).await?;
    let rows = tx
        .query(&stmt, &[&webhooks])
        .await
        .context("locking the limited webhooks' state")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Step 2: claims rows of the `locked` webhooks.
pub async fn claim_locked(
    tx: &Transaction<'_>,
    locked: &[Uuid],
    a: &ClaimArgs<'_>,
) -> Result<Vec<tokio_postgres::Row>> {
    let stmt = tx.prepare_cached(LIMITED_CLAIM_SQL).await?;
    tx.query(
        &stmt,
        &[
            &a.n,
            &a.instance,
            &a.lease_secs,
            &a.tracked_ids,
            &a.tracked_held,
            &locked,
            &a.default_max_concurrency,
            &a.max_in_flight,
            &a.default_rate,
            &a.free,
            &a.light,
            &a.reserve,
            &a.bytes_room,
            &a.idle,
        ],
    )
    .await
    .context("claiming limited webhooks' deliveries")
}

/// Step 3: why each locked webhook may take no more now.
pub async fn report(
    tx: &Transaction<'_>,
    locked: &[Uuid],
    default_rate: i32,
) -> Result<Vec<(Uuid, Option<Blocked>)>> {
    let stmt = tx.prepare_cached(REPORT_SQL).await?;
    let rows = tx
        .query(&stmt, &[&locked, &default_rate])
        .await
        .context("reading the limited webhooks' state")?;
    Ok(rows
        .iter()
        .map(|r| {
            let at_cap: Option<bool> = r.get(1);
            let next: Option<f64> = r.get(2);
            let blocked = if at_cap == Some(true) {
                Some(Blocked::Cap)
            } else {
                next.map(|s| Blocked::Rate(Duration::try_from_secs_f64(s).unwrap_or_default()))
            };
            (r.get(0), blocked)
        })
        .collect())
}

/// The three steps in one transaction, committed. Webhooks another instance
/// held come back `Blocked::Locked`.
pub async fn claim(
    client: &mut deadpool_postgres::Client,
    webhooks: &[Uuid],
    a: &ClaimArgs<'_>,
) -> Result<Limited> {
    let tx = client
        .transaction()
        .await
        .context("starting a limited claim")?;
    let locked = lock(&tx, webhooks).await?;
    let (rows, mut outcomes) = if locked.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let rows = claim_locked(&tx, &locked, a).await?;
        (rows, report(&tx, &locked, a.default_rate).await?)
    };
    tx.commit().await.context("committing a limited claim")?;
    for id in webhooks {
        if !locked.contains(id) {
            outcomes.push((*id, Some(Blocked::Locked)));
        }
    }
    Ok(Limited { rows, outcomes })
}
