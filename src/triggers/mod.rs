//! Triggers: the daemon's second job. Two periodic services
//! (`service::PeriodicService`), each running rounds of batches
//! (`in_batches`), each claiming due `webhook_triggers` rows with `FOR
//! UPDATE SKIP LOCKED` (so every trigger is evaluated by exactly one
//! instance per round, and no instance waits on another), and committing the
//! trigger's new state together with the deliveries it enqueues:
//!
//! - `evaluator`: visitor_spike and traffic_drop, every minute;
//! - `goal_scanner`: goal_completion and custom_event, every second, from a
//!   cursor (each occurrence, or a digest per window).
//!
//! Both read analytics events through `source` and take the evaluation
//! instant as a parameter (`round(now)`), so tests choose their instants.

/// Why a trigger is paused, or NULL: Plausible's own traffic notifier
/// (`Plausible.Workers.TrafficChangeNotifier`) only reads sites with a team
/// that is not locked and whose `accept_traffic_until` is NULL or after today
/// (UTC); the daemon's triggers follow it. A site's own `locked` flag does
/// not pause them (Plausible's notifier does not look at it either; the API
/// refuses such sites, see admin::auth). An SQL expression over `ps`
/// (Plausible's `sites` row of the trigger's webhook) and `pt` (its `teams`
/// row, LEFT JOINed); the claims (evaluator, goal_scanner) and the operator
/// views (admin::ops) all use this one.
macro_rules! paused_reason_sql {
    () => {
        "CASE WHEN pt.id IS NULL THEN 'site has no team'
              WHEN pt.locked THEN 'team locked'
              WHEN pt.accept_traffic_until <= (now() AT TIME ZONE 'UTC')::date
                THEN 'team past accept_traffic_until (' || to_char(pt.accept_traffic_until, 'YYYY-MM-DD') || ')'
         END"
    };
}
pub(crate) use paused_reason_sql;

/// The events a tracking trigger sends (`tracking`).
pub const TRACKING_STOPPED: &str = "site.tracking_stopped";
pub const TRACKING_RESUMED: &str = "site.tracking_resumed";

/// A paused trigger is looked at again after this long at the soonest (its
/// claim pushes `next_evaluation_at`), not every round.
pub const PAUSED_RECHECK: Duration = Duration::minutes(1);

pub mod baseline;
pub mod evaluator;
pub mod goal_scanner;
pub mod goals;
pub mod preview;
pub mod source;
pub mod threshold;
pub mod tracking;
pub mod windows;

pub use windows::{DEFAULT_DROP_WINDOW_SECS, DEFAULT_SPIKE_WINDOW_SECS};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::{Context, Result};
use deadpool_postgres::Pool;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// The trigger types: the values of `webhook_triggers.trigger_type` (the
/// CHECK `webhook_triggers_type`, sql/0016, lists the same five), each
/// sending the event of its name (or, as a digest, `<name>_digest`), but a
/// tracking trigger `site.tracking_stopped` and `site.tracking_resumed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerType {
    VisitorSpike,
    TrafficDrop,
    GoalCompletion,
    CustomEvent,
    /// `site.tracking_stopped` and `site.tracking_resumed` (`tracking`).
    TrackingStopped,
}

impl TriggerType {
    pub const ALL: [TriggerType; 5] = [
        TriggerType::VisitorSpike,
        TriggerType::TrafficDrop,
        TriggerType::GoalCompletion,
        TriggerType::CustomEvent,
        TriggerType::TrackingStopped,
    ];

