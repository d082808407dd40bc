//! Chat formats: a webhook whose `format` names a chat service gets each
//! event as that service's incoming-webhook message instead of the
//! envelope (docs/receiving.md, "Chat formats"). The message is made here,
//! at send time, from the row's stored payload, so the signatures (still
//! sent) are over the bytes that go out, and a retry sends the same bytes.
//!
//! Every event becomes one neutral [`Message`] (a title, a sentence, the
//! figures, the ranked lists, the dashboard link), which each service's
//! writer lays out within that service's documented limits; a list or a
//! text that does not fit is cut at a character (never inside one), with
//! the cut said ("… and 12 more"). Limits are counted in UTF-16 code units,
//! which is never less than the characters the services count (an emoji is
//! two), and sizes in bytes of the JSON actually sent.
//!
//! The limits, from each service's documentation:
//! - Slack (<https://docs.slack.dev/reference/block-kit/blocks>,
//!   <https://docs.slack.dev/reference/block-kit/blocks/section-block>,
//!   <https://docs.slack.dev/messaging/sending-messages-using-incoming-webhooks>):
//!   at most 50 blocks; a section's text at most 3,000 characters, its
//!   fields at most 10 of 2,000; a header's plain text at most 150; a
//!   context at most 10 elements; the top-level `text` is the notification's
//!   fallback when `blocks` are sent.
//! - Discord (<https://discord.com/developers/docs/resources/webhook#execute-webhook>,
//!   <https://discord.com/developers/docs/resources/message#embed-object-embed-limits>):
//!   `content` at most 2,000 characters; at most 10 embeds; a title 256, a
//!   description 4,096, at most 25 fields (name 256, value 1,024), a footer
//!   2,048; all embeds' text together at most 6,000.
//! - Microsoft Teams, Workflows' "Post to a channel when a webhook request
//!   is received" (<https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/add-incoming-webhook>,
//!   <https://learn.microsoft.com/en-us/connectors/teams/#known-issues-and-limitations>):
//!   `{"type":"message","attachments":[{"contentType":"application/vnd.microsoft.card.adaptive","content":<AdaptiveCard>}]}`,
//!   about 28 KB in all (Office 365 connectors' MessageCard is retired).
//! - Google Chat (<https://developers.google.com/workspace/chat/create-messages>,
//!   <https://developers.google.com/workspace/chat/api/reference/rest/v1/cards>):
//!   `text` and/or `cardsV2`, at most 32,000 bytes; at most 100 widgets a card.

use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// What a webhook's receiver takes (`webhooks.format`, sql/0018).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// The signed JSON envelope (docs/receiving.md).
    Standard,
    Slack,
    Discord,
    Teams,
    GoogleChat,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::Standard,
        Format::Slack,
        Format::Discord,
        Format::Teams,
        Format::GoogleChat,
    ];

    /// The name stored, taken by every face (`--format slack`).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Standard => "standard",
            Format::Slack => "slack",
            Format::Discord => "discord",
            Format::Teams => "teams",
            Format::GoogleChat => "google_chat",
        }
    }

    pub fn parse(s: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// A stored name this build does not know (a newer writer) is sent as
    /// the envelope: still signed, still readable.
    pub fn from_stored(s: &str) -> Format {
        Format::parse(s).unwrap_or(Format::Standard)
    }

    /// As a person names it.
    pub fn label(self) -> &'static str {
        match self {
            Format::Standard => "Standard (signed JSON envelope)",
            Format::Slack => "Slack",
            Format::Discord => "Discord",
            Format::Teams => "Microsoft Teams (Workflows)",
            Format::GoogleChat => "Google Chat",
        }
    }

    /// The hosts the service's incoming-webhook URLs are on (empty: any).
    /// A URL elsewhere is only warned about: a relay or a test receiver is
    /// a fair target.
    pub fn hosts(self) -> &'static [&'static str] {
        match self {
            Format::Standard => &[],
            Format::Slack => &["hooks.slack.com"],
            Format::Discord => &[
                "discord.com",
                "discordapp.com",
                "ptb.discord.com",
                "canary.discord.com",
            ],
            // Workflows' webhook URLs: prod-NN.<region>.logic.azure.com, or
            // the newer *.environment.api.powerplatform.com.
            Format::Teams => &[".logic.azure.com", ".api.powerplatform.com"],
            Format::GoogleChat => &["chat.googleapis.com"],
        }
    }

    /// The URL the service gives, as its documentation shows it.
    pub fn url_example(self) -> &'static str {
        match self {
            Format::Standard => "https://receiver.example.com/webhooks/plausible",
            Format::Slack => "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
            Format::Discord => "https://discord.com/api/webhooks/<webhook id>/<token>",
            Format::Teams => "https://prod-00.westeurope.logic.azure.com:443/workflows/<id>/triggers/manual/paths/invoke?api-version=2016-06-01&sp=…&sv=1.0&sig=…",
            Format::GoogleChat => "https://chat.googleapis.com/v1/spaces/<space>/messages?key=…&token=…",
        }
    }

    /// A warning when `url`'s host is not one the service uses; None when
    /// it is (or the format is the envelope).
    pub fn url_warning(self, url: &str) -> Option<String> {
        let hosts = self.hosts();
        if hosts.is_empty() {
            return None;
        }
        let host = url::Url::parse(url).ok()?.host_str()?.to_ascii_lowercase();
        let ok = hosts.iter().any(|h| match h.strip_prefix('.') {
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => host == *h,
        });
        (!ok).then(|| {
            format!(
                "format {} sends {} messages, but the URL's host {host} is not one {} gives \
                 ({}); it is sent anyway (a relay may be meant)",
                self.as_str(),
                self.label(),
                self.label(),
                self.url_example()
            )
        })
    }
}

