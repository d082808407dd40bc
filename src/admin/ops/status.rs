//! The queue at a glance, per webhook, for operators without Prometheus
//! (`plausible-webhooks status`).

use serde::Serialize;
use uuid::Uuid;

use crate::admin::access::{self, Access, Principal};
use crate::admin::core::Admin;
use crate::admin::error::{db, OpResult};
use crate::admin::inputs::SiteRef;

/// One webhook's part of the queue, as every instance left it.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookStatus {
    pub webhook_id: Uuid,
    pub name: String,
    /// The site's domain (as in every output: docs/api.md#names).
    pub site_id: String,
    pub plausible_site_id: i64,
    /// The webhook's `status`, as a webhook object has it: `active`,
    /// `failing` (its last deliveries failed), `disabled` or `deleted`.
    pub status: String,
    pub consecutive_failures: i32,
    /// Pending and due now (first tries and retries).
    pub due: i64,
    /// Pending after a failed attempt, due or not.
    pub retrying: i64,
    /// Pending, not due yet (a retry's wait, or a limit's).
    pub waiting: i64,
    /// Being sent by some instance now.
    pub delivering: i64,
    pub delivered_last_hour: i64,
    pub failed_last_hour: i64,
    /// How long the oldest due delivery has waited, in seconds (None: none due).
    pub oldest_due_secs: Option<f64>,
}

/// Per webhook (deleted ones only while they still have deliveries pending
/// or in flight). Pending rows are counted over the claim's index; the
/// last hour's outcomes over the webhook's rows, which retention bounds.
const STATUS_SQL: &str = "
SELECT w.id, w.name, s.domain, s.id,
       CASE WHEN w.deleted_at IS NOT NULL THEN 'deleted'
            WHEN NOT w.enabled THEN 'disabled'
            WHEN w.consecutive_failures > 0 THEN 'failing'
            ELSE 'active' END,
       w.consecutive_failures,
       p.due, p.retrying, p.waiting, l.delivering, h.delivered, h.failed, p.oldest
FROM webhooks w
JOIN sites s ON s.id = w.site_id
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE d.next_attempt_at <= now()) AS due,
           count(*) FILTER (WHERE d.attempts > 0) AS retrying,
           count(*) FILTER (WHERE d.next_attempt_at > now()) AS waiting,
           extract(epoch FROM now() - min(d.next_attempt_at) FILTER (WHERE d.next_attempt_at <= now()))::float8 AS oldest
    -- Queued: a ready row (sql/0020); the wide row for its attempts so far.
    FROM webhook_deliveries_ready q JOIN webhook_deliveries d ON d.id = q.delivery_id
    WHERE q.webhook_id = w.id) p
CROSS JOIN LATERAL (
    SELECT count(*) AS delivering FROM webhook_deliveries_leases x WHERE x.webhook_id = w.id) l
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE d.status = 'success') AS delivered,
           count(*) FILTER (WHERE d.status = 'failed') AS failed
    FROM webhook_deliveries d
    WHERE d.webhook_id = w.id AND d.finished_at > now() - interval '1 hour') h
WHERE ($1::int8 IS NULL OR w.site_id = $1)
  AND ($2::int8[] IS NULL OR w.site_id = ANY($2))
  AND (w.deleted_at IS NULL OR p.due + p.waiting + l.delivering > 0)
ORDER BY s.domain, w.name, w.id";

/// `{"status": [...]}`: what `status --json` prints, a list under its name
/// as every list is.
#[derive(Debug, Clone, Serialize)]
pub struct StatusList {
    pub status: Vec<WebhookStatus>,
}

impl Admin {
    /// The queue per webhook, of one site or of every site `who` may read.
    pub async fn status(&self, who: &Principal, site: Option<&SiteRef>) -> OpResult<StatusList> {
        let db_ = self.db().await?;
        let site_id = match site {
            Some(s) => Some(access::site(&db_, who, s, Access::Read).await?.id),
            None => None,
        };
        let sites = access::readable_sites(&db_, who).await?;
        let rows = db(
            db_.query(STATUS_SQL, &[&site_id, &sites]).await,
            "reading the queue",
        )?;
        Ok(StatusList {
            status: rows
                .iter()
                .map(|r| WebhookStatus {
                    webhook_id: r.get(0),
                    name: r.get(1),
                    site_id: r.get(2),
                    plausible_site_id: r.get(3),
                    status: r.get(4),
                    consecutive_failures: r.get(5),
                    due: r.get(6),
                    retrying: r.get(7),
                    waiting: r.get(8),
                    delivering: r.get(9),
                    delivered_last_hour: r.get(10),
                    failed_last_hour: r.get(11),
                    oldest_due_secs: r.get(12),
                })
                .collect(),
        })
    }
}
