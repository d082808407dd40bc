//! The evaluator: visitor_spike and traffic_drop triggers, each evaluated
//! every `interval` by exactly one instance.
//!
//! A round, top to bottom, one transaction per batch:
//! 1. claim up to `batch` due triggers (`FOR UPDATE SKIP LOCKED`: another
//!    instance takes the next ones instead of waiting);
//! 2. derive missing thresholds (`threshold.rs`), once a day per trigger;
//! 3. count unique visitors for every claimed trigger in one query;
//! 4. decide (hysteresis, cooldown: `super::decide`);
//! 5. gather the firings' payloads (baselines, top sources and pages: three
//!    statements for the whole batch);
//! 6. write the new states and enqueue the deliveries; commit.
//!
//! Each step is one method over the batch's one list of `Candidate`s (a
//! claimed trigger with what the steps found out about it so far); what
//! steps 2, 4 and 5 decide per trigger (`Candidate::settle_threshold`,
//! `Candidate::decide`, `firing_payload`) reads no database.
//!
//! A crash anywhere before the commit rolls all of it back: the trigger is
//! due again and the next round (on any instance) evaluates it afresh, so a
//! notification is never lost and never doubled.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use anyhow::{Context, Result};
use deadpool_postgres::Pool;
use serde_json::json;
use time::{Duration, OffsetDateTime};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::baseline::day_shifted;
pub use super::baseline::{dashboard_url, BASELINE_DAYS};
use super::source::{is_unavailable, AnalyticsSource, Ranked, Window, TOP_N};
use super::tracking::{TrackingBatch, TrackingReport};
use super::{
    database_now, decide, in_batches, pull_back_ahead, round1, set_aside_unreadable, threshold,
    Batched, BeforeCommit, Decision, Enqueue, State, ThresholdKind, TriggerType, PAUSED_RECHECK,
};
use crate::config::Config;
use crate::db::row::{col, position, Unreadable};
use crate::db::timestamp::rfc3339_seconds;
use crate::service::{PeriodicService, Warnings};

/// Thresholds derived per round at most (each reads 7 days of a site's
/// events); the rest keep their last derived value, or wait a round or two
/// when they have none yet.
pub const DERIVE_PER_ROUND: usize = 100;
/// Never sleep less than this between rounds.
pub const MIN_PAUSE: StdDuration = StdDuration::from_millis(200);
/// After a failed round.
pub const ERROR_PAUSE: StdDuration = StdDuration::from_secs(5);

/// Paused triggers (`paused_reason_sql`) are claimed like the others, so
/// their rows stay cheap to find, but skipped: not evaluated, their state
/// kept, looked at again after `PAUSED_RECHECK`.
const CLAIM_SQL: &str = concat!(
    "
WITH due AS (
    SELECT id FROM webhook_triggers
    WHERE enabled AND trigger_type IN ('visitor_spike', 'traffic_drop')
      AND next_evaluation_at <= $1
    ORDER BY next_evaluation_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
SELECT t.id, t.webhook_id, t.trigger_type, t.threshold, t.window_secs, t.cooldown_secs,
       t.armed, t.last_fired_at, t.derived_threshold, t.threshold_derived_at,
       w.site_id, ps.domain, (w.enabled AND w.deleted_at IS NULL) AS webhook_live, ",
    paused_reason_sql!(),
    " AS paused_reason, ps.timezone::text AS timezone
FROM due
JOIN webhook_triggers t ON t.id = due.id
JOIN webhooks w ON w.id = t.webhook_id
JOIN sites ps ON ps.id = w.site_id
LEFT JOIN teams pt ON pt.id = ps.team_id"
);

const UPDATE_SQL: &str = "
UPDATE webhook_triggers t SET
    armed = u.armed,
    last_fired_at = COALESCE(u.fired_at, t.last_fired_at),
    last_evaluated_at = CASE WHEN u.evaluated THEN $1 ELSE t.last_evaluated_at END,
    last_value = CASE WHEN u.evaluated THEN u.value ELSE t.last_value END,
    derived_threshold = COALESCE(u.derived, t.derived_threshold),
    threshold_derived_at = COALESCE(u.derived_at, t.threshold_derived_at),
    next_evaluation_at = CASE WHEN t.id = ANY($10::uuid[]) THEN $11::timestamptz ELSE $2::timestamptz END
FROM unnest($3::uuid[], $4::bool[], $5::bool[], $6::timestamptz[], $7::int4[], $8::int4[], $9::timestamptz[])
     AS u(id, armed, evaluated, fired_at, value, derived, derived_at)
WHERE t.id = u.id";

/// Seconds until the next spike/drop trigger is due, by the database's clock.
const NEXT_DUE_SQL: &str = "
SELECT extract(epoch FROM min(next_evaluation_at) - now())::float8 FROM webhook_triggers
WHERE enabled AND trigger_type IN ('visitor_spike', 'traffic_drop', 'tracking_stopped')";

#[derive(Clone)]
pub struct EvaluatorConfig {
    pub interval: StdDuration,
    pub batch: i64,
    /// Plausible's public URL, for dashboard links (empty: none).
    pub base_url: String,
    pub before_commit: Option<BeforeCommit>,
}

impl EvaluatorConfig {
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            interval: StdDuration::from_secs(cfg.triggers.evaluation_interval_secs),
            batch: cfg.triggers.evaluation_batch,
            base_url: cfg.plausible.base_url.clone(),
            before_commit: None,
        }
    }
}

