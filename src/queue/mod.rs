//! The queue in `webhook_deliveries`: claiming due rows under a lease
//! (`claimer`; `limits` for webhooks whose limits hold deployment-wide,
//! `admission` for what each claim may take, `claim_sql` for the SQL both
//! claims share), writing outcomes in batches fenced by the lease holder
//! (`completer`), returning expired leases (`rescuer`) and pruning old rows
//! (`cleaner`). Each service is one loop with the same start/stop shape.

pub mod admission;
pub mod claim_sql;
pub mod claimer;
pub mod cleaner;
pub mod completer;
pub mod limits;
pub mod rescuer;

use std::sync::Arc;
use std::time::Duration;

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
    /// ed25519 keys as stored, (32-byte seed, 32-byte public key): the
    /// current one first, then a previous one still in its grace window.
    /// Empty when the webhook signs with HMAC only.
    pub signing_keys: Vec<(Vec<u8>, Vec<u8>)>,
    pub enabled: bool,
    pub deleted: bool,
    pub disabled_reason: Option<String>,
    pub retry_schedule: Option<Vec<u32>>,
    pub rate_limit_per_sec: Option<u32>,
    pub max_concurrency: Option<u32>,
    /// What the receiver takes (`webhooks.format`): `standard`, or a chat
    /// service's name; the delivery layer makes the body from it.
    pub format: String,
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

/// The final word on one claimed delivery, written by the completer: which
/// claim it belongs to, and what came of it.
#[derive(Debug, Clone)]
pub struct Completion {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub attempt: i32,
    /// The claim this outcome belongs to (its `locked_until`).
    pub lease: OffsetDateTime,
    pub outcome: Outcome,
}

/// What came of a claimed delivery. Each variant carries only what it needs;
/// the completer turns it into columns in one place (`completer::Columns`),
/// so status, retry time, attempt counting and webhook disabling cannot
/// disagree.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered(Attempt),
    /// Attempted and failed; sent again `after` from now.
    Retry { attempt: Attempt, after: Duration },
    /// Attempted and failed for good (no retry left, or one that cannot help).
    Failed(Attempt),
    /// Attempted; the receiver said the endpoint is gone (410): failed for
    /// good, and the webhook is disabled with `reason`.
    Gone { attempt: Attempt, reason: String },
    /// Not sent because shutdown came first: back to the queue, due now,
    /// without counting an attempt.
    Deferred,
    /// Not sent and never will be as the webhook stands (deleted, disabled, a
    /// URL or header that cannot be sent): final, no attempt counted.
    NotSent { why: String },
    /// Not sent for a failure of this host (no file descriptor left): back
    /// to the queue, due `after` from now, with `why` as its last error; no
    /// attempt counted, nothing held against the webhook.
    Local { why: String, after: Duration },
}

/// The facts of one HTTP attempt, as the attempt log keeps them.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub status_code: Option<i32>,
    /// Why the attempt failed, in words for the operator.
    pub error: Option<String>,
    /// What kind of failure `error` is, for code (and for the operator to
    /// filter on): never derived from the words.
    pub error_kind: Option<FailureKind>,
    /// The start of the receiver's answer.
    pub response_body: Option<String>,
    pub duration_ms: i32,
    pub attempted_at: OffsetDateTime,
}

impl Completion {
    fn of(job: &Claimed, outcome: Outcome) -> Self {
        Self {
            id: job.id,
            webhook_id: job.webhook.id,
            attempt: job.attempt,
            lease: job.lease,
            outcome,
        }
    }

    pub fn delivered(job: &Claimed, attempt: Attempt) -> Self {
        Self::of(job, Outcome::Delivered(attempt))
    }

    pub fn retry(job: &Claimed, attempt: Attempt, after: Duration) -> Self {
        Self::of(job, Outcome::Retry { attempt, after })
    }

    pub fn failed(job: &Claimed, attempt: Attempt) -> Self {
        Self::of(job, Outcome::Failed(attempt))
    }

    pub fn gone(job: &Claimed, attempt: Attempt, reason: String) -> Self {
        Self::of(job, Outcome::Gone { attempt, reason })
    }

    pub fn deferred(job: &Claimed) -> Self {
        Self::of(job, Outcome::Deferred)
    }

