//! Tracking triggers (`tracking_stopped`): a site that normally receives
//! events has received none for the trigger's window — its script was
//! removed or broke — and, later, events arrive again.
//!
//! Evaluated by the evaluator's rounds (`Evaluator::round`), after spikes
//! and drops, in batches of their own (claimed `FOR UPDATE SKIP LOCKED`,
//! state and deliveries committed together), one statement per step for the
//! whole batch:
//! 1. claim due tracking triggers;
//! 2. ask the source for each site's last event in the last
//!    `LOOKBACK_DAYS` (`AnalyticsSource::last_event`);
//! 3. for the armed ones with no event in `[now - window, now]` (silent),
//!    the baseline: unique visitors in the same window at the same time of
//!    day on each of the previous `BASELINE_DAYS` days of the site's
//!    timezone (the spike/drop baseline, `evaluator::day_shifted`);
//! 4. decide (`decide`, no database): silent, armed and a site that
//!    normally has visitors then (on at least `USUAL_DAYS` of those days)
//!    sends `site.tracking_stopped` and disarms; not silent and disarmed
//!    sends `site.tracking_resumed` and re-arms. So each outage sends one
//!    stopped and one resumed, and a site without that baseline (new, empty,
//!    or quiet at this hour) sends nothing;
//! 5. write the states (`armed`, `last_fired_at`, `last_evaluated_at`,
//!    `next_evaluation_at`) and enqueue the deliveries; commit.

use anyhow::{Context, Result};
use deadpool_postgres::Pool;
use serde_json::json;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::baseline::{dashboard_url, day_shifted, BASELINE_DAYS};
use super::source::{AnalyticsSource, Window};
use super::{
    round1, set_aside_unreadable, Batched, BeforeCommit, Enqueue, ThresholdKind, PAUSED_RECHECK,
};
use crate::db::timestamp::rfc3339_seconds;

/// The events a tracking trigger sends.
pub use super::{TRACKING_RESUMED as RESUMED, TRACKING_STOPPED as STOPPED};

/// What a round's tracking batches did (the evaluator adds it to its report).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TrackingReport {
    pub claimed: usize,
    pub paused: usize,
    pub evaluated: usize,
    pub stopped: usize,
    pub resumed: usize,
    pub queries: usize,
}

/// A tracking trigger's window when it has none of its own: one hour
/// without an event.
pub const DEFAULT_TRACKING_WINDOW_SECS: i64 = 3600;

/// "Normally receives events": visitors in the window on at least this many
/// of the previous `BASELINE_DAYS` days (most of them).
pub const USUAL_DAYS: usize = 4;

/// How far back the last event is looked for (the payload's
/// `last_event_at` is null for a site silent longer than this).
pub const LOOKBACK_DAYS: i64 = BASELINE_DAYS + 1;

const CLAIM_SQL: &str = concat!(
    "
WITH due AS (
    SELECT id FROM webhook_triggers
    WHERE enabled AND trigger_type = 'tracking_stopped' AND next_evaluation_at <= $1
    ORDER BY next_evaluation_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
SELECT t.id, t.webhook_id, t.window_secs, t.armed, t.last_fired_at,
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
    next_evaluation_at = CASE WHEN u.paused THEN $3::timestamptz ELSE $2::timestamptz END
FROM unnest($4::uuid[], $5::bool[], $6::bool[], $7::timestamptz[], $8::bool[])
     AS u(id, armed, evaluated, fired_at, paused)
WHERE t.id = u.id";

/// A claimed tracking trigger.
#[derive(Debug, Clone)]
pub(crate) struct Tracked {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub window: Duration,
    pub armed: bool,
    pub last_fired_at: Option<OffsetDateTime>,
    pub site_id: i64,
    pub domain: String,
    /// Webhook enabled and not deleted, and not paused.
    pub live: bool,
    pub paused: bool,
    pub timezone: String,
}

/// What a round found out about one trigger, and what it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to send; `armed` is its new state.
    Quiet {
        armed: bool,
    },
    Stopped,
    Resumed,
}

impl Verdict {
    fn armed(self) -> bool {
        match self {
            Verdict::Quiet { armed } => armed,
            Verdict::Stopped => false,
            Verdict::Resumed => true,
        }
    }

    fn event(self) -> Option<&'static str> {
        match self {
            Verdict::Quiet { .. } => None,
            Verdict::Stopped => Some(STOPPED),
            Verdict::Resumed => Some(RESUMED),
        }
    }
}

