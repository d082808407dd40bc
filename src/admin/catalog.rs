//! The catalog of built-in event types (docs/events.md): each one's name,
//! what makes it, a JSON Schema of its `data` and an example made by the
//! code that makes the real events, so the example and the schema cannot
//! drift from what receivers get (tests/events.rs validates real payloads
//! against these schemas).
//!
//! Any other name in the event type format (`validate::event_type`) is a
//! host event type: Plausible (or anything writing to the database)
//! publishes it with `webhook_enqueue`, with no registration; its `data` is
//! whatever the publisher writes.

use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::triggers::source::checker as analytics;
use crate::triggers::{evaluator, goal_scanner, tracking, ThresholdKind};

/// One built-in event type.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventTypeView {
    /// The name a subscription names (`goal_completion`).
    pub name: String,
    /// What it says, in a sentence.
    pub summary: String,
    /// What makes it: a trigger type, the daemon, or the test button.
    pub made_by: String,
    /// Whether a webhook subscribes to it (`test` is sent on request only).
    pub subscribable: bool,
    /// JSON Schema (2020-12) of the envelope's `data`.
    #[schema(value_type = Object)]
    pub schema: Value,
    /// A `data` as real events have it.
    #[schema(value_type = Object)]
    pub example: Value,
}

/// `{"event_types": [...]}`: `GET /api/event-types` and `event-types --json`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventTypeList {
    pub event_types: Vec<EventTypeView>,
}

/// The Plausible address examples and test samples link to: real spikes
/// and drops carry a `dashboard_url` when `plausible.base_url` is set, so
/// the samples show one.
const EXAMPLE_PLAUSIBLE_URL: &str = "https://plausible.example.com";

/// A JSON Schema object with `required` and `optional` properties; no others
/// unless `open` (a host may add keys to what it publishes).
fn object(required: &[(&str, Value)], optional: &[(&str, Value)]) -> Value {
    let mut props = serde_json::Map::new();
    for (k, v) in required.iter().chain(optional) {
        props.insert((*k).to_string(), v.clone());
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": required.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        "properties": props,
        "additionalProperties": false,
    })
}

fn string() -> Value {
    json!({"type": "string"})
}
fn time() -> Value {
    json!({"type": "string", "format": "date-time"})
}
fn uuid() -> Value {
    json!({"type": "string", "format": "uuid"})
}
fn integer() -> Value {
    json!({"type": "integer"})
}
fn ranked(key: &str) -> Value {
    json!({"type": "array", "maxItems": 3, "items": {
        "type": "object", "required": [key, "visitors"], "additionalProperties": false,
        "properties": {key: {"type": "string"}, "visitors": {"type": "integer"}}}})
}

/// The `data` of a spike or a drop.
fn traffic_schema(spike: bool) -> Value {
    let mut optional = vec![("dashboard_url", string())];
    if spike {
        optional.push(("top_sources", ranked("source")));
        optional.push(("top_pages", ranked("page")));
    }
    object(
        &[
            ("trigger_id", uuid()),
            ("visitors", integer()),
            ("threshold", integer()),
            (
                "threshold_source",
                json!({"enum": ["configured", "derived"]}),
            ),
            ("window_secs", integer()),
            ("window_start", time()),
            ("window_end", time()),
            ("baseline_visitors", json!({"type": "number"})),
            ("baseline_days", integer()),
            ("change_percent", json!({"type": ["number", "null"]})),
        ],
        &optional,
    )
}

fn props() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string"}})
}

/// The `data` of `site.tracking_stopped` (`stopped`) or
/// `site.tracking_resumed`.
fn tracking_schema(stopped: bool) -> Value {
    let mut required = vec![
        ("trigger_id", uuid()),
        ("domain", string()),
        ("last_event_at", nullable_time()),
        ("window_secs", integer()),
        ("silent_secs", json!({"type": ["integer", "null"]})),
    ];
    if stopped {
        required.extend([
            ("detected_at", time()),
            ("baseline_visitors", json!({"type": "number"})),
            (
                "baseline_days_with_visitors",
                json!({"type": "integer", "minimum": tracking::USUAL_DAYS, "maximum": evaluator::BASELINE_DAYS}),
            ),
            ("baseline_days", integer()),
        ]);
    } else {
        required.extend([("stopped_at", nullable_time()), ("resumed_at", time())]);
    }
    object(&required, &[("dashboard_url", string())])
}

