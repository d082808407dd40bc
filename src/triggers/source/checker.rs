//! The daemon's watch on its analytics source. `check` runs at start, again
//! soon after any question fails (a trigger round's query: at most every
//! `MIN_GAP`), and periodically (`INTERVAL`, or `INTERVAL_FAILING` while the
//! last verdict was not `Compatible`, so a fixed source is noticed quickly).
//! Each verdict is published in a `watch` channel; the daemon hands its
//! receiver to the admin listener, which reports it in `/readyz`.
//!
//! Each verdict is also recorded in the database (sql/0019), and a change of
//! verdict is told to the operator endpoint (`[health] operator_url`) as
//! `analytics.unavailable`, `analytics.incompatible` or `analytics.recovered`
//! (docs/events.md#analytics-events), enqueued in the transaction that
//! records it. The recorded verdict is the deployment's: a restart during an
//! outage, or a second instance seeing it, sends nothing more. Site webhooks
//! never receive these: the source is the operator's, not a site's.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use deadpool_postgres::Pool;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{AnalyticsSource, SourceStatus};
use crate::db::timestamp::rfc3339_seconds;
use crate::service::{FirstRun, PeriodicService};

pub const UNAVAILABLE: &str = "analytics.unavailable";
pub const INCOMPATIBLE: &str = "analytics.incompatible";
pub const RECOVERED: &str = "analytics.recovered";

/// Between checks of a source that works.
pub const INTERVAL: Duration = Duration::from_secs(300);
/// Between checks of a source that is unavailable or incompatible.
pub const INTERVAL_FAILING: Duration = Duration::from_secs(10);
/// At least this long between two checks, however often questions fail.
pub const MIN_GAP: Duration = Duration::from_secs(5);

pub struct SourceChecker {
    source: Arc<AnalyticsSource>,
    pool: Pool,
    tx: watch::Sender<SourceStatus>,
    /// The last verdict could not be recorded (the database did not answer):
    /// check again soon, so its notice is not 5 minutes late.
    unrecorded: bool,
    /// When the last check ended: failures wake a check no sooner than
    /// `MIN_GAP` after it.
    last: tokio::time::Instant,
}

impl SourceChecker {
    /// Runs the first check (logging and recording its verdict) and returns
    /// the checker with the receiver of its verdicts.
    pub async fn first(
        source: Arc<AnalyticsSource>,
        pool: Pool,
    ) -> (SourceChecker, watch::Receiver<SourceStatus>) {
        let status = SourceStatus::of(&source.check().await);
        log(&source, None, &status);
        let recorded = record(&pool, &source.describe(), &status).await;
        if let Err(e) = &recorded {
            tracing::warn!(error = %format!("{e:#}"), "{}; will retry", Self::RECORDING);
        }
        let (tx, rx) = watch::channel(status);
        let last = tokio::time::Instant::now();
        let checker = SourceChecker {
            source,
            pool,
            tx,
            unrecorded: recorded.is_err(),
            last,
        };
        (checker, rx)
    }

    const RECORDING: &'static str = "recording the analytics source's verdict failed";
}

impl PeriodicService for SourceChecker {
    const NAME: &'static str = "source checker";
    // A check does not fail: its verdict (logged on change) is the outcome.
    const WORK: &'static str = "checking the analytics source";
    const AFTER_FAILURE: &'static str = "will retry";
    /// `first` ran the first check.
    const FIRST_RUN: FirstRun = FirstRun::AfterPause;
    /// The notice a changed verdict sent, if any.
    type Outcome = Option<&'static str>;

    fn interval(&self) -> Duration {
        match *self.tx.borrow() {
            SourceStatus::Compatible { .. } if !self.unrecorded => INTERVAL,
            _ => INTERVAL_FAILING,
        }
    }

    async fn wake(&self) {
        self.source.failed().await;
        tokio::time::sleep_until(self.last + MIN_GAP).await;
    }

    /// A check cut short by `stop` publishes nothing. The verdict is
    /// published before it is recorded: /readyz does not wait on the
    /// database, and a verdict not recorded is recorded by the next check.
    async fn run_once(&mut self, stop: &CancellationToken) -> anyhow::Result<Option<&'static str>> {
        let r = tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            r = self.source.check() => r,
        };
        self.last = tokio::time::Instant::now();
        let status = SourceStatus::of(&r);
        let before = self.tx.borrow().clone();
        log(&self.source, Some(&before), &status);
        self.tx.send_replace(status.clone());
        // The same verdict, already recorded: no transaction to write nothing.
        if !self.unrecorded && state(&before) == state(&status) {
            return Ok(None);
        }
        let recorded = record(&self.pool, &self.source.describe(), &status).await;
        self.unrecorded = recorded.is_err();
        recorded.context(Self::RECORDING)
    }
}

/// A verdict's name as sql/0019 records it.
fn state(status: &SourceStatus) -> &'static str {
    match status {
        SourceStatus::Compatible { .. } => "compatible",
        SourceStatus::Unavailable(_) => "unavailable",
        SourceStatus::Incompatible(_) => "incompatible",
    }
}

