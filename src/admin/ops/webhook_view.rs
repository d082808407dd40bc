//! A webhook as its site's members see it, read from its row: what every
//! operation on webhooks, their triggers, deliveries and tests answers with
//! or checks against.

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::admin::access;
use crate::admin::error::{db, OpError, OpResult};
use crate::delivery::signing::public_key_text;

/// A webhook as its site's members see it. The secret is never part of it.
#[derive(Debug, Clone, Serialize, ToSchema)]
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
    /// The last error of a delivery that failed for good.
    pub last_failure: Option<String>,
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
    /// How many triggers it has.
    pub triggers: i64,
    /// The event types it receives: names, prefix wildcards (`site.*`), or `*`.
    pub events: Vec<String>,
    /// What the receiver takes: `standard` (the signed JSON envelope), or a
    /// chat service's message: `slack`, `discord`, `teams`, `google_chat`.
    pub format: String,
    /// How deliveries are signed: hmac (`v1,` and X-Webhook-Signature) or
    /// both (`v1a,` added).
    pub signature: String,
    /// Its ed25519 public key, whpk_ + base64 of 32 bytes: what receivers
    /// verify `v1a,` signatures with (not a secret). Signs only with
    /// `signature` both. The private key is never part of a view.
    pub public_key: Option<String>,
    /// A rotated-out key's public key while it still signs beside the current one.
    pub previous_public_key: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub previous_signing_key_expires_at: Option<OffsetDateTime>,
}

/// A receiver URL as someone who may only read sees it: its scheme, host
/// and port. Chat and automation services put their credential in the
/// path or the query (`hooks.slack.com/services/T…/B…/secret`).
pub fn host_only(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{}://{h}:{p}/…", u.scheme()),
            (Some(h), None) => format!("{}://{h}/…", u.scheme()),
            _ => "(hidden)".into(),
        },
        Err(_) => "(hidden)".into(),
    }
}

impl WebhookView {
    /// As a caller with `access` on its site sees it: a reader gets the
    /// URL's host only; who may manage it sees the whole URL.
    pub fn seen_with(mut self, access: crate::admin::access::Access) -> Self {
        if access < crate::admin::access::Access::Manage {
            self.url = host_only(&self.url);
        }
        self
    }

    /// `disabled (reason)` as the CLI prints it.
    pub fn status_text(&self) -> String {
        match (&*self.status, &self.disabled_reason) {
            ("disabled", Some(r)) => format!("disabled ({r})"),
            ("failing", _) => format!("failing ({} failed in a row)", self.consecutive_failures),
            (s, _) => s.to_string(),
        }
    }
}

pub(crate) const WEBHOOK_COLUMNS: &str = "
    w.id, w.site_id, s.domain, w.name, w.url, w.enabled, w.disabled_reason, w.disabled_at,
    w.consecutive_failures, w.failing_since, w.headers, w.retry_schedule_secs,
    w.rate_limit_per_sec, w.max_concurrency,
    CASE WHEN w.previous_secret_expires_at > now() THEN w.previous_secret_expires_at END,
    w.deleted_at, w.inserted_at, w.updated_at,
    (SELECT count(*) FROM webhook_triggers t WHERE t.webhook_id = w.id), w.events,
    w.failing_noticed_at IS NOT NULL, w.last_failure, w.format,
    w.signature, w.signing_public_key,
    CASE WHEN w.previous_signing_key_expires_at > now() THEN w.previous_signing_public_key END,
    CASE WHEN w.previous_signing_key_expires_at > now() THEN w.previous_signing_key_expires_at END
FROM webhooks w JOIN sites s ON s.id = w.site_id";

pub(crate) fn webhook_view(r: &tokio_postgres::Row) -> WebhookView {
    let enabled: bool = r.get(5);
    let failures: i32 = r.get(8);
    let deleted_at: Option<OffsetDateTime> = r.get(15);
    // `failing` from the streak's notice (webhook.failing, at
    // `[health] failing_after_failures`) until it recovers or is disabled.
    let noticed: bool = r.get(20);
    let headers: Value = r.get(10);
    let status = if deleted_at.is_some() {
        "deleted"
    } else if !enabled {
        "disabled"
    } else if noticed {
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
        events: r.get(19),
        last_failure: r.get(21),
        format: r.get(22),
        signature: r.get(23),
        public_key: r.get::<_, Option<Vec<u8>>>(24).map(|k| public_key_text(&k)),
        previous_public_key: r.get::<_, Option<Vec<u8>>>(25).map(|k| public_key_text(&k)),
        previous_signing_key_expires_at: r.get(26),
    }
}

/// One webhook, deleted or not (access is the caller's to have checked).
pub(crate) async fn view(db_: &impl GenericClient, id: Uuid) -> OpResult<WebhookView> {
    let row = db(
        db_.query_opt(&format!("SELECT {WEBHOOK_COLUMNS} WHERE w.id = $1"), &[&id])
            .await,
        "reading the webhook",
    )?;
    row.map(|r| webhook_view(&r))
        .ok_or_else(|| access::no_webhook(&id.to_string()))
}

/// The refusal to change a deleted webhook.
/// A webhook `who` may manage that is not deleted, with its site: what every
/// change of a webhook's settings, keys or triggers starts from.
pub(crate) async fn manageable(
    db_: &deadpool_postgres::Object,
    who: &access::Principal,
    id: Uuid,
) -> OpResult<(access::Site, WebhookView)> {
    let site = access::webhook(db_, who, id, access::Access::Manage).await?;
    let w = view(&***db_, id).await?;
    if w.deleted_at.is_some() {
        return Err(deleted(&w));
    }
    Ok((site, w))
}

pub(crate) fn deleted(w: &WebhookView) -> OpError {
    OpError::Conflict(format!(
        "webhook {} is deleted; restoring it brings it back (CLI `restore`, API POST /api/webhooks/{}/restore)",
        w.id, w.id
    ))
}
