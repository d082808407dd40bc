//! A webhook's pages: create, show (health, chart, triggers, recent
//! deliveries, settings), edit, test, enable, disable, delete, restore,
//! rotate the secret, add and remove triggers. Each parses the form into
//! the core's input type and calls the core; refusals of a form's fields
//! are shown beside the fields, every one at once.

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use hyper::header::{HeaderValue, LOCATION};
use hyper::StatusCode;
use uuid::Uuid;

use super::error::WebError;
use super::view::{
    goal_options, html, secs, when, when_opt, Chart, DeliveryRow, FormPage, FormValues,
    PreviewShown, SecretPage, TestShown, TriggerRow, WebhookPage,
};
use super::visitor::{id_of, web, Action, Posted, Visitor, WebhookPath};
use crate::admin::access::Access;
use crate::admin::error::OpError;
use crate::admin::inputs::{
    DeliveryQuery, NewTrigger, NewWebhook, Num, PreviewInput, RotateKey, RotateSecret, Secs,
    SiteRef, WebhookChanges,
};
use crate::admin::ops::{TestResult, WebhookView};
use crate::admin::state::Shared;
use crate::admin::web_setup::Web;

type Page = Result<Response, WebError>;

/// 303 to `to`: after a change, the page is loaded anew (a reload does not
/// post again).
pub fn see_other(to: &str) -> Response {
    let mut r = Response::new(axum::body::Body::empty());
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

/// What a change came to, named in the webhook page's address
/// (`?done=enabled`): a fixed set, so nothing a visitor types is echoed.
fn notice(done: &str) -> Option<&'static str> {
    Some(match done {
        "saved" => "Saved.",
        "enabled" => "Enabled: deliveries are sent again, and its failure count starts afresh.",
        "disabled" => {
            "Disabled: nothing is sent to it; what was queued ends failed and can be replayed."
        }
        "deleted" => "Deleted. It can be restored until it is purged.",
        "restored" => "Restored.",
        "trigger_added" => "Trigger added.",
        "trigger_removed" => "Trigger removed.",
        "key_rotated" => {
            "New signing key made: give the receiver its public key below before the old one stops signing."
        }
        _ => return None,
    })
}

/// The `done` of a page's address, when it names one.
fn done_of(raw: Option<String>) -> Option<String> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "done")
        .map(|(_, v)| v.into_owned())
}

/// The retry schedule, a limit or the concurrency as the page shows it:
/// the webhook's own, or the daemon's default said so.
fn setting<T: std::fmt::Display>(v: Option<T>, unit: &str) -> String {
    match v {
        Some(v) => format!("{v}{unit}"),
        None => "the daemon's default".into(),
    }
}

/// The webhook's page, with a test's result when one was just sent.
async fn webhook_page(
    s: &Shared,
    v: &Visitor,
    id: Uuid,
    test: Option<TestResult>,
    done: Option<&str>,
    trigger_errors: Vec<(String, String)>,
) -> Page {
    webhook_page_with(s, v, id, test, done, trigger_errors, None).await
}

/// As `webhook_page`, with a trigger preview just asked for.
async fn webhook_page_with(
    s: &Shared,
    v: &Visitor,
    id: Uuid,
    test: Option<TestResult>,
    done: Option<&str>,
    trigger_errors: Vec<(String, String)>,
    preview: Option<PreviewShown>,
) -> Page {
    let web = web(s)?;
    let detail = s.admin.show_webhook(&v.who, id).await?;
    let w = detail.webhook;
    let site = SiteRef::new(&w.plausible_site_id.to_string());
    let can_manage = v.manages(s, w.plausible_site_id).await?;
    let goals = s.admin.list_goals(&v.who, &site).await?.goals;
    let stats = s.admin.delivery_stats(&v.who, id).await?;
    let recent = s
        .admin
        .list_deliveries(
            &v.who,
            Some(id),
            &DeliveryQuery {
                limit: Some(Num::Number(10)),
                ..Default::default()
            },
        )
        .await?;
    let schedule = match &w.retry_schedule_secs {
        None => "the daemon's default".to_string(),
        Some(v) if v.is_empty() => "no retries".into(),
        Some(v) => v
            .iter()
            .map(|s| secs(i64::from(*s)))
            .collect::<Vec<_>>()
            .join(", "),
    };
    Ok(html(
        StatusCode::OK,
        WebhookPage {
            l: v.layout(web, &w.name),
            can_manage,
            triggers: detail.triggers.iter().map(TriggerRow::from).collect(),
            goals: goal_options(&goals, ""),
            chart: Chart::new(&stats.hours),
            rows: recent.deliveries.iter().map(DeliveryRow::from).collect(),
            webhook_id: w.id.to_string(),
            test: test.as_ref().map(TestShown::from),
            notice: done.and_then(notice).map(str::to_string),
            trigger_errors,
            preview,
            schedule,
            rate_limit: setting(w.rate_limit_per_sec, " per second"),
            max_concurrency: setting(w.max_concurrency, ""),
            failing_since: w.failing_since.map(when).unwrap_or_default(),
            disabled_at: w.disabled_at.map(when).unwrap_or_default(),
            old_secret_until: w.previous_secret_expires_at.map(when).unwrap_or_default(),
            old_key_until: w
                .previous_signing_key_expires_at
                .map(when)
                .unwrap_or_default(),
            created: when(w.inserted_at),
            w,
        }
        .render(),
    ))
}

