//! The goal scanner: goal_completion and custom_event triggers, scanned
//! every `interval` (1 s by default) by exactly one instance each,
//! incrementally. A custom_event trigger is scanned as an event goal of its
//! own making (its event name and props, `custom_goal`), so both match
//! events exactly as Plausible matches goals, on every source.
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
//!
//! A trigger in `digest` mode sends one POST per window instead (windows of
//! `window_secs`, default `DEFAULT_DIGEST_WINDOW_SECS`, aligned to multiples
//! of it since the Unix epoch, UTC): a window is read once it ended
//! `lateness` ago, whole, and sent under the key `digest:<trigger>:<start>`
//! with the count and the first `DIGEST_SAMPLE` occurrences; its cursor is
//! the end of the last window read. An empty window sends nothing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use anyhow::{Context, Result};
use deadpool_postgres::Pool;
use serde_json::json;
use time::{Duration, OffsetDateTime};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use std::collections::BTreeMap;

use super::goals::{self, CompletionIdentity, Goal, GoalKind};
use super::source::{AnalyticsSource, GoalCompletion, GoalScan};
use super::{
    database_now, in_batches, pull_back_ahead, set_aside_unreadable, Batched, BeforeCommit,
    DeliveryMode, Enqueue, TriggerType, PAUSED_RECHECK,
};
use crate::config::Config;
use crate::db::row::{col, position, Unreadable};
use crate::db::timestamp::rfc3339_seconds;
use crate::service::{PeriodicService, Warnings};

/// After a failed round.
pub const ERROR_PAUSE: StdDuration = StdDuration::from_secs(2);

/// A digest trigger's window when it has none of its own: an hour.
pub const DEFAULT_DIGEST_WINDOW_SECS: i64 = 3_600;

/// The occurrences a digest lists (the earliest); `count` has them all.
pub const DIGEST_SAMPLE: usize = 10;

/// Windows one digest trigger reads in one round at most (a trigger behind
/// by more catches up over the next rounds).
const DIGEST_WINDOWS_PER_ROUND: i64 = 24;

/// Paused triggers (`paused_reason_sql`) are claimed, not scanned: their
/// cursor moves on like a disabled webhook's (completions while paused are
/// never sent, not even after the team is unlocked), and they are looked at
/// again after `PAUSED_RECHECK` rather than every round.
const CLAIM_SQL: &str = concat!(
    "
WITH due AS (
    SELECT id FROM webhook_triggers
    WHERE enabled AND trigger_type IN ('goal_completion', 'custom_event') AND next_evaluation_at <= $1
    ORDER BY next_evaluation_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
SELECT t.id, t.webhook_id, t.trigger_type, t.goal_id, t.event_name, t.event_props,
       t.delivery_mode, t.window_secs, t.goal_cursor,
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

/// Each trigger's new cursor and due time.
const UPDATE_SQL: &str = "
UPDATE webhook_triggers t SET goal_cursor = x.cursor, last_evaluated_at = $1,
    next_evaluation_at = x.next
FROM unnest($2::uuid[], $3::timestamptz[], $4::timestamptz[]) AS x(id, cursor, next)
WHERE t.id = x.id";

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

/// A claimed goal or custom-event trigger, as its row reads.
struct GoalTrigger {
    id: Uuid,
    webhook_id: Uuid,
    kind: TriggerType,
    goal_id: Option<i64>,
    /// custom_event: the event goal it is scanned as (`custom_goal`).
    custom: Option<Goal>,
    mode: DeliveryMode,
    /// digest: the window's length.
    window: Duration,
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
    trigger_type: usize,
    goal_id: usize,
    event_name: usize,
    event_props: usize,
    mode: usize,
    window_secs: usize,
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
            trigger_type: at("trigger_type")?,
            goal_id: at("goal_id")?,
            event_name: at("event_name")?,
            event_props: at("event_props")?,
            mode: at("delivery_mode")?,
            window_secs: at("window_secs")?,
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
        let kind: TriggerType = col(r, self.trigger_type)?;
        let site_id: i64 = col(r, self.site_id)?;
        let custom = match kind {
            TriggerType::CustomEvent => Some(custom_goal(
                site_id,
                col(r, self.event_name)?,
                col(r, self.event_props)?,
            )?),
            _ => None,
        };
        let window_secs = col::<Option<i32>>(r, self.window_secs)?
            .map_or(DEFAULT_DIGEST_WINDOW_SECS, i64::from)
            .max(60);
        Ok(GoalTrigger {
            id,
            webhook_id: col(r, self.webhook_id)?,
            kind,
            custom,
            mode: col(r, self.mode)?,
            window: Duration::seconds(window_secs),
            goal_id: col(r, self.goal_id)?,
            cursor: col(r, self.cursor)?,
            floor: col(r, self.floor)?,
            site_id,
            live: col::<bool>(r, self.live)? && !paused,
            paused,
        })
    }
}

/// The batch's scans: one per (live trigger, span it reads, goal it covers).
struct Scans<'g> {
    scans: Vec<GoalScan<'g>>,
    /// The trigger (index into the claimed) of each scan.
    owner: Vec<usize>,
    /// The digest window (start, end) each scan reads; None: an `each` scan.
    window: Vec<Option<(OffsetDateTime, OffsetDateTime)>>,
}