    pub fn not_sent(job: &Claimed, why: String) -> Self {
        Self::of(job, Outcome::NotSent { why })
    }

    pub fn local(job: &Claimed, why: String, after: Duration) -> Self {
        Self::of(job, Outcome::Local { why, after })
    }

    /// What this outcome counts as in `deliveries_total`, and its attempt's
    /// duration when an HTTP attempt was made.
    pub fn metric(&self) -> (crate::metrics::DeliveryOutcome, Option<Duration>) {
        use crate::metrics::DeliveryOutcome as O;
        let outcome = match &self.outcome {
            Outcome::Delivered(_) => O::Success,
            Outcome::Retry { .. } => O::Retry,
            Outcome::Failed(_) | Outcome::Gone { .. } => O::Failed,
            Outcome::Deferred | Outcome::Local { .. } => O::Deferred,
            Outcome::NotSent { .. } => O::NotSent,
        };
        let took = self
            .outcome
            .attempt()
            .map(|a| Duration::from_millis(a.duration_ms.max(0) as u64));
        (outcome, took)
    }
}

impl Outcome {
    /// The HTTP attempt, when one was made.
    pub fn attempt(&self) -> Option<&Attempt> {
        match self {
            Outcome::Delivered(a)
            | Outcome::Failed(a)
            | Outcome::Retry { attempt: a, .. }
            | Outcome::Gone { attempt: a, .. } => Some(a),
            Outcome::Deferred | Outcome::NotSent { .. } | Outcome::Local { .. } => None,
        }
    }

    /// The row goes back to `pending` (so the next due time changes).
    pub fn requeues(&self) -> bool {
        matches!(
            self,
            Outcome::Retry { .. } | Outcome::Deferred | Outcome::Local { .. }
        )
    }
}

/// Why an HTTP attempt failed, as a kind: stored with the attempt
/// (`webhook_delivery_attempts.error_kind`) and mapped by the code that
/// explains failures, so nothing has to read the error's words. The queue
/// owns it because the attempt log does; the delivery layer produces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The receiver answered, with a status that is not 2xx.
    HttpStatus,
    /// The address guard refused the host's address (before any connect).
    RefusedAddress,
    /// The host name did not resolve.
    Dns,
    /// Nothing accepted the TCP connection.
    ConnectionRefused,
    /// The TCP connection was not established within the connect timeout.
    ConnectTimeout,
    /// The TLS handshake failed (certificate, protocol, alert).
    Tls,
    /// No answer within the request timeout.
    Timeout,
    /// The connection closed before the answer was complete.
    ConnectionClosed,
    /// The request could not be built from the stored webhook.
    Request,
    /// Any other transport failure.
    Connection,
    /// This host had no file descriptor for the request (its failure, not
    /// the receiver's: no attempt is counted).
    LocalResources,
}

impl FailureKind {
    pub const ALL: [FailureKind; 11] = [
        FailureKind::HttpStatus,
        FailureKind::RefusedAddress,
        FailureKind::Dns,
        FailureKind::ConnectionRefused,
        FailureKind::ConnectTimeout,
        FailureKind::Tls,
        FailureKind::Timeout,
        FailureKind::ConnectionClosed,
        FailureKind::Request,
        FailureKind::Connection,
        FailureKind::LocalResources,
    ];

    /// The stored name (`error_kind`). Never rename one: old rows keep it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::HttpStatus => "http_status",
            FailureKind::RefusedAddress => "refused_address",
            FailureKind::Dns => "dns",
            FailureKind::ConnectionRefused => "connection_refused",
            FailureKind::ConnectTimeout => "connect_timeout",
            FailureKind::Tls => "tls",
            FailureKind::Timeout => "timeout",
            FailureKind::ConnectionClosed => "connection_closed",
            FailureKind::Request => "request",
            FailureKind::Connection => "connection",
            FailureKind::LocalResources => "local_resources",
        }
    }

    /// The kind a stored name stands for (None for a name this build does
    /// not know, e.g. written by a newer one).
    pub fn from_stored(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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

/// A delivery row's status as the completer writes it.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_kind_reads_back_from_its_stored_name() {
        for k in FailureKind::ALL {
            assert_eq!(FailureKind::from_stored(k.as_str()), Some(k));
        }
        assert_eq!(FailureKind::from_stored("from a newer build"), None);
    }
}