/// What a message is about, beside its payload.
pub struct Context<'a> {
    pub event: &'a str,
    /// The site's domain ('' for the operator endpoint).
    pub site: &'a str,
    pub at: OffsetDateTime,
    /// `plausible.base_url` ('' when unset): the dashboard link of events
    /// that carry none.
    pub plausible_base_url: &'a str,
}

/// The body a chat webhook sends for an event; None for the envelope.
/// `data_json` is the row's payload as stored.
pub fn render(format: Format, ctx: &Context<'_>, data_json: &str) -> Option<Vec<u8>> {
    if format == Format::Standard {
        return None;
    }
    let data: Value = serde_json::from_str(data_json).unwrap_or(Value::Null);
    let message = message(ctx, &data);
    let body = lay_out(format, &message);
    Some(serde_json::to_vec(&body).expect("a Value always serializes"))
}

/// The message as a person reads it in the channel, in plain text: what
/// the test button shows beside the body (the lists as the first budget
/// keeps them).
pub fn preview(ctx: &Context<'_>, data_json: &str) -> String {
    let data: Value = serde_json::from_str(data_json).unwrap_or(Value::Null);
    let m = message(ctx, &data).within(BUDGETS[0]);
    let mut out = format!("{}\n{}\n", m.title, m.sentence);
    for (k, v) in &m.facts {
        out.push_str(&format!("{k}: {v}\n"));
    }
    for l in &m.lists {
        out.push_str(&format!("{}:\n", l.heading));
        for line in list_lines(l, "  • ") {
            out.push_str(&line);
            out.push('\n');
        }
    }
    if let Some(u) = &m.link {
        out.push_str(&format!("Open the dashboard: {u}\n"));
    }
    out.push_str(&m.footer);
    out
}

/// The service's message for `message`, cut to fit: the first budget whose
/// result is within the service's byte limit.
fn lay_out(format: Format, message: &Message) -> Value {
    let mut last = Value::Null;
    for budget in BUDGETS {
        let m = message.within(budget);
        last = match format {
            Format::Standard => unreachable!("the envelope is not laid out"),
            Format::Slack => slack(&m),
            Format::Discord => discord(&m),
            Format::Teams => teams(&m),
            Format::GoogleChat => google_chat(&m),
        };
        if serde_json::to_vec(&last).map_or(0, |b| b.len()) <= max_bytes(format) {
            break;
        }
    }
    last
}

/// The largest body each service takes, in bytes (with some room under
/// Teams' "about 28 KB").
pub fn max_bytes(format: Format) -> usize {
    match format {
        Format::Standard => usize::MAX,
        // Slack documents no byte limit for incoming webhooks; its text
        // limits keep a message far under this.
        Format::Slack => 40_000,
        Format::Discord => 16_000,
        Format::Teams => 27_000,
        Format::GoogleChat => 32_000,
    }
}

/// How much of each part a message keeps; tried largest first.
#[derive(Clone, Copy)]
struct Budget {
    items: usize,
    item_chars: usize,
    facts: usize,
    fact_chars: usize,
    sentence_chars: usize,
}

const BUDGETS: [Budget; 3] = [
    Budget {
        items: 10,
        item_chars: 200,
        facts: 20,
        fact_chars: 400,
        sentence_chars: 1_000,
    },
    Budget {
        items: 5,
        item_chars: 100,
        facts: 10,
        fact_chars: 150,
        sentence_chars: 400,
    },
    Budget {
        items: 3,
        item_chars: 60,
        facts: 6,
        fact_chars: 60,
        sentence_chars: 200,
    },
];

/// An event, as every chat service shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    /// A short line: what happened, where.
    pub title: String,
    /// What happened, in a sentence.
    pub sentence: String,
    /// The figures: name, value.
    pub facts: Vec<(String, String)>,
    /// Ranked lists (top sources, pages, occurrences): a heading and lines.
    pub lists: Vec<List>,
    pub link: Option<String>,
    /// Which event, when: the small print.
    pub footer: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct List {
    pub heading: String,
    pub items: Vec<String>,
    /// Entries the list had beyond `items` (the payload's `more`, or those cut).
    pub more: u64,
}