/// Silent: no event in `[now - window, now]`.
pub fn silent(last_event: Option<OffsetDateTime>, window: Duration, now: OffsetDateTime) -> bool {
    last_event.is_none_or(|at| at < now - window)
}

/// Step 4. `days` is the baseline (visitors in the window on each previous
/// day), asked for only when the trigger is armed and the site silent.
pub fn decide(armed: bool, silent: bool, days: Option<&[i64]>) -> Verdict {
    match (armed, silent) {
        (true, true) => {
            let usual = days.is_some_and(|d| d.iter().filter(|v| **v > 0).count() >= USUAL_DAYS);
            if usual {
                Verdict::Stopped
            } else {
                Verdict::Quiet { armed: true }
            }
        }
        (true, false) => Verdict::Quiet { armed: true },
        (false, true) => Verdict::Quiet { armed: false },
        (false, false) => Verdict::Resumed,
    }
}

/// A firing's `data`.
pub(crate) fn payload(
    t: &Tracked,
    verdict: Verdict,
    last_event: Option<OffsetDateTime>,
    days: &[i64],
    now: OffsetDateTime,
    base_url: &str,
) -> serde_json::Value {
    let mut data = json!({
        "trigger_id": t.id,
        "domain": t.domain,
        "last_event_at": last_event.map(rfc3339_seconds),
        "window_secs": t.window.whole_seconds(),
    });
    let obj = data.as_object_mut().expect("an object");
    match verdict {
        Verdict::Stopped => {
            let baseline = days.iter().sum::<i64>() as f64 / BASELINE_DAYS as f64;
            obj.insert(
                "silent_secs".into(),
                last_event.map(|at| (now - at).whole_seconds()).into(),
            );
            obj.insert("detected_at".into(), rfc3339_seconds(now).into());
            obj.insert("baseline_visitors".into(), round1(baseline).into());
            obj.insert(
                "baseline_days_with_visitors".into(),
                (days.iter().filter(|v| **v > 0).count() as i64).into(),
            );
            obj.insert("baseline_days".into(), BASELINE_DAYS.into());
        }
        Verdict::Resumed => {
            obj.insert(
                "stopped_at".into(),
                t.last_fired_at.map(rfc3339_seconds).into(),
            );
            obj.insert("resumed_at".into(), rfc3339_seconds(now).into());
            obj.insert(
                "silent_secs".into(),
                t.last_fired_at
                    .map(|at| (now - at + t.window).whole_seconds())
                    .into(),
            );
        }
        Verdict::Quiet { .. } => {}
    }
    // The realtime view shows at once whether events arrive.
    if let Some(url) = dashboard_url(base_url, &t.domain, ThresholdKind::Spike) {
        obj.insert("dashboard_url".into(), url.into());
    }
    data
}

/// The sample of `event` (STOPPED or RESUMED) made by `payload` itself from
/// a made-up trigger: the catalog's example and the `test` event's sample.
pub fn sample_payload(event: &str, base_url: &str) -> Option<serde_json::Value> {
    let now = time::macros::datetime!(2026-01-01 12:00:00 UTC);
    let mut t = Tracked {
        id: Uuid::nil(),
        webhook_id: Uuid::nil(),
        window: Duration::seconds(DEFAULT_TRACKING_WINDOW_SECS),
        armed: true,
        last_fired_at: None,
        site_id: 1,
        domain: "example.com".into(),
        live: true,
        paused: false,
        timezone: "UTC".into(),
    };
    let (verdict, last) = match event {
        STOPPED => (Verdict::Stopped, now - Duration::minutes(75)),
        RESUMED => {
            t.last_fired_at = Some(now - Duration::hours(3));
            (Verdict::Resumed, now - Duration::seconds(20))
        }
        _ => return None,
    };
    Some(payload(
        &t,
        verdict,
        Some(last),
        &[40, 35, 0, 52, 48, 41, 39],
        now,
        base_url,
    ))
}

