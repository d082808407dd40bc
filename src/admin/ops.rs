//! The operator's operations over the database: webhooks (create, list, show,
//! update, enable, disable, delete, restore, rotate-secret), their triggers,
//! the delivery log (list, show), retry, replay, and the test event. Shared by
//! the CLI and the HTTP API: each takes a database client, validates its input
//! with [`super::validate`], and returns a serde-serializable value or an
//! [`OpError`] (invalid input, not found, conflict with the current state, or a
//! database failure). Nothing here prints.
//!
//! A site is named by its domain or its numeric id; a webhook by its id or a
//! unique prefix of it (at least 4 characters); a delivery by its full id.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use deadpool_postgres::Pool;
use serde::Serialize;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::db::Timestamp;
use tokio_postgres::Client;
use uuid::Uuid;

use super::validate::{self, Invalid, Rule, TriggerInput, TriggerType};
use crate::config::Config;
use crate::db::NOTIFY_CHANNEL;
use crate::delivery::client::{ClientConfig, HttpClient};
use crate::delivery::guard::{AddressGuard, Resolve};
use crate::delivery::retry::RetryPolicy;
use crate::delivery::signing::generate_secret;
use crate::delivery::worker::Worker;
use crate::queue::completer::{self, Completer, CompleterConfig};
use crate::queue::Claimed;

/// The longest grace period a rotated-out secret may keep signing.
pub const MAX_ROTATION_GRACE_SECS: i64 = 30 * 86_400;
pub const DEFAULT_ROTATION_GRACE_SECS: i64 = 86_400;
/// Rows made due again per statement by `replay` (bounded locks).
pub const REPLAY_BATCH: i64 = 5_000;
pub const DELIVERIES_LIMIT_MAX: i64 = 10_000;

/// Why an operation did not happen.
#[derive(Debug)]
pub enum OpError {
    /// The input breaks a rule (HTTP 422).
    Invalid(Invalid),
    /// What was named does not exist (HTTP 404).
    NotFound(String),
    /// The current state forbids it, e.g. retrying a success without `force` (HTTP 409).
    Conflict(String),
    /// The database (or the network) failed (HTTP 500).
    Internal(anyhow::Error),
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::Invalid(i) => write!(f, "invalid {i}"),
            OpError::NotFound(m) | OpError::Conflict(m) => f.write_str(m),
            OpError::Internal(e) => write!(f, "{e:#}"),
        }
    }
}
impl std::error::Error for OpError {}

impl From<Invalid> for OpError {
    fn from(i: Invalid) -> Self {
        OpError::Invalid(i)
    }
}
impl From<anyhow::Error> for OpError {
    fn from(e: anyhow::Error) -> Self {
        OpError::Internal(e)
    }
}
impl From<tokio_postgres::Error> for OpError {
    fn from(e: tokio_postgres::Error) -> Self {
        OpError::Internal(anyhow::Error::new(e))
    }
}

pub type OpResult<T> = Result<T, OpError>;

/// A database error as an [`OpError`]: a payload the database refuses for
/// its size is the caller's input (422, exit 1), anything else internal.
fn db<T>(r: Result<T, tokio_postgres::Error>, what: &str) -> OpResult<T> {
    r.map_err(|e| match validate::payload_refusal(&e) {
        Some(i) => OpError::Invalid(i),
        None => OpError::Internal(anyhow::Error::new(e).context(what.to_string())),
    })
}

// ---------------------------------------------------------------- sites

#[derive(Debug, Clone, Serialize)]
pub struct Site {
    pub id: i64,
    pub domain: String,
}

/// A site by its domain (as Plausible names it; also its former domain for
/// a while after a domain change, `domain_changed_from`, as Plausible's API
/// finds it) or its numeric id.
pub async fn site(db_: &Client, site: &str) -> OpResult<Site> {
    let site = site.trim();
    validate::no_nul("site", site)?;
    let row = match site.parse::<i64>() {
        Ok(id) => {
            db_.query_opt("SELECT id, domain FROM sites WHERE id = $1", &[&id])
                .await
        }
        Err(_) => {
            db_.query_opt(
                "SELECT id, domain FROM sites WHERE domain = $1 OR domain_changed_from = $1
                 ORDER BY domain = $1 DESC LIMIT 1",
                &[&site],
            )
            .await
        }
    };
    match db(row, "looking up the site")? {
        Some(r) => Ok(Site {
            id: r.get(0),
            domain: r.get(1),
        }),
        None => Err(OpError::NotFound(format!(
            "no site `{site}`; name a site by its domain as in Plausible (example.com) or by its numeric id"
        ))),
    }
}

// ---------------------------------------------------------------- webhooks

/// A webhook as operators see it. The secret is never part of it.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookView {
    pub id: Uuid,
    pub site_id: i64,
    pub site: String,
    pub name: String,
    pub url: String,
    /// active | failing | disabled | deleted
    pub status: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub disabled_at: Option<OffsetDateTime>,
    pub consecutive_failures: i32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub failing_since: Option<OffsetDateTime>,
    /// Names only: values often carry credentials.
    pub header_names: Vec<String>,
    /// None: the daemon's configured schedule.
    pub retry_schedule_secs: Option<Vec<i32>>,
    pub rate_limit_per_sec: Option<i32>,
    pub max_concurrency: Option<i32>,
    /// Set while a rotated-out secret still signs beside the current one.
    #[serde(with = "time::serde::rfc3339::option")]
    pub previous_secret_expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub deleted_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub inserted_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub triggers: i64,
}

impl WebhookView {
    /// `disabled (reason)` as the CLI prints it.
    pub fn status_text(&self) -> String {
        match (&*self.status, &self.disabled_reason) {
            ("disabled", Some(r)) => format!("disabled ({r})"),
            ("failing", _) => format!("failing ({} failed in a row)", self.consecutive_failures),
            (s, _) => s.to_string(),
        }
    }
}

