//! Operational events end to end (docs/events.md#operational-events): a
//! failing webhook is told to the operator endpoint of the config and to the
//! site's webhooks subscribed to `webhook.*` / `delivery.exhausted`, never to
//! itself; its status is `failing` from the first notice until it recovers
//! or is disabled. Real daemon, real receivers on loopback.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::Env;
use plausible_webhooks::config::Redacted;
use plausible_webhooks::delivery::signing::verify_standard;
use plausible_webhooks::testkit::receiver::{always, Recorded, Reply};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
const OPERATOR_SECRET: &str = "whsec_b3BlcmF0b3Itc2VjcmV0LW9mLXRoZS10ZXN0cy0wMTIzNDU=";

fn event(r: &Recorded) -> (String, Value) {
    let v = r.json();
    (
        v["event"].as_str().unwrap_or_default().to_string(),
        v["data"].clone(),
    )
}

async fn status(env: &Env, webhook: uuid::Uuid) -> String {
    env.db
        .query_one(
            "SELECT CASE WHEN NOT enabled THEN 'disabled'
                         WHEN failing_noticed_at IS NOT NULL THEN 'failing' ELSE 'active' END
             FROM webhooks WHERE id = $1",
            &[&webhook],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_is_told_to_the_operator_and_to_subscribers_never_to_itself() {
    let env = Env::new().await;
    let bad = env.receiver(always(500)).await;
    let listener = env.receiver(always(200)).await;
    let operator = env.receiver(always(200)).await;
    // Fails its first request, then succeeds.
    let tries = Arc::new(AtomicUsize::new(0));
    let t = tries.clone();
    let flaky = env
        .receiver(Arc::new(move |_| {
            if t.fetch_add(1, Ordering::SeqCst) == 0 {
                Reply::Status(503)
            } else {
                Reply::Status(200)
            }
        }))
        .await;
    let wh_bad = env.webhook(&bad.url("/")).await;
    let wh_flaky = env.webhook(&flaky.url("/")).await;
    let wh_listen = env.webhook(&listener.url("/")).await;
    // The failing one takes everything: still nothing about itself.
    for (wh, events) in [
        (wh_bad, vec!["*"]),
        (wh_listen, vec!["webhook.*", "delivery.exhausted"]),
    ] {
        env.db
            .execute(
                "UPDATE webhooks SET events = $2 WHERE id = $1",
                &[&wh, &events],
            )
            .await
            .unwrap();
    }
    let mut cfg = env.config();
    cfg.delivery.retry_schedule_secs = vec![];
    cfg.health.disable_after_failures = 2;
    cfg.health.disable_after_secs = 0;
    cfg.health.operator_url = operator.url("/ops");
    cfg.health.operator_secret = Some(Redacted(OPERATOR_SECRET.into()));
    let daemon = env.daemon(cfg).await;

    // The first failure: the streak's notice and the delivery's.
    env.enqueue(wh_bad, 1).await;
    listener.wait_for(2, T).await.unwrap();
    assert_eq!(status(&env, wh_bad).await, "failing");
    // The second disables it (2 in a row, no minimum time).
    env.enqueue(wh_bad, 1).await;
    listener.wait_for(4, T).await.unwrap();
    operator.wait_for(4, T).await.unwrap();
    env.wait_all_final(T).await;
    assert_eq!(status(&env, wh_bad).await, "disabled");
    assert_eq!(
        bad.count(),
        2,
        "the failing receiver got its two deliveries only"
    );

    let mut heard: Vec<(String, Value)> = listener.requests().iter().map(event).collect();
    heard.sort_by(|a, b| a.0.cmp(&b.0));
    let types: Vec<&str> = heard.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        types,
        [
            "delivery.exhausted",
            "delivery.exhausted",
            "webhook.disabled",
            "webhook.failing"
        ]
    );
    for (e, data) in &heard {
        assert_eq!(data["webhook_id"], wh_bad.to_string(), "{e}: {data}");
        assert_eq!(data["site_id"], "example.com");
        assert_eq!(data["url_host"], "127.0.0.1");
        common::fits_catalog_exactly(e, data);
    }
    let disabled = &heard[2].1;
    assert!(
        disabled["reason"]
            .as_str()
            .unwrap()
            .contains("2 consecutive deliveries failed"),
        "{disabled}"
    );
    assert!(
        disabled["last_error"].as_str().unwrap().contains("500"),
        "{disabled}"
    );
    assert_eq!(heard[0].1["last_response_code"], 500);
    assert_eq!(heard[0].1["event_type"], "goal_completion");

    // The operator endpoint heard the same, signed with its own secret.
    let mut told: Vec<String> = operator.requests().iter().map(|r| event(r).0).collect();
    told.sort();
    assert_eq!(told, types);
    for r in operator.requests() {
        let id = r.header("webhook-id").unwrap().to_string();
        let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
        let sig = r.header("webhook-signature").unwrap().to_string();
        assert!(verify_standard(OPERATOR_SECRET, &id, ts, &r.body, &sig));
        assert!(!verify_standard(common::SECRET, &id, ts, &r.body, &sig));
    }
    // The operator endpoint is no site's webhook: no face lists it.
    assert_eq!(
        env.count(
            "SELECT count(*) FROM webhooks w JOIN sites s ON s.id = w.site_id WHERE w.operator"
        )
        .await,
        0
    );

    // A failure, then a success: failing, then recovered.
    env.enqueue(wh_flaky, 1).await;
    env.wait_all_final(T).await;
    assert_eq!(status(&env, wh_flaky).await, "failing");
    env.enqueue(wh_flaky, 1).await;
    listener.wait_for(7, T).await.unwrap();
    env.wait_all_final(T).await;
    assert_eq!(status(&env, wh_flaky).await, "active");
    let mut about_flaky: Vec<(String, Value)> = listener
        .requests()
        .iter()
        .map(event)
        .filter(|(_, d)| d["webhook_id"] == wh_flaky.to_string())
        .collect();
    about_flaky.sort_by(|a, b| a.0.cmp(&b.0));
    let types: Vec<&str> = about_flaky.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        types,
        ["delivery.exhausted", "webhook.failing", "webhook.recovered"]
    );
    assert_eq!(about_flaky[2].1["failed_deliveries"], 1);
    common::fits_catalog_exactly("webhook.recovered", &about_flaky[2].1);
    // The flaky one subscribes to its goal trigger's events only.
    assert!(flaky
        .requests()
        .iter()
        .map(event)
        .all(|(e, _)| e == "goal_completion"));
    // Each notice once: the queue holds no key twice per webhook.
    assert_eq!(
        env.count("SELECT count(*) FROM (SELECT webhook_id, idempotency_key FROM webhook_deliveries WHERE idempotency_key IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1) x")
            .await,
        0
    );
    daemon.shutdown().await.unwrap();
}

