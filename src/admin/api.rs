//! The REST API under `/api/`: JSON in and out, the same validation and
//! operations as the CLI (`super::validate`, `super::ops`), and access by
//! Plausible's roles (`super::auth`).
//!
//! | method | path | access |
//! | --- | --- | --- |
//! | GET | /api/webhooks[?site_id=&include_deleted=] | read (lists the sites the caller can read) |
//! | POST | /api/webhooks | manage on the body's `site_id` |
//! | GET | /api/webhooks/:id | read |
//! | PUT, PATCH | /api/webhooks/:id | manage |
//! | DELETE | /api/webhooks/:id | manage (soft delete; `restore` undoes it) |
//! | POST | /api/webhooks/:id/restore, /rotate-secret, /test, /replay | manage |
//! | GET, POST | /api/webhooks/:id/triggers | read, manage |
//! | DELETE | /api/webhooks/:id/triggers/:trigger_id | manage |
//! | GET | /api/webhooks/:id/deliveries[?status=&event=&since=&limit=&cursor=] | read |
//! | GET | /api/webhooks/:id/deliveries/:delivery_id | read |
//! | POST | /api/webhooks/:id/deliveries/:delivery_id/retry[?force=true] | manage |
//!
//! Bodies are the ops' own (`ops::WebhookList`, ...), which the CLI's `--json`
//! prints too; `site_id` is a site's domain (docs/api.md#names).
//!
//! Errors: `{"error": {"code", "message", "field"?}}` (`ops::ErrorBody`, the
//! CLI's `--json` refusals alike) with 400 (not JSON),
//! 401 (no or unknown token; `invalid_api_key`: a team-less key on a set-up
//! team's site), 402 (`site_locked`: the site or its team is locked), 403
//! (role too low), 404 (missing, or on a site the caller has no role on: not
//! told apart), 405, 409 (state forbids it),
//! 413, 422 (a field breaks a rule; `code` is the rule), 429
//! (`too_many_tests`, with Retry-After: see `super::test_slots`), 500, 503.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tokio_postgres::Client;
use uuid::Uuid;

use super::auth::{self, Access, Principal};
use super::ops::{self, OpError, WebhookView};
use super::state::{json_response, AdminState, HttpResponse};
use super::validate::{self, Invalid, Rule};

/// Deliveries per page: default and most.
pub const PAGE_DEFAULT: i64 = 50;
pub const PAGE_MAX: i64 = 1000;

/// An answer that is not a success.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
    field: Option<String>,
    /// Seconds for a `Retry-After` header (429).
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.to_string(),
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    fn response(&self) -> HttpResponse {
        let body = ops::ErrorBody::new(&self.code, &self.message, self.field.as_deref());
        let mut r = json_response(
            self.status,
            &serde_json::to_value(&body).expect("an error body serializes"),
        );
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(
                hyper::header::RETRY_AFTER,
                hyper::header::HeaderValue::from(s),
            );
        }
        r
    }
}

impl From<Invalid> for ApiError {
    fn from(i: Invalid) -> ApiError {
        OpError::Invalid(i).into()
    }
}

/// The refusal's body is the one the CLI prints (`OpError::body`); the
/// status says its kind.
impl From<OpError> for ApiError {
    fn from(e: OpError) -> ApiError {
        let status = match &e {
            OpError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            OpError::NotFound(_) => StatusCode::NOT_FOUND,
            OpError::Conflict(_) => StatusCode::CONFLICT,
            OpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let ops::ErrorDetail {
            code,
            message,
            field,
        } = e.body(INTERNAL_MESSAGE).error;
        if let OpError::Internal(cause) = e {
            log_internal(&cause);
        }
        ApiError {
            status,
            code,
            message,
            field,
            retry_after: None,
        }
    }
}

const INTERNAL_MESSAGE: &str = "the operation failed on the server; the daemon's log has the cause";

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        internal(e)
    }
}

/// Logged; the client gets no internals.
fn internal(e: anyhow::Error) -> ApiError {
    OpError::Internal(e).into()
}