const WEBHOOK_COLUMNS: &str = "
    w.id, w.site_id, s.domain, w.name, w.url, w.enabled, w.disabled_reason, w.disabled_at,
    w.consecutive_failures, w.failing_since, w.headers, w.retry_schedule_secs,
    w.rate_limit_per_sec, w.max_concurrency,
    CASE WHEN w.previous_secret_expires_at > now() THEN w.previous_secret_expires_at END,
    w.deleted_at, w.inserted_at, w.updated_at,
    (SELECT count(*) FROM webhook_triggers t WHERE t.webhook_id = w.id)
FROM webhooks w JOIN sites s ON s.id = w.site_id";

fn webhook_view(r: &tokio_postgres::Row) -> WebhookView {
    let enabled: bool = r.get(5);
    let failures: i32 = r.get(8);
    let deleted_at: Option<OffsetDateTime> = r.get(15);
    let headers: Value = r.get(10);
    let status = if deleted_at.is_some() {
        "deleted"
    } else if !enabled {
        "disabled"
    } else if failures > 0 {
        "failing"
    } else {
        "active"
    };
    WebhookView {
        id: r.get(0),
        site_id: r.get(1),
        site: r.get(2),
        name: r.get(3),
        url: r.get(4),
        status: status.into(),
        enabled,
        disabled_reason: r.get(6),
        disabled_at: r.get(7),
        consecutive_failures: failures,
        failing_since: r.get(9),
        header_names: headers
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default(),
        retry_schedule_secs: r.get(11),
        rate_limit_per_sec: r.get(12),
        max_concurrency: r.get(13),
        previous_secret_expires_at: r.get(14),
        deleted_at,
        inserted_at: r.get(16),
        updated_at: r.get(17),
        triggers: r.get(18),
    }
}

/// The id of the webhook named by `id` (a full id or a unique prefix).
pub async fn webhook_id(db_: &Client, id: &str) -> OpResult<Uuid> {
    let id = id.trim().to_ascii_lowercase();
    if let Ok(u) = Uuid::parse_str(&id) {
        let found = db(
            db_.query_opt("SELECT id FROM webhooks WHERE id = $1", &[&u])
                .await,
            "looking up the webhook",
        )?;
        return found
            .map(|r| r.get(0))
            .ok_or_else(|| OpError::NotFound(format!("no webhook {u}; `list` shows them")));
    }
    if id.len() < 4 || !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(OpError::Invalid(Invalid::new(
            "webhook",
            Rule::Syntax,
            format!("`{id}` is not a webhook id (or a prefix of one, at least 4 characters)"),
        )));
    }
    let rows = db(
        db_.query(
            "SELECT id FROM webhooks WHERE id::text LIKE $1 || '%' LIMIT 2",
            &[&id],
        )
        .await,
        "looking up the webhook",
    )?;
    match rows.len() {
        0 => Err(OpError::NotFound(format!(
            "no webhook id starts with {id}; `list` shows them"
        ))),
        1 => Ok(rows[0].get(0)),
        _ => Err(OpError::Conflict(format!(
            "more than one webhook id starts with {id}; give more characters"
        ))),
    }
}

/// One webhook, deleted or not.
pub async fn show(db_: &Client, id: &str) -> OpResult<WebhookView> {
    let id = webhook_id(db_, id).await?;
    let row = db(
        db_.query_one(&format!("SELECT {WEBHOOK_COLUMNS} WHERE w.id = $1"), &[&id])
            .await,
        "reading the webhook",
    )?;
    Ok(webhook_view(&row))
}

/// A webhook that may be changed: it exists and is not deleted.
async fn live(db_: &Client, id: &str) -> OpResult<WebhookView> {
    let w = show(db_, id).await?;
    if w.deleted_at.is_some() {
        return Err(OpError::Conflict(format!(
            "webhook {} is deleted; `restore {}` brings it back",
            w.id, w.id
        )));
    }
    Ok(w)
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub site: Option<String>,
    pub include_deleted: bool,
    /// Only these sites (a Plausible key's readable sites); None: all.
    pub site_ids: Option<Vec<i64>>,
}

pub async fn list(db_: &Client, f: &ListFilter) -> OpResult<Vec<WebhookView>> {
    let site_id = match &f.site {
        Some(s) => Some(site(db_, s).await?.id),
        None => None,
    };
    let rows = db(
        db_.query(
            &format!(
                "SELECT {WEBHOOK_COLUMNS}
                 WHERE ($1::bigint IS NULL OR w.site_id = $1) AND ($2 OR w.deleted_at IS NULL)
                   AND ($3::bigint[] IS NULL OR w.site_id = ANY($3))
                 ORDER BY s.domain, w.inserted_at"
            ),
            &[&site_id, &f.include_deleted, &f.site_ids],
        )
        .await,
        "listing webhooks",
    )?;
    Ok(rows.iter().map(webhook_view).collect())
}

/// A trigger to create with a webhook, or on its own.
#[derive(Debug, Clone)]
pub struct NewTrigger {
    pub trigger_type: TriggerType,
    pub threshold: Option<i64>,
    pub window_secs: Option<i64>,
    pub cooldown_secs: Option<i64>,
    /// A goal of the webhook's site, by id or display name (goal triggers only;
    /// none: every goal of the site).
    pub goal: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub site: String,
    pub name: String,
    pub url: String,
    /// None: generated (`whsec_` + base64 of 32 random bytes).
    pub secret: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub retry_schedule_secs: Option<Vec<i64>>,
    pub rate_limit_per_sec: Option<i64>,
    pub max_concurrency: Option<i64>,
    pub triggers: Vec<NewTrigger>,
}

/// A new webhook with its secret: the only time the secret is shown.
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    pub webhook: WebhookView,
    pub secret: String,
    pub secret_generated: bool,
    pub triggers: Vec<TriggerView>,
}

