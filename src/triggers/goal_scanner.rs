//! The goal scanner: goal_completion triggers, scanned every `interval`
//! (1 s by default) by exactly one instance each, incrementally.
//!
//! Each trigger keeps a cursor (the instant its last scan covered up to). A
//! scan at `now` reads `(cursor - lateness, now]`: the overlap catches events
//! that reached the analytics table late or out of timestamp order. Events
//! carry no id, so every completion gets a deterministic idempotency key
//! (`goals::CompletionIdentity`): the overlap finds the same completions
//! again and the queue's unique key turns them into no-ops. One POST per
//! completion; a webhook with two triggers covering the same goal still gets
//! one (the key is per webhook, not per trigger).
//!
//! A new trigger starts at its creation time (no backfill of history), one
//! switched back on at that moment (`goal_floor`, set by a database trigger). A
//! cursor older than `max_catchup` (daemon stopped, trigger re-enabled)
//! resumes `max_catchup` back, with a warning naming what was skipped. While
//! the webhook is disabled or deleted the cursor moves on and nothing is
//! enqueued (a disabled webhook receives nothing). A goal deleted in
//! Plausible takes its triggers with it (ON DELETE CASCADE); a trigger never
//! widens to all goals.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use anyhow::{Context, Result};
use deadpool_postgres::Pool;
use serde_json::json;
use time::{Duration, OffsetDateTime};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::goals::{self, CompletionIdentity, Goal, GoalKind};
use super::source::{AnalyticsSource, GoalScan};
use super::{
    in_batches, set_aside_unreadable, Batched, BeforeCommit, Enqueue, TriggerType, PAUSED_RECHECK,
};
use crate::db::row::{col, Unreadable};
use crate::db::timestamp::rfc3339_seconds;
use crate::service::{PeriodicService, Warnings};

/// After a failed round.
pub const ERROR_PAUSE: StdDuration = StdDuration::from_secs(2);