/// A database error is logged by code, constraint and message only: its
/// DETAIL can quote a whole row, secrets included.
fn log_internal(e: &anyhow::Error) {
    let text = e
        .chain()
        .map(|c| match c.downcast_ref::<tokio_postgres::Error>() {
            Some(pg) => match pg.as_db_error() {
                Some(db) => format!(
                    "{} {}{}",
                    db.code().code(),
                    db.message(),
                    db.constraint()
                        .map(|c| format!(" (constraint {c})"))
                        .unwrap_or_default()
                ),
                None => pg.to_string(),
            },
            None => c.to_string(),
        })
        .collect::<Vec<_>>()
        .join(": ");
    tracing::error!(error = text, "admin API: internal error");
}

type ApiResult = Result<HttpResponse, ApiError>;

fn ok<T: Serialize>(status: StatusCode, v: &T) -> ApiResult {
    Ok(json_response(
        status,
        &serde_json::to_value(v).map_err(anyhow::Error::from)?,
    ))
}

pub async fn handle(
    state: &AdminState,
    parts: hyper::http::request::Parts,
    body: Bytes,
) -> HttpResponse {
    match route(state, &parts, &body).await {
        Ok(r) => r,
        Err(e) => e.response(),
    }
}

async fn route(state: &AdminState, parts: &hyper::http::request::Parts, body: &Bytes) -> ApiResult {
    let mut db = state.pool.get().await.map_err(|e| {
        tracing::warn!(
            error = crate::logging::error_line(&e),
            "admin API: no database connection"
        );
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database cannot be reached; try again shortly",
        )
    })?;
    let authorization = parts
        .headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let who = match state.auth.authenticate(&db, authorization).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                e.message(),
            ))
        }
        Err(e) => {
            tracing::warn!(
                error = crate::logging::error_line(e.as_ref()),
                "admin API: cannot check a token"
            );
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the token could not be checked; try again shortly",
            ));
        }
    };
    let path = parts.uri.path().trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let m = &parts.method;
    let c: &mut Client = &mut db;
    match segs.as_slice() {
        ["api", "webhooks"] => match *m {
            Method::GET => list_webhooks(c, &who, &query).await,
            Method::POST => create_webhook(state, c, &who, body).await,
            _ => Err(method_not_allowed("GET, POST")),
        },
        ["api", "webhooks", id] => match *m {
            Method::GET => get_webhook(c, &who, id).await,
            Method::PUT | Method::PATCH => update_webhook(state, c, &who, id, body).await,
            Method::DELETE => {
                let w = webhook_for(c, &who, id, Access::Manage).await?;
                let d = ops::delete(c, &w.id.to_string(), state.cfg.retention.days).await?;
                ok(StatusCode::OK, &d)
            }
            _ => Err(method_not_allowed("GET, PUT, PATCH, DELETE")),
        },
        ["api", "webhooks", id, action] => match (m, *action) {
            (&Method::POST, "restore") => {
                let w = webhook_for(c, &who, id, Access::Manage).await?;
                let v = ops::restore(c, &w.id.to_string(), state.cfg.retention.days).await?;
                ok(StatusCode::OK, &v)
            }
            (&Method::POST, "rotate-secret") => rotate_secret(c, &who, id, body).await,
            (&Method::POST, "test") => {
                let w = webhook_for(c, &who, id, Access::Manage).await?;
                drop(db);
                // Refused at once beyond a bound: waiting would queue behind
                // tests that may hang until their timeout.
                let _slot = state
                    .test_slots
                    .try_acquire(&who, w.plausible_site_id)
                    .map_err(|b| {
                        let mut e = ApiError::new(
                            StatusCode::TOO_MANY_REQUESTS,
                            "too_many_tests",
                            b.message(),
                        );
                        // A slot frees when a test in flight answers: within its timeout.
                        e.retry_after =
                            Some(state.test_sender.timeout().as_secs_f64().ceil().max(1.0) as u64);
                        e
                    })?;
                let r = ops::send_test(&state.pool, &state.test_sender, &w.id.to_string()).await?;
                ok(StatusCode::OK, &r)
            }
            (&Method::POST, "replay") => replay(c, &who, id, body).await,
            (&Method::GET, "triggers") => {
                let w = webhook_for(c, &who, id, Access::Read).await?;
                let t = ops::list_triggers(c, &w.id.to_string()).await?;
                ok(StatusCode::OK, &t)
            }
            (&Method::POST, "triggers") => {
                let w = webhook_for(c, &who, id, Access::Manage).await?;
                let mut f = Fields::parse(body)?;
                let t = f.trigger()?;
                f.finish()?;
                let v = ops::add_trigger(c, &w.id.to_string(), &t).await?;
                ok(StatusCode::CREATED, &v)
            }
            (&Method::GET, "deliveries") => list_deliveries(c, &who, id, &query).await,
            (_, "restore" | "rotate-secret" | "test" | "replay") => Err(method_not_allowed("POST")),
            (_, "triggers") => Err(method_not_allowed("GET, POST")),
            (_, "deliveries") => Err(method_not_allowed("GET")),
            _ => Err(no_endpoint()),
        },
        ["api", "webhooks", id, "triggers", trigger] => match *m {
            Method::DELETE => {
                let w = webhook_for(c, &who, id, Access::Manage).await?;
                let t = Uuid::parse_str(trigger).map_err(|_| trigger_not_found(trigger))?;
                let ours = ops::list_triggers(c, &w.id.to_string()).await?;
                if !ours.triggers.iter().any(|x| x.id == t) {
                    return Err(trigger_not_found(trigger));
                }
                let v = ops::remove_trigger(c, &t.to_string()).await?;
                ok(StatusCode::OK, &v)
            }
            _ => Err(method_not_allowed("DELETE")),
        },
        ["api", "webhooks", id, "deliveries", delivery] => match *m {
            Method::GET => {
                let w = webhook_for(c, &who, id, Access::Read).await?;
                let d = delivery_of(c, &w, delivery).await?;
                ok(StatusCode::OK, &d)
            }
            _ => Err(method_not_allowed("GET")),
        },
        ["api", "webhooks", id, "deliveries", delivery, "retry"] => match *m {
            Method::POST => {
                let w = webhook_for(c, &who, id, Access::Manage).await?;
                let d = delivery_of(c, &w, delivery).await?;
                let mut f = Fields::parse_or_empty(body)?;
                let force = f.bool("force")?.unwrap_or(false) || flag(&query, "force")?;
                f.finish()?;
                let v = ops::retry(c, &d.delivery.id.to_string(), force).await?;
                ok(StatusCode::OK, &v)
            }
            _ => Err(method_not_allowed("POST")),
        },
        _ => Err(no_endpoint()),
    }
}