/// One batch of tracking triggers (the evaluator's rounds run these).
pub(crate) struct TrackingBatch<'a> {
    pub pool: &'a Pool,
    pub source: &'a Arc<AnalyticsSource>,
    pub batch: i64,
    pub base_url: &'a str,
    pub interval: Duration,
    pub before_commit: Option<&'a BeforeCommit>,
}

impl TrackingBatch<'_> {
    async fn claim(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        now: OffsetDateTime,
    ) -> Result<(Vec<Tracked>, usize)> {
        let rows = tx
            .query(CLAIM_SQL, &[&now, &self.batch])
            .await
            .context("claiming due tracking triggers")?;
        let mut batch = Vec::with_capacity(rows.len());
        let mut unreadable = Vec::new();
        for r in &rows {
            let id: Uuid = r.get("id");
            let read = || -> Result<Tracked, tokio_postgres::Error> {
                let window: Option<i32> = r.try_get("window_secs")?;
                let paused: Option<String> = r.try_get("paused_reason")?;
                Ok(Tracked {
                    id,
                    webhook_id: r.try_get("webhook_id")?,
                    window: Duration::seconds(
                        window.map_or(DEFAULT_TRACKING_WINDOW_SECS, i64::from),
                    ),
                    armed: r.try_get("armed")?,
                    last_fired_at: r.try_get("last_fired_at")?,
                    site_id: r.try_get("site_id")?,
                    domain: r.try_get("domain")?,
                    live: r.try_get::<_, bool>("webhook_live")? && paused.is_none(),
                    paused: paused.is_some(),
                    timezone: r
                        .try_get::<_, Option<String>>("timezone")?
                        .unwrap_or_default(),
                })
            };
            match read() {
                Ok(t) => batch.push(t),
                Err(e) => {
                    tracing::warn!(trigger_id = %id, error = %e,
                        "a tracking trigger cannot be read; set aside (not evaluated) until the row is corrected");
                    unreadable.push(id);
                }
            }
        }
        set_aside_unreadable(tx, &unreadable, now).await?;
        Ok((batch, rows.len()))
    }
}

