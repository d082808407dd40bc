//! The questions a store answers, the shapes of its answers, and the error
//! that says it cannot be asked. The stores (`postgres`, `clickhouse`) and
//! the source over them (`mod.rs`, which re-exports these) share them; they
//! live apart so a store never imports the source that dispatches to it.

use time::OffsetDateTime;

use crate::triggers::goals::Goal;

/// A site's visitors over `[from, to]` (unique visitors, top sources and
/// pages): as Plausible's current-visitors query, `timestamp >= now - window`,
/// bounded above by the round's `now` so a round's answer does not change
/// with events stamped after it. The traffic history for derived thresholds
/// reads `(from, to]` buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub site_id: i64,
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
}

/// A source or page with its unique visitors.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ranked {
    pub name: String,
    pub visitors: i64,
}

/// Find the completions of one goal over `(from, to]`.
#[derive(Debug, Clone)]
pub struct GoalScan<'a> {
    pub goal: &'a Goal,
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
}

/// Identical events matching a goal, `count` of them (ordinals 1..=count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoalCompletion {
    /// Index into the scans asked for.
    pub scan: usize,
    /// Microseconds since the Unix epoch.
    pub timestamp_us: i64,
    pub name: String,
    pub pathname: String,
    /// Visitor and session ids as the store renders them in decimal; only
    /// hashed into idempotency keys, never stored or sent.
    pub user_id: String,
    pub session_id: String,
    pub count: i64,
}

/// The store cannot be asked at all (unreachable, not answering in time,
/// refusing the credentials): a trigger round stops at the first such error
/// instead of trying every batch, and is retried next round. Other errors
/// belong to one query (one batch), which is set aside while the round goes on.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "analytics source unavailable: {}", self.0)
    }
}
impl std::error::Error for Unavailable {}

/// Is `e` (or anything it wraps) an `Unavailable`?
pub fn is_unavailable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<Unavailable>().is_some())
}
