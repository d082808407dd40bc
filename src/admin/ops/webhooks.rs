//! Webhooks: create, list, show, update, enable, disable, delete, restore,
//! rotate the secret.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::admin::validate::{self, Invalid, Rule};
use crate::delivery::guard::AddressGuard;
use crate::delivery::signing::generate_secret;
use crate::triggers::TriggerType;

use super::*;

/// A webhook as operators see it. The secret is never part of it.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookView {
    pub id: Uuid,
    /// The site's domain, as the envelope's `site_id` and Plausible's API name it.
    pub site_id: String,
    /// The site's numeric id in Plausible's database (`sites.id`).
    pub plausible_site_id: i64,
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
        plausible_site_id: r.get(1),
        site_id: r.get(2),
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
pub(super) async fn live(db_: &Client, id: &str) -> OpResult<WebhookView> {
    let w = show(db_, id).await?;
    if w.deleted_at.is_some() {
        return Err(OpError::Conflict(format!(
            "webhook {} is deleted; restoring it brings it back (CLI `restore`, API POST /api/webhooks/{}/restore)",
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

/// `{"webhooks": [...]}`: what `GET /api/webhooks` and `list --json` print.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}

/// `{"webhook": {...}, "triggers": [...]}`: `GET /api/webhooks/:id` and `show --json`.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookDetail {
    pub webhook: WebhookView,
    pub triggers: Vec<TriggerView>,
}

/// One webhook with its triggers.
pub async fn show_detail(db_: &Client, id: &str) -> OpResult<WebhookDetail> {
    let webhook = show(db_, id).await?;
    let triggers = list_triggers(db_, &webhook.id.to_string()).await?.triggers;
    Ok(WebhookDetail { webhook, triggers })
}

pub async fn list(db_: &Client, f: &ListFilter) -> OpResult<WebhookList> {
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
    Ok(WebhookList {
        webhooks: rows.iter().map(webhook_view).collect(),
    })
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
    /// What the operator should know about what was set (a plain secret).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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
        warnings: validate::secret_warning(&secret).into_iter().collect(),
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

impl WebhookChanges {
    /// Nothing would change.
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.url.is_none()
            && self.set_headers.is_empty()
            && self.remove_headers.is_empty()
            && !self.clear_headers
            && self.retry_schedule_secs.is_none()
            && self.rate_limit_per_sec.is_none()
            && self.max_concurrency.is_none()
    }
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
                "disabled_reason",
                Rule::TooLong,
                "a disable reason is at most 255 characters",
            )))
        }
        Some(r) if r.chars().any(char::is_control) => {
            return Err(OpError::Invalid(Invalid::new(
                "disabled_reason",
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
    /// What the operator should know about the new secret (a plain one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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
            "grace_secs",
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
        warnings: validate::secret_warning(&secret).into_iter().collect(),
        secret,
        previous_secret_expires_at: row.get(0),
    })
}