/// What a round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoundReport {
    pub claimed: usize,
    pub evaluated: usize,
    /// Of those, visitor_spike and traffic_drop.
    pub evaluated_spikes: usize,
    pub evaluated_drops: usize,
    pub fired: usize,
    /// Skipped: webhook disabled/deleted, paused, or no threshold derivable yet.
    pub skipped: usize,
    /// Of the claimed, paused (`paused_reason_sql`: team locked, past
    /// accept_traffic_until, no team).
    pub paused: usize,
    /// Thresholds derived from history in this round.
    pub derived: usize,
    /// Statements sent to the main database and to the analytics source.
    pub queries: usize,
    /// Tracking triggers (`tracking`) evaluated, and the
    /// `site.tracking_stopped` and `site.tracking_resumed` they sent (not
    /// counted in `evaluated` and `fired`, which are spikes' and drops').
    pub tracking_evaluated: usize,
    pub tracking_stopped: usize,
    pub tracking_resumed: usize,
}

pub struct Evaluator {
    cfg: EvaluatorConfig,
    pool: Pool,
    source: Arc<AnalyticsSource>,
}

/// A claimed spike/drop trigger, as its row reads.
#[derive(Debug, Clone)]
struct Trigger {
    id: Uuid,
    webhook_id: Uuid,
    kind: ThresholdKind,
    threshold: Option<i32>,
    window: Duration,
    cooldown: Duration,
    state: State,
    derived: Option<i32>,
    derived_at: Option<OffsetDateTime>,
    site_id: i64,
    domain: String,
    /// Webhook enabled and not deleted, and the trigger not paused.
    live: bool,
    paused: bool,
    /// The site's IANA zone (`sites.timezone`): baselines use its days.
    timezone: String,
}

/// What a trigger's count is compared with, and where it came from (the
/// payload's `threshold_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Threshold {
    value: i64,
    source: &'static str,
}

/// A count and what was decided on it (step 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Verdict {
    window: Window,
    visitors: i64,
    decision: Decision,
}

/// One claimed trigger on its way through a batch: each step fills in its
/// part, and the last writes the trigger's new state from it.
#[derive(Debug, Clone)]
struct Candidate {
    trigger: Trigger,
    /// Step 2: its threshold is derived from history in this batch.
    derive: bool,
    /// Step 2: the threshold derived in this batch, stored with the round's
    /// instant; 0 records "derived, none yet", so it is not recomputed
    /// every round.
    derived: Option<i32>,
    /// Step 2: what it is evaluated against; None: skipped this round.
    threshold: Option<Threshold>,
    /// Step 4.
    verdict: Option<Verdict>,
}

impl Candidate {
    fn new(trigger: Trigger) -> Self {
        Self {
            trigger,
            derive: false,
            derived: None,
            threshold: None,
            verdict: None,
        }
    }

    /// Live, without a threshold of its own, and the derived one missing or
    /// a day old: step 2 reads its history (within the round's budget).
    fn wants_derived(&self, now: OffsetDateTime) -> bool {
        let t = &self.trigger;
        t.live && t.threshold.is_none() && threshold::stale(t.derived_at, now)
    }

    /// Step 2: the threshold it is evaluated against: its own; or one
    /// derived now from `history` (the bucketed visitors and the seconds of
    /// history covered, given when `derive`); or the one derived before.
    /// None (skipped) for a trigger not live, or without a threshold of at
    /// least 1.
    fn settle_threshold(&mut self, history: Option<(i64, f64)>) {
        let t = &self.trigger;
        let derived = |v: i32| Threshold {
            value: i64::from(v),
            source: "derived",
        };
        let threshold = match (t.live, t.threshold, history) {
            (false, _, _) => None,
            (true, Some(v), _) => Some(Threshold {
                value: i64::from(v),
                source: "configured",
            }),
            (true, None, Some(history)) => {
                let now_derived =
                    threshold::from_history(t.kind, t.window.whole_seconds(), history);
                self.derived = Some(now_derived.unwrap_or(0));
                now_derived.map(derived)
            }
            (true, None, None) => t.derived.map(derived),
        };
        self.threshold = threshold.filter(|t| t.value >= 1);
    }

    /// The window step 3 counts, for a trigger with a threshold.
    fn window(&self, now: OffsetDateTime) -> Option<Window> {
        self.threshold.map(|_| Window {
            site_id: self.trigger.site_id,
            from: now - self.trigger.window,
            to: now,
        })
    }

    /// Step 4, for a trigger with a threshold, on the count of its window.
    fn decide(&mut self, window: Window, visitors: i64, now: OffsetDateTime) {
        let Some(threshold) = self.threshold else {
            return;
        };
        let t = &self.trigger;
        self.verdict = Some(Verdict {
            window,
            visitors,
            decision: decide(t.kind, visitors, threshold.value, t.state, t.cooldown, now),
        });
    }

    fn fired(&self) -> bool {
        self.verdict.is_some_and(|v| v.decision.fire)
    }