pub async fn show(
    State(s): State<Shared>,
    v: Visitor,
    WebhookPath(id): WebhookPath,
    RawQuery(raw): RawQuery,
) -> Page {
    let done = done_of(raw);
    webhook_page(&s, &v, id, None, done.as_deref(), Vec::new()).await
}

/// The form's refusals, field by field.
fn field_errors(e: &OpError) -> Option<Vec<(String, String)>> {
    match e {
        OpError::Invalid(i) => Some(
            i.all()
                .iter()
                .map(|i| (i.field.clone(), i.message.clone()))
                .collect(),
        ),
        _ => None,
    }
}

/// The create form's trigger fields, turned into the core's triggers: the
/// kinds ticked, a goal when one is picked, thresholds when given.
const TRIGGER_FIELDS: &[&str] = &["trigger", "goal", "spike_threshold", "drop_threshold"];

fn triggers_of(p: &Posted) -> Vec<NewTrigger> {
    let given = |k: &str| p.get(k).map(str::trim).filter(|v| !v.is_empty());
    let threshold = |k: &str| given(k).map(|t| t.parse::<i64>().unwrap_or(0));
    p.all("trigger")
        .into_iter()
        .filter_map(|e| {
            let mut t: NewTrigger = e.parse().expect("infallible");
            match e {
                "goal" => t.goal = given("goal").map(|g| crate::admin::inputs::GoalRef(g.into())),
                "spike" => t.threshold = threshold("spike_threshold"),
                "drop" => t.threshold = threshold("drop_threshold"),
                _ => return None,
            }
            Some(t)
        })
        .collect()
}

fn values_of(p: &Posted) -> FormValues {
    let get = |k: &str| p.get(k).unwrap_or("").to_string();
    let made = p.all("trigger");
    FormValues {
        name: get("name"),
        url: get("url"),
        headers: if p.get("headers").is_some() {
            get("headers")
        } else {
            get("set_headers")
        },
        retry_schedule: get("retry_schedule_secs"),
        rate_limit: get("rate_limit_per_sec"),
        max_concurrency: get("max_concurrency"),
        format: get("format"),
        events: get("events"),
        goal_events: made.contains(&"goal"),
        goal: get("goal"),
        spike: made.contains(&"spike"),
        spike_threshold: get("spike_threshold"),
        drop: made.contains(&"drop"),
        drop_threshold: get("drop_threshold"),
        check: p.get("check").is_some(),
        signature: get("signature"),
    }
}

/// The create or edit form, with `errors` beside its fields.
#[allow(clippy::too_many_arguments)]
async fn form_page(
    s: &Shared,
    web: &Web,
    v: &Visitor,
    site: &SiteRef,
    webhook: Option<&WebhookView>,
    values: FormValues,
    errors: Vec<(String, String)>,
    status: StatusCode,
) -> Page {
    // Refused by the core's own rule, in its words, for a visitor who may not change it.
    let shown = s.admin.show_site(&v.who, site, Access::Manage).await?;
    let goals = s.admin.list_goals(&v.who, site).await?.goals;
    let event_types = s.admin.event_types(&v.who).await?.event_types;
    let base = &web.base;
    Ok(html(
        status,
        FormPage {
            l: v.layout(
                web,
                &match webhook {
                    Some(w) => format!("Edit {}", w.name),
                    None => "New webhook".into(),
                },
            ),
            action: match webhook {
                Some(w) => format!("{base}/webhooks/{}/edit", w.id),
                None => format!("{base}/sites/{}/new", shown.site_id),
            },
            cancel: match webhook {
                Some(w) => format!("{base}/webhooks/{}", w.id),
                None => format!("{base}/sites/{}", shown.site_id),
            },
            is_new: webhook.is_none(),
            goals: goal_options(&goals, &values.goal),
            event_types: event_types
                .into_iter()
                .filter(|e| e.subscribable)
                .map(|e| e.name)
                .collect(),
            header_names: webhook.map(|w| w.header_names.clone()).unwrap_or_default(),
            site: shown.site_id,
            v: values,
            errors,
        }
        .render(),
    ))
}

