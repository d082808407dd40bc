//! The delivery log (list, follow, show), retry and replay; and a delivery
//! named by its id alone, as the CLI takes it.

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use tokio_postgres::Client;
use utoipa::ToSchema;
use uuid::Uuid;

use super::page::{bad_cursor, page_size};
use super::webhook_view::{view, WebhookView};
use crate::admin::access::{self, Access, Owned, Principal};
use crate::admin::core::Admin;
use crate::admin::error::{db, OpError, OpResult};
use crate::admin::inputs::{given, DeliveryQuery, ReplayInput, RetryInput};
use crate::admin::validate::{self, Checks, Invalid, Rule};
use crate::db::{Timestamp, NOTIFY_CHANNEL};

/// Rows made due again per statement by `replay` (bounded locks).
pub const REPLAY_BATCH: i64 = 5_000;
/// What one poll of `deliveries list --follow` reads at most.
pub const FOLLOW_MAX: i64 = 10_000;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub event_type: String,
    /// pending | retrying | delivering | success | failed
    pub status: String,
    pub attempts: i32,
    /// `infinity` (never due) is a value a writer may give it, so it is
    /// read as PostgreSQL holds it (`infinity` in JSON and in the CLI).
    #[schema(value_type = String)]
    pub next_attempt_at: Timestamp,
    pub last_response_code: Option<i32>,
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub delivered_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub inserted_at: OffsetDateTime,
    pub trigger_id: Option<Uuid>,
}

/// A delivery as the log shows it. In flight is a lease row (sql/0020: the
/// delivery's own row keeps `pending` and the attempts recorded so far), and
/// the attempt under way is counted, as the claim counts it.
macro_rules! delivery_fields {
    () => {
        "
    d.id, d.webhook_id, d.event_type,
    CASE WHEN l.delivery_id IS NOT NULL THEN 'delivering'
         WHEN d.status = 'pending' AND d.attempts > 0 THEN 'retrying' ELSE d.status END,
    coalesce(l.attempt, d.attempts), d.next_attempt_at, d.last_response_code, d.last_error, d.delivered_at,
    d.finished_at, d.inserted_at, d.trigger_id"
    };
}
const DELIVERY_COLUMNS: &str = concat!(
    delivery_fields!(),
    "
FROM webhook_deliveries d LEFT JOIN webhook_deliveries_leases l ON l.delivery_id = d.id"
);

fn delivery_view(r: &tokio_postgres::Row) -> DeliveryView {
    DeliveryView {
        id: r.get(0),
        webhook_id: r.get(1),
        event_type: r.get(2),
        status: r.get(3),
        attempts: r.get(4),
        next_attempt_at: r.get(5),
        last_response_code: r.get(6),
        last_error: r.get(7),
        delivered_at: r.get(8),
        finished_at: r.get(9),
        inserted_at: r.get(10),
        trigger_id: r.get(11),
    }
}

pub const DELIVERY_STATUSES: &[&str] = &["pending", "retrying", "delivering", "success", "failed"];

/// `{"deliveries": [...], "next_cursor": ...}`: one page of the log, newest
/// first, as `GET /api/webhooks/:id/deliveries` and `deliveries list --json`
/// print it. `next_cursor` (null on the last page) fetches the next one.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryPage {
    pub deliveries: Vec<DeliveryView>,
    pub next_cursor: Option<String>,
}

/// The page cursor: the last delivery's (inserted_at, id), opaque to clients.
fn encode_cursor(at: OffsetDateTime, id: Uuid) -> String {
    format!("{}_{}", at.unix_timestamp_nanos(), id.simple())
}