    /// Step 6: its row's new values.
    fn new_state(&self, now: OffsetDateTime) -> NewState {
        NewState {
            armed: self
                .verdict
                .map_or(self.trigger.state.armed, |v| v.decision.armed),
            evaluated: self.verdict.is_some(),
            fired_at: self.fired().then_some(now),
            value: self
                .verdict
                .map(|v| v.visitors.min(i64::from(i32::MAX)) as i32),
            derived: self.derived,
            derived_at: self.derived.map(|_| now),
        }
    }
}

/// The new state of one claimed trigger (`UPDATE_SQL`'s columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NewState {
    armed: bool,
    evaluated: bool,
    fired_at: Option<OffsetDateTime>,
    value: Option<i32>,
    derived: Option<i32>,
    derived_at: Option<OffsetDateTime>,
}

impl Evaluator {
    pub fn new(cfg: EvaluatorConfig, pool: Pool, source: Arc<AnalyticsSource>) -> Result<Self> {
        anyhow::ensure!(
            cfg.interval >= StdDuration::from_secs(1),
            "evaluator: interval must be at least 1 s"
        );
        anyhow::ensure!(cfg.batch >= 1, "evaluator: batch must be at least 1");
        Ok(Self { cfg, pool, source })
    }

    async fn until_next_due(&self) -> StdDuration {
        let next: Option<f64> = match self.pool.get().await {
            Ok(c) => c
                .query_one(NEXT_DUE_SQL, &[])
                .await
                .ok()
                .and_then(|r| r.try_get(0).ok().flatten()),
            Err(_) => None,
        };
        // None, or a time no wait holds (`infinity`): the interval.
        let wait = next
            .and_then(|secs| StdDuration::try_from_secs_f64(secs.max(0.0)).ok())
            .unwrap_or(self.cfg.interval);
        wait.clamp(MIN_PAUSE, self.cfg.interval)
    }

    /// Evaluates every trigger due at `now`, batch by batch.
    pub async fn round(&self, now: OffsetDateTime) -> Result<RoundReport> {
        let started = std::time::Instant::now();
        let mut report = RoundReport::default();
        // A batch that fails (a timeout, a bad row) is set aside until its
        // next evaluation.
        in_batches(
            self,
            &mut report,
            &self.pool,
            self.cfg.batch,
            now,
            now + self.interval_time(),
            "a batch of triggers failed and was set aside until its next evaluation",
        )
        .await?;
        let tracking = TrackingBatch {
            pool: &self.pool,
            source: &self.source,
            batch: self.cfg.batch,
            base_url: &self.cfg.base_url,
            interval: self.interval_time(),
            before_commit: self.cfg.before_commit.as_ref(),
        };
        let mut tracked = TrackingReport::default();
        let r = in_batches(
            &tracking,
            &mut tracked,
            &self.pool,
            self.cfg.batch,
            now,
            now + self.interval_time(),
            "a batch of tracking triggers failed and was set aside until its next evaluation",
        )
        .await;
        report.claimed += tracked.claimed;
        report.paused += tracked.paused;
        report.queries += tracked.queries;
        report.tracking_evaluated += tracked.evaluated;
        report.tracking_stopped += tracked.stopped;
        report.tracking_resumed += tracked.resumed;
        r?;
        let took = started.elapsed();
        for (kind, n) in [
            (ThresholdKind::Spike, report.evaluated_spikes),
            (ThresholdKind::Drop, report.evaluated_drops),
        ] {
            if n > 0 {
                crate::metrics::trigger_round(kind.trigger_type().event_type(), n as u64, took);
            }
        }
        if report.tracking_evaluated > 0 {
            crate::metrics::trigger_round(
                TriggerType::TrackingStopped.as_str(),
                report.tracking_evaluated as u64,
                took,
            );
        }
        if report.claimed > 0 {
            tracing::debug!(
                triggers = report.claimed,
                evaluated = report.evaluated,
                fired = report.fired,
                statements = report.queries,
                ms = took.as_millis() as u64,
                "spike/drop evaluation round"
            );
        }
        Ok(report)
    }

    /// `interval` as a span of time between instants.
    fn interval_time(&self) -> Duration {
        Duration::try_from(self.cfg.interval).unwrap_or(Duration::MINUTE)
    }

    /// Step 1: the batch's due triggers, and how many rows were claimed
    /// (those that cannot be read included: they are set aside here).
    async fn claim(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        now: OffsetDateTime,
        report: &mut RoundReport,
    ) -> Result<(Vec<Candidate>, usize)> {
        let rows = tx
            .query(CLAIM_SQL, &[&now, &self.cfg.batch])
            .await
            .context("claiming due spike/drop triggers")?;
        report.queries += 1;
        let Some(first) = rows.first() else {
            return Ok((Vec::new(), 0));
        };
        let cols = ClaimColumns::find(first.columns())?;
        let mut batch = Vec::with_capacity(rows.len());
        let mut unreadable: Vec<Uuid> = Vec::new();
        for r in &rows {
            match cols.trigger(r) {
                Ok(Some(t)) => batch.push(Candidate::new(t)),
                Ok(None) => {}
                Err((id, u)) => {
                    tracing::warn!(trigger_id = %id, error = %u,
                        "a trigger cannot be read; set aside (not evaluated) until the row is corrected");
                    unreadable.push(id);
                }
            }
        }
        report.skipped += unreadable.len();
        set_aside_unreadable(tx, &unreadable, now).await?;
        Ok((batch, rows.len()))
    }