pub async fn new_form(State(s): State<Shared>, v: Visitor, Path(site): Path<String>) -> Page {
    let web = web(&s)?;
    let values = FormValues {
        goal_events: true,
        ..Default::default()
    };
    form_page(
        &s,
        web,
        &v,
        &SiteRef::new(&site),
        None,
        values,
        Vec::new(),
        StatusCode::OK,
    )
    .await
}

pub async fn create(
    State(s): State<Shared>,
    Path(site): Path<String>,
    Action { v, form: posted }: Action,
) -> Page {
    let web = web(&s)?;
    let site = SiteRef::new(&site);
    let mut n: NewWebhook = posted.parse(TRIGGER_FIELDS, &[])?;
    n.site_id = Some(site.clone());
    n.triggers = triggers_of(&posted);
    match s.admin.create_webhook(&v.who, n).await {
        Ok(c) => Ok(html(
            StatusCode::CREATED,
            SecretPage {
                l: v.layout(web, "Webhook created"),
                webhook_id: c.webhook.id.to_string(),
                name: c.webhook.name,
                secret: c.secret,
                rotated: false,
                old_until: None,
                warnings: c.warnings,
                checked: c.check.map(|r| {
                    format!(
                        "The receiver accepted the test event sent first: it answered {} in {} ms.",
                        r.status_code, r.duration_ms
                    )
                }),
            }
            .render(),
        )),
        Err(e) => match field_errors(&e) {
            Some(errors) => {
                form_page(
                    &s,
                    web,
                    &v,
                    &site,
                    None,
                    values_of(&posted),
                    errors,
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await
            }
            None => Err(e.into()),
        },
    }
}

/// The edit form's values: the webhook's own settings.
fn values_from(w: &WebhookView) -> FormValues {
    FormValues {
        name: w.name.clone(),
        url: w.url.clone(),
        retry_schedule: w
            .retry_schedule_secs
            .as_ref()
            .map(|s| {
                if s.is_empty() {
                    "none".to_string()
                } else {
                    s.iter()
                        .map(|v| format!("{v}s"))
                        .collect::<Vec<_>>()
                        .join(",")
                }
            })
            .unwrap_or_default(),
        rate_limit: w
            .rate_limit_per_sec
            .map(|v| v.to_string())
            .unwrap_or_default(),
        max_concurrency: w.max_concurrency.map(|v| v.to_string()).unwrap_or_default(),
        events: w.events.join(", "),
        format: w.format.clone(),
        signature: w.signature.clone(),
        ..Default::default()
    }
}

/// The edit form of webhook `id`, showing `values` (its own when None)
/// and `errors`.
async fn edit_page(
    s: &Shared,
    v: &Visitor,
    id: Uuid,
    values: Option<FormValues>,
    errors: Vec<(String, String)>,
) -> Page {
    let web = web(s)?;
    let w = s.admin.show_webhook(&v.who, id).await?.webhook;
    let site = SiteRef::new(&w.plausible_site_id.to_string());
    let status = match errors.is_empty() {
        true => StatusCode::OK,
        false => StatusCode::UNPROCESSABLE_ENTITY,
    };
    let values = values.unwrap_or_else(|| values_from(&w));
    form_page(s, web, v, &site, Some(&w), values, errors, status).await
}

pub async fn edit_form(State(s): State<Shared>, v: Visitor, WebhookPath(id): WebhookPath) -> Page {
    edit_page(&s, &v, id, None, Vec::new()).await
}

/// Settings a blank field puts back to the daemon's default.
const DEFAULTABLE: &[&str] = &[
    "retry_schedule_secs",
    "rate_limit_per_sec",
    "max_concurrency",
];

pub async fn update(
    State(s): State<Shared>,
    WebhookPath(id): WebhookPath,
    Action { v, form: posted }: Action,
) -> Page {
    let web = web(&s)?;
    let c: WebhookChanges = posted.parse(&[], DEFAULTABLE)?;
    match s.admin.update_webhook(&v.who, id, c).await {
        Ok(w) => Ok(see_other(&format!(
            "{}/webhooks/{}?done=saved",
            web.base, w.id
        ))),
        Err(e) => match field_errors(&e) {
            Some(errors) => edit_page(&s, &v, id, Some(values_of(&posted)), errors).await,
            None => Err(e.into()),
        },
    }
}

/// Sends a test event now; the page shows what came of it.
pub async fn test(
    State(s): State<Shared>,
    WebhookPath(id): WebhookPath,
    Action { v, .. }: Action,
) -> Page {
    let r = s.admin.send_test(&v.who, id).await?;
    webhook_page(&s, &v, id, Some(r), None, Vec::new()).await
}

/// Enable, disable, delete or restore.
pub async fn state(
    State(s): State<Shared>,
    WebhookPath(id): WebhookPath,
    Action { v, form: posted }: Action,
) -> Page {
    let web = web(&s)?;
    let who = &v.who;
    let done = match posted.get("to").unwrap_or("") {
        "enable" => s.admin.enable_webhook(who, id).await.map(|_| "enabled"),
        "disable" => s
            .admin
            .disable_webhook(who, id, None)
            .await
            .map(|_| "disabled"),
        "delete" => s.admin.delete_webhook(who, id).await.map(|_| "deleted"),
        "restore" => s.admin.restore_webhook(who, id).await.map(|_| "restored"),
        other => {
            return Err(WebError::BadRequest(format!(
                "`{}` is not enable, disable, delete or restore",
                crate::admin::access::quote(other)
            )))
        }
    }?;
    Ok(see_other(&format!(
        "{}/webhooks/{id}?done={done}",
        web.base
    )))
}

pub async fn rotate(
    State(s): State<Shared>,
    WebhookPath(id): WebhookPath,
    Action { v, form: posted }: Action,
) -> Page {
    let web = web(&s)?;
    let r: RotateSecret = posted.parse(&[], &[])?;
    let name = s.admin.show_webhook(&v.who, id).await?.webhook.name;
    let r = s.admin.rotate_secret(&v.who, id, r).await?;
    Ok(html(
        StatusCode::OK,
        SecretPage {
            l: v.layout(web, "New secret"),
            webhook_id: id.to_string(),
            name,
            secret: r.secret,
            rotated: true,
            old_until: r.previous_secret_expires_at.map(|t| when_opt(Some(t))),
            warnings: r.warnings,
            checked: None,
        }
        .render(),
    ))
}

/// A new ed25519 key pair; the page then shows its public key.
pub async fn rotate_key(
    State(s): State<Shared>,
    WebhookPath(id): WebhookPath,
    Action { v, form: posted }: Action,
) -> Page {
    let web = web(&s)?;
    let r: RotateKey = posted.parse(&[], &[])?;
    s.admin.rotate_signing_key(&v.who, id, r).await?;
    Ok(see_other(&format!(
        "{}/webhooks/{id}?done=key_rotated",
        web.base
    )))
}

pub async fn add_trigger(
    State(s): State<Shared>,
    WebhookPath(id): WebhookPath,
    Action { v, form: posted }: Action,
) -> Page {
    let web = web(&s)?;
    // `since` belongs to the form's Preview button.
    let t: NewTrigger = posted.parse(&["since"], &[])?;
    match s.admin.add_trigger(&v.who, id, t).await {
        Ok(_) => Ok(see_other(&format!(
            "{}/webhooks/{id}?done=trigger_added#triggers",
            web.base
        ))),
        Err(e) => match field_errors(&e) {
            Some(errors) => webhook_page(&s, &v, id, None, None, errors).await,
            None => Err(e.into()),
        },
    }
}

/// The trigger form's Preview button: the same fields, previewed on the
/// webhook's site over `since`; the page again, the preview below the form.
pub async fn preview_trigger(
    State(s): State<Shared>,
    WebhookPath(id): WebhookPath,
    Action { v, form: posted }: Action,
) -> Page {
    let t: NewTrigger = posted.parse(&["since"], &[])?;
    let since = posted
        .get("since")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Secs::Text(s.to_string()));
    let w = s.admin.show_webhook(&v.who, id).await?.webhook;
    let site = SiteRef::new(&w.plausible_site_id.to_string());
    let p = PreviewInput { since, trigger: t };
    match s.admin.preview_trigger(&v.who, &site, p).await {
        Ok(p) => {
            let shown = PreviewShown::from(&p);
            webhook_page_with(&s, &v, id, None, None, Vec::new(), Some(shown)).await
        }
        Err(e) => match field_errors(&e) {
            Some(errors) => webhook_page(&s, &v, id, None, None, errors).await,
            None => Err(e.into()),
        },
    }
}

pub async fn remove_trigger(
    State(s): State<Shared>,
    Path((id, trigger)): Path<(String, String)>,
    Action { v, .. }: Action,
) -> Page {
    let web = web(&s)?;
    let webhook = id_of(&id)?;
    let t = Uuid::parse_str(&trigger).map_err(|_| {
        WebError::Op(OpError::NotFound(format!(
            "webhook {webhook} has no trigger {}",
            crate::admin::access::quote(&trigger)
        )))
    })?;
    s.admin
        .remove_trigger(&v.who, crate::admin::ops::TriggerRef { webhook, id: t })
        .await?;
    Ok(see_other(&format!(
        "{}/webhooks/{webhook}?done=trigger_removed#triggers",
        web.base
    )))
}