/// Creates a webhook and its triggers in one transaction.
pub async fn create(db_: &mut Client, guard: &AddressGuard, n: NewWebhook) -> OpResult<Created> {
    let name = validate::name(&n.name)?;
    let url = validate::url(&n.url, guard)?;
    let (secret, generated) = match &n.secret {
        Some(s) => (validate::secret(s)?, false),
        None => (generate_secret(), true),
    };
    validate::headers(&n.headers)?;
    let schedule = n
        .retry_schedule_secs
        .as_deref()
        .map(validate::retry_schedule)
        .transpose()?;
    let rate = n.rate_limit_per_sec.map(validate::rate_limit).transpose()?;
    let conc = n
        .max_concurrency
        .map(validate::max_concurrency)
        .transpose()?;
    for t in &n.triggers {
        validate::trigger(t.trigger_type, &trigger_input(t))?;
    }
    let site = site(db_, &n.site).await?;
    let headers = serde_json::to_value(&n.headers).expect("a map of strings");

    let tx = db(db_.transaction().await, "starting a transaction")?;
    let id: Uuid = db(
        tx.query_one(
            "INSERT INTO webhooks (site_id, name, url, secret, headers, retry_schedule_secs,
                                   rate_limit_per_sec, max_concurrency)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            &[
                &site.id, &name, &url, &secret, &headers, &schedule, &rate, &conc,
            ],
        )
        .await,
        "creating the webhook",
    )?
    .get(0);
    let mut triggers = Vec::new();
    for t in &n.triggers {
        triggers.push(insert_trigger(&tx, id, site.id, t).await?);
    }
    db(tx.commit().await, "committing the new webhook")?;
    Ok(Created {
        webhook: show(db_, &id.to_string()).await?,
        secret,
        secret_generated: generated,
        triggers,
    })
}

/// What `update` changes; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct WebhookChanges {
    pub name: Option<String>,
    pub url: Option<String>,
    /// Set (or replace) these headers.
    pub set_headers: BTreeMap<String, String>,
    /// Remove these headers (case-insensitive).
    pub remove_headers: Vec<String>,
    pub clear_headers: bool,
    /// Some(None): back to the daemon's schedule.
    pub retry_schedule_secs: Option<Option<Vec<i64>>>,
    pub rate_limit_per_sec: Option<Option<i64>>,
    pub max_concurrency: Option<Option<i64>>,
}

pub async fn update(
    db_: &Client,
    guard: &AddressGuard,
    id: &str,
    c: &WebhookChanges,
) -> OpResult<WebhookView> {
    let name = c.name.as_deref().map(validate::name).transpose()?;
    let url = c
        .url
        .as_deref()
        .map(|u| validate::url(u, guard))
        .transpose()?;
    validate::headers(&c.set_headers)?;
    let schedule = match &c.retry_schedule_secs {
        Some(Some(s)) => Some(Some(validate::retry_schedule(s)?)),
        Some(None) => Some(None),
        None => None,
    };
    let rate = c
        .rate_limit_per_sec
        .map(|v| v.map(validate::rate_limit).transpose())
        .transpose()?;
    let conc = c
        .max_concurrency
        .map(|v| v.map(validate::max_concurrency).transpose())
        .transpose()?;
    let w = live(db_, id).await?;
    // Header names are case-insensitive: a header set anew replaces any spelling of it.
    let mut drop: Vec<String> = c
        .remove_headers
        .iter()
        .chain(c.set_headers.keys())
        .map(|h| h.to_ascii_lowercase())
        .collect();
    drop.sort();
    drop.dedup();
    let set = serde_json::to_value(&c.set_headers).expect("a map of strings");
    let updated = db(
        db_.execute(
            "WITH h AS (
                SELECT (SELECT coalesce(jsonb_object_agg(k, v), '{}'::jsonb)
                        FROM jsonb_each(CASE WHEN $4 THEN '{}'::jsonb ELSE w.headers END) e(k, v)
                        WHERE lower(k) <> ALL ($5::text[])) || $6::jsonb AS headers
                FROM webhooks w WHERE w.id = $1)
             UPDATE webhooks w SET
                name = coalesce($2, w.name),
                url = coalesce($3, w.url),
                headers = h.headers,
                retry_schedule_secs = CASE WHEN $7 THEN $8::int[] ELSE w.retry_schedule_secs END,
                rate_limit_per_sec = CASE WHEN $9 THEN $10::int ELSE w.rate_limit_per_sec END,
                max_concurrency = CASE WHEN $11 THEN $12::int ELSE w.max_concurrency END
             FROM h
             WHERE w.id = $1 AND (SELECT count(*) FROM jsonb_object_keys(h.headers)) <= $13",
            &[
                &w.id,
                &name,
                &url,
                &c.clear_headers,
                &drop,
                &set,
                &schedule.is_some(),
                &schedule.clone().flatten(),
                &rate.is_some(),
                &rate.flatten(),
                &conc.is_some(),
                &conc.flatten(),
                &(validate::HEADERS_MAX as i64),
            ],
        )
        .await,
        "updating the webhook",
    )?;
    if updated == 0 {
        return Err(OpError::Invalid(Invalid::new(
            "headers",
            Rule::TooMany,
            format!(
                "at most {} custom headers in all; remove some first",
                validate::HEADERS_MAX
            ),
        )));
    }
    show(db_, &w.id.to_string()).await
}

/// Turns a webhook back on; its health starts afresh (a trigger in sql/0001
/// resets the failure streak and the disable reason).
pub async fn enable(db_: &Client, id: &str) -> OpResult<WebhookView> {
    let w = live(db_, id).await?;
    db(
        db_.execute(
            // Also for a webhook still enabled but failing: enable resets its health.
            "UPDATE webhooks SET enabled = true, consecutive_failures = 0, failing_since = NULL,
                                 disabled_reason = NULL, disabled_at = NULL
             WHERE id = $1",
            &[&w.id],
        )
        .await,
        "enabling the webhook",
    )?;
    show(db_, &w.id.to_string()).await
}

pub const OPERATOR_DISABLED: &str = "by an operator";