impl Message {
    /// This message with at most `b` of each part; what is cut is counted.
    fn within(&self, b: Budget) -> Message {
        let mut m = self.clone();
        m.title = cut(&m.title, 200);
        m.sentence = cut(&m.sentence, b.sentence_chars);
        m.facts.truncate(b.facts);
        for (k, v) in &mut m.facts {
            *k = cut(k, 100);
            *v = cut(v, b.fact_chars);
        }
        for l in &mut m.lists {
            if l.items.len() > b.items {
                l.more += (l.items.len() - b.items) as u64;
                l.items.truncate(b.items);
            }
            for i in &mut l.items {
                *i = cut(i, b.item_chars);
            }
        }
        m
    }
}

/// Length as the services count it, conservatively: UTF-16 code units.
pub fn chars(s: &str) -> usize {
    s.encode_utf16().count()
}

/// `s` in at most `max` UTF-16 code units, cut between characters with an
/// ellipsis when cut.
pub fn cut(s: &str, max: usize) -> String {
    if chars(s) <= max {
        return s.to_string();
    }
    let mut out = String::new();
    let mut n = 0;
    for c in s.chars() {
        // One unit kept for the ellipsis.
        if n + c.len_utf16() + 1 > max {
            break;
        }
        n += c.len_utf16();
        out.push(c);
    }
    if max > 0 {
        out.push('…');
    }
    out
}

// ---- The message of each event type ------------------------------------

fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key)?.as_f64()
}

/// A number as people write it: 1,234 or 12.5.
fn figure(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        let s = format!("{}", x.abs() as u64);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if x < 0.0 {
            format!("-{out}")
        } else {
            out
        }
    } else {
        format!("{x:.1}")
    }
}

fn fig(v: &Value, key: &str) -> String {
    num(v, key).map_or_else(|| "—".into(), figure)
}

