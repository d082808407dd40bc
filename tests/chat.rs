//! Chat formats (docs/receiving.md#chat-formats): every event type, the
//! catalog's examples made by the engine's own code, long top lists and
//! non-ASCII names, rendered for Slack, Discord, Microsoft Teams (Workflows)
//! and Google Chat, and checked by a validator per service written from the
//! service's documentation; then delivered end to end, through the API and
//! the daemon, to a loopback receiver that refuses what the service would
//! refuse, as the service answers; and a refusal's field named in the
//! attempt log.

mod common;

use std::time::Duration;

use common::http::{free_port, request, wait_status, Answer};
use common::Env;
use plausible_webhooks::admin::auth::operator_token_hash;
use plausible_webhooks::admin::catalog::catalog;
use plausible_webhooks::delivery::chat::{self, Format};
use plausible_webhooks::delivery::signing::verify_legacy;
use plausible_webhooks::testkit::receiver::{Recorded, Reply};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);
const OPERATOR: &str = "operator-token-for-tests-0123456789";
const NAME: &str = "Größe — 東京 📈";

/// Length as the services count characters; UTF-16 units are never fewer.
fn len(s: &str) -> usize {
    s.encode_utf16().count()
}

fn str_at<'a>(v: &'a Value, key: &str, errors: &mut Vec<String>, path: &str) -> Option<&'a str> {
    match v.get(key) {
        Some(Value::String(s)) => Some(s),
        None => None,
        Some(_) => {
            errors.push(format!("{path}.{key}: not a string"));
            None
        }
    }
}

fn max(errors: &mut Vec<String>, path: &str, s: &str, limit: usize) {
    if len(s) > limit {
        errors.push(format!("{path}: {} characters, at most {limit}", len(s)));
    }
}

/// Slack, from <https://docs.slack.dev/messaging/sending-messages-using-incoming-webhooks>,
/// <https://docs.slack.dev/reference/block-kit/blocks> (at most 50 blocks),
/// <https://docs.slack.dev/reference/block-kit/blocks/section-block> (text
/// 3,000; fields at most 10 of 2,000; text or fields required),
/// <https://docs.slack.dev/reference/block-kit/blocks/header-block> (plain
/// text, 150), <https://docs.slack.dev/reference/block-kit/blocks/context-block>
/// (at most 10 elements), and
/// <https://docs.slack.dev/reference/methods/chat.postMessage> (`text` is
/// the notification's fallback when `blocks` are sent: we require it). Errors
/// as Slack answers them: `invalid_blocks`, `no_text`.
fn slack(v: &Value) -> Vec<String> {
    let mut e = Vec::new();
    let text = str_at(v, "text", &mut e, "");
    match text {
        Some(t) if !t.trim().is_empty() => max(&mut e, "text", t, 40_000),
        _ => e.push("no_text: `text`, the fallback, is missing".into()),
    }
    let Some(blocks) = v.get("blocks").and_then(Value::as_array) else {
        e.push("invalid_blocks: no blocks".into());
        return e;
    };
    if blocks.is_empty() || blocks.len() > 50 {
        e.push(format!("invalid_blocks: {} blocks, 1 to 50", blocks.len()));
    }
    let text_object =
        |o: &Value, path: &str, limit: usize, plain_only: bool, e: &mut Vec<String>| {
            let ty = o.get("type").and_then(Value::as_str);
            let ok = if plain_only {
                ty == Some("plain_text")
            } else {
                matches!(ty, Some("plain_text" | "mrkdwn"))
            };
            if !ok {
                e.push(format!("invalid_blocks: {path}.type {ty:?}"));
            }
            match o.get("text").and_then(Value::as_str) {
                Some(t) if !t.is_empty() => {
                    max(e, &format!("invalid_blocks: {path}.text"), t, limit)
                }
                _ => e.push(format!("invalid_blocks: {path}.text missing or empty")),
            }
        };
    for (i, b) in blocks.iter().enumerate() {
        let p = format!("blocks[{i}]");
        match b.get("type").and_then(Value::as_str) {
            Some("header") => text_object(&b["text"], &format!("{p}.text"), 150, true, &mut e),
            Some("section") => {
                let has_text = b.get("text").is_some();
                if has_text {
                    text_object(&b["text"], &format!("{p}.text"), 3_000, false, &mut e);
                }
                match b.get("fields").map(|f| f.as_array()) {
                    Some(Some(f)) => {
                        if f.is_empty() || f.len() > 10 {
                            e.push(format!("invalid_blocks: {p}.fields: {} (1 to 10)", f.len()));
                        }
                        for (j, x) in f.iter().enumerate() {
                            text_object(x, &format!("{p}.fields[{j}]"), 2_000, false, &mut e);
                        }
                    }
                    Some(None) => e.push(format!("invalid_blocks: {p}.fields not an array")),
                    None if !has_text => {
                        e.push(format!("invalid_blocks: {p} has neither text nor fields"))
                    }
                    None => {}
                }
            }
            Some("context") => {
                let els = b
                    .get("elements")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if els.is_empty() || els.len() > 10 {
                    e.push(format!(
                        "invalid_blocks: {p}.elements: {} (1 to 10)",
                        els.len()
                    ));
                }
                for (j, x) in els.iter().enumerate() {
                    text_object(x, &format!("{p}.elements[{j}]"), 3_000, false, &mut e);
                }
            }
            Some("divider") => {}
            other => e.push(format!("invalid_blocks: {p}.type {other:?}")),
        }
    }
    e
}