fn no_endpoint() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; the API is under /api/webhooks (see the README)",
    )
}

fn method_not_allowed(allowed: &str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this endpoint allows {allowed}"),
    )
}

fn webhook_not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no webhook {id} (give its full id, as GET /api/webhooks lists them)"),
    )
}

fn trigger_not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("this webhook has no trigger {id}"),
    )
}

fn forbidden(site: &str, need: Access) -> ApiError {
    let what = match need {
        Access::Manage => "change its webhooks (owner, admin or editor may)",
        _ => "read its webhooks (owner, admin, editor or viewer may)",
    };
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("your role on site {site} does not let you {what}"),
    )
}

/// The webhook `id` when the caller may do `need` on its site. A caller with
/// no role on the site gets the same 404 as for a webhook that does not exist.
async fn webhook_for(
    db: &Client,
    who: &Principal,
    id: &str,
    need: Access,
) -> Result<WebhookView, ApiError> {
    let uuid = Uuid::parse_str(id).map_err(|_| webhook_not_found(id))?;
    let w = match ops::show(db, &uuid.to_string()).await {
        Err(OpError::NotFound(_)) => return Err(webhook_not_found(id)),
        r => r?,
    };
    let access = auth::site_access(db, who, w.plausible_site_id).await?;
    if access == Access::None {
        return Err(webhook_not_found(id));
    }
    if let Some(r) = auth::site_refusal(db, who, w.plausible_site_id).await? {
        return Err(refused(r));
    }
    if access < need {
        return Err(forbidden(&w.site_id, need));
    }
    Ok(w)
}