/// A span of time a trigger reads: `(from, to]`.
#[derive(Debug, Clone, Copy)]
struct Span {
    from: OffsetDateTime,
    to: OffsetDateTime,
    /// digest: the window it belongs to (from may be later than its start:
    /// never before the trigger's floor).
    window: Option<(OffsetDateTime, OffsetDateTime)>,
}

/// What one claimed trigger reads this round, and its cursor and due time after.
struct Plan {
    reads: Vec<Span>,
    cursor: OffsetDateTime,
    next: OffsetDateTime,
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
        not_before(c, wanted, now - self.cfg.max_catchup)
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

    /// Step 2: the goals of the live goal triggers' sites, in one statement.
    async fn goals(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        claimed: &[GoalTrigger],
        report: &mut ScanReport,
    ) -> Result<Vec<Goal>> {
        let mut sites: Vec<i64> = claimed
            .iter()
            .filter(|c| c.live && c.kind == TriggerType::GoalCompletion)
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

    /// Step 3: what each claimed trigger reads this round and where its
    /// cursor goes: `each`, from its scan start to `now`; `digest`, every
    /// whole window that ended `lateness` ago since its cursor; a trigger
    /// not live reads nothing and its cursor moves on.
    fn plan(&self, c: &GoalTrigger, now: OffsetDateTime) -> Plan {
        let next = now + self.interval_time();
        if !c.live {
            let next = if c.paused {
                now + self.interval_time().max(PAUSED_RECHECK)
            } else {
                next
            };
            let cursor = match c.mode {
                DeliveryMode::Each => now,
                DeliveryMode::Digest => align_down(now, c.window),
            };
            return Plan {
                reads: Vec::new(),
                cursor,
                next,
            };
        }
        if c.mode == DeliveryMode::Each {
            return Plan {
                reads: vec![Span {
                    from: self.scan_start(c, now),
                    to: now,
                    window: None,
                }],
                cursor: now,
                next,
            };
        }
        let mut start = self.digest_start(c, now);
        let mut reads = Vec::new();
        let mut windows = 0;
        while start + c.window + self.cfg.lateness <= now && windows < DIGEST_WINDOWS_PER_ROUND {
            let end = start + c.window;
            let from = start.max(c.floor);
            if from < end {
                reads.push(Span {
                    from,
                    to: end,
                    window: Some((start, end)),
                });
            }
            start = end;
            windows += 1;
        }
        let next = if windows == DIGEST_WINDOWS_PER_ROUND {
            next
        } else {
            (start + c.window + self.cfg.lateness).max(next)
        };
        Plan {
            reads,
            cursor: start,
            next,
        }
    }

    /// A digest trigger's first unread window: its cursor, or the window its
    /// floor falls in; never further back than `max_catchup`.
    fn digest_start(&self, c: &GoalTrigger, now: OffsetDateTime) -> OffsetDateTime {
        let wanted = c.cursor.unwrap_or_else(|| align_down(c.floor, c.window));
        not_before(c, wanted, align_down(now - self.cfg.max_catchup, c.window))
    }

    /// Step 4: the scans of the plans: one per (span, goal it covers); a
    /// goal trigger without a goal of its own covers every goal of its
    /// site, a custom-event trigger its own event goal.
    fn scans<'g>(
        &self,
        claimed: &'g [GoalTrigger],
        plans: &[Plan],
        site_goals: &'g [Goal],
    ) -> Scans<'g> {
        let mut out = Scans {
            scans: Vec::new(),
            owner: Vec::new(),
            window: Vec::new(),
        };
        for (ci, (c, plan)) in claimed.iter().zip(plans).enumerate() {
            let goals: Vec<&'g Goal> = match &c.custom {
                Some(g) => vec![g],
                None => site_goals
                    .iter()
                    .filter(|g| g.site_id == c.site_id && c.goal_id.is_none_or(|id| id == g.id))
                    .collect(),
            };
            for span in &plan.reads {
                for &g in &goals {
                    out.scans.push(GoalScan {
                        goal: g,
                        from: span.from,
                        to: span.to,
                    });
                    out.owner.push(ci);
                    out.window.push(span.window);
                }
            }
        }
        out
    }

    /// Step 8: every claimed trigger's cursor and due time, as planned.
    async fn advance(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        claimed: &[GoalTrigger],
        plans: &[Plan],
        now: OffsetDateTime,
        report: &mut ScanReport,
    ) -> Result<()> {
        let ids: Vec<Uuid> = claimed.iter().map(|c| c.id).collect();
        let cursors: Vec<OffsetDateTime> = plans.iter().map(|p| p.cursor).collect();
        let next: Vec<OffsetDateTime> = plans.iter().map(|p| p.next).collect();
        tx.execute(UPDATE_SQL, &[&now, &ids, &cursors, &next])
            .await
            .context("moving goal trigger cursors")?;
        report.queries += 1;
        Ok(())
    }
}

