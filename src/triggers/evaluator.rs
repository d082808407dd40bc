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
//! A crash anywhere before the commit rolls all of it back: the trigger is
//! due again and the next round (on any instance) evaluates it afresh, so a
//! notification is never lost and never doubled.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use anyhow::{Context, Result};
use deadpool_postgres::Pool;
use serde_json::json;
use time::{Duration, OffsetDateTime};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::source::{is_unavailable, AnalyticsSource, Ranked, Window};
use super::{
    decide, round1, set_aside, set_aside_unreadable, threshold, BeforeCommit, Enqueue, Outage,
    State, TriggerKind, PAUSED_RECHECK,
};
use crate::delivery::envelope::rfc3339_seconds;
use crate::queue::claimer::{col, Unreadable};

/// The baseline: the same window at the same time of day on each of the
/// previous `BASELINE_DAYS` days of the site's timezone (so across a DST
/// change it is 23 or 25 hours back, as the site owner's dashboard counts
/// days), averaged.
pub const BASELINE_DAYS: i64 = 7;
/// Sources and pages listed in a spike payload (as Plausible's spike email).
pub const TOP_N: i64 = 3;
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
       w.site_id, ps.domain, (w.enabled AND w.deleted_at IS NULL), ",
    paused_reason_sql!(),
    ", ps.timezone::text
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

const NEXT_DUE_SQL: &str = "
SELECT min(next_evaluation_at) FROM webhook_triggers
WHERE enabled AND trigger_type IN ('visitor_spike', 'traffic_drop')";

#[derive(Clone)]
pub struct EvaluatorConfig {
    pub interval: StdDuration,
    pub batch: i64,
    /// Plausible's public URL, for dashboard links (empty: none).
    pub base_url: String,
    pub before_commit: Option<BeforeCommit>,
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
}

pub struct Evaluator {
    cfg: EvaluatorConfig,
    pool: Pool,
    source: Arc<AnalyticsSource>,
}

struct Claimed {
    id: Uuid,
    webhook_id: Uuid,
    kind: TriggerKind,
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

/// The new state of one claimed trigger.
struct Outcome {
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

    pub fn start(self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut outage = Outage::new("spike/drop evaluation", self.source.describe());
            loop {
                let pause = match self.round(OffsetDateTime::now_utc()).await {
                    Ok(_) => {
                        outage.ended();
                        self.until_next_due().await
                    }
                    Err(e) => {
                        outage.failed(&e, "the triggers stay due and are retried");
                        ERROR_PAUSE
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.cancelled() => break,
                }
            }
        })
    }

    async fn until_next_due(&self) -> StdDuration {
        let next: Option<OffsetDateTime> = match self.pool.get().await {
            Ok(c) => c
                .query_one(NEXT_DUE_SQL, &[])
                .await
                .ok()
                // A time past what the daemon reads (sql/0004 refuses
                // them) waits the interval, as none would.
                .and_then(|r| r.try_get(0).ok().flatten()),
            Err(_) => None,
        };
        let wait = next
            .map(|at| (at - OffsetDateTime::now_utc()).max(Duration::ZERO))
            .and_then(|d| StdDuration::try_from(d).ok())
            .unwrap_or(self.cfg.interval);
        wait.clamp(MIN_PAUSE, self.cfg.interval)
    }