/// A site named by domain or id, when the caller may do `need` on it.
async fn site_for(
    db: &Client,
    who: &Principal,
    site: &str,
    need: Access,
) -> Result<ops::Site, ApiError> {
    let s = ops::site(db, site).await?;
    let access = auth::site_access(db, who, s.id).await?;
    if access == Access::None {
        // As for a site that does not exist: no role, no hint that it does.
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no site `{site}` (by domain or id) that you may see"),
        ));
    }
    if let Some(r) = auth::site_refusal(db, who, s.id).await? {
        return Err(refused(r));
    }
    if access < need {
        return Err(forbidden(&s.domain, need));
    }
    Ok(s)
}

/// As Plausible answers: 401 for a key not valid on the site, 402 for a locked site.
fn refused(r: auth::Refusal) -> ApiError {
    let (status, code) = match r {
        auth::Refusal::LegacyKeyOnTeamSite => (StatusCode::UNAUTHORIZED, "invalid_api_key"),
        auth::Refusal::SiteLocked => (StatusCode::PAYMENT_REQUIRED, "site_locked"),
    };
    ApiError::new(status, code, r.message())
}

async fn delivery_of(
    db: &Client,
    w: &WebhookView,
    id: &str,
) -> Result<ops::DeliveryDetail, ApiError> {
    let missing = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "webhook {} has no delivery {id} (deliveries are pruned after retention.days)",
                w.id
            ),
        )
    };
    let uuid = Uuid::parse_str(id).map_err(|_| missing())?;
    let d = match ops::show_delivery(db, &uuid.to_string()).await {
        Err(OpError::NotFound(_)) => return Err(missing()),
        r => r?,
    };
    if d.delivery.webhook_id != w.id {
        return Err(missing());
    }
    Ok(d)
}

/// `site`, the name `site_id` had before one vocabulary (docs/api.md#names),
/// is still read, this release only, with a `Warning` header saying so.
const SITE_DEPRECATED: &str =
    "`site` is deprecated and read this release only: name the site by `site_id` (its domain or numeric id)";

/// A refusal of a site given as the deprecated `site` blames `site`, the
/// name the client wrote.
fn as_given(mut e: ApiError, deprecated: bool) -> ApiError {
    if deprecated && e.field.as_deref() == Some("site_id") {
        e.field = Some("site".into());
    }
    e
}

fn with_deprecation(mut r: HttpResponse, deprecated: bool) -> HttpResponse {
    if deprecated {
        let v = format!("299 plausible-webhooks \"{SITE_DEPRECATED}\"");
        if let Ok(v) = hyper::header::HeaderValue::from_str(&v) {
            r.headers_mut().insert(hyper::header::WARNING, v);
        }
    }
    r
}

async fn list_webhooks(db: &Client, who: &Principal, q: &HashMap<String, String>) -> ApiResult {
    let include_deleted = flag(q, "include_deleted")?;
    let known = ["site_id", "site", "include_deleted"];
    if let Some(k) = q.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(Invalid::new(
            k,
            Rule::NotApplicable,
            "unknown query parameter; use site_id, include_deleted",
        )
        .into());
    }
    let deprecated = q.contains_key("site") && !q.contains_key("site_id");
    let site = match q.get("site_id").or(q.get("site")) {
        Some(s) => Some(
            site_for(db, who, s, Access::Read)
                .await
                .map_err(|e| as_given(e, deprecated))?,
        ),
        None => None,
    };
    // A Plausible key lists only the sites it may read, filtered in SQL.
    let list = ops::list(
        db,
        &ops::ListFilter {
            site: site.map(|s| s.id.to_string()),
            include_deleted,
            site_ids: auth::readable_sites(db, who).await?,
        },
    )
    .await?;
    Ok(with_deprecation(ok(StatusCode::OK, &list)?, deprecated))
}

async fn get_webhook(db: &Client, who: &Principal, id: &str) -> ApiResult {
    let w = webhook_for(db, who, id, Access::Read).await?;
    ok(
        StatusCode::OK,
        &ops::show_detail(db, &w.id.to_string()).await?,
    )
}