/// Stops deliveries to a webhook: those still queued end `failed` with the
/// reason, unsent, and nothing new is enqueued for it.
pub async fn disable(db_: &Client, id: &str, reason: Option<&str>) -> OpResult<WebhookView> {
    let reason = match reason.map(str::trim).filter(|r| !r.is_empty()) {
        Some(r) if r.chars().count() > 255 => {
            return Err(OpError::Invalid(Invalid::new(
                "reason",
                Rule::TooLong,
                "a disable reason is at most 255 characters",
            )))
        }
        Some(r) if r.chars().any(char::is_control) => {
            return Err(OpError::Invalid(Invalid::new(
                "reason",
                Rule::Encoding,
                "a disable reason is one line of text without control characters",
            )))
        }
        Some(r) => format!("{OPERATOR_DISABLED}: {r}"),
        None => OPERATOR_DISABLED.to_string(),
    };
    let w = live(db_, id).await?;
    db(
        db_.execute(
            "UPDATE webhooks SET enabled = false, disabled_reason = $2, disabled_at = now()
             WHERE id = $1 AND enabled",
            &[&w.id, &reason],
        )
        .await,
        "disabling the webhook",
    )?;
    show(db_, &w.id.to_string()).await
}

#[derive(Debug, Clone, Serialize)]
pub struct Deleted {
    pub webhook: WebhookView,
    /// After this the cleaner purges it with its triggers and deliveries.
    #[serde(with = "time::serde::rfc3339")]
    pub purge_after: OffsetDateTime,
}

/// Soft delete: nothing is sent or enqueued for it any more; `restore` undoes
/// it within `retention_days`, after which the cleaner purges it.
pub async fn delete(db_: &Client, id: &str, retention_days: u32) -> OpResult<Deleted> {
    let w = live(db_, id).await?;
    db(
        db_.execute(
            "UPDATE webhooks SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL",
            &[&w.id],
        )
        .await,
        "deleting the webhook",
    )?;
    let webhook = show(db_, &w.id.to_string()).await?;
    let purge_after = webhook.deleted_at.unwrap_or_else(OffsetDateTime::now_utc)
        + time::Duration::days(i64::from(retention_days));
    Ok(Deleted {
        webhook,
        purge_after,
    })
}

pub async fn restore(db_: &Client, id: &str, retention_days: u32) -> OpResult<WebhookView> {
    let w = show(db_, id).await?;
    if w.deleted_at.is_none() {
        return Err(OpError::Conflict(format!(
            "webhook {} is not deleted",
            w.id
        )));
    }
    let n = db(
        db_.execute(
            "UPDATE webhooks SET deleted_at = NULL
             WHERE id = $1 AND deleted_at > now() - make_interval(days => $2)",
            &[&w.id, &(retention_days as i32)],
        )
        .await,
        "restoring the webhook",
    )?;
    if n == 0 {
        return Err(OpError::Conflict(format!(
            "webhook {} was deleted more than {retention_days} days ago (retention.days) and is due to be purged; create it anew",
            w.id
        )));
    }
    show(db_, &w.id.to_string()).await
}

#[derive(Debug, Clone, Serialize)]
pub struct Rotated {
    pub webhook_id: Uuid,
    /// The new secret: shown this once.
    pub secret: String,
    /// Until then the old secret signs too (a second `v1,` signature).
    #[serde(with = "time::serde::rfc3339::option")]
    pub previous_secret_expires_at: Option<OffsetDateTime>,
}

/// A new secret; the current one keeps signing beside it for `grace_secs`
/// (0: at once only the new one). Every other setting is kept.
pub async fn rotate_secret(
    db_: &Client,
    id: &str,
    new_secret: Option<&str>,
    grace_secs: i64,
) -> OpResult<Rotated> {
    if !(0..=MAX_ROTATION_GRACE_SECS).contains(&grace_secs) {
        return Err(OpError::Invalid(Invalid::new(
            "grace",
            Rule::OutOfRange,
            format!("must be between 0 and {MAX_ROTATION_GRACE_SECS} seconds (30 days)"),
        )));
    }
    let secret = match new_secret {
        Some(s) => validate::secret(s)?,
        None => generate_secret(),
    };
    let w = live(db_, id).await?;
    let row = db(
        db_.query_one(
            "UPDATE webhooks SET
                previous_secret = CASE WHEN $3::float8 > 0 THEN secret END,
                previous_secret_expires_at = CASE WHEN $3::float8 > 0 THEN now() + make_interval(secs => $3::float8) END,
                secret = $2
             WHERE id = $1
             RETURNING previous_secret_expires_at",
            &[&w.id, &secret, &(grace_secs as f64)],
        )
        .await,
        "rotating the secret",
    )?;
    Ok(Rotated {
        webhook_id: w.id,
        secret,
        previous_secret_expires_at: row.get(0),
    })
}

// ---------------------------------------------------------------- triggers

