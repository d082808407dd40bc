//! What the pages show: the templates (src/admin/web/templates, askama,
//! escaped by default) and the rows they are filled with, every value
//! turned into text here so the templates hold no logic beyond loops and
//! conditions; and how a page is sent (its security headers).

use askama::Template;
use axum::body::Body;
use axum::response::Response;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::StatusCode;
use time::OffsetDateTime;

use crate::admin::ops::{
    AttemptView, DeliveryDetail, DeliveryView, GoalView, HourCount, PortalLink, SiteView,
    TestCause, TestResult, TriggerView, WebhookView,
};
use crate::db::timestamp::rfc3339_seconds;
use crate::triggers::{DeliveryMode, TriggerType};

pub use crate::admin::web_setup::Chrome;

/// The frame of a page: its title, who is signed in, their CSRF token.
#[derive(Debug, Clone)]
pub struct Layout {
    pub base: String,
    pub title: String,
    pub who: Option<String>,
    /// Signed in by the page's own session (a sign-out button is shown).
    pub page_session: bool,
    pub csrf: String,
    pub plausible_url: String,
}

impl Layout {
    pub fn anonymous(c: &Chrome, title: &str) -> Layout {
        Layout {
            base: c.base.clone(),
            title: title.to_string(),
            who: None,
            page_session: false,
            csrf: String::new(),
            plausible_url: c.plausible_url.clone(),
        }
    }
}