/// Discord, from <https://discord.com/developers/docs/resources/webhook#execute-webhook>
/// (one of content, embeds …; content at most 2,000; at most 10 embeds) and
/// <https://discord.com/developers/docs/resources/message#embed-object-embed-limits>
/// (title 256, description 4,096, at most 25 fields of name 256 and value
/// 1,024, footer 2,048, author 256; all of them together in all embeds at
/// most 6,000). Errors as Discord's 50035 names them.
fn discord(v: &Value) -> Vec<String> {
    let mut e = Vec::new();
    let content = str_at(v, "content", &mut e, "");
    if let Some(c) = content {
        max(&mut e, "content", c, 2_000);
    }
    let embeds = v
        .get("embeds")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if content.is_none_or(str::is_empty) && embeds.is_empty() {
        e.push("content: Cannot send an empty message".into());
    }
    if embeds.len() > 10 {
        e.push(format!("embeds: {} embeds, at most 10", embeds.len()));
    }
    let mut total = 0;
    for (i, em) in embeds.iter().enumerate() {
        let p = format!("embeds.{i}");
        let mut count = |key: &str, s: Option<&str>, limit: usize, e: &mut Vec<String>| {
            if let Some(s) = s {
                max(e, &format!("{p}.{key}"), s, limit);
                total += len(s);
            }
        };
        count(
            "title",
            em.get("title").and_then(Value::as_str),
            256,
            &mut e,
        );
        count(
            "description",
            em.get("description").and_then(Value::as_str),
            4_096,
            &mut e,
        );
        count(
            "footer.text",
            em.pointer("/footer/text").and_then(Value::as_str),
            2_048,
            &mut e,
        );
        count(
            "author.name",
            em.pointer("/author/name").and_then(Value::as_str),
            256,
            &mut e,
        );
        let fields = em
            .get("fields")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if fields.len() > 25 {
            e.push(format!("{p}.fields: {} fields, at most 25", fields.len()));
        }
        for (j, f) in fields.iter().enumerate() {
            let (n, val) = (
                f.get("name").and_then(Value::as_str),
                f.get("value").and_then(Value::as_str),
            );
            if n.is_none_or(str::is_empty) || val.is_none_or(str::is_empty) {
                e.push(format!("{p}.fields.{j}: name and value are required"));
            }
            count(&format!("fields.{j}.name"), n, 256, &mut e);
            count(&format!("fields.{j}.value"), val, 1_024, &mut e);
        }
        if let Some(u) = em.get("url").and_then(Value::as_str) {
            if !u.starts_with("https://") && !u.starts_with("http://") {
                e.push(format!("{p}.url: Not a well formed URL."));
            }
        }
    }
    if total > 6_000 {
        e.push(format!(
            "embeds: {total} characters in all embeds, at most 6000"
        ));
    }
    e
}