#[derive(Debug, Clone, Serialize)]
pub struct TriggerView {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub trigger_type: String,
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

fn trigger_input(t: &NewTrigger) -> TriggerInput {
    TriggerInput {
        threshold: t.threshold,
        window_secs: t.window_secs,
        cooldown_secs: t.cooldown_secs,
        has_goal: t.goal.is_some(),
    }
}

/// A goal of the site, by id or display name.
async fn goal_id(
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

async fn insert_trigger(
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
    insert_trigger(db_, w.id, w.site_id, t).await
}

pub async fn list_triggers(db_: &Client, webhook: &str) -> OpResult<Vec<TriggerView>> {
    let id = webhook_id(db_, webhook).await?;
    let rows = db(
        db_.query(
            &format!("SELECT {TRIGGER_COLUMNS} WHERE t.webhook_id = $1 ORDER BY t.inserted_at"),
            &[&id],
        )
        .await,
        "listing triggers",
    )?;
    Ok(rows.iter().map(trigger_view).collect())
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

// ---------------------------------------------------------------- deliveries

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub event_type: String,
    /// pending | retrying | delivering | success | failed
    pub status: String,
    pub attempts: i32,
    /// `infinity` (never due) is a value a writer may give it, so it is
    /// read as PostgreSQL holds it (`infinity` in JSON and in the CLI).
    pub next_attempt_at: Timestamp,
    pub last_response_code: Option<i32>,
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub delivered_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub inserted_at: OffsetDateTime,
    pub trigger_id: Option<Uuid>,
}

const DELIVERY_COLUMNS: &str = "
    d.id, d.webhook_id, d.event_type,
    CASE WHEN d.status = 'pending' AND d.attempts > 0 THEN 'retrying' ELSE d.status END,
    d.attempts, d.next_attempt_at, d.last_response_code, d.last_error, d.delivered_at,
    d.finished_at, d.inserted_at, d.trigger_id
FROM webhook_deliveries d";

fn delivery_view(r: &tokio_postgres::Row) -> DeliveryView {
    DeliveryView {
        id: r.get(0),
        webhook_id: r.get(1),
        event_type: r.get(2),
        status: r.get(3),
        attempts: r.get(4),
        next_attempt_at: r.get(5),
        last_response_code: r.get(6),
        last_error: r.get(7),
        delivered_at: r.get(8),
        finished_at: r.get(9),
        inserted_at: r.get(10),
        trigger_id: r.get(11),
    }
}

pub const DELIVERY_STATUSES: &[&str] = &["pending", "retrying", "delivering", "success", "failed"];

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub webhook: Option<String>,
    /// One of DELIVERY_STATUSES.
    pub status: Option<String>,
    pub event_type: Option<String>,
    pub since: Option<OffsetDateTime>,
    /// Default 50, at most 10,000.
    pub limit: Option<i64>,
    /// Keyset pagination: only deliveries after this one in the listing's
    /// order (`inserted_at` descending, then id), given as its (inserted_at, id).
    pub after: Option<(OffsetDateTime, Uuid)>,
}

/// The newest deliveries first.
pub async fn list_deliveries(db_: &Client, f: &DeliveryFilter) -> OpResult<Vec<DeliveryView>> {
    if let Some(s) = &f.status {
        if !DELIVERY_STATUSES.contains(&s.as_str()) {
            return Err(OpError::Invalid(Invalid::new(
                "status",
                Rule::Syntax,
                format!(
                    "`{s}` is not a status; use one of {}",
                    DELIVERY_STATUSES.join(", ")
                ),
            )));
        }
    }
    if let Some(e) = &f.event_type {
        validate::no_nul("event", e)?;
    }
    let limit = f.limit.unwrap_or(50);
    if !(1..=DELIVERIES_LIMIT_MAX).contains(&limit) {
        return Err(OpError::Invalid(Invalid::new(
            "limit",
            Rule::OutOfRange,
            format!("must be between 1 and {DELIVERIES_LIMIT_MAX}"),
        )));
    }
    let webhook = match &f.webhook {
        Some(w) => Some(webhook_id(db_, w).await?),
        None => None,
    };
    let rows = db(
        db_.query(
            &format!(
                "SELECT {DELIVERY_COLUMNS}
                 WHERE ($1::uuid IS NULL OR d.webhook_id = $1)
                   AND ($2::text IS NULL
                        OR ($2 = 'pending' AND d.status = 'pending' AND d.attempts = 0)
                        OR ($2 = 'retrying' AND d.status = 'pending' AND d.attempts > 0)
                        OR ($2 NOT IN ('pending', 'retrying') AND d.status = $2))
                   AND ($3::text IS NULL OR d.event_type = $3)
                   AND ($4::timestamptz IS NULL OR d.inserted_at >= $4)
                   AND ($6::timestamptz IS NULL OR d.inserted_at < $6
                        OR (d.inserted_at = $6 AND d.id > $7))
                 ORDER BY d.inserted_at DESC, d.id
                 LIMIT $5"
            ),
            &[
                &webhook,
                &f.status,
                &f.event_type,
                &f.since,
                &limit,
                &f.after.map(|a| a.0),
                &f.after.map(|a| a.1),
            ],
        )
        .await,
        "listing deliveries",
    )?;
    Ok(rows.iter().map(delivery_view).collect())
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    pub attempt: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub attempted_at: OffsetDateTime,
    pub status_code: Option<i32>,
    pub duration_ms: i32,
    pub error: Option<String>,
    /// The start of the receiver's answer (as much as the daemon keeps).
    pub response_body: Option<String>,
    pub instance: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    pub delivery: DeliveryView,
    /// The payload as a JSON value; when it cannot be one here (nested
    /// deeper than a JSON parser follows, a number no f64 holds: jsonb takes
    /// both), its JSON text as stored, a string, with `payload_note` saying so.
    pub payload: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_note: Option<String>,
    pub attempt_log: Vec<AttemptView>,
}

/// The stored payload (jsonb text) for display: parsed when serde_json can
/// (its recursion limit keeps a deep one from exhausting the stack), else
/// the text itself with a note. The text is what the receiver gets as `data`.
fn shown_payload(text: String) -> (Value, Option<String>) {
    match serde_json::from_str(&text) {
        Ok(v) => (v, None),
        Err(e) => (
            Value::String(text),
            Some(format!(
                "the payload cannot be shown as a JSON value here ({e}); `payload` is its JSON text exactly as stored, which receivers get as `data`"
            )),
        ),
    }
}

fn delivery_uuid(id: &str) -> OpResult<Uuid> {
    Uuid::parse_str(id.trim()).map_err(|_| {
        OpError::Invalid(Invalid::new(
            "delivery",
            Rule::Syntax,
            format!("`{id}` is not a delivery id (the full id, as `deliveries list` prints it)"),
        ))
    })
}

/// A delivery with every attempt.
pub async fn show_delivery(db_: &Client, id: &str) -> OpResult<DeliveryDetail> {
    let id = delivery_uuid(id)?;
    let row = db(
        db_.query_opt(
            &format!(
                "SELECT {}, d.payload::text FROM webhook_deliveries d WHERE d.id = $1",
                DELIVERY_COLUMNS.replace("FROM webhook_deliveries d", "")
            ),
            &[&id],
        )
        .await,
        "reading the delivery",
    )?
    .ok_or_else(|| {
        OpError::NotFound(format!(
            "no delivery {id} (it may have been pruned after retention.days)"
        ))
    })?;
    let attempts = db(
        db_.query(
            "SELECT attempt, attempted_at, status_code, duration_ms, error, response_body, instance
             FROM webhook_delivery_attempts WHERE delivery_id = $1 ORDER BY attempt, id",
            &[&id],
        )
        .await,
        "reading the attempts",
    )?;
    let (payload, payload_note) = shown_payload(row.get(12));
    Ok(DeliveryDetail {
        delivery: delivery_view(&row),
        payload,
        payload_note,
        attempt_log: attempts
            .iter()
            .map(|a| AttemptView {
                attempt: a.get(0),
                attempted_at: a.get(1),
                status_code: a.get(2),
                duration_ms: a.get(3),
                error: a.get(4),
                response_body: a.get(5),
                instance: a.get(6),
            })
            .collect(),
    })
}

/// Wakes every daemon: an UPDATE that makes a row due sends no NOTIFY (only
/// INSERT does), and without one the backstop poll would be seconds late.
async fn notify(db_: &Client) -> OpResult<()> {
    db(
        db_.execute("SELECT pg_notify($1, '')", &[&NOTIFY_CHANNEL])
            .await,
        "notifying the daemon",
    )?;
    Ok(())
}

/// Deliveries of a disabled or deleted webhook would only fail unsent.
fn sendable(w: &WebhookView) -> OpResult<()> {
    if w.deleted_at.is_some() {
        return Err(OpError::Conflict(format!(
            "webhook {} is deleted; restore it first",
            w.id
        )));
    }
    if !w.enabled {
        return Err(OpError::Conflict(format!(
            "webhook {} is {}; enable it first (`enable {}`), then retry",
            w.id,
            w.status_text(),
            w.id
        )));
    }
    Ok(())
}

/// Makes one delivery due now, on the same delivery id (so the receiver can
/// dedupe by `webhook-id`), with a new attempt number. A failed delivery gets
/// one more attempt (not a fresh schedule); a success is sent again only with
/// `force`; a delivery in flight is left alone.
pub async fn retry(db_: &Client, id: &str, force: bool) -> OpResult<DeliveryView> {
    let d = show_delivery(db_, id).await?.delivery;
    let w = show(db_, &d.webhook_id.to_string()).await?;
    sendable(&w)?;
    match d.status.as_str() {
        "delivering" => {
            return Err(OpError::Conflict(format!(
                "delivery {} is being sent right now; wait for its outcome",
                d.id
            )))
        }
        "success" if !force => {
            return Err(OpError::Conflict(format!(
                "delivery {} already succeeded; pass --force to send it again (same webhook-id)",
                d.id
            )))
        }
        _ => {}
    }
    let row = db(
        db_.query_opt(
            &format!(
                "WITH u AS (
                    UPDATE webhook_deliveries d SET status = 'pending', next_attempt_at = now(), finished_at = NULL
                    WHERE d.id = $1 AND (d.status IN ('pending', 'failed') OR (d.status = 'success' AND $2))
                    RETURNING d.*)
                 SELECT {}",
                DELIVERY_COLUMNS.replace("webhook_deliveries d", "u d")
            ),
            &[&d.id, &force],
        )
        .await,
        "requeueing the delivery",
    )?;
    let Some(row) = row else {
        return Err(OpError::Conflict(format!(
            "delivery {} changed state meanwhile; look at it again",
            d.id
        )));
    };
    notify(db_).await?;
    Ok(delivery_view(&row))
}