    /// The schema's name: `visitor_spike`.
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerType::VisitorSpike => "visitor_spike",
            TriggerType::TrafficDrop => "traffic_drop",
            TriggerType::GoalCompletion => "goal_completion",
            TriggerType::CustomEvent => "custom_event",
            TriggerType::TrackingStopped => "tracking_stopped",
        }
    }

    /// The name an operator may type instead: `spike`.
    pub fn short_name(self) -> &'static str {
        match self {
            TriggerType::VisitorSpike => "spike",
            TriggerType::TrafficDrop => "drop",
            TriggerType::GoalCompletion => "goal",
            TriggerType::CustomEvent => "event",
            TriggerType::TrackingStopped => "tracking",
        }
    }

    /// By the schema's name exactly, as stored.
    pub fn from_schema(s: &str) -> Option<TriggerType> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// As an operator writes it: the schema's name or the short one, in any
    /// case, `-` for `_`, surrounding spaces ignored.
    pub fn parse(s: &str) -> Option<TriggerType> {
        let s = s.trim().to_ascii_lowercase().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s || t.short_name() == s)
    }

    /// The event its firings send (`webhook_deliveries.event_type`) in
    /// `each` mode: its own name, but `site.tracking_stopped` for a tracking
    /// trigger (which also sends `site.tracking_resumed`: `event_types`).
    pub fn event_type(self) -> &'static str {
        match self {
            TriggerType::TrackingStopped => TRACKING_STOPPED,
            t => t.as_str(),
        }
    }

    /// Every event it may send in `mode`, which its webhook is subscribed to
    /// (the SQL twin is `plausible_webhooks_trigger_event_types`, sql/0016).
    pub fn event_types(self, mode: DeliveryMode) -> Vec<&'static str> {
        match self {
            TriggerType::TrackingStopped => vec![TRACKING_STOPPED, TRACKING_RESUMED],
            t => vec![t.event_type_in(mode)],
        }
    }

    /// The event it sends in `mode`: in `digest` mode `<type>_digest` (the
    /// SQL twin is `plausible_webhooks_trigger_event_type`, sql/0013).
    pub fn event_type_in(self, mode: DeliveryMode) -> &'static str {
        match (self, mode) {
            (TriggerType::GoalCompletion, DeliveryMode::Digest) => "goal_completion_digest",
            (TriggerType::CustomEvent, DeliveryMode::Digest) => "custom_event_digest",
            (t, _) => t.event_type(),
        }
    }

    /// Goal and custom-event triggers fire per occurrence, and so may send
    /// a digest instead.
    pub fn per_occurrence(self) -> bool {
        matches!(self, TriggerType::GoalCompletion | TriggerType::CustomEvent)
    }

    /// Spike and drop compare a visitor count with a threshold; a goal
    /// trigger does not.
    pub fn threshold_kind(self) -> Option<ThresholdKind> {
        match self {
            TriggerType::VisitorSpike => Some(ThresholdKind::Spike),
            TriggerType::TrafficDrop => Some(ThresholdKind::Drop),
            TriggerType::GoalCompletion
            | TriggerType::CustomEvent
            | TriggerType::TrackingStopped => None,
        }
    }
}

/// How a goal or custom-event trigger sends what it finds: `each`
/// occurrence as its own POST (the default), or one `digest` per window
/// with the count and the first occurrences (`goal_scanner::DIGEST_SAMPLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    #[default]
    Each,
    Digest,
}

impl DeliveryMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryMode::Each => "each",
            DeliveryMode::Digest => "digest",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryMode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "each" => Some(DeliveryMode::Each),
            "digest" => Some(DeliveryMode::Digest),
            _ => None,
        }
    }
}

impl std::fmt::Display for DeliveryMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Read from `webhook_triggers.delivery_mode`; a value the CHECK does not
/// allow is a conversion error.
impl<'a> tokio_postgres::types::FromSql<'a> for DeliveryMode {
    fn from_sql(
        ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let s = <&str as tokio_postgres::types::FromSql>::from_sql(ty, raw)?;
        DeliveryMode::parse(s).ok_or_else(|| format!("`{s}` is not a delivery mode").into())
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <&str as tokio_postgres::types::FromSql>::accepts(ty)
    }
}

impl std::fmt::Display for TriggerType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Read from a `trigger_type` column; a value the schema does not allow is
/// a conversion error, as a wrong column type would be.
impl<'a> tokio_postgres::types::FromSql<'a> for TriggerType {
    fn from_sql(
        ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let s = <&str as tokio_postgres::types::FromSql>::from_sql(ty, raw)?;
        TriggerType::from_schema(s).ok_or_else(|| format!("`{s}` is not a trigger type").into())
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <&str as tokio_postgres::types::FromSql>::accepts(ty)
    }
}

/// The two trigger types with a threshold: which side of it alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThresholdKind {
    Spike,
    Drop,
}

impl ThresholdKind {
    pub fn trigger_type(self) -> TriggerType {
        match self {
            ThresholdKind::Spike => TriggerType::VisitorSpike,
            ThresholdKind::Drop => TriggerType::TrafficDrop,
        }
    }

    pub fn default_window_secs(self) -> i64 {
        match self {
            ThresholdKind::Spike => DEFAULT_SPIKE_WINDOW_SECS,
            ThresholdKind::Drop => DEFAULT_DROP_WINDOW_SECS,
        }
    }

    /// Is the count on the alerting side of the threshold?
    pub fn crossed(self, visitors: i64, threshold: i64) -> bool {
        match self {
            ThresholdKind::Spike => visitors >= threshold,
            ThresholdKind::Drop => visitors < threshold,
        }
    }
}