fn decode_cursor(s: &str) -> Result<(OffsetDateTime, Uuid), Invalid> {
    let bad = bad_cursor;
    let (t, id) = s.trim().split_once('_').ok_or_else(bad)?;
    let t = OffsetDateTime::from_unix_timestamp_nanos(t.parse().map_err(|_| bad())?)
        .map_err(|_| bad())?;
    Ok((t, Uuid::parse_str(id).map_err(|_| bad())?))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttemptView {
    pub attempt: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub attempted_at: OffsetDateTime,
    pub status_code: Option<i32>,
    pub duration_ms: i32,
    pub error: Option<String>,
    /// What kind of failure `error` is (`queue::FailureKind`'s stored names:
    /// `dns`, `tls`, `refused_address`, `http_status`, ...), as stored; none
    /// for a success and for attempts logged before kinds were kept.
    pub error_kind: Option<String>,
    /// The start of the receiver's answer (as much as the daemon keeps).
    pub response_body: Option<String>,
    pub instance: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    pub delivery: DeliveryView,
    /// The payload as a JSON value; when it cannot be one here (nested
    /// deeper than a JSON parser follows, a number no f64 holds: jsonb takes
    /// both), its JSON text as stored, a string, with `payload_note` saying so.
    #[schema(value_type = Object)]
    pub payload: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_note: Option<String>,
    /// The headers an attempt is sent with, signatures left out, custom
    /// header values hidden (they often carry credentials); custom header
    /// names as the webhook has them now, `webhook-timestamp` each
    /// attempt's own (the seconds of its time).
    pub request_headers: Vec<(String, String)>,
    pub attempt_log: Vec<AttemptView>,
}

/// The stored payload (jsonb text) for display: parsed when serde_json can
/// (its recursion limit keeps a deep one from exhausting the stack), else
/// the text itself with a note. The text is what the receiver gets as `data`.
fn shown_payload(text: String) -> (Value, Option<String>) {
    match serde_json::from_str(&text) {
        Ok(v) => (v, None),
        Err(e) => (
            Value::String(text),
            Some(format!(
                "the payload cannot be shown as a JSON value here ({e}); `payload` is its JSON text exactly as stored, which receivers get as `data`"
            )),
        ),
    }
}

/// A delivery, by its webhook and its own id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryRef {
    pub webhook: Uuid,
    pub id: Uuid,
}

/// Wakes every daemon: an UPDATE that makes a row due sends no NOTIFY (only
/// INSERT does), and without one the backstop poll would be seconds late.
async fn notify(db_: &Client) -> OpResult<()> {
    db(
        db_.execute("SELECT pg_notify($1, '')", &[&NOTIFY_CHANNEL])
            .await,
        "notifying the daemon",
    )?;
    Ok(())
}

/// Deliveries of a disabled or deleted webhook would only fail unsent.
fn sendable(w: &WebhookView) -> OpResult<()> {
    if w.deleted_at.is_some() {
        return Err(OpError::Conflict(format!(
            "webhook {} is deleted; restore it first",
            w.id
        )));
    }
    if !w.enabled {
        return Err(OpError::Conflict(format!(
            "webhook {} is {}; enable it first (CLI `enable`, API PATCH with \"enabled\": true), then retry",
            w.id,
            w.status_text()
        )));
    }
    Ok(())
}

/// The sites to read the log of: none more when one webhook is named
/// (its access checked), else every site `who` may read.
async fn scope(db_: &Client, who: &Principal, webhook: Option<Uuid>) -> OpResult<Option<Vec<i64>>> {
    match webhook {
        Some(w) => access::webhook(db_, who, w, Access::Read)
            .await
            .map(|_| None),
        None => access::readable_sites(db_, who).await,
    }
}

/// A filter's time: RFC 3339, or a duration ago.
fn time_of(
    c: &mut Checks,
    field: &str,
    raw: Option<&str>,
    now: OffsetDateTime,
) -> Option<Option<OffsetDateTime>> {
    c.optional(raw, |r| validate::since(field, r, now))
}

/// The headers a delivery is sent with, as shown: the daemon's own
/// (`delivery::worker` sets them; signatures left out), then the custom
/// ones by name.
fn request_headers(d: &DeliveryView, custom: &Value) -> Vec<(String, String)> {
    let mut out = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        (
            "User-Agent".to_string(),
            crate::https::USER_AGENT_VALUE.to_string(),
        ),
        ("webhook-id".to_string(), d.id.to_string()),
        (
            "webhook-timestamp".to_string(),
            "each attempt's time, in Unix seconds".to_string(),
        ),
    ];
    if let Some(o) = custom.as_object() {
        for k in o.keys() {
            out.push((k.clone(), "(value not shown)".to_string()));
        }
    }
    out
}