#[derive(Debug, Clone)]
pub struct Replay {
    pub webhook: String,
    pub since: OffsetDateTime,
    pub until: Option<OffsetDateTime>,
    pub event_type: Option<String>,
    /// Send successes again too (explicit: receivers then see them twice).
    pub include_success: bool,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    pub webhook_id: Uuid,
    /// Deliveries made due again (or, on a dry run, that would be).
    pub count: u64,
    pub dry_run: bool,
}

const REPLAY_WHERE: &str = "
    d.webhook_id = $1 AND d.inserted_at >= $2 AND d.inserted_at < coalesce($3::timestamptz, 'infinity')
    AND (d.status = 'failed' OR ($4 AND d.status = 'success'))
    AND ($5::text IS NULL OR d.event_type = $5)
    AND coalesce(d.finished_at, '-infinity') <= $6::timestamptz";

/// Makes a webhook's failed deliveries created since a time due again (and
/// its successes too with `include_success`), in batches of REPLAY_BATCH, each
/// followed by a NOTIFY. Each gets one more attempt on its own delivery id.
/// Rows that finish again during the replay are not picked twice.
pub async fn replay(db_: &Client, r: &Replay) -> OpResult<Replayed> {
    if let Some(e) = &r.event_type {
        validate::no_nul("event", e)?;
    }
    let w = show(db_, &r.webhook).await?;
    sendable(&w)?;
    let started: OffsetDateTime = db(
        db_.query_one("SELECT clock_timestamp()", &[]).await,
        "reading the time",
    )?
    .get(0);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
        &w.id,
        &r.since,
        &r.until,
        &r.include_success,
        &r.event_type,
        &started,
    ];
    if r.dry_run {
        let n: i64 = db(
            db_.query_one(
                &format!("SELECT count(*) FROM webhook_deliveries d WHERE {REPLAY_WHERE}"),
                &params,
            )
            .await,
            "counting deliveries to replay",
        )?
        .get(0);
        return Ok(Replayed {
            webhook_id: w.id,
            count: n as u64,
            dry_run: true,
        });
    }
    let sql = format!(
        "WITH c AS (
            SELECT d.id FROM webhook_deliveries d WHERE {REPLAY_WHERE}
            ORDER BY d.inserted_at LIMIT {REPLAY_BATCH} FOR UPDATE SKIP LOCKED)
         UPDATE webhook_deliveries d SET status = 'pending', next_attempt_at = now(), finished_at = NULL
         FROM c WHERE d.id = c.id"
    );
    let mut total = 0;
    loop {
        let n = db(db_.execute(&sql, &params).await, "requeueing deliveries")?;
        total += n;
        if n > 0 {
            notify(db_).await?;
        }
        if (n as i64) < REPLAY_BATCH {
            break;
        }
    }
    Ok(Replayed {
        webhook_id: w.id,
        count: total,
        dry_run: false,
    })
}

