//! Analytics sources: where trigger evaluation reads events. One small
//! interface (the questions triggers ask), one implementation per store. The
//! PostgreSQL source reads a table or view with Plausible's events_v2 column
//! names; the ClickHouse source reads Plausible's own events_v2 over HTTP.
//!
//! Every window is half-open at the start: `(from, to]`, in UTC.

pub mod clickhouse;
pub mod postgres;

use anyhow::Result;
use time::OffsetDateTime;

use crate::config::Config;
use crate::triggers::goals::Goal;

/// Unique visitors of a site over `(from, to]`.
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
pub struct Completion {
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

/// The questions triggers ask of analytics events.
pub enum AnalyticsSource {
    Postgres(postgres::PostgresSource),
    Clickhouse(Box<clickhouse::ClickhouseSource>),
}

/// Calls the same method on whichever source this is.
macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnalyticsSource::Postgres($s) => $call,
            AnalyticsSource::Clickhouse($s) => $call,
        }
    };
}

impl AnalyticsSource {
    pub fn from_config(cfg: &Config) -> Result<AnalyticsSource> {
        match cfg.analytics.source.as_str() {
            "postgres" => Ok(AnalyticsSource::Postgres(postgres::PostgresSource::new(
                cfg.analytics.url(&cfg.database),
                &cfg.analytics.table,
                std::time::Duration::from_millis(cfg.analytics.query_timeout_ms),
            )?)),
            "clickhouse" => Ok(AnalyticsSource::Clickhouse(Box::new(
                clickhouse::ClickhouseSource::new(&cfg.analytics)?,
            ))),
            other => anyhow::bail!("analytics.source `{other}` is not supported"),
        }
    }

    /// For log lines: which store, never credentials.
    pub fn describe(&self) -> String {
        each!(self, s => s.describe())
    }

    /// Is the source reachable, with the columns triggers read?
    pub async fn check(&self) -> Result<()> {
        each!(self, s => s.check().await)
    }

    /// Unique visitors (distinct user_id, engagement events excluded) per window, in order.
    pub async fn unique_visitors(&self, windows: &[Window]) -> Result<Vec<i64>> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        each!(self, s => s.unique_visitors(windows).await)
    }

    /// Per (window, bucket_secs): Σ over consecutive buckets (aligned to the
    /// epoch) of each bucket's unique visitors (engagement excluded), and how
    /// many seconds of the window lie after the site's first event in it.
    pub async fn bucketed_visitors(&self, windows: &[(Window, i64)]) -> Result<Vec<(i64, f64)>> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        each!(self, s => s.bucketed_visitors(windows).await)
    }

    /// Per window, the top `n` referrer sources by unique visitors (direct
    /// traffic excluded; ties by name, bytewise).
    pub async fn top_sources(&self, windows: &[Window], n: i64) -> Result<Vec<Vec<Ranked>>> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        each!(self, s => s.top_sources(windows, n).await)
    }

    /// Per window, the top `n` pages (pageview pathnames) by unique visitors.
    pub async fn top_pages(&self, windows: &[Window], n: i64) -> Result<Vec<Vec<Ranked>>> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        each!(self, s => s.top_pages(windows, n).await)
    }

    /// Completions of each scan's goal, ordered by scan then time.
    pub async fn goal_completions(&self, scans: &[GoalScan<'_>]) -> Result<Vec<Completion>> {
        if scans.is_empty() {
            return Ok(Vec::new());
        }
        each!(self, s => s.goal_completions(scans).await)
    }
}