/// A delivery and its attempts, read as they stand.
async fn detail(db_: &Client, id: Uuid) -> OpResult<DeliveryDetail> {
    let row = db(
        db_.query_opt(
            &format!(
                "SELECT {}, d.payload::text
                 FROM webhook_deliveries d LEFT JOIN webhook_deliveries_leases l ON l.delivery_id = d.id
                 WHERE d.id = $1",
                delivery_fields!()
            ),
            &[&id],
        )
        .await,
        "reading the delivery",
    )?
    .ok_or_else(|| {
        OpError::NotFound(format!(
            "no delivery {id} (it may have been pruned after retention.days)"
        ))
    })?;
    let attempts = db(
        db_.query(
            "SELECT attempt, attempted_at, status_code, duration_ms, error, error_kind, response_body, instance
             FROM webhook_delivery_attempts WHERE delivery_id = $1 ORDER BY attempt, id",
            &[&id],
        )
        .await,
        "reading the attempts",
    )?;
    let (payload, payload_note) = shown_payload(row.get(12));
    let delivery = delivery_view(&row);
    let custom: Value = db(
        db_.query_one(
            "SELECT headers FROM webhooks WHERE id = $1",
            &[&delivery.webhook_id],
        )
        .await,
        "reading the webhook's headers",
    )?
    .get(0);
    Ok(DeliveryDetail {
        request_headers: request_headers(&delivery, &custom),
        delivery,
        payload,
        payload_note,
        attempt_log: attempts
            .iter()
            .map(|a| AttemptView {
                attempt: a.get("attempt"),
                attempted_at: a.get("attempted_at"),
                status_code: a.get("status_code"),
                duration_ms: a.get("duration_ms"),
                error: a.get("error"),
                error_kind: a.get("error_kind"),
                response_body: a.get("response_body"),
                instance: a.get("instance"),
            })
            .collect(),
    })
}

const REPLAY_WHERE: &str = "
    d.webhook_id = $1 AND d.inserted_at >= $2 AND d.inserted_at < coalesce($3::timestamptz, 'infinity')
    AND (d.status = 'failed' OR ($4 AND d.status = 'success'))
    AND ($5::text IS NULL OR d.event_type = $5)
    AND coalesce(d.finished_at, '-infinity') <= $6::timestamptz";

/// Deliveries of one hour that ended, by outcome.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HourCount {
    #[serde(with = "time::serde::rfc3339")]
    pub hour: OffsetDateTime,
    pub success: i64,
    pub failed: i64,
}

/// `{"hours": [...]}`: the last 24 hours of a webhook's outcomes, the
/// oldest first, every hour present.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryStats {
    pub hours: Vec<HourCount>,
}

/// How many hours `delivery_stats` covers.
pub const STATS_HOURS: i32 = 24;

impl Admin {
    /// The webhook's deliveries that ended in each of the last 24 hours, by
    /// outcome (over the webhook's rows, which retention bounds).
    pub async fn delivery_stats(&self, who: &Principal, webhook: Uuid) -> OpResult<DeliveryStats> {
        let db_ = self.db().await?;
        access::webhook(&db_, who, webhook, Access::Read).await?;
        let rows = db(
            db_.query(
                "SELECT h.hour,
                        count(d.id) FILTER (WHERE d.status = 'success'),
                        count(d.id) FILTER (WHERE d.status = 'failed')
                 FROM generate_series(date_trunc('hour', now()) - make_interval(hours => $2 - 1),
                                      date_trunc('hour', now()), interval '1 hour') h(hour)
                 LEFT JOIN webhook_deliveries d
                   ON d.webhook_id = $1 AND d.finished_at >= h.hour AND d.finished_at < h.hour + interval '1 hour'
                 GROUP BY h.hour ORDER BY h.hour",
                &[&webhook, &STATS_HOURS],
            )
            .await,
            "counting the webhook's outcomes",
        )?;
        Ok(DeliveryStats {
            hours: rows
                .iter()
                .map(|r| HourCount {
                    hour: r.get(0),
                    success: r.get(1),
                    failed: r.get(2),
                })
                .collect(),
        })
    }