async fn create_webhook(
    state: &AdminState,
    db: &mut Client,
    who: &Principal,
    body: &Bytes,
) -> ApiResult {
    let mut f = Fields::parse(body)?;
    let (site, deprecated) = f.site()?;
    let new = ops::NewWebhook {
        site: site.clone(),
        name: f.required_str("name")?,
        url: f.required_str("url")?,
        secret: f.str("secret")?,
        headers: f.headers()?.unwrap_or_default(),
        retry_schedule_secs: f.int_list("retry_schedule_secs")?.flatten(),
        rate_limit_per_sec: f.int("rate_limit_per_sec")?.flatten(),
        max_concurrency: f.int("max_concurrency")?.flatten(),
        triggers: f.triggers()?,
    };
    f.finish()?;
    let s = site_for(db, who, &site, Access::Manage)
        .await
        .map_err(|e| as_given(e, deprecated))?;
    let new = ops::NewWebhook {
        site: s.id.to_string(),
        ..new
    };
    let mut created = ops::create(db, &state.guard, new).await?;
    if deprecated {
        created.warnings.push(SITE_DEPRECATED.into());
    }
    Ok(with_deprecation(
        ok(StatusCode::CREATED, &created)?,
        deprecated,
    ))
}

async fn update_webhook(
    state: &AdminState,
    db: &Client,
    who: &Principal,
    id: &str,
    body: &Bytes,
) -> ApiResult {
    let mut f = Fields::parse(body)?;
    let mut c = ops::WebhookChanges {
        name: f.str("name")?,
        url: f.str("url")?,
        retry_schedule_secs: f.int_list("retry_schedule_secs")?,
        rate_limit_per_sec: f.int("rate_limit_per_sec")?,
        max_concurrency: f.int("max_concurrency")?,
        ..Default::default()
    };
    // `headers` replaces the whole set (null or {} clears it).
    if f.has("headers") {
        c.clear_headers = true;
        c.set_headers = f.headers()?.unwrap_or_default();
    }
    let enabled = f.bool("enabled")?;
    let reason = f.str("disabled_reason")?;
    f.finish()?;
    let w = webhook_for(db, who, id, Access::Manage).await?;
    let id = w.id.to_string();
    let changes_settings = c.name.is_some()
        || c.url.is_some()
        || c.clear_headers
        || c.retry_schedule_secs.is_some()
        || c.rate_limit_per_sec.is_some()
        || c.max_concurrency.is_some();
    let mut view = w;
    if changes_settings {
        view = ops::update(db, &state.guard, &id, &c).await?;
    }
    match enabled {
        Some(true) => view = ops::enable(db, &id).await?,
        Some(false) => view = ops::disable(db, &id, reason.as_deref()).await?,
        None => {}
    }
    ok(StatusCode::OK, &view)
}

async fn rotate_secret(db: &Client, who: &Principal, id: &str, body: &Bytes) -> ApiResult {
    let mut f = Fields::parse_or_empty(body)?;
    let secret = f.str("secret")?;
    let grace = f
        .int("grace_secs")?
        .flatten()
        .unwrap_or(ops::DEFAULT_ROTATION_GRACE_SECS);
    f.finish()?;
    let w = webhook_for(db, who, id, Access::Manage).await?;
    let r = ops::rotate_secret(db, &w.id.to_string(), secret.as_deref(), grace).await?;
    ok(StatusCode::OK, &r)
}

async fn replay(db: &Client, who: &Principal, id: &str, body: &Bytes) -> ApiResult {
    let now = OffsetDateTime::now_utc();
    let mut f = Fields::parse(body)?;
    let since = f.required_str("since")?;
    let until = f.str("until")?;
    let event_type = f.str("event")?;
    let include_success = f.bool("include_success")?.unwrap_or(false);
    let dry_run = f.bool("dry_run")?.unwrap_or(false);
    f.finish()?;
    let r = ops::Replay {
        webhook: String::new(),
        since: validate::since("since", &since, now)?,
        until: until
            .map(|u| validate::since("until", &u, now))
            .transpose()?,
        event_type,
        include_success,
        dry_run,
    };
    let w = webhook_for(db, who, id, Access::Manage).await?;
    let v = ops::replay(
        db,
        &ops::Replay {
            webhook: w.id.to_string(),
            ..r
        },
    )
    .await?;
    ok(StatusCode::OK, &v)
}

