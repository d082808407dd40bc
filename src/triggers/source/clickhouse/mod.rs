//! The ClickHouse analytics source: Plausible's own `events_v2`, read over
//! ClickHouse's HTTP interface. It answers the same questions as the
//! PostgreSQL source with the same meaning (visitor windows `[from, to]`,
//! history and goal scans `(from, to]`, engagement
//! events not counted, ties broken bytewise), written in the SQL that
//! ClickHouse 18.x already understands and current versions still do:
//!
//! - values are written into the query text through `sql::string` (18.x has
//!   no query parameters), never pasted;
//! - no settings are sent (a `readonly = 1` user may not change any);
//! - nothing newer than 18.x: no `DateTime64`, `Map`, window functions,
//!   `WITH FILL`, `arrayFold`, `multiMatchAny`, `toValidUTF8` or `SETTINGS`
//!   clauses; only `uniq`, `uniqIf`, `arrayExists`, `arrayJoin`, `arraySum`,
//!   `bitAnd`, `tupleElement`, `match`, `intDiv`, `LIMIT n BY`, `UNION ALL`,
//!   `groupArray`, `arraySort`, `arrayMap`, `arrayFilter`, `arrayCount`,
//!   `arrayPushFront`, `arrayPopBack` (trigger preview)
//!   and `ALL INNER JOIN … USING`.
//!
//! Visitors are counted with `uniq(user_id)`, the function Plausible's own
//! dashboard and spike emails use, so a payload's count is the number the
//! site owner sees. It is exact for small sets and approximate beyond about
//! 65,000 visitors in one window (see README "ClickHouse").
//!
//! Event timestamps are whole seconds (`DateTime`), so every bound is written
//! as whole seconds: `t > floor(from)` and `t <= floor(to)` select exactly the
//! whole-second instants in `(from, to]`.

pub mod http;
pub mod sql;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use time::OffsetDateTime;

use super::types::{is_unavailable, GoalCompletion, GoalScan, Ranked, Window};
use crate::config::AnalyticsConfig;
use crate::triggers::goals::{GoalKind, PathMatch};
use http::{ChHttp, ChHttpConfig};
use sql::{ident, int, string, text};

/// At most this many windows in one query (the site ids in its `IN` lists
/// must stay well under ClickHouse's 256 KiB `max_query_size`).
pub const WINDOWS_PER_QUERY: usize = 5_000;
/// Distinct goal conditions written into one query, in bytes (more scans
/// are split into further queries; ClickHouse refuses queries over 256 KiB).
pub const GOAL_SQL_BUDGET: usize = 128 * 1024;

/// A scan's row in the joined scans table, at most: `(k, site, from, to, mask), `.
const SCAN_ROW_BYTES: usize = 72;

/// The columns triggers read, as in Plausible's events_v2.
const COLUMNS: &str =
    "site_id, `timestamp`, name, pathname, user_id, session_id, referrer_source, \
                       `meta.key`, `meta.value`, scroll_depth";

pub struct ClickhouseSource {
    http: ChHttp,
    /// `db`.`table`
    table: String,
    described: String,
}

impl ClickhouseSource {
    pub fn new(a: &AnalyticsConfig) -> Result<Self> {
        let target = a.clickhouse_target()?;
        let http = ChHttp::new(ChHttpConfig {
            endpoint: target.endpoint.clone(),
            database: target.database.clone(),
            user: a.clickhouse_user.clone(),
            password: a.clickhouse_password.as_ref().map(|p| p.0.clone()),
            ca_file: a.clickhouse_ca_file.clone(),
            connect_timeout: Duration::from_millis(a.clickhouse_connect_timeout_ms),
            query_timeout: Duration::from_millis(a.query_timeout_ms),
        })?;
        let described = format!("{} table {}", http.describe(), target.table);
        if a.clickhouse_user == crate::config::DEFAULT_CLICKHOUSE_USER {
            tracing::warn!(
                "analytics.clickhouse_user is `default`, which can write to Plausible's events; \
                 create a read-only user for the daemon (README, ClickHouse)"
            );
        }
        let loopback = match target.endpoint.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        if target.endpoint.scheme() == "http" && !loopback {
            tracing::warn!(
                endpoint = %target.endpoint,
                "analytics.clickhouse_url is plain http to another host: the ClickHouse password \
                 crosses the network unencrypted; use https (port 8443) or a loopback address"
            );
        }
        Ok(Self {
            http,
            table: format!("{}.{}", ident(&target.database), ident(&target.table)),
            described,
        })
    }

