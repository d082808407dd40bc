//! The delivery of one claimed message, top to bottom: the gate (may it be
//! sent, may it be sent now), the signed request, the POST, what the answer
//! means (`classify`) and what the retry policy makes of it, one log line,
//! and the outcome for the completer. Everything it needs came with the
//! claim: no database here, so a delivery waits on nothing but its receiver.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::Uri;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::chat::{self, Format};
use super::client::{HttpClient, HttpResponse, SendError};
use super::envelope::envelope;
use super::retry::{AttemptResult, RetryPolicy, Verdict};
use super::signing::{
    asymmetric_signature, legacy_signature, standard_signature, KeyCache, KeyPairCache, SecretKeys,
};
use crate::queue::{Attempt, Claimed, Completion, FailureKind};

/// How soon a delivery this host could not send (no file descriptor) is
/// due again.
pub const LOCAL_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

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
    /// The ed25519 key pairs of the webhooks that sign with them.
    pub key_pairs: KeyPairCache,
    /// Cancelled at shutdown: deliveries not yet sent go back to the queue.
    pub stopping: CancellationToken,
    /// `plausible.base_url`: chat messages link the site's dashboard.
    pub plausible_base_url: String,
}

/// Why a claimed delivery goes no further than the gate.
enum Held {
    /// Not sent, and never will be as the webhook stands: final, no attempt
    /// counted.
    NotSent(String),
    /// Shutdown came first: back to the queue, due now.
    Deferred,
}

/// What the gate lets through: the parts of the webhook a request is made of.
struct Sendable<'a> {
    uri: &'a Uri,
    custom_headers: &'a HeaderMap,
}

/// The request as it goes out: the signed bytes are exactly the bytes sent.
struct Signed {
    headers: HeaderMap,
    body: Bytes,
    /// The instant the signatures carry (`webhook-timestamp`).
    attempted_at: OffsetDateTime,
}

/// What the answer, or its absence, means: for the retry policy, the log
/// line and the attempt log.
struct Classified {
    result: AttemptResult,
    status_code: Option<i32>,
    error: Option<String>,
    error_kind: Option<FailureKind>,
    response_body: Option<String>,
}

impl Worker {
    /// Sends `job`; its payload is taken (freed once the body is built, so
    /// a large one is not held twice while its request is in flight).
    pub async fn deliver(&self, job: &mut Claimed) -> Completion {
        let payload = std::mem::take(&mut job.payload);
        let job = &*job;
        let ready = match self.gate(job) {
            Ok(ready) => ready,
            Err(Held::NotSent(why)) => return not_sent(job, why),
            Err(Held::Deferred) => return Completion::deferred(job),
        };
        let signed = match self.sign(job, payload, ready.custom_headers) {
            Ok(signed) => signed,
            Err(why) => return not_sent(job, why),
        };
        let started = Instant::now();
        let sent = self
            .client
            .post(ready.uri, signed.headers, signed.body)
            .await;
        let duration_ms = started.elapsed().as_millis().min(i32::MAX as u128) as i32;
        if let Err(e) = &sent {
            if e.kind == FailureKind::LocalResources {
                let why = format!(
                    "not sent: this host ran out of file descriptors ({e}); sent again in {} s, \
                     no attempt counted (raise LimitNOFILE, or lower delivery.max_in_flight)",
                    LOCAL_RETRY.as_secs()
                );
                tracing::warn!(webhook_id = %job.webhook.id, delivery_id = %job.id, event = %job.event_type,
                    attempt = job.attempt, error = %e, "delivery not sent: this host is out of file descriptors; it is sent again shortly, its attempt not counted");
                return Completion::local(job, log_text(&why), LOCAL_RETRY);
            }
        }
        let format = Format::from_stored(&job.webhook.format);
        let answer = self.classify(&sent, ready.custom_headers, format);
        let verdict = self.policy.decide(
            job.attempt,
            job.webhook.retry_schedule.as_deref(),
            &answer.result,
        );
        log_attempt(
            job,
            answer.status_code,
            duration_ms,
            &verdict,
            answer.error.as_deref(),
            &sent,
        );
        let attempt = Attempt {
            status_code: answer.status_code,
            error: answer.error,
            error_kind: answer.error_kind,
            response_body: answer.response_body,
            duration_ms,
            attempted_at: signed.attempted_at,
        };
        match verdict {
            Verdict::Success => Completion::delivered(job, attempt),
            Verdict::Retry(after) => Completion::retry(job, attempt, after),
            Verdict::Fail => Completion::failed(job, attempt),
            Verdict::FailAndDisable(why) => Completion::gone(job, attempt, why),
        }
    }