/// Where a scan starts: `wanted`, unless that is before `limit` (the
/// trigger was not scanned for longer than `max_catchup`): then `limit`,
/// with a warning naming what is skipped.
fn not_before(c: &GoalTrigger, wanted: OffsetDateTime, limit: OffsetDateTime) -> OffsetDateTime {
    if wanted >= limit {
        return wanted;
    }
    tracing::warn!(
        trigger_id = %c.id,
        webhook_id = %c.webhook_id,
        trigger_type = c.kind.as_str(),
        mode = c.mode.as_str(),
        from = %rfc3339_seconds(wanted),
        resumed_at = %rfc3339_seconds(limit),
        "trigger was not scanned for longer than triggers.goal_max_catchup_secs; what happened before resumed_at is not sent"
    );
    limit
}

/// The start of the window of length `window` that `t` falls in, windows
/// aligned to multiples of it since the Unix epoch (UTC).
fn align_down(t: OffsetDateTime, window: Duration) -> OffsetDateTime {
    let w = window.whole_seconds().max(1);
    let secs = t.unix_timestamp();
    OffsetDateTime::from_unix_timestamp(secs - secs.rem_euclid(w)).unwrap_or(t)
}

/// An occurrence's idempotency key. A goal completion is keyed by its goal,
/// a custom event's by the event alone: a webhook with two custom-event
/// triggers matching one occurrence still gets one POST.
fn occurrence_key(kind: TriggerType, g: &Goal, comp: &GoalCompletion, ordinal: u64) -> String {
    let per_visit = matches!(g.kind, GoalKind::Scroll { .. });
    let id = CompletionIdentity {
        goal_id: g.id,
        site_id: g.site_id,
        timestamp_us: if per_visit { 0 } else { comp.timestamp_us },
        name: &comp.name,
        pathname: &comp.pathname,
        user_id: &comp.user_id,
        session_id: &comp.session_id,
        ordinal,
    };
    match kind {
        TriggerType::CustomEvent => id.key_as("event"),
        _ => id.key(),
    }
}

