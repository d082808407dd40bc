//! The queue in `webhook_deliveries`: claiming due rows under a lease
//! (`claimer`), writing outcomes in batches fenced by the lease holder
//! (`completer`), returning expired leases (`rescuer`) and pruning old rows
//! (`cleaner`). Each service is one loop with the same start/stop shape.

pub mod admission;
pub mod claimer;
pub mod cleaner;
pub mod completer;
pub mod rescuer;

use std::sync::Arc;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::Uri;
use time::OffsetDateTime;
use uuid::Uuid;

/// A webhook as the claim saw it (shared by the rows of one batch).
pub struct WebhookInfo {
    pub id: Uuid,
    pub site_domain: String,
    pub url: String,
    /// None when the stored URL does not parse (the delivery fails with that reason).
    pub uri: Option<Uri>,
    /// Err: why the stored headers cannot be sent (the delivery fails with it).
    pub headers: Result<HeaderMap, String>,
    /// Signing secrets as stored: the current one first, then a previous one
    /// still in its grace window. The queue carries them as text; the delivery
    /// derives its keys from them (`delivery::signing`), so the queue never
    /// depends on the layer above it.
    pub secrets: Vec<String>,
    pub enabled: bool,
    pub deleted: bool,
    pub disabled_reason: Option<String>,
    pub retry_schedule: Option<Vec<u32>>,
    pub rate_limit_per_sec: Option<u32>,
    pub max_concurrency: Option<u32>,
}

impl WebhookInfo {
    /// Custom headers from the stored JSON object. One that cannot be sent
    /// (the table's constraint refuses such rows, but older rows or another
    /// writer may hold one) is an error naming it: the delivery then fails
    /// saying why, rather than going out without the header.
    pub fn parse_headers(json: &serde_json::Value) -> Result<HeaderMap, String> {
        let mut map = HeaderMap::new();
        let Some(obj) = json.as_object() else {
            return Err(
                "the webhook's headers are not a JSON object: not sent; fix them and replay".into(),
            );
        };
        for (k, v) in obj {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                format!("custom header name {k:?} is not a valid HTTP header name: not sent; fix the webhook's headers and replay")
            })?;
            let value = v
                .as_str()
                .ok_or(())
                .and_then(|s| HeaderValue::from_bytes(s.as_bytes()).map_err(|_| ()))
                .map_err(|_| {
                    format!("custom header {k:?} has a value HTTP cannot carry (control characters, or not a string): not sent; fix the webhook's headers and replay")
                })?;
            map.append(name, value);
        }
        Ok(map)
    }
}

/// What a delivery in flight holds until its outcome is written: one of the
/// instance's delivery slots and one of its webhook's (see `admission`).
pub struct Slot {
    // Fields drop in order: the webhook's count is released before the
    // delivery slot, so a claimer woken by the slot sees it.
    pub webhook: admission::WebhookSlot,
    pub delivery: tokio::sync::OwnedSemaphorePermit,
}

/// One claimed delivery, ready to send.
pub struct Claimed {
    pub id: Uuid,
    /// 1-based number of this attempt (counted at claim).
    pub attempt: i32,
    pub event_type: String,
    /// The row's payload as jsonb text.
    pub payload: String,
    pub inserted_at: OffsetDateTime,
    /// The claim's `locked_until`: the fence token its completion must match.
    pub lease: OffsetDateTime,
    /// When the lease ends, on this process's clock.
    pub lease_deadline: std::time::Instant,
    pub webhook: Arc<WebhookInfo>,
}

/// The final word on one claimed delivery, written by the completer.
#[derive(Debug, Clone)]
pub struct Completion {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub attempt: i32,
    /// The claim this outcome belongs to (its `locked_until`).
    pub lease: OffsetDateTime,
    pub status: Status,
    /// For `Pending`: when to try again, from now.
    pub retry_in_ms: Option<i64>,
    /// An HTTP attempt was made (false for deferrals and unsent deliveries).
    pub counted: bool,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub response_body: Option<String>,
    pub duration_ms: i32,
    pub attempted_at: OffsetDateTime,
    /// Disable the webhook with this reason (410 Gone).
    pub disable_webhook: Option<String>,
}

impl Completion {
    /// What this outcome counts as in `deliveries_total`, and its attempt's
    /// duration when an HTTP attempt was made.
    pub fn metric(&self) -> (crate::metrics::DeliveryOutcome, Option<std::time::Duration>) {
        use crate::metrics::DeliveryOutcome as O;
        let outcome = match (self.status, self.counted) {
            (Status::Success, _) => O::Success,
            (Status::Pending, true) => O::Retry,
            (Status::Pending, false) => O::Deferred,
            (Status::Failed, true) => O::Failed,
            (Status::Failed, false) => O::NotSent,
        };
        let attempt = self
            .counted
            .then(|| std::time::Duration::from_millis(self.duration_ms.max(0) as u64));
        (outcome, attempt)
    }
}

/// The lease holder's name: host:pid:random, unique per process, so a
/// restarted process never passes the completion fence of its previous
/// incarnation's claims.
pub fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!("{host}:{}:{:04x}", std::process::id(), fastrand::u16(..))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Success,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Success => "success",
            Status::Failed => "failed",
        }
    }
}