/// The policy every page is sent with: scripts and styles from this page
/// only (no inline script), no framing, forms posting here only.
pub const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// `body`, rendered, as a page with `status` and the page's headers.
pub fn html(status: StatusCode, body: askama::Result<String>) -> Response {
    let (status, body) = match body {
        Ok(b) => (status, b),
        Err(e) => {
            tracing::error!(error = %e, "web page: a template failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered; the daemon's log has the cause".to_string(),
            )
        }
    };
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A time as the pages show it: UTC, to the second.
pub fn when(t: OffsetDateTime) -> String {
    rfc3339_seconds(t).replace('T', " ").replace('Z', " UTC")
}

pub fn when_opt(t: Option<OffsetDateTime>) -> String {
    t.map(when).unwrap_or_else(|| "—".into())
}

/// A count of seconds as a person reads it: `90 s`, `5 min`, `12 h`, `2 d`.
pub fn secs(s: i64) -> String {
    match s {
        s if s % 86_400 == 0 && s > 0 => format!("{} d", s / 86_400),
        s if s % 3600 == 0 && s > 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub l: Layout,
    pub message: String,
}

#[derive(Template)]
#[template(path = "signed_out.html")]
pub struct SignedOutPage {
    pub l: Layout,
    pub login_url: String,
    pub api_key: bool,
    pub error: Option<String>,
}

impl SignedOutPage {
    pub fn new(l: Layout, c: &Chrome, error: Option<String>) -> SignedOutPage {
        SignedOutPage {
            l,
            login_url: c.login_url(),
            api_key: c.api_key_sign_in,
            error,
        }
    }
}

#[derive(Template)]
#[template(path = "link.html")]
pub struct LinkPage {
    pub l: Layout,
    pub next: String,
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage {
    pub l: Layout,
    pub sites: Vec<SiteView>,
}

/// A webhook in a site's list.
pub struct WebhookRow {
    pub id: String,
    pub name: String,
    pub url: String,
    pub status: String,
    pub status_text: String,
    pub triggers: i64,
}

impl From<&WebhookView> for WebhookRow {
    fn from(w: &WebhookView) -> Self {
        WebhookRow {
            id: w.id.to_string(),
            name: w.name.clone(),
            url: w.url.clone(),
            status: w.status.clone(),
            status_text: w.status_text(),
            triggers: w.triggers,
        }
    }
}

#[derive(Template)]
#[template(path = "site.html")]
pub struct SitePage {
    pub l: Layout,
    pub site: String,
    pub access: String,
    pub can_manage: bool,
    pub can_administer: bool,
    pub webhooks: Vec<WebhookRow>,
    pub deleted: Vec<WebhookRow>,
    /// A portal link just handed out (shown once).
    pub link: Option<LinkShown>,
    pub link_error: Option<String>,
}

/// A portal link as the site's page shows it, once.
pub struct LinkShown {
    pub url: String,
    pub role: String,
    pub expires: String,
}

impl From<&PortalLink> for LinkShown {
    fn from(k: &PortalLink) -> Self {
        LinkShown {
            url: k.url.clone(),
            role: k.role.clone(),
            expires: when(k.expires_at),
        }
    }
}

/// What a create or edit form shows: the values as given, and each
/// field's refusal.
#[derive(Debug, Clone, Default)]
pub struct FormValues {
    pub name: String,
    pub url: String,
    pub headers: String,
    pub retry_schedule: String,
    pub rate_limit: String,
    pub max_concurrency: String,
    /// `standard` or a chat service (empty: standard).
    pub format: String,
    /// Subscriptions, comma-separated.
    pub events: String,
    pub goal_events: bool,
    pub goal: String,
    pub spike: bool,
    pub spike_threshold: String,
    pub drop: bool,
    pub drop_threshold: String,
    /// Send the test event first and create only if it succeeds.
    pub check: bool,
    /// hmac or both (empty: hmac).
    pub signature: String,
}

#[derive(Template)]
#[template(path = "webhook_form.html")]
pub struct FormPage {
    pub l: Layout,
    pub site: String,
    pub action: String,
    pub is_new: bool,
    pub v: FormValues,
    /// Custom headers it has (edit: values are never shown; each can be removed).
    pub header_names: Vec<String>,
    pub goals: Vec<GoalOption>,
    /// The built-in event types one can subscribe to (the catalog's).
    pub event_types: Vec<String>,
    pub errors: Vec<(String, String)>,
    pub cancel: String,
}

impl FormPage {
    /// The formats the select offers: value, label, the URL the service gives.
    pub fn formats(&self) -> Vec<(&'static str, &'static str, &'static str)> {
        crate::delivery::chat::Format::ALL
            .iter()
            .map(|f| (f.as_str(), f.label(), f.url_example()))
            .collect()
    }

    /// Whether the select shows `format` chosen.
    pub fn format_is(&self, format: &str) -> bool {
        match self.v.format.as_str() {
            "" => format == "standard",
            f => f == format,
        }
    }

    /// The refusal of `field` (and of its sub-fields, `headers.X`).
    pub fn error_of(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(f, _)| f == field || f.starts_with(&format!("{field}.")))
            .map(|(_, m)| m.as_str())
    }
}

/// A goal in a picker: the site's goal with what it matches and the
/// properties it needs.
pub struct GoalOption {
    pub id: String,
    pub label: String,
    pub selected: bool,
}

pub fn goal_options(goals: &[GoalView], selected: &str) -> Vec<GoalOption> {
    goals
        .iter()
        .map(|g| {
            let props = g
                .custom_props
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| {
                            format!(
                                "{k} = {}",
                                v.as_str()
                                    .map(str::to_string)
                                    .unwrap_or_else(|| v.to_string())
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            GoalOption {
                id: g.id.to_string(),
                label: if props.is_empty() {
                    format!("{} ({} goal: {})", g.display_name, g.kind, g.matches)
                } else {
                    format!(
                        "{} ({} goal: {}; {props})",
                        g.display_name, g.kind, g.matches
                    )
                },
                selected: g.id.to_string() == selected,
            }
        })
        .collect()
}

/// A trigger as the webhook's page shows it.
pub struct TriggerRow {
    pub id: String,
    pub kind: String,
    pub threshold: String,
    pub window: String,
    pub cooldown: String,
    pub goal: String,
    pub state: String,
    pub last_value: String,
    pub last_fired: String,
    pub next_evaluation: String,
    pub paused: Option<String>,
}

impl From<&TriggerView> for TriggerRow {
    fn from(t: &TriggerView) -> Self {
        let traffic = t.trigger_type.threshold_kind().is_some();
        let tracking = t.trigger_type == TriggerType::TrackingStopped;
        let digest = t.mode == DeliveryMode::Digest;
        let dash = || "—".to_string();
        TriggerRow {
            id: t.id.to_string(),
            kind: format!(
                "{}{}",
                match t.trigger_type {
                    TriggerType::VisitorSpike => "Visitor spike",
                    TriggerType::TrafficDrop => "Traffic drop",
                    TriggerType::GoalCompletion => "Goal completion",
                    TriggerType::CustomEvent => "Custom event",
                    TriggerType::TrackingStopped => "Tracking stopped",
                },
                if digest { " (digest)" } else { "" }
            ),
            threshold: match (traffic, t.threshold, t.derived_threshold) {
                (false, _, _) => dash(),
                (true, Some(v), _) => format!("{v} visitors"),
                (true, None, Some(d)) => format!("{d} visitors (derived from the last 7 days)"),
                (true, None, None) => "derived from recent traffic (not yet computed)".into(),
            },
            window: match (traffic, t.window_secs) {
                (false, Some(w)) if tracking => secs(i64::from(w)),
                (false, None) if tracking => "1 h without an event (default)".into(),
                (false, Some(w)) if digest => secs(i64::from(w)),
                (false, None) if digest => "1 h (default)".into(),
                (false, _) => dash(),
                (true, Some(w)) => secs(i64::from(w)),
                (true, None) => match t.trigger_type {
                    TriggerType::VisitorSpike => "5 min (default)".into(),
                    _ => "12 h (default)".into(),
                },
            },
            cooldown: t.cooldown_secs.map_or_else(dash, |c| secs(i64::from(c))),
            goal: match (&t.goal_id, &t.goal_name, &t.event_name) {
                (_, _, Some(_)) => t.custom_event_label().unwrap_or_default(),
                (Some(_), Some(n), _) => n.clone(),
                (Some(id), None, _) => format!("goal {id}"),
                _ if traffic || tracking => dash(),
                _ => "every goal of the site".into(),
            },
            state: match (traffic, t.enabled, t.armed) {
                (_, false, _) => "off".into(),
                (false, true, true) if tracking => "watching".into(),
                (false, true, false) if tracking => {
                    "tracking stopped (sends resumed once events are back)".into()
                }
                (false, true, _) if digest => "on (a digest per window)".into(),
                (false, true, _) => "on (fires per occurrence)".into(),
                (true, true, true) => "armed".into(),
                (true, true, false) => "fired (re-arms once the count is back)".into(),
            },
            last_value: t
                .last_value
                .filter(|_| traffic)
                .map(|v| format!("{v} visitors"))
                .unwrap_or_else(dash),
            last_fired: when_opt(t.last_fired_at),
            next_evaluation: t
                .next_evaluation_at
                .finite()
                .map(when)
                .unwrap_or_else(|| t.next_evaluation_at.to_string()),
            paused: t.paused_reason.clone(),
        }
    }
}

/// A delivery in a list.
pub struct DeliveryRow {
    pub id: String,
    pub event: String,
    pub status: String,
    pub attempts: i32,
    pub code: String,
    pub created: String,
    pub finished: String,
    pub error: String,
}

impl From<&DeliveryView> for DeliveryRow {
    fn from(d: &DeliveryView) -> Self {
        DeliveryRow {
            id: d.id.to_string(),
            event: d.event_type.clone(),
            status: d.status.clone(),
            attempts: d.attempts,
            code: d
                .last_response_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "—".into()),
            created: when(d.inserted_at),
            finished: match d.finished_at {
                Some(t) => when(t),
                None => match d.next_attempt_at.finite() {
                    Some(t) => format!("next {}", when(t)),
                    None => format!("next {}", d.next_attempt_at),
                },
            },
            error: d.last_error.clone().unwrap_or_default(),
        }
    }
}

/// A bar of the chart: one hour's outcomes.
pub struct Bar {
    pub x: i64,
    pub ok_y: i64,
    pub ok_h: i64,
    pub bad_y: i64,
    pub bad_h: i64,
    pub title: String,
}

/// Deliveries per hour by outcome, as SVG bars (drawn by the template).
pub struct Chart {
    pub bars: Vec<Bar>,
    pub ok: i64,
    pub failed: i64,
    pub from: String,
    pub to: String,
}

/// The chart's height in SVG units.
pub const CHART_H: i64 = 80;

impl Chart {
    pub fn new(hours: &[HourCount]) -> Chart {
        let max = hours
            .iter()
            .map(|h| h.success + h.failed)
            .max()
            .unwrap_or(0)
            .max(1);
        let bars = hours
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let ok_h = h.success * CHART_H / max;
                let bad_h = h.failed * CHART_H / max;
                Bar {
                    x: i as i64 * 20 + 2,
                    ok_y: CHART_H - ok_h,
                    ok_h,
                    bad_y: CHART_H - ok_h - bad_h,
                    bad_h,
                    title: format!(
                        "{}: {} delivered, {} failed",
                        when(h.hour),
                        h.success,
                        h.failed
                    ),
                }
            })
            .collect();
        Chart {
            bars,
            ok: hours.iter().map(|h| h.success).sum(),
            failed: hours.iter().map(|h| h.failed).sum(),
            from: hours.first().map(|h| when(h.hour)).unwrap_or_default(),
            to: hours.last().map(|h| when(h.hour)).unwrap_or_default(),
        }
    }
}

/// What a test send came to, in words.
pub struct TestShown {
    pub success: bool,
    pub headline: String,
    pub cause: String,
    pub answer: Option<String>,
    pub hint: Option<String>,
    pub error: Option<String>,
    pub delivery_id: String,
    /// The chat message as the channel shows it (chat formats only).
    pub preview: Option<String>,
    /// The body sent, indented.
    pub body: String,
    pub format: String,
}

/// A test's cause, in words.
fn cause_words(c: TestCause) -> &'static str {
    match c {
        TestCause::Ok => "delivered",
        TestCause::HttpStatus => "the receiver answered, but not with a 2xx status",
        TestCause::Dns => "the receiver's host name does not resolve (DNS)",
        TestCause::RefusedAddress => {
            "the receiver's address is not a public one, so the daemon refused it"
        }
        TestCause::Tls => "the TLS handshake with the receiver failed",
        TestCause::Timeout => "the receiver did not answer in time",
        TestCause::ConnectionRefused => {
            "the receiver refused the connection (nothing listens there)"
        }
        TestCause::Connection => "the connection to the receiver failed",
        TestCause::NotSent => "the webhook cannot be sent to as it stands",
    }
}