    pub fn describe(&self) -> String {
        self.described.clone()
    }

    async fn rows(&self, sql: String, columns: usize) -> Result<Vec<Vec<Vec<u8>>>> {
        let body = self.http.query(sql).await?;
        sql::rows(&body, columns)
    }

    /// The server's version, for `check`'s report.
    pub async fn version(&self) -> Result<String> {
        let rows = self
            .rows("SELECT version() FORMAT TabSeparated".into(), 1)
            .await
            .context("asking ClickHouse for its version")?;
        match rows.into_iter().next() {
            Some(mut r) => Ok(text(std::mem::take(&mut r[0]))),
            None => anyhow::bail!("ClickHouse answered `SELECT version()` with no row"),
        }
    }

    /// Fails, naming what is wrong, unless the table has every column.
    pub async fn check_columns(&self) -> Result<()> {
        let q = format!(
            "SELECT {COLUMNS} FROM {} LIMIT 0 FORMAT TabSeparated",
            self.table
        );
        match self.http.query(q).await {
            Ok(_) => Ok(()),
            Err(e) if is_unavailable(&e) => Err(e),
            Err(e) => Err(anyhow::anyhow!(
                "ClickHouse table {} is not usable ({e:#}): it needs Plausible's events_v2 columns \
                 (site_id, timestamp, name, pathname, user_id, session_id, referrer_source, meta.key, \
                 meta.value, scroll_depth) and the user needs SELECT on it; set the database in \
                 analytics.clickhouse_url and the table in analytics.table",
                self.table
            )),
        }
    }

    /// Asks `query` of the windows (with their bucket sizes), grouped by
    /// bounds, `WINDOWS_PER_QUERY` at a time. Each answer row starts with its
    /// group and site, then `columns - 2` values; returns, per window asked,
    /// the rest of the rows of its (group, site), empty when none.
    async fn per_window(
        &self,
        windows: &[(Window, i64)],
        columns: usize,
        query: impl Fn(&Group) -> String,
        what: &'static str,
    ) -> Result<Vec<Vec<Vec<Vec<u8>>>>> {
        let mut out = Vec::with_capacity(windows.len());
        for chunk in windows.chunks(WINDOWS_PER_QUERY) {
            let groups = Groups::of(chunk.iter().map(|(w, b)| (w, *b)));
            let rows = self
                .rows(groups.union(&query), columns)
                .await
                .context(what)?;
            let mut found: HashMap<(usize, i64), Vec<Vec<Vec<u8>>>> = HashMap::new();
            for mut r in rows {
                let key = (int(&r[0])? as usize, int(&r[1])?);
                found.entry(key).or_default().push(r.split_off(2));
            }
            out.extend(
                groups
                    .members
                    .iter()
                    .map(|key| found.get(key).cloned().unwrap_or_default()),
            );
        }
        Ok(out)
    }

    /// One `aggregate` per site over each window's rows (those matching
    /// `filter` too, when given): what `unique_visitors` and `last_event` ask.
    async fn per_site(
        &self,
        windows: &[Window],
        aggregate: &str,
        filter: &str,
        what: &'static str,
    ) -> Result<Vec<Vec<Vec<Vec<u8>>>>> {
        let windows: Vec<(Window, i64)> = windows.iter().map(|w| (*w, 0)).collect();
        self.per_window(
            &windows,
            3,
            |g| {
                format!(
                    "SELECT toUInt32({}) AS g, site_id, {aggregate} FROM {}
                     WHERE site_id IN ({}) AND {}{filter}
                     GROUP BY site_id",
                    g.index,
                    self.table,
                    g.sites(),
                    window_span(g.from, g.to)
                )
            },
            what,
        )
        .await
    }