    /// May it be sent, and may it be sent now.
    fn gate<'a>(&self, job: &'a Claimed) -> Result<Sendable<'a>, Held> {
        let wh = &job.webhook;
        if wh.deleted {
            return Err(Held::NotSent("webhook deleted: not sent".into()));
        }
        if !wh.enabled {
            return Err(Held::NotSent(format!(
                "webhook disabled ({}): not sent; enable the webhook and replay to send",
                wh.disabled_reason.as_deref().unwrap_or("by an operator")
            )));
        }
        let Some(uri) = &wh.uri else {
            return Err(Held::NotSent(
                // Not the URL itself: paths often carry tokens (Slack-style hooks).
                "the webhook URL cannot be parsed: not sent; fix the URL and replay".into(),
            ));
        };
        let custom_headers = match &wh.headers {
            Ok(h) => h,
            Err(why) => return Err(Held::NotSent(why.clone())),
        };
        // The webhook's limits were applied when the row was claimed
        // (queue::admission): what is claimed may go now.
        if self.stopping.is_cancelled() {
            return Err(Held::Deferred);
        }
        Ok(Sendable {
            uri,
            custom_headers,
        })
    }

    /// The body and its signatures, with the webhook's own headers. Err:
    /// why it cannot be signed as the webhook says (never sent unsigned).
    fn sign(
        &self,
        job: &Claimed,
        payload: String,
        custom_headers: &HeaderMap,
    ) -> Result<Signed, String> {
        let wh = &job.webhook;
        let id = job.id.to_string();
        let body = Bytes::from(self.body(job, &payload));
        let attempted_at = OffsetDateTime::now_utc();
        let ts = attempted_at.unix_timestamp();
        let keys: Vec<Arc<SecretKeys>> = wh.secrets.iter().map(|s| self.keys.get(s)).collect();
        // A pair whose halves disagree (written by hand: the table cannot
        // tell) does not sign; without the current one nothing is sent.
        let mut pairs = Vec::with_capacity(wh.signing_keys.len());
        for (i, (seed, public)) in wh.signing_keys.iter().enumerate() {
            match self.key_pairs.get(seed, public) {
                Some(p) => pairs.push(p),
                None if i == 0 => {
                    return Err("the webhook's ed25519 private key does not belong to its \
                                public key: not sent; `rotate-key` gives it a new key pair, \
                                then replay"
                        .into())
                }
                None => {}
            }
        }
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
        let mut signature = standard_signature(keys.iter().map(|k| &**k), &id, ts, &body);
        asymmetric_signature(&mut signature, pairs.iter().map(|p| &**p), &id, ts, &body);
        headers.insert(WEBHOOK_SIGNATURE.clone(), unique_header(signature));
        Ok(Signed {
            headers,
            body,
            attempted_at,
        })
    }

    /// The bytes sent: the envelope, or the chat service's message the
    /// webhook's format names (`chat`), made from the same stored payload.
    pub fn body(&self, job: &Claimed, payload: &str) -> Vec<u8> {
        let wh = &job.webhook;
        let format = Format::from_stored(&wh.format);
        let ctx = chat::Context {
            event: &job.event_type,
            site: &wh.site_domain,
            at: job.inserted_at,
            plausible_base_url: &self.plausible_base_url,
        };
        match chat::render(format, &ctx, payload) {
            Some(message) => message,
            None => envelope(
                &job.id,
                &job.event_type,
                &wh.site_domain,
                job.inserted_at,
                payload,
            ),
        }
    }

    /// For a chat format, the message as people will read it (plain text);
    /// None for the envelope.
    pub fn preview(&self, job: &Claimed, payload: &str) -> Option<String> {
        let wh = &job.webhook;
        let format = Format::from_stored(&wh.format);
        (format != Format::Standard).then(|| {
            chat::preview(
                &chat::Context {
                    event: &job.event_type,
                    site: &wh.site_domain,
                    at: job.inserted_at,
                    plausible_base_url: &self.plausible_base_url,
                },
                payload,
            )
        })
    }

    /// The receiver's answer, or why none came, in the attempt log's terms.
    fn classify(
        &self,
        sent: &Result<HttpResponse, SendError>,
        custom_headers: &HeaderMap,
        format: Format,
    ) -> Classified {
        match sent {
            Ok(r) => {
                // Redacted before it is cut, so a cut cannot split a value
                // and leave its start unrecognised: read as far as the
                // longest value could reach past the cut.
                let longest = custom_headers.values().map(|v| v.len()).max();
                let read = r
                    .body
                    .len()
                    .min(self.response_log_max + longest.unwrap_or(0));
                let text = redact(
                    &log_text(&String::from_utf8_lossy(&r.body[..read])),
                    custom_headers,
                );
                let text = cut(text, self.response_log_max);
                let error = match r.status {
                    200..=299 => None,
                    300..=399 => Some(format!(
                        "HTTP {} (redirects are not followed; update the webhook URL)",
                        r.status
                    )),
                    // A chat service says which part of the message it
                    // refused: named, so the fix is plain from the log.
                    s @ 400..=499 if format != Format::Standard => {
                        match chat::refusal(format, &r.body[..read]) {
                            Some(why) => Some(format!(
                                "HTTP {s}: {} refused the message: {}",
                                format.label(),
                                redact(&log_text(&why), custom_headers)
                            )),
                            None => Some(format!("HTTP {s}")),
                        }
                    }
                    s => Some(format!("HTTP {s}")),
                };
                Classified {
                    result: AttemptResult::Response {
                        status: r.status,
                        retry_after: r.retry_after,
                    },
                    status_code: Some(i32::from(r.status)),
                    error_kind: error.is_some().then_some(FailureKind::HttpStatus),
                    error,
                    response_body: Some(text),
                }
            }
            Err(e) => Classified {
                result: if e.lasting {
                    AttemptResult::Lasting
                } else {
                    AttemptResult::Transport
                },
                status_code: None,
                error: Some(log_text(&e.to_string())),
                error_kind: Some(e.kind),
                response_body: None,
            },
        }
    }
}