/// Microsoft Teams Workflows ("Post to a channel when a webhook request is
/// received"), from <https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/add-incoming-webhook>
/// and <https://learn.microsoft.com/en-us/connectors/teams/#known-issues-and-limitations>:
/// `{"type":"message","attachments":[{"contentType":"application/vnd.microsoft.card.adaptive","content":{AdaptiveCard}}]}`,
/// about 28 KB; the card per <https://adaptivecards.io/explorer/> (type
/// AdaptiveCard, a version, body elements of known types, TextBlock text,
/// FactSet facts of title and value, Action.OpenUrl with a url).
fn teams(v: &Value, bytes: usize) -> Vec<String> {
    let mut e = Vec::new();
    if bytes > 28 * 1024 {
        e.push(format!(
            "RequestEntityTooLarge: {bytes} bytes, about 28 KB at most"
        ));
    }
    if v.get("type").and_then(Value::as_str) != Some("message") {
        e.push("type: must be \"message\"".into());
    }
    let atts = v
        .get("attachments")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if atts.is_empty() {
        e.push("attachments: required".into());
    }
    for (i, a) in atts.iter().enumerate() {
        let p = format!("attachments[{i}]");
        if a.get("contentType").and_then(Value::as_str)
            != Some("application/vnd.microsoft.card.adaptive")
        {
            e.push(format!("{p}.contentType"));
        }
        let c = &a["content"];
        if c.get("type").and_then(Value::as_str) != Some("AdaptiveCard") {
            e.push(format!("{p}.content.type: must be AdaptiveCard"));
        }
        if c.get("version").and_then(Value::as_str).is_none() {
            e.push(format!("{p}.content.version: required"));
        }
        let body = c
            .get("body")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if body.is_empty() {
            e.push(format!("{p}.content.body: empty"));
        }
        for (j, b) in body.iter().enumerate() {
            match b.get("type").and_then(Value::as_str) {
                Some("TextBlock") => {
                    if b.get("text").and_then(Value::as_str).is_none() {
                        e.push(format!("{p}.content.body[{j}].text: required"));
                    }
                }
                Some("FactSet") => {
                    for f in b
                        .get("facts")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        if f.get("title").and_then(Value::as_str).is_none()
                            || f.get("value").and_then(Value::as_str).is_none()
                        {
                            e.push(format!(
                                "{p}.content.body[{j}].facts: title and value required"
                            ));
                        }
                    }
                }
                other => e.push(format!("{p}.content.body[{j}].type {other:?}")),
            }
        }
        for a in c
            .get("actions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if a.get("type").and_then(Value::as_str) != Some("Action.OpenUrl")
                || a.get("url").and_then(Value::as_str).is_none()
            {
                e.push(format!("{p}.content.actions: Action.OpenUrl with a url"));
            }
        }
    }
    e
}

/// Google Chat, from <https://developers.google.com/workspace/chat/create-messages>
/// (`text` and/or `cardsV2`; at most 32,000 bytes),
/// <https://developers.google.com/workspace/chat/api/reference/rest/v1/spaces.messages#Message>
/// (`cardsV2[].cardId` and `card`; `fallbackText`) and
/// <https://developers.google.com/workspace/chat/api/reference/rest/v1/cards>
/// (sections of widgets, at most 100 widgets a card, each widget one kind).
fn google_chat(v: &Value, bytes: usize) -> Vec<String> {
    let mut e = Vec::new();
    if bytes > 32_000 {
        e.push(format!("message: {bytes} bytes, at most 32000"));
    }
    let known = [
        "text",
        "cardsV2",
        "fallbackText",
        "thread",
        "accessoryWidgets",
    ];
    if let Some(o) = v.as_object() {
        for k in o.keys() {
            if !known.contains(&k.as_str()) {
                e.push(format!(
                    "Invalid JSON payload received. Unknown name \"{k}\""
                ));
            }
        }
    }
    let cards = v
        .get("cardsV2")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if v.get("text")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        && cards.is_empty()
    {
        e.push("message: text or cardsV2 required".into());
    }
    for (i, c) in cards.iter().enumerate() {
        let p = format!("cardsV2[{i}]");
        if cards.len() > 1 && c.get("cardId").and_then(Value::as_str).is_none() {
            e.push(format!("{p}.cardId: required with several cards"));
        }
        let sections = c
            .pointer("/card/sections")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if sections.is_empty() {
            e.push(format!("{p}.card.sections: empty"));
        }
        let mut widgets = 0;
        for (j, s) in sections.iter().enumerate() {
            for w in s
                .get("widgets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                widgets += 1;
                let kinds = [
                    "textParagraph",
                    "decoratedText",
                    "buttonList",
                    "divider",
                    "image",
                ];
                let obj = w.as_object().cloned().unwrap_or_default();
                if obj.len() != 1 || !kinds.contains(&obj.keys().next().map_or("", |k| k.as_str()))
                {
                    e.push(format!(
                        "{p}.card.sections[{j}].widgets: one known widget each"
                    ));
                }
                if let Some(b) = w.get("buttonList") {
                    for b in b
                        .get("buttons")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        if b.pointer("/onClick/openLink/url")
                            .and_then(Value::as_str)
                            .is_none()
                        {
                            e.push(format!(
                                "{p}.card.sections[{j}]: a button needs onClick.openLink.url"
                            ));
                        }
                    }
                }
            }
        }
        if widgets > 100 {
            e.push(format!("{p}: {widgets} widgets, at most 100"));
        }
    }
    e
}

