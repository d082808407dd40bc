//! The test event: one delivery sent at once through the daemon's own
//! client, address guard and signing (`crate::admin::test_sender`),
//! recorded like any other; bounded per user, per site and in all
//! (`crate::admin::test_slots`).

use std::sync::Arc;
use std::time::Instant;

use time::OffsetDateTime;

use anyhow::Context as _;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::webhook_view::view;
use crate::admin::access::{self, Access, Principal};
use crate::admin::catalog::test_payload;
use crate::admin::core::Admin;
use crate::admin::error::{db, OpError, OpResult};
use crate::admin::validate::{Invalid, Rule};
use crate::delivery::signing::SigningKey;
use crate::queue::claimer::ClaimedColumns;
use crate::queue::completer::{self, Completer};
use crate::queue::{Claimed, FailureKind, Outcome, WebhookInfo};

/// Why a test did not succeed, for the operator (and the API's clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TestCause {
    Ok,
    HttpStatus,
    Dns,
    RefusedAddress,
    Tls,
    Timeout,
    ConnectionRefused,
    Connection,
    NotSent,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TestResult {
    pub delivery_id: Uuid,
    pub webhook_id: Uuid,
    pub url: String,
    pub success: bool,
    pub cause: TestCause,
    pub status_code: Option<i32>,
    pub duration_ms: i32,
    pub error: Option<String>,
    /// The start of the receiver's answer.
    pub response_body: Option<String>,
    /// What to do about it.
    pub hint: Option<String>,
    /// The webhook's format (`standard`, `slack`, …).
    pub format: String,
    /// The body that was sent, indented: the envelope, or for a chat format
    /// the message as the service gets it (the `test` event's, which shows
    /// a line of each event type the webhook receives).
    pub body: String,
    /// For a chat format, the message as the channel shows it, in plain
    /// text (title, sentence, figures, lists, link).
    pub preview: Option<String>,
}

/// What the test event a checked create sends first came to: the receiver
/// answered 2xx (a failure refuses the create, see [`Admin::check_receiver`]).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckResult {
    /// The `webhook-id` the test event carried (it is in no delivery log:
    /// the webhook did not exist yet).
    pub message_id: Uuid,
    pub status_code: i32,
    pub duration_ms: i32,
}

/// A webhook not created yet, as a checked create tests its receiver.
pub(crate) struct Candidate<'a> {
    /// The id it will be created with (in the attempt's log line).
    pub id: Uuid,
    pub site_id: i64,
    pub site_domain: &'a str,
    pub url: &'a str,
    pub secret: &'a str,
    pub signing_key: Option<&'a SigningKey>,
    pub headers: &'a serde_json::Value,
    pub events: &'a [String],
    pub format: &'a str,
}

/// How much of the receiver's answer a refused check quotes.
const CHECK_BODY_QUOTED: usize = 200;

/// Names the cause of a failed attempt from its kind, with what to do.
pub fn classify(kind: FailureKind) -> (TestCause, &'static str) {
    match kind {
        FailureKind::HttpStatus => (
            TestCause::HttpStatus,
            "the receiver answered but not with a 2xx; see its answer",
        ),
        FailureKind::RefusedAddress => (TestCause::RefusedAddress, "the URL's host is (or resolves to) a non-public address; point the webhook at a public receiver, or allow the range in delivery.allow_cidrs if it is really meant to be reachable"),
        FailureKind::Dns => (
            TestCause::Dns,
            "the host name does not resolve; check the URL's spelling and the receiver's DNS",
        ),
        FailureKind::Timeout => (TestCause::Timeout, "the receiver did not answer within delivery.request_timeout_ms; it must answer quickly (queue work, reply 2xx)"),
        FailureKind::ConnectionRefused => (TestCause::ConnectionRefused, "nothing listens at that host and port; check the receiver is running and the port in the URL"),
        FailureKind::Tls => (TestCause::Tls, "the TLS handshake failed; the receiver needs a certificate valid for its host name from a public CA (or one in delivery.extra_ca_file)"),
        FailureKind::LocalResources => (TestCause::Connection, LOCAL_HINT),
        FailureKind::ConnectTimeout
        | FailureKind::ConnectionClosed
        | FailureKind::Request
        | FailureKind::Connection => (
            TestCause::Connection,
            "the connection failed; check the receiver is reachable from this host",
        ),
    }
}