    pub async fn unique_visitors(&self, windows: &[Window]) -> Result<Vec<i64>> {
        let found = self
            .per_site(
                windows,
                "uniq(user_id)",
                " AND name != 'engagement'",
                "counting unique visitors",
            )
            .await?;
        found
            .iter()
            .map(|rows| rows.first().map_or(Ok(0), |r| int(&r[0])))
            .collect()
    }

    pub async fn last_event(&self, windows: &[Window]) -> Result<Vec<Option<OffsetDateTime>>> {
        let found = self
            .per_site(
                windows,
                "max(toUnixTimestamp(`timestamp`))",
                "",
                "finding sites' last events",
            )
            .await?;
        found
            .iter()
            .map(|rows| match rows.first() {
                None => Ok(None),
                Some(r) => Ok(Some(
                    OffsetDateTime::from_unix_timestamp(int(&r[0])?)
                        .context("an event's timestamp is out of range")?,
                )),
            })
            .collect()
    }

    pub async fn bucketed_visitors(&self, windows: &[(Window, i64)]) -> Result<Vec<(i64, f64)>> {
        let buckets: Vec<(Window, i64)> = windows.iter().map(|(w, b)| (*w, (*b).max(1))).collect();
        let found = self
            .per_window(
                &buckets,
                4,
                |g| {
                    format!(
                        "SELECT toUInt32({}) AS g, site_id, min(first), sum(u) FROM (
                             SELECT site_id, intDiv(toUnixTimestamp(`timestamp`), {}) AS bucket,
                                    min(toUnixTimestamp(`timestamp`)) AS first,
                                    uniqIf(user_id, name != 'engagement') AS u
                             FROM {} WHERE site_id IN ({}) AND {}
                             GROUP BY site_id, bucket)
                         GROUP BY site_id",
                        g.index,
                        g.bucket,
                        self.table,
                        g.sites(),
                        span(g.from, g.to)
                    )
                },
                "reading traffic history",
            )
            .await?;
        // (sum, seconds of the window the site has data for)
        found
            .iter()
            .zip(windows)
            .map(|(rows, (w, _))| match rows.first() {
                Some(r) => Ok((
                    int(&r[1])?,
                    (w.to.unix_timestamp() - int(&r[0])?).max(0) as f64,
                )),
                None => Ok((0, 0.0)),
            })
            .collect()
    }

    pub async fn top_sources(&self, windows: &[Window], n: i64) -> Result<Vec<Vec<Ranked>>> {
        self.ranked(
            windows,
            n,
            "referrer_source",
            "name != 'engagement' AND referrer_source != '' AND referrer_source != 'Direct / None'",
        )
        .await
    }

    pub async fn top_pages(&self, windows: &[Window], n: i64) -> Result<Vec<Vec<Ranked>>> {
        self.ranked(windows, n, "pathname", "name = 'pageview'")
            .await
    }

    /// The top `n` values of `column` per window. ClickHouse compares strings
    /// by their bytes, as the PostgreSQL source's `COLLATE "C"` does.
    async fn ranked(
        &self,
        windows: &[Window],
        n: i64,
        column: &str,
        filter: &str,
    ) -> Result<Vec<Vec<Ranked>>> {
        let windows: Vec<(Window, i64)> = windows.iter().map(|w| (*w, 0)).collect();
        let found = self
            .per_window(
                &windows,
                4,
                |g| {
                    format!(
                        "SELECT toUInt32({}) AS g, site_id, {column} AS value, uniq(user_id) AS v FROM {}
                         WHERE site_id IN ({}) AND {} AND {filter}
                         GROUP BY site_id, value
                         ORDER BY site_id, v DESC, value
                         LIMIT {} BY site_id",
                        g.index,
                        self.table,
                        g.sites(),
                        window_span(g.from, g.to),
                        n.max(0)
                    )
                },
                "ranking sources or pages",
            )
            .await?;
        found
            .into_iter()
            .map(|rows| {
                // (value's bytes, visitors), ordered on the bytes before they
                // are decoded (as ClickHouse chose the top n).
                let mut list = rows
                    .into_iter()
                    .map(|mut r| Ok((std::mem::take(&mut r[0]), int(&r[1])?)))
                    .collect::<Result<Vec<_>>>()?;
                list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                Ok(list
                    .into_iter()
                    .map(|(name, visitors)| Ranked {
                        name: text(name),
                        visitors,
                    })
                    .collect())
            })
            .collect()
    }

    pub async fn goal_completions(&self, scans: &[GoalScan<'_>]) -> Result<Vec<GoalCompletion>> {
        // ClickHouse 18.x spends milliseconds analysing every expression of a
        // query, so a query must not grow with the scans (100 goal triggers
        // as 100 subqueries or 300 written-out conditions took ~1 s before
        // reading a row). Each distinct goal condition is written once, as a
        // bit of a per-row mask `w`; the scans themselves (site, window, bit)
        // are data, a small table joined on site_id. So a row is matched to
        // the scans of its own site by a hash join, and `match()` keeps the
        // constant pattern it needs. A query holds at most 64 distinct
        // conditions (one UInt64 mask) and GOAL_SQL_BUDGET bytes; more scans
        // are split over further queries.
        let mut out = Vec::new();
        let mut start = 0;
        while start < scans.len() {
            let mut conds: Vec<String> = Vec::new();
            let mut bit_of: HashMap<String, usize> = HashMap::new();
            let mut bits: Vec<usize> = Vec::new();
            let mut size = 0;
            let mut end = start;
            while end < scans.len() {
                let s = &scans[end];
                let cond = goal_condition(&s.goal.kind, s.goal.path_match(), &s.goal.custom_props);
                let new = !bit_of.contains_key(&cond);
                let grows = SCAN_ROW_BYTES + if new { cond.len() } else { 0 };
                if end > start && ((new && conds.len() == 64) || size + grows > GOAL_SQL_BUDGET) {
                    break;
                }
                let bit = *bit_of.entry(cond.clone()).or_insert_with(|| {
                    size += cond.len();
                    conds.push(cond);
                    conds.len() - 1
                });
                size += SCAN_ROW_BYTES;
                bits.push(bit);
                end += 1;
            }
            self.scan_chunk(&scans[start..end], start, &conds, &bits, &mut out)
                .await?;
            start = end;
        }
        Ok(merge(out))
    }

    /// One query for `part` (scans `first..`), whose goal conditions are
    /// `conds` and whose scan i tests bit `bits[i]` of the mask.
    async fn scan_chunk(
        &self,
        part: &[GoalScan<'_>],
        first: usize,
        conds: &[String],
        bits: &[usize],
        out: &mut Vec<GoalCompletion>,
    ) -> Result<()> {
        // arraySum of one array, not a chain of `+`: 18.x analyses a flat
        // list much faster than a 64-deep expression. Both joined subqueries
        // carry an alias: 24.x and later refuse them without one
        // (`joined_subquery_requires_alias`, mandatory with the analyzer).
        let mask = format!(
            "arraySum([{}])",
            conds
                .iter()
                .enumerate()
                .map(|(b, c)| format!("if({c}, toUInt64({}), toUInt64(0))", 1u64 << b))
                .collect::<Vec<_>>()
                .join(",\n")
        );
        let table = part
            .iter()
            .zip(bits)
            .enumerate()
            .map(|(i, (s, &b))| {
                format!(
                    "({}, {}, {}, {}, {})",
                    first + i + 1,
                    s.goal.site_id.max(0),
                    s.from.unix_timestamp().max(0),
                    s.to.unix_timestamp().max(0),
                    1u64 << b
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut sites: Vec<i64> = part.iter().map(|s| s.goal.site_id.max(0)).collect();
        sites.sort_unstable();
        sites.dedup();
        let mut names: Vec<&str> = part
            .iter()
            .map(|s| match &s.goal.kind {
                GoalKind::Event { event_name, .. } => event_name.as_str(),
                GoalKind::Page { .. } => "pageview",
                GoalKind::Scroll { .. } => "engagement",
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        let lo = part.iter().map(|s| s.from).min().expect("not empty");
        let hi = part.iter().map(|s| s.to).max().expect("not empty");
        let q = format!(
            "SELECT k, t, name, pathname, user_id, session_id, count()
             FROM (
                 SELECT site_id, toUnixTimestamp(`timestamp`) AS t, name, pathname, user_id, session_id,
                        ({mask}) AS w
                 FROM {}
                 WHERE site_id IN ({}) AND name IN ({}) AND {} AND w != 0) AS ev
             ALL INNER JOIN (
                 SELECT arrayJoin([{table}]) AS x,
                        toUInt32(tupleElement(x, 1)) AS k, toUInt64(tupleElement(x, 2)) AS site_id,
                        toUInt32(tupleElement(x, 3)) AS f, toUInt32(tupleElement(x, 4)) AS u,
                        toUInt64(tupleElement(x, 5)) AS m) AS scans
             USING site_id
             WHERE t > f AND t <= u AND bitAnd(w, m) != 0
             GROUP BY k, t, name, pathname, user_id, session_id
             FORMAT TabSeparated",
            self.table,
            list(&sites),
            names
                .iter()
                .map(|n| string(n.as_bytes()))
                .collect::<Vec<_>>()
                .join(", "),
            span(lo, hi)
        );
        let rows = self
            .rows(q, 7)
            .await
            .context("scanning for goal completions")?;
        for mut r in rows {
            out.push(GoalCompletion {
                scan: int(&r[0])? as usize - 1,
                timestamp_us: int(&r[1])? * 1_000_000,
                name: text(std::mem::take(&mut r[2])),
                pathname: text(std::mem::take(&mut r[3])),
                user_id: text(std::mem::take(&mut r[4])),
                session_id: text(std::mem::take(&mut r[5])),
                count: int(&r[6])?,
            });
        }
        Ok(())
    }

    /// As the PostgreSQL source's `visitor_steps` (which says how), in
    /// whole seconds, without window functions: each visitor's event times
    /// as one sorted array, the instants each adds as arrays beside it. A
    /// step is written `2k` (+1) or `2k + 1` (-1), so one `arrayJoin` of
    /// plain integers carries both.
    pub async fn visitor_steps(
        &self,
        site_id: i64,
        window_secs: i64,
        step_secs: i64,
        first: i64,
        last: i64,
    ) -> Result<Vec<(i64, i64)>> {
        let at = |k: i64| OffsetDateTime::from_unix_timestamp(k * step_secs);
        let from = at(first)? - time::Duration::seconds(window_secs);
        let to = at(last)?;
        let q = format!(
            "SELECT k, sum(d) FROM (
                 SELECT arrayJoin(arrayConcat(
                            arrayMap(x -> x * 2, arrayFilter((x, h) -> x <= h, s, hi)),
                            arrayMap(h -> (h + 1) * 2 + 1, arrayFilter((h, x) -> x <= h, hi, s)))) AS v,
                        intDiv(v, 2) AS k, if(v % 2 = 0, 1, -1) AS d
                 FROM (
                     SELECT arraySort(groupArray(toInt64(toUnixTimestamp(`timestamp`)))) AS ts,
                            arrayMap(e -> intDiv(e + {step} - 1, {step}), ts) AS lo,
                            arrayMap(e -> intDiv(e + {window}, {step}), ts) AS hi,
                            arrayMap((l, p) -> greatest(l, p + 1), lo,
                                     arrayPushFront(arrayPopBack(hi), toInt64(-1))) AS s
                     FROM {table}
                     WHERE site_id = {site} AND {span} AND name != 'engagement'
                     GROUP BY user_id))
             GROUP BY k ORDER BY k
             FORMAT TabSeparated",
            step = step_secs.max(1),
            window = window_secs.max(0),
            table = self.table,
            site = site_id.max(0),
            span = window_span(from, to),
        );
        let rows = self
            .rows(q, 2)
            .await
            .context("counting unique visitors over time")?;
        rows.iter()
            .map(|r| Ok((int(&r[0])?, int(&r[1])?)))
            .collect()
    }

    /// As the PostgreSQL source's `completions_per_bucket`: each goal's
    /// condition (`goal_condition`, as the scan writes it) once in a sum,
    /// the bucket by how many inner bounds an event is at or after.
    pub async fn completions_per_bucket(
        &self,
        goals: &[crate::triggers::goals::Goal],
        bounds: &[OffsetDateTime],
    ) -> Result<Vec<i64>> {
        let n = bounds.len() - 1;
        let matched = goals
            .iter()
            .map(|g| {
                format!(
                    "if({}, 1, 0)",
                    goal_condition(&g.kind, g.path_match(), &g.custom_props)
                )
            })
            .collect::<Vec<_>>()
            .join(",\n");
        let inner = bounds[1..n]
            .iter()
            .map(|b| b.unix_timestamp().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let mut names: Vec<&str> = goals
            .iter()
            .map(|g| match &g.kind {
                GoalKind::Event { event_name, .. } => event_name.as_str(),
                GoalKind::Page { .. } => "pageview",
                GoalKind::Scroll { .. } => "engagement",
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        let q = format!(
            "SELECT b, sum(m) FROM (
                 SELECT arrayCount(x -> x <= toInt64(toUnixTimestamp(`timestamp`)), arrayConcat(emptyArrayInt64(), [{inner}])) AS b,
                        arraySum([{matched}]) AS m
                 FROM {table}
                 WHERE site_id = {site} AND name IN ({names}) AND {span})
             WHERE m > 0
             GROUP BY b
             FORMAT TabSeparated",
            table = self.table,
            site = goals[0].site_id.max(0),
            names = names
                .iter()
                .map(|n| string(n.as_bytes()))
                .collect::<Vec<_>>()
                .join(", "),
            span = window_span(bounds[0], bounds[n]),
        );
        let rows = self
            .rows(q, 2)
            .await
            .context("counting goal completions per day")?;
        let mut out = vec![0; n];
        for r in rows {
            let b = int(&r[0])? as usize;
            if b < n {
                out[b] += int(&r[1])?;
            }
        }
        Ok(out)
    }
}

/// Completions in the PostgreSQL source's order (scan, time, then the text
/// fields bytewise). Rows that differ only in bytes that are not UTF-8 read
/// alike once decoded: they are merged and their counts added, so each such
/// event still gets its own ordinal (and its own key, and its own POST).
fn merge(mut v: Vec<GoalCompletion>) -> Vec<GoalCompletion> {
    fn key(c: &GoalCompletion) -> (usize, i64, &str, &str, &str, &str) {
        (
            c.scan,
            c.timestamp_us,
            &c.name,
            &c.pathname,
            &c.user_id,
            &c.session_id,
        )
    }
    v.sort_by(|a, b| key(a).cmp(&key(b)));
    let mut out: Vec<GoalCompletion> = Vec::with_capacity(v.len());
    for c in v {
        match out.last_mut() {
            Some(last) if key(last) == key(&c) => last.count += c.count,
            _ => out.push(c),
        }
    }
    out
}

/// One goal's condition on an event row, every value a literal.
fn goal_condition(
    kind: &GoalKind,
    path: Option<PathMatch>,
    props: &std::collections::BTreeMap<String, String>,
) -> String {
    let path = match path {
        Some(PathMatch::Exact(p)) => format!("pathname = {}", string(p.as_bytes())),
        Some(PathMatch::Regex(r)) => format!("match(pathname, {})", string(r.as_bytes())),
        None => "0".into(),
    };
    let mut c = match kind {
        GoalKind::Event { event_name } => format!("name = {}", string(event_name.as_bytes())),
        GoalKind::Page { .. } => format!("name = 'pageview' AND {path}"),
        GoalKind::Scroll { threshold, .. } => format!(
            "name = 'engagement' AND {path} AND scroll_depth >= {} AND scroll_depth <= 100",
            (*threshold).max(0)
        ),
    };
    // Plausible's own props condition: the value at the key's first
    // occurrence ('' when the key is missing: index 0 reads the default).
    for (k, v) in props {
        write!(
            c,
            " AND `meta.value`[indexOf(`meta.key`, {})] = {}",
            string(k.as_bytes()),
            string(v.as_bytes())
        )
        .expect("writing to a String");
    }
    c
}

/// A visitor window `[from, to]` over whole-second timestamps: Plausible's
/// current-visitors query counts `timestamp >= now - window`, so an event
/// exactly `window` old still counts. `>= ceil(from)` and `<= floor(to)`
/// select exactly the whole-second instants in `[from, to]`.
fn window_span(from: OffsetDateTime, to: OffsetDateTime) -> String {
    let lo = from.unix_timestamp() + i64::from(from.nanosecond() > 0);
    format!(
        "`timestamp` >= toDateTime({}) AND `timestamp` <= toDateTime({})",
        lo.max(0),
        to.unix_timestamp().max(0)
    )
}

/// `(from, to]` over whole-second timestamps.
fn span(from: OffsetDateTime, to: OffsetDateTime) -> String {
    format!(
        "`timestamp` > toDateTime({}) AND `timestamp` <= toDateTime({})",
        from.unix_timestamp().max(0),
        to.unix_timestamp().max(0)
    )
}

fn list(ids: &[i64]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Windows grouped by their bounds (a round asks about many sites over the
/// same few spans): one subquery per group, not per window.
struct Groups {
    groups: Vec<Group>,
    /// Per window asked: (group index, site).
    members: Vec<(usize, i64)>,
}

struct Group {
    index: usize,
    from: OffsetDateTime,
    to: OffsetDateTime,
    bucket: i64,
    sites: Vec<i64>,
}

impl Group {
    fn sites(&self) -> String {
        list(&self.sites)
    }
}

impl Groups {
    fn of<'a>(windows: impl Iterator<Item = (&'a Window, i64)>) -> Groups {
        let mut by_bounds: HashMap<(i64, i64, i64), usize> = HashMap::new();
        let mut groups: Vec<Group> = Vec::new();
        let mut members = Vec::new();
        let mut listed = std::collections::HashSet::new();
        for (w, bucket) in windows {
            let k = (w.from.unix_timestamp(), w.to.unix_timestamp(), bucket);
            let index = *by_bounds.entry(k).or_insert_with(|| {
                groups.push(Group {
                    index: groups.len(),
                    from: w.from,
                    to: w.to,
                    bucket,
                    sites: Vec::new(),
                });
                groups.len() - 1
            });
            let site = w.site_id.max(0);
            if listed.insert((index, site)) {
                groups[index].sites.push(site);
            }
            members.push((index, site));
        }
        Groups { groups, members }
    }

    fn union(&self, one: &impl Fn(&Group) -> String) -> String {
        let mut q = self
            .groups
            .iter()
            .map(|g| format!("SELECT * FROM ({})", one(g)))
            .collect::<Vec<_>>()
            .join("\nUNION ALL\n");
        q.push_str("\nFORMAT TabSeparated");
        q
    }
}
