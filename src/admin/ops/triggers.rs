//! A webhook's triggers: add, list, remove; and a trigger named by an id
//! prefix, as the CLI takes it.

use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::admin::access::{self, Access, Owned, Principal};
use crate::admin::core::Admin;
use crate::admin::error::{db, OpError, OpResult};
use crate::admin::inputs::NewTrigger;
use crate::admin::validate::{self, Invalid, Rule, TriggerInput, TriggerValues};
use crate::triggers::{DeliveryMode, TriggerType};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TriggerView {
    pub id: Uuid,
    pub webhook_id: Uuid,
    /// visitor_spike | traffic_drop | goal_completion | custom_event
    #[schema(value_type = String)]
    pub trigger_type: TriggerType,
    /// goal/custom_event: `each` occurrence, or a `digest` per window.
    #[schema(value_type = String)]
    pub mode: DeliveryMode,
    /// The event type it sends (`goal_completion_digest` for a goal digest).
    pub event_type: String,
    /// custom_event: the event's name.
    pub event_name: Option<String>,
    /// custom_event: the props the event must carry.
    #[schema(value_type = Object)]
    pub props: serde_json::Value,
    /// None for spike/drop: derived from the site's recent traffic.
    pub threshold: Option<i32>,
    /// The threshold derived when none is set (src/triggers/threshold.rs).
    pub derived_threshold: Option<i32>,
    /// Unique visitors the last evaluation counted in the window.
    pub last_value: Option<i32>,
    /// None: every goal of the site (goal triggers).
    pub goal_id: Option<i64>,
    pub goal_name: Option<String>,
    /// None: the type's default (spike 5 min, drop 12 h, a digest 1 h).
    pub window_secs: Option<i32>,
    /// Spike/drop: how long after firing it stays quiet. None (null) for
    /// goal triggers, which fire per completion: cooldown does not apply.
    pub cooldown_secs: Option<i32>,
    pub enabled: bool,
    /// Spike/drop: true while it may fire (the count went back across the
    /// threshold since it last fired), false while it has fired and waits.
    pub armed: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_fired_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_evaluated_at: Option<OffsetDateTime>,
    /// When an instance evaluates it next (as PostgreSQL holds it: a
    /// writer may have put `infinity` there).
    #[schema(value_type = String)]
    pub next_evaluation_at: crate::db::Timestamp,
    /// Why the daemon does not evaluate it now although it is enabled, as
    /// Plausible's own notifier skips such sites: "team locked", "team past
    /// accept_traffic_until (YYYY-MM-DD)", "site has no team". None: not paused.
    pub paused_reason: Option<String>,
}

impl TriggerView {
    /// `event “Signup” with plan=pro`: a custom-event trigger's event and
    /// the props it must carry, as the CLI and the page show it.
    pub fn custom_event_label(&self) -> Option<String> {
        let name = self.event_name.as_deref()?;
        let props: Vec<String> = self
            .props
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        Some(if props.is_empty() {
            format!("event “{name}”")
        } else {
            format!("event “{name}” with {}", props.join(", "))
        })
    }
}

/// `{"triggers": [...]}`: `GET /api/webhooks/:id/triggers` and `triggers list --json`.
#[derive(Debug, Clone, Serialize, ToSchema)]
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

/// A trigger, by its webhook and its own id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TriggerRef {
    pub webhook: Uuid,
    pub id: Uuid,
}

const TRIGGER_COLUMNS: &str = concat!(
    "
    t.id, t.webhook_id, t.trigger_type, t.threshold, t.goal_id, g.display_name,
    t.window_secs, t.cooldown_secs, t.enabled, t.last_fired_at, t.derived_threshold, t.last_value, ",
    crate::triggers::paused_reason_sql!(),
    ", t.armed, t.last_evaluated_at, t.next_evaluation_at, t.delivery_mode, t.event_name, t.event_props
FROM webhook_triggers t LEFT JOIN goals g ON g.id = t.goal_id
JOIN webhooks pw ON pw.id = t.webhook_id
JOIN sites ps ON ps.id = pw.site_id
LEFT JOIN teams pt ON pt.id = ps.team_id"
);