/// What the service would say of `body`: nothing when it would take it.
fn check(format: Format, body: &[u8]) -> Vec<String> {
    let Ok(text) = std::str::from_utf8(body) else {
        return vec!["the body is not UTF-8".into()];
    };
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return vec!["the body is not JSON".into()];
    };
    let mut e = match format {
        Format::Slack => slack(&v),
        Format::Discord => discord(&v),
        Format::Teams => teams(&v, body.len()),
        Format::GoogleChat => google_chat(&v, body.len()),
        Format::Standard => Vec::new(),
    };
    if text.contains('\u{FFFD}') {
        e.push("a character was split (U+FFFD in the body)".into());
    }
    e
}

const CHATS: [Format; 4] = [
    Format::Slack,
    Format::Discord,
    Format::Teams,
    Format::GoogleChat,
];

/// Every built-in type's example (the engine's own), then the same made
/// long and non-ASCII, and a host's own type: (event type, data).
fn events() -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> =
        catalog().into_iter().map(|e| (e.name, e.example)).collect();
    // Past every per-field limit (long), and repeated within the smallest
    // payload limits the database keeps (medium).
    let long = NAME.repeat(300);
    let medium = NAME.repeat(20);
    let ranked = |key: &str| -> Value {
        (0..300)
            .map(|i| json!({key: format!("{NAME} {i} {}", "ü".repeat(i % 50)), "visitors": 10_000 - i}))
            .collect()
    };
    for (t, data) in out.clone() {
        let mut d = data.clone();
        let o = d.as_object_mut().unwrap();
        for k in [
            "goal_name",
            "event_name",
            "pathname",
            "webhook_name",
            "reason",
            "last_error",
            "message",
            "error",
            "source",
        ] {
            if o.contains_key(k) {
                o.insert(k.into(), json!(long));
            }
        }
        if t == "visitor_spike" {
            o.insert("top_sources".into(), ranked("source"));
            o.insert("top_pages".into(), ranked("page"));
        }
        if let Some(occ) = o.get("occurrences").and_then(Value::as_array).cloned() {
            let many: Vec<Value> = std::iter::repeat_n(occ[0].clone(), 50)
                .map(|mut x| {
                    x["pathname"] = json!(format!("/{medium}"));
                    if x.get("goal_name").is_some() {
                        x["goal_name"] = json!(medium);
                    }
                    x
                })
                .collect();
            o.insert("occurrences".into(), json!(many));
            o.insert("more".into(), json!(12_345));
        }
        for k in ["custom_props", "props"] {
            if o.contains_key(k) {
                let props: serde_json::Map<String, Value> = (0..60)
                    .map(|i| (format!("{NAME}{i}"), json!(medium)))
                    .collect();
                o.insert(k.into(), Value::Object(props));
            }
        }
        out.push((t, d));
    }
    let host: serde_json::Map<String, Value> = (0..400)
        .map(|i| (format!("key_{i}_{NAME}"), json!({"nested": [NAME, i]})))
        .collect();
    out.push((
        "plausible.site_created".into(),
        json!({"domain": "example.com", "plan": NAME}),
    ));
    out.push(("billing.something_long".into(), Value::Object(host)));
    out
}

