//! The claim's SQL that both claims share, the claimer's and the limited
//! one (`limits`): in a file of their own, as the claimer calls `limits`
//! and `limits` builds its statement from these, so neither imports the other.

/// The row a claimed delivery is read from (`d` holds the claimed rows):
/// shared by the claim and by the test send, which decode it alike, by
/// column name (`claimer::ClaimedColumns`).
macro_rules! claimed_row_sql {
    () => {
        "
SELECT d.id, d.webhook_id, d.event_type, d.payload::text AS payload, d.attempts, d.inserted_at,
       w.url, w.secret,
       CASE WHEN w.previous_secret_expires_at > now() THEN w.previous_secret END AS previous_secret,
       CASE WHEN w.signature <> 'hmac' THEN w.signing_key END AS signing_key,
       CASE WHEN w.signature <> 'hmac' THEN w.signing_public_key END AS signing_public_key,
       CASE WHEN w.signature <> 'hmac' AND w.previous_signing_key_expires_at > now()
            THEN w.previous_signing_key END AS previous_signing_key,
       CASE WHEN w.signature <> 'hmac' AND w.previous_signing_key_expires_at > now()
            THEN w.previous_signing_public_key END AS previous_signing_public_key,
       w.headers, w.enabled, w.deleted_at IS NOT NULL AS deleted, w.disabled_reason,
       w.retry_schedule_secs, w.rate_limit_per_sec, w.max_concurrency, w.format,
       coalesce(s.domain, '') AS site_domain, w.updated_at AS webhook_updated_at, d.locked_until
FROM d
JOIN webhooks w ON w.id = d.webhook_id
LEFT JOIN sites s ON s.id = w.site_id"
    };
}
pub(crate) use claimed_row_sql;

/// The claim's second half, shared with the limited claim
/// (`limits::LIMITED_CLAIM_SQL`): from `quota` (webhook_id, held, n: what
/// each webhook may take) to `claimed`, the rows taken. Each webhook offers
/// at most its `n` due rows; the offers are taken least-held first, and a
/// row that would take its webhook beyond its light share is taken only
/// while the reserve stays free after it. Candidates are read over the
/// ready rows' (webhook_id, next_attempt_at) index, so a backlog a limit
/// holds back is never read; they are chosen without locks; the lock
/// re-checks the ready row (another instance may have taken it meanwhile)
/// and skips rows already locked. A claimed delivery's ready row becomes its
/// lease row (sql/0020); its wide row is only read.
///
/// A row's payload is budgeted at the size the payload trigger measured
/// (`payload_bytes`, kept over 4096 bytes) or its stored size, whichever is
/// larger; rows are taken while the running sum fits $13 (the first one
/// always when nothing is in flight, $14).
macro_rules! claim_rows_sql {
    () => {
        "
cand AS (
    SELECT x.delivery_id AS id, x.next_attempt_at, x.bytes,
           q.held + row_number() OVER (PARTITION BY q.webhook_id ORDER BY x.next_attempt_at) AS holds
    FROM quota q
    CROSS JOIN LATERAL (
        SELECT p.delivery_id, p.next_attempt_at, p.bytes
        FROM webhook_deliveries_ready p
        WHERE p.webhook_id = q.webhook_id AND p.next_attempt_at <= now()
        ORDER BY p.next_attempt_at
        LIMIT GREATEST(q.n, 0)
    ) x
    WHERE q.n > 0
), pick AS (
    SELECT id FROM (
        SELECT id, holds,
               row_number() OVER o AS pos,
               sum(bytes) OVER o AS bytes_sum
        FROM cand
        WINDOW o AS (ORDER BY holds, next_attempt_at ROWS UNBOUNDED PRECEDING)
    ) r
    WHERE pos <= $1 AND (holds <= $11::int8 OR $10::int8 - pos >= $12::int8)
      AND (bytes_sum <= $13::int8 OR (pos = 1 AND $14::bool))
), c AS (
    SELECT delivery_id FROM webhook_deliveries_ready
    -- Re-checked on the row's latest version: another instance may have
    -- claimed it (then it is gone), or claimed, failed and rescheduled it,
    -- since the snapshot. By the primary key, whatever the estimates.
    WHERE delivery_id = ANY(ARRAY(SELECT id FROM pick)) AND next_attempt_at <= now()
    FOR UPDATE SKIP LOCKED
), taken AS (
    DELETE FROM webhook_deliveries_ready r
    WHERE r.delivery_id = ANY(ARRAY(SELECT delivery_id FROM c))
    RETURNING r.delivery_id
), claimed AS MATERIALIZED (
    -- The wide row is only read. A ready row whose delivery is not pending
    -- (written by hand) is dropped above and sends nothing.
    SELECT d.id, d.webhook_id, d.event_type, d.payload,
           -- At most the CHECK's 1000 (sql/0003), capped before adding: with
           -- the CHECK dropped, `attempts + 1` on a row at 2147483647 would
           -- overflow and fail every claim, for every site.
           LEAST(d.attempts, 999) + 1 AS attempts,
           d.inserted_at, now() + make_interval(secs => $3) AS locked_until
    FROM webhook_deliveries d
    WHERE d.id = ANY(ARRAY(SELECT delivery_id FROM taken)) AND d.status = 'pending'
      -- Nor one already in flight (a ready row written by hand beside a
      -- lease): its second lease would fail the whole claim. By key: as NOT
      -- EXISTS it was planned as a scan of every lease.
      AND d.id <> ALL(ARRAY(SELECT l.delivery_id FROM webhook_deliveries_leases l
                            WHERE l.delivery_id = ANY(ARRAY(SELECT delivery_id FROM taken))))
), leased AS (
    INSERT INTO webhook_deliveries_leases (delivery_id, webhook_id, locked_by, locked_until, attempt)
    SELECT id, webhook_id, $2, locked_until, attempts FROM claimed
)"
    };
}
pub(crate) use claim_rows_sql;