/// What a change of recorded verdict tells the operator: the event type
/// and its `data`. `previous` is the recorded state and since when it held;
/// nothing when the source was `unknown` and works, or did not change.
pub fn notice(
    source: &str,
    previous: (&str, OffsetDateTime),
    status: &SourceStatus,
    now: OffsetDateTime,
) -> Option<(&'static str, Value)> {
    let (was, was_since) = previous;
    if was == state(status) {
        return None;
    }
    Some(match status {
        SourceStatus::Compatible { version } => {
            // A first check that finds it working tells nobody.
            if was == "unknown" {
                return None;
            }
            (
                RECOVERED,
                json!({
                    "source": source,
                    "version": version,
                    "was": was,
                    "failing_since": rfc3339_seconds(was_since),
                    "recovered_at": rfc3339_seconds(now),
                }),
            )
        }
        SourceStatus::Unavailable(e) => (
            UNAVAILABLE,
            json!({
                "source": source,
                "error": e,
                "since": rfc3339_seconds(now),
                "triggers": "waiting: each round is retried until the source answers",
                "deliveries": "go on",
            }),
        ),
        SourceStatus::Incompatible(e) => (
            INCOMPATIBLE,
            json!({
                "source": source,
                "error": e,
                "since": rfc3339_seconds(now),
                "triggers": "cannot work until the source answers every statement (see `plausible-webhooks check`); /readyz answers 503",
                "deliveries": "go on",
            }),
        ),
    })
}

/// Records `status` as the deployment's verdict; when it changed, enqueues
/// its notice for the operator endpoint in the same transaction (once per
/// change: keyed by the instant the new verdict began). Returns the notice's
/// type.
async fn record(
    pool: &Pool,
    source: &str,
    status: &SourceStatus,
) -> anyhow::Result<Option<&'static str>> {
    let mut client = pool.get().await.context("connecting to PostgreSQL")?;
    let tx = client.transaction().await?;
    // The row lock orders two instances recording at once: the second sees
    // the first's verdict and sends nothing.
    let row = tx
        .query_one(
            "SELECT state, since, now() FROM plausible_webhooks_analytics_state FOR UPDATE",
            &[],
        )
        .await
        .context("reading the recorded analytics verdict (is the schema current? run `migrate`)")?;
    let (was, was_since, now): (String, OffsetDateTime, OffsetDateTime) =
        (row.get(0), row.get(1), row.get(2));
    let new = state(status);
    if was == new {
        return Ok(None);
    }
    let detail = match status {
        SourceStatus::Compatible { version } => version,
        SourceStatus::Unavailable(e) | SourceStatus::Incompatible(e) => e,
    };
    tx.execute(
        "UPDATE plausible_webhooks_analytics_state SET state = $1, since = $2, detail = $3",
        &[&new, &now, &detail],
    )
    .await?;
    let told = notice(source, (&was, was_since), status, now);
    if let Some((event_type, data)) = &told {
        let key = format!("{event_type}:{}", now.unix_timestamp_nanos() / 1000);
        tx.execute(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, payload, idempotency_key)
             SELECT id, $1, $2, $3 FROM webhooks
             WHERE operator AND enabled AND deleted_at IS NULL
             ON CONFLICT (webhook_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
            &[event_type, data, &key],
        )
        .await
        .context("enqueueing the analytics notice")?;
    }
    tx.commit().await?;
    Ok(told.map(|(t, _)| t))
}

/// A sample of each analytics notice's `data`, made by [`notice`].
pub fn sample_payload(event_type: &str) -> Option<Value> {
    let at = time::macros::datetime!(2026-01-01 12:00 UTC);
    let source =
        "clickhouse http://127.0.0.1:8123 database plausible_events_db user plausible_webhooks";
    let error = "analytics source unavailable: cannot reach clickhouse http://127.0.0.1:8123: connection refused";
    let (previous, status) = match event_type {
        UNAVAILABLE => ("compatible", SourceStatus::Unavailable(error.into())),
        INCOMPATIBLE => (
            "compatible",
            SourceStatus::Incompatible(
                "the top sources query failed: Code: 47. DB::Exception: Unknown identifier: referrer_source"
                    .into(),
            ),
        ),
        RECOVERED => (
            "unavailable",
            SourceStatus::Compatible {
                version: "24.8.4.1".into(),
            },
        ),
        _ => return None,
    };
    notice(
        source,
        (previous, at - time::Duration::hours(1)),
        &status,
        at,
    )
    .map(|(_, data)| data)
}

/// One line per change of verdict (and for the first).
fn log(source: &AnalyticsSource, before: Option<&SourceStatus>, now: &SourceStatus) {
    if before.is_some_and(|b| std::mem::discriminant(b) == std::mem::discriminant(now)) {
        return;
    }
    let described = source.describe();
    match now {
        SourceStatus::Compatible { version } => tracing::info!(
            source = %described,
            version = %version,
            "analytics source checked: every statement triggers send is answered"
        ),
        SourceStatus::Unavailable(e) => tracing::warn!(
            source = %described,
            error = %e,
            "triggers cannot read analytics yet; they are retried every round (deliveries go on)"
        ),
        SourceStatus::Incompatible(e) => tracing::error!(
            source = %described,
            error = %e,
            "the analytics source refuses a statement triggers send: triggers cannot work and \
             /readyz answers 503 until it is fixed (deliveries go on); see README, `check`"
        ),
    }
}