    /// The delivery `given` (its full id), among those `who` may read.
    pub async fn resolve_delivery(&self, who: &Principal, given: &str) -> OpResult<DeliveryRef> {
        let id = Uuid::parse_str(given.trim()).map_err(|_| {
            Invalid::new(
                "delivery",
                Rule::Syntax,
                format!(
                    "`{}` is not a delivery id (the full id, as `deliveries list` prints it)",
                    access::quote(given)
                ),
            )
        })?;
        let db_ = self.db().await?;
        let missing = || {
            OpError::NotFound(format!(
                "no delivery {id} (it may have been pruned after retention.days)"
            ))
        };
        let webhook: Uuid = db(
            db_.query_opt(
                "SELECT webhook_id FROM webhook_deliveries WHERE id = $1",
                &[&id],
            )
            .await,
            "looking up the delivery",
        )?
        .ok_or_else(missing)?
        .get(0);
        // One the caller may not read is not told apart from one that is gone.
        access::webhook(&db_, who, webhook, Access::Read)
            .await
            .map_err(|e| match e {
                OpError::NotFound(_) => missing(),
                e => e,
            })?;
        Ok(DeliveryRef { webhook, id })
    }

    /// One page of the log, the newest first: of one webhook, or of every
    /// webhook `who` may read.
    pub async fn list_deliveries(
        &self,
        who: &Principal,
        webhook: Option<Uuid>,
        q: &DeliveryQuery,
    ) -> OpResult<DeliveryPage> {
        let now = OffsetDateTime::now_utc();
        let mut c = Checks::default();
        let status = given(&q.status);
        if let Some(s) = status {
            if !DELIVERY_STATUSES.contains(&s) {
                c.refuse(Invalid::new(
                    "status",
                    Rule::Syntax,
                    format!(
                        "`{}` is not a status; use one of {}",
                        access::quote(s),
                        DELIVERY_STATUSES.join(", ")
                    ),
                ));
            }
        }
        let event = given(&q.event);
        if let Some(e) = event {
            c.check(validate::no_nul("event", e));
        }
        let since = time_of(&mut c, "since", given(&q.since), now);
        let limit = page_size(&mut c, q.limit.as_ref());
        let after = c.optional(given(&q.cursor), decode_cursor);
        c.done()?;
        let (since, limit, after) = (
            since.expect("checked"),
            limit.expect("checked"),
            after.expect("checked"),
        );
        let db_ = self.db().await?;
        let sites = scope(&db_, who, webhook).await?;
        let rows = db(
            db_.query(
                &format!(
                    "SELECT {DELIVERY_COLUMNS}
                     WHERE ($1::uuid IS NULL OR d.webhook_id = $1)
                       AND ($2::text IS NULL
                            OR ($2 = 'pending' AND d.status = 'pending' AND d.attempts = 0 AND l.delivery_id IS NULL)
                            OR ($2 = 'retrying' AND d.status = 'pending' AND d.attempts > 0 AND l.delivery_id IS NULL)
                            OR ($2 = 'delivering' AND l.delivery_id IS NOT NULL)
                            OR ($2 IN ('success', 'failed') AND d.status = $2))
                       AND ($3::text IS NULL OR d.event_type = $3)
                       AND ($4::timestamptz IS NULL OR d.inserted_at >= $4)
                       AND ($6::timestamptz IS NULL OR d.inserted_at < $6
                            OR (d.inserted_at = $6 AND d.id > $7))
                       AND ($8::bigint[] IS NULL OR d.webhook_id IN (
                            SELECT w.id FROM webhooks w WHERE w.site_id = ANY($8)))
                     ORDER BY d.inserted_at DESC, d.id
                     LIMIT $5"
                ),
                &[
                    &webhook,
                    &status,
                    &event,
                    &since,
                    // One more than the page: tells whether another page follows.
                    &(limit + 1),
                    &after.map(|a| a.0),
                    &after.map(|a| a.1),
                    &sites,
                ],
            )
            .await,
            "listing deliveries",
        )?;
        let mut deliveries: Vec<DeliveryView> = rows.iter().map(delivery_view).collect();
        let more = deliveries.len() as i64 > limit;
        deliveries.truncate(limit as usize);
        let next_cursor = more
            .then(|| {
                deliveries
                    .last()
                    .map(|d| encode_cursor(d.inserted_at, d.id))
            })
            .flatten();
        Ok(DeliveryPage {
            deliveries,
            next_cursor,
        })
    }

    /// The database's time now: where following the log starts.
    pub async fn log_clock(&self) -> OpResult<OffsetDateTime> {
        let db_ = self.db().await?;
        Ok(db(
            db_.query_one("SELECT clock_timestamp()", &[]).await,
            "reading the time",
        )?
        .get(0))
    }