/// Custom header values shorter than this are not looked for in a
/// response: too short to be a credential, and replacing every `1` or `yes`
/// would only garble the answer.
const REDACT_MIN: usize = 6;

/// `text` with every custom header value the receiver echoed (the whole
/// value, and each word of it: `Bearer <token>` echoed as the token alone)
/// replaced by the header's name, for everyone who reads the attempt log:
/// the values are often credentials, and whoever may read the log may not
/// see them. A value's start left at the very end (the receiver's answer
/// was cut at the read limit) goes too.
fn redact(text: &str, custom_headers: &HeaderMap) -> String {
    let mut secrets: Vec<(&str, &str)> = Vec::new();
    for (name, value) in custom_headers {
        let Ok(v) = value.to_str() else { continue };
        secrets.push((name.as_str(), v));
        secrets.extend(v.split_whitespace().map(|w| (name.as_str(), w)));
    }
    secrets.retain(|(_, v)| v.len() >= REDACT_MIN);
    // The longest first: a whole value goes before the words inside it.
    secrets.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    let mut out = text.to_string();
    for (name, v) in &secrets {
        if out.contains(v) {
            out = out.replace(v, &format!("[value of header {name}]"));
        }
    }
    for (name, v) in &secrets {
        let tail = (REDACT_MIN..v.len())
            .rev()
            .filter(|&n| v.is_char_boundary(n))
            .find(|&n| out.ends_with(&v[..n]));
        if let Some(n) = tail {
            out.truncate(out.len() - n);
            out.push_str(&format!("[value of header {name}]"));
        }
    }
    out
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let end = (0..=max)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(end);
    }
    text
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
    sent: &Result<HttpResponse, SendError>,
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