/// `2026-01-01 12:00 UTC` from an RFC 3339 time; anything else as it is.
fn when(s: &str) -> String {
    match OffsetDateTime::parse(s, &Rfc3339) {
        Ok(t) => {
            let t = t.to_offset(time::UtcOffset::UTC);
            format!(
                "{}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        }
        Err(_) => s.to_string(),
    }
}

fn when_of(v: &Value, key: &str) -> String {
    text(v, key).map_or_else(|| "—".into(), |s| when(&s))
}

/// `15 min`, `1 h`, `2 h 30 min`, `2 days`.
fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    if s < 60 {
        return format!("{s} s");
    }
    if s.is_multiple_of(86_400) {
        let d = s / 86_400;
        return format!("{d} day{}", if d == 1 { "" } else { "s" });
    }
    let (h, m) = (s / 3600, (s % 3600) / 60);
    match (h, m) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

fn dur(v: &Value, key: &str) -> String {
    num(v, key).map_or_else(|| "—".into(), duration)
}

/// The event's dashboard: the one it carries, or the site's on
/// `plausible.base_url`.
fn dashboard(ctx: &Context<'_>, data: &Value, domain: &str) -> Option<String> {
    if let Some(u) = text(data, "dashboard_url")
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
    {
        return Some(u);
    }
    let base = ctx.plausible_base_url.trim();
    if base.is_empty() || domain.is_empty() {
        return None;
    }
    let mut u = url::Url::parse(base).ok()?;
    u.path_segments_mut().ok()?.pop_if_empty().push(domain);
    Some(u.to_string())
}

fn ranked(data: &Value, key: &str, name: &str, heading: &str) -> Option<List> {
    let items: Vec<String> = data
        .get(key)?
        .as_array()?
        .iter()
        .map(|r| {
            format!(
                "{} — {} visitors",
                text(r, name).unwrap_or_default(),
                fig(r, "visitors")
            )
        })
        .collect();
    (!items.is_empty()).then(|| List {
        heading: heading.into(),
        items,
        more: 0,
    })
}

fn props_facts(v: Option<&Value>, facts: &mut Vec<(String, String)>) {
    if let Some(Value::Object(p)) = v {
        for (k, v) in p {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            facts.push((k.clone(), v));
        }
    }
}

/// The neutral message of an event: built-in types by their keys, any
/// other (or a built-in name whose data lacks its keys) as its type and
/// its top-level keys and values.
pub fn message(ctx: &Context<'_>, data: &Value) -> Message {
    let mut m = built_in(ctx, data).unwrap_or_else(|| generic(ctx, data));
    if m.footer.is_empty() {
        m.footer = footer(ctx);
    }
    m
}

fn footer(ctx: &Context<'_>) -> String {
    let at = ctx
        .at
        .format(&Rfc3339)
        .map(|s| when(&s))
        .unwrap_or_default();
    format!("plausible-webhooks · {} · {at}", ctx.event)
}

fn site_of<'a>(ctx: &'a Context<'_>, data: &'a Value) -> String {
    if !ctx.site.is_empty() {
        return ctx.site.to_string();
    }
    text(data, "domain")
        .or_else(|| text(data, "site_id"))
        .unwrap_or_else(|| "the site".into())
}

fn built_in(ctx: &Context<'_>, d: &Value) -> Option<Message> {
    let site = site_of(ctx, d);
    let mut m = Message::default();
    match ctx.event {
        "goal_completion" => {
            let goal = text(d, "goal_name")?;
            let page = text(d, "pathname")?;
            m.title = format!("🎯 Goal completed on {site}: {goal}");
            m.sentence = format!("A visitor completed the goal “{goal}” on {page}.");
            m.facts = vec![
                ("Goal".into(), goal),
                ("Page".into(), page),
                ("When".into(), when_of(d, "occurred_at")),
            ];
            if let Some(t) = text(d, "scroll_threshold") {
                m.facts.push(("Scrolled".into(), format!("{t}%")));
            }
            props_facts(d.get("custom_props"), &mut m.facts);
        }
        "goal_completion_digest" | "custom_event_digest" => {
            let count = num(d, "count")?;
            let occurrences = d.get("occurrences")?.as_array()?;
            let custom = ctx.event == "custom_event_digest";
            let what = if custom {
                format!("“{}” events", text(d, "event_name")?)
            } else {
                "goal completions".into()
            };
            m.title = format!("🗂️ {} {what} on {site}", figure(count));
            m.sentence = format!(
                "{} {what} between {} and {}.",
                figure(count),
                when_of(d, "window_start"),
                when_of(d, "window_end")
            );
            m.facts = vec![("Count".into(), figure(count))];
            props_facts(d.get("props"), &mut m.facts);
            m.lists.push(List {
                heading: if custom {
                    "First events"
                } else {
                    "First completions"
                }
                .into(),
                items: occurrences
                    .iter()
                    .map(|o| match text(o, "goal_name") {
                        Some(g) => format!(
                            "{} — {g} on {}",
                            when_of(o, "occurred_at"),
                            text(o, "pathname").unwrap_or_default()
                        ),
                        None => format!(
                            "{} — {}",
                            when_of(o, "occurred_at"),
                            text(o, "pathname").unwrap_or_default()
                        ),
                    })
                    .collect(),
                more: num(d, "more").unwrap_or(0.0).max(0.0) as u64,
            });
        }
        "custom_event" => {
            let name = text(d, "event_name")?;
            let page = text(d, "pathname")?;
            m.title = format!("✨ {name} on {site}");
            m.sentence = format!("A visitor's browser sent the custom event “{name}” on {page}.");
            m.facts = vec![
                ("Event".into(), name),
                ("Page".into(), page),
                ("When".into(), when_of(d, "occurred_at")),
            ];
            props_facts(d.get("props"), &mut m.facts);
        }
        "visitor_spike" | "traffic_drop" => {
            let visitors = num(d, "visitors")?;
            let spike = ctx.event == "visitor_spike";
            let window = dur(d, "window_secs");
            m.title = if spike {
                format!("📈 Visitor spike on {site}")
            } else {
                format!("📉 Traffic drop on {site}")
            };
            let change = num(d, "change_percent")
                .map(|c| {
                    format!(
                        " ({}{}% against the usual {})",
                        if c >= 0.0 { "+" } else { "" },
                        figure(c.round()),
                        fig(d, "baseline_visitors")
                    )
                })
                .unwrap_or_default();
            m.sentence = format!(
                "{} unique visitors in the last {window}{change}; the {} is {}.",
                figure(visitors),
                if spike { "threshold" } else { "floor" },
                fig(d, "threshold"),
            );
            m.facts = vec![
                ("Visitors".into(), figure(visitors)),
                (
                    "Threshold".into(),
                    format!(
                        "{} ({})",
                        fig(d, "threshold"),
                        text(d, "threshold_source").unwrap_or_default()
                    ),
                ),
                (
                    "Window".into(),
                    format!(
                        "{} – {}",
                        when_of(d, "window_start"),
                        when_of(d, "window_end")
                    ),
                ),
                (
                    "Usual".into(),
                    format!(
                        "{} (mean of {} days)",
                        fig(d, "baseline_visitors"),
                        fig(d, "baseline_days")
                    ),
                ),
            ];
            m.lists
                .extend(ranked(d, "top_sources", "source", "Top sources"));
            m.lists.extend(ranked(d, "top_pages", "page", "Top pages"));
        }
        "site.tracking_stopped" => {
            let domain = text(d, "domain").unwrap_or(site.clone());
            m.title = format!("⚠️ Tracking stopped on {domain}");
            let last = match text(d, "last_event_at") {
                Some(t) => format!("the last one came at {}", when(&t)),
                None => "none came in the last 8 days".into(),
            };
            m.sentence = format!(
                "No events for {} at a time this site usually has about {} visitors; {last}. Its script may have been removed or broken.",
                dur(d, "window_secs"),
                fig(d, "baseline_visitors")
            );
            m.facts = vec![
                ("Last event".into(), when_of(d, "last_event_at")),
                ("Silent for".into(), dur(d, "silent_secs")),
                ("Detected".into(), when_of(d, "detected_at")),
            ];
        }
        "site.tracking_resumed" => {
            let domain = text(d, "domain").unwrap_or(site.clone());
            m.title = format!("✅ Tracking resumed on {domain}");
            m.sentence = format!(
                "Events arrive again, after at least {} without any.",
                dur(d, "silent_secs")
            );
            m.facts = vec![
                ("Stopped".into(), when_of(d, "stopped_at")),
                ("Resumed".into(), when_of(d, "resumed_at")),
            ];
        }
        "webhook.failing" | "webhook.disabled" | "webhook.recovered" | "delivery.exhausted" => {
            let name = text(d, "webhook_name")?;
            let host = text(d, "url_host").unwrap_or_default();
            match ctx.event {
                "webhook.failing" => {
                    m.title = format!("⚠️ Webhook “{name}” is failing");
                    m.sentence = format!(
                        "{} deliveries to {host} failed for good in a row, since {}.",
                        fig(d, "consecutive_failures"),
                        when_of(d, "failing_since")
                    );
                }
                "webhook.disabled" => {
                    m.title = format!("⛔ Webhook “{name}” was disabled");
                    m.sentence = format!(
                        "Nothing more is sent to {host}: {}.",
                        text(d, "reason").unwrap_or_default()
                    );
                    m.facts.push(("Disabled".into(), when_of(d, "disabled_at")));
                }
                "webhook.recovered" => {
                    m.title = format!("✅ Webhook “{name}” recovered");
                    m.sentence = format!(
                        "{host} accepts deliveries again, after {} failed.",
                        fig(d, "failed_deliveries")
                    );
                    m.facts
                        .push(("Recovered".into(), when_of(d, "recovered_at")));
                }
                _ => {
                    m.title = format!("❌ A delivery to “{name}” failed for good");
                    m.sentence = format!(
                        "A {} event was not delivered to {host} after {} attempts.",
                        text(d, "event_type").unwrap_or_default(),
                        fig(d, "attempts")
                    );
                    m.facts
                        .push(("Last answer".into(), fig(d, "last_response_code")));
                    m.facts.push((
                        "Delivery".into(),
                        text(d, "delivery_id").unwrap_or_default(),
                    ));
                }
            }
            m.facts.insert(
                0,
                ("Site".into(), text(d, "site_id").unwrap_or(site.clone())),
            );
            m.facts.insert(1, ("Receiver".into(), host));
            if let Some(e) = text(d, "last_error") {
                m.facts.push(("Last error".into(), e));
            }
        }
        "analytics.unavailable" | "analytics.incompatible" => {
            let unavailable = ctx.event == "analytics.unavailable";
            m.title = if unavailable {
                "⚠️ Analytics cannot be read".into()
            } else {
                "⛔ Analytics refuses a statement triggers send".into()
            };
            m.sentence = format!(
                "{} Triggers: {}. Deliveries go on.",
                if unavailable {
                    "The analytics source cannot be asked."
                } else {
                    "The analytics source answers, but refuses what triggers ask; /readyz answers 503 until it is fixed."
                },
                text(d, "triggers").unwrap_or_default()
            );
            m.facts = vec![
                ("Source".into(), text(d, "source").unwrap_or_default()),
                ("Since".into(), when_of(d, "since")),
                ("Error".into(), text(d, "error").unwrap_or_default()),
            ];
            return Some(m);
        }
        "analytics.recovered" => {
            m.title = "✅ Analytics can be read again".into();
            m.sentence = format!(
                "The analytics source answers every statement triggers send again (it was {} since {}).",
                text(d, "was").unwrap_or_default(),
                when_of(d, "failing_since")
            );
            m.facts = vec![
                ("Source".into(), text(d, "source").unwrap_or_default()),
                ("Version".into(), text(d, "version").unwrap_or_default()),
                ("Recovered".into(), when_of(d, "recovered_at")),
            ];
            return Some(m);
        }
        "test" => {
            m.title = "🧪 Test from plausible-webhooks".into();
            m.sentence = text(d, "message")?;
            let samples = d.get("samples").and_then(Value::as_object);
            let items: Vec<String> = samples
                .into_iter()
                .flatten()
                .map(|(event, data)| {
                    let inner = Context { event, ..*ctx };
                    let s = message(&inner, data);
                    format!("{} — {}", s.title, s.sentence)
                })
                .collect();
            if !items.is_empty() {
                m.lists.push(List {
                    heading: "What this webhook receives looks like".into(),
                    items,
                    more: d
                        .get("samples_left_out")
                        .and_then(Value::as_array)
                        .map_or(0, |a| a.len() as u64),
                });
            }
        }
        _ => return None,
    }
    m.link = dashboard(ctx, d, &site_domain(ctx, d));
    Some(m)
}

fn site_domain(ctx: &Context<'_>, d: &Value) -> String {
    if !ctx.site.is_empty() {
        return ctx.site.into();
    }
    text(d, "domain")
        .or_else(|| text(d, "site_id"))
        .unwrap_or_default()
}

/// A host's own type: its name and its top-level keys, compact.
fn generic(ctx: &Context<'_>, d: &Value) -> Message {
    let site = site_of(ctx, d);
    let mut facts = Vec::new();
    if let Value::Object(o) = d {
        for (k, v) in o {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            facts.push((k.clone(), v));
        }
    }
    Message {
        title: format!("🔔 {} on {site}", ctx.event),
        sentence: format!("The event {} happened on {site}.", ctx.event),
        facts,
        lists: Vec::new(),
        link: dashboard(ctx, d, &site_domain(ctx, d)),
        footer: String::new(),
    }
}

/// A URL inside `<…>` (Slack's links, Discord's unfurl-free links): the
/// characters that would end it early, percent-encoded.
fn link_safe(url: &str) -> String {
    url.replace('<', "%3C")
        .replace('>', "%3E")
        .replace('|', "%7C")
        .replace(' ', "%20")
}

// ---- Slack ---------------------------------------------------------------

/// Slack's mrkdwn: `&`, `<` and `>` are its control characters.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Escaped, then cut to `max` without leaving half an entity.
fn slack_text(s: &str, max: usize) -> String {
    let mut t = cut(&slack_escape(s), max);
    if let Some(amp) = t.rfind('&') {
        if !t[amp..].contains(';') {
            t.truncate(amp);
            t.push('…');
        }
    }
    t
}

fn list_lines(l: &List, bullet: &str) -> Vec<String> {
    let mut lines: Vec<String> = l.items.iter().map(|i| format!("{bullet}{i}")).collect();
    if l.more > 0 {
        lines.push(format!("… and {} more", figure(l.more as f64)));
    }
    lines
}

/// `head`, then `l`'s items one a line as `line` writes them, in at most
/// `max` units: the items that do not fit are counted in the closing
/// "… and N more" with those the payload left out.
fn fit_list(head: &str, l: &List, max: usize, line: impl Fn(&str) -> String) -> String {
    // Room kept for the closing line.
    const TRAILER: usize = 40;
    let mut out = head.to_string();
    let mut shown = 0;
    for i in &l.items {
        let text = line(i);
        let sep = usize::from(!out.is_empty());
        if chars(&out) + sep + chars(&text) > max.saturating_sub(TRAILER) {
            break;
        }
        if sep == 1 {
            out.push('\n');
        }
        out.push_str(&text);
        shown += 1;
    }
    let more = l.more + (l.items.len() - shown) as u64;
    if more > 0 {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!("… and {} more", figure(more as f64)));
    }
    out
}