/// This host's failure, not the receiver's.
const LOCAL_HINT: &str =
    "the daemon's host ran out of file descriptors (its own problem, not the receiver's); try again shortly";

/// A test's cause and hint, from what came of it.
fn explain(outcome: &Outcome) -> (TestCause, Option<&'static str>) {
    match outcome {
        Outcome::Delivered(_) => (TestCause::Ok, None),
        Outcome::NotSent { .. } => (
            TestCause::NotSent,
            Some("the webhook cannot be sent to as it stands; see the error"),
        ),
        Outcome::Local { .. } => (TestCause::Connection, Some(LOCAL_HINT)),
        o => match o.attempt().and_then(|a| a.error_kind) {
            Some(kind) => {
                let (cause, hint) = classify(kind);
                (cause, Some(hint))
            }
            None => (TestCause::Connection, None),
        },
    }
}

/// The test delivery, inserted already claimed by this process, returned in
/// the claim's row shape (see `queue::claimer::CLAIM_SQL`).
const TEST_CLAIM_SQL: &str = concat!(
    "
WITH d AS (
    INSERT INTO webhook_deliveries (webhook_id, event_type, payload, status, attempts, locked_by, locked_until)
    VALUES ($1, 'test', $2, 'delivering', 1, $3, now() + make_interval(secs => $4))
    RETURNING id, webhook_id, event_type, payload, attempts, inserted_at, locked_until
)",
    crate::queue::claim_sql::claimed_row_sql!()
);