    /// Evaluates every trigger due at `now`, batch by batch.
    pub async fn round(&self, now: OffsetDateTime) -> Result<RoundReport> {
        let started = std::time::Instant::now();
        let mut report = RoundReport::default();
        let mut derive_budget = DERIVE_PER_ROUND;
        let mut failed = None;
        loop {
            let mut ids = Vec::new();
            let n = match self
                .batch(now, &mut report, &mut derive_budget, &mut ids)
                .await
            {
                Ok(n) => n,
                // The claim itself failed: nothing to set aside, stop here.
                Err(e) if ids.is_empty() => return Err(e),
                // A batch that fails (a timeout, a bad row) is set aside until
                // its next evaluation.
                Err(e) => {
                    if !set_aside(&self.pool, &ids, now + self.interval(), e, &mut failed).await {
                        break;
                    }
                    ids.len()
                }
            };
            if (n as i64) < self.cfg.batch {
                break;
            }
        }
        if let Some(e) = failed {
            return Err(e.context(
                "a batch of triggers failed and was set aside until its next evaluation",
            ));
        }
        let took = started.elapsed();
        for (kind, n) in [
            (TriggerKind::Spike, report.evaluated_spikes),
            (TriggerKind::Drop, report.evaluated_drops),
        ] {
            if n > 0 {
                crate::metrics::trigger_round(kind.event_type(), n as u64, took);
            }
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

    fn interval(&self) -> Duration {
        Duration::try_from(self.cfg.interval).unwrap_or(Duration::MINUTE)
    }

    /// One batch; `claimed` receives the ids as soon as they are claimed.
    async fn batch(
        &self,
        now: OffsetDateTime,
        report: &mut RoundReport,
        derive_budget: &mut usize,
        claimed_ids: &mut Vec<Uuid>,
    ) -> Result<usize> {
        let mut client = self
            .pool
            .get()
            .await
            .context("getting a database connection")?;
        let tx = client.transaction().await?;
        let rows = tx
            .query(CLAIM_SQL, &[&now, &self.cfg.batch])
            .await
            .context("claiming due spike/drop triggers")?;
        report.queries += 1;
        let mut claimed: Vec<Claimed> = Vec::with_capacity(rows.len());
        let mut unreadable: Vec<Uuid> = Vec::new();
        for r in &rows {
            match parse_claimed(r) {
                Ok(Some(c)) => claimed.push(c),
                Ok(None) => {}
                Err((id, u)) => {
                    tracing::warn!(trigger_id = %id, error = %u,
                        "a trigger cannot be read; set aside (not evaluated) until the row is corrected");
                    unreadable.push(id);
                }
            }
        }
        report.skipped += unreadable.len();
        set_aside_unreadable(&tx, &unreadable, now).await?;
        claimed_ids.extend(claimed.iter().map(|c| c.id));
        if claimed.is_empty() {
            tx.commit().await?;
            return Ok(rows.len());
        }
        report.claimed += claimed.len();
        report.paused += claimed.iter().filter(|c| c.paused).count();

        // Thresholds: configured, or derived (and re-derived once a day, all
        // of the batch's in one statement).
        let derive: Vec<usize> = (0..claimed.len())
            .filter(|&i| {
                let c = &claimed[i];
                c.live && c.threshold.is_none() && threshold::stale(c.derived_at, now)
            })
            .take(*derive_budget)
            .collect();
        *derive_budget -= derive.len();
        report.derived += derive.len();
        let history: Vec<(Window, i64)> = derive
            .iter()
            .map(|&i| {
                let c = &claimed[i];
                let w = Window {
                    site_id: c.site_id,
                    from: now - threshold::HISTORY,
                    to: now,
                };
                (w, c.window.whole_seconds())
            })
            .collect();
        let bucketed = match self.source.bucketed_visitors(&history).await {
            Ok(b) => b,
            // An outage is not a verdict on the history: try again next round.
            Err(e) if is_unavailable(&e) => return Err(e),
            // A history too big to read in time must not stall the batch:
            // these triggers get no threshold today (recorded, retried in a day).
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    triggers = history.len(),
                    "could not derive thresholds from traffic history; those triggers are skipped until tomorrow"
                );
                vec![(0, 0.0); history.len()]
            }
        };
        if !history.is_empty() {
            report.queries += 1;
        }
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(claimed.len());
        let mut thresholds: Vec<Option<(i64, &'static str)>> = Vec::with_capacity(claimed.len());
        for (i, c) in claimed.iter().enumerate() {
            let mut o = Outcome {
                armed: c.state.armed,
                evaluated: false,
                fired_at: None,
                value: None,
                derived: None,
                derived_at: None,
            };
            let t = match (c.live, c.threshold) {
                (false, _) => None,
                (true, Some(t)) => Some((i64::from(t), "configured")),
                (true, None) => match derive.binary_search(&i).ok() {
                    None => c.derived.map(|t| (i64::from(t), "derived")),
                    Some(k) => {
                        let (sum, covered) = bucketed[k];
                        let usual =
                            threshold::usual_per_window(sum, c.window.whole_seconds(), covered);
                        let derived = threshold::derive(c.kind, usual);
                        // 0 records "derived, none yet" so it is not recomputed each round.
                        o.derived = Some(derived.unwrap_or(0));
                        o.derived_at = Some(now);
                        derived.map(|t| (i64::from(t), "derived"))
                    }
                },
            };
            thresholds.push(t.filter(|(t, _)| *t >= 1));
            outcomes.push(o);
        }

        let evaluate: Vec<usize> = (0..claimed.len())
            .filter(|&i| thresholds[i].is_some())
            .collect();
        report.skipped += claimed.len() - evaluate.len();
        let windows: Vec<Window> = evaluate
            .iter()
            .map(|&i| Window {
                site_id: claimed[i].site_id,
                from: now - claimed[i].window,
                to: now,
            })
            .collect();
        // Triggers of one site with the same window share one count.
        let mut distinct: Vec<Window> = windows.clone();
        distinct.sort_by_key(|w| (w.site_id, w.from));
        distinct.dedup();
        let distinct_counts = self.source.unique_visitors(&distinct).await?;
        if !distinct.is_empty() {
            report.queries += 1;
        }
        let counts: Vec<i64> = windows
            .iter()
            .map(|w| {
                let k = distinct
                    .binary_search_by_key(&(w.site_id, w.from), |d| (d.site_id, d.from))
                    .expect("every window is among the distinct ones");
                distinct_counts[k]
            })
            .collect();

        // (claimed index, window, visitors, threshold, source) of each firing.
        let mut fired: Vec<Fired> = Vec::new();
        for (k, &i) in evaluate.iter().enumerate() {
            let c = &claimed[i];
            let (threshold, threshold_source) = thresholds[i].expect("filtered above");
            let visitors = counts[k];
            let d = decide(c.kind, visitors, threshold, c.state, c.cooldown, now);
            let o = &mut outcomes[i];
            o.evaluated = true;
            o.armed = d.armed;
            o.value = Some(visitors.min(i64::from(i32::MAX)) as i32);
            report.evaluated += 1;
            match c.kind {
                TriggerKind::Spike => report.evaluated_spikes += 1,
                TriggerKind::Drop => report.evaluated_drops += 1,
            }
            if d.fire {
                o.fired_at = Some(now);
                fired.push(Fired {
                    claimed: i,
                    window: windows[k],
                    visitors,
                    threshold,
                    threshold_source,
                });
            }
        }
        let payloads = self.payloads(&tx, &claimed, &fired, report).await?;
        let mut deliveries = Enqueue::default();
        for (f, payload) in fired.iter().zip(payloads) {
            let c = &claimed[f.claimed];
            deliveries.push(
                c.webhook_id,
                c.id,
                c.kind.event_type(),
                payload,
                format!("{}:{}:{}", c.kind.event_type(), c.id, now.unix_timestamp()),
            );
            report.fired += 1;
            tracing::info!(
                trigger_id = %c.id,
                webhook_id = %c.webhook_id,
                site = %c.domain,
                event = c.kind.event_type(),
                visitors = f.visitors,
                threshold = f.threshold,
                "trigger fired"
            );
        }

        let next = now + self.interval();
        let paused_next = now + self.interval().max(PAUSED_RECHECK);
        let ids: Vec<Uuid> = claimed.iter().map(|c| c.id).collect();
        let paused: Vec<Uuid> = claimed.iter().filter(|c| c.paused).map(|c| c.id).collect();
        let armed: Vec<bool> = outcomes.iter().map(|o| o.armed).collect();
        let evaluated: Vec<bool> = outcomes.iter().map(|o| o.evaluated).collect();
        let fired: Vec<Option<OffsetDateTime>> = outcomes.iter().map(|o| o.fired_at).collect();
        let value: Vec<Option<i32>> = outcomes.iter().map(|o| o.value).collect();
        let derived: Vec<Option<i32>> = outcomes.iter().map(|o| o.derived).collect();
        let derived_at: Vec<Option<OffsetDateTime>> =
            outcomes.iter().map(|o| o.derived_at).collect();
        tx.execute(
            UPDATE_SQL,
            &[
                &now,
                &next,
                &ids,
                &armed,
                &evaluated,
                &fired,
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
            deliveries.execute(&tx).await?;
            report.queries += 1;
        }
        if let Some(hook) = &self.cfg.before_commit {
            hook().await;
        }
        tx.commit().await.context("committing a trigger round")?;
        Ok(rows.len())
    }

    /// The payloads of a batch's firings, with three statements whatever
    /// their number: baselines, top sources, top pages.
    async fn payloads(
        &self,
        db: &deadpool_postgres::Transaction<'_>,
        claimed: &[Claimed],
        fired: &[Fired],
        report: &mut RoundReport,
    ) -> Result<Vec<serde_json::Value>> {
        if fired.is_empty() {
            return Ok(Vec::new());
        }
        let past = baseline_windows(db, claimed, fired).await?;
        report.queries += 1;
        let history = self.source.unique_visitors(&past).await?;
        report.queries += 1;
        let spikes: Vec<Window> = fired
            .iter()
            .filter(|f| claimed[f.claimed].kind == TriggerKind::Spike)
            .map(|f| f.window)
            .collect();
        let (mut sources, mut pages) = (Vec::new().into_iter(), Vec::new().into_iter());
        if !spikes.is_empty() {
            sources = self.source.top_sources(&spikes, TOP_N).await?.into_iter();
            pages = self.source.top_pages(&spikes, TOP_N).await?.into_iter();
            report.queries += 2;
        }
        let mut out = Vec::with_capacity(fired.len());
        for (n, f) in fired.iter().enumerate() {
            let c = &claimed[f.claimed];
            let days = &history[n * BASELINE_DAYS as usize..(n + 1) * BASELINE_DAYS as usize];
            let baseline = days.iter().sum::<i64>() as f64 / BASELINE_DAYS as f64;
            let change =
                (baseline > 0.0).then(|| round1((f.visitors as f64 - baseline) / baseline * 100.0));
            let mut data = json!({
                "trigger_id": c.id,
                "visitors": f.visitors,
                "threshold": f.threshold,
                "threshold_source": f.threshold_source,
                "window_secs": c.window.whole_seconds(),
                "window_start": rfc3339_seconds(f.window.from),
                "window_end": rfc3339_seconds(f.window.to),
                "baseline_visitors": round1(baseline),
                "baseline_days": BASELINE_DAYS,
                "change_percent": change,
            });
            let obj = data.as_object_mut().expect("an object");
            if c.kind == TriggerKind::Spike {
                let ranked = |items: Vec<Ranked>, key: &str| -> serde_json::Value {
                    items
                        .into_iter()
                        .map(|r| json!({key: r.name, "visitors": r.visitors}))
                        .collect()
                };
                obj.insert(
                    "top_sources".into(),
                    ranked(sources.next().unwrap_or_default(), "source"),
                );
                obj.insert(
                    "top_pages".into(),
                    ranked(pages.next().unwrap_or_default(), "page"),
                );
            }
            if let Some(url) = dashboard_url(&self.cfg.base_url, &c.domain, c.kind) {
                obj.insert("dashboard_url".into(), url.into());
            }
            out.push(data);
        }
        Ok(out)
    }
}

/// A firing, before its payload is gathered.
struct Fired {
    claimed: usize,
    window: Window,
    visitors: i64,
    threshold: i64,
    threshold_source: &'static str,
}

/// A claimed trigger; None for an unknown type (skipped); Err for a row
/// that cannot be read (its id, and which column and why).
fn parse_claimed(r: &tokio_postgres::Row) -> Result<Option<Claimed>, (Uuid, Unreadable)> {
    let id: Uuid = r.get(0);
    let Some(kind) = TriggerKind::parse(r.get(2)) else {
        tracing::warn!(trigger_id = %id, "unknown trigger type; skipped");
        return Ok(None);
    };
    let read = || -> Result<Claimed, Unreadable> {
        let window: Option<i32> = col(r, 4)?;
        let cooldown: i32 = col(r, 5)?;
        let paused: Option<String> = col(r, 13)?;
        Ok(Claimed {
            id,
            webhook_id: col(r, 1)?,
            kind,
            threshold: col(r, 3)?,
            window: Duration::seconds(window.map(i64::from).unwrap_or(kind.default_window_secs())),
            cooldown: Duration::seconds(i64::from(cooldown)),
            state: State {
                armed: col(r, 6)?,
                last_fired_at: col(r, 7)?,
            },
            derived: col(r, 8)?,
            derived_at: col(r, 9)?,
            site_id: col(r, 10)?,
            domain: col(r, 11)?,
            live: col::<bool>(r, 12)? && paused.is_none(),
            paused: paused.is_some(),
            timezone: col::<Option<String>>(r, 14)?.unwrap_or_default(),
        })
    };
    read().map(Some).map_err(|u| (id, u))
}

/// Each firing's window on each of the previous `BASELINE_DAYS` days of
/// its site's timezone, `BASELINE_DAYS` per firing in order. PostgreSQL
/// does the calendar arithmetic (it has the zone database); a timezone
/// it does not know is read as UTC rather than failing the batch.
async fn baseline_windows(
    db: &deadpool_postgres::Transaction<'_>,
    claimed: &[Claimed],
    fired: &[Fired],
) -> Result<Vec<Window>> {
    const SQL: &str = "
WITH q AS (
SELECT * FROM unnest($1::timestamptz[], $2::timestamptz[], $3::text[]) WITH ORDINALITY AS q(f, t, tz, i)
), z AS (
SELECT DISTINCT q.tz, coalesce((SELECT n.name FROM pg_timezone_names n WHERE n.name = q.tz), 'UTC') AS zone
FROM q
)
SELECT ((q.f AT TIME ZONE z.zone) - make_interval(days => k)) AT TIME ZONE z.zone,
   ((q.t AT TIME ZONE z.zone) - make_interval(days => k)) AT TIME ZONE z.zone
FROM q JOIN z ON z.tz = q.tz CROSS JOIN generate_series(1, $4::int4) AS k
ORDER BY q.i, k";
    let from: Vec<OffsetDateTime> = fired.iter().map(|f| f.window.from).collect();
    let to: Vec<OffsetDateTime> = fired.iter().map(|f| f.window.to).collect();
    let tz: Vec<&str> = fired
        .iter()
        .map(|f| claimed[f.claimed].timezone.as_str())
        .collect();
    let rows = db
        .query(SQL, &[&from, &to, &tz, &(BASELINE_DAYS as i32)])
        .await
        .context("computing baseline days in the sites' timezones")?;
    Ok(rows
        .iter()
        .enumerate()
        .map(|(n, r)| Window {
            site_id: fired[n / BASELINE_DAYS as usize].window.site_id,
            from: r.get(0),
            to: r.get(1),
        })
        .collect())
}

/// `<base>/<domain>` (the realtime view for a spike), or None without a base URL.
pub fn dashboard_url(base: &str, domain: &str, kind: TriggerKind) -> Option<String> {
    let base = base.trim();
    if base.is_empty() {
        return None;
    }
    let mut u = url::Url::parse(base).ok()?;
    u.path_segments_mut().ok()?.pop_if_empty().push(domain);
    if kind == TriggerKind::Spike {
        u.set_query(Some("period=realtime"));
    }
    Some(u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_links() {
        assert_eq!(
            dashboard_url(
                "https://plausible.example.com/",
                "shop.example",
                TriggerKind::Spike
            )
            .as_deref(),
            Some("https://plausible.example.com/shop.example?period=realtime")
        );
        assert_eq!(
            dashboard_url("https://p.example/stats", "a b/c", TriggerKind::Drop).as_deref(),
            Some("https://p.example/stats/a%20b%2Fc")
        );
        assert_eq!(dashboard_url("", "x", TriggerKind::Drop), None);
    }
}
