//! A webhook's delivery log: filtered pages, one delivery with every
//! attempt, retry, and replay after a list of what would be sent.

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use hyper::StatusCode;
use uuid::Uuid;

use super::error::WebError;
use super::view::{html, options, AttemptRow, DeliveryPage, DeliveryRow, LogPage, ReplayPage};
use super::visitor::{id_of, web, Action, Visitor, WebhookPath};
use super::webhooks::see_other;
use crate::admin::error::OpError;
use crate::admin::inputs::{from_query, DeliveryQuery, InputError, ReplayInput, RetryInput};
use crate::admin::ops::DeliveryRef;
use crate::admin::state::Shared;

type Page = Result<Response, WebError>;

fn delivery_of(webhook: Uuid, raw: &str) -> Result<DeliveryRef, WebError> {
    let id = Uuid::parse_str(raw).map_err(|_| {
        WebError::Op(OpError::NotFound(format!(
            "webhook {webhook} has no delivery {}",
            crate::admin::access::quote(raw)
        )))
    })?;
    Ok(DeliveryRef { webhook, id })
}

/// A query string as input `T` (blank fields are not given).
fn query<T: serde::de::DeserializeOwned>(raw: Option<String>) -> Result<T, WebError> {
    let kept: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(
            form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .filter(|(_, v)| !v.trim().is_empty()),
        )
        .finish();
    from_query(Some(&kept)).map_err(|e| match e {
        InputError::NotJson(m) => WebError::BadRequest(m),
        InputError::Invalid(i) => WebError::Op(i.into()),
    })
}

const STATUSES: &[(&str, &str)] = &[
    ("pending", "pending"),
    ("retrying", "retrying"),
    ("delivering", "delivering"),
    ("success", "success"),
    ("failed", "failed"),
];
const SINCE: &[(&str, &str)] = &[
    ("1h", "the last hour"),
    ("24h", "the last 24 hours"),
    ("7d", "the last 7 days"),
    ("30d", "the last 30 days"),
];

pub async fn log(
    State(s): State<Shared>,
    v: Visitor,
    WebhookPath(id): WebhookPath,
    RawQuery(raw): RawQuery,
) -> Page {
    let web = web(&s)?;
    let q: DeliveryQuery = query(raw)?;
    let w = s.admin.show_webhook(&v.who, id).await?.webhook;
    let can_manage = v.manages(&s, w.plausible_site_id).await?;
    let page = s.admin.list_deliveries(&v.who, Some(id), &q).await?;
    let status = q.status.clone().unwrap_or_default();
    let event = q.event.clone().unwrap_or_default();
    let since = q.since.clone().unwrap_or_default();
    let next = page.next_cursor.as_ref().map(|c| {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("status", &status)
            .append_pair("event", &event)
            .append_pair("since", &since)
            .append_pair("cursor", c)
            .finish()
    });
    Ok(html(
        StatusCode::OK,
        LogPage {
            l: v.layout(web, &format!("Delivery log of {}", w.name)),
            webhook_id: id.to_string(),
            name: w.name,
            can_manage,
            rows: page.deliveries.iter().map(DeliveryRow::from).collect(),
            status_options: options("any", STATUSES, &status),
            since_options: options("any time", SINCE, &since),
            event,
            next,
        }
        .render(),
    ))
}

async fn delivery_page(s: &Shared, v: &Visitor, d: DeliveryRef, notice: Option<String>) -> Page {
    let web = web(s)?;
    let detail = s.admin.show_delivery(&v.who, d).await?;
    let w = s.admin.show_webhook(&v.who, d.webhook).await?.webhook;
    let can_manage = v.manages(s, w.plausible_site_id).await?;
    Ok(html(
        StatusCode::OK,
        DeliveryPage {
            l: v.layout(web, "Delivery"),
            webhook_id: d.webhook.to_string(),
            name: w.name,
            can_manage,
            d: DeliveryRow::from(&detail.delivery),
            payload: DeliveryPage::payload_of(&detail),
            payload_note: detail.payload_note.clone(),
            headers: detail.request_headers.clone(),
            attempts: detail.attempt_log.iter().map(AttemptRow::from).collect(),
            notice,
        }
        .render(),
    ))
}

pub async fn show(
    State(s): State<Shared>,
    v: Visitor,
    Path((id, delivery)): Path<(String, String)>,
) -> Page {
    let d = delivery_of(id_of(&id)?, &delivery)?;
    delivery_page(&s, &v, d, None).await
}

pub async fn retry(
    State(s): State<Shared>,
    Path((id, delivery)): Path<(String, String)>,
    Action { v, form: posted }: Action,
) -> Page {
    let d = delivery_of(id_of(&id)?, &delivery)?;
    let input: RetryInput = posted.parse(&[], &[])?;
    let r = s.admin.retry_delivery(&v.who, d, input).await?;
    delivery_page(
        &s,
        &v,
        d,
        Some(format!(
            "Due again now, on the same delivery id: attempt {} follows.",
            r.attempts.saturating_add(1)
        )),
    )
    .await
}

/// What a replay would send: counted and listed, changing nothing.
pub async fn replay_preview(
    State(s): State<Shared>,
    v: Visitor,
    WebhookPath(id): WebhookPath,
    RawQuery(raw): RawQuery,
) -> Page {
    let web = web(&s)?;
    let mut r: ReplayInput = query(raw)?;
    r.dry_run = true;
    let since = r.since.clone().unwrap_or_default();
    let event = r.event.clone().unwrap_or_default();
    let w = s.admin.show_webhook(&v.who, id).await?.webhook;
    let dry = s.admin.replay(&v.who, id, r).await?;
    let rows: Vec<DeliveryRow> = dry
        .deliveries
        .unwrap_or_default()
        .iter()
        .map(DeliveryRow::from)
        .collect();
    Ok(html(
        StatusCode::OK,
        ReplayPage {
            l: v.layout(web, "Replay"),
            webhook_id: id.to_string(),
            name: w.name,
            since,
            event,
            count: dry.count,
            more: dry.count > rows.len() as u64,
            rows,
        }
        .render(),
    ))
}

pub async fn replay(
    State(s): State<Shared>,
    WebhookPath(id): WebhookPath,
    Action { v, form: posted }: Action,
) -> Page {
    let web = web(&s)?;
    let mut r: ReplayInput = posted.parse(&[], &[])?;
    r.dry_run = false;
    s.admin.replay(&v.who, id, r).await?;
    Ok(see_other(&format!("{}/webhooks/{id}/deliveries", web.base)))
}