impl From<&TestResult> for TestShown {
    fn from(r: &TestResult) -> Self {
        let cause = cause_words(r.cause).to_string();
        TestShown {
            success: r.success,
            headline: match (r.success, r.status_code) {
                (true, Some(c)) => format!("The receiver answered {c} in {} ms.", r.duration_ms),
                (false, Some(c)) => format!(
                    "The receiver answered {c} in {} ms: not a success.",
                    r.duration_ms
                ),
                (_, None) => "No answer: the test failed.".to_string(),
            },
            cause,
            answer: r.response_body.clone().filter(|b| !b.is_empty()),
            hint: r.hint.clone(),
            error: r.error.clone(),
            delivery_id: r.delivery_id.to_string(),
            preview: r.preview.clone(),
            body: r.body.clone(),
            format: r.format.clone(),
        }
    }
}

#[derive(Template)]
#[template(path = "webhook.html")]
pub struct WebhookPage {
    pub l: Layout,
    pub w: WebhookView,
    pub can_manage: bool,
    pub triggers: Vec<TriggerRow>,
    pub goals: Vec<GoalOption>,
    pub chart: Chart,
    /// The recent deliveries.
    pub rows: Vec<DeliveryRow>,
    pub webhook_id: String,
    pub test: Option<TestShown>,
    pub notice: Option<String>,
    pub trigger_errors: Vec<(String, String)>,
    /// A trigger preview just asked for with the trigger form.
    pub preview: Option<PreviewShown>,
    pub schedule: String,
    pub rate_limit: String,
    pub max_concurrency: String,
    pub failing_since: String,
    pub disabled_at: String,
    pub old_secret_until: String,
    pub old_key_until: String,
    pub created: String,
}