async fn list_deliveries(
    db: &Client,
    who: &Principal,
    id: &str,
    q: &HashMap<String, String>,
) -> ApiResult {
    let known = ["status", "event", "since", "limit", "cursor"];
    if let Some(k) = q.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(Invalid::new(
            k,
            Rule::NotApplicable,
            format!("unknown query parameter; use {}", known.join(", ")),
        )
        .into());
    }
    let limit = match q.get("limit") {
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=PAGE_MAX).contains(l))
            .ok_or_else(|| {
                Invalid::new(
                    "limit",
                    Rule::OutOfRange,
                    format!("must be a whole number from 1 to {PAGE_MAX}"),
                )
            })?,
        None => PAGE_DEFAULT,
    };
    let since = q
        .get("since")
        .map(|s| validate::since("since", s, OffsetDateTime::now_utc()))
        .transpose()?;
    let w = webhook_for(db, who, id, Access::Read).await?;
    let page = ops::list_deliveries(
        db,
        &ops::DeliveryFilter {
            webhook: Some(w.id.to_string()),
            status: q.get("status").cloned(),
            event_type: q.get("event").cloned(),
            since,
            limit: Some(limit),
            cursor: q.get("cursor").cloned(),
        },
    )
    .await?;
    ok(StatusCode::OK, &page)
}

fn flag(q: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match q.get(name).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(_) => Err(Invalid::new(name, Rule::Syntax, "must be true or false").into()),
    }
}

/// The fields of a JSON object body, taken one by one; what is left at
/// `finish` is an unknown field (a typo would otherwise be ignored silently).
#[derive(Debug)]
struct Fields(Map<String, Value>);

fn wrong_type(field: &str, want: &str) -> ApiError {
    ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "wrong_type".into(),
        message: format!("must be {want}"),
        field: Some(field.to_string()),
        retry_after: None,
    }
}

