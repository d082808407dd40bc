//! Triggers: the daemon's second job. Two services, each a loop with the
//! usual start/stop shape, each claiming due `webhook_triggers` rows with
//! `FOR UPDATE SKIP LOCKED` (so every trigger is evaluated by exactly one
//! instance per round, and no instance waits on another), and committing the
//! trigger's new state together with the deliveries it enqueues:
//!
//! - `evaluator`: visitor_spike and traffic_drop, every minute;
//! - `goal_scanner`: goal_completion, every second, from a cursor.
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

/// A paused trigger is looked at again after this long at the soonest (its
/// claim pushes `next_evaluation_at`), not every round.
pub const PAUSED_RECHECK: Duration = Duration::minutes(1);

pub mod evaluator;
pub mod goal_scanner;
pub mod goals;
pub mod source;
pub mod threshold;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::{Context, Result};
use deadpool_postgres::Pool;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// Spike: 5 minutes, as Plausible's spike notification.
pub const DEFAULT_SPIKE_WINDOW_SECS: i64 = 300;
/// Drop: 12 hours, as Plausible's drop notification.
pub const DEFAULT_DROP_WINDOW_SECS: i64 = 43_200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerKind {
    Spike,
    Drop,
}

impl TriggerKind {
    pub fn parse(s: &str) -> Option<TriggerKind> {
        match s {
            "visitor_spike" => Some(TriggerKind::Spike),
            "traffic_drop" => Some(TriggerKind::Drop),
            _ => None,
        }
    }

    pub fn event_type(self) -> &'static str {
        match self {
            TriggerKind::Spike => "visitor_spike",
            TriggerKind::Drop => "traffic_drop",
        }
    }

    pub fn default_window_secs(self) -> i64 {
        match self {
            TriggerKind::Spike => DEFAULT_SPIKE_WINDOW_SECS,
            TriggerKind::Drop => DEFAULT_DROP_WINDOW_SECS,
        }
    }

    /// Is the count on the alerting side of the threshold?
    pub fn crossed(self, visitors: i64, threshold: i64) -> bool {
        match self {
            TriggerKind::Spike => visitors >= threshold,
            TriggerKind::Drop => visitors < threshold,
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
    kind: TriggerKind,
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

/// One warn line when a service's rounds start failing, one info line when
/// they work again: an outage is one entry in the journal, not one a second.
pub(crate) struct Outage {
    service: &'static str,
    source: String,
    failing: bool,
}

impl Outage {
    pub fn new(service: &'static str, source: String) -> Self {
        Self {
            service,
            source,
            failing: false,
        }
    }

    pub fn failed(&mut self, e: &anyhow::Error, then: &str) {
        if !std::mem::replace(&mut self.failing, true) {
            tracing::warn!(
                error = format!("{e:#}"),
                source = %self.source,
                "{} failed; {then}",
                self.service
            );
        }
    }

    pub fn ended(&mut self) {
        if std::mem::take(&mut self.failing) {
            tracing::info!("{} works again", self.service);
        }
    }
}

/// A batch failed after claiming `ids`: they are set aside until `next`, so
/// they cannot hold back the rest of the round (best effort: if this fails
/// too, they are simply due again), and the round's first error is kept in
/// `failed`. Returns whether the round goes on: not when the source cannot be
/// asked at all, as every further batch would only fail alike (each after a
/// timeout).
pub(crate) async fn set_aside(
    pool: &Pool,
    ids: &[Uuid],
    next: OffsetDateTime,
    e: anyhow::Error,
    failed: &mut Option<anyhow::Error>,
) -> bool {
    defer(pool, ids, next).await;
    let go_on = !source::is_unavailable(&e);
    failed.get_or_insert(e);
    go_on
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
            error = format!("{e:#}"),
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
            let d = decide(TriggerKind::Spike, v, 100, s, cooldown, now);
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
        let d = |v| decide(TriggerKind::Drop, v, 10, s, Duration::ZERO, now);
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
            TriggerKind::Spike,
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
            TriggerKind::Spike,
            200,
            100,
            s,
            cd,
            t0 + Duration::minutes(60),
        );
        assert!(fires.fire && !fires.armed);
    }
}