    /// Step 2: thresholds, configured or derived (and re-derived once a day,
    /// all of the batch's in one statement, at most `DERIVE_PER_ROUND` a
    /// round).
    async fn settle_thresholds(
        &self,
        batch: &mut [Candidate],
        now: OffsetDateTime,
        report: &mut RoundReport,
    ) -> Result<()> {
        let budget = DERIVE_PER_ROUND - report.derived;
        let mut history: Vec<(Window, i64)> = Vec::new();
        for c in batch
            .iter_mut()
            .filter(|c| c.wants_derived(now))
            .take(budget)
        {
            c.derive = true;
            let w = Window {
                site_id: c.trigger.site_id,
                from: now - threshold::HISTORY,
                to: now,
            };
            history.push((w, c.trigger.window.whole_seconds()));
        }
        report.derived += history.len();
        let bucketed = match self.source.bucketed_visitors(&history).await {
            Ok(b) => b,
            // An outage is not a verdict on the history: try again next round.
            Err(e) if is_unavailable(&e) => return Err(e),
            // A history too big to read in time must not stall the batch:
            // these triggers get no threshold today (recorded, retried in a day).
            Err(e) => {
                tracing::warn!(
                    error = crate::logging::error_line(e.as_ref()),
                    triggers = history.len(),
                    "could not derive thresholds from traffic history; those triggers are skipped until tomorrow"
                );
                vec![(0, 0.0); history.len()]
            }
        };
        if !history.is_empty() {
            report.queries += 1;
        }
        // In the order asked: the candidates marked `derive` above.
        let mut bucketed = bucketed.into_iter();
        for c in batch.iter_mut() {
            let history = if c.derive { bucketed.next() } else { None };
            c.settle_threshold(history);
        }
        Ok(())
    }

    /// Steps 3 and 4: one count per distinct window (triggers of one site
    /// with the same window share it), then each trigger's decision.
    async fn count_and_decide(
        &self,
        batch: &mut [Candidate],
        now: OffsetDateTime,
        report: &mut RoundReport,
    ) -> Result<()> {
        let mut distinct: Vec<Window> = batch.iter().filter_map(|c| c.window(now)).collect();
        report.skipped += batch.len() - distinct.len();
        distinct.sort_by_key(|w| (w.site_id, w.from));
        distinct.dedup();
        let counts = self.source.unique_visitors(&distinct).await?;
        if !distinct.is_empty() {
            report.queries += 1;
        }
        let count: BTreeMap<(i64, OffsetDateTime), i64> = distinct
            .iter()
            .map(|w| (w.site_id, w.from))
            .zip(counts)
            .collect();
        for c in batch.iter_mut() {
            let Some(w) = c.window(now) else { continue };
            let visitors = count[&(w.site_id, w.from)];
            c.decide(w, visitors, now);
            report.evaluated += 1;
            match c.trigger.kind {
                ThresholdKind::Spike => report.evaluated_spikes += 1,
                ThresholdKind::Drop => report.evaluated_drops += 1,
            }
        }
        Ok(())
    }

    /// Step 5: the payloads of a batch's firings, with three statements
    /// whatever their number: baselines, top sources, top pages.
    async fn payloads(
        &self,
        db: &deadpool_postgres::Transaction<'_>,
        fired: &[&Candidate],
        report: &mut RoundReport,
    ) -> Result<Vec<serde_json::Value>> {
        if fired.is_empty() {
            return Ok(Vec::new());
        }
        let past = baseline_windows(db, fired).await?;
        report.queries += 1;
        let history = self.source.unique_visitors(&past).await?;
        report.queries += 1;
        let spikes: Vec<Window> = fired
            .iter()
            .filter(|c| c.trigger.kind == ThresholdKind::Spike)
            .filter_map(|c| c.verdict.map(|v| v.window))
            .collect();
        let (mut sources, mut pages) = (Vec::new().into_iter(), Vec::new().into_iter());
        if !spikes.is_empty() {
            sources = self.source.top_sources(&spikes, TOP_N).await?.into_iter();
            pages = self.source.top_pages(&spikes, TOP_N).await?.into_iter();
            report.queries += 2;
        }
        Ok(fired
            .iter()
            .zip(history.chunks(BASELINE_DAYS as usize))
            .map(|(c, days)| {
                let top = (c.trigger.kind == ThresholdKind::Spike).then(|| {
                    (
                        sources.next().unwrap_or_default(),
                        pages.next().unwrap_or_default(),
                    )
                });
                firing_payload(c, days, top, &self.cfg.base_url)
            })
            .collect())
    }

