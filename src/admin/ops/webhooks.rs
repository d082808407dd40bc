//! Webhooks: create, list, show, update (enable and disable among it),
//! delete, restore, rotate the secret; and a webhook named by an id prefix,
//! as the CLI takes it.

use std::collections::BTreeMap;

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::page::{bad_cursor, page_size};
use super::test_send::{Candidate, CheckResult};
use super::triggers::{check_trigger, insert_trigger, list_of, TriggerView};
use super::webhook_view::{deleted, manageable, view, webhook_view, WebhookView, WEBHOOK_COLUMNS};
use crate::admin::access::{self, Access, Principal};
use crate::admin::core::Admin;
use crate::admin::error::{db, OpError, OpResult};
use crate::admin::inputs::{
    given, site_of, HeaderArg, NewWebhook, RotateSecret, Schedule, Setting, WebhookChanges,
    WebhookQuery,
};
use crate::admin::validate::{self, Checks, Invalid, Rule};
use crate::delivery::signing::{generate_secret, SigningKey};
use tokio_postgres::GenericClient;

/// The longest grace period a rotated-out secret may keep signing.
pub const MAX_ROTATION_GRACE_SECS: i64 = 30 * 86_400;
pub const DEFAULT_ROTATION_GRACE_SECS: i64 = 86_400;

/// `{"webhooks": [...], "next_cursor": ...}`: one page of webhooks, by
/// site domain, then the oldest first, as `GET /api/webhooks` and `list
/// --json` print it. `next_cursor` (null on the last page) fetches the next.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
    pub next_cursor: Option<String>,
}

/// The page cursor: the last webhook's (site domain, inserted_at, id),
/// opaque to clients.
fn encode_cursor(w: &WebhookView) -> String {
    format!(
        "{}_{}_{}",
        w.inserted_at.unix_timestamp_nanos(),
        w.id.simple(),
        w.site_id
    )
}

fn decode_cursor(s: &str) -> Result<(String, OffsetDateTime, Uuid), Invalid> {
    let mut parts = s.trim().splitn(3, '_');
    let (Some(t), Some(id), Some(domain)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad_cursor());
    };
    let t = t
        .parse()
        .ok()
        .and_then(|t| OffsetDateTime::from_unix_timestamp_nanos(t).ok())
        .ok_or_else(bad_cursor)?;
    validate::no_nul("cursor", domain)?;
    Ok((
        domain.to_string(),
        t,
        Uuid::parse_str(id).map_err(|_| bad_cursor())?,
    ))
}

/// `{"webhook": {...}, "triggers": [...]}`: `GET /api/webhooks/:id` and `show --json`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookDetail {
    pub webhook: WebhookView,
    pub triggers: Vec<TriggerView>,
}