/// The trigger's hysteresis state before an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    pub armed: bool,
    pub last_fired_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub fire: bool,
    pub armed: bool,
}

/// Hysteresis and cooldown, the one place they are decided:
/// - on the quiet side of the threshold the trigger (re-)arms;
/// - crossing while armed fires and disarms, so it stays silent for as long
///   as traffic stays on the alerting side;
/// - a crossing within `cooldown` of the last firing is held back, and the
///   trigger stays armed: if traffic is still on the alerting side when the
///   cooldown ends, it fires then (the owner learns of an episode that is
///   still going on, not of one that is over).
pub fn decide(
    kind: ThresholdKind,
    visitors: i64,
    threshold: i64,
    state: State,
    cooldown: Duration,
    now: OffsetDateTime,
) -> Decision {
    if !kind.crossed(visitors, threshold) {
        return Decision {
            fire: false,
            armed: true,
        };
    }
    if !state.armed {
        return Decision {
            fire: false,
            armed: false,
        };
    }
    let cooled = state.last_fired_at.is_none_or(|at| now - at >= cooldown);
    Decision {
        fire: cooled,
        armed: !cooled,
    }
}

/// A hook run after a round's work and before its commit (tests use it to
/// kill the connection there, as a crash would).
pub type BeforeCommit = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A trigger service's batch: claims up to a batch of due triggers and works
/// them in one transaction.
pub(crate) trait Batched: Sync {
    type Report: Send;

    /// Pushes the ids it claimed into `claimed` as soon as it has them;
    /// returns the rows it claimed.
    fn batch(
        &self,
        now: OffsetDateTime,
        report: &mut Self::Report,
        claimed: &mut Vec<Uuid>,
    ) -> impl Future<Output = Result<usize>> + Send;
}

/// A trigger service's round at `now`: batch after batch until one comes
/// back with fewer than `batch_size` rows.
///
/// A batch that fails after claiming (a timeout, a bad row) has its triggers
/// set aside until `set_aside_until`, so they cannot hold back the rest of
/// the round (best effort: if that fails too, they are simply due again),
/// and the round goes on; not when the source cannot be asked at all, as
/// every further batch would only fail alike (each after a timeout). The
/// round then fails with the first such error, under `context`. A claim that
/// fails (nothing to set aside) ends the round with its own error.
pub(crate) async fn in_batches<B: Batched>(
    service: &B,
    report: &mut B::Report,
    pool: &Pool,
    batch_size: i64,
    now: OffsetDateTime,
    set_aside_until: OffsetDateTime,
    context: &'static str,
) -> Result<()> {
    let mut failed: Option<anyhow::Error> = None;
    loop {
        let mut ids = Vec::new();
        let n = match service.batch(now, report, &mut ids).await {
            Ok(n) => n,
            Err(e) if ids.is_empty() => return Err(e),
            Err(e) => {
                defer(pool, &ids, set_aside_until).await;
                let go_on = !source::is_unavailable(&e);
                failed.get_or_insert(e);
                if !go_on {
                    break;
                }
                ids.len()
            }
        };
        if (n as i64) < batch_size {
            break;
        }
    }
    match failed {
        Some(e) => Err(e.context(context)),
        None => Ok(()),
    }
}

/// The database's clock, the one clock that orders trigger work (cursors,
/// due times, cooldowns): a daemon whose own clock ran an hour ahead wrote
/// cursors and due times an hour ahead of the database, and an hour of goal
/// completions fell behind its cursor once the clock came back.
pub(crate) async fn database_now(pool: &Pool) -> Result<OffsetDateTime> {
    let c = pool.get().await.context("getting a database connection")?;
    let row = c
        .query_one("SELECT now()", &[])
        .await
        .context("reading the database's clock")?;
    Ok(row.get(0))
}

/// Further ahead than any round schedules a trigger (a set-aside row, a
/// paused trigger, the interval), with a margin.
pub(crate) fn furthest_ahead(interval: Duration) -> Duration {
    interval.max(UNREADABLE_RECHECK).max(PAUSED_RECHECK) + Duration::minutes(1)
}