fn trigger_view(r: &tokio_postgres::Row) -> TriggerView {
    let trigger_type: TriggerType = r.get(2);
    let mode: DeliveryMode = r.get(16);
    TriggerView {
        id: r.get(0),
        webhook_id: r.get(1),
        trigger_type,
        mode,
        event_type: trigger_type.event_type_in(mode).to_string(),
        event_name: r.get(17),
        props: r.get(18),
        threshold: r.get(3),
        goal_id: r.get(4),
        goal_name: r.get(5),
        window_secs: r.get(6),
        // The column has a default on every row; shown only where it acts.
        cooldown_secs: trigger_type.threshold_kind().is_some().then(|| r.get(7)),
        enabled: r.get(8),
        last_fired_at: r.get(9),
        derived_threshold: r.get(10),
        last_value: r.get(11),
        paused_reason: r.get(12),
        armed: r.get(13),
        last_evaluated_at: r.get(14),
        next_evaluation_at: r.get(15),
    }
}

/// A trigger as given, checked: its type and settings, which apply to it.
pub(crate) struct ValidTrigger {
    pub trigger_type: TriggerType,
    pub values: TriggerValues,
}

/// `t` checked (the goal is looked up when it is inserted).
pub(crate) fn check_trigger(t: &NewTrigger) -> Result<ValidTrigger, Invalid> {
    let trigger_type = match t.trigger_type.as_deref() {
        Some(ty) => validate::trigger_type(ty.trim())?,
        None => return Err(Invalid::new("type", Rule::Required, "is required")),
    };
    let input = TriggerInput {
        threshold: t.threshold,
        window_secs: t
            .window_secs
            .as_ref()
            .map(|w| w.seconds("window_secs"))
            .transpose()?,
        cooldown_secs: t
            .cooldown_secs
            .as_ref()
            .map(|c| c.seconds("cooldown_secs"))
            .transpose()?,
        has_goal: t.goal.as_ref().is_some_and(|g| !g.0.trim().is_empty()),
        event_name: t.event_name.clone(),
        props: t
            .props
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect(),
        mode: t.mode.clone(),
    };
    Ok(ValidTrigger {
        trigger_type,
        values: validate::trigger(trigger_type, &input)?,
    })
}

/// A goal of the site, by id or display name.
pub(crate) async fn goal_id(db_: &impl GenericClient, site_id: i64, goal: &str) -> OpResult<i64> {
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
        0 => Err(Invalid::new(
            "goal",
            Rule::Syntax,
            format!("the webhook's site has no goal `{}`; name one of its goals by id or display name, or leave it out for every goal", access::quote(goal)),
        ).into()),
        _ => Err(OpError::Conflict(format!(
            "more than one goal of the site is called `{}`; name it by id",
            access::quote(goal)
        ))),
    }
}

/// Inserts trigger `t` of webhook `webhook_id` (of site `site_id`).
pub(crate) async fn insert_trigger(
    db_: &impl GenericClient,
    webhook_id: Uuid,
    site_id: i64,
    t: &NewTrigger,
) -> OpResult<TriggerView> {
    let v = check_trigger(t)?;
    let goal = match t
        .goal
        .as_ref()
        .map(|g| g.0.trim())
        .filter(|g| !g.is_empty())
    {
        Some(g) => Some(goal_id(db_, site_id, g).await?),
        None => None,
    };
    let row = db(
        db_.query_one(
            &format!(
                "WITH t AS (
                    INSERT INTO webhook_triggers (webhook_id, trigger_type, threshold, goal_id, window_secs,
                                                  cooldown_secs, event_name, event_props, delivery_mode)
                    VALUES ($1, $2, $3, $4, $5, coalesce($6, 3600), $7, $8, $9) RETURNING *)
                 SELECT {}",
                TRIGGER_COLUMNS.replace("webhook_triggers t", "t")
            ),
            &[
                &webhook_id,
                &v.trigger_type.as_str(),
                &v.values.threshold,
                &goal,
                &v.values.window_secs,
                &v.values.cooldown_secs,
                &v.values.event_name,
                &serde_json::json!(v.values.props),
                &v.values.mode.as_str(),
            ],
        )
        .await,
        "adding the trigger",
    )?;
    Ok(trigger_view(&row))
}

