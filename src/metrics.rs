//! Prometheus metrics: one process-wide registry at the bottom of the house,
//! and small functions any layer calls at the moment something happens. It
//! imports nothing of the crate, so every layer may record into it. The queue
//! gauges are sampled from the database when `/metrics` is scraped (the admin's
//! `metrics::sample_queue` hands `record_sample` what it counted), so they are
//! right whichever instance did the work.
//!
//! Names (OpenMetrics text, `/metrics` on the admin listener):
//! - `plausible_webhooks_deliveries_total{event,outcome}`: what each claimed
//!   delivery came to in this process: `success` and `failed` are final,
//!   `retry` is a failed attempt rescheduled, `deferred` went back to the queue
//!   without an attempt (a limit, shutdown), `not_sent` ended without an
//!   attempt (webhook disabled or deleted).
//! - `plausible_webhooks_attempt_duration_seconds`: HTTP attempts, histogram.
//! - `plausible_webhooks_queue_deliveries{status}`: rows by status (all instances).
//! - `plausible_webhooks_oldest_due_delivery_age_seconds`: how long the oldest
//!   due `pending` row has waited (0 when none is due).
//! - `plausible_webhooks_trigger_evaluations_total{kind}` and
//!   `plausible_webhooks_trigger_evaluation_duration_seconds{kind}`.
//! - `plausible_webhooks_listener_reconnects_total`, `plausible_webhooks_listener_connected`.
//! - `plausible_webhooks_database_up`: 1 when the last scrape could query the queue.

use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The content type of `encode`'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    event: &'static str,
    outcome: &'static str,
}

/// Event types with a label of their own; any other name (whoever writes
/// rows may enqueue any) counts as `other`, so rows cannot grow `/metrics`
/// without bound (50,000 names made 50,000 series).
pub const LABELLED_EVENTS: &[&str] = &[
    "goal_completion",
    "visitor_spike",
    "traffic_drop",
    "custom_event",
    "goal_completion_digest",
    "custom_event_digest",
    "site.tracking_stopped",
    "site.tracking_resumed",
    "test",
];

fn event_label(event: &str) -> &'static str {
    LABELLED_EVENTS
        .iter()
        .find(|e| **e == event)
        .copied()
        .unwrap_or("other")
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// The statuses of `webhook_deliveries`, each always reported (0 when absent).
pub const QUEUE_STATUSES: [&str; 4] = ["pending", "delivering", "success", "failed"];

struct Metrics {
    registry: Registry,
    deliveries: Family<DeliveryLabels, Counter>,
    attempt_duration: Histogram,
    queue: Family<StatusLabels, Gauge>,
    oldest_due_age: Gauge<f64, AtomicU64>,
    trigger_evaluations: Family<KindLabels, Counter>,
    trigger_duration: Family<KindLabels, Histogram>,
    listener_reconnects: Counter,
    listener_connected: Gauge,
    database_up: Gauge,
}

fn duration_histogram() -> Histogram {
    // 5 ms .. ~20 s: a receiver's answer, up to past the request timeout.
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let deliveries = Family::<DeliveryLabels, Counter>::default();
    let attempt_duration = duration_histogram();
    let queue = Family::<StatusLabels, Gauge>::default();
    let oldest_due_age = Gauge::<f64, AtomicU64>::default();
    let trigger_evaluations = Family::<KindLabels, Counter>::default();
    let trigger_duration =
        Family::<KindLabels, Histogram>::new_with_constructor(duration_histogram);
    let listener_reconnects = Counter::default();
    let listener_connected = Gauge::default();
    let database_up = Gauge::default();
    let mut registry = Registry::with_prefix("plausible_webhooks");
    registry.register(
        "deliveries",
        "Claimed deliveries by event type and what they came to in this process",
        deliveries.clone(),
    );
    registry.register(
        "attempt_duration_seconds",
        "Duration of HTTP delivery attempts",
        attempt_duration.clone(),
    );
    registry.register(
        "queue_deliveries",
        "Rows of webhook_deliveries by status (sampled at scrape)",
        queue.clone(),
    );
    registry.register(
        "oldest_due_delivery_age_seconds",
        "Age of the oldest due pending delivery (sampled at scrape; 0 when none)",
        oldest_due_age.clone(),
    );
    registry.register(
        "trigger_evaluations",
        "Trigger evaluations by trigger kind",
        trigger_evaluations.clone(),
    );
    registry.register(
        "trigger_evaluation_duration_seconds",
        "Duration of trigger evaluation rounds by trigger kind",
        trigger_duration.clone(),
    );
    registry.register(
        "listener_reconnects",
        "Reconnections of the LISTEN connection",
        listener_reconnects.clone(),
    );
    registry.register(
        "listener_connected",
        "1 while the LISTEN connection is up",
        listener_connected.clone(),
    );
    registry.register(
        "database_up",
        "1 when the last scrape could query the queue",
        database_up.clone(),
    );
    Metrics {
        registry,
        deliveries,
        attempt_duration,
        queue,
        oldest_due_age,
        trigger_evaluations,
        trigger_duration,
        listener_reconnects,
        listener_connected,
        database_up,
    }
});