impl Admin {
    /// Sends a `test` event to the webhook now, through the daemon's own
    /// client, address guard and signing, and records it in the delivery log
    /// like any delivery (one attempt, no retries). A disabled webhook is
    /// tested too, so a fix can be checked before re-enabling it; a deleted
    /// one is not. Beyond a bound on tests in flight (per user, per site, in
    /// all) it is refused at once: waiting would queue behind tests that may
    /// hang until their timeout.
    pub async fn send_test(&self, who: &Principal, webhook: Uuid) -> OpResult<TestResult> {
        let sender = &self.tests;
        // No connection is held while the receiver is waited on: a hanging
        // receiver must not take the admin's few connections from everyone.
        let client = self.db().await?;
        let site = access::webhook(&client, who, webhook, Access::Manage).await?;
        let w = view(&**client, webhook).await?;
        if w.deleted_at.is_some() {
            return Err(OpError::Conflict(format!(
                "webhook {} is deleted; restore it first",
                w.id
            )));
        }
        if let Some(own) = &sender.own {
            if let Some(why) = own.refusal(&w.url).await {
                return Err(OpError::Conflict(own.refused(&why)));
            }
        }
        let _slot = self
            .test_slots
            .try_acquire(who, site.id)
            .map_err(|b| OpError::Busy {
                message: b.message(),
                // A slot frees when a test in flight answers: within its timeout.
                retry_after: sender.timeout(),
            })?;
        let lease_deadline = Instant::now() + sender.lease;
        let row = db(
            client
                .query_one(
                    TEST_CLAIM_SQL,
                    &[
                        &w.id,
                        &test_payload(&w.events),
                        &sender.completer.instance,
                        &sender.lease.as_secs_f64(),
                    ],
                )
                .await,
            "recording the test delivery",
        )?;
        let read = "reading the webhook for the test delivery";
        let cols = ClaimedColumns::find(row.columns()).context(read)?;
        let mut info = cols.webhook(&row).context(read)?;
        info.enabled = true; // tested on purpose, even while disabled
        info.retry_schedule = Some(Vec::new()); // one attempt: the result is seen now
        let mut job = cols
            .claimed(&row, Arc::new(info), lease_deadline)
            .context(read)?;
        drop(client);
        let sent = sender.worker.body(&job, &job.payload);
        let preview = sender.worker.preview(&job, &job.payload);
        let body = serde_json::from_slice::<serde_json::Value>(&sent)
            .and_then(|v| serde_json::to_string_pretty(&v))
            .unwrap_or_else(|_| String::from_utf8_lossy(&sent).into_owned());
        let outcome = sender.worker.deliver(&mut job).await;

        // Recorded by the completer, as the daemon records outcomes (attempt log, health).
        let (tx, rx) = completer::channel(1);
        let done = Completer::new(
            sender.completer.clone(),
            self.pool().clone(),
            rx,
            Arc::new(tokio::sync::Notify::new()),
        )?
        .start(tokio_util::sync::CancellationToken::new());
        let _ = tx.send((outcome.clone(), None)).await;
        drop(tx);
        let _ = done.await;

        let client = self.db().await?;
        let recorded: Option<String> = db(
            client
                .query_opt(
                    "SELECT status FROM webhook_deliveries WHERE id = $1 AND status IN ('success', 'failed')",
                    &[&job.id],
                )
                .await,
            "reading the test outcome",
        )?
        .map(|r| r.get(0));
        if recorded.is_none() {
            return Err(OpError::Internal(anyhow::anyhow!(
                "the test was sent but its outcome could not be recorded (delivery {}); the daemon will send it again",
                job.id
            )));
        }
        let (cause, hint) = explain(&outcome.outcome);
        let attempt = outcome.outcome.attempt();
        let error = match &outcome.outcome {
            Outcome::NotSent { why } | Outcome::Local { why, .. } => Some(why.clone()),
            _ => attempt.and_then(|a| a.error.clone()),
        };
        Ok(TestResult {
            delivery_id: job.id,
            webhook_id: w.id,
            url: w.url,
            success: cause == TestCause::Ok,
            cause,
            status_code: attempt.and_then(|a| a.status_code),
            duration_ms: attempt.map_or(0, |a| a.duration_ms),
            error,
            response_body: attempt.and_then(|a| a.response_body.clone()),
            hint: hint.map(str::to_string),
            format: w.format,
            body,
            preview,
        })
    }
}

