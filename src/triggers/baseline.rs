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
