//! Analytics sources: where trigger evaluation reads events. One small
//! interface (the questions triggers ask), one implementation per store. The
//! PostgreSQL source reads a table or view with Plausible's events_v2 column
//! names; the ClickHouse source reads Plausible's own events_v2 over HTTP.
//!
//! Visitor windows are `[from, to]` (see `Window`); history buckets and goal
//! scans are `(from, to]`; all in UTC.

pub mod checker;
pub mod clickhouse;
pub mod postgres;
pub mod types;

pub use types::{is_unavailable, GoalCompletion, GoalScan, Ranked, Unavailable, Window};

use anyhow::Result;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::config::Config;
use crate::triggers::goals::Goal;
use crate::triggers::windows::{DEFAULT_DROP_WINDOW_SECS, DEFAULT_SPIKE_WINDOW_SECS};

/// Sources and pages listed in a spike payload (as Plausible's spike email):
/// what the evaluator asks `top_sources` and `top_pages` for, and so what
/// `check` asks too.
pub const TOP_N: i64 = 3;

/// The store answers, but refused one of the statements the daemon sends
/// (a column of another type, a function the server lacks, a user without
/// the right grant): triggers cannot work until the source is fixed, so the
/// daemon is not ready. `statement` names the question, `message` carries
/// the server's own text.
#[derive(Debug)]
pub struct Incompatible {
    pub statement: &'static str,
    pub message: String,
}

impl std::fmt::Display for Incompatible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "analytics source is incompatible: the {} failed: {}",
            self.statement, self.message
        )
    }
}
impl std::error::Error for Incompatible {}

/// Is `e` (or anything it wraps) an `Incompatible`?
pub fn is_incompatible(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.downcast_ref::<Incompatible>().is_some())
}

/// What a passing `check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The server's version as it reports it (`SHOW server_version`,
    /// `SELECT version()`).
    pub version: String,
    /// How many statements were run (each answered).
    pub statements: usize,
}

/// The verdict of the last `check`, as the daemon hands it to `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceStatus {
    /// Every statement was answered.
    Compatible { version: String },
    /// The store could not be asked (an `Unavailable`): deliveries flow
    /// without analytics and triggers resume by themselves once it answers,
    /// so this does not make the daemon unready; it is reported.
    Unavailable(String),
    /// A statement was refused (an `Incompatible`): not ready.
    Incompatible(String),
}

impl SourceStatus {
    pub fn of(r: &Result<Checked>) -> SourceStatus {
        match r {
            Ok(c) => SourceStatus::Compatible {
                version: c.version.clone(),
            },
            Err(e) if is_unavailable(e) => SourceStatus::Unavailable(format!("{e:#}")),
            Err(e) => SourceStatus::Incompatible(format!("{e:#}")),
        }
    }

    /// Only a refused statement holds readiness back.
    pub fn ready(&self) -> bool {
        !matches!(self, SourceStatus::Incompatible(_))
    }
}

/// The empty instant every check asks about: a zero-length window (at most
/// the instant itself) at the start of 1970-01-02, for site 0, which
/// Plausible never numbers, so no row is read. Every statement is still planned and analysed
/// in full by the server, so a refused one fails the check.
pub const PROBE_SITE: i64 = 0;
pub const PROBE_AT: OffsetDateTime = time::macros::datetime!(1970-01-02 00:00 UTC);

/// One goal of each kind the daemon scans for, on the probe site.
fn probe_goals() -> Vec<(&'static str, Goal)> {
    use crate::triggers::goals::GoalKind;
    // Every kind with a custom prop, as current Plausible allows.
    let goal = |id, kind| Goal {
        id,
        site_id: PROBE_SITE,
        display_name: "check".into(),
        kind,
        custom_props: [("plan".to_string(), "pro".to_string())].into(),
    };
    vec![
        (
            "goal completions query (event goal with custom props)",
            goal(
                1,
                GoalKind::Event {
                    event_name: "Signup".into(),
                },
            ),
        ),
        (
            "goal completions query (exact page goal)",
            goal(
                2,
                GoalKind::Page {
                    page_path: "/pricing".into(),
                },
            ),
        ),
        (
            "goal completions query (wildcard page goal)",
            goal(
                3,
                GoalKind::Page {
                    page_path: "/blog/**".into(),
                },
            ),
        ),
        (
            "goal completions query (scroll goal)",
            goal(
                4,
                GoalKind::Scroll {
                    page_path: "/docs/*".into(),
                    threshold: 50,
                },
            ),
        ),
    ]
}