impl Fields {
    fn parse(body: &Bytes) -> Result<Fields, ApiError> {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => Ok(Fields(m)),
            Ok(_) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_json",
                "the body must be a JSON object",
            )),
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_json",
                format!("the body is not valid JSON ({e})"),
            )),
        }
    }

    fn parse_or_empty(body: &Bytes) -> Result<Fields, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Fields(Map::new()));
        }
        Self::parse(body)
    }

    fn has(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }

    fn finish(self) -> Result<(), ApiError> {
        match self.0.keys().next() {
            Some(k) => Err(ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "unknown_field".into(),
                message: "this endpoint does not take this field".into(),
                field: Some(k.clone()),
                retry_after: None,
            }),
            None => Ok(()),
        }
    }

    fn str(&mut self, k: &str) -> Result<Option<String>, ApiError> {
        match self.0.remove(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(wrong_type(k, "a string")),
        }
    }

    fn required_str(&mut self, k: &str) -> Result<String, ApiError> {
        self.str(k)?
            .ok_or_else(|| Invalid::new(k, Rule::Required, "is required").into())
    }

    fn bool(&mut self, k: &str) -> Result<Option<bool>, ApiError> {
        match self.0.remove(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(wrong_type(k, "true or false")),
        }
    }

    /// Absent: None; null: Some(None) (back to the default).
    fn int(&mut self, k: &str) -> Result<Option<Option<i64>>, ApiError> {
        match self.0.remove(k) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(|v| Some(Some(v)))
                .ok_or_else(|| wrong_type(k, "a whole number")),
            Some(_) => Err(wrong_type(k, "a whole number or null")),
        }
    }

    fn int_list(&mut self, k: &str) -> Result<Option<Option<Vec<i64>>>, ApiError> {
        match self.0.remove(k) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::Array(a)) => a
                .iter()
                .map(Value::as_i64)
                .collect::<Option<Vec<_>>>()
                .map(|v| Some(Some(v)))
                .ok_or_else(|| wrong_type(k, "an array of whole numbers")),
            Some(_) => Err(wrong_type(k, "an array of whole numbers or null")),
        }
    }

    fn headers(&mut self) -> Result<Option<BTreeMap<String, String>>, ApiError> {
        match self.0.remove("headers") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(o)) => o
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    _ => Err(wrong_type("headers", "an object of strings")),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(_) => Err(wrong_type("headers", "an object of strings")),
        }
    }

    /// `site_id`: the site's domain (its `site_id` in Plausible's API and in
    /// the envelope) or its numeric id; and whether it came as the
    /// deprecated `site`.
    fn site(&mut self) -> Result<(String, bool), ApiError> {
        let (field, v, deprecated) = match (self.0.remove("site_id"), self.0.remove("site")) {
            (Some(_), Some(_)) => {
                return Err(Invalid::new(
                    "site",
                    Rule::Duplicate,
                    "give `site_id` only (`site` is its deprecated name)",
                )
                .into())
            }
            (None, Some(v)) => ("site", v, true),
            (v, None) => ("site_id", v.unwrap_or(Value::Null), false),
        };
        match v {
            Value::String(s) => Ok((s, deprecated)),
            Value::Number(n) if n.is_i64() => Ok((n.to_string(), deprecated)),
            Value::Null => Err(Invalid::new(
                field,
                Rule::Required,
                "is required: the site's domain as in Plausible, or its numeric id",
            )
            .into()),
            _ => Err(wrong_type(field, "a domain or a numeric site id")),
        }
    }

    /// One trigger object: {"type", "threshold"?, "window_secs"?, "cooldown_secs"?, "goal"?}.
    fn trigger(&mut self) -> Result<ops::NewTrigger, ApiError> {
        let ty = self.required_str("type")?;
        let goal = match self.0.remove("goal") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(Value::Number(n)) if n.is_i64() => Some(n.to_string()),
            Some(_) => return Err(wrong_type("goal", "a goal id or display name")),
        };
        Ok(ops::NewTrigger {
            trigger_type: validate::trigger_type(&ty)?,
            threshold: self.int("threshold")?.flatten(),
            window_secs: self.int("window_secs")?.flatten(),
            cooldown_secs: self.int("cooldown_secs")?.flatten(),
            goal,
        })
    }

    fn triggers(&mut self) -> Result<Vec<ops::NewTrigger>, ApiError> {
        match self.0.remove("triggers") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .into_iter()
                .map(|t| match t {
                    Value::Object(o) => {
                        let mut f = Fields(o);
                        let t = f.trigger()?;
                        f.finish()?;
                        Ok(t)
                    }
                    _ => Err(wrong_type("triggers", "an array of trigger objects")),
                })
                .collect(),
            Some(_) => Err(wrong_type("triggers", "an array of trigger objects")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deprecated_site_is_answered_with_a_warning_header() {
        let r = || json_response(StatusCode::OK, &serde_json::json!({}));
        assert!(with_deprecation(r(), false)
            .headers()
            .get(hyper::header::WARNING)
            .is_none());
        let w = with_deprecation(r(), true);
        let w = w
            .headers()
            .get(hyper::header::WARNING)
            .expect("a Warning header");
        let w = w.to_str().unwrap();
        assert!(
            w.starts_with("299 plausible-webhooks \"`site` is deprecated") && w.ends_with('"'),
            "{w}"
        );
    }

    #[test]
    fn unknown_fields_and_wrong_types_name_the_field() {
        let mut f = Fields::parse(&Bytes::from(r#"{"name": 3, "nmae": "x"}"#)).unwrap();
        let e = f.str("name").unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.field.as_deref()),
            ("wrong_type", Some("name"))
        );
        let e = f.finish().unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.field.as_deref()),
            ("unknown_field", Some("nmae"))
        );
        let e = Fields::parse(&Bytes::from("[1]")).unwrap_err();
        assert_eq!(
            (e.status, e.code.as_str()),
            (StatusCode::BAD_REQUEST, "bad_json")
        );
    }
}