/// What a claimed delivery came to, as `deliveries_total` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Success,
    Retry,
    Deferred,
    Failed,
    NotSent,
}

impl DeliveryOutcome {
    pub fn label(self) -> &'static str {
        match self {
            DeliveryOutcome::Success => "success",
            DeliveryOutcome::Retry => "retry",
            DeliveryOutcome::Deferred => "deferred",
            DeliveryOutcome::Failed => "failed",
            DeliveryOutcome::NotSent => "not_sent",
        }
    }
}

/// Records what a claimed delivery came to (called once per worker outcome),
/// and how long its HTTP attempt took when one was made.
pub fn delivery_completed(event: &str, outcome: DeliveryOutcome, attempt: Option<Duration>) {
    METRICS
        .deliveries
        .get_or_create(&DeliveryLabels {
            event: event_label(event),
            outcome: outcome.label(),
        })
        .inc();
    if let Some(d) = attempt {
        METRICS.attempt_duration.observe(d.as_secs_f64());
    }
}

/// Records a round that evaluated `evaluated` triggers of `kind`
/// (visitor_spike, traffic_drop, goal_completion): the counter counts
/// triggers, the histogram the round's duration (every trigger of that kind
/// due at once, claimed by this instance).
pub fn trigger_round(kind: &str, evaluated: u64, duration: Duration) {
    let labels = KindLabels {
        kind: kind.to_string(),
    };
    METRICS
        .trigger_evaluations
        .get_or_create(&labels)
        .inc_by(evaluated);
    METRICS
        .trigger_duration
        .get_or_create(&labels)
        .observe(duration.as_secs_f64());
}

/// Records a reconnection of the LISTEN connection.
pub fn listener_reconnected() {
    METRICS.listener_reconnects.inc();
}

/// The queue as one scrape sees it.
#[derive(Debug, Clone, Default)]
pub struct QueueSample {
    /// (status, rows) for the statuses present.
    pub by_status: Vec<(String, i64)>,
    pub oldest_due_age_secs: f64,
}

/// Sets the sampled gauges: the queue when `sample` is Some (None: the
/// database could not be asked; the queue gauges keep their last values and
/// `database_up` says so), and the listener's state.
pub fn record_sample(sample: Option<&QueueSample>, listener_connected: bool) {
    METRICS
        .listener_connected
        .set(i64::from(listener_connected));
    let Some(s) = sample else {
        METRICS.database_up.set(0);
        return;
    };
    METRICS.database_up.set(1);
    for status in QUEUE_STATUSES {
        let n = s
            .by_status
            .iter()
            .find(|(st, _)| st == status)
            .map_or(0, |(_, n)| *n);
        METRICS.queue.get_or_create(&StatusLabels { status }).set(n);
    }
    METRICS.oldest_due_age.set(s.oldest_due_age_secs);
}

/// The registry in OpenMetrics text format.
pub fn encode() -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &METRICS.registry)
        .expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_are_as_documented() {
        trigger_round("visitor_spike", 1, Duration::from_millis(20));
        listener_reconnected();
        record_sample(
            Some(&QueueSample {
                by_status: vec![("pending".into(), 3)],
                oldest_due_age_secs: 1.5,
            }),
            true,
        );
        let text = encode();
        for line in [
            "plausible_webhooks_trigger_evaluations_total{kind=\"visitor_spike\"} 1",
            "plausible_webhooks_trigger_evaluation_duration_seconds_count{kind=\"visitor_spike\"} 1",
            "plausible_webhooks_listener_reconnects_total 1",
            "plausible_webhooks_listener_connected 1",
            "plausible_webhooks_queue_deliveries{status=\"pending\"} 3",
            "plausible_webhooks_queue_deliveries{status=\"failed\"} 0",
            "plausible_webhooks_oldest_due_delivery_age_seconds 1.5",
            "plausible_webhooks_database_up 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