/// The analytics source's health (docs/events.md#analytics-events): each
/// change of verdict reaches the operator endpoint once — unavailable,
/// recovered, incompatible, recovered — a restart during an outage sends
/// nothing more, and no site webhook hears of it even subscribed to `*`.
/// Real daemon, a real PostgreSQL analytics database that does not exist
/// yet, then works, then refuses a statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_outages_are_told_to_the_operator_once_per_change() {
    let env = Env::new().await;
    let operator = env.receiver(always(200)).await;
    let listener = env.receiver(always(200)).await;
    let wh = env.webhook(&listener.url("/")).await;
    env.db
        .execute("UPDATE webhooks SET events = '{*}' WHERE id = $1", &[&wh])
        .await
        .unwrap();
    // A goal with a custom prop: its scan is what the broken view refuses,
    // and its failing round prompts a check at once.
    env.db
        .execute(
            "INSERT INTO goals (site_id, event_name, display_name, custom_props, inserted_at, updated_at)
             VALUES ($1, 'Signup', 'Signup', '{\"plan\": \"pro\"}', now(), now())",
            &[&env.site_id],
        )
        .await
        .unwrap();
    let analytics_db = format!("a_{}", uuid::Uuid::new_v4().simple());
    let mut cfg = env.config();
    cfg.analytics.database_url = env.cluster.url(&analytics_db);
    cfg.analytics.table = "compat.events_v2".into();
    cfg.health.operator_url = operator.url("/ops");
    cfg.health.operator_secret = Some(Redacted(OPERATOR_SECRET.into()));
    let told = |n: usize| {
        let operator = &operator;
        async move {
            operator.wait_for(n, T).await.unwrap();
            operator.requests().iter().map(event).collect::<Vec<_>>()
        }
    };

    // The database does not exist: unavailable, told at start.
    let daemon = env.daemon(cfg.clone()).await;
    let heard = told(1).await;
    assert_eq!(heard[0].0, "analytics.unavailable", "{heard:?}");
    let data = &heard[0].1;
    common::fits_catalog_exactly("analytics.unavailable", data);
    assert!(
        data["error"].as_str().unwrap().contains(&analytics_db),
        "{data}"
    );
    assert!(
        data["source"].as_str().unwrap().contains("postgres"),
        "{data}"
    );

    // It appears: recovered at the next check (every 10 s while failing).
    env.cluster
        .create_migrated_database(&analytics_db)
        .await
        .unwrap();
    let analytics = plausible_webhooks::db::connect(&cfg.analytics.database_url)
        .await
        .unwrap();
    analytics
        .batch_execute(
            "CREATE SCHEMA compat;
             CREATE VIEW compat.events_v2 AS SELECT * FROM public.events_v2;",
        )
        .await
        .unwrap();
    let heard = told(2).await;
    assert_eq!(heard[1].0, "analytics.recovered", "{heard:?}");
    common::fits_catalog_exactly("analytics.recovered", &heard[1].1);
    assert_eq!(heard[1].1["was"], "unavailable");
    assert_eq!(heard[1].1["failing_since"], heard[0].1["since"]);

    // A statement refused (meta_key as text): incompatible.
    common::incompatible_view_on(&analytics).await;
    let heard = told(3).await;
    assert_eq!(heard[2].0, "analytics.incompatible", "{heard:?}");
    common::fits_catalog_exactly("analytics.incompatible", &heard[2].1);
    assert!(
        heard[2].1["error"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{}",
        heard[2].1
    );

    // Restarted during the outage: its first check finds the same verdict
    // recorded and sends nothing (the count below proves it: that check ran
    // before `start` returned, so its notice would be queued before the fix).
    daemon.shutdown().await.unwrap();
    let daemon = env.daemon(cfg.clone()).await;
    analytics
        .batch_execute(
            "DROP VIEW compat.events_v2;
             CREATE VIEW compat.events_v2 AS SELECT * FROM public.events_v2;",
        )
        .await
        .unwrap();
    let heard = told(4).await;
    assert_eq!(heard[3].0, "analytics.recovered", "{heard:?}");
    assert_eq!(heard[3].1["was"], "incompatible");
    env.wait_all_final(T).await;
    let types: Vec<String> = operator.requests().iter().map(|r| event(r).0).collect();
    assert_eq!(
        types,
        [
            "analytics.unavailable",
            "analytics.recovered",
            "analytics.incompatible",
            "analytics.recovered"
        ]
    );
    for r in operator.requests() {
        let id = r.header("webhook-id").unwrap().to_string();
        let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
        let sig = r.header("webhook-signature").unwrap().to_string();
        assert!(verify_standard(OPERATOR_SECRET, &id, ts, &r.body, &sig));
    }
    // The site's webhook, subscribed to everything, heard none of it.
    assert!(
        listener
            .requests()
            .iter()
            .all(|r| !event(r).0.starts_with("analytics.")),
        "{:?}",
        listener.requests().iter().map(event).collect::<Vec<_>>()
    );
    let state: String = env
        .db
        .query_one("SELECT state FROM plausible_webhooks_analytics_state", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, "compatible");
    daemon.shutdown().await.unwrap();
}