    /// Step 6: the batch's new states, and its firings' deliveries.
    async fn record(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        batch: &[Candidate],
        fired: &[&Candidate],
        payloads: Vec<serde_json::Value>,
        now: OffsetDateTime,
        report: &mut RoundReport,
    ) -> Result<()> {
        let mut deliveries = Enqueue::default();
        for (c, payload) in fired.iter().zip(payloads) {
            let t = &c.trigger;
            let event = t.kind.trigger_type().event_type();
            deliveries.push(
                t.webhook_id,
                t.id,
                event,
                payload,
                format!("{event}:{}:{}", t.id, now.unix_timestamp()),
            );
            report.fired += 1;
            tracing::info!(
                trigger_id = %t.id,
                webhook_id = %t.webhook_id,
                site = %t.domain,
                event,
                visitors = c.verdict.map(|v| v.visitors),
                threshold = c.threshold.map(|t| t.value),
                "trigger fired"
            );
        }

        let next = now + self.interval_time();
        let paused_next = now + self.interval_time().max(PAUSED_RECHECK);
        let ids: Vec<Uuid> = batch.iter().map(|c| c.trigger.id).collect();
        let paused: Vec<Uuid> = batch
            .iter()
            .filter(|c| c.trigger.paused)
            .map(|c| c.trigger.id)
            .collect();
        let states: Vec<NewState> = batch.iter().map(|c| c.new_state(now)).collect();
        let armed: Vec<bool> = states.iter().map(|s| s.armed).collect();
        let evaluated: Vec<bool> = states.iter().map(|s| s.evaluated).collect();
        let fired_at: Vec<Option<OffsetDateTime>> = states.iter().map(|s| s.fired_at).collect();
        let value: Vec<Option<i32>> = states.iter().map(|s| s.value).collect();
        let derived: Vec<Option<i32>> = states.iter().map(|s| s.derived).collect();
        let derived_at: Vec<Option<OffsetDateTime>> = states.iter().map(|s| s.derived_at).collect();
        tx.execute(
            UPDATE_SQL,
            &[
                &now,
                &next,
                &ids,
                &armed,
                &evaluated,
                &fired_at,
                &value,
                &derived,
                &derived_at,
                &paused,
                &paused_next,
            ],
        )
        .await
        .context("recording trigger states")?;
        report.queries += 1;
        if !deliveries.is_empty() {
            deliveries.execute(tx).await?;
            report.queries += 1;
        }
        Ok(())
    }
}

impl Batched for Evaluator {
    type Report = RoundReport;

    /// Steps 1 to 6.
    async fn batch(
        &self,
        now: OffsetDateTime,
        report: &mut RoundReport,
        claimed_ids: &mut Vec<Uuid>,
    ) -> Result<usize> {
        let mut client = self
            .pool
            .get()
            .await
            .context("getting a database connection")?;
        let tx = client.transaction().await?;
        let (mut batch, rows) = self.claim(&tx, now, report).await?;
        claimed_ids.extend(batch.iter().map(|c| c.trigger.id));
        if batch.is_empty() {
            tx.commit().await?;
            return Ok(rows);
        }
        report.claimed += batch.len();
        report.paused += batch.iter().filter(|c| c.trigger.paused).count();
        self.settle_thresholds(&mut batch, now, report).await?;
        self.count_and_decide(&mut batch, now, report).await?;
        let fired: Vec<&Candidate> = batch.iter().filter(|c| c.fired()).collect();
        let payloads = self.payloads(&tx, &fired, report).await?;
        self.record(&tx, &batch, &fired, payloads, now, report)
            .await?;
        if let Some(hook) = &self.cfg.before_commit {
            hook().await;
        }
        tx.commit().await.context("committing a trigger round")?;
        Ok(rows)
    }
}

impl PeriodicService for Evaluator {
    const NAME: &'static str = "evaluator";
    const WORK: &'static str = "spike/drop evaluation";
    const AFTER_FAILURE: &'static str = "the triggers stay due and are retried";
    const WARNINGS: Warnings = Warnings::OncePerOutage;
    type Outcome = RoundReport;

    fn interval(&self) -> StdDuration {
        self.cfg.interval
    }

    fn failure_pause(&self) -> StdDuration {
        ERROR_PAUSE
    }

    fn describe(&self) -> Option<String> {
        Some(self.source.describe())
    }

    async fn run_once(&mut self, _stop: &CancellationToken) -> Result<RoundReport> {
        let now = database_now(&self.pool).await?;
        pull_back_ahead(
            &self.pool,
            &[
                TriggerType::VisitorSpike.as_str(),
                TriggerType::TrafficDrop.as_str(),
                TriggerType::TrackingStopped.as_str(),
            ],
            now,
            self.interval_time(),
        )
        .await?;
        self.round(now).await
    }

    /// Until the next trigger is due, within `MIN_PAUSE ..= interval`.
    async fn pause_after(&self, _done: &RoundReport) -> StdDuration {
        self.until_next_due().await
    }
}