const SLACK_BLOCKS: usize = 50;
const SLACK_SECTION: usize = 3_000;
const SLACK_FIELD: usize = 2_000;
const SLACK_FIELDS: usize = 10;
const SLACK_HEADER: usize = 150;

fn slack(m: &Message) -> Value {
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": cut(&m.title, SLACK_HEADER), "emoji": true}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": slack_text(&m.sentence, SLACK_SECTION)}}),
    ];
    for chunk in m.facts.chunks(SLACK_FIELDS) {
        let fields: Vec<Value> = chunk
            .iter()
            .map(|(k, v)| {
                let k = slack_text(k, 200);
                let v = slack_text(v, SLACK_FIELD - chars(&k) - 4);
                json!({"type": "mrkdwn", "text": format!("*{k}*\n{v}")})
            })
            .collect();
        blocks.push(json!({"type": "section", "fields": fields}));
    }
    for l in &m.lists {
        let heading = format!("*{}*", slack_text(&l.heading, 200));
        let t = fit_list(&heading, l, SLACK_SECTION, |i| {
            format!("• {}", slack_text(i, SLACK_SECTION / 2))
        });
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": t}}));
    }
    if let Some(url) = &m.link {
        let url = link_safe(url);
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&format!("<{url}|Open the dashboard>"), SLACK_SECTION)}}));
    }
    let context = json!({"type": "context", "elements": [{"type": "mrkdwn", "text": slack_text(&m.footer, SLACK_SECTION)}]});
    blocks.truncate(SLACK_BLOCKS - 1);
    blocks.push(context);
    json!({
        // The notification's text, and what is shown where blocks are not.
        "text": slack_text(&format!("{} — {}", m.title, m.sentence), SLACK_SECTION),
        "blocks": blocks,
    })
}