/// Triggers of `types` due further ahead of `now` than any round schedules
/// them (`furthest_ahead`), which only a clock that ran ahead can have
/// written: made due at `now`, with a warning naming each, so they are not
/// left waiting for that clock's time (their cursors are pulled back when
/// they are scanned).
pub(crate) async fn pull_back_ahead(
    pool: &Pool,
    types: &[&str],
    now: OffsetDateTime,
    interval: Duration,
) -> Result<()> {
    let c = pool.get().await.context("getting a database connection")?;
    let rows = c
        .query(
            "WITH ahead AS (
                SELECT id, next_evaluation_at AS was FROM webhook_triggers
                WHERE enabled AND next_evaluation_at > $1::timestamptz + make_interval(secs => $3)
                  AND next_evaluation_at < 'infinity' AND trigger_type = ANY($2)
                FOR UPDATE SKIP LOCKED)
             UPDATE webhook_triggers t SET next_evaluation_at = $1 FROM ahead
             WHERE t.id = ahead.id
             RETURNING t.id, t.webhook_id, extract(epoch FROM ahead.was - $1::timestamptz)::float8",
            &[&now, &types, &furthest_ahead(interval).as_seconds_f64()],
        )
        .await
        .context("pulling back triggers due ahead of the database's clock")?;
    for r in rows {
        let (id, webhook, ahead): (Uuid, Uuid, f64) = (r.get(0), r.get(1), r.get(2));
        tracing::warn!(
            trigger_id = %id,
            webhook_id = %webhook,
            ahead_secs = ahead.round() as i64,
            "a trigger was due further ahead of the database's clock than any round schedules it (a clock that ran ahead wrote it); due now"
        );
    }
    Ok(())
}

/// How long a trigger whose row cannot be read is set aside before it is
/// read (and warned about) again.
pub const UNREADABLE_RECHECK: Duration = Duration::minutes(10);

/// Claimed triggers whose rows cannot be read (`ids`, already warned about
/// by name) are set aside for `UNREADABLE_RECHECK`, in the batch's own
/// transaction, so they neither stop the round nor come back every round.
pub(crate) async fn set_aside_unreadable(
    tx: &deadpool_postgres::Transaction<'_>,
    ids: &[Uuid],
    now: OffsetDateTime,
) -> anyhow::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    push_back(&**tx, ids, now + UNREADABLE_RECHECK)
        .await
        .map_err(|e| anyhow::Error::new(e).context("setting unreadable triggers aside"))?;
    Ok(())
}

/// Moves the triggers' next evaluation to `next` (the one statement both
/// ways of setting triggers aside run).
async fn push_back(
    c: &impl tokio_postgres::GenericClient,
    ids: &[Uuid],
    next: OffsetDateTime,
) -> Result<u64, tokio_postgres::Error> {
    c.execute(
        "UPDATE webhook_triggers SET next_evaluation_at = $2 WHERE id = ANY($1)",
        &[&ids, &next],
    )
    .await
}

async fn defer(pool: &Pool, ids: &[Uuid], next: OffsetDateTime) {
    let r = async {
        let c = pool.get().await?;
        push_back(&**c, ids, next).await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = r {
        tracing::debug!(
            error = crate::logging::error_line(e.as_ref()),
            "could not set failed triggers aside"
        );
    }
}

/// One INSERT for the batch. A payload over the database's limit
/// (`delivery.max_payload_bytes`, migration 5) would make the whole INSERT,
/// and so the round, fail every time: it is measured here, as the database's
/// trigger measures it, and recorded instead as a `failed` delivery saying
/// why, with a small payload naming the sizes, under the same idempotency key
/// (so it is recorded once, and the rest of the batch goes out).
const ENQUEUE_SQL: &str = "
WITH lim AS (SELECT plausible_webhooks_max_payload_bytes() AS bytes),
u AS (
  SELECT w, t, e, p, k, octet_length(p::text) AS size
  FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[], $5::text[]) AS u(w, t, e, p, k)
)
INSERT INTO webhook_deliveries
  (webhook_id, trigger_id, event_type, payload, idempotency_key, status, last_error, finished_at)
SELECT u.w, u.t, u.e,
       CASE WHEN u.size > lim.bytes
            THEN jsonb_build_object('payload_omitted',
                   jsonb_build_object('bytes', u.size, 'limit_bytes', lim.bytes))
            ELSE u.p END,
       u.k,
       CASE WHEN u.size > lim.bytes THEN 'failed' ELSE 'pending' END,
       CASE WHEN u.size > lim.bytes
            THEN format('the event''s payload is %s bytes, over the limit of %s bytes (delivery.max_payload_bytes): not sent; raise the limit to send events this large', u.size, lim.bytes) END,
       CASE WHEN u.size > lim.bytes THEN now() END