    /// Deliveries created or finished after `after` (the database's clock),
    /// the earliest first, and the database's time of this read (the next
    /// `after`). What `deliveries list --follow` polls; it reads the
    /// webhook's rows (or every readable one) once per call, so it is for a
    /// person watching, not a script.
    pub async fn deliveries_changed(
        &self,
        who: &Principal,
        webhook: Option<Uuid>,
        after: OffsetDateTime,
    ) -> OpResult<(Vec<DeliveryView>, OffsetDateTime)> {
        let db_ = self.db().await?;
        let sites = scope(&db_, who, webhook).await?;
        let now: OffsetDateTime = db(
            db_.query_one("SELECT clock_timestamp()", &[]).await,
            "reading the time",
        )?
        .get(0);
        let rows = db(
            db_.query(
                &format!(
                    "SELECT {DELIVERY_COLUMNS}
                     WHERE ($1::uuid IS NULL OR d.webhook_id = $1)
                       AND ((d.inserted_at > $2 AND d.inserted_at <= $3)
                            OR (d.finished_at > $2 AND d.finished_at <= $3))
                       AND ($4::bigint[] IS NULL OR d.webhook_id IN (
                            SELECT w.id FROM webhooks w WHERE w.site_id = ANY($4)))
                     ORDER BY coalesce(d.finished_at, d.inserted_at), d.id
                     LIMIT {FOLLOW_MAX}"
                ),
                &[&webhook, &after, &now, &sites],
            )
            .await,
            "following deliveries",
        )?;
        Ok((rows.iter().map(delivery_view).collect(), now))
    }

    /// A delivery with every attempt.
    pub async fn show_delivery(&self, who: &Principal, d: DeliveryRef) -> OpResult<DeliveryDetail> {
        let db_ = self.db().await?;
        access::owned(&db_, who, d.webhook, Owned::Delivery(d.id), Access::Read).await?;
        detail(&db_, d.id).await
    }

