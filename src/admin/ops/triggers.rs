//! A webhook's triggers: add, list, remove.

use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::admin::validate::{self, Invalid, Rule, TriggerInput};
use crate::triggers::TriggerType;

use super::*;

#[derive(Debug, Clone, Serialize)]
pub struct TriggerView {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub trigger_type: TriggerType,
    /// None for spike/drop: derived from the site's recent traffic.
    pub threshold: Option<i32>,
    /// The threshold derived when none is set (src/triggers/threshold.rs).
    pub derived_threshold: Option<i32>,
    /// Unique visitors the last evaluation counted in the window.
    pub last_value: Option<i32>,
    /// None: every goal of the site (goal triggers).
    pub goal_id: Option<i64>,
    pub goal_name: Option<String>,
    /// None: the type's default (spike 5 min, drop 12 h).
    pub window_secs: Option<i32>,
    pub cooldown_secs: i32,
    pub enabled: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_fired_at: Option<OffsetDateTime>,
    /// Why the daemon does not evaluate it now although it is enabled, as
    /// Plausible's own notifier skips such sites: "team locked", "team past
    /// accept_traffic_until (YYYY-MM-DD)", "site has no team". None: not paused.
    pub paused_reason: Option<String>,
}

const TRIGGER_COLUMNS: &str = concat!(
    "
    t.id, t.webhook_id, t.trigger_type, t.threshold, t.goal_id, g.display_name,
    t.window_secs, t.cooldown_secs, t.enabled, t.last_fired_at, t.derived_threshold, t.last_value, ",
    crate::triggers::paused_reason_sql!(),
    "
FROM webhook_triggers t LEFT JOIN goals g ON g.id = t.goal_id
JOIN webhooks pw ON pw.id = t.webhook_id
JOIN sites ps ON ps.id = pw.site_id
LEFT JOIN teams pt ON pt.id = ps.team_id"
);

fn trigger_view(r: &tokio_postgres::Row) -> TriggerView {
    TriggerView {
        id: r.get(0),
        webhook_id: r.get(1),
        trigger_type: r.get(2),
        threshold: r.get(3),
        goal_id: r.get(4),
        goal_name: r.get(5),
        window_secs: r.get(6),
        cooldown_secs: r.get(7),
        enabled: r.get(8),
        last_fired_at: r.get(9),
        derived_threshold: r.get(10),
        last_value: r.get(11),
        paused_reason: r.get(12),
    }
}

pub(super) fn trigger_input(t: &NewTrigger) -> TriggerInput {
    TriggerInput {
        threshold: t.threshold,
        window_secs: t.window_secs,
        cooldown_secs: t.cooldown_secs,
        has_goal: t.goal.is_some(),
    }
}

/// A goal of the site, by id or display name.
pub(super) async fn goal_id(
    db_: &impl tokio_postgres::GenericClient,
    site_id: i64,
    goal: &str,
) -> OpResult<i64> {
    let goal = goal.trim();
    validate::no_nul("goal", goal)?;
    let rows = db(
        match goal.parse::<i64>() {
            Ok(id) => {
                db_.query(
                    "SELECT id FROM goals WHERE site_id = $1 AND id = $2",
                    &[&site_id, &id],
                )
                .await
            }
            Err(_) => {
                db_.query(
                    "SELECT id FROM goals WHERE site_id = $1 AND display_name = $2 LIMIT 2",
                    &[&site_id, &goal],
                )
                .await
            }
        },
        "looking up the goal",
    )?;
    match rows.len() {
        1 => Ok(rows[0].get(0)),
        0 => Err(OpError::Invalid(Invalid::new(
            "goal",
            Rule::Syntax,
            format!("the webhook's site has no goal `{goal}`; name one of its goals by id or display name, or leave it out for every goal"),
        ))),
        _ => Err(OpError::Conflict(format!(
            "more than one goal of the site is called `{goal}`; name it by id"
        ))),
    }
}

pub(super) async fn insert_trigger(
    db_: &impl tokio_postgres::GenericClient,
    webhook_id: Uuid,
    site_id: i64,
    t: &NewTrigger,
) -> OpResult<TriggerView> {
    let v = validate::trigger(t.trigger_type, &trigger_input(t))?;
    let goal = match &t.goal {
        Some(g) => Some(goal_id(db_, site_id, g).await?),
        None => None,
    };
    let row = db(
        db_.query_one(
            &format!(
                "WITH t AS (
                    INSERT INTO webhook_triggers (webhook_id, trigger_type, threshold, goal_id, window_secs, cooldown_secs)
                    VALUES ($1, $2, $3, $4, $5, coalesce($6, 3600)) RETURNING *)
                 SELECT {}",
                TRIGGER_COLUMNS.replace("webhook_triggers t", "t")
            ),
            &[
                &webhook_id,
                &t.trigger_type.as_str(),
                &v.threshold,
                &goal,
                &v.window_secs,
                &v.cooldown_secs,
            ],
        )
        .await,
        "adding the trigger",
    )?;
    Ok(trigger_view(&row))
}

pub async fn add_trigger(db_: &Client, webhook: &str, t: &NewTrigger) -> OpResult<TriggerView> {
    validate::trigger(t.trigger_type, &trigger_input(t))?;
    let w = live(db_, webhook).await?;
    insert_trigger(db_, w.id, w.plausible_site_id, t).await
}

/// `{"triggers": [...]}`: `GET /api/webhooks/:id/triggers` and `triggers list --json`.
#[derive(Debug, Clone, Serialize)]
pub struct TriggerList {
    pub triggers: Vec<TriggerView>,
}

impl IntoIterator for TriggerList {
    type Item = TriggerView;
    type IntoIter = std::vec::IntoIter<TriggerView>;
    fn into_iter(self) -> Self::IntoIter {
        self.triggers.into_iter()
    }
}

pub async fn list_triggers(db_: &Client, webhook: &str) -> OpResult<TriggerList> {
    let id = webhook_id(db_, webhook).await?;
    let rows = db(
        db_.query(
            &format!("SELECT {TRIGGER_COLUMNS} WHERE t.webhook_id = $1 ORDER BY t.inserted_at"),
            &[&id],
        )
        .await,
        "listing triggers",
    )?;
    Ok(TriggerList {
        triggers: rows.iter().map(trigger_view).collect(),
    })
}

/// Removes a trigger by its id (or a unique prefix of it).
pub async fn remove_trigger(db_: &Client, trigger: &str) -> OpResult<TriggerView> {
    let t = trigger.trim().to_ascii_lowercase();
    if t.len() < 4 || !t.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(OpError::Invalid(Invalid::new(
            "trigger",
            Rule::Syntax,
            format!("`{t}` is not a trigger id (or a prefix of one, at least 4 characters)"),
        )));
    }
    let rows = db(
        db_.query(
            &format!("SELECT {TRIGGER_COLUMNS} WHERE t.id::text LIKE $1 || '%' LIMIT 2"),
            &[&t],
        )
        .await,
        "looking up the trigger",
    )?;
    let view = match rows.len() {
        0 => {
            return Err(OpError::NotFound(format!(
                "no trigger id starts with {t}; `triggers list WEBHOOK` shows them"
            )))
        }
        1 => trigger_view(&rows[0]),
        _ => {
            return Err(OpError::Conflict(format!(
                "more than one trigger id starts with {t}; give more characters"
            )))
        }
    };
    db(
        db_.execute("DELETE FROM webhook_triggers WHERE id = $1", &[&view.id])
            .await,
        "removing the trigger",
    )?;
    Ok(view)
}
