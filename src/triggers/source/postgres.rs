//! The PostgreSQL analytics source: a table or view with Plausible's
//! events_v2 column names. Every query is one round trip for a whole batch
//! (windows or goal scans passed as arrays), and reads through the index the
//! README asks for: `(site_id, "timestamp") INCLUDE (user_id, name)`.
//!
//! Timestamps: the column may be `timestamp` (UTC, as Plausible writes) or
//! `timestamptz`; the session runs in UTC so both compare correctly, and
//! bounds are passed as timestamptz and turned into UTC timestamps.

use std::time::Duration;

use anyhow::{Context, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use time::OffsetDateTime;
use tokio_postgres::NoTls;

use super::types::{GoalCompletion, GoalScan, Ranked, Unavailable, Window};
use crate::triggers::goals::{Goal, GoalKind, PathMatch};

pub const POOL_SIZE: usize = 4;

/// A preview's sort memory, for its transaction only (a user may set it
/// without any grant).
const PREVIEW_WORK_MEM: &str = "SET LOCAL work_mem = '256MB'";

pub struct PostgresSource {
    pool: Pool,
    table: String,
    described: String,
}

impl PostgresSource {
    /// `table` was validated by the config (identifiers, optionally schema-qualified).
    pub fn new(url: &str, table: &str, timeout: Duration) -> Result<Self> {
        let mut cfg = crate::db::pg_config(url)?;
        cfg.options(format!(
            "-c TimeZone=UTC -c statement_timeout={}",
            timeout.as_millis()
        ));
        let described = format!("postgres {} table {table}", crate::db::describe(&cfg));
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .context("building the analytics connection pool")?;
        let table = table
            .split('.')
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(".");
        Ok(Self {
            pool,
            table,
            described,
        })
    }

    pub fn describe(&self) -> String {
        self.described.clone()
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| {
            Unavailable(format!(
                "cannot connect to the analytics database ({}): {e}",
                self.described
            ))
            .into()
        })
    }

    /// The server's version, for `check`'s report.
    pub async fn version(&self) -> Result<String> {
        let c = self.client().await?;
        let row = c
            .query_one("SHOW server_version", &[])
            .await
            .context("asking PostgreSQL for its version")?;
        Ok(row.get(0))
    }

    /// Fails, naming what is wrong, unless the table has every column.
    pub async fn check_columns(&self) -> Result<()> {
        let c = self.client().await?;
        let sql = format!(
            "SELECT site_id, \"timestamp\", name, pathname, user_id, session_id, referrer_source,
                    meta_key, meta_value, scroll_depth FROM {} LIMIT 0",
            self.table
        );
        c.query(&sql, &[]).await.map_err(|e| {
            let detail = e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string());
            anyhow::anyhow!(
                "analytics table {} is not usable ({detail}): it needs Plausible's events_v2 columns \
                 (site_id, timestamp, name, pathname, user_id, session_id, referrer_source, meta_key, \
                 meta_value, scroll_depth); map your table with a view (README, Triggers) or set analytics.table",
                self.table
            )
        })?;
        Ok(())
    }

    pub async fn unique_visitors(&self, windows: &[Window]) -> Result<Vec<i64>> {
        let sql = format!(
            "SELECT (SELECT count(DISTINCT e.user_id) FROM {t} e
                     WHERE e.site_id = q.site_id
                       AND e.\"timestamp\" >= (q.f AT TIME ZONE 'UTC')
                       AND e.\"timestamp\" <= (q.t AT TIME ZONE 'UTC')
                       AND e.name <> 'engagement')
             FROM unnest($1::int8[], $2::timestamptz[], $3::timestamptz[])
                  WITH ORDINALITY AS q(site_id, f, t, i)
             ORDER BY q.i",
            t = self.table
        );
        let (sites, from, to) = columns(windows.iter());
        let c = self.client().await?;
        let rows = c
            .query(&sql, &[&sites, &from, &to])
            .await
            .with_context(|| format!("counting unique visitors in {}", self.table))?;
        Ok(rows.iter().map(|r| r.get::<_, i64>(0)).collect())
    }

    pub async fn last_event(&self, windows: &[Window]) -> Result<Vec<Option<OffsetDateTime>>> {
        let sql = format!(
            "SELECT (SELECT floor(extract(epoch FROM max(e.\"timestamp\")))::int8 FROM {t} e
                     WHERE e.site_id = q.site_id
                       AND e.\"timestamp\" >= (q.f AT TIME ZONE 'UTC')
                       AND e.\"timestamp\" <= (q.t AT TIME ZONE 'UTC'))
             FROM unnest($1::int8[], $2::timestamptz[], $3::timestamptz[])
                  WITH ORDINALITY AS q(site_id, f, t, i)
             ORDER BY q.i",
            t = self.table
        );
        let (sites, from, to) = columns(windows.iter());
        let c = self.client().await?;
        let rows = c
            .query(&sql, &[&sites, &from, &to])
            .await
            .with_context(|| format!("finding sites' last events in {}", self.table))?;
        rows.iter()
            .map(|r| {
                r.get::<_, Option<i64>>(0)
                    .map(OffsetDateTime::from_unix_timestamp)
                    .transpose()
                    .context("an event's timestamp is out of range")
            })
            .collect()
    }

    pub async fn bucketed_visitors(&self, windows: &[(Window, i64)]) -> Result<Vec<(i64, f64)>> {
        let sql = format!(
            "SELECT (SELECT extract(epoch FROM min(e.\"timestamp\"))::float8 FROM {t} e
                     WHERE e.site_id = q.site_id
                       AND e.\"timestamp\" > (q.f AT TIME ZONE 'UTC')
                       AND e.\"timestamp\" <= (q.t AT TIME ZONE 'UTC')),
                    (SELECT count(*) FROM (
                         SELECT 1 FROM {t} e
                         WHERE e.site_id = q.site_id
                           AND e.\"timestamp\" > (q.f AT TIME ZONE 'UTC')
                           AND e.\"timestamp\" <= (q.t AT TIME ZONE 'UTC')
                           AND e.name <> 'engagement'
                         GROUP BY floor(extract(epoch FROM e.\"timestamp\")::float8 / q.b), e.user_id) x)
             FROM unnest($1::int8[], $2::timestamptz[], $3::timestamptz[], $4::float8[])
                  WITH ORDINALITY AS q(site_id, f, t, b, i)
             ORDER BY q.i",
            t = self.table
        );
        let (sites, from, to) = columns(windows.iter().map(|w| &w.0));
        let bucket: Vec<f64> = windows.iter().map(|w| w.1 as f64).collect();
        let c = self.client().await?;
        let rows = c
            .query(&sql, &[&sites, &from, &to, &bucket])
            .await
            .with_context(|| format!("reading traffic history from {}", self.table))?;
        // (sum, seconds of the window the site has data for)
        Ok(windows
            .iter()
            .zip(rows.iter())
            .map(|((w, _), r)| {
                let first: Option<f64> = r.get(0);
                let covered = first
                    .map(|f| (w.to.unix_timestamp() as f64 - f).max(0.0))
                    .unwrap_or(0.0);
                (r.get::<_, i64>(1), covered)
            })
            .collect())
    }

    pub async fn top_sources(&self, windows: &[Window], n: i64) -> Result<Vec<Vec<Ranked>>> {
        self.ranked(
            windows,
            n,
            "e.referrer_source",
            "e.name <> 'engagement' AND e.referrer_source <> '' AND e.referrer_source <> 'Direct / None'",
        )
        .await
    }

    pub async fn top_pages(&self, windows: &[Window], n: i64) -> Result<Vec<Vec<Ranked>>> {
        self.ranked(
            windows,
            n,
            "e.pathname",
            "e.name = 'pageview' AND e.pathname IS NOT NULL",
        )
        .await
    }

    /// The top `n` values of `column` per window, in one statement. Ties are
    /// broken by the name's bytes (`COLLATE "C"`), as every store can.
    async fn ranked(
        &self,
        windows: &[Window],
        n: i64,
        column: &str,
        filter: &str,
    ) -> Result<Vec<Vec<Ranked>>> {
        let sql = format!(
            "SELECT q.i::int8, r.name, r.v
             FROM unnest($1::int8[], $2::timestamptz[], $3::timestamptz[])
                  WITH ORDINALITY AS q(site_id, f, t, i)
             CROSS JOIN LATERAL (
                 SELECT {column} AS name, count(DISTINCT e.user_id) AS v
                 FROM {t} e
                 WHERE e.site_id = q.site_id
                   AND e.\"timestamp\" >= (q.f AT TIME ZONE 'UTC')
                   AND e.\"timestamp\" <= (q.t AT TIME ZONE 'UTC')
                   AND {filter}
                 GROUP BY 1 ORDER BY v DESC, {column} COLLATE \"C\" LIMIT $4) r
             ORDER BY q.i, r.v DESC, r.name COLLATE \"C\"",
            t = self.table
        );
        let (sites, from, to) = columns(windows.iter());
        let c = self.client().await?;
        let rows = c
            .query(&sql, &[&sites, &from, &to, &n])
            .await
            .with_context(|| format!("ranking {column} in {}", self.table))?;
        let mut out = vec![Vec::new(); windows.len()];
        for r in rows {
            out[r.get::<_, i64>(0) as usize - 1].push(Ranked {
                name: r.get(1),
                visitors: r.get(2),
            });
        }
        Ok(out)
    }

    pub async fn goal_completions(&self, scans: &[GoalScan<'_>]) -> Result<Vec<GoalCompletion>> {
        let sql = goal_sql(
            &self.table,
            "g.i::int8,
                    (extract(epoch FROM e.\"timestamp\") * 1000000)::int8,
                    e.name, coalesce(e.pathname, ''), coalesce(e.user_id::text, ''),
                    coalesce(e.session_id::text, ''), count(*)::int8",
            "GROUP BY 1, 2, 3, 4, 5, 6
             ORDER BY 1, 2, 3, 4, 5, 6",
        );
        let p = GoalParams::of(scans);
        let c = self.client().await?;
        let rows = c
            .query(&sql, &p.refs())
            .await
            .with_context(|| format!("scanning {} for goal completions", self.table))?;
        Ok(rows
            .iter()
            .map(|r| GoalCompletion {
                scan: r.get::<_, i64>(0) as usize - 1,
                timestamp_us: r.get(1),
                name: r.get(2),
                pathname: r.get(3),
                user_id: r.get(4),
                session_id: r.get(5),
                count: r.get(6),
            })
            .collect())
    }

    /// Per bucket `[bounds[i], bounds[i + 1])` (the last one closed), the
    /// completions of `goals`: the goal scan's own conditions, grouped.
    pub async fn completions_per_bucket(
        &self,
        goals: &[Goal],
        bounds: &[OffsetDateTime],
    ) -> Result<Vec<i64>> {
        let n = bounds.len() - 1;
        // The scans read `(from, to]`: from a microsecond before the first bound.
        let from = bounds[0] - time::Duration::microseconds(1);
        let to = bounds[n];
        let scans: Vec<GoalScan<'_>> = goals
            .iter()
            .map(|goal| GoalScan { goal, from, to })
            .collect();
        let sql = goal_sql(
            &self.table,
            "least(width_bucket(extract(epoch FROM e.\"timestamp\")::float8, $13::float8[]), $14)::int8,
                    count(*)::int8",
            "GROUP BY 1",
        );
        let p = GoalParams::of(&scans);
        let edges: Vec<f64> = bounds
            .iter()
            .map(|b| b.unix_timestamp_nanos() as f64 / 1e9)
            .collect();
        let last = n as i32;
        let mut params = p.refs();
        params.push(&edges);
        params.push(&last);
        let c = self.client().await?;
        let rows = c
            .query(&sql, &params)
            .await
            .with_context(|| format!("counting goal completions per day in {}", self.table))?;
        let mut out = vec![0; n];
        for r in rows {
            let b = r.get::<_, i64>(0);
            if (1..=n as i64).contains(&b) {
                out[b as usize - 1] += r.get::<_, i64>(1);
            }
        }
        Ok(out)
    }

    /// Over the instants `k × step_secs` (`k` in `first..=last`), where the
    /// site's unique visitors of the window `[instant - window_secs,
    /// instant]` change. An event at `e` is in the windows of the instants
    /// in `[e, e + window]`, i.e. `k` in `lo..=hi`; a visitor's events,
    /// in time order, each add only the instants the one before did not
    /// reach (`lag(hi)`), so a visitor counts once per window; each such
    /// run is +1 at its start and -1 after its end. Integer microseconds
    /// throughout, so an instant on a window's edge counts as the
    /// evaluator's `>=` and `<=` do.
    pub async fn visitor_steps(
        &self,
        site_id: i64,
        window_secs: i64,
        step_secs: i64,
        first: i64,
        last: i64,
    ) -> Result<Vec<(i64, i64)>> {
        let sql = format!(
            "WITH ev AS (
                 SELECT e.user_id, (date_part('epoch', e.\"timestamp\") * 1000000)::int8 AS us
                 FROM {t} e
                 WHERE e.site_id = $1
                   AND e.\"timestamp\" >= ($2::timestamptz AT TIME ZONE 'UTC')
                   AND e.\"timestamp\" <= ($3::timestamptz AT TIME ZONE 'UTC')
                   AND e.name <> 'engagement' AND e.user_id IS NOT NULL
             ), r AS (
                 SELECT user_id, us, (us + $5 - 1) / $5 AS lo, (us + $4) / $5 AS hi FROM ev
             ), n AS (
                 SELECT greatest(lo, lag(hi) OVER (PARTITION BY user_id ORDER BY us) + 1) AS s, hi FROM r
             )
             SELECT v.k, sum(v.d)::int8
             FROM n CROSS JOIN LATERAL (VALUES (n.s, 1), (n.hi + 1, -1)) AS v(k, d)
             WHERE n.s <= n.hi
             GROUP BY v.k ORDER BY v.k",
            t = self.table
        );
        let step_us = step_secs * 1_000_000;
        let window_us = window_secs * 1_000_000;
        let at = |k: i64| OffsetDateTime::from_unix_timestamp(k * step_secs);
        let from = at(first)? - time::Duration::seconds(window_secs);
        let to = at(last)?;
        let mut c = self.client().await?;
        let tx = c
            .transaction()
            .await
            .context("starting the preview's transaction")?;
        // The visitors' events are sorted by visitor and time: in memory
        // where it fits, rather than in 4 MB runs on disk.
        tx.batch_execute(PREVIEW_WORK_MEM)
            .await
            .context("setting the preview's work_mem")?;
        let rows = tx
            .query(&sql, &[&site_id, &from, &to, &window_us, &step_us])
            .await
            .with_context(|| format!("counting unique visitors over time in {}", self.table))?;
        tx.commit().await.ok();
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

/// The goal scan's statement: each scan's goal matched on the events of its
/// site in `(from, to]`; `select` and `tail` (GROUP BY, ORDER BY) make its
/// answer. Goal fields travel as parameters (`GoalParams`), never as SQL
/// text. Each site's events are read once, for all its goals. The overall
/// bounds ($10, $11) are plain parameters so the planner sees how narrow the
/// range is and reads the (site_id, timestamp) index: with only per-scan
/// bounds it cannot, and chose a sequential scan of 10 million rows (2.9 s)
/// over an index scan of a few thousand.
fn goal_sql(table: &str, select: &str, tail: &str) -> String {
    format!(
        "WITH scans AS MATERIALIZED (
             SELECT * FROM unnest($1::int8[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::text[],
                                  $6::text[], $7::text[], $8::int2[], $9::jsonb[])
             WITH ORDINALITY AS g(site_id, f, t, kind, event_name, path_exact, path_re, scroll_min, props, i))
         SELECT {select}
         FROM {table} e
         JOIN scans g ON g.site_id = e.site_id
                   AND e.\"timestamp\" > (g.f AT TIME ZONE 'UTC')
                   AND e.\"timestamp\" <= (g.t AT TIME ZONE 'UTC')
         WHERE e.site_id = ANY($1)
           AND e.name = ANY($12)
           AND e.\"timestamp\" > ($10::timestamptz AT TIME ZONE 'UTC')
           AND e.\"timestamp\" <= ($11::timestamptz AT TIME ZONE 'UTC')
           AND NOT EXISTS (
               SELECT 1 FROM jsonb_each_text(g.props) p
               WHERE coalesce(e.meta_value[array_position(e.meta_key, p.key)], '') <> p.value)
           AND CASE g.kind
           WHEN 'event' THEN e.name = g.event_name
           WHEN 'page' THEN e.name = 'pageview'
               AND (e.pathname = g.path_exact OR e.pathname ~ g.path_re)
           ELSE e.name = 'engagement'
               AND (e.pathname = g.path_exact OR e.pathname ~ g.path_re)
               AND e.scroll_depth BETWEEN g.scroll_min AND 100
         END
         {tail}"
    )
}

/// `goal_sql`'s parameters $1 to $12, from the scans.
struct GoalParams {
    sites: Vec<i64>,
    from: Vec<OffsetDateTime>,
    to: Vec<OffsetDateTime>,
    kind: Vec<&'static str>,
    event_name: Vec<Option<String>>,
    path_exact: Vec<Option<String>>,
    path_re: Vec<Option<String>>,
    scroll_min: Vec<i16>,
    props: Vec<serde_json::Value>,
    lo: OffsetDateTime,
    hi: OffsetDateTime,
    names: Vec<String>,
}

impl GoalParams {
    /// `scans` is not empty.
    fn of(scans: &[GoalScan<'_>]) -> GoalParams {
        let mut p = GoalParams {
            sites: Vec::with_capacity(scans.len()),
            from: Vec::with_capacity(scans.len()),
            to: Vec::with_capacity(scans.len()),
            kind: Vec::with_capacity(scans.len()),
            event_name: Vec::with_capacity(scans.len()),
            path_exact: Vec::with_capacity(scans.len()),
            path_re: Vec::with_capacity(scans.len()),
            scroll_min: Vec::with_capacity(scans.len()),
            props: Vec::with_capacity(scans.len()),
            lo: scans
                .iter()
                .map(|s| s.from)
                .min()
                .expect("scans is not empty"),
            hi: scans
                .iter()
                .map(|s| s.to)
                .max()
                .expect("scans is not empty"),
            names: Vec::new(),
        };
        for s in scans {
            p.sites.push(s.goal.site_id);
            p.from.push(s.from);
            p.to.push(s.to);
            p.kind.push(s.goal.type_name());
            let (ev, scroll) = match &s.goal.kind {
                GoalKind::Event { event_name } => (Some(event_name.clone()), 0),
                GoalKind::Page { .. } => (None, 0),
                GoalKind::Scroll { threshold, .. } => (None, *threshold),
            };
            p.event_name.push(ev);
            p.props
                .push(serde_json::to_value(&s.goal.custom_props).expect("a map of strings"));
            p.scroll_min.push(scroll);
            match s.goal.path_match() {
                Some(PathMatch::Exact(x)) => {
                    p.path_exact.push(Some(x));
                    p.path_re.push(None);
                }
                Some(PathMatch::Regex(r)) => {
                    p.path_exact.push(None);
                    p.path_re.push(Some(r));
                }
                None => {
                    p.path_exact.push(None);
                    p.path_re.push(None);
                }
            }
            // Every event name a scan can match: lets an index on
            // (site_id, name, timestamp) serve, and drops other events early.
            p.names.push(match &s.goal.kind {
                GoalKind::Event { event_name, .. } => event_name.clone(),
                GoalKind::Page { .. } => "pageview".into(),
                GoalKind::Scroll { .. } => "engagement".into(),
            });
        }
        p.names.sort_unstable();
        p.names.dedup();
        p
    }

    fn refs(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        vec![
            &self.sites,
            &self.from,
            &self.to,
            &self.kind,
            &self.event_name,
            &self.path_exact,
            &self.path_re,
            &self.scroll_min,
            &self.props,
            &self.lo,
            &self.hi,
            &self.names,
        ]
    }
}

/// Windows as the three arrays the queries unnest.
fn columns<'a>(
    windows: impl Iterator<Item = &'a Window>,
) -> (Vec<i64>, Vec<OffsetDateTime>, Vec<OffsetDateTime>) {
    let mut out = (Vec::new(), Vec::new(), Vec::new());
    for w in windows {
        out.0.push(w.site_id);
        out.1.push(w.from);
        out.2.push(w.to);
    }
    out
}