impl Admin {
    /// Sends the `test` event to a webhook that does not exist yet, as
    /// `create --check` (`"check": true`, the form's box) asks: through the
    /// same client, address guard, signing and timeout as [`Admin::send_test`],
    /// under the same test slots. It is sent before the webhook is inserted,
    /// not from inside an open transaction: the test's delivery row and its
    /// completion need a committed webhook (and the completer writes on a
    /// connection of its own), and no connection should be held while the
    /// receiver is waited on. So a failed check leaves nothing behind, and
    /// the check is in no delivery log: the caller gets its result (the
    /// message id, status and duration) in the answer instead. A receiver
    /// that does not answer 2xx refuses the create as an invalid `url`
    /// (rule `unreachable`), saying what it answered or why no answer came.
    pub(crate) async fn check_receiver(
        &self,
        who: &Principal,
        w: Candidate<'_>,
    ) -> OpResult<CheckResult> {
        let sender = &self.tests;
        let _slot = self
            .test_slots
            .try_acquire(who, w.site_id)
            .map_err(|b| OpError::Busy {
                message: b.message(),
                retry_after: sender.timeout(),
            })?;
        let info = WebhookInfo {
            id: w.id,
            site_domain: w.site_domain.to_string(),
            url: w.url.to_string(),
            uri: w.url.parse().ok(),
            headers: WebhookInfo::parse_headers(w.headers),
            secrets: vec![w.secret.to_string()],
            signing_keys: w
                .signing_key
                .map(|k| (k.seed.clone(), k.public.clone()))
                .into_iter()
                .collect(),
            enabled: true,
            deleted: false,
            disabled_reason: None,
            retry_schedule: Some(Vec::new()), // one attempt: the result is seen now
            rate_limit_per_sec: None,
            max_concurrency: None,
            format: w.format.to_string(),
        };
        let now = OffsetDateTime::now_utc();
        let mut job = Claimed {
            id: Uuid::new_v4(),
            attempt: 1,
            event_type: "test".into(),
            payload: test_payload(w.events).to_string(),
            inserted_at: now,
            lease: now + sender.lease,
            lease_deadline: Instant::now() + sender.lease,
            webhook: Arc::new(info),
        };
        let outcome = sender.worker.deliver(&mut job).await.outcome;
        let attempt = outcome.attempt();
        if let (Outcome::Delivered(a), Some(code)) = (&outcome, attempt.and_then(|a| a.status_code))
        {
            return Ok(CheckResult {
                message_id: job.id,
                status_code: code,
                duration_ms: a.duration_ms,
            });
        }
        let (_, hint) = explain(&outcome);
        let what = match (&outcome, attempt) {
            (Outcome::NotSent { why }, _) => format!("it was not sent: {why}"),
            (_, Some(a)) => match (a.status_code, &a.error) {
                (Some(code), _) => {
                    let body = a.response_body.as_deref().unwrap_or("").trim();
                    let quoted: String = body.chars().take(CHECK_BODY_QUOTED).collect();
                    let more = if quoted.len() < body.len() { "…" } else { "" };
                    if quoted.is_empty() {
                        format!("the receiver answered {code}")
                    } else {
                        format!("the receiver answered {code}: {quoted}{more}")
                    }
                }
                (None, Some(e)) => format!("no answer: {e}"),
                (None, None) => "no answer".to_string(),
            },
            (_, None) => "no answer".to_string(),
        };
        // A status speaks for itself; a failure without one gets its hint.
        let hint = match attempt.and_then(|a| a.status_code) {
            Some(_) => String::new(),
            None => hint.map(|h| format!(" ({h})")).unwrap_or_default(),
        };
        Err(Invalid::new(
            "url",
            Rule::Unreachable,
            format!(
                "the test event sent first was not accepted: {what}{hint}; nothing was created. \
                 Fix the receiver and try again, or create the webhook without the check \
                 (leave out --check, \"check\": true or the form's test box)"
            ),
        )
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_event_fits_any_payload_limit() {
        // jsonb renders ", " and ": " where serde writes "," and ":": the
        // compact size plus one byte per such character (those inside strings
        // counted too) bounds what the database measures.
        let compact = test_payload(&[]).to_string();
        let bound = compact.len() + compact.matches([',', ':']).count();
        assert!(
            bound < crate::config::MIN_MAX_PAYLOAD_BYTES,
            "{bound} bytes"
        );
    }

    /// Each kind the client stores names its cause; those a person can act
    /// on alike share one.
    #[test]
    fn failure_causes_are_named_from_the_stored_kind() {
        for (kind, cause) in [
            (FailureKind::HttpStatus, TestCause::HttpStatus),
            (FailureKind::RefusedAddress, TestCause::RefusedAddress),
            (FailureKind::Dns, TestCause::Dns),
            (FailureKind::Timeout, TestCause::Timeout),
            (FailureKind::ConnectionRefused, TestCause::ConnectionRefused),
            (FailureKind::Tls, TestCause::Tls),
            (FailureKind::ConnectTimeout, TestCause::Connection),
            (FailureKind::ConnectionClosed, TestCause::Connection),
            (FailureKind::Request, TestCause::Connection),
            (FailureKind::Connection, TestCause::Connection),
            (FailureKind::LocalResources, TestCause::Connection),
        ] {
            assert_eq!(classify(kind).0, cause, "{kind}");
        }
        // Read back from the attempt log, as `deliveries show` does.
        for kind in FailureKind::ALL {
            let stored = FailureKind::from_stored(kind.as_str()).unwrap();
            assert_eq!(classify(stored), classify(kind));
        }
    }
}
