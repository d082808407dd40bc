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
use super::source::{AnalyticsSource, GoalCompletion, GoalScan};
use super::{
    database_now, in_batches, pull_back_ahead, set_aside_unreadable, Batched, BeforeCommit,
    Enqueue, TriggerType, PAUSED_RECHECK,
};
use crate::config::Config;
use crate::db::row::{col, position, Unreadable};
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
       greatest(t.inserted_at, t.goal_floor) AS scan_floor, w.site_id,
       (w.enabled AND w.deleted_at IS NULL) AS webhook_live, ",
    paused_reason_sql!(),
    " AS paused_reason
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

impl GoalScannerConfig {
    pub fn from_config(cfg: &Config) -> Self {
        let t = &cfg.triggers;
        Self {
            interval: StdDuration::from_millis(t.goal_scan_interval_ms),
            batch: t.evaluation_batch,
            lateness: Duration::seconds(t.goal_lateness_secs as i64),
            max_catchup: Duration::seconds(t.goal_max_catchup_secs as i64),
            before_commit: None,
        }
    }
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

/// A claimed goal trigger, as its row reads.
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

/// Where `CLAIM_SQL`'s columns are, found by name once per batch.
struct ClaimColumns {
    id: usize,
    webhook_id: usize,
    goal_id: usize,
    cursor: usize,
    floor: usize,
    site_id: usize,
    live: usize,
    paused_reason: usize,
}

impl ClaimColumns {
    fn find(columns: &[tokio_postgres::Column]) -> Result<Self> {
        let at = |name: &str| position(columns, name);
        Ok(Self {
            id: at("id")?,
            webhook_id: at("webhook_id")?,
            goal_id: at("goal_id")?,
            cursor: at("goal_cursor")?,
            floor: at("scan_floor")?,
            site_id: at("site_id")?,
            live: at("webhook_live")?,
            paused_reason: at("paused_reason")?,
        })
    }

    /// A claimed row's trigger; Err: which column cannot be read and why.
    fn trigger(&self, r: &tokio_postgres::Row, id: Uuid) -> Result<GoalTrigger, Unreadable> {
        let paused = col::<Option<String>>(r, self.paused_reason)?.is_some();
        Ok(GoalTrigger {
            id,
            webhook_id: col(r, self.webhook_id)?,
            goal_id: col(r, self.goal_id)?,
            cursor: col(r, self.cursor)?,
            floor: col(r, self.floor)?,
            site_id: col(r, self.site_id)?,
            live: col::<bool>(r, self.live)? && !paused,
            paused,
        })
    }
}

/// The batch's scans: one per (live trigger, goal of its site it covers).
struct Scans<'g> {
    scans: Vec<GoalScan<'g>>,
    /// The trigger (index into the claimed) of each scan.
    owner: Vec<usize>,
}

/// A completion found, under the key that makes it idempotent.
struct Found {
    /// Index into the completions.
    completion: usize,
    webhook: Uuid,
    key: String,
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
        // A cursor past `now` was written by a clock that ran ahead: what
        // it claims to have covered was never scanned.
        let cursor = c.cursor.map(|cursor| {
            if cursor > now {
                tracing::warn!(
                    trigger_id = %c.id,
                    webhook_id = %c.webhook_id,
                    cursor = %rfc3339_seconds(cursor),
                    now = %rfc3339_seconds(now),
                    "goal trigger's cursor is ahead of the database's clock (a clock that ran ahead wrote it); pulled back to now"
                );
                now
            } else {
                cursor
            }
        });
        let wanted = match cursor {
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

    /// Step 1: the batch's due triggers, and how many rows were claimed
    /// (those that cannot be read included: they are set aside here).
    async fn claim(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        now: OffsetDateTime,
        report: &mut ScanReport,
    ) -> Result<(Vec<GoalTrigger>, usize)> {
        let rows = tx
            .query(CLAIM_SQL, &[&now, &self.cfg.batch])
            .await
            .context("claiming due goal triggers")?;
        report.queries += 1;
        let Some(first) = rows.first() else {
            return Ok((Vec::new(), 0));
        };
        let cols = ClaimColumns::find(first.columns())?;
        let mut claimed: Vec<GoalTrigger> = Vec::with_capacity(rows.len());
        let mut unreadable: Vec<Uuid> = Vec::new();
        for r in &rows {
            let id: Uuid = r.get(cols.id);
            match cols.trigger(r, id) {
                Ok(c) => claimed.push(c),
                Err(u) => {
                    tracing::warn!(trigger_id = %id, error = %u,
                        "a goal trigger cannot be read; set aside (not scanned) until the row is corrected");
                    unreadable.push(id);
                }
            }
        }
        set_aside_unreadable(tx, &unreadable, now).await?;
        Ok((claimed, rows.len()))
    }

    /// Step 2: the goals of the live triggers' sites, in one statement.
    async fn goals(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        claimed: &[GoalTrigger],
        report: &mut ScanReport,
    ) -> Result<Vec<Goal>> {
        let mut sites: Vec<i64> = claimed
            .iter()
            .filter(|c| c.live)
            .map(|c| c.site_id)
            .collect();
        sites.sort_unstable();
        sites.dedup();
        if sites.is_empty() {
            return Ok(Vec::new());
        }
        report.queries += 1;
        goals::load_for_sites(&**tx, &sites).await
    }

    /// Step 3: what each live trigger scans, from its scan start to `now`;
    /// a trigger without a goal of its own covers every goal of its site.
    fn scans<'g>(
        &self,
        claimed: &[GoalTrigger],
        site_goals: &'g [Goal],
        now: OffsetDateTime,
    ) -> Scans<'g> {
        let mut out = Scans {
            scans: Vec::new(),
            owner: Vec::new(),
        };
        for (ci, c) in claimed.iter().enumerate().filter(|(_, c)| c.live) {
            let from = self.scan_start(c, now);
            for g in site_goals
                .iter()
                .filter(|g| g.site_id == c.site_id && c.goal_id.is_none_or(|id| id == g.id))
            {
                out.scans.push(GoalScan {
                    goal: g,
                    from,
                    to: now,
                });
                out.owner.push(ci);
            }
        }
        out
    }

    /// Step 7: every claimed trigger's cursor moves to `now`; paused ones
    /// are looked at again after `PAUSED_RECHECK`.
    async fn advance(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        claimed: &[GoalTrigger],
        now: OffsetDateTime,
        report: &mut ScanReport,
    ) -> Result<()> {
        let next = now + self.interval_time();
        let paused_next = now + self.interval_time().max(PAUSED_RECHECK);
        let ids: Vec<Uuid> = claimed.iter().map(|c| c.id).collect();
        let paused: Vec<Uuid> = claimed.iter().filter(|c| c.paused).map(|c| c.id).collect();
        tx.execute(UPDATE_SQL, &[&now, &next, &ids, &paused, &paused_next])
            .await
            .context("moving goal trigger cursors")?;
        report.queries += 1;
        Ok(())
    }
}