impl Batched for TrackingBatch<'_> {
    type Report = TrackingReport;

    async fn batch(
        &self,
        now: OffsetDateTime,
        report: &mut TrackingReport,
        claimed_ids: &mut Vec<Uuid>,
    ) -> Result<usize> {
        let mut client = self
            .pool
            .get()
            .await
            .context("getting a database connection")?;
        let tx = client.transaction().await?;
        let (batch, rows) = self.claim(&tx, now).await?;
        report.queries += 1;
        claimed_ids.extend(batch.iter().map(|t| t.id));
        if batch.is_empty() {
            tx.commit().await?;
            return Ok(rows);
        }
        report.claimed += batch.len();
        report.paused += batch.iter().filter(|t| t.paused).count();

        // Step 2: each live trigger's site's last event.
        let live: Vec<&Tracked> = batch.iter().filter(|t| t.live).collect();
        let lookback: Vec<Window> = live
            .iter()
            .map(|t| Window {
                site_id: t.site_id,
                from: now - Duration::days(LOOKBACK_DAYS),
                to: now,
            })
            .collect();
        let last = self.source.last_event(&lookback).await?;
        if !lookback.is_empty() {
            report.queries += 1;
        }

        // Step 3: baselines of the armed, silent ones.
        let wanted: Vec<usize> = (0..live.len())
            .filter(|&i| live[i].armed && silent(last[i], live[i].window, now))
            .collect();
        let windows: Vec<Window> = wanted
            .iter()
            .map(|&i| Window {
                site_id: live[i].site_id,
                from: now - live[i].window,
                to: now,
            })
            .collect();
        let tz: Vec<&str> = wanted.iter().map(|&i| live[i].timezone.as_str()).collect();
        let mut days: Vec<Option<Vec<i64>>> = vec![None; live.len()];
        if !windows.is_empty() {
            let past = day_shifted(&tx, &windows, &tz).await?;
            let visitors = self.source.unique_visitors(&past).await?;
            report.queries += 2;
            for (&i, d) in wanted.iter().zip(visitors.chunks(BASELINE_DAYS as usize)) {
                days[i] = Some(d.to_vec());
            }
        }

        // Step 4.
        let mut deliveries = Enqueue::default();
        let mut verdicts: Vec<(Uuid, Verdict)> = Vec::with_capacity(live.len());
        for (i, t) in live.iter().enumerate() {
            let v = decide(t.armed, silent(last[i], t.window, now), days[i].as_deref());
            verdicts.push((t.id, v));
            report.evaluated += 1;
            let Some(event) = v.event() else { continue };
            match v {
                Verdict::Stopped => report.stopped += 1,
                _ => report.resumed += 1,
            }
            let data = payload(
                t,
                v,
                last[i],
                days[i].as_deref().unwrap_or(&[]),
                now,
                self.base_url,
            );
            deliveries.push(
                t.webhook_id,
                t.id,
                event,
                data,
                format!("{event}:{}:{}", t.id, now.unix_timestamp()),
            );
            tracing::info!(
                trigger_id = %t.id,
                webhook_id = %t.webhook_id,
                site = %t.domain,
                event,
                "tracking trigger fired"
            );
        }

        // Step 5.
        let ids: Vec<Uuid> = batch.iter().map(|t| t.id).collect();
        let mut armed = Vec::with_capacity(batch.len());
        let mut evaluated = Vec::with_capacity(batch.len());
        let mut fired_at: Vec<Option<OffsetDateTime>> = Vec::with_capacity(batch.len());
        let paused: Vec<bool> = batch.iter().map(|t| t.paused).collect();
        for t in &batch {
            match verdicts.iter().find(|(id, _)| *id == t.id) {
                Some((_, v)) => {
                    armed.push(v.armed());
                    evaluated.push(true);
                    fired_at.push(v.event().map(|_| now));
                }
                None => {
                    armed.push(t.armed);
                    evaluated.push(false);
                    fired_at.push(None);
                }
            }
        }
        let next = now + self.interval;
        let paused_next = now + self.interval.max(PAUSED_RECHECK);
        tx.execute(
            UPDATE_SQL,
            &[
                &now,
                &next,
                &paused_next,
                &ids,
                &armed,
                &evaluated,
                &fired_at,
                &paused,
            ],
        )
        .await
        .context("recording tracking trigger states")?;
        report.queries += 1;
        if !deliveries.is_empty() {
            deliveries.execute(&tx).await?;
            report.queries += 1;
        }
        if let Some(hook) = self.before_commit {
            hook().await;
        }
        tx.commit()
            .await
            .context("committing a tracking trigger round")?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-03-02 10:00 UTC);

    #[test]
    fn silent_means_no_event_in_the_closed_window() {
        let h = Duration::hours(1);
        assert!(silent(None, h, NOW));
        assert!(silent(Some(NOW - h - Duration::seconds(1)), h, NOW));
        assert!(!silent(Some(NOW - h), h, NOW));
        assert!(!silent(Some(NOW), h, NOW));
    }

    #[test]
    fn one_stopped_and_one_resumed_per_outage() {
        let usual = [5, 3, 0, 7, 2, 0, 1];
        let rare = [5, 0, 0, 7, 0, 0, 1];
        // Armed and silent: fires only for a site that usually has visitors.
        assert_eq!(decide(true, true, Some(&usual)), Verdict::Stopped);
        assert_eq!(
            decide(true, true, Some(&rare)),
            Verdict::Quiet { armed: true }
        );
        assert_eq!(decide(true, true, None), Verdict::Quiet { armed: true });
        // Disarmed: silent for as long as it stays silent, resumed once.
        assert_eq!(
            decide(false, true, Some(&usual)),
            Verdict::Quiet { armed: false }
        );
        assert_eq!(decide(false, false, None), Verdict::Resumed);
        assert_eq!(decide(true, false, None), Verdict::Quiet { armed: true });
    }

    #[test]
    fn samples_have_their_keys() {
        let s = sample_payload(STOPPED, "https://p.example").unwrap();
        assert_eq!(s["silent_secs"], 4500);
        assert_eq!(s["baseline_days_with_visitors"], 6);
        assert_eq!(
            s["dashboard_url"],
            "https://p.example/example.com?period=realtime"
        );
        let r = sample_payload(RESUMED, "").unwrap();
        assert_eq!(r["stopped_at"], "2026-01-01T09:00:00Z");
        assert!(r.get("dashboard_url").is_none());
        assert!(sample_payload("x", "").is_none());
    }
}
