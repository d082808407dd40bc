//! `/metrics`: samples the queue from the database at each scrape (so the
//! gauges are right whichever instance did the work), records the sample in
//! the process-wide registry (`crate::metrics`) and encodes it.

use anyhow::{Context, Result};
use axum::body::Body;
use axum::response::Response;
use hyper::header::{HeaderValue, CONTENT_TYPE};

use super::state::{AdminState, DB_CHECK_TIMEOUT};
use crate::metrics::{self, QueueSample};

/// Counts rows by status and the oldest due row's age. The pending and
/// delivering counts are the ready and lease rows (sql/0020: an in-flight
/// delivery's own row still says `pending`); counting finished rows scans
/// them, which retention keeps bounded.
pub async fn sample_queue(db: &tokio_postgres::Client) -> Result<QueueSample> {
    let rows = db
        .query(
            "SELECT status, count(*) FROM webhook_deliveries
             WHERE status IN ('success', 'failed') GROUP BY status
             UNION ALL SELECT 'pending', count(*) FROM webhook_deliveries_ready
             UNION ALL SELECT 'delivering', count(*) FROM webhook_deliveries_leases",
            &[],
        )
        .await
        .context("counting deliveries by status")?;
    let age: f64 = db
        .query_one(
            // Per webhook over the claim's index (webhook_id, next_attempt_at):
            // the oldest due row is the first of some webhook's range.
            "SELECT coalesce(extract(epoch FROM now() - min(x.next_attempt_at))::float8, 0)
             FROM webhooks w CROSS JOIN LATERAL (
                 SELECT p.next_attempt_at FROM webhook_deliveries_ready p
                 WHERE p.webhook_id = w.id AND p.next_attempt_at <= now()
                 ORDER BY p.next_attempt_at LIMIT 1) x",
            &[],
        )
        .await
        .context("finding the oldest due delivery")?
        .get(0);
    Ok(QueueSample {
        by_status: rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        oldest_due_age_secs: age.max(0.0),
    })
}

pub async fn response(state: &AdminState) -> Response {
    let sample = tokio::time::timeout(DB_CHECK_TIMEOUT, async {
        let client = state
            .pool()
            .get()
            .await
            .context("connecting to PostgreSQL")?;
        sample_queue(&client).await
    })
    .await;
    let sample = match sample {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(
                error = crate::logging::error_line(e.as_ref()),
                "metrics: cannot sample the queue"
            );
            None
        }
        Err(_) => None,
    };
    metrics::record_sample(sample.as_ref(), *state.listener_up.borrow());
    let mut resp = Response::new(Body::from(metrics::encode()));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    resp
}