/// Step 4: each completion under its idempotency key, once per (webhook,
/// key). A scroll goal completes once per visit of a page: Plausible sends
/// an engagement event each time a page is left or hidden, carrying the
/// depth reached so far, so its events are not counted one by one.
fn identify(
    claimed: &[GoalTrigger],
    scans: &Scans<'_>,
    completions: &[GoalCompletion],
) -> Vec<Found> {
    let mut found: Vec<Found> = Vec::new();
    let mut seen: HashSet<(Uuid, String)> = HashSet::new();
    for (n, comp) in completions.iter().enumerate() {
        let g = scans.scans[comp.scan].goal;
        let webhook = claimed[scans.owner[comp.scan]].webhook_id;
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
                found.push(Found {
                    completion: n,
                    webhook,
                    key,
                });
            }
        }
    }
    found
}

/// Step 5: of the completions found, those not in the queue yet. The
/// lateness overlap finds mostly completions an earlier scan enqueued: only
/// new ones get a payload and an INSERT.
async fn not_enqueued(
    tx: &deadpool_postgres::Transaction<'_>,
    found: Vec<Found>,
    report: &mut ScanReport,
) -> Result<Vec<Found>> {
    if found.is_empty() {
        return Ok(found);
    }
    let webhooks: Vec<Uuid> = found.iter().map(|f| f.webhook).collect();
    let keys: Vec<&str> = found.iter().map(|f| f.key.as_str()).collect();
    report.queries += 1;
    let known: HashSet<(Uuid, String)> = tx
        .query(KNOWN_KEYS_SQL, &[&webhooks, &keys])
        .await
        .context("looking up completions already enqueued")?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(found
        .into_iter()
        .filter(|f| !known.contains(&(f.webhook, f.key.clone())))
        .collect())
}

/// Step 6: the new completions' deliveries.
fn deliveries(
    claimed: &[GoalTrigger],
    scans: &Scans<'_>,
    completions: &[GoalCompletion],
    new: Vec<Found>,
) -> Enqueue {
    let mut deliveries = Enqueue::default();
    for f in new {
        let comp = &completions[f.completion];
        let c = &claimed[scans.owner[comp.scan]];
        let g = scans.scans[comp.scan].goal;
        deliveries.push(
            f.webhook,
            c.id,
            TriggerType::GoalCompletion.event_type(),
            payload(c.id, g, comp.timestamp_us, &comp.pathname),
            f.key,
        );
    }
    deliveries
}

impl Batched for GoalScanner {
    type Report = ScanReport;

    /// Steps 1 to 7, in one transaction.
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
        let (claimed, rows) = self.claim(&tx, now, report).await?;
        if rows == 0 {
            tx.commit().await?;
            return Ok(0);
        }
        claimed_ids.extend(claimed.iter().map(|c| c.id));
        report.claimed += claimed.len();
        report.paused += claimed.iter().filter(|c| c.paused).count();
        let site_goals = self.goals(&tx, &claimed, report).await?;
        let scans = self.scans(&claimed, &site_goals, now);
        let completions = self.source.goal_completions(&scans.scans).await?;
        if !scans.scans.is_empty() {
            report.queries += 1;
        }
        let found = identify(&claimed, &scans, &completions);
        report.completions += found.len();
        let new = not_enqueued(&tx, found, report).await?;
        let deliveries = deliveries(&claimed, &scans, &completions, new);
        if !deliveries.is_empty() {
            report.enqueued += deliveries.execute(&tx).await?;
            report.queries += 1;
        }
        self.advance(&tx, &claimed, now, report).await?;
        if let Some(hook) = &self.cfg.before_commit {
            hook().await;
        }
        tx.commit().await.context("committing a goal scan")?;
        Ok(rows)
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
        let now = database_now(&self.pool).await?;
        pull_back_ahead(
            &self.pool,
            &[TriggerType::GoalCompletion.as_str()],
            now,
            self.interval_time(),
        )
        .await?;
        self.round(now).await
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