// ---- Discord -------------------------------------------------------------

const DISCORD_CONTENT: usize = 2_000;
const DISCORD_TITLE: usize = 256;
const DISCORD_DESCRIPTION: usize = 4_096;
const DISCORD_FIELDS: usize = 25;
const DISCORD_FIELD_NAME: usize = 256;
const DISCORD_FIELD_VALUE: usize = 1_024;
const DISCORD_FOOTER: usize = 2_048;
const DISCORD_TOTAL: usize = 6_000;

/// Discord's markdown characters, escaped so a name prints as written.
fn discord_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '[' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Escaped and cut, never leaving a lone escaping backslash at the end.
fn discord_text(s: &str, max: usize) -> String {
    let mut t = cut(&discord_escape(s), max);
    let trailing = t
        .trim_end_matches('…')
        .chars()
        .rev()
        .take_while(|c| *c == '\\')
        .count();
    if trailing % 2 == 1 {
        let ell = t.ends_with('…');
        t = t.trim_end_matches('…').to_string();
        t.pop();
        if ell {
            t.push('…');
        }
    }
    t
}

fn discord(m: &Message) -> Value {
    let title = cut(&m.title, DISCORD_TITLE);
    let footer = cut(&m.footer, DISCORD_FOOTER);
    // Whatever the fields leave of the 6,000 shared by all embed text.
    let mut left = DISCORD_TOTAL - chars(&title) - chars(&footer);
    let description = discord_text(&m.sentence, DISCORD_DESCRIPTION.min(left / 3));
    left -= chars(&description);
    let mut fields = Vec::new();
    let mut add = |name: &str, value: &str, inline: bool, left: &mut usize| {
        if fields.len() == DISCORD_FIELDS {
            return;
        }
        let name = cut(name, DISCORD_FIELD_NAME);
        let value = discord_text(value, DISCORD_FIELD_VALUE);
        let need = chars(&name) + chars(&value);
        if need > *left || name.is_empty() || value.is_empty() {
            return;
        }
        *left -= need;
        fields.push(json!({"name": name, "value": value, "inline": inline}));
    };
    for (k, v) in &m.facts {
        add(k, if v.is_empty() { "—" } else { v }, true, &mut left);
    }
    for l in &m.lists {
        let value = fit_list("", l, DISCORD_FIELD_VALUE, |i| {
            format!("• {}", discord_text(i, DISCORD_FIELD_VALUE / 2))
        });
        add(&l.heading, &value, false, &mut left);
    }
    let mut embed = json!({
        "title": title,
        "description": description,
        "fields": fields,
        "footer": {"text": footer},
        "color": 0x5850ec,
    });
    if let Some(url) = &m.link {
        embed["url"] = json!(url);
    }
    let content = match m.link.as_deref().map(link_safe) {
        Some(url) => format!("**{}** · <{url}>", discord_text(&m.title, DISCORD_TITLE)),
        None => format!("**{}**", discord_text(&m.title, DISCORD_TITLE)),
    };
    json!({
        "content": cut(&content, DISCORD_CONTENT),
        "embeds": [embed],
        // A goal or event name is data, never a ping: no @everyone, no roles.
        "allowed_mentions": {"parse": []},
    })
}