/// A firing's payload: `days` are its window's visitors on each of the
/// previous `BASELINE_DAYS` days, `top` a spike's top sources and pages.
fn firing_payload(
    c: &Candidate,
    days: &[i64],
    top: Option<(Vec<Ranked>, Vec<Ranked>)>,
    base_url: &str,
) -> serde_json::Value {
    let t = &c.trigger;
    let (v, threshold) = match (c.verdict, c.threshold) {
        (Some(v), Some(th)) => (v, th),
        _ => unreachable!("a firing has a threshold and a verdict"),
    };
    let baseline = days.iter().sum::<i64>() as f64 / BASELINE_DAYS as f64;
    let change =
        (baseline > 0.0).then(|| round1((v.visitors as f64 - baseline) / baseline * 100.0));
    let mut data = json!({
        "trigger_id": t.id,
        "visitors": v.visitors,
        "threshold": threshold.value,
        "threshold_source": threshold.source,
        "window_secs": t.window.whole_seconds(),
        "window_start": rfc3339_seconds(v.window.from),
        "window_end": rfc3339_seconds(v.window.to),
        "baseline_visitors": round1(baseline),
        "baseline_days": BASELINE_DAYS,
        "change_percent": change,
    });
    let obj = data.as_object_mut().expect("an object");
    if let Some((sources, pages)) = top {
        let ranked = |items: Vec<Ranked>, key: &str| -> serde_json::Value {
            items
                .into_iter()
                .map(|r| json!({key: r.name, "visitors": r.visitors}))
                .collect()
        };
        obj.insert("top_sources".into(), ranked(sources, "source"));
        obj.insert("top_pages".into(), ranked(pages, "page"));
    }
    if let Some(url) = dashboard_url(base_url, &t.domain, t.kind) {
        obj.insert("dashboard_url".into(), url.into());
    }
    data
}

/// A spike's or drop's `data` as a real firing has it, made by
/// `firing_payload` itself from a made-up trigger and counts: the `test`
/// event's sample, so a receiver written against `test` gets every key real
/// events carry.
pub fn sample_payload(kind: ThresholdKind, base_url: &str) -> serde_json::Value {
    let now = time::macros::datetime!(2026-01-01 12:00:00 UTC);
    let (threshold, visitors, baseline_day) = match kind {
        ThresholdKind::Spike => (100, 120, 40),
        ThresholdKind::Drop => (10, 3, 25),
    };
    let mut c = Candidate::new(made_up_trigger(kind, Some(threshold), "example.com"));
    c.settle_threshold(None);
    if let Some(w) = c.window(now) {
        c.decide(w, i64::from(visitors), now);
    }
    let top = (kind == ThresholdKind::Spike).then(|| {
        let ranked = |name: &str, visitors| {
            vec![Ranked {
                name: name.into(),
                visitors,
            }]
        };
        (ranked("Google", 60), ranked("/", 80))
    });
    firing_payload(&c, &[baseline_day; BASELINE_DAYS as usize], top, base_url)
}

/// A live, armed trigger of site 1 with the kind's default window and a
/// 1 h cooldown: the sample's (and the unit tests').
fn made_up_trigger(kind: ThresholdKind, threshold: Option<i32>, domain: &str) -> Trigger {
    Trigger {
        id: Uuid::nil(),
        webhook_id: Uuid::nil(),
        kind,
        threshold,
        window: Duration::seconds(kind.default_window_secs()),
        cooldown: Duration::hours(1),
        state: State {
            armed: true,
            last_fired_at: None,
        },
        derived: None,
        derived_at: None,
        site_id: 1,
        domain: domain.into(),
        live: true,
        paused: false,
        timezone: "UTC".into(),
    }
}

/// Where `CLAIM_SQL`'s columns are, found by name once per batch.
struct ClaimColumns {
    id: usize,
    webhook_id: usize,
    trigger_type: usize,
    threshold: usize,
    window_secs: usize,
    cooldown_secs: usize,
    armed: usize,
    last_fired_at: usize,
    derived_threshold: usize,
    threshold_derived_at: usize,
    site_id: usize,
    domain: usize,
    webhook_live: usize,
    paused_reason: usize,
    timezone: usize,
}

impl ClaimColumns {
    fn find(columns: &[tokio_postgres::Column]) -> Result<Self> {
        let at = |name: &str| position(columns, name);
        Ok(Self {
            id: at("id")?,
            webhook_id: at("webhook_id")?,
            trigger_type: at("trigger_type")?,
            threshold: at("threshold")?,
            window_secs: at("window_secs")?,
            cooldown_secs: at("cooldown_secs")?,
            armed: at("armed")?,
            last_fired_at: at("last_fired_at")?,
            derived_threshold: at("derived_threshold")?,
            threshold_derived_at: at("threshold_derived_at")?,
            site_id: at("site_id")?,
            domain: at("domain")?,
            webhook_live: at("webhook_live")?,
            paused_reason: at("paused_reason")?,
            timezone: at("timezone")?,
        })
    }