/// Each event, in each chat format, is a message the service takes: within
/// every documented limit, whole characters only, the readable sentence
/// and the site's link where there is one.
#[test]
fn every_event_type_renders_within_each_services_documented_limits() {
    let at = time::macros::datetime!(2026-01-01 12:00:00 UTC);
    let events = events();
    assert!(events.len() >= 2 * 16 + 2, "{}", events.len());
    // Each message is written out for a person to look at (the long ones
    // as `…-long.json`).
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("chat-samples");
    std::fs::create_dir_all(&dir).unwrap();
    let mut seen = std::collections::HashSet::new();
    for (event, data) in &events {
        let ctx = chat::Context {
            event,
            site: "example.com",
            at,
            plausible_base_url: "https://plausible.example.com",
        };
        let suffix = if seen.insert(event.clone()) {
            ""
        } else {
            "-long"
        };
        for f in CHATS {
            let body = chat::render(f, &ctx, &data.to_string()).expect("a chat format");
            let pretty =
                serde_json::to_string_pretty(&serde_json::from_slice::<Value>(&body).unwrap())
                    .unwrap();
            std::fs::write(
                dir.join(format!("{event}-{}{suffix}.json", f.as_str())),
                pretty,
            )
            .unwrap();
            let errors = check(f, &body);
            assert!(
                errors.is_empty(),
                "{event} as {f:?}: {errors:?}\n{}",
                String::from_utf8_lossy(&body)
            );
            let text = String::from_utf8(body).unwrap();
            // The link to the site's dashboard, on every message of a site;
            // the analytics source's health is no site's (operator only).
            assert_eq!(
                text.contains("https://plausible.example.com/example.com"),
                !event.starts_with("analytics."),
                "{event} as {f:?}: {text}"
            );
        }
        let m = chat::message(&ctx, data);
        assert!(!m.title.is_empty() && !m.sentence.is_empty(), "{event}");
    }
    // The analytics source's health reads as such, not as a host's type.
    for (event, title) in [
        ("analytics.unavailable", "Analytics cannot be read"),
        ("analytics.incompatible", "Analytics refuses a statement"),
        ("analytics.recovered", "Analytics can be read again"),
    ] {
        let data = &events.iter().find(|(t, _)| t == event).unwrap().1;
        let ctx = chat::Context {
            event,
            site: "",
            at,
            plausible_base_url: "https://plausible.example.com",
        };
        let m = chat::message(&ctx, data);
        assert!(m.title.contains(title), "{event}: {m:?}");
        assert!(
            m.facts.iter().any(|(k, v)| k == "Source" && !v.is_empty()),
            "{event}: {m:?}"
        );
    }
    // A spike names its figures and its top lists, the long ones cut with
    // what was left out counted.
    let spike = events.iter().rfind(|(t, _)| t == "visitor_spike").unwrap();
    let ctx = chat::Context {
        event: "visitor_spike",
        site: "example.com",
        at,
        plausible_base_url: "",
    };
    let slack_body: Value =
        serde_json::from_slice(&chat::render(Format::Slack, &ctx, &spike.1.to_string()).unwrap())
            .unwrap();
    let all = slack_body.to_string();
    assert!(
        all.contains("Top sources") && all.contains("Top pages"),
        "{all}"
    );
    assert!(
        all.contains(&format!("{NAME} 0 ")) && all.contains("and 290 more"),
        "{all}"
    );
    assert!(
        all.contains("Visitor spike on example.com") && all.contains("unique visitors"),
        "{all}"
    );
    // The catalog's example says 120 visitors against a threshold of 100.
    let example = &events.iter().find(|(t, _)| t == "visitor_spike").unwrap().1;
    let m = chat::message(&ctx, example);
    assert!(
        m.sentence.starts_with("120 unique visitors"),
        "{}",
        m.sentence
    );
    assert_eq!(
        m.link.as_deref(),
        Some("https://plausible.example.com/example.com?period=realtime")
    );
    // A host's own type: its name and its keys.
    let host = chat::message(
        &chat::Context {
            event: "plausible.site_created",
            site: "example.com",
            at,
            plausible_base_url: "",
        },
        &json!({"domain": "example.com", "plan": NAME}),
    );
    assert!(host.title.contains("plausible.site_created"), "{host:?}");
    assert!(
        host.facts.contains(&("plan".to_string(), NAME.to_string())),
        "{host:?}"
    );
}