// ---- Microsoft Teams (Workflows, Adaptive Card) -------------------------

fn teams(m: &Message) -> Value {
    let mut body = vec![
        json!({"type": "TextBlock", "text": m.title, "weight": "Bolder", "size": "Medium", "wrap": true}),
        json!({"type": "TextBlock", "text": m.sentence, "wrap": true}),
    ];
    if !m.facts.is_empty() {
        let facts: Vec<Value> = m
            .facts
            .iter()
            .map(|(k, v)| json!({"title": k, "value": v}))
            .collect();
        body.push(json!({"type": "FactSet", "facts": facts}));
    }
    for l in &m.lists {
        body.push(json!({"type": "TextBlock", "text": l.heading, "weight": "Bolder", "wrap": true, "spacing": "Medium"}));
        body.push(
            json!({"type": "TextBlock", "text": list_lines(l, "- ").join("\n"), "wrap": true}),
        );
    }
    body.push(json!({"type": "TextBlock", "text": m.footer, "isSubtle": true, "size": "Small", "wrap": true}));
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        // 1.4: what Teams renders on every client.
        "version": "1.4",
        "body": body,
        "msteams": {"width": "Full"},
    });
    if let Some(url) = &m.link {
        card["actions"] =
            json!([{"type": "Action.OpenUrl", "title": "Open the dashboard", "url": url}]);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    })
}

// ---- Google Chat (cardsV2) ----------------------------------------------

/// Card text takes a few HTML tags: `&`, `<` and `>` are escaped.
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

const GOOGLE_WIDGETS: usize = 100;

fn google_chat(m: &Message) -> Value {
    let mut sections =
        vec![json!({"widgets": [{"textParagraph": {"text": html_escape(&m.sentence)}}]})];
    let mut widgets = 1;
    let facts: Vec<Value> = m
        .facts
        .iter()
        .take(GOOGLE_WIDGETS / 2)
        .map(|(k, v)| json!({"decoratedText": {"topLabel": html_escape(k), "text": html_escape(v), "wrapText": true}}))
        .collect();
    if !facts.is_empty() {
        widgets += facts.len();
        sections.push(json!({"widgets": facts}));
    }
    for l in &m.lists {
        if widgets + 2 > GOOGLE_WIDGETS {
            break;
        }
        widgets += 1;
        let lines: Vec<String> = list_lines(l, "• ").iter().map(|s| html_escape(s)).collect();
        sections.push(json!({"header": html_escape(&l.heading), "widgets": [{"textParagraph": {"text": lines.join("<br>")}}]}));
    }
    if let Some(url) = &m.link {
        sections.push(json!({"widgets": [{"buttonList": {"buttons": [{"text": "Open the dashboard", "onClick": {"openLink": {"url": url}}}]}}]}));
    }
    sections.push(json!({"widgets": [{"textParagraph": {"text": format!("<font color=\"#80868b\">{}</font>", html_escape(&m.footer))}}]}));
    let mut card = Map::new();
    card.insert("header".into(), json!({"title": m.title}));
    card.insert("sections".into(), json!(sections));
    json!({
        // What notifications show, where the card cannot be.
        "fallbackText": format!("{} — {}", m.title, m.sentence),
        "cardsV2": [{"cardId": "plausible-webhooks", "card": card}],
    })
}