/// The store behind an `AnalyticsSource`.
enum Store {
    Postgres(postgres::PostgresSource),
    Clickhouse(Box<clickhouse::ClickhouseSource>),
}

/// The questions triggers ask of analytics events.
pub struct AnalyticsSource {
    store: Store,
    /// Notified whenever a question fails: the daemon's source check runs
    /// again then, so `/readyz` learns of a source turned incompatible.
    failed: Notify,
}

/// Calls the same method on whichever store this is.
macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match &$self.store {
            Store::Postgres($s) => $call,
            Store::Clickhouse($s) => $call,
        }
    };
}

/// A statement's failure during `check`: `Unavailable` as it is, anything
/// else as the `Incompatible` statement it is.
fn refused<T>(statement: &'static str, r: Result<T>) -> Result<T> {
    r.map_err(|e| {
        if is_unavailable(&e) {
            e
        } else {
            Incompatible {
                statement,
                message: format!("{e:#}"),
            }
            .into()
        }
    })
}

impl AnalyticsSource {
    pub fn from_config(cfg: &Config) -> Result<AnalyticsSource> {
        let store = match cfg.analytics.source.as_str() {
            "postgres" => Store::Postgres(postgres::PostgresSource::new(
                cfg.analytics.url(&cfg.database),
                &cfg.analytics.table,
                std::time::Duration::from_millis(cfg.analytics.query_timeout_ms),
            )?),
            "clickhouse" => {
                Store::Clickhouse(Box::new(clickhouse::ClickhouseSource::new(&cfg.analytics)?))
            }
            other => anyhow::bail!("analytics.source `{other}` is not supported"),
        };
        Ok(AnalyticsSource {
            store,
            failed: Notify::new(),
        })
    }

    /// For log lines: which store, never credentials.
    pub fn describe(&self) -> String {
        each!(self, s => s.describe())
    }

    /// Proves the source works: reads the server's version, checks the
    /// columns, then runs every statement the daemon sends (unique visitors,
    /// bucketed visitors for derived thresholds, top sources, top pages, last event,
    /// goal completions for each goal kind alone and all together), each
    /// built by the source's own query functions, over the empty probe
    /// window. Fails with `Unavailable` when the store cannot be asked, or
    /// `Incompatible` naming the first statement refused and the server's text.
    pub async fn check(&self) -> Result<Checked> {
        let version = refused("server version query", each!(self, s => s.version().await))?;
        refused("columns query", each!(self, s => s.check_columns().await))?;
        let w = Window {
            site_id: PROBE_SITE,
            from: PROBE_AT,
            to: PROBE_AT,
        };
        let mut statements = 2;
        refused(
            "unique visitors query",
            each!(self, s => s.unique_visitors(&[w]).await),
        )?;
        // As the evaluator derives spike and drop thresholds: 5-minute and
        // 12-hour buckets, in one statement.
        let buckets = [
            (w, DEFAULT_SPIKE_WINDOW_SECS),
            (w, DEFAULT_DROP_WINDOW_SECS),
        ];
        refused(
            "bucketed visitors query (derived thresholds)",
            each!(self, s => s.bucketed_visitors(&buckets).await),
        )?;
        refused(
            "top sources query",
            each!(self, s => s.top_sources(&[w], TOP_N).await),
        )?;
        refused(
            "top pages query",
            each!(self, s => s.top_pages(&[w], TOP_N).await),
        )?;
        refused(
            "last event query (tracking triggers)",
            each!(self, s => s.last_event(&[w]).await),
        )?;
        statements += 5;
        let goals = probe_goals();
        let scan = |g| GoalScan {
            goal: g,
            from: PROBE_AT,
            to: PROBE_AT,
        };
        for (statement, goal) in &goals {
            refused(
                statement,
                each!(self, s => s.goal_completions(&[scan(goal)]).await),
            )?;
            statements += 1;
        }
        let all: Vec<GoalScan<'_>> = goals.iter().map(|(_, g)| scan(g)).collect();
        refused(
            "goal completions query (every goal kind at once)",
            each!(self, s => s.goal_completions(&all).await),
        )?;
        statements += 1;
        Ok(Checked {
            version,
            statements,
        })
    }