// ---- End to end -------------------------------------------------------

struct Api {
    env: Env,
    base: String,
    _daemon: common::DaemonProcess,
    /// The daemon's log, at info.
    log: std::path::PathBuf,
}

impl Api {
    async fn start() -> Api {
        let env = Env::new().await;
        let listen = format!("127.0.0.1:{}", free_port());
        let tokens = format!("[\"{}\"]", operator_token_hash(OPERATOR));
        let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("chat-daemon-{}.log", uuid::Uuid::new_v4().simple()));
        let daemon = env.spawn_daemon_logging(
            &[
                ("PLAUSIBLE_WEBHOOKS__ADMIN__LISTEN", listen.as_str()),
                ("PLAUSIBLE_WEBHOOKS__ADMIN__OPERATOR_TOKEN_SHA256", &tokens),
                (
                    "PLAUSIBLE_WEBHOOKS__PLAUSIBLE__BASE_URL",
                    "https://plausible.example.com",
                ),
                ("PLAUSIBLE_WEBHOOKS__LOG__LEVEL", "info"),
            ],
            Some(&log),
        );
        let base = format!("http://{listen}");
        wait_status(&format!("{base}/readyz"), 200, T).await;
        Api {
            env,
            base,
            _daemon: daemon,
            log,
        }
    }

    async fn op(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        request(
            method,
            &format!("{}{path}", self.base),
            Some(OPERATOR),
            body.as_ref(),
        )
        .await
        .unwrap()
    }
}

/// Where a webhook of format `f` posts: its name, then a credential, as
/// chat services' URLs carry one.
fn path_of(f: Format) -> String {
    format!("/{}/T0000/B0000/{TOKEN}", f.as_str())
}
const TOKEN: &str = "chat-credential-in-the-path";

fn format_of_path(path: &str) -> Format {
    let name = path.trim_start_matches('/').split('/').next().unwrap_or("");
    Format::parse(name).expect("a chat path")
}

/// The loopback service: refuses what the service would, as it answers
/// (Slack in text, Discord's 50035, Google's JSON error, Teams' 400).
fn service(r: &Recorded) -> Reply {
    let f = format_of_path(&r.path);
    let errors = check(f, &r.body);
    if errors.is_empty() {
        return Reply::Status(200);
    }
    let body = match f {
        Format::Discord => json!({"code": 50035, "message": "Invalid Form Body", "errors": {"_": {"_errors": [{"code": "X", "message": errors.join("; ")}]}}}).to_string(),
        Format::Slack => errors.join("\n"),
        _ => json!({"error": {"code": 400, "message": errors.join("; ")}}).to_string(),
    };
    Reply::Full {
        status: 400,
        headers: vec![],
        body: body.into_bytes(),
    }
}