/// `[health] operator_format = "slack"`: the operator endpoint's messages
/// are written for Slack's incoming webhook (a chat channel for the
/// operator's alerts), still signed; changing it back applies at the next
/// start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_endpoint_can_take_a_chat_format() {
    let env = Env::new().await;
    let operator = env.receiver(always(200)).await;
    let mut cfg = env.config();
    cfg.analytics.database_url = env
        .cluster
        .url(&format!("missing_{}", uuid::Uuid::new_v4().simple()));
    cfg.health.operator_url = operator.url("/services/T000/B000/credential-in-the-path");
    cfg.health.operator_secret = Some(Redacted(OPERATOR_SECRET.into()));
    cfg.health.operator_format = "slack".into();
    let daemon = env.daemon(cfg.clone()).await;
    operator.wait_for(1, T).await.unwrap();
    let r = &operator.requests()[0];
    let body = r.json();
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("Analytics cannot be read"),
        "{body}"
    );
    assert!(
        body["blocks"].as_array().is_some_and(|b| !b.is_empty()),
        "{body}"
    );
    let id = r.header("webhook-id").unwrap().to_string();
    let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
    let sig = r.header("webhook-signature").unwrap().to_string();
    assert!(verify_standard(OPERATOR_SECRET, &id, ts, &r.body, &sig));
    daemon.shutdown().await.unwrap();
    let format: String = env
        .db
        .query_one("SELECT format FROM webhooks WHERE operator", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(format, "slack");
    // A bad name is refused with the names that work.
    let mut bad = cfg.clone();
    bad.health.operator_format = "mattermost".into();
    let err = bad.validate().expect_err("refused").to_string();
    assert!(
        err.contains("health.operator_format") && err.contains("google_chat"),
        "{err}"
    );
}