/// Paused triggers (`paused_reason_sql`) are claimed, not scanned: their
/// cursor moves on like a disabled webhook's (completions while paused are
/// never sent, not even after the team is unlocked), and they are looked at
/// again after `PAUSED_RECHECK` rather than every round.
const CLAIM_SQL: &str = concat!(
    "
WITH due AS (
    SELECT id FROM webhook_triggers
    WHERE enabled AND trigger_type = 'goal_completion' AND next_evaluation_at <= $1
    ORDER BY next_evaluation_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
SELECT t.id, t.webhook_id, t.goal_id, t.goal_cursor,
       greatest(t.inserted_at, t.goal_floor), w.site_id, (w.enabled AND w.deleted_at IS NULL), ",
    paused_reason_sql!(),
    "
FROM due
JOIN webhook_triggers t ON t.id = due.id
JOIN webhooks w ON w.id = t.webhook_id
JOIN sites ps ON ps.id = w.site_id
LEFT JOIN teams pt ON pt.id = ps.team_id"
);

/// Which of these (webhook, key) pairs are already in the queue.
const KNOWN_KEYS_SQL: &str = "
SELECT x.w, x.k FROM unnest($1::uuid[], $2::text[]) AS x(w, k)
WHERE EXISTS (SELECT 1 FROM webhook_deliveries d
              WHERE d.webhook_id = x.w AND d.idempotency_key = x.k)";

const UPDATE_SQL: &str = "
UPDATE webhook_triggers SET goal_cursor = $1, last_evaluated_at = $1,
    next_evaluation_at = CASE WHEN id = ANY($4::uuid[]) THEN $5::timestamptz ELSE $2::timestamptz END
WHERE id = ANY($3)";

#[derive(Clone)]
pub struct GoalScannerConfig {
    pub interval: StdDuration,
    pub batch: i64,
    pub lateness: Duration,
    pub max_catchup: Duration,
    pub before_commit: Option<BeforeCommit>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    pub claimed: usize,
    /// Completions found (including ones enqueued by an earlier scan).
    pub completions: usize,
    /// Deliveries newly enqueued.
    pub enqueued: u64,
    /// Of the claimed, paused (not scanned).
    pub paused: usize,
    pub queries: usize,
}

pub struct GoalScanner {
    cfg: GoalScannerConfig,
    pool: Pool,
    source: Arc<AnalyticsSource>,
}

struct GoalTrigger {
    id: Uuid,
    webhook_id: Uuid,
    goal_id: Option<i64>,
    cursor: Option<OffsetDateTime>,
    /// Never scan before this: creation, or the last time it was switched on.
    floor: OffsetDateTime,
    site_id: i64,
    /// Webhook enabled and not deleted, and the trigger not paused.
    live: bool,
    paused: bool,
}

impl GoalScanner {
    pub fn new(cfg: GoalScannerConfig, pool: Pool, source: Arc<AnalyticsSource>) -> Result<Self> {
        anyhow::ensure!(
            cfg.interval >= StdDuration::from_millis(10),
            "goal scanner: interval must be at least 10 ms"
        );
        anyhow::ensure!(cfg.batch >= 1, "goal scanner: batch must be at least 1");
        anyhow::ensure!(
            cfg.lateness >= Duration::ZERO && cfg.max_catchup >= cfg.lateness,
            "goal scanner: lateness must be >= 0 and max_catchup >= lateness"
        );
        Ok(Self { cfg, pool, source })
    }

    /// Scans every goal trigger due at `now`, batch by batch.
    pub async fn round(&self, now: OffsetDateTime) -> Result<ScanReport> {
        let started = std::time::Instant::now();
        let mut report = ScanReport::default();
        // Set aside until the next scan (cursors unchanged: nothing is lost).
        in_batches(
            self,
            &mut report,
            &self.pool,
            self.cfg.batch,
            now,
            now + self.interval_time(),
            "a batch of goal triggers failed and was set aside until the next scan",
        )
        .await?;
        if report.claimed > 0 {
            crate::metrics::trigger_round(
                TriggerType::GoalCompletion.event_type(),
                report.claimed as u64,
                started.elapsed(),
            );
            tracing::debug!(
                triggers = report.claimed,
                completions = report.completions,
                enqueued = report.enqueued,
                statements = report.queries,
                ms = started.elapsed().as_millis() as u64,
                "goal scan round"
            );
        }
        Ok(report)
    }

    /// `interval` as a span of time between instants.
    fn interval_time(&self) -> Duration {
        Duration::try_from(self.cfg.interval).unwrap_or(Duration::SECOND)
    }

    /// `(cursor - lateness)`, never before the trigger existed or was last
    /// switched on, never further back than `max_catchup`.
    fn scan_start(&self, c: &GoalTrigger, now: OffsetDateTime) -> OffsetDateTime {
        let wanted = match c.cursor {
            Some(cursor) => (cursor - self.cfg.lateness).max(c.floor),
            None => c.floor,
        };
        let floor = now - self.cfg.max_catchup;
        if wanted < floor {
            tracing::warn!(
                trigger_id = %c.id,
                webhook_id = %c.webhook_id,
                from = %rfc3339_seconds(wanted),
                resumed_at = %rfc3339_seconds(floor),
                "goal trigger was not scanned for longer than triggers.goal_max_catchup_secs; completions before resumed_at are not sent"
            );
            return floor;
        }
        wanted
    }
}

impl Batched for GoalScanner {
    type Report = ScanReport;

    async fn batch(
        &self,
        now: OffsetDateTime,
        report: &mut ScanReport,
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
            .context("claiming due goal triggers")?;
        report.queries += 1;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let mut claimed: Vec<GoalTrigger> = Vec::with_capacity(rows.len());
        let mut unreadable: Vec<Uuid> = Vec::new();
        for r in &rows {
            let id: Uuid = r.get(0);
            let read = || -> Result<GoalTrigger, Unreadable> {
                let paused = col::<Option<String>>(r, 7)?.is_some();
                Ok(GoalTrigger {
                    id,
                    webhook_id: col(r, 1)?,
                    goal_id: col(r, 2)?,
                    cursor: col(r, 3)?,
                    floor: col(r, 4)?,
                    site_id: col(r, 5)?,
                    live: col::<bool>(r, 6)? && !paused,
                    paused,
                })
            };
            match read() {
                Ok(c) => claimed.push(c),
                Err(u) => {
                    tracing::warn!(trigger_id = %id, error = %u,
                        "a goal trigger cannot be read; set aside (not scanned) until the row is corrected");
                    unreadable.push(id);
                }
            }
        }
        set_aside_unreadable(&tx, &unreadable, now).await?;
        claimed_ids.extend(claimed.iter().map(|c| c.id));
        report.claimed += claimed.len();
        report.paused += claimed.iter().filter(|c| c.paused).count();

        let mut sites: Vec<i64> = claimed
            .iter()
            .filter(|c| c.live)
            .map(|c| c.site_id)
            .collect();
        sites.sort_unstable();
        sites.dedup();
        let site_goals: Vec<Goal> = if sites.is_empty() {
            Vec::new()
        } else {
            report.queries += 1;
            goals::load_for_sites(&*tx, &sites).await?
        };

        // One scan per (trigger, goal); `owner[i]` is the trigger of scan i.
        let mut scans: Vec<GoalScan<'_>> = Vec::new();
        let mut owner: Vec<usize> = Vec::new();
        for (ci, c) in claimed.iter().enumerate().filter(|(_, c)| c.live) {
            let from = self.scan_start(c, now);
            for g in site_goals
                .iter()
                .filter(|g| g.site_id == c.site_id && c.goal_id.is_none_or(|id| id == g.id))
            {
                scans.push(GoalScan {
                    goal: g,
                    from,
                    to: now,
                });
                owner.push(ci);
            }
        }
        let completions = self.source.goal_completions(&scans).await?;
        if !scans.is_empty() {
            report.queries += 1;
        }

        // Keys first: the lateness overlap finds mostly completions already
        // enqueued by an earlier scan; only new ones get a payload and an INSERT.
        // (completion index, webhook, key)
        let mut found: Vec<(usize, Uuid, String)> = Vec::new();
        let mut seen: HashSet<(Uuid, String)> = HashSet::new();
        for (n, comp) in completions.iter().enumerate() {
            let g = scans[comp.scan].goal;
            let webhook = claimed[owner[comp.scan]].webhook_id;
            // Plausible sends an engagement event each time a page is left or
            // hidden, carrying the depth reached so far: a scroll goal
            // completes once per visit of a page (session and path), not
            // once per such event.
            let per_visit = matches!(g.kind, GoalKind::Scroll { .. });
            let count = if per_visit {
                1
            } else {
                comp.count.max(0) as u64
            };
            for ordinal in 1..=count {
                let key = CompletionIdentity {
                    goal_id: g.id,
                    site_id: g.site_id,
                    timestamp_us: if per_visit { 0 } else { comp.timestamp_us },
                    name: &comp.name,
                    pathname: &comp.pathname,
                    user_id: &comp.user_id,
                    session_id: &comp.session_id,
                    ordinal,
                }
                .key();
                if seen.insert((webhook, key.clone())) {
                    found.push((n, webhook, key));
                }
            }
        }
        report.completions += found.len();
        let known: HashSet<(Uuid, String)> = if found.is_empty() {
            HashSet::new()
        } else {
            let webhooks: Vec<Uuid> = found.iter().map(|f| f.1).collect();
            let keys: Vec<&str> = found.iter().map(|f| f.2.as_str()).collect();
            report.queries += 1;
            tx.query(KNOWN_KEYS_SQL, &[&webhooks, &keys])
                .await
                .context("looking up completions already enqueued")?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect()
        };
        let mut deliveries = Enqueue::default();
        for (n, webhook, key) in found {
            if known.contains(&(webhook, key.clone())) {
                continue;
            }
            let comp = &completions[n];
            let c = &claimed[owner[comp.scan]];
            let g = scans[comp.scan].goal;
            deliveries.push(
                webhook,
                c.id,
                TriggerType::GoalCompletion.event_type(),
                payload(c.id, g, comp.timestamp_us, &comp.pathname),
                key,
            );
        }
        if !deliveries.is_empty() {
            report.enqueued += deliveries.execute(&tx).await?;
            report.queries += 1;
        }

        let next = now + self.interval_time();
        let paused_next = now + self.interval_time().max(PAUSED_RECHECK);
        let ids: Vec<Uuid> = claimed.iter().map(|c| c.id).collect();
        let paused: Vec<Uuid> = claimed.iter().filter(|c| c.paused).map(|c| c.id).collect();
        tx.execute(UPDATE_SQL, &[&now, &next, &ids, &paused, &paused_next])
            .await
            .context("moving goal trigger cursors")?;
        report.queries += 1;
        if let Some(hook) = &self.cfg.before_commit {
            hook().await;
        }
        tx.commit().await.context("committing a goal scan")?;
        Ok(rows.len())
    }
}

impl PeriodicService for GoalScanner {
    const NAME: &'static str = "goal scanner";
    const WORK: &'static str = "goal scanning";
    const AFTER_FAILURE: &'static str = "cursors stay put and scans are retried";
    const WARNINGS: Warnings = Warnings::OncePerOutage;
    type Outcome = ScanReport;

    fn interval(&self) -> StdDuration {
        self.cfg.interval
    }

    fn failure_pause(&self) -> StdDuration {
        ERROR_PAUSE
    }

    fn describe(&self) -> Option<String> {
        Some(self.source.describe())
    }

    async fn run_once(&mut self, _stop: &CancellationToken) -> Result<ScanReport> {
        self.round(OffsetDateTime::now_utc()).await
    }
}

/// A goal completion's `data` as a real one has it, made by `payload`
/// itself from a made-up event goal: the `test` event's sample.
pub fn sample_payload() -> serde_json::Value {
    let goal = Goal {
        id: 1,
        site_id: 1,
        display_name: "Signup".into(),
        kind: GoalKind::Event {
            event_name: "Signup".into(),
        },
        custom_props: Default::default(),
    };
    // 2026-01-01T12:00:00Z in microseconds.
    payload(Uuid::nil(), &goal, 1_767_268_800_000_000, "/register")
}

/// goal_completion data (SPEC §4): aggregate only, no visitor or session id.
fn payload(trigger_id: Uuid, g: &Goal, timestamp_us: i64, pathname: &str) -> serde_json::Value {
    let occurred = OffsetDateTime::from_unix_timestamp_nanos(i128::from(timestamp_us) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let mut data = json!({
        "trigger_id": trigger_id,
        "goal_id": g.id,
        "goal_name": g.display_name,
        "goal_type": g.type_name(),
        "matched": g.matched(),
        "pathname": pathname,
        "occurred_at": rfc3339_seconds(occurred),
        "visitor_count": 1,
    });
    let obj = data.as_object_mut().expect("an object");
    if !g.custom_props.is_empty() {
        obj.insert("custom_props".into(), json!(g.custom_props));
    }
    if let GoalKind::Scroll { threshold, .. } = &g.kind {
        obj.insert("scroll_threshold".into(), json!(threshold));
    }
    data
}