    /// Makes one delivery due now, on the same delivery id (so the receiver
    /// can dedupe by `webhook-id`), with a new attempt number. A failed
    /// delivery gets one more attempt (not a fresh schedule); a success is
    /// sent again only with `force`; a delivery in flight is left alone.
    pub async fn retry_delivery(
        &self,
        who: &Principal,
        r: DeliveryRef,
        input: RetryInput,
    ) -> OpResult<DeliveryView> {
        let force = input.force;
        let db_ = self.db().await?;
        access::owned(&db_, who, r.webhook, Owned::Delivery(r.id), Access::Manage).await?;
        let d = detail(&db_, r.id).await?.delivery;
        sendable(&view(&**db_, r.webhook).await?)?;
        match d.status.as_str() {
            "delivering" => {
                return Err(OpError::Conflict(format!(
                    "delivery {} is being sent right now; wait for its outcome",
                    d.id
                )))
            }
            "success" if !force => {
                return Err(OpError::Conflict(format!(
                    "delivery {} already succeeded; to send it again (same webhook-id) ask with force (CLI --force, API \"force\": true)",
                    d.id
                )))
            }
            _ => {}
        }
        let row = db(
            db_.query_opt(
                &format!(
                    "WITH u AS (
                        -- A finished row made `pending` is queued by the table's
                        -- trigger (sql/0020); one in flight is left to its lease.
                        UPDATE webhook_deliveries d SET status = 'pending', next_attempt_at = now(), finished_at = NULL
                        WHERE d.id = $1 AND (d.status IN ('pending', 'failed') OR (d.status = 'success' AND $2))
                          AND NOT EXISTS (SELECT 1 FROM webhook_deliveries_leases x WHERE x.delivery_id = d.id)
                        RETURNING d.*
                     ), queued AS (
                        -- A pending row is due now if it is still queued (a claim
                        -- may have taken it since: then it is on its way).
                        UPDATE webhook_deliveries_ready q SET next_attempt_at = now()
                        FROM u WHERE q.delivery_id = u.id
                     )
                     SELECT {}",
                    DELIVERY_COLUMNS.replace("webhook_deliveries d", "u d")
                ),
                &[&d.id, &force],
            )
            .await,
            "requeueing the delivery",
        )?;
        let Some(row) = row else {
            return Err(OpError::Conflict(format!(
                "delivery {} changed state meanwhile; look at it again",
                d.id
            )));
        };
        notify(&db_).await?;
        Ok(delivery_view(&row))
    }

    /// Makes a webhook's failed deliveries created since a time due again
    /// (and its successes too with `include_success`), in batches of
    /// REPLAY_BATCH, each followed by a NOTIFY. Each gets one more attempt
    /// on its own delivery id. Rows that finish again during the replay are
    /// not picked twice. A dry run counts them and lists the first.
    pub async fn replay(
        &self,
        who: &Principal,
        webhook: Uuid,
        r: ReplayInput,
    ) -> OpResult<Replayed> {
        let now = OffsetDateTime::now_utc();
        let mut c = Checks::default();
        let since = match given(&r.since) {
            Some(s) => c.check(validate::since("since", s, now)),
            None => c.check(Err(Invalid::new(
                "since",
                Rule::Required,
                "is required: an RFC 3339 time or a duration ago (2h)",
            ))),
        };
        let until = time_of(&mut c, "until", given(&r.until), now);
        let event = given(&r.event).map(str::to_string);
        if let Some(e) = &event {
            c.check(validate::no_nul("event", e));
        }
        c.done()?;
        let (since, until) = (since.expect("checked"), until.expect("checked"));
        let db_ = self.db().await?;
        access::webhook(&db_, who, webhook, Access::Manage).await?;
        let w = view(&**db_, webhook).await?;
        sendable(&w)?;
        let started: OffsetDateTime = db(
            db_.query_one("SELECT clock_timestamp()", &[]).await,
            "reading the time",
        )?
        .get(0);
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
            [&w.id, &since, &until, &r.include_success, &event, &started];
        if r.dry_run {
            let n: i64 = db(
                db_.query_one(
                    &format!("SELECT count(*) FROM webhook_deliveries d WHERE {REPLAY_WHERE}"),
                    &params,
                )
                .await,
                "counting deliveries to replay",
            )?
            .get(0);
            let rows = db(
                db_.query(
                    &format!(
                        "SELECT {DELIVERY_COLUMNS} WHERE {REPLAY_WHERE} ORDER BY d.inserted_at, d.id LIMIT {REPLAY_DRY_RUN_LIST}"
                    ),
                    &params,
                )
                .await,
                "listing deliveries to replay",
            )?;
            return Ok(Replayed {
                webhook_id: w.id,
                count: n as u64,
                dry_run: true,
                deliveries: Some(rows.iter().map(delivery_view).collect()),
            });
        }
        // Only finished rows are picked (re-checked under the lock): each,
        // made `pending`, is queued by the table's trigger (sql/0020).
        let sql = format!(
            "WITH c AS (
                SELECT d.id FROM webhook_deliveries d WHERE {REPLAY_WHERE}
                ORDER BY d.inserted_at LIMIT {REPLAY_BATCH} FOR UPDATE SKIP LOCKED)
             UPDATE webhook_deliveries d SET status = 'pending', next_attempt_at = now(), finished_at = NULL
             FROM c WHERE d.id = c.id"
        );
        let mut total = 0;
        loop {
            let n = db(db_.execute(&sql, &params).await, "requeueing deliveries")?;
            total += n;
            if n > 0 {
                notify(&db_).await?;
            }
            if (n as i64) < REPLAY_BATCH {
                break;
            }
        }
        Ok(Replayed {
            webhook_id: w.id,
            count: total,
            dry_run: false,
            deliveries: None,
        })
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Replayed {
    pub webhook_id: Uuid,
    /// Deliveries made due again (or, on a dry run, that would be).
    pub count: u64,
    pub dry_run: bool,
    /// On a dry run: the first `REPLAY_DRY_RUN_LIST` of them, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<Vec<DeliveryView>>,
}

/// How many deliveries a dry run lists (it counts them all).
pub const REPLAY_DRY_RUN_LIST: i64 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_refuses_junk() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_763_900_000_123_456_000).unwrap();
        let id = Uuid::new_v4();
        assert_eq!(decode_cursor(&encode_cursor(at, id)).unwrap(), (at, id));
        for junk in ["", "x", "1_y", "abc_0b0e7b3c9a4a4e3f8d6f0d1c2b3a4f5e"] {
            let e = decode_cursor(junk).unwrap_err();
            assert_eq!(
                (e.field.as_str(), e.rule),
                ("cursor", Rule::Syntax),
                "{junk}"
            );
        }
    }
}