/// How many occurrences a completion row stands for. A scroll goal
/// completes once per visit of a page: Plausible sends an engagement event
/// each time a page is left or hidden, carrying the depth reached so far,
/// so its events are not counted one by one.
fn ordinals(g: &Goal, comp: &GoalCompletion) -> u64 {
    if matches!(g.kind, GoalKind::Scroll { .. }) {
        1
    } else {
        comp.count.max(0) as u64
    }
}

/// Step 5: each occurrence found by an `each` scan under its idempotency
/// key, once per (webhook, key).
fn identify(
    claimed: &[GoalTrigger],
    scans: &Scans<'_>,
    completions: &[GoalCompletion],
) -> Vec<Found> {
    let mut found: Vec<Found> = Vec::new();
    let mut seen: HashSet<(Uuid, String)> = HashSet::new();
    for (n, comp) in completions.iter().enumerate() {
        if scans.window[comp.scan].is_some() {
            continue;
        }
        let g = scans.scans[comp.scan].goal;
        let c = &claimed[scans.owner[comp.scan]];
        for ordinal in 1..=ordinals(g, comp) {
            let key = occurrence_key(c.kind, g, comp, ordinal);
            if seen.insert((c.webhook_id, key.clone())) {
                found.push(Found {
                    completion: n,
                    webhook: c.webhook_id,
                    key,
                });
            }
        }
    }
    found
}

/// Step 5 for digests: per (trigger, window) read, the occurrences counted
/// once each and the earliest `DIGEST_SAMPLE` of them; empty windows send
/// nothing.
fn digests(claimed: &[GoalTrigger], scans: &Scans<'_>, completions: &[GoalCompletion]) -> Enqueue {
    // (trigger, window start) → (keys seen, occurrences as (time, completion)).
    type Acc = (HashSet<String>, Vec<(i64, usize)>);
    let mut windows: BTreeMap<(usize, OffsetDateTime), (OffsetDateTime, Acc)> = BTreeMap::new();
    for (n, comp) in completions.iter().enumerate() {
        let Some((start, end)) = scans.window[comp.scan] else {
            continue;
        };
        let owner = scans.owner[comp.scan];
        let g = scans.scans[comp.scan].goal;
        let (_, (keys, occurrences)) = windows
            .entry((owner, start))
            .or_insert_with(|| (end, Default::default()));
        for ordinal in 1..=ordinals(g, comp) {
            if keys.insert(occurrence_key(claimed[owner].kind, g, comp, ordinal)) {
                occurrences.push((comp.timestamp_us, n));
            }
        }
    }
    let mut out = Enqueue::default();
    for ((owner, start), (end, (keys, mut occurrences))) in windows {
        if keys.is_empty() {
            continue;
        }
        let c = &claimed[owner];
        occurrences.sort_unstable();
        let first: Vec<serde_json::Value> = occurrences
            .iter()
            .take(DIGEST_SAMPLE)
            .map(|&(_, n)| {
                let comp = &completions[n];
                occurrence(c, scans.scans[comp.scan].goal, comp)
            })
            .collect();
        out.push(
            c.webhook_id,
            c.id,
            c.kind.event_type_in(DeliveryMode::Digest),
            digest_payload(c, start, end, keys.len() as u64, first),
            format!("digest:{}:{}", c.id, start.unix_timestamp()),
        );
    }
    out
}