FROM u, lim
ON CONFLICT (webhook_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING status = 'failed'";

/// Deliveries to enqueue, as columns for one INSERT … SELECT unnest.
#[derive(Default)]
pub(crate) struct Enqueue {
    webhook: Vec<Uuid>,
    trigger: Vec<Uuid>,
    event: Vec<&'static str>,
    payload: Vec<serde_json::Value>,
    key: Vec<String>,
}

impl Enqueue {
    pub fn push(
        &mut self,
        webhook: Uuid,
        trigger: Uuid,
        event: &'static str,
        payload: serde_json::Value,
        key: String,
    ) {
        self.webhook.push(webhook);
        self.trigger.push(trigger);
        self.event.push(event);
        self.payload.push(payload);
        self.key.push(key);
    }

    pub fn is_empty(&self) -> bool {
        self.webhook.is_empty()
    }

    /// Returns how many were new (a repeated idempotency key adds nothing),
    /// those recorded failed for their size included.
    pub async fn execute(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<u64> {
        let rows = tx
            .query(
                ENQUEUE_SQL,
                &[
                    &self.webhook,
                    &self.trigger,
                    &self.event,
                    &self.payload,
                    &self.key,
                ],
            )
            .await
            .context("enqueueing trigger deliveries")?;
        let too_large = rows.iter().filter(|r| r.get::<_, bool>(0)).count();
        if too_large > 0 {
            tracing::warn!(
                deliveries = too_large,
                "trigger events over delivery.max_payload_bytes recorded as failed, not sent"
            );
        }
        Ok(rows.len() as u64)
    }
}

/// `(x * 10).round() / 10`: payload numbers a person reads.
pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn trigger_types_by_name() {
        for t in TriggerType::ALL {
            assert_eq!(TriggerType::from_schema(t.as_str()), Some(t));
            assert_eq!(TriggerType::parse(t.short_name()), Some(t));
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::Value::from(t.as_str())
            );
            // The registry below the triggers layer lists the same events.
            for m in [DeliveryMode::Each, DeliveryMode::Digest] {
                for e in t.event_types(m) {
                    assert!(crate::metrics::LABELLED_EVENTS.contains(&e), "{t} {m}");
                }
            }
        }
        assert_eq!(
            TriggerType::parse(" Visitor-Spike "),
            Some(TriggerType::VisitorSpike)
        );
        assert_eq!(TriggerType::from_schema("spike"), None);
        assert_eq!(TriggerType::parse("goals"), None);
        assert_eq!(
            TriggerType::TrafficDrop.threshold_kind(),
            Some(ThresholdKind::Drop)
        );
        assert_eq!(TriggerType::GoalCompletion.threshold_kind(), None);
    }

    #[test]
    fn hysteresis_and_cooldown_over_a_sequence() {
        let t0 = datetime!(2026-03-02 10:00 UTC);
        let cooldown = Duration::minutes(60);
        let mut s = State {
            armed: true,
            last_fired_at: None,
        };
        let mut fired = vec![];
        // (minute, visitors) for a spike threshold of 100.
        for (m, v) in [
            (0, 99),
            (1, 100),
            (2, 150),
            (3, 120),
            (4, 99),
            (5, 101),
            (30, 50),
            (61, 130),
            (62, 130),
        ] {
            let now = t0 + Duration::minutes(m);
            let d = decide(ThresholdKind::Spike, v, 100, s, cooldown, now);
            if d.fire {
                fired.push(m);
                s.last_fired_at = Some(now);
            }
            s.armed = d.armed;
        }
        // Fires at 1 (>= is inclusive); silent while high; re-armed at 4; the
        // crossing at 5 is within the cooldown and held; the one at 61 is not.
        assert_eq!(fired, vec![1, 61]);
    }

    #[test]
    fn drop_is_strictly_below() {
        let s = State {
            armed: true,
            last_fired_at: None,
        };
        let now = datetime!(2026-03-02 10:00 UTC);
        let d = |v| decide(ThresholdKind::Drop, v, 10, s, Duration::ZERO, now);
        assert!(!d(10).fire);
        assert!(d(9).fire);
        assert!(d(0).fire);
    }

    #[test]
    fn held_in_cooldown_fires_when_it_ends_if_still_high() {
        let t0 = datetime!(2026-03-02 10:00 UTC);
        let s = State {
            armed: true,
            last_fired_at: Some(t0),
        };
        let cd = Duration::minutes(60);
        let held = decide(
            ThresholdKind::Spike,
            200,
            100,
            s,
            cd,
            t0 + Duration::minutes(59),
        );
        assert_eq!(
            held,
            Decision {
                fire: false,
                armed: true
            }
        );
        let fires = decide(
            ThresholdKind::Spike,
            200,
            100,
            s,
            cd,
            t0 + Duration::minutes(60),
        );
        assert!(fires.fire && !fires.armed);
    }
}
