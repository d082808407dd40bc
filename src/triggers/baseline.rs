//! Baselines: what a site usually has at this time of day, in its
//! timezone. Spikes and drops (`evaluator`) and tracking triggers
//! (`tracking`) read them alike.

use anyhow::{Context, Result};
use time::OffsetDateTime;

use super::source::Window;
use super::ThresholdKind;

/// The baseline: the same window at the same time of day on each of the
/// previous `BASELINE_DAYS` days of the site's timezone (so across a DST
/// change it is 23 or 25 hours back, as the site owner's dashboard counts
/// days), averaged.
pub const BASELINE_DAYS: i64 = 7;

/// Each window on each of the previous `BASELINE_DAYS` days of its
/// timezone (`tz`, one per window), `BASELINE_DAYS` per window in order:
/// the baselines of spikes, drops and tracking triggers.
pub(crate) async fn day_shifted(
    db: &deadpool_postgres::Transaction<'_>,
    windows: &[Window],
    tz: &[&str],
) -> Result<Vec<Window>> {
    const SQL: &str = "
WITH q AS (
SELECT * FROM unnest($1::timestamptz[], $2::timestamptz[], $3::text[]) WITH ORDINALITY AS q(f, t, tz, i)
), z AS (
SELECT DISTINCT q.tz, coalesce((SELECT n.name FROM pg_timezone_names n WHERE n.name = q.tz), 'UTC') AS zone
FROM q
)
SELECT ((q.f AT TIME ZONE z.zone) - make_interval(days => k)) AT TIME ZONE z.zone,
   ((q.t AT TIME ZONE z.zone) - make_interval(days => k)) AT TIME ZONE z.zone
FROM q JOIN z ON z.tz = q.tz CROSS JOIN generate_series(1, $4::int4) AS k
ORDER BY q.i, k";
    let from: Vec<OffsetDateTime> = windows.iter().map(|w| w.from).collect();
    let to: Vec<OffsetDateTime> = windows.iter().map(|w| w.to).collect();
    let rows = db
        .query(SQL, &[&from, &to, &tz, &(BASELINE_DAYS as i32)])
        .await
        .context("computing baseline days in the sites' timezones")?;
    Ok(rows
        .iter()
        .enumerate()
        .map(|(n, r)| Window {
            site_id: windows[n / BASELINE_DAYS as usize].site_id,
            from: r.get(0),
            to: r.get(1),
        })
        .collect())
}

/// The zone PostgreSQL reads `tz` as: `tz` when it knows it, else UTC (as
/// `day_shifted` does), in an SQL expression over parameter `$n`.
macro_rules! zone_sql {
    ($n:literal) => {
        concat!(
            "coalesce((SELECT n.name FROM pg_timezone_names n WHERE n.name = $",
            $n,
            "), 'UTC')"
        )
    };
}

/// The days of timezone `tz` that `[from, to]` touches: each day's date
/// (`YYYY-MM-DD`) and where its part of `[from, to]` starts, then `to`: the
/// bounds of a per-day count in the site owner's days.
pub async fn day_bounds(
    db: &impl tokio_postgres::GenericClient,
    from: OffsetDateTime,
    to: OffsetDateTime,
    tz: &str,
) -> Result<(Vec<String>, Vec<OffsetDateTime>)> {
    let sql = concat!(
        "WITH z AS (SELECT ",
        zone_sql!("3"),
        " AS zone)
SELECT to_char(d, 'YYYY-MM-DD'), greatest($1::timestamptz, d AT TIME ZONE z.zone)
FROM z, generate_series(date_trunc('day', $1::timestamptz AT TIME ZONE z.zone),
                        $2::timestamptz AT TIME ZONE z.zone, interval '1 day') AS d
ORDER BY d"
    );
    let rows = db
        .query(sql, &[&from, &to, &tz])
        .await
        .context("computing the site's days in its timezone")?;
    let days = rows.iter().map(|r| r.get(0)).collect();
    let mut bounds: Vec<OffsetDateTime> = rows.iter().map(|r| r.get(1)).collect();
    bounds.push(to);
    Ok((days, bounds))
}

/// Each instant as the site's clock reads it in timezone `tz`
/// (`YYYY-MM-DD HH:MM:SS ±hh:mm` by its offset then).
pub async fn local_times(
    db: &impl tokio_postgres::GenericClient,
    at: &[OffsetDateTime],
    tz: &str,
) -> Result<Vec<String>> {
    let sql = concat!(
        "WITH z AS (SELECT ",
        zone_sql!("2"),
        " AS zone)
SELECT to_char(t AT TIME ZONE z.zone, 'YYYY-MM-DD HH24:MI:SS'),
       extract(epoch FROM (t AT TIME ZONE z.zone) - (t AT TIME ZONE 'UTC'))::int4
FROM z, unnest($1::timestamptz[]) WITH ORDINALITY AS u(t, i)
ORDER BY u.i"
    );
    let rows = db
        .query(sql, &[&at, &tz])
        .await
        .context("reading instants in the site's timezone")?;
    Ok(rows
        .iter()
        .map(|r| {
            let (local, offset): (String, i32) = (r.get(0), r.get(1));
            let sign = if offset < 0 { '-' } else { '+' };
            let m = offset.abs() / 60;
            format!("{local} {sign}{:02}:{:02}", m / 60, m % 60)
        })
        .collect())
}

/// `<base>/<domain>` (the realtime view for a spike), or None without a base URL.
pub fn dashboard_url(base: &str, domain: &str, kind: ThresholdKind) -> Option<String> {
    let base = base.trim();
    if base.is_empty() {
        return None;
    }
    let mut u = url::Url::parse(base).ok()?;
    u.path_segments_mut().ok()?.pop_if_empty().push(domain);
    if kind == ThresholdKind::Spike {
        u.set_query(Some("period=realtime"));
    }
    Some(u.to_string())
}