#[derive(Template)]
#[template(path = "secret.html")]
pub struct SecretPage {
    pub l: Layout,
    pub webhook_id: String,
    pub name: String,
    pub secret: String,
    pub rotated: bool,
    pub old_until: Option<String>,
    pub warnings: Vec<String>,
    /// What the receiver answered the test event sent before creating.
    pub checked: Option<String>,
}

#[derive(Template)]
#[template(path = "deliveries.html")]
pub struct LogPage {
    pub l: Layout,
    pub webhook_id: String,
    pub name: String,
    pub can_manage: bool,
    pub rows: Vec<DeliveryRow>,
    pub event: String,
    /// (value, label, selected) of the filters' choices.
    pub status_options: Vec<(String, String, bool)>,
    pub since_options: Vec<(String, String, bool)>,
    pub next: Option<String>,
}

/// A select's choices, `current` selected; the first is "any" (empty).
pub fn options(any: &str, values: &[(&str, &str)], current: &str) -> Vec<(String, String, bool)> {
    std::iter::once(("", any))
        .chain(values.iter().copied())
        .map(|(v, label)| (v.to_string(), label.to_string(), v == current))
        .collect()
}

/// An attempt as the delivery's page shows it.
pub struct AttemptRow {
    pub n: i32,
    pub at: String,
    pub code: String,
    pub ms: i32,
    pub kind: String,
    pub error: String,
    pub response: String,
}