// ---------------------------------------------------------------- test event

/// The longest a test send waits for the receiver, whatever
/// `delivery.request_timeout_ms` says: a person (or a script) waits on the
/// answer, and a test in flight holds one of the caller's test slots
/// (`super::test_slots`). Real deliveries keep the configured timeout.
pub const TEST_REQUEST_TIMEOUT_MAX: Duration = Duration::from_secs(15);

/// What it takes to send a test event: the daemon's own client (guard, TLS,
/// timeouts, the request timeout capped at [`TEST_REQUEST_TIMEOUT_MAX`]) and
/// settings, built from the config.
pub struct TestSender {
    pub client: HttpClient,
    pub cfg: Config,
    pub instance: String,
}

impl TestSender {
    /// `resolver` replaces the system DNS resolver (tests only).
    pub fn from_config(cfg: &Config, resolver: Option<Arc<dyn Resolve>>) -> anyhow::Result<Self> {
        let mut cc = ClientConfig::from_config(cfg)?;
        if let Some(r) = resolver {
            cc.resolver = r;
        }
        cc.request_timeout = cc.request_timeout.min(TEST_REQUEST_TIMEOUT_MAX);
        cc.connect_timeout = cc.connect_timeout.min(cc.request_timeout);
        Ok(Self {
            client: HttpClient::new(cc)?,
            cfg: cfg.clone(),
            instance: format!("test:{}", crate::daemon::instance_name()),
        })
    }

    /// How long a test waits for the receiver at most.
    pub fn timeout(&self) -> Duration {
        self.client.request_timeout()
    }
}

/// Why a test did not succeed, for the operator (and the API's clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TestCause {
    Ok,
    HttpStatus,
    Dns,
    RefusedAddress,
    Tls,
    Timeout,
    ConnectionRefused,
    Connection,
    NotSent,
}

#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    pub delivery_id: Uuid,
    pub webhook_id: Uuid,
    pub url: String,
    pub success: bool,
    pub cause: TestCause,
    pub status_code: Option<i32>,
    pub duration_ms: i32,
    pub error: Option<String>,
    /// The start of the receiver's answer.
    pub response_body: Option<String>,
    /// What to do about it.
    pub hint: Option<String>,
}

/// Names the cause of a failed attempt from the client's error text (see
/// `delivery::client` and `delivery::guard`, which word them).
pub fn classify(error: &str) -> (TestCause, &'static str) {
    let e = error.to_ascii_lowercase();
    if e.starts_with("refused address") {
        (TestCause::RefusedAddress, "the URL's host is (or resolves to) a non-public address; point the webhook at a public receiver, or allow the range in delivery.allow_cidrs if it is really meant to be reachable")
    } else if e.contains("dns lookup") {
        (
            TestCause::Dns,
            "the host name does not resolve; check the URL's spelling and the receiver's DNS",
        )
    } else if e.starts_with("timed out") {
        (TestCause::Timeout, "the receiver did not answer within delivery.request_timeout_ms; it must answer quickly (queue work, reply 2xx)")
    } else if e.contains("connection refused") {
        (TestCause::ConnectionRefused, "nothing listens at that host and port; check the receiver is running and the port in the URL")
    } else if e.contains("certificate")
        || e.contains("tls")
        || e.contains("handshake")
        || e.contains("alert")
    {
        (TestCause::Tls, "the TLS handshake failed; the receiver needs a certificate valid for its host name from a public CA (or one in delivery.extra_ca_file)")
    } else if e.contains("not sent") {
        (
            TestCause::NotSent,
            "the webhook cannot be sent to as it stands; see the error",
        )
    } else {
        (
            TestCause::Connection,
            "the connection failed; check the receiver is reachable from this host",
        )
    }
}

/// Sample `data` of each event type the webhook subscribes to (every type
/// when it has no triggers yet), in the shapes real events have.
fn test_payload(types: &[String]) -> Value {
    let all = ["goal_completion", "visitor_spike", "traffic_drop"];
    let types: Vec<&str> = if types.is_empty() {
        all.to_vec()
    } else {
        all.iter()
            .copied()
            .filter(|t| types.iter().any(|s| s == t))
            .collect()
    };
    let mut samples = serde_json::Map::new();
    for t in types {
        let sample = match t {
            "goal_completion" => json!({
                "goal_id": 1, "goal_name": "Signup", "goal_type": "event",
                "event_name": "Signup", "pathname": "/register",
                "occurred_at": "2026-01-01T12:00:00Z", "visitor_count": 1
            }),
            "visitor_spike" => json!({
                "visitors": 120, "threshold": 100, "window_secs": 300,
                "baseline_visitors": 40.0, "change_percent": 200.0,
                "top_sources": [{"source": "Google", "visitors": 60}],
                "top_pages": [{"page": "/", "visitors": 80}]
            }),
            _ => json!({
                "visitors": 3, "threshold": 10, "window_secs": 43200,
                "baseline_visitors": 25.0, "change_percent": -88.0
            }),
        };
        samples.insert(t.to_string(), sample);
    }
    json!({
        "test": true,
        "message": "A test event from plausible-webhooks: if you can read this, the webhook works.",
        "samples": samples
    })
}

/// The test delivery, inserted already claimed by this process, returned in
/// the claim's row shape (see `queue::claimer::CLAIM_SQL`).
const TEST_CLAIM_SQL: &str = concat!(
    "
WITH d AS (
    INSERT INTO webhook_deliveries (webhook_id, event_type, payload, status, attempts, locked_by, locked_until)
    VALUES ($1, 'test', $2, 'delivering', 1, $3, now() + make_interval(secs => $4))
    RETURNING id, webhook_id, event_type, payload, attempts, inserted_at, locked_until
)",
    crate::queue::claimer::claimed_row_sql!()
);

