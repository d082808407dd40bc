//! Trigger preview: how often a trigger would have fired on a site over its
//! recent history (`crate::triggers::preview` replays it). Whoever may add
//! the trigger on the site may preview it (`Access::Manage`, as
//! `create_webhook` and `add_trigger` ask).

use serde::Serialize;
use time::{Duration, OffsetDateTime};
use utoipa::ToSchema;

use super::triggers::{check_trigger, goal_id};
use crate::admin::access::{self, Access, Principal};
use crate::admin::core::Admin;
use crate::admin::error::{db, OpError, OpResult};
use crate::admin::inputs::{PreviewInput, SiteRef};
use crate::admin::validate::{Invalid, Rule};
use crate::triggers::baseline::{day_bounds, local_times};
use crate::triggers::goals::{self, Goal};
use crate::triggers::preview::{self as replay, SpikeDrop, MAX_LISTED, MAX_SINCE};
use crate::triggers::{source::is_unavailable, TriggerType};

/// The default history: 30 days.
pub const PREVIEW_SINCE_DEFAULT_SECS: i64 = 30 * 86_400;

/// An instant a spike or drop would have fired at.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PreviewFiring {
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String)]
    pub at: OffsetDateTime,
    /// The same instant on the site's clock (its timezone), with its offset.
    pub local: String,
    /// Unique visitors in the window then.
    pub visitors: i64,
}

/// One day of the site's timezone and what a goal or custom-event
/// trigger would have sent that day.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PreviewDay {
    /// `YYYY-MM-DD` in the site's timezone; the first day counts from
    /// `since`, the last up to `until`.
    pub date: String,
    pub completions: i64,
}

/// What a trigger would have done over `[since, until]`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TriggerPreview {
    /// The site's domain.
    pub site_id: String,
    /// visitor_spike | traffic_drop | goal_completion | custom_event
    #[schema(value_type = String)]
    pub trigger_type: TriggerType,
    /// The site's timezone (days and local times are its).
    pub timezone: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String)]
    pub since: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String)]
    pub until: OffsetDateTime,
    /// Spike/drop: the evaluator's cadence (`triggers.evaluation_interval_secs`);
    /// it was replayed at each multiple of it in the range.
    pub interval_secs: Option<i64>,
    /// Spike/drop: how many evaluations were replayed.
    pub evaluations: Option<i64>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>)]
    pub first_evaluation: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>)]
    pub last_evaluation: Option<OffsetDateTime>,
    pub window_secs: Option<i64>,
    pub cooldown_secs: Option<i64>,
    /// Spike/drop: the threshold replayed (None: none given and none
    /// derivable, nothing replayed).
    pub threshold: Option<i64>,
    /// `configured` or `derived`.
    pub threshold_source: Option<String>,
    /// Spike/drop: the threshold the trigger derives today without one of
    /// its own (docs/triggers.md "Derived thresholds").
    pub derived_threshold: Option<i64>,
    /// Spike/drop: firings; goal/event: completions (each a delivery).
    pub total: i64,
    /// Spike/drop: the first firings, at most 100.
    pub firings: Vec<PreviewFiring>,
    /// Firings not listed (over the 100 listed).
    pub omitted: i64,
    /// Goal/event: completions per day.
    pub days: Vec<PreviewDay>,
    /// Statements sent to the analytics source.
    pub queries: i64,
}