// ---- What a chat service's refusal says ---------------------------------

/// What a chat service said it refused, from its 4xx answer, for the
/// attempt log: Slack's text (`invalid_blocks`), Discord's
/// `{"code":50035,"errors":{"embeds":{"0":{"description":{"_errors":[…]}}}}}`
/// as the field's path and message, Teams' and Google Chat's
/// `{"error":{"message":…}}`. None when the answer names nothing.
pub fn refusal(format: Format, body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let json: Option<Value> = serde_json::from_str(text).ok();
    let said = match (format, &json) {
        (Format::Standard, _) => return None,
        (Format::Discord, Some(v)) => {
            let mut paths = Vec::new();
            if let Some(errors) = v.get("errors") {
                discord_errors(errors, String::new(), &mut paths);
            }
            if paths.is_empty() {
                text_of(v)?
            } else {
                paths.join("; ")
            }
        }
        (_, Some(v)) => text_of(v)?,
        // Slack answers in text: `invalid_blocks`, `no_text`, …
        (_, None) => text.lines().next().unwrap_or(text).to_string(),
    };
    Some(cut(&said, 300))
}

/// Discord's `errors` tree: `embeds.0.description: Must be 4096 or fewer in length.`
fn discord_errors(v: &Value, path: String, out: &mut Vec<String>) {
    let Value::Object(o) = v else { return };
    for (k, child) in o {
        if k == "_errors" {
            let msgs: Vec<String> = child
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| text(e, "message").or_else(|| text(e, "code")))
                .collect();
            out.push(format!("{path}: {}", msgs.join(", ")));
        } else {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            discord_errors(child, p, out);
        }
    }
}

/// `error.message`, `message`, or `error` of a JSON error answer.
fn text_of(v: &Value) -> Option<String> {
    let e = v.get("error");
    e.and_then(|e| text(e, "message"))
        .or_else(|| text(v, "message"))
        .or_else(|| e.and_then(Value::as_str).map(str::to_string))
        .or_else(|| Some(cut(&v.to_string(), 300)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutting_keeps_whole_characters_within_the_limit() {
        let s = "Größe — 東京 📈".repeat(50);
        for max in [0, 1, 2, 3, 7, 8, 9, 100, 299] {
            let c = cut(&s, max);
            assert!(chars(&c) <= max.max(1), "{max}: {c}");
            assert!(c.ends_with('…') || c.is_empty());
        }
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "ab…");
        // 📈 is two UTF-16 units: not split, left out whole.
        assert_eq!(cut("a📈b", 3), "a…");
    }

    #[test]
    fn slack_entities_and_discord_escapes_are_never_cut_in_half() {
        let t = slack_text(&"a&".repeat(10), 8);
        assert!(!t.contains("&am…") && chars(&t) <= 8, "{t}");
        let t = discord_text(&"a*".repeat(10), 6);
        assert!(
            !t.trim_end_matches('…').ends_with('\\') || t.trim_end_matches('…').ends_with("\\\\"),
            "{t}"
        );
    }

    #[test]
    fn refusals_name_the_field() {
        assert_eq!(
            refusal(Format::Slack, b"invalid_blocks").as_deref(),
            Some("invalid_blocks")
        );
        let d = br#"{"code": 50035, "errors": {"embeds": {"0": {"description": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 4096 or fewer in length."}]}}}}, "message": "Invalid Form Body"}"#;
        assert_eq!(
            refusal(Format::Discord, d).as_deref(),
            Some("embeds.0.description: Must be 4096 or fewer in length.")
        );
        let g = br#"{"error": {"code": 400, "message": "Invalid JSON payload received. Unknown name \"cards\"", "status": "INVALID_ARGUMENT"}}"#;
        assert!(refusal(Format::GoogleChat, g)
            .unwrap()
            .contains("Unknown name"));
        assert_eq!(refusal(Format::Teams, b"").as_deref(), None);
        assert_eq!(refusal(Format::Standard, b"x"), None);
    }

    #[test]
    fn a_link_cannot_end_its_markup_early() {
        assert_eq!(
            link_safe("https://p.example/a|b>c<d e"),
            "https://p.example/a%7Cb%3Ec%3Cd%20e"
        );
    }

    #[test]
    fn the_configs_format_names_are_these() {
        let names: Vec<&str> = Format::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(names, crate::config::MESSAGE_FORMATS);
    }

    #[test]
    fn url_hosts_are_hints() {
        assert!(Format::Slack
            .url_warning("https://hooks.slack.com/services/T/B/x")
            .is_none());
        assert!(Format::Slack
            .url_warning("https://127.0.0.1:8443/x")
            .is_some());
        assert!(Format::Teams
            .url_warning("https://prod-12.westeurope.logic.azure.com:443/workflows/x")
            .is_none());
        assert!(Format::Standard.url_warning("https://x").is_none());
    }
}