impl From<&AttemptView> for AttemptRow {
    fn from(a: &AttemptView) -> Self {
        AttemptRow {
            n: a.attempt,
            at: when(a.attempted_at),
            code: a
                .status_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "—".into()),
            ms: a.duration_ms,
            kind: a.error_kind.clone().unwrap_or_default().replace('_', " "),
            error: a.error.clone().unwrap_or_default(),
            response: a.response_body.clone().unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "delivery.html")]
pub struct DeliveryPage {
    pub l: Layout,
    pub webhook_id: String,
    pub name: String,
    pub can_manage: bool,
    pub d: DeliveryRow,
    pub payload: String,
    pub payload_note: Option<String>,
    pub headers: Vec<(String, String)>,
    pub attempts: Vec<AttemptRow>,
    pub notice: Option<String>,
}

impl DeliveryPage {
    pub fn payload_of(d: &DeliveryDetail) -> String {
        serde_json::to_string_pretty(&d.payload).unwrap_or_default()
    }
}

#[derive(Template)]
#[template(path = "replay.html")]
pub struct ReplayPage {
    pub l: Layout,
    pub webhook_id: String,
    pub name: String,
    pub since: String,
    pub event: String,
    pub count: u64,
    pub more: bool,
    pub rows: Vec<DeliveryRow>,
}

/// A trigger preview (`ops::TriggerPreview`) as the webhook's page shows it.
pub struct PreviewShown {
    pub summary: String,
    /// Column heads, then (first, second) per row.
    pub heads: (String, String),
    pub rows: Vec<(String, String)>,
    pub omitted: i64,
}

impl From<&crate::admin::ops::TriggerPreview> for PreviewShown {
    fn from(p: &crate::admin::ops::TriggerPreview) -> Self {
        let range = format!("{} to {} ({})", when(p.since), when(p.until), p.timezone);
        if p.trigger_type.threshold_kind().is_none() {
            return PreviewShown {
                summary: format!(
                    "A {} trigger, over {range}, would have sent {} deliveries.",
                    p.trigger_type, p.total
                ),
                heads: ("Day".into(), "Completions".into()),
                rows: p
                    .days
                    .iter()
                    .map(|d| (d.date.clone(), d.completions.to_string()))
                    .collect(),
                omitted: 0,
            };
        }
        let threshold = match (p.threshold, p.threshold_source.as_deref()) {
            (Some(t), Some(src)) => format!("threshold {t} ({src})"),
            _ => "no threshold (too little traffic to derive one)".into(),
        };
        let derived = p
            .derived_threshold
            .map_or("none yet (too little traffic)".to_string(), |t| {
                t.to_string()
            });
        PreviewShown {
            summary: format!(
                "A {} trigger, over {range}, evaluated every {} ({} evaluations) with {threshold}, {}. The threshold it would derive today: {derived}.",
                p.trigger_type,
                secs(p.interval_secs.unwrap_or_default()),
                p.evaluations.unwrap_or_default(),
                match p.total {
                    0 => "would not have fired".to_string(),
                    1 => "would have fired once".to_string(),
                    n => format!("would have fired {n} times"),
                }
            ),
            heads: ("Would have fired at (site time)".into(), "Unique visitors".into()),
            rows: p
                .firings
                .iter()
                .map(|f| (f.local.clone(), f.visitors.to_string()))
                .collect(),
            omitted: p.omitted,
        }
    }
}