/// The `data` of a goal or custom-event digest.
fn digest_schema(custom: bool) -> Value {
    let mut occurrence = vec![("occurred_at", time()), ("pathname", string())];
    let mut required = vec![
        ("trigger_id", uuid()),
        ("window_start", time()),
        ("window_end", time()),
        ("count", json!({"type": "integer", "minimum": 1})),
        ("more", json!({"type": "integer", "minimum": 0})),
    ];
    if custom {
        required.push(("event_name", string()));
        required.push(("props", props()));
    } else {
        required.push(("goal_id", json!({"type": ["integer", "null"]})));
        occurrence.push(("goal_id", integer()));
        occurrence.push(("goal_name", string()));
    }
    let mut item = object(&occurrence, &[]);
    item.as_object_mut().expect("an object").remove("$schema");
    required.push((
        "occurrences",
        json!({"type": "array", "maxItems": crate::triggers::goal_scanner::DIGEST_SAMPLE, "items": item}),
    ));
    object(&required, &[])
}

fn nullable_string() -> Value {
    json!({"type": ["string", "null"]})
}
fn nullable_time() -> Value {
    json!({"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]})
}

/// An operational event's `data`: which webhook it is about (as the SQL of
/// sql/0014 writes it, `plausible_webhooks_about`), then its own keys.
fn operational_schema(own: &[(&str, Value)]) -> Value {
    let mut required = vec![
        ("webhook_id", uuid()),
        ("webhook_name", string()),
        ("site_id", string()),
        ("plausible_site_id", integer()),
        ("url_host", string()),
    ];
    required.extend(own.iter().cloned());
    object(&required, &[])
}

/// A sample of an operational event, as sql/0014 makes them (tests compare
/// the keys with real ones).
fn operational_sample(event_type: &str) -> Option<Value> {
    let mut about = json!({
        "webhook_id": "6f1c1c52-3bd5-4a8e-9f4e-2f0b9f2a8c11",
        "webhook_name": "Slack alerts",
        "site_id": "example.com",
        "plausible_site_id": 1,
        "url_host": "hooks.example.com",
    });
    let own = match event_type {
        "webhook.failing" => json!({
            "consecutive_failures": 1,
            "failing_since": "2026-01-01T12:00:00Z",
            "last_error": "HTTP 500",
        }),
        "webhook.disabled" => json!({
            "reason": "20 consecutive deliveries failed since 2025-12-31 12:00:00+00",
            "disabled_at": "2026-01-01T12:00:00Z",
            "consecutive_failures": 20,
            "failing_since": "2025-12-31T12:00:00Z",
            "last_error": "HTTP 500",
        }),
        "webhook.recovered" => json!({
            "failed_deliveries": 3,
            "failing_since": "2026-01-01T11:00:00Z",
            "recovered_at": "2026-01-01T12:00:00Z",
        }),
        "delivery.exhausted" => json!({
            "delivery_id": "0b5e1f7c-8d2a-4c3e-b1a9-7e6d5c4b3a21",
            "event_type": "goal_completion",
            "attempts": 4,
            "last_response_code": 500,
            "last_error": "HTTP 500",
            "created_at": "2026-01-01T11:00:00Z",
        }),
        _ => return None,
    };
    let obj = about.as_object_mut().expect("an object");
    obj.extend(own.as_object().expect("an object").clone());
    Some(about)
}

/// Every built-in event type, with examples made by the engine.
pub fn catalog() -> Vec<EventTypeView> {
    let mut all = subscribable();
    all.push(EventTypeView {
        name: "test".into(),
        summary: "A test event sent on request (the CLI's test, the API's POST …/test, the page's button), with a sample of each event type the webhook receives.".into(),
        made_by: "a test send".into(),
        subscribable: false,
        schema: object(
            &[
                ("test", json!({"const": true})),
                ("message", string()),
                ("samples", json!({"type": "object"})),
            ],
            &[("samples_left_out", json!({"type": "array", "items": {"type": "string"}}))],
        ),
        example: test_payload(&["goal_completion".into()]),
    });
    all.extend(analytics_types());
    all
}

/// The analytics source's health: to the operator endpoint only, so no
/// webhook subscribes to them (the source is the deployment's, not a site's).
fn analytics_types() -> Vec<EventTypeView> {
    const MADE_BY: &str = "the daemon's analytics source check (to the operator endpoint only)";
    let failing = || {
        object(
            &[
                ("source", string()),
                ("error", string()),
                ("since", time()),
                ("triggers", string()),
                ("deliveries", json!({"const": "go on"})),
            ],
            &[],
        )
    };
    let entry = |name: &str, summary: &str, schema: Value| EventTypeView {
        name: name.into(),
        summary: summary.into(),
        made_by: MADE_BY.into(),
        subscribable: false,
        schema,
        example: sample(name).expect("a built-in type"),
    };
    vec![
        entry(
            analytics::UNAVAILABLE,
            "The analytics source cannot be asked (unreachable, timing out, refusing the credentials): triggers wait and are retried, deliveries go on. Once per outage, for the whole deployment.",
            failing(),
        ),
        entry(
            analytics::INCOMPATIBLE,
            "The analytics source refuses a statement triggers send (a missing column, an old engine): triggers cannot work and /readyz answers 503 until it is fixed; deliveries go on. Once per outage.",
            failing(),
        ),
        entry(
            analytics::RECOVERED,
            "The analytics source answers every statement again after analytics.unavailable or analytics.incompatible.",
            object(
                &[
                    ("source", string()),
                    ("version", string()),
                    ("was", json!({"enum": ["unavailable", "incompatible"]})),
                    ("failing_since", time()),
                    ("recovered_at", time()),
                ],
                &[],
            ),
        ),
    ]
}

/// The built-in types a webhook subscribes to.
fn subscribable() -> Vec<EventTypeView> {
    let entry =
        |name: &str, summary: &str, made_by: &str, schema: Value, example: Value| EventTypeView {
            name: name.into(),
            summary: summary.into(),
            made_by: made_by.into(),
            subscribable: true,
            schema,
            example,
        };
    vec![
        entry(
            "goal_completion",
            "A visitor completed one of the site's Plausible goals (one event per completion).",
            "a goal_completion trigger",
            object(
                &[
                    ("trigger_id", uuid()),
                    ("goal_id", integer()),
                    ("goal_name", string()),
                    ("goal_type", json!({"enum": ["event", "page", "scroll"]})),
                    ("matched", string()),
                    ("pathname", string()),
                    ("occurred_at", time()),
                    ("visitor_count", json!({"const": 1})),
                ],
                &[
                    ("custom_props", json!({"type": "object", "additionalProperties": {"type": "string"}})),
                    ("scroll_threshold", integer()),
                ],
            ),
            sample("goal_completion").expect("a built-in type"),
        ),
        entry(
            "goal_completion_digest",
            "A goal trigger in digest mode: per window, how many completions there were and the first of them (none sent for an empty window).",
            "a goal_completion trigger with mode digest",
            digest_schema(false),
            sample("goal_completion_digest").expect("a built-in type"),
        ),
        entry(
            "custom_event",
            "A visitor's browser sent the named Plausible custom event, with the props the trigger asks for (one event per occurrence).",
            "a custom_event trigger",
            object(
                &[
                    ("trigger_id", uuid()),
                    ("event_name", string()),
                    ("props", props()),
                    ("pathname", string()),
                    ("occurred_at", time()),
                    ("visitor_count", json!({"const": 1})),
                ],
                &[],
            ),
            sample("custom_event").expect("a built-in type"),
        ),
        entry(
            "custom_event_digest",
            "A custom-event trigger in digest mode: per window, how many times the event was sent and the first occurrences (none sent for an empty window).",
            "a custom_event trigger with mode digest",
            digest_schema(true),
            sample("custom_event_digest").expect("a built-in type"),
        ),
        entry(
            "webhook.failing",
            "One of the site's webhooks: a streak of deliveries that failed for good reached [health] failing_after_failures (once per streak); its status is failing until it recovers or is disabled.",
            "the daemon (to the operator endpoint and subscribed webhooks, never the one it is about)",
            operational_schema(&[
                ("consecutive_failures", integer()),
                ("failing_since", time()),
                ("last_error", nullable_string()),
            ]),
            sample("webhook.failing").expect("a built-in type"),
        ),
        entry(
            "webhook.disabled",
            "One of the site's webhooks was disabled: automatically after [health] disable_after_failures, by a 410 Gone, or by hand; why, when and the last error.",
            "the daemon (to the operator endpoint and subscribed webhooks, never the one it is about)",
            operational_schema(&[
                ("reason", string()),
                ("disabled_at", time()),
                ("consecutive_failures", integer()),
                ("failing_since", nullable_time()),
                ("last_error", nullable_string()),
            ]),
            sample("webhook.disabled").expect("a built-in type"),
        ),
        entry(
            "webhook.recovered",
            "A webhook that was failing delivered again.",
            "the daemon (to the operator endpoint and subscribed webhooks, never the one it is about)",
            operational_schema(&[
                ("failed_deliveries", integer()),
                ("failing_since", nullable_time()),
                ("recovered_at", time()),
            ]),
            sample("webhook.recovered").expect("a built-in type"),
        ),
        entry(
            "delivery.exhausted",
            "A delivery to one of the site's webhooks failed for good: every attempt of its retry schedule failed, or the receiver's answer was final.",
            "the daemon (to the operator endpoint and subscribed webhooks, never the one it is about)",
            operational_schema(&[
                ("delivery_id", uuid()),
                ("event_type", string()),
                ("attempts", integer()),
                ("last_response_code", json!({"type": ["integer", "null"]})),
                ("last_error", nullable_string()),
                ("created_at", time()),
            ]),
            sample("delivery.exhausted").expect("a built-in type"),
        ),
        entry(
            tracking::STOPPED,
            "A site that normally has visitors at this time of day (on most of the previous 7 days, in its timezone) received no event for the trigger's window: its script was removed or broke. Once per outage.",
            "a tracking_stopped trigger",
            tracking_schema(true),
            sample(tracking::STOPPED).expect("a built-in type"),
        ),
        entry(
            tracking::RESUMED,
            "A site whose tracking had stopped (site.tracking_stopped was sent) received events again. Once per outage.",
            "a tracking_stopped trigger",
            tracking_schema(false),
            sample(tracking::RESUMED).expect("a built-in type"),
        ),
        entry(
            "visitor_spike",
            "Unique visitors over the window reached the threshold (it fires again once the count fell back below, and not within the cooldown).",
            "a visitor_spike trigger",
            traffic_schema(true),
            sample("visitor_spike").expect("a built-in type"),
        ),
        entry(
            "traffic_drop",
            "Unique visitors over the window fell below the threshold.",
            "a traffic_drop trigger",
            traffic_schema(false),
            sample("traffic_drop").expect("a built-in type"),
        ),
    ]
}

/// The built-in type names `patterns` take (`site.*` and `*` expanded).
pub fn subscribed_types(patterns: &[String]) -> Vec<String> {
    subscribable()
        .into_iter()
        .map(|e| e.name)
        .filter(|n| {
            patterns.iter().any(|p| {
                p == "*"
                    || p == n
                    || p.strip_suffix('*')
                        .is_some_and(|pre| pre.ends_with('.') && n.starts_with(pre))
            })
        })
        .collect()
}

/// A sample `data` of a built-in type, made by the code that makes the real
/// events (so the keys agree); `None` for a host type or `test`.
pub fn sample(event_type: &str) -> Option<Value> {
    Some(match event_type {
        "goal_completion" => goal_scanner::sample_payload(),
        "custom_event" | "goal_completion_digest" | "custom_event_digest" => {
            goal_scanner::sample_payload_of(event_type)?
        }
        "webhook.failing" | "webhook.disabled" | "webhook.recovered" | "delivery.exhausted" => {
            operational_sample(event_type)?
        }
        analytics::UNAVAILABLE | analytics::INCOMPATIBLE | analytics::RECOVERED => {
            analytics::sample_payload(event_type)?
        }
        tracking::STOPPED | tracking::RESUMED => {
            tracking::sample_payload(event_type, EXAMPLE_PLAUSIBLE_URL)?
        }
        "visitor_spike" => evaluator::sample_payload(ThresholdKind::Spike, EXAMPLE_PLAUSIBLE_URL),
        "traffic_drop" => evaluator::sample_payload(ThresholdKind::Drop, EXAMPLE_PLAUSIBLE_URL),
        _ => return None,
    })
}

/// The `test` event's payload: a message and a sample `data` of each
/// built-in type `subscriptions` take (of every one when they take none, so
/// a webhook not yet subscribed still shows what it could receive).
pub fn test_payload(subscriptions: &[String]) -> Value {
    let mut types = subscribed_types(subscriptions);
    if types.is_empty() {
        types = subscribed_types(&["*".to_string()]);
    }
    // The types triggers make each time first: what a new webhook most
    // likely receives.
    const FIRST: [&str; 4] = [
        "goal_completion",
        "visitor_spike",
        "traffic_drop",
        "custom_event",
    ];
    types.sort_by_key(|t| FIRST.iter().position(|f| f == t).unwrap_or(FIRST.len()));
    let mut samples = serde_json::Map::new();
    let mut left_out: Vec<String> = Vec::new();
    let mut size = 0;
    for t in types {
        if let Some(s) = sample(&t) {
            let bytes = t.len() + s.to_string().len();
            if size + bytes > TEST_SAMPLES_BUDGET {
                left_out.push(t);
                continue;
            }
            size += bytes;
            samples.insert(t, s);
        }
    }
    let mut data = json!({
        "test": true,
        "message": "A test event from plausible-webhooks: if you can read this, the webhook works.",
        "samples": samples
    });
    if !left_out.is_empty() {
        data["samples_left_out"] = json!(left_out);
    }
    data
}

/// The samples a test event carries at most, in compact JSON bytes: the
/// event must fit the smallest payload limit (4096 bytes as the database
/// measures jsonb); the types past it are named in `samples_left_out`
/// (`event-types` shows their examples).
const TEST_SAMPLES_BUDGET: usize = 2_400;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_fits_its_schema_and_names_are_event_types() {
        for e in catalog() {
            crate::admin::validate::event_type("name", &e.name).unwrap();
            let schema = jsonschema::options()
                .should_validate_formats(true)
                .build(&e.schema)
                .unwrap_or_else(|err| panic!("{}'s schema: {err}", e.name));
            let errors: Vec<String> = schema
                .iter_errors(&e.example)
                .map(|x| x.to_string())
                .collect();
            assert!(errors.is_empty(), "{}: {errors:?}", e.name);
        }
    }

    #[test]
    fn wildcards_take_the_built_in_types_they_name() {
        let all: Vec<String> = vec!["*".into()];
        assert_eq!(
            subscribed_types(&all),
            [
                "goal_completion",
                "goal_completion_digest",
                "custom_event",
                "custom_event_digest",
                "webhook.failing",
                "webhook.disabled",
                "webhook.recovered",
                "delivery.exhausted",
                "site.tracking_stopped",
                "site.tracking_resumed",
                "visitor_spike",
                "traffic_drop"
            ]
        );
        assert_eq!(subscribed_types(&["traffic_drop".into()]), ["traffic_drop"]);
        assert_eq!(
            subscribed_types(&["site.*".into(), "test".into()]),
            ["site.tracking_stopped", "site.tracking_resumed"]
        );
        // A sample per subscribed type; every one when none is.
        let t = test_payload(&["visitor_spike".into()]);
        assert_eq!(t["samples"].as_object().unwrap().len(), 1);
        let t = test_payload(&["site.*".into()]);
        assert_eq!(t["samples"].as_object().unwrap().len(), 2);
        // Every one when none is, those past the budget named instead.
        let t = test_payload(&["nothing.*".into()]);
        let shown = t["samples"].as_object().unwrap();
        let left_out = t["samples_left_out"].as_array().map_or(0, Vec::len);
        assert_eq!(shown.len() + left_out, 12, "{t}");
        for first in [
            "goal_completion",
            "visitor_spike",
            "traffic_drop",
            "custom_event",
        ] {
            assert!(shown.contains_key(first), "{first}: {t}");
        }
        assert!(t.to_string().len() <= TEST_SAMPLES_BUDGET + 400, "{t}");
        assert_eq!(
            subscribed_types(&["webhook.*".into()]),
            ["webhook.failing", "webhook.disabled", "webhook.recovered"]
        );
    }
}