/// Step 6: of the occurrences found, those not in the queue yet. The
/// lateness overlap finds mostly occurrences an earlier scan enqueued: only
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

/// Step 7: the new occurrences' deliveries, beside the digests.
fn deliveries(
    claimed: &[GoalTrigger],
    scans: &Scans<'_>,
    completions: &[GoalCompletion],
    new: Vec<Found>,
    mut deliveries: Enqueue,
) -> Enqueue {
    for f in new {
        let comp = &completions[f.completion];
        let c = &claimed[scans.owner[comp.scan]];
        let g = scans.scans[comp.scan].goal;
        let data = match c.kind {
            TriggerType::CustomEvent => {
                custom_event_payload(c.id, g, comp.timestamp_us, &comp.pathname)
            }
            _ => payload(c.id, g, comp.timestamp_us, &comp.pathname),
        };
        deliveries.push(f.webhook, c.id, c.kind.event_type(), data, f.key);
    }
    deliveries
}

impl Batched for GoalScanner {
    type Report = ScanReport;

    /// Steps 1 to 8, in one transaction.
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
        let plans: Vec<Plan> = claimed.iter().map(|c| self.plan(c, now)).collect();
        let scans = self.scans(&claimed, &plans, &site_goals);
        let completions = self.source.goal_completions(&scans.scans).await?;
        if !scans.scans.is_empty() {
            report.queries += 1;
        }
        let found = identify(&claimed, &scans, &completions);
        report.completions += found.len();
        let digests = digests(&claimed, &scans, &completions);
        let new = not_enqueued(&tx, found, report).await?;
        let deliveries = deliveries(&claimed, &scans, &completions, new, digests);
        if !deliveries.is_empty() {
            report.enqueued += deliveries.execute(&tx).await?;
            report.queries += 1;
        }
        self.advance(&tx, &claimed, &plans, now, report).await?;
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
            &[
                TriggerType::GoalCompletion.as_str(),
                TriggerType::CustomEvent.as_str(),
            ],
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

/// A custom_event trigger's event goal; its name is required (the CHECK
/// `webhook_triggers_event_name_for_custom_event` says so, but a writer may
/// have dropped it).
fn custom_goal(
    site_id: i64,
    name: Option<String>,
    props: serde_json::Value,
) -> Result<Goal, Unreadable> {
    let name = name.ok_or_else(|| Unreadable {
        column: "event_name".into(),
        cause: "NULL on a custom_event trigger".into(),
        is_time: false,
    })?;
    Ok(goals::custom_event_goal(site_id, name, &props))
}

fn occurred_at(timestamp_us: i64) -> String {
    rfc3339_seconds(
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(timestamp_us) * 1000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
    )
}

/// custom_event data: aggregate only, as a goal completion's.
fn custom_event_payload(
    trigger_id: Uuid,
    g: &Goal,
    timestamp_us: i64,
    pathname: &str,
) -> serde_json::Value {
    json!({
        "trigger_id": trigger_id,
        "event_name": g.matched(),
        "props": g.custom_props,
        "pathname": pathname,
        "occurred_at": occurred_at(timestamp_us),
        "visitor_count": 1,
    })
}

/// One of a digest's occurrences.
fn occurrence(c: &GoalTrigger, g: &Goal, comp: &GoalCompletion) -> serde_json::Value {
    let mut o = json!({
        "occurred_at": occurred_at(comp.timestamp_us),
        "pathname": comp.pathname,
    });
    if c.kind == TriggerType::GoalCompletion {
        let obj = o.as_object_mut().expect("an object");
        obj.insert("goal_id".into(), json!(g.id));
        obj.insert("goal_name".into(), json!(g.display_name));
    }
    o
}

/// goal_completion_digest / custom_event_digest data.
fn digest_payload(
    c: &GoalTrigger,
    start: OffsetDateTime,
    end: OffsetDateTime,
    count: u64,
    first: Vec<serde_json::Value>,
) -> serde_json::Value {
    let mut data = json!({
        "trigger_id": c.id,
        "window_start": rfc3339_seconds(start),
        "window_end": rfc3339_seconds(end),
        "count": count,
        "occurrences": first,
        "more": count.saturating_sub(first.len() as u64),
    });
    let obj = data.as_object_mut().expect("an object");
    match &c.custom {
        Some(g) => {
            obj.insert("event_name".into(), json!(g.matched()));
            obj.insert("props".into(), json!(g.custom_props));
        }
        None => {
            obj.insert("goal_id".into(), json!(c.goal_id));
        }
    }
    data
}

/// Samples of the types this scanner makes besides goal_completion, made
/// by the code that makes the real ones: `custom_event`,
/// `goal_completion_digest`, `custom_event_digest`.
pub fn sample_payload_of(event_type: &str) -> Option<serde_json::Value> {
    let custom = goals::custom_event_goal(1, "Signup".into(), &json!({"plan": "pro"}));
    let comp = GoalCompletion {
        scan: 0,
        // 2026-01-01T12:00:00Z in microseconds.
        timestamp_us: 1_767_268_800_000_000,
        name: "Signup".into(),
        pathname: "/register".into(),
        user_id: String::new(),
        session_id: String::new(),
        count: 1,
    };
    let trigger = |kind: TriggerType, custom: Option<Goal>| GoalTrigger {
        id: Uuid::nil(),
        webhook_id: Uuid::nil(),
        kind,
        goal_id: None,
        custom,
        mode: DeliveryMode::Digest,
        window: Duration::seconds(DEFAULT_DIGEST_WINDOW_SECS),
        cursor: None,
        floor: OffsetDateTime::UNIX_EPOCH,
        site_id: 1,
        live: true,
        paused: false,
    };
    let start = align_down(
        OffsetDateTime::from_unix_timestamp(1_767_268_800).unwrap_or(OffsetDateTime::UNIX_EPOCH),
        Duration::seconds(DEFAULT_DIGEST_WINDOW_SECS),
    );
    let end = start + Duration::seconds(DEFAULT_DIGEST_WINDOW_SECS);
    Some(match event_type {
        "custom_event" => {
            custom_event_payload(Uuid::nil(), &custom, comp.timestamp_us, &comp.pathname)
        }
        "custom_event_digest" => {
            let c = trigger(TriggerType::CustomEvent, Some(custom.clone()));
            let first = vec![occurrence(&c, &custom, &comp)];
            digest_payload(&c, start, end, 42, first)
        }
        "goal_completion_digest" => {
            let goal = Goal {
                id: 1,
                site_id: 1,
                display_name: "Signup".into(),
                kind: GoalKind::Event {
                    event_name: "Signup".into(),
                },
                custom_props: Default::default(),
            };
            let c = trigger(TriggerType::GoalCompletion, None);
            let first = vec![occurrence(&c, &goal, &comp)];
            digest_payload(&c, start, end, 42, first)
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn windows_align_to_multiples_of_their_length_since_the_epoch() {
        let t = datetime!(2026-03-02 10:17:45 UTC);
        assert_eq!(
            align_down(t, Duration::hours(1)),
            datetime!(2026-03-02 10:00 UTC)
        );
        assert_eq!(
            align_down(t, Duration::minutes(15)),
            datetime!(2026-03-02 10:15 UTC)
        );
        assert_eq!(
            align_down(t, Duration::days(1)),
            datetime!(2026-03-02 0:00 UTC)
        );
        assert_eq!(
            align_down(datetime!(2026-03-02 10:00 UTC), Duration::hours(1)),
            datetime!(2026-03-02 10:00 UTC)
        );
    }
}