/// A webhook of each chat format, made through the API, receives every
/// event type (the long and non-ASCII ones too) as a message its service
/// takes, signed over the bytes sent; its test shows the message; a format
/// the daemon does not know is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_webhooks_deliver_signed_messages_each_service_accepts() {
    let api = Api::start().await;
    let rx = api.env.receiver(std::sync::Arc::new(service)).await;
    let bad = api
        .op("POST", "/api/webhooks", Some(json!({"site_id": "example.com", "name": "x", "url": rx.url("/slack"), "format": "irc"})))
        .await;
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert!(
        bad.text.contains("format") && bad.text.contains("google_chat"),
        "{}",
        bad.text
    );
    // The column takes only the formats the daemon knows, whoever writes it.
    let e = api
        .env
        .db
        .execute(
            "INSERT INTO webhooks (site_id, name, url, secret, format) VALUES ($1, 'x', 'https://x.example', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'irc')",
            &[&api.env.site_id],
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("webhooks_format") || format!("{e:?}").contains("webhooks_format"),
        "{e:?}"
    );
    let mut secrets = std::collections::HashMap::new();
    for f in CHATS {
        let a = api
            .op(
                "POST",
                "/api/webhooks",
                Some(
                    json!({"site_id": "example.com", "name": format!("{NAME} {}", f.as_str()),
                            "url": rx.url(&path_of(f)), "format": f.as_str(), "events": ["*"]}),
                ),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        let c = a.json();
        assert_eq!(c["webhook"]["format"], f.as_str());
        // A loopback URL is not the service's: said, and sent anyway.
        assert!(c["warnings"].to_string().contains("is not one"), "{c}");
        secrets.insert(f, c["secret"].as_str().unwrap().to_string());
        let id = c["webhook"]["id"].as_str().unwrap().to_string();
        // The test button: the message as the channel shows it, and the body.
        let t = api
            .op("POST", &format!("/api/webhooks/{id}/test"), None)
            .await;
        let t = t.json();
        assert_eq!(t["success"], true, "{f:?}: {t}");
        assert!(
            t["preview"]
                .as_str()
                .unwrap()
                .contains("Test from plausible-webhooks"),
            "{t}"
        );
        let sent: Value = serde_json::from_str(t["body"].as_str().unwrap()).unwrap();
        assert!(check(f, sent.to_string().as_bytes()).is_empty(), "{sent}");
    }
    // `test` is the test button's, sent above.
    let events: Vec<(String, Value)> = events().into_iter().filter(|(t, _)| t != "test").collect();
    for (event, data) in &events {
        let sent: i64 = api
            .env
            .db
            .query_one(
                "SELECT count(*) FROM webhook_enqueue($1, $2, $3)",
                &[&api.env.site_id, event, data],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(sent, 4, "{event}");
    }
    let n = events.len() * 4;
    api.env
        .wait_until(
            &format!("SELECT count(*) = {n} FROM webhook_deliveries WHERE status = 'success' AND event_type <> 'test'"),
            T,
        )
        .await;
    let seen = rx.requests();
    assert_eq!(seen.len(), n + 4, "one request each, none refused");
    for r in &seen {
        let f = format_of_path(&r.path);
        assert!(check(f, &r.body).is_empty());
        // Still signed, over the bytes sent.
        let sig = r.header("x-webhook-signature").expect("signed");
        assert!(verify_legacy(&secrets[&f], &r.body, sig), "{f:?}");
        assert!(r.header("webhook-signature").is_some() && r.header("webhook-id").is_some());
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    // The non-ASCII name arrives whole in every service's message.
    for f in CHATS {
        let any = seen
            .iter()
            .filter(|r| format_of_path(&r.path) == f)
            .any(|r| String::from_utf8_lossy(&r.body).contains(NAME));
        assert!(any, "{f:?}");
    }
    // Chat URLs are credentials: the daemon's log never has them whole.
    let log = std::fs::read_to_string(&api.log).unwrap();
    assert!(log.contains("delivered"), "logged at info");
    assert!(!log.contains(TOKEN), "{log}");
}

/// A chat service's 4xx names the field it refused in the attempt log:
/// Slack's text, Discord's error tree, Google Chat's and Teams' message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_services_refusal_names_the_field_in_the_attempt_log() {
    let api = Api::start().await;
    let rx = api
        .env
        .receiver(std::sync::Arc::new(|r: &Recorded| {
            let body = match format_of_path(&r.path) {
                Format::Slack => "invalid_blocks".to_string(),
                Format::Discord => r#"{"code": 50035, "errors": {"embeds": {"0": {"description": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 4096 or fewer in length."}]}}}}, "message": "Invalid Form Body"}"#.into(),
                Format::GoogleChat => r#"{"error": {"code": 400, "message": "Invalid JSON payload received. Unknown name \"cards\": Cannot find field.", "status": "INVALID_ARGUMENT"}}"#.into(),
                _ => r#"{"error": {"code": "InvalidRequestContent", "message": "The input body for trigger 'manual' of type 'Request' did not match its schema definition."}}"#.into(),
            };
            Reply::Full { status: 400, headers: vec![], body: body.into_bytes() }
        }))
        .await;
    for f in CHATS {
        let a = api
            .op(
                "POST",
                "/api/webhooks",
                Some(json!({"site_id": "example.com", "name": f.as_str(), "url": rx.url(&path_of(f)),
                            "format": f.as_str(), "events": ["plausible.thing"], "retry_schedule_secs": []})),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
    }
    api.env
        .db
        .execute(
            "SELECT webhook_enqueue($1, 'plausible.thing', '{\"a\": 1}')",
            &[&api.env.site_id],
        )
        .await
        .unwrap();
    api.env
        .wait_until(
            "SELECT count(*) = 4 FROM webhook_deliveries WHERE status = 'failed'",
            T,
        )
        .await;
    let rows = api
        .env
        .db
        .query(
            "SELECT w.format, a.error FROM webhook_delivery_attempts a
             JOIN webhook_deliveries d ON d.id = a.delivery_id JOIN webhooks w ON w.id = d.webhook_id",
            &[],
        )
        .await
        .unwrap();
    let errors: std::collections::HashMap<String, String> = rows
        .iter()
        .map(|r| (r.get(0), r.get::<_, Option<String>>(1).unwrap_or_default()))
        .collect();
    assert_eq!(
        errors["slack"],
        "HTTP 400: Slack refused the message: invalid_blocks"
    );
    assert!(
        errors["discord"].contains("embeds.0.description: Must be 4096 or fewer in length."),
        "{errors:?}"
    );
    assert!(
        errors["google_chat"].contains("Unknown name \"cards\""),
        "{errors:?}"
    );
    assert!(
        errors["teams"].contains("did not match its schema definition"),
        "{errors:?}"
    );
    let log = std::fs::read_to_string(&api.log).unwrap();
    assert!(
        log.contains("Must be 4096 or fewer"),
        "the refusal is logged too"
    );
    assert!(!log.contains(TOKEN), "{log}");
}

/// The CLI, as `tests/admin.rs` runs it: the binary against the test database.
async fn pw(env: &Env, args: &[&str]) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_plausible-webhooks"));
    cmd.env_remove("PLAUSIBLE_WEBHOOKS_CONFIG")
        .env_remove("RUST_LOG");
    for (k, v) in env.daemon_env() {
        cmd.env(k, v);
    }
    cmd.args(args).stdin(std::process::Stdio::null());
    let o = cmd.output().await.expect("running the binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// The CLI sets the format (create and update), shows it, refuses one it
/// does not know by name, and its test prints the message as the channel
/// shows it and the body sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_shows_and_tests_a_chat_format() {
    let env = Env::new().await;
    let rx = env.receiver(std::sync::Arc::new(service)).await;
    let url = rx.url(&path_of(Format::Slack));
    let (ok, out) = pw(
        &env,
        &[
            "create",
            "--site",
            "example.com",
            "--name",
            NAME,
            "--url",
            &url,
            "--format",
            "IRC",
        ],
    )
    .await;
    assert!(
        !ok && out.contains("format") && out.contains("google_chat"),
        "{out}"
    );
    let (ok, out) = pw(
        &env,
        &[
            "--json",
            "create",
            "--site",
            "example.com",
            "--name",
            NAME,
            "--url",
            &url,
            "--format",
            "slack",
            "--trigger",
            "spike",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let c: Value = serde_json::from_str(&out).unwrap();
    let wh = c["webhook"]["id"].as_str().unwrap().to_string();
    assert_eq!(c["webhook"]["format"], "slack");
    let (ok, out) = pw(&env, &["show", &wh]).await;
    assert!(
        ok && out
            .lines()
            .any(|l| l.starts_with("format:") && l.ends_with("slack")),
        "{out}"
    );
    let (ok, out) = pw(&env, &["test", &wh]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("the slack message, as the channel shows it:"),
        "{out}"
    );
    assert!(out.contains("| 🧪 Test from plausible-webhooks"), "{out}");
    assert!(
        out.contains("| What this webhook receives looks like:"),
        "{out}"
    );
    assert!(out.contains("📈 Visitor spike on example.com"), "{out}");
    assert!(out.contains("\"blocks\""), "{out}");
    // Changed, the next message is the new service's (the receiver checks it).
    let url = rx.url(&path_of(Format::Discord));
    let (ok, out) = pw(&env, &["update", &wh, "--format", "discord", "--url", &url]).await;
    assert!(ok, "{out}");
    let (ok, out) = pw(&env, &["test", &wh]).await;
    assert!(ok && out.contains("\"embeds\""), "{out}");
    let seen = rx.wait_for(2, T).await.unwrap();
    assert!(seen
        .iter()
        .all(|r| check(format_of_path(&r.path), &r.body).is_empty()));
}
