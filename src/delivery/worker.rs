//! The delivery of one claimed message, top to bottom: may it be sent, may it
//! be sent now, build and sign the body, POST it, decide what the answer means,
//! log one line, and hand the outcome to the completer.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::client::{HttpClient, SendError};
use super::envelope::envelope;
use super::retry::{AttemptResult, RetryPolicy, Verdict};
use super::signing::{legacy_signature, standard_signature, KeyCache, SecretKeys};
use crate::queue::{Attempt, Claimed, Completion, FailureKind};

static X_WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("x-webhook-signature");
/// During a secret rotation, the legacy signature made with the previous
/// secret: the same grace `webhook-signature` gives with its second `v1,`.
static X_WEBHOOK_SIGNATURE_PREVIOUS: HeaderName =
    HeaderName::from_static("x-webhook-signature-previous");
static WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
static WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
static WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

pub struct Worker {
    pub client: HttpClient,
    pub policy: RetryPolicy,
    pub response_log_max: usize,
    /// The signing keys of the webhooks' secrets.
    pub keys: KeyCache,
    /// Cancelled at shutdown: deliveries not yet sent go back to the queue.
    pub stopping: CancellationToken,
}

impl Worker {
    pub async fn deliver(&self, job: &Claimed) -> Completion {
        let wh = &job.webhook;
        if wh.deleted {
            return not_sent(job, "webhook deleted: not sent".into());
        }
        if !wh.enabled {
            return not_sent(
                job,
                format!(
                    "webhook disabled ({}): not sent; enable the webhook and replay to send",
                    wh.disabled_reason.as_deref().unwrap_or("by an operator")
                ),
            );
        }
        let Some(uri) = &wh.uri else {
            return not_sent(
                job,
                // Not the URL itself: paths often carry tokens (Slack-style hooks).
                "the webhook URL cannot be parsed: not sent; fix the URL and replay".into(),
            );
        };
        let custom_headers = match &wh.headers {
            Ok(h) => h,
            Err(why) => return not_sent(job, why.clone()),
        };

        // The webhook's limits were applied when the row was claimed
        // (queue::admission): what is claimed may go now.
        if self.stopping.is_cancelled() {
            return Completion::deferred(job);
        }

        // The body and its signatures: the signed bytes are exactly the bytes sent.
        let id = job.id.to_string();
        let body = Bytes::from(envelope(
            &job.id,
            &job.event_type,
            &wh.site_domain,
            job.inserted_at,
            &job.payload,
        ));
        let attempted_at = OffsetDateTime::now_utc();
        let ts = attempted_at.unix_timestamp();
        let keys: Vec<Arc<SecretKeys>> = wh.secrets.iter().map(|s| self.keys.get(s)).collect();
        // Sized once for the custom headers, the five below and the client's
        // two (content type, user agent): grown from a clone, the map was
        // reallocated and rehashed twice per delivery (HeaderMap::try_grow in
        // the profile).
        let mut headers = HeaderMap::with_capacity(custom_headers.len() + 7);
        headers.extend(custom_headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        headers.insert(
            X_WEBHOOK_SIGNATURE.clone(),
            unique_header(legacy_signature(&keys[0], &body)),
        );
        if let Some(previous) = keys.get(1) {
            headers.insert(
                X_WEBHOOK_SIGNATURE_PREVIOUS.clone(),
                unique_header(legacy_signature(previous, &body)),
            );
        }
        headers.insert(WEBHOOK_ID.clone(), unique_header(id.clone()));
        headers.insert(WEBHOOK_TIMESTAMP.clone(), header(ts.to_string()));
        headers.insert(
            WEBHOOK_SIGNATURE.clone(),
            unique_header(standard_signature(
                keys.iter().map(|k| &**k),
                &id,
                ts,
                &body,
            )),
        );

        let started = Instant::now();
        let sent = self.client.post(uri, headers, body).await;
        let duration_ms = started.elapsed().as_millis().min(i32::MAX as u128) as i32;

        let (result, code, error, response_body, error_kind) = match &sent {
            Ok(r) => {
                let text = log_text(&String::from_utf8_lossy(
                    &r.body[..r.body.len().min(self.response_log_max)],
                ));
                let error = match r.status {
                    200..=299 => None,
                    300..=399 => Some(format!(
                        "HTTP {} (redirects are not followed; update the webhook URL)",
                        r.status
                    )),
                    s => Some(format!("HTTP {s}")),
                };
                let kind = error.is_some().then_some(FailureKind::HttpStatus);
                (
                    AttemptResult::Response {
                        status: r.status,
                        retry_after: r.retry_after,
                    },
                    Some(i32::from(r.status)),
                    error,
                    Some(text),
                    kind,
                )
            }
            Err(e) => (
                AttemptResult::Transport,
                None,
                Some(log_text(&e.to_string())),
                None,
                Some(e.kind),
            ),
        };
        let verdict = self
            .policy
            .decide(job.attempt, wh.retry_schedule.as_deref(), &result);
        log_attempt(job, code, duration_ms, &verdict, error.as_deref(), &sent);
        let attempt = Attempt {
            status_code: code,
            error,
            error_kind,
            response_body,
            duration_ms,
            attempted_at,
        };
        match verdict {
            Verdict::Success => Completion::delivered(job, attempt),
            Verdict::Retry(after) => Completion::retry(job, attempt, after),
            Verdict::Fail => Completion::failed(job, attempt),
            Verdict::FailAndDisable(why) => Completion::gone(job, attempt, why),
        }
    }
}

/// Text for the attempt log: PostgreSQL text cannot hold NUL, which a hostile
/// receiver may send; it becomes U+FFFD like any other invalid byte.
fn log_text(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

fn header(v: String) -> HeaderValue {
    HeaderValue::try_from(v).expect("signature headers are ASCII")
}

/// A value no other request repeats (the delivery id, the signatures),
/// marked so HTTP/2's HPACK sends it as a literal "never indexed": indexed,
/// each one entered both ends' header tables only to be evicted unused,
/// pushing out the headers that do repeat (HPACK encoding was ~5% of the
/// daemon's CPU in the burn-down profile). The bytes of the header
/// are unchanged; HTTP/1.1 ignores the mark.
fn unique_header(v: String) -> HeaderValue {
    let mut v = header(v);
    v.set_sensitive(true);
    v
}

fn log_attempt(
    job: &Claimed,
    code: Option<i32>,
    duration_ms: i32,
    verdict: &Verdict,
    error: Option<&str>,
    sent: &Result<super::client::HttpResponse, SendError>,
) {
    let status = code.unwrap_or(0);
    match verdict {
        Verdict::Success => tracing::info!(
            webhook_id = %job.webhook.id, delivery_id = %job.id, event = %job.event_type,
            attempt = job.attempt, status, duration_ms, "delivered"
        ),
        Verdict::Retry(d) => tracing::warn!(
            webhook_id = %job.webhook.id, delivery_id = %job.id, event = %job.event_type,
            attempt = job.attempt, status, duration_ms, retry_in_s = d.as_secs(),
            error = error.unwrap_or(""), "attempt failed; will retry"
        ),
        Verdict::Fail | Verdict::FailAndDisable(_) => tracing::warn!(
            webhook_id = %job.webhook.id, delivery_id = %job.id, event = %job.event_type,
            attempt = job.attempt, status, duration_ms, error = error.unwrap_or(""),
            refused = matches!(sent, Err(e) if e.kind == FailureKind::RefusedAddress),
            "delivery failed for good"
        ),
    }
}

/// Not sent and never will be: final, no attempt counted.
fn not_sent(job: &Claimed, why: String) -> Completion {
    tracing::warn!(webhook_id = %job.webhook.id, delivery_id = %job.id, event = %job.event_type, error = %why, "delivery not sent");
    Completion::not_sent(job, why)
}