/// Sends a `test` event to the webhook now, through the daemon's own client,
/// address guard and signing, and records it in the delivery log like any
/// delivery (one attempt, no retries). A disabled webhook is tested too, so a
/// fix can be checked before re-enabling it; a deleted one is not.
pub async fn send_test(pool: &Pool, sender: &TestSender, webhook: &str) -> OpResult<TestResult> {
    // No connection is held while the receiver is waited on: a hanging
    // receiver must not take the admin API's few connections from everyone.
    let client = pool.get().await.context("getting a database connection")?;
    let w = show(&client, webhook).await?;
    if w.deleted_at.is_some() {
        return Err(OpError::Conflict(format!(
            "webhook {} is deleted; restore it first",
            w.id
        )));
    }
    let types: Vec<String> = db(
        client
            .query(
                "SELECT DISTINCT trigger_type FROM webhook_triggers WHERE webhook_id = $1 AND enabled",
                &[&w.id],
            )
            .await,
        "reading the webhook's triggers",
    )?
    .iter()
    .map(|r| r.get(0))
    .collect();
    let lease = sender.cfg.delivery.lease();
    let lease_deadline = Instant::now() + lease;
    let row = db(
        client
            .query_one(
                TEST_CLAIM_SQL,
                &[
                    &w.id,
                    &test_payload(&types),
                    &sender.instance,
                    &lease.as_secs_f64(),
                ],
            )
            .await,
        "recording the test delivery",
    )?;
    let mut info = crate::queue::claimer::webhook_info(&row, row.get::<_, Option<&str>>(8))
        .context("reading the webhook for the test delivery")?;
    info.enabled = true; // tested on purpose, even while disabled
    info.retry_schedule = Some(Vec::new()); // one attempt: the operator sees the result now
    let job = Claimed {
        id: row.get(0),
        event_type: row.get(2),
        payload: row.get(3),
        attempt: row.get(4),
        inserted_at: row.get(5),
        lease: row.get(18),
        lease_deadline,
        webhook: Arc::new(info),
    };
    drop(client);
    let d = &sender.cfg.delivery;
    let worker = Worker {
        client: sender.client.clone(),
        policy: RetryPolicy {
            schedule: Vec::new(),
            jitter: 0.0,
            retry_after_cap: Duration::ZERO,
        },
        response_log_max: d.response_log_max_bytes,
        stop: tokio_util::sync::CancellationToken::new(),
    };
    let outcome = worker.deliver(&job).await;

    // Recorded by the completer, as the daemon records outcomes (attempt log, health).
    let (tx, rx) = completer::channel(1);
    let done = Completer::new(
        CompleterConfig {
            instance: sender.instance.clone(),
            batch_max: 1,
            disable_after_failures: sender.cfg.health.disable_after_failures as i32,
            disable_after: Duration::from_secs(sender.cfg.health.disable_after_secs),
        },
        pool.clone(),
        rx,
        Arc::new(tokio::sync::Notify::new()),
    )?
    .start(tokio_util::sync::CancellationToken::new());
    let _ = tx.send((outcome.clone(), None)).await;
    drop(tx);
    let _ = done.await;

    let client = pool.get().await.context("getting a database connection")?;
    let recorded: Option<String> = db(
        client
            .query_opt(
                "SELECT status FROM webhook_deliveries WHERE id = $1 AND status IN ('success', 'failed')",
                &[&job.id],
            )
            .await,
        "reading the test outcome",
    )?
    .map(|r| r.get(0));
    if recorded.is_none() {
        return Err(OpError::Internal(anyhow::anyhow!(
            "the test was sent but its outcome could not be recorded (delivery {}); the daemon will send it again",
            job.id
        )));
    }
    let success = outcome.status == crate::queue::Status::Success;
    let (cause, hint) = match (&outcome.status_code, &outcome.error) {
        _ if success => (TestCause::Ok, None),
        (Some(_), _) => (
            TestCause::HttpStatus,
            Some("the receiver answered but not with a 2xx; see its answer".to_string()),
        ),
        (None, Some(e)) => {
            let (c, h) = classify(e);
            (c, Some(h.to_string()))
        }
        (None, None) => (TestCause::Connection, None),
    };
    Ok(TestResult {
        delivery_id: job.id,
        webhook_id: w.id,
        url: w.url,
        success,
        cause,
        status_code: outcome.status_code,
        duration_ms: outcome.duration_ms,
        error: outcome.error,
        response_body: outcome.response_body,
        hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_event_fits_any_payload_limit() {
        // jsonb renders ", " and ": " where serde writes "," and ":", so twice
        // the compact size bounds what the database measures.
        let compact = test_payload(&[]).to_string().len();
        assert!(
            2 * compact < crate::config::MIN_MAX_PAYLOAD_BYTES,
            "{compact} bytes"
        );
    }

    #[test]
    fn a_test_waits_at_most_its_own_bound() {
        let env: BTreeMap<String, String> =
            [("DATABASE_URL".to_string(), "postgres://u@h/db".to_string())].into();
        let cfg = |toml: &str| Config::from_parts(toml, &env).unwrap();
        let long = cfg("[delivery]\nrequest_timeout_ms = 120000\nlease_secs = 180\n");
        assert_eq!(
            TestSender::from_config(&long, None).unwrap().timeout(),
            TEST_REQUEST_TIMEOUT_MAX
        );
        let short = cfg("[delivery]\nrequest_timeout_ms = 3000\nconnect_timeout_ms = 1000\n");
        assert_eq!(
            TestSender::from_config(&short, None).unwrap().timeout(),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn failure_causes_are_named_from_the_client_s_words() {
        for (error, cause) in [
            (
                "refused address: 127.0.0.1 is a loopback address (127.0.0.0/8); …",
                TestCause::RefusedAddress,
            ),
            (
                "client error (Connect): DNS lookup of nope.example failed: no such host",
                TestCause::Dns,
            ),
            ("timed out after 10000 ms", TestCause::Timeout),
            (
                "client error (Connect): tcp connect error: Connection refused (os error 111)",
                TestCause::ConnectionRefused,
            ),
            (
                "client error (Connect): invalid peer certificate: UnknownIssuer",
                TestCause::Tls,
            ),
            (
                "client error (SendRequest): connection closed before message completed",
                TestCause::Connection,
            ),
        ] {
            assert_eq!(classify(error).0, cause, "{error}");
        }
    }
}