/// A new webhook with its secret: the only time the secret is shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Created {
    pub webhook: WebhookView,
    pub secret: String,
    pub secret_generated: bool,
    /// What the caller should know about what was set (a plain secret, a deprecated name).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub triggers: Vec<TriggerView>,
    /// With `check`: what the receiver answered the test event sent first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckResult>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Deleted {
    pub webhook: WebhookView,
    /// After this the cleaner purges it with its triggers and deliveries.
    #[serde(with = "time::serde::rfc3339")]
    pub purge_after: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Rotated {
    pub webhook_id: Uuid,
    /// The new secret: shown this once.
    pub secret: String,
    /// Until then the old secret signs too (a second `v1,` signature).
    #[serde(with = "time::serde::rfc3339::option")]
    pub previous_secret_expires_at: Option<OffsetDateTime>,
    /// What the caller should know about the new secret (a plain one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `site`, the name `site_id` had before one vocabulary (docs/api.md#names),
/// is still read, this release only.
pub const SITE_DEPRECATED: &str =
    "`site` is deprecated and read this release only: name the site by `site_id` (its domain or numeric id)";

/// Who turned a webhook off by hand, as its `disabled_reason` begins.
pub const OPERATOR_DISABLED: &str = "by an operator";

/// Custom headers as given, checked one by one (every refusal kept), the
/// names case-insensitive: a name given twice is refused.
fn check_headers(checks: &mut Checks, given: &[HeaderArg]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for h in given {
        match h {
            HeaderArg::Malformed(s) => checks.refuse(Invalid::new(
                "headers",
                Rule::Syntax,
                format!("`{}` is not NAME=VALUE", access::quote(s)),
            )),
            HeaderArg::Pair(k, v) => {
                if checks.check(validate::header(k, v)).is_none() {
                    continue;
                }
                if !seen.insert(k.to_ascii_lowercase()) {
                    checks.refuse(Invalid::new(
                        &format!("headers.{k}"),
                        Rule::Duplicate,
                        "given twice (header names are case-insensitive)",
                    ));
                    continue;
                }
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if out.len() > validate::HEADERS_MAX {
        checks.refuse(Invalid::new(
            "headers",
            Rule::TooMany,
            format!("at most {} custom headers", validate::HEADERS_MAX),
        ));
    }
    out
}

/// A retry schedule as given, in seconds, checked.
pub(crate) fn schedule_secs(s: &Schedule) -> Result<Vec<i32>, Invalid> {
    const FIELD: &str = "retry_schedule_secs";
    match s {
        Schedule::Text(t) => validate::retry_schedule_arg(t),
        Schedule::Items(items) => {
            let secs = items
                .iter()
                .map(|i| i.seconds(FIELD))
                .collect::<Result<Vec<_>, _>>()?;
            validate::retry_schedule(&secs)
        }
    }
}

/// A new webhook's settings, every one checked.
struct ValidNew {
    name: String,
    url: String,
    secret: String,
    generated: bool,
    headers: BTreeMap<String, String>,
    schedule: Option<Vec<i32>>,
    rate: Option<i32>,
    conc: Option<i32>,
    events: Vec<String>,
    format: String,
    signature: String,
    /// With `signature` both: the key pair (given or generated).
    signing_key: Option<SigningKey>,
}

fn required(field: &str) -> Invalid {
    Invalid::new(field, Rule::Required, "is required")
}

impl Admin {
    /// The webhook named by `given`: its full id, or a unique prefix of it
    /// (at least 4 characters) among those `who` may read. How the CLI
    /// names a webhook; the operations then take the id.
    pub async fn resolve_webhook(&self, who: &Principal, given: &str) -> OpResult<Uuid> {
        let id = given.trim().to_ascii_lowercase();
        let db_ = self.db().await?;
        if let Ok(u) = Uuid::parse_str(&id) {
            access::webhook(&db_, who, u, Access::Read).await?;
            return Ok(u);
        }
        if id.len() < 4 || !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(Invalid::new(
                "webhook",
                Rule::Syntax,
                format!(
                    "`{}` is not a webhook id (or a prefix of one, at least 4 characters)",
                    access::quote(&id)
                ),
            )
            .into());
        }
        let sites = access::readable_sites(&db_, who).await?;
        let rows = db(
            db_.query(
                "SELECT id FROM webhooks WHERE id::text LIKE $1 || '%'
                   AND ($2::bigint[] IS NULL OR site_id = ANY($2)) LIMIT 2",
                &[&id, &sites],
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

    /// A page of the webhooks `who` may read, of one site or all.
    pub async fn list_webhooks(&self, who: &Principal, q: &WebhookQuery) -> OpResult<WebhookList> {
        let mut c = Checks::default();
        let limit = page_size(&mut c, q.limit.as_ref());
        let after = c.optional(given(&q.cursor), decode_cursor);
        c.done()?;
        let (limit, after) = (limit.expect("checked"), after.expect("checked"));
        let db_ = self.db().await?;
        let site = match site_of(&q.site_id, &q.site)? {
            Some((s, _)) => Some(access::site(&db_, who, &s, Access::Read).await?.id),
            None => None,
        };
        let accesses = access::site_accesses(&db_, who).await?;
        let readable: Option<Vec<i64>> = accesses.as_ref().map(|m| m.keys().copied().collect());
        let rows = db(
            db_.query(
                &format!(
                    "SELECT {WEBHOOK_COLUMNS}
                     WHERE ($1::bigint IS NULL OR w.site_id = $1) AND ($2 OR w.deleted_at IS NULL)
                       AND ($3::bigint[] IS NULL OR w.site_id = ANY($3))
                       AND ($5::text IS NULL OR (s.domain, w.inserted_at, w.id) > ($5, $6, $7))
                     ORDER BY s.domain, w.inserted_at, w.id
                     LIMIT $4"
                ),
                &[
                    &site,
                    &q.include_deleted,
                    &readable,
                    // One more than the page: tells whether another follows.
                    &(limit + 1),
                    &after.as_ref().map(|a| a.0.as_str()),
                    &after.as_ref().map(|a| a.1),
                    &after.as_ref().map(|a| a.2),
                ],
            )
            .await,
            "listing webhooks",
        )?;
        let seen = |w: WebhookView| match &accesses {
            None => w,
            Some(m) => {
                let a = m.get(&w.plausible_site_id).copied().unwrap_or(Access::None);
                w.seen_with(a)
            }
        };
        let mut webhooks: Vec<WebhookView> = rows.iter().map(webhook_view).map(seen).collect();
        let more = webhooks.len() as i64 > limit;
        webhooks.truncate(limit as usize);
        let next_cursor = more.then(|| webhooks.last().map(encode_cursor)).flatten();
        Ok(WebhookList {
            webhooks,
            next_cursor,
        })
    }

    /// One webhook with its triggers.
    pub async fn show_webhook(&self, who: &Principal, id: Uuid) -> OpResult<WebhookDetail> {
        let db_ = self.db().await?;
        let site = access::webhook(&db_, who, id, Access::Read).await?;
        Ok(WebhookDetail {
            webhook: view(&**db_, id).await?.seen_with(site.access),
            triggers: list_of(&**db_, id).await?,
        })
    }

    /// A new webhook's fields, checked into `c`; the settings once `c` is clean.
    fn check_new(&self, c: &mut Checks, n: &NewWebhook) -> impl FnOnce() -> ValidNew {
        let name = match &n.name {
            Some(v) => c.check(validate::name(v)),
            None => c.check(Err(required("name"))),
        };
        let url = match &n.url {
            Some(v) => c.check(validate::url(v, self.guard())),
            None => c.check(Err(required("url"))),
        };
        let secret = match given(&n.secret) {
            Some(s) => c.check(validate::secret(s)).map(|s| (s, false)),
            None => Some((generate_secret(), true)),
        };
        let headers = check_headers(c, &n.headers);
        let schedule = c.optional(n.retry_schedule_secs.as_ref(), schedule_secs);
        let rate = c.optional(n.rate_limit_per_sec, validate::rate_limit);
        let conc = c.optional(n.max_concurrency, validate::max_concurrency);
        // Its triggers subscribe it to what they make (migration 11).
        let events = c.check(validate::event_patterns(&n.events));
        let format = c.optional(n.format.as_deref(), validate::format);
        for t in &n.triggers {
            c.check(check_trigger(t));
        }
        let signature = c.optional(given(&n.signature), validate::signature_mode);
        let imported = c.optional(given(&n.signing_key), validate::signing_key);
        let hmac_only = signature
            .as_ref()
            .is_some_and(|s| s.as_deref().unwrap_or("hmac") == "hmac");
        if hmac_only && given(&n.signing_key).is_some() {
            c.refuse(Invalid::new(
                "signing_key",
                Rule::NotApplicable,
                "applies with \"signature\": \"both\" (an ed25519 key signs nothing for an hmac \
                 webhook)",
            ));
        }
        move || {
            let signature = signature
                .expect("checked")
                .unwrap_or_else(|| "hmac".to_string());
            let signing_key = (signature != "hmac").then(|| {
                imported
                    .expect("checked")
                    .unwrap_or_else(SigningKey::generate)
            });
            let (secret, generated) = secret.expect("checked");
            ValidNew {
                name: name.expect("checked"),
                url: url.expect("checked"),
                secret,
                generated,
                headers,
                schedule: schedule.expect("checked"),
                rate: rate.expect("checked"),
                conc: conc.expect("checked"),
                events: events.expect("checked"),
                format: format
                    .expect("checked")
                    .unwrap_or_else(|| "standard".into()),
                signature,
                signing_key,
            }
        }
    }

    /// A webhook and its triggers, in one transaction, on a site `who` manages.
    /// With `check`, the test event goes to the receiver first and a receiver
    /// that does not accept it refuses the create (see [`Admin::check_receiver`]).
    pub async fn create_webhook(&self, who: &Principal, n: NewWebhook) -> OpResult<Created> {
        let mut c = Checks::default();
        let site = match c.check(site_of(&n.site_id, &n.site)) {
            Some(None) => {
                c.refuse(Invalid::new(
                    "site_id",
                    Rule::Required,
                    "is required: the site's domain as in Plausible, or its numeric id",
                ));
                None
            }
            s => s.flatten(),
        };
        let make = self.check_new(&mut c, &n);
        let v = c.finish(make)?;
        let (site, deprecated) = site.expect("checked");
        let mut client = self.db().await?;
        let site = access::site(&client, who, &site, Access::Manage)
            .await
            .map_err(|e| blame_site(e, deprecated))?;
        let headers = serde_json::to_value(&v.headers).expect("a map of strings");
        let id = Uuid::new_v4();
        let check = if n.check {
            // No connection is held while the receiver is waited on.
            drop(client);
            let checked = self
                .check_receiver(
                    who,
                    Candidate {
                        id,
                        site_id: site.id,
                        site_domain: &site.domain,
                        url: &v.url,
                        secret: &v.secret,
                        signing_key: v.signing_key.as_ref(),
                        headers: &headers,
                        events: &v.events,
                        format: &v.format,
                    },
                )
                .await?;
            client = self.db().await?;
            Some(checked)
        } else {
            None
        };
        let tx = db(client.transaction().await, "starting a transaction")?;
        let id: Uuid = db(
            tx.query_one(
                "INSERT INTO webhooks (site_id, name, url, secret, headers, retry_schedule_secs,
                                       rate_limit_per_sec, max_concurrency, events, id, format,
                                       signature, signing_key, signing_public_key)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
                &[
                    &site.id,
                    &v.name,
                    &v.url,
                    &v.secret,
                    &headers,
                    &v.schedule,
                    &v.rate,
                    &v.conc,
                    &v.events,
                    &id,
                    &v.format,
                    &v.signature,
                    &v.signing_key.as_ref().map(|k| k.seed.as_slice()),
                    &v.signing_key.as_ref().map(|k| k.public.as_slice()),
                ],
            )
            .await,
            "creating the webhook",
        )?
        .get(0);
        let mut triggers = Vec::new();
        for t in &n.triggers {
            triggers.push(insert_trigger(&*tx, id, site.id, t).await?);
        }
        let webhook = view(&*tx, id).await?;
        db(tx.commit().await, "committing the new webhook")?;
        let mut warnings: Vec<String> = validate::secret_warning(&v.secret).into_iter().collect();
        if deprecated {
            warnings.push(SITE_DEPRECATED.into());
        }
        warnings.extend(crate::delivery::chat::Format::from_stored(&v.format).url_warning(&v.url));
        Ok(Created {
            webhook,
            warnings,
            secret: v.secret,
            secret_generated: v.generated,
            triggers,
            check,
        })
    }

    /// Changes a webhook's settings and, with `enabled`, its state, in one
    /// commit. Enabling resets its health (the failure streak and the
    /// disable reason); disabling ends what is queued for it `failed`,
    /// unsent. Nothing to change is refused.
    pub async fn update_webhook(
        &self,
        who: &Principal,
        id: Uuid,
        c: WebhookChanges,
    ) -> OpResult<WebhookView> {
        let mut checks = Checks::default();
        let name = checks.optional(c.name.as_deref(), validate::name);
        let url = checks.optional(c.url.as_deref(), |u| validate::url(u, self.guard()));
        // `headers` replaces the whole set; `set_headers` adds to it.
        let mut set = check_headers(&mut checks, &c.set_headers);
        let replace = c.headers.is_some();
        if let Some(all) = &c.headers {
            set.extend(check_headers(&mut checks, all));
        }
        let schedule: Option<Option<Option<Vec<i32>>>> = match &c.retry_schedule_secs {
            None => Some(None),
            Some(Setting::Default) => Some(Some(None)),
            Some(Setting::Value(s)) => checks.check(schedule_secs(s)).map(|v| Some(Some(v))),
        };
        let rate = setting(
            &mut checks,
            &c.rate_limit_per_sec,
            "rate_limit_per_sec",
            validate::rate_limit,
        );
        let conc = setting(
            &mut checks,
            &c.max_concurrency,
            "max_concurrency",
            validate::max_concurrency,
        );
        let signature = checks.optional(given(&c.signature), validate::signature_mode);
        let events = checks.optional(c.events.as_deref(), validate::event_patterns);
        let format = checks.optional(c.format.as_deref(), validate::format);
        let subscribe = checks.check(validate::event_patterns(&c.subscribe));
        let unsubscribe = checks.check(validate::event_patterns(&c.unsubscribe));
        let reason = match (c.enabled, given(&c.disabled_reason)) {
            (Some(false), r) => checks.check(disable_reason(r)),
            (_, Some(_)) => {
                checks.refuse(Invalid::new(
                    "disabled_reason",
                    Rule::NotApplicable,
                    "applies only with \"enabled\": false (disabling the webhook)",
                ));
                None
            }
            (_, None) => None,
        };
        checks.done()?;
        let (events, subscribe, unsubscribe) = (
            events.expect("checked"),
            subscribe.expect("checked"),
            unsubscribe.expect("checked"),
        );
        let changes_events = events.is_some() || !subscribe.is_empty() || !unsubscribe.is_empty();
        let format = format.expect("checked");
        let signature = signature.expect("checked");
        // Used only if the webhook has no key pair yet (UPDATE below).
        let new_key = signature
            .as_deref()
            .filter(|s| *s != "hmac")
            .map(|_| SigningKey::generate());
        let (name, url, schedule, rate, conc) = (
            name.expect("checked"),
            url.expect("checked"),
            schedule.expect("checked"),
            rate.expect("checked"),
            conc.expect("checked"),
        );
        let changes_settings = name.is_some()
            || url.is_some()
            || !set.is_empty()
            || !c.remove_headers.is_empty()
            || c.clear_headers
            || replace
            || schedule.is_some()
            || rate.is_some()
            || conc.is_some()
            || format.is_some()
            || signature.is_some();
        if !changes_settings && !changes_events && c.enabled.is_none() {
            return Err(Invalid::new(
                "update",
                Rule::Required,
                "nothing to change: give at least one setting to change (name, url, headers, \
                 retry schedule, rate limit, max concurrency, events, format, signature) or enable or \
                 disable it",
            )
            .into());
        }
        let mut client = self.db().await?;
        access::webhook(&client, who, id, Access::Manage).await?;
        let by = match c.enabled {
            Some(false) => disabled_by(&client, who).await?,
            _ => String::new(),
        };
        let tx = db(client.transaction().await, "starting a transaction")?;
        // Locked: a concurrent delete or change waits for this commit.
        db(
            tx.execute("SELECT 1 FROM webhooks WHERE id = $1 FOR UPDATE", &[&id])
                .await,
            "locking the webhook",
        )?;
        let w = view(&*tx, id).await?;
        if w.deleted_at.is_some() {
            return Err(deleted(&w));
        }
        if changes_settings {
            // Header names are case-insensitive: a header set anew replaces any spelling of it.
            let mut drop: Vec<String> = c
                .remove_headers
                .iter()
                .chain(set.keys())
                .map(|h| h.to_ascii_lowercase())
                .collect();
            drop.sort();
            drop.dedup();
            let set = serde_json::to_value(&set).expect("a map of strings");
            let updated = db(
                tx.execute(
                    "WITH h AS (
                        SELECT (SELECT coalesce(jsonb_object_agg(k, v), '{}'::jsonb)
                                FROM jsonb_each(CASE WHEN $4 THEN '{}'::jsonb ELSE w.headers END) e(k, v)
                                WHERE lower(k) <> ALL ($5::text[])) || $6::jsonb AS headers
                        FROM webhooks w WHERE w.id = $1 FOR UPDATE)
                     UPDATE webhooks w SET
                        name = coalesce($2, w.name),
                        url = coalesce($3, w.url),
                        headers = h.headers,
                        retry_schedule_secs = CASE WHEN $7 THEN $8::int[] ELSE w.retry_schedule_secs END,
                        rate_limit_per_sec = CASE WHEN $9 THEN $10::int ELSE w.rate_limit_per_sec END,
                        max_concurrency = CASE WHEN $11 THEN $12::int ELSE w.max_concurrency END,
                        format = coalesce($14, w.format),
                        signature = coalesce($15, w.signature),
                        signing_key = coalesce(w.signing_key, $16),
                        signing_public_key = coalesce(w.signing_public_key, $17)
                     FROM h
                     WHERE w.id = $1 AND (SELECT count(*) FROM jsonb_object_keys(h.headers)) <= $13",
                    &[
                        &id,
                        &name,
                        &url,
                        &(c.clear_headers || replace),
                        &drop,
                        &set,
                        &schedule.is_some(),
                        &schedule.clone().flatten(),
                        &rate.is_some(),
                        &rate.flatten(),
                        &conc.is_some(),
                        &conc.flatten(),
                        &(validate::HEADERS_MAX as i64),
                        &format,
                        &signature,
                        &new_key.as_ref().map(|k| k.seed.as_slice()),
                        &new_key.as_ref().map(|k| k.public.as_slice()),
                    ],
                )
                .await,
                "updating the webhook",
            )?;
            if updated == 0 {
                return Err(Invalid::new(
                    "headers",
                    Rule::TooMany,
                    format!(
                        "at most {} custom headers in all; remove some first",
                        validate::HEADERS_MAX
                    ),
                )
                .into());
            }
        }
        if changes_events {
            set_events(&*tx, &w, events, &subscribe, &unsubscribe).await?;
        }
        match c.enabled {
            Some(true) => {
                db(
                    tx.execute(
                        // Also for a webhook still enabled but failing: enable resets its health.
                        "UPDATE webhooks SET enabled = true, consecutive_failures = 0, failing_since = NULL,
                                             disabled_reason = NULL, disabled_at = NULL
                         WHERE id = $1",
                        &[&id],
                    )
                    .await,
                    "enabling the webhook",
                )?;
            }
            Some(false) => {
                db(
                    tx.execute(
                        "UPDATE webhooks SET enabled = false, disabled_reason = $2, disabled_at = now()
                         WHERE id = $1 AND enabled",
                        &[&id, &match reason.expect("checked with enabled: false") {
                            Some(r) => format!("{by}: {r}"),
                            None => by.clone(),
                        }],
                    )
                    .await,
                    "disabling the webhook",
                )?;
            }
            None => {}
        }
        let w = view(&*tx, id).await?;
        db(tx.commit().await, "committing the change")?;
        Ok(w)
    }

    /// Turns a webhook back on; its health starts afresh.
    pub async fn enable_webhook(&self, who: &Principal, id: Uuid) -> OpResult<WebhookView> {
        let on = WebhookChanges {
            enabled: Some(true),
            ..Default::default()
        };
        self.update_webhook(who, id, on).await
    }

    /// Stops deliveries to a webhook: those still queued end `failed` with
    /// the reason, unsent, and nothing new is enqueued for it.
    pub async fn disable_webhook(
        &self,
        who: &Principal,
        id: Uuid,
        reason: Option<String>,
    ) -> OpResult<WebhookView> {
        let off = WebhookChanges {
            enabled: Some(false),
            disabled_reason: reason,
            ..Default::default()
        };
        self.update_webhook(who, id, off).await
    }

    /// Soft delete: nothing is sent or enqueued for it any more; restoring
    /// undoes it within `retention.days`, after which the cleaner purges it.
    pub async fn delete_webhook(&self, who: &Principal, id: Uuid) -> OpResult<Deleted> {
        let db_ = self.db().await?;
        manageable(&db_, who, id).await?;
        db(
            db_.execute(
                "UPDATE webhooks SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL",
                &[&id],
            )
            .await,
            "deleting the webhook",
        )?;
        let webhook = view(&**db_, id).await?;
        let purge_after = webhook.deleted_at.unwrap_or_else(OffsetDateTime::now_utc)
            + time::Duration::days(i64::from(self.retention_days()));
        Ok(Deleted {
            webhook,
            purge_after,
        })
    }

    pub async fn restore_webhook(&self, who: &Principal, id: Uuid) -> OpResult<WebhookView> {
        let db_ = self.db().await?;
        access::webhook(&db_, who, id, Access::Manage).await?;
        let w = view(&**db_, id).await?;
        if w.deleted_at.is_none() {
            return Err(OpError::Conflict(format!(
                "webhook {} is not deleted",
                w.id
            )));
        }
        let days = self.retention_days();
        let n = db(
            db_.execute(
                "UPDATE webhooks SET deleted_at = NULL
                 WHERE id = $1 AND deleted_at > now() - make_interval(days => $2)",
                &[&id, &(days as i32)],
            )
            .await,
            "restoring the webhook",
        )?;
        if n == 0 {
            return Err(OpError::Conflict(format!(
                "webhook {} was deleted more than {days} days ago (retention.days) and is due to be purged; create it anew",
                w.id
            )));
        }
        view(&**db_, id).await
    }

    /// A new secret; the current one keeps signing beside it for the grace
    /// period (0: at once only the new one). Every other setting is kept.
    pub async fn rotate_secret(
        &self,
        who: &Principal,
        id: Uuid,
        r: RotateSecret,
    ) -> OpResult<Rotated> {
        let mut c = Checks::default();
        let grace = match &r.grace_secs {
            None => Some(DEFAULT_ROTATION_GRACE_SECS),
            Some(g) => c.check(g.seconds("grace_secs").and_then(grace_secs)),
        };
        let secret = match given(&r.secret) {
            Some(s) => c.check(validate::secret(s)),
            None => Some(generate_secret()),
        };
        c.done()?;
        let (grace, secret) = (grace.expect("checked"), secret.expect("checked"));
        let db_ = self.db().await?;
        manageable(&db_, who, id).await?;
        let row = db(
            db_.query_one(
                "UPDATE webhooks SET
                    previous_secret = CASE WHEN $3::float8 > 0 THEN secret END,
                    previous_secret_expires_at = CASE WHEN $3::float8 > 0 THEN now() + make_interval(secs => $3::float8) END,
                    secret = $2
                 WHERE id = $1
                 RETURNING previous_secret_expires_at",
                &[&id, &secret, &(grace as f64)],
            )
            .await,
            "rotating the secret",
        )?;
        Ok(Rotated {
            webhook_id: id,
            warnings: validate::secret_warning(&secret).into_iter().collect(),
            secret,
            previous_secret_expires_at: row.get(0),
        })
    }
}

/// Sets webhook `w`'s subscriptions: `events` (all of them) or its own with
/// `subscribe` added and `unsubscribe` dropped. What its enabled triggers
/// make must stay among them: dropping it would silence them.
async fn set_events(
    tx: &impl GenericClient,
    w: &WebhookView,
    events: Option<Vec<String>>,
    subscribe: &[String],
    unsubscribe: &[String],
) -> OpResult<()> {
    let mut new = events.unwrap_or_else(|| w.events.clone());
    new.retain(|e| !unsubscribe.contains(e));
    for s in subscribe {
        if !new.contains(s) {
            new.push(s.clone());
        }
    }
    let new = validate::event_patterns(&new)?;
    let left_out: Vec<String> = db(
        tx.query(
            "SELECT DISTINCT e.t
             FROM webhook_triggers,
                  unnest(plausible_webhooks_trigger_event_types(trigger_type, delivery_mode)) AS e(t)
             WHERE webhook_id = $1 AND enabled
               AND NOT plausible_webhooks_subscribed($2, e.t)
             ORDER BY 1",
            &[&w.id, &new],
        )
        .await,
        "checking the webhook's triggers against its subscriptions",
    )?
    .iter()
    .map(|r| r.get(0))
    .collect();
    if !left_out.is_empty() {
        return Err(Invalid::new(
            "events",
            Rule::Required,
            format!(
                "its triggers make {}: keep subscribed to {} (or remove those triggers first)",
                left_out.join(", "),
                if left_out.len() == 1 { "it" } else { "them" }
            ),
        )
        .into());
    }
    db(
        tx.execute(
            "UPDATE webhooks SET events = $2 WHERE id = $1",
            &[&w.id, &new],
        )
        .await,
        "setting the webhook's subscriptions",
    )?;
    Ok(())
}

/// A refusal of a site given by the deprecated `site` blames `site`, the
/// name the caller wrote.
fn blame_site(e: OpError, deprecated: bool) -> OpError {
    match e {
        OpError::Invalid(mut i) if deprecated => {
            i.rename("site_id", "site");
            OpError::Invalid(i)
        }
        e => e,
    }
}

pub(crate) fn grace_secs(v: i64) -> Result<i64, Invalid> {
    if !(0..=MAX_ROTATION_GRACE_SECS).contains(&v) {
        return Err(Invalid::new(
            "grace_secs",
            Rule::OutOfRange,
            format!("must be between 0 and {MAX_ROTATION_GRACE_SECS} seconds (30 days)"),
        ));
    }
    Ok(v)
}

/// A limit that may go back to the default, as `update` reads it: None
/// (refused, kept in `checks`), Some(None) (not given), Some(Some(None))
/// (back to the default), Some(Some(Some(v))) (set).
fn setting(
    checks: &mut Checks,
    s: &Option<Setting<crate::admin::inputs::Num>>,
    field: &str,
    rule: fn(i64) -> Result<i32, Invalid>,
) -> Option<Option<Option<i32>>> {
    match s {
        None => Some(None),
        Some(Setting::Default) => Some(Some(None)),
        Some(Setting::Value(n)) => checks
            .check(n.number(field).and_then(rule))
            .map(|v| Some(Some(v))),
    }
}

/// Who turned a webhook off, as its `disabled_reason` begins: an operator,
/// the user by their email, or a portal link.
async fn disabled_by(db_: &tokio_postgres::Client, who: &Principal) -> OpResult<String> {
    Ok(match who {
        Principal::Operator => OPERATOR_DISABLED.to_string(),
        Principal::Link { .. } => "by someone with a portal link".to_string(),
        Principal::User { user_id, .. } => {
            let email: Option<String> = db(
                db_.query_opt("SELECT email::text FROM users WHERE id = $1", &[user_id])
                    .await,
                "reading the user's email",
            )?
            .map(|r| r.get(0));
            format!("by {}", email.unwrap_or_else(|| format!("user {user_id}")))
        }
    })
}

/// A disable reason as given, checked (who disabled it is added when stored).
fn disable_reason(reason: Option<&str>) -> Result<Option<String>, Invalid> {
    match reason {
        Some(r) if r.chars().count() > 255 => Err(Invalid::new(
            "disabled_reason",
            Rule::TooLong,
            "a disable reason is at most 255 characters",
        )),
        Some(r) if r.chars().any(char::is_control) => Err(Invalid::new(
            "disabled_reason",
            Rule::Encoding,
            "a disable reason is one line of text without control characters",
        )),
        Some(r) => Ok(Some(r.to_string())),
        None => Ok(None),
    }
}