    /// Resolves when a question has failed since the last call (one permit:
    /// many failures wake a waiter once).
    pub async fn failed(&self) {
        self.failed.notified().await
    }

    fn noticed<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.failed.notify_one();
        }
        r
    }

    /// Unique visitors (distinct user_id, engagement events excluded) per window, in order.
    pub async fn unique_visitors(&self, windows: &[Window]) -> Result<Vec<i64>> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        self.noticed(each!(self, s => s.unique_visitors(windows).await))
    }

    /// Per window `[from, to]`, the time of the site's last event in it
    /// (any event, engagement included), None when it has none: what a
    /// tracking trigger asks.
    pub async fn last_event(&self, windows: &[Window]) -> Result<Vec<Option<OffsetDateTime>>> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        self.noticed(each!(self, s => s.last_event(windows).await))
    }

    /// Per (window, bucket_secs): Σ over consecutive buckets (aligned to the
    /// epoch) of each bucket's unique visitors (engagement excluded), and how
    /// many seconds of the window lie after the site's first event in it.
    pub async fn bucketed_visitors(&self, windows: &[(Window, i64)]) -> Result<Vec<(i64, f64)>> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        self.noticed(each!(self, s => s.bucketed_visitors(windows).await))
    }

    /// Per window, the top `n` referrer sources by unique visitors (direct
    /// traffic excluded; ties by name, bytewise).
    pub async fn top_sources(&self, windows: &[Window], n: i64) -> Result<Vec<Vec<Ranked>>> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        self.noticed(each!(self, s => s.top_sources(windows, n).await))
    }

    /// Per window, the top `n` pages (pageview pathnames) by unique visitors.
    pub async fn top_pages(&self, windows: &[Window], n: i64) -> Result<Vec<Vec<Ranked>>> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        self.noticed(each!(self, s => s.top_pages(windows, n).await))
    }

    /// For a trigger preview (`preview`): over the evaluation instants
    /// `k × step_secs`, `k` in `first..=last`, how the unique visitors
    /// (engagement excluded) of the window `[instant - window_secs,
    /// instant]` change at each `k` (`(k, change)`, only where it does;
    /// changes before `first` fold into the first count): one statement.
    pub async fn visitor_steps(
        &self,
        site_id: i64,
        window_secs: i64,
        step_secs: i64,
        first: i64,
        last: i64,
    ) -> Result<Vec<(i64, i64)>> {
        if last < first {
            return Ok(Vec::new());
        }
        self.noticed(
            each!(self, s => s.visitor_steps(site_id, window_secs, step_secs, first, last).await),
        )
    }

    /// For a goal trigger's preview: completions of `goals` (an event
    /// counted once per goal it completes) in each `[bounds[i], bounds[i +
    /// 1])`; all goals of one site. One statement.
    pub async fn completions_per_bucket(
        &self,
        goals: &[Goal],
        bounds: &[OffsetDateTime],
    ) -> Result<Vec<i64>> {
        if goals.is_empty() || bounds.len() < 2 {
            return Ok(vec![0; bounds.len().saturating_sub(1)]);
        }
        self.noticed(each!(self, s => s.completions_per_bucket(goals, bounds).await))
    }

    /// Completions of each scan's goal, ordered by scan then time.
    pub async fn goal_completions(&self, scans: &[GoalScan<'_>]) -> Result<Vec<GoalCompletion>> {
        if scans.is_empty() {
            return Ok(Vec::new());
        }
        self.noticed(each!(self, s => s.goal_completions(scans).await))
    }
}