impl Admin {
    /// How trigger `p.trigger` would have fired on `site` since `p.since`.
    pub async fn preview_trigger(
        &self,
        who: &Principal,
        site: &SiteRef,
        p: PreviewInput,
    ) -> OpResult<TriggerPreview> {
        let v = check_trigger(&p.trigger)?;
        let since_secs = match &p.since {
            None => PREVIEW_SINCE_DEFAULT_SECS,
            Some(s) => s.seconds("since")?,
        };
        if since_secs < 60 || since_secs > MAX_SINCE.whole_seconds() {
            return Err(Invalid::new(
                "since",
                Rule::OutOfRange,
                format!(
                    "must be between 1m and 90d (got {since_secs} s): a preview replays at most 90 days of history; give a shorter one, e.g. 30d"
                ),
            )
            .into());
        }
        if v.trigger_type == TriggerType::TrackingStopped {
            return Err(Invalid::new(
                "type",
                Rule::NotApplicable,
                "a tracking trigger has no preview: preview spike, drop, goal or event triggers",
            )
            .into());
        }
        let db_ = self.db().await?;
        let site = access::site(&db_, who, site, Access::Manage).await?;
        let row = db(
            db_.query_one(
                "SELECT coalesce(timezone::text, 'UTC'), now() FROM sites WHERE id = $1",
                &[&site.id],
            )
            .await,
            "reading the site's timezone",
        )?;
        let (tz, now): (String, OffsetDateTime) = (row.get(0), row.get(1));
        let since = now - Duration::seconds(since_secs);
        let source = self.analytics()?;
        let mut out = TriggerPreview {
            site_id: site.domain.clone(),
            trigger_type: v.trigger_type,
            timezone: tz.clone(),
            since,
            until: now,
            interval_secs: None,
            evaluations: None,
            first_evaluation: None,
            last_evaluation: None,
            window_secs: None,
            cooldown_secs: None,
            threshold: None,
            threshold_source: None,
            derived_threshold: None,
            total: 0,
            firings: Vec::new(),
            omitted: 0,
            days: Vec::new(),
            queries: 0,
        };
        if let Some(kind) = v.trigger_type.threshold_kind() {
            let window = v
                .values
                .window_secs
                .map_or(kind.default_window_secs(), i64::from);
            // As `insert_trigger` stores it: 1 h unless given.
            let cooldown = v.values.cooldown_secs.map_or(3600, i64::from);
            let t = SpikeDrop {
                site_id: site.id,
                kind,
                threshold: v.values.threshold.map(i64::from),
                window: Duration::seconds(window),
                cooldown: Duration::seconds(cooldown),
            };
            let r = replay::spike_drop(source, t, since, now, self.evaluation_interval())
                .await
                .map_err(analytics_error)?;
            let listed: Vec<_> = r.fired.iter().take(MAX_LISTED).collect();
            let at: Vec<OffsetDateTime> = listed.iter().map(|f| f.at).collect();
            let local = local_times(&**db_, &at, &tz)
                .await
                .map_err(OpError::Internal)?;
            out.interval_secs = Some(r.grid.step_secs);
            out.evaluations = Some(r.grid.len() as i64);
            out.first_evaluation = (!r.grid.is_empty()).then(|| r.grid.instant(r.grid.first));
            out.last_evaluation = (!r.grid.is_empty()).then(|| r.grid.instant(r.grid.last));
            out.window_secs = Some(window);
            out.cooldown_secs = Some(cooldown);
            out.threshold = r.threshold;
            out.threshold_source = r.threshold.map(|_| {
                if t.threshold.is_some() {
                    "configured".into()
                } else {
                    "derived".into()
                }
            });
            out.derived_threshold = r.derived;
            out.total = r.fired.len() as i64;
            out.omitted = (r.fired.len() - listed.len()) as i64;
            out.firings = listed
                .iter()
                .zip(local)
                .map(|(f, local)| PreviewFiring {
                    at: f.at,
                    local,
                    visitors: f.visitors,
                })
                .collect();
            out.queries = r.queries as i64;
            return Ok(out);
        }
        let goals: Vec<Goal> = if v.trigger_type == TriggerType::CustomEvent {
            vec![goals::custom_event_goal(
                site.id,
                v.values.event_name.clone().unwrap_or_default(),
                &serde_json::json!(v.values.props),
            )]
        } else {
            let only = match p
                .trigger
                .goal
                .as_ref()
                .map(|g| g.0.trim())
                .filter(|g| !g.is_empty())
            {
                Some(g) => Some(goal_id(&**db_, site.id, g).await?),
                None => None,
            };
            goals::load_for_sites(&**db_, &[site.id])
                .await
                .map_err(OpError::Internal)?
                .into_iter()
                .filter(|g| only.is_none_or(|id| g.id == id))
                .collect()
        };
        let (dates, bounds) = day_bounds(&**db_, since, now, &tz)
            .await
            .map_err(OpError::Internal)?;
        let counts = replay::completions_per_bucket(source, &goals, &bounds)
            .await
            .map_err(analytics_error)?;
        out.total = counts.iter().sum();
        out.days = dates
            .into_iter()
            .zip(counts)
            .map(|(date, completions)| PreviewDay { date, completions })
            .collect();
        out.queries = i64::from(!goals.is_empty());
        Ok(out)
    }
}

/// The analytics source could not answer: unreachable is `Unavailable`
/// (try again), anything else the operator's to read.
fn analytics_error(e: anyhow::Error) -> OpError {
    if is_unavailable(&e) {
        OpError::Unavailable(format!("{e:#}"))
    } else {
        OpError::Internal(e.context("previewing the trigger"))
    }
}