    /// A claimed trigger; None for an unknown type (skipped); Err for a row
    /// that cannot be read (its id, and which column and why).
    fn trigger(&self, r: &tokio_postgres::Row) -> Result<Option<Trigger>, (Uuid, Unreadable)> {
        let id: Uuid = r.get(self.id);
        let Some(kind) = TriggerType::from_schema(r.get(self.trigger_type))
            .and_then(TriggerType::threshold_kind)
        else {
            tracing::warn!(trigger_id = %id, "unknown trigger type; skipped");
            return Ok(None);
        };
        let read = || -> Result<Trigger, Unreadable> {
            let window: Option<i32> = col(r, self.window_secs)?;
            let cooldown: i32 = col(r, self.cooldown_secs)?;
            let paused: Option<String> = col(r, self.paused_reason)?;
            Ok(Trigger {
                id,
                webhook_id: col(r, self.webhook_id)?,
                kind,
                threshold: col(r, self.threshold)?,
                window: Duration::seconds(
                    window.map(i64::from).unwrap_or(kind.default_window_secs()),
                ),
                cooldown: Duration::seconds(i64::from(cooldown)),
                state: State {
                    armed: col(r, self.armed)?,
                    last_fired_at: col(r, self.last_fired_at)?,
                },
                derived: col(r, self.derived_threshold)?,
                derived_at: col(r, self.threshold_derived_at)?,
                site_id: col(r, self.site_id)?,
                domain: col(r, self.domain)?,
                live: col::<bool>(r, self.webhook_live)? && paused.is_none(),
                paused: paused.is_some(),
                timezone: col::<Option<String>>(r, self.timezone)?.unwrap_or_default(),
            })
        };
        read().map(Some).map_err(|u| (id, u))
    }
}