/// Webhook `webhook_id`'s triggers, the oldest first.
pub(crate) async fn list_of(
    db_: &impl GenericClient,
    webhook_id: Uuid,
) -> OpResult<Vec<TriggerView>> {
    let rows = db(
        db_.query(
            &format!("SELECT {TRIGGER_COLUMNS} WHERE t.webhook_id = $1 ORDER BY t.inserted_at"),
            &[&webhook_id],
        )
        .await,
        "listing triggers",
    )?;
    Ok(rows.iter().map(trigger_view).collect())
}

impl Admin {
    pub async fn list_triggers(&self, who: &Principal, webhook: Uuid) -> OpResult<TriggerList> {
        let db_ = self.db().await?;
        access::webhook(&db_, who, webhook, Access::Read).await?;
        Ok(TriggerList {
            triggers: list_of(&**db_, webhook).await?,
        })
    }

    /// A new trigger on a webhook that is not deleted.
    pub async fn add_trigger(
        &self,
        who: &Principal,
        webhook: Uuid,
        t: NewTrigger,
    ) -> OpResult<TriggerView> {
        check_trigger(&t)?;
        let db_ = self.db().await?;
        let (site, _) = super::webhook_view::manageable(&db_, who, webhook).await?;
        insert_trigger(&**db_, webhook, site.id, &t).await
    }

    pub async fn remove_trigger(&self, who: &Principal, t: TriggerRef) -> OpResult<TriggerView> {
        let db_ = self.db().await?;
        access::owned(&db_, who, t.webhook, Owned::Trigger(t.id), Access::Manage).await?;
        let row = db(
            db_.query_opt(
                &format!("SELECT {TRIGGER_COLUMNS} WHERE t.id = $1"),
                &[&t.id],
            )
            .await,
            "reading the trigger",
        )?;
        let Some(row) = row else {
            return Err(OpError::NotFound(format!(
                "webhook {} has no trigger {}",
                t.webhook, t.id
            )));
        };
        db(
            db_.execute("DELETE FROM webhook_triggers WHERE id = $1", &[&t.id])
                .await,
            "removing the trigger",
        )?;
        Ok(trigger_view(&row))
    }

    /// The trigger named by `given`: its id or a unique prefix of it (at
    /// least 4 characters), among the webhooks `who` may read.
    pub async fn resolve_trigger(&self, who: &Principal, given: &str) -> OpResult<TriggerRef> {
        let t = given.trim().to_ascii_lowercase();
        if t.len() < 4 || !t.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(Invalid::new(
                "trigger",
                Rule::Syntax,
                format!(
                    "`{}` is not a trigger id (or a prefix of one, at least 4 characters)",
                    access::quote(&t)
                ),
            )
            .into());
        }
        let db_ = self.db().await?;
        let sites = access::readable_sites(&db_, who).await?;
        let rows = db(
            db_.query(
                "SELECT t.id, t.webhook_id FROM webhook_triggers t JOIN webhooks w ON w.id = t.webhook_id
                 WHERE t.id::text LIKE $1 || '%' AND ($2::bigint[] IS NULL OR w.site_id = ANY($2))
                 LIMIT 2",
                &[&t, &sites],
            )
            .await,
            "looking up the trigger",
        )?;
        match rows.len() {
            0 => Err(OpError::NotFound(format!(
                "no trigger id starts with {t}; `triggers list WEBHOOK` shows them"
            ))),
            1 => Ok(TriggerRef {
                id: rows[0].get(0),
                webhook: rows[0].get(1),
            }),
            _ => Err(OpError::Conflict(format!(
                "more than one trigger id starts with {t}; give more characters"
            ))),
        }
    }
}