/// Each firing's window on each of the previous `BASELINE_DAYS` days of
/// its site's timezone, `BASELINE_DAYS` per firing in order. PostgreSQL
/// does the calendar arithmetic (it has the zone database); a timezone
/// it does not know is read as UTC rather than failing the batch.
async fn baseline_windows(
    db: &deadpool_postgres::Transaction<'_>,
    fired: &[&Candidate],
) -> Result<Vec<Window>> {
    let windows: Vec<Window> = fired
        .iter()
        .filter_map(|c| c.verdict.map(|v| v.window))
        .collect();
    let tz: Vec<&str> = fired.iter().map(|c| c.trigger.timezone.as_str()).collect();
    day_shifted(db, &windows, &tz).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-03-02 10:00 UTC);

    /// A live, armed trigger that never fired.
    fn trigger(kind: ThresholdKind, threshold: Option<i32>) -> Trigger {
        made_up_trigger(kind, threshold, "shop.example")
    }

    /// Steps 2 to 4 for one trigger: `history` as step 2 reads it (when
    /// derived), `visitors` as step 3 counts them.
    fn evaluate(t: Trigger, history: Option<(i64, f64)>, visitors: i64) -> Candidate {
        let mut c = Candidate::new(t);
        c.derive = history.is_some();
        c.settle_threshold(history);
        if let Some(w) = c.window(NOW) {
            c.decide(w, visitors, NOW);
        }
        c
    }

    #[test]
    fn a_configured_threshold_fires_at_it_and_disarms() {
        let c = evaluate(trigger(ThresholdKind::Spike, Some(100)), None, 100);
        assert!(c.fired());
        assert_eq!(
            c.threshold,
            Some(Threshold {
                value: 100,
                source: "configured"
            })
        );
        assert_eq!(
            c.new_state(NOW),
            NewState {
                armed: false,
                evaluated: true,
                fired_at: Some(NOW),
                value: Some(100),
                derived: None,
                derived_at: None,
            }
        );
        let w = c.verdict.unwrap().window;
        assert_eq!((w.from, w.to), (NOW - Duration::minutes(5), NOW));
    }

    #[test]
    fn below_a_spike_threshold_or_at_a_drop_one_does_not_fire_and_rearms() {
        for (kind, visitors) in [(ThresholdKind::Spike, 99), (ThresholdKind::Drop, 100)] {
            let mut t = trigger(kind, Some(100));
            t.state.armed = false;
            let c = evaluate(t, None, visitors);
            assert!(!c.fired(), "{kind:?}");
            let s = c.new_state(NOW);
            assert!(s.armed && s.evaluated && s.fired_at.is_none(), "{kind:?}");
            assert_eq!(s.value, Some(visitors as i32));
        }
    }

    #[test]
    fn a_disarmed_trigger_stays_silent_on_the_alerting_side() {
        let mut t = trigger(ThresholdKind::Drop, Some(10));
        t.state.armed = false;
        let c = evaluate(t, None, 3);
        assert!(!c.fired());
        assert!(!c.new_state(NOW).armed);
    }

    #[test]
    fn within_the_cooldown_a_crossing_is_held_and_the_trigger_stays_armed() {
        let mut t = trigger(ThresholdKind::Spike, Some(10));
        t.state.last_fired_at = Some(NOW - Duration::minutes(59));
        let c = evaluate(t, None, 50);
        assert!(!c.fired());
        let s = c.new_state(NOW);
        assert!(s.armed && s.evaluated);
    }

    #[test]
    fn a_trigger_not_live_is_skipped_and_keeps_its_state() {
        let mut t = trigger(ThresholdKind::Spike, Some(10));
        (t.live, t.paused) = (false, true);
        t.state.armed = false;
        assert!(!Candidate::new(t.clone()).wants_derived(NOW));
        let c = evaluate(t, None, 1_000);
        assert_eq!((c.threshold, c.verdict, c.window(NOW)), (None, None, None));
        assert_eq!(
            c.new_state(NOW),
            NewState {
                armed: false,
                evaluated: false,
                fired_at: None,
                value: None,
                derived: None,
                derived_at: None,
            }
        );
    }

    #[test]
    fn a_threshold_derived_now_is_used_and_stored() {
        let t = trigger(ThresholdKind::Spike, None);
        assert!(Candidate::new(t.clone()).wants_derived(NOW));
        // 7 days of 5-minute windows at 30 visitors each: usual 30, spike 60.
        let history = Some((2016 * 30, 7.0 * 86_400.0));
        let c = evaluate(t.clone(), history, 60);
        assert_eq!(
            c.threshold,
            Some(Threshold {
                value: 60,
                source: "derived"
            })
        );
        assert!(c.fired());
        let s = c.new_state(NOW);
        assert_eq!((s.derived, s.derived_at), (Some(60), Some(NOW)));
        assert!(!evaluate(t, history, 59).fired());
    }

    #[test]
    fn a_drop_without_enough_history_records_none_yet_and_is_skipped() {
        // 14 windows of 12 hours with 26 visitors in all: usual 1.86, and
        // half of it is under 1.
        let c = evaluate(
            trigger(ThresholdKind::Drop, None),
            Some((26, 7.0 * 86_400.0)),
            0,
        );
        assert_eq!((c.threshold, c.verdict), (None, None));
        let s = c.new_state(NOW);
        assert_eq!(
            (s.derived, s.derived_at, s.evaluated),
            (Some(0), Some(NOW), false)
        );
        // Stored that way and not stale yet, it is not derived again and
        // still skipped: 0 is no threshold.
        let mut t = trigger(ThresholdKind::Drop, None);
        (t.derived, t.derived_at) = (Some(0), Some(NOW - Duration::hours(1)));
        assert!(!Candidate::new(t.clone()).wants_derived(NOW));
        assert_eq!(evaluate(t, None, 0).threshold, None);
    }

    #[test]
    fn a_stored_derived_threshold_is_used_until_a_day_old() {
        let mut t = trigger(ThresholdKind::Drop, None);
        (t.derived, t.derived_at) = (Some(15), Some(NOW - Duration::hours(23)));
        assert!(!Candidate::new(t.clone()).wants_derived(NOW));
        let c = evaluate(t.clone(), None, 14);
        assert_eq!(
            c.threshold,
            Some(Threshold {
                value: 15,
                source: "derived"
            })
        );
        assert!(c.fired());
        assert_eq!(c.new_state(NOW).derived, None, "not derived again");
        t.derived_at = Some(NOW - Duration::hours(24));
        assert!(Candidate::new(t).wants_derived(NOW));
    }

    #[test]
    fn a_huge_count_is_stored_clamped() {
        let c = evaluate(trigger(ThresholdKind::Spike, Some(10)), None, i64::MAX);
        assert_eq!(c.new_state(NOW).value, Some(i32::MAX));
    }

    #[test]
    fn the_baseline_is_the_mean_of_seven_days_and_a_zero_one_has_no_change() {
        let c = evaluate(trigger(ThresholdKind::Drop, Some(10)), None, 4);
        let p = firing_payload(&c, &[0; 7], None, "");
        assert_eq!(p["baseline_visitors"], 0.0);
        assert_eq!(p["change_percent"], serde_json::Value::Null);
        assert_eq!(p["threshold_source"], "configured");
        assert!(p.get("top_sources").is_none() && p.get("dashboard_url").is_none());
        // Mean 10/7 = 1.43 → 1.4; (4 - 1.43) / 1.43 = +180 %.
        let p = firing_payload(&c, &[10, 0, 0, 0, 0, 0, 0], None, "");
        assert_eq!(p["baseline_visitors"], 1.4);
        assert_eq!(p["change_percent"], 180.0);
        // A drop: 4 against a usual 8 is -50 %.
        let p = firing_payload(&c, &[8; 7], None, "https://p.example");
        assert_eq!(p["change_percent"], -50.0);
        assert_eq!(p["dashboard_url"], "https://p.example/shop.example");
    }

    #[test]
    fn a_spike_payload_lists_its_top_sources_and_pages() {
        let c = evaluate(trigger(ThresholdKind::Spike, Some(10)), None, 12);
        let ranked = |name: &str| {
            vec![Ranked {
                name: name.into(),
                visitors: 5,
            }]
        };
        let p = firing_payload(&c, &[6; 7], Some((ranked("Google"), ranked("/"))), "");
        assert_eq!(
            p["top_sources"],
            json!([{"source": "Google", "visitors": 5}])
        );
        assert_eq!(p["top_pages"], json!([{"page": "/", "visitors": 5}]));
        assert_eq!(p["change_percent"], 100.0);
        assert_eq!(p["window_secs"], 300);
    }

    #[test]
    fn dashboard_links() {
        assert_eq!(
            dashboard_url(
                "https://plausible.example.com/",
                "shop.example",
                ThresholdKind::Spike
            )
            .as_deref(),
            Some("https://plausible.example.com/shop.example?period=realtime")
        );
        assert_eq!(
            dashboard_url("https://p.example/stats", "a b/c", ThresholdKind::Drop).as_deref(),
            Some("https://p.example/stats/a%20b%2Fc")
        );
        assert_eq!(dashboard_url("", "x", ThresholdKind::Drop), None);
    }
}
