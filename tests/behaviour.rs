//! Limits, rotation, HTTP/2, the listener's recovery, timing of retries, pruning.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Env, SECRET};
use plausible_webhooks::delivery::signing::verify_standard;
use plausible_webhooks::queue::cleaner::{Cleaner, CleanerConfig};
use plausible_webhooks::testkit::receiver::{always, Reply};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_and_concurrency_limits_hold_and_a_stuck_receiver_starves_no_one() {
    let env = Env::new().await;
    // Counts requests in progress at the stuck receiver.
    let live = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (l, p) = (live.clone(), peak.clone());
    let stuck = env
        .receiver(Arc::new(move |_: &_| {
            let now = l.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            Reply::Hang
        }))
        .await;
    let limited = env.receiver(always(200)).await;
    let fast = env.receiver(always(200)).await;
    let wh_stuck = env.webhook(&stuck.url("/")).await;
    let wh_limited = env.webhook(&limited.url("/")).await;
    let wh_fast = env.webhook(&fast.url("/")).await;
    env.db
        .execute(
            "UPDATE webhooks SET max_concurrency = 2 WHERE id = $1",
            &[&wh_stuck],
        )
        .await
        .unwrap();
    env.db
        .execute(
            "UPDATE webhooks SET rate_limit_per_sec = 5 WHERE id = $1",
            &[&wh_limited],
        )
        .await
        .unwrap();
    let mut cfg = env.config();
    cfg.delivery.max_in_flight = 16;
    cfg.delivery.request_timeout_ms = 3_000;
    cfg.delivery.lease_secs = 6;
    let daemon = env.daemon(cfg).await;
    env.enqueue(wh_stuck, 40).await;
    env.enqueue(wh_limited, 15).await;
    env.enqueue(wh_fast, 100).await;
    // The fast receiver gets everything while the stuck one hangs.
    fast.wait_for(100, T).await.unwrap();
    let limited_reqs = limited.wait_for(15, T).await.unwrap();
    daemon.shutdown().await.unwrap();

    assert!(
        peak.load(Ordering::SeqCst) <= 2,
        "concurrency limit exceeded: {}",
        peak.load(Ordering::SeqCst)
    );
    assert!(stuck.count() >= 2);
    // 15 requests at 5/s with a burst of 5: the last one no sooner than ~2 s after the first.
    let span = limited_reqs[14]
        .at
        .duration_since(limited_reqs[0].at)
        .unwrap();
    assert!(
        span >= Duration::from_millis(1800),
        "rate limit not applied: 15 requests in {span:?}"
    );
    // Beyond the burst of 5, one per 200 ms: any 11 consecutive requests span >= ~1 s.
    for w in limited_reqs.windows(11) {
        let s = w[10].at.duration_since(w[0].at).unwrap();
        assert!(
            s >= Duration::from_millis(900),
            "11 requests within {s:?} at 5/s"
        );
    }
    // Nothing dropped: the stuck webhook's deliveries wait in the queue or retry.
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries").await,
        155
    );
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries_leases")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_signs_with_both_secrets_over_http2() {
    let env = Env::new().await;
    let rx = env.receiver(always(200)).await;
    let wh = env.webhook(&rx.url("/")).await;
    let old = "an-old-plain-secret-that-is-32-chars-long";
    env.db
        .execute(
            "UPDATE webhooks SET previous_secret = $2, previous_secret_expires_at = now() + interval '1 hour' WHERE id = $1",
            &[&wh, &old],
        )
        .await
        .unwrap();
    let daemon = env.daemon(env.config()).await;
    env.enqueue(wh, 1).await;
    let r = rx.wait_for(1, T).await.unwrap().remove(0);
    assert_eq!(
        r.version,
        hyper::Version::HTTP_2,
        "HTTP/2 negotiated by ALPN"
    );
    let sig = r.header("webhook-signature").unwrap().to_string();
    let id = r.header("webhook-id").unwrap().to_string();
    let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
    assert_eq!(sig.split(' ').count(), 2);
    assert!(verify_standard(SECRET, &id, ts, &r.body, &sig));
    assert!(verify_standard(old, &id, ts, &r.body, &sig));
    // After the window: the new secret only.
    env.db
        .execute("UPDATE webhooks SET previous_secret_expires_at = now() - interval '1 second' WHERE id = $1", &[&wh])
        .await
        .unwrap();
    env.enqueue(wh, 1).await;
    let r = rx.wait_for(2, T).await.unwrap().remove(1);
    let sig = r.header("webhook-signature").unwrap().to_string();
    let id = r.header("webhook-id").unwrap().to_string();
    let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
    assert_eq!(sig.split(' ').count(), 1);
    assert!(verify_standard(SECRET, &id, ts, &r.body, &sig));
    assert!(!verify_standard(old, &id, ts, &r.body, &sig));
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_listen_connection_is_noticed_and_replaced() {
    let env = Env::new().await;
    let rx = env.receiver(always(200)).await;
    let wh = env.webhook(&rx.url("/")).await;
    let mut cfg = env.config();
    cfg.queue.poll_interval_ms = 600_000; // only NOTIFY (or the down-poll) can wake it
    cfg.queue.listener_check_interval_ms = 200;
    let daemon = env.daemon(cfg).await;
    let mut up = daemon.listener_connected();
    env.db
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'plausible-webhooks-listener'",
            &[],
        )
        .await
        .unwrap();
    tokio::time::timeout(T, up.wait_for(|v| !*v))
        .await
        .expect("loss noticed")
        .unwrap();
    tokio::time::timeout(T, up.wait_for(|v| *v))
        .await
        .expect("reconnected")
        .unwrap();
    let started = std::time::Instant::now();
    env.enqueue(wh, 3).await;
    rx.wait_for(3, T).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken by NOTIFY again"
    );
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_row_and_a_soft_deleted_webhook() {
    let env = Env::new().await;
    let rx = env.receiver(always(200)).await;
    let wh = env.webhook(&rx.url("/")).await;
    let gone = env.webhook(&rx.url("/deleted")).await;
    env.db
        .execute(
            "UPDATE webhooks SET deleted_at = now() WHERE id = $1",
            &[&gone],
        )
        .await
        .unwrap();
    let mut cfg = env.config();
    cfg.queue.poll_interval_ms = 600_000; // the timer to the earliest due row must do it
    let daemon = env.daemon(cfg).await;
    env.db
        .execute(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, payload, next_attempt_at)
             VALUES ($1, 'goal_completion', '{}', now() + interval '1500 milliseconds')",
            &[&wh],
        )
        .await
        .unwrap();
    let inserted = std::time::SystemTime::now();
    env.enqueue(gone, 1).await;
    let r = rx.wait_for(1, T).await.unwrap().remove(0);
    let waited = r.at.duration_since(inserted).unwrap();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    env.wait_all_final(T).await;
    daemon.shutdown().await.unwrap();
    let err: String = env
        .db
        .query_one(
            "SELECT last_error FROM webhook_deliveries WHERE webhook_id = $1 AND status = 'failed'",
            &[&gone],
        )
        .await
        .unwrap()
        .get(0);
    assert!(err.contains("deleted"), "{err}");
    assert_eq!(rx.count(), 1);
}

/// The attempt log goes with its delivery however the delivery goes: by
/// row, with its webhook, and when the table is truncated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deliverys_attempts_are_deleted_with_it() {
    let env = Env::new().await;
    let add = |wh: uuid::Uuid| {
        let db = &env.db;
        async move {
            let id: uuid::Uuid = db
                .query_one(
                    "WITH d AS (INSERT INTO webhook_deliveries (webhook_id, event_type, status, attempts)
                                VALUES ($1, 'goal_completion', 'failed', 2) RETURNING id),
                          a AS (INSERT INTO webhook_delivery_attempts (delivery_id, attempt, status_code)
                                SELECT id, g, 500 FROM d, generate_series(1, 2) g)
                     SELECT id FROM d",
                    &[&wh],
                )
                .await
                .unwrap()
                .get(0);
            id
        }
    };
    let attempts = |id: uuid::Uuid| {
        let db = &env.db;
        async move {
            let n: i64 = db
                .query_one(
                    "SELECT count(*) FROM webhook_delivery_attempts WHERE delivery_id = $1",
                    &[&id],
                )
                .await
                .unwrap()
                .get(0);
            n
        }
    };
    let w1 = env.webhook("https://example.com/one").await;
    let w2 = env.webhook("https://example.com/two").await;
    let (d1, d2, d3) = (add(w1).await, add(w1).await, add(w2).await);
    assert_eq!((attempts(d1).await, attempts(d2).await), (2, 2));

    env.db
        .execute("DELETE FROM webhook_deliveries WHERE id = $1", &[&d1])
        .await
        .unwrap();
    assert_eq!((attempts(d1).await, attempts(d2).await), (0, 2));

    env.db
        .execute("DELETE FROM webhooks WHERE id = $1", &[&w1])
        .await
        .unwrap();
    assert_eq!((attempts(d2).await, attempts(d3).await), (0, 2));

    // Alone, and with the attempts in the same statement (then already
    // being truncated when the trigger runs).
    for truncate in [
        "TRUNCATE webhook_deliveries",
        "TRUNCATE webhook_delivery_attempts, webhook_deliveries",
    ] {
        add(w2).await;
        env.db.batch_execute(truncate).await.unwrap();
        assert_eq!(
            env.count("SELECT count(*) FROM webhook_delivery_attempts")
                .await,
            0,
            "{truncate}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_deletes_old_finished_rows_in_batches_and_keeps_the_rest() {
    let env = Env::new().await;
    let wh = env.webhook("https://example.com/hook").await;
    env.db
        .execute(
            "WITH d AS (
               INSERT INTO webhook_deliveries (webhook_id, event_type, payload, status, attempts, inserted_at)
               SELECT $1, 'goal_completion', '{}', CASE WHEN g % 2 = 0 THEN 'success' ELSE 'failed' END, 1,
                      now() - interval '40 days'
               FROM generate_series(1, 12000) g RETURNING id)
             INSERT INTO webhook_delivery_attempts (delivery_id, attempt, status_code) SELECT id, 1, 200 FROM d",
            &[&wh],
        )
        .await
        .unwrap();
    // Old but still pending (a retry far out) and recent finished rows stay.
    env.db
        .execute(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, payload, status, inserted_at, next_attempt_at)
             VALUES ($1, 'goal_completion', '{}', 'pending', now() - interval '40 days', now() + interval '1 day'),
                    ($1, 'goal_completion', '{}', 'success', now() - interval '29 days', now())",
            &[&wh],
        )
        .await
        .unwrap();
    let pool = plausible_webhooks::db::pool(&env.url, 2).unwrap();
    let cleaner = Cleaner::new(
        CleanerConfig {
            retention_days: 30,
            interval: Duration::from_secs(3600),
            batch: 5000,
        },
        pool,
    )
    .unwrap();
    let deleted = cleaner.prune(&CancellationToken::new()).await.unwrap();
    assert_eq!(deleted, 12000);
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries").await,
        2
    );
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_delivery_attempts")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refused_outcome_does_not_block_the_batch() {
    use plausible_webhooks::queue::{Attempt, Completion, Outcome};
    let env = Env::new().await;
    let wh = env.webhook("https://example.com/hook").await;
    let ids: Vec<(uuid::Uuid, time::OffsetDateTime)> = env
        .db
        .query(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, status, attempts, locked_by, locked_until)
             SELECT $1, 'goal_completion', 'delivering', 1, 'me', now() + interval '1 minute'
             FROM generate_series(1, 3) RETURNING id, locked_until",
            &[&wh],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut batch = Vec::new();
    for (i, (id, lease)) in ids.iter().enumerate() {
        batch.push(Completion {
            id: *id,
            webhook_id: wh,
            attempt: 1,
            lease: *lease,
            outcome: Outcome::Delivered(Attempt {
                status_code: Some(200),
                error: None,
                error_kind: None,
                // The middle one holds a NUL, which PostgreSQL text refuses.
                response_body: Some(if i == 1 { "a\0b".into() } else { "ok".into() }),
                duration_ms: 1,
                attempted_at: time::OffsetDateTime::now_utc(),
            }),
        });
    }
    complete(&env, batch).await;
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'success'")
            .await,
        3
    );
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_delivery_attempts WHERE response_body = 'ok'")
            .await,
        2
    );
    let err: String = env
        .db
        .query_one(
            "SELECT error FROM webhook_delivery_attempts WHERE response_body IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(err.contains("could not be stored"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_schedule_overrides_the_global_one() {
    let env = Env::new().await;
    let rx = env.receiver(always(500)).await;
    let none = env.webhook(&rx.url("/none")).await;
    let two = env.webhook(&rx.url("/two")).await;
    env.db
        .execute(
            "UPDATE webhooks SET retry_schedule_secs = '{}' WHERE id = $1",
            &[&none],
        )
        .await
        .unwrap();
    env.db
        .execute(
            "UPDATE webhooks SET retry_schedule_secs = '{1,1}' WHERE id = $1",
            &[&two],
        )
        .await
        .unwrap();
    let mut cfg = env.config();
    cfg.delivery.retry_schedule_secs = vec![1, 1, 1, 1, 1];
    let daemon = env.daemon(cfg).await;
    env.enqueue(none, 1).await;
    env.enqueue(two, 1).await;
    env.wait_all_final(T).await;
    daemon.shutdown().await.unwrap();
    let attempts = |id| {
        let db = &env.db;
        async move {
            db.query_one("SELECT attempts FROM webhook_deliveries WHERE webhook_id = $1 AND status = 'failed'", &[&id])
                .await
                .unwrap()
                .get::<_, i32>(0)
        }
    };
    assert_eq!(attempts(none).await, 1);
    assert_eq!(attempts(two).await, 3);
    // Two failed deliveries in a row: counted, not yet disabled (20 over 24 h).
    assert_eq!(env.count("SELECT sum(consecutive_failures) FROM webhooks WHERE enabled AND failing_since IS NOT NULL").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_failed_deliveries_disable_the_webhook_and_a_success_resets_the_count() {
    let env = Env::new().await;
    let bad = env.receiver(always(500)).await;
    let good = env.receiver(always(200)).await;
    let wh_bad = env.webhook(&bad.url("/")).await;
    let wh_good = env.webhook(&good.url("/")).await;
    // A history of failures on the good one, which its next success clears.
    env.db
        .execute(
            "UPDATE webhooks SET consecutive_failures = 7, failing_since = now() - interval '1 hour' WHERE id = $1",
            &[&wh_good],
        )
        .await
        .unwrap();
    let mut cfg = env.config();
    cfg.delivery.retry_schedule_secs = vec![];
    cfg.health.disable_after_failures = 3;
    cfg.health.disable_after_secs = 0;
    let daemon = env.daemon(cfg).await;
    for _ in 0..3 {
        env.enqueue(wh_bad, 1).await;
        env.wait_all_final(T).await;
    }
    env.enqueue(wh_good, 1).await;
    env.wait_all_final(T).await;
    // Deliveries enqueued after the disable are not sent.
    env.enqueue(wh_bad, 1).await;
    env.wait_all_final(T).await;
    daemon.shutdown().await.unwrap();

    let r = env
        .db
        .query_one(
            "SELECT enabled, disabled_reason, consecutive_failures FROM webhooks WHERE id = $1",
            &[&wh_bad],
        )
        .await
        .unwrap();
    assert!(!r.get::<_, bool>(0));
    assert_eq!(
        r.get::<_, i32>(2),
        3,
        "the delivery refused unsent does not count"
    );
    assert!(
        r.get::<_, String>(1)
            .contains("3 consecutive deliveries failed"),
        "{}",
        r.get::<_, String>(1)
    );
    assert_eq!(bad.count(), 3);
    let r = env
        .db
        .query_one("SELECT enabled, consecutive_failures, failing_since IS NULL FROM webhooks WHERE id = $1", &[&wh_good])
        .await
        .unwrap();
    assert_eq!(
        (r.get::<_, bool>(0), r.get::<_, i32>(1), r.get::<_, bool>(2)),
        (true, 0, true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_refuses_rows_the_daemon_could_not_send() {
    let env = Env::new().await;
    let wh = env.webhook("https://example.com/hook").await;
    for (sql, constraint) in [
        ("UPDATE webhooks SET retry_schedule_secs = '{60,NULL}' WHERE id = $1", "webhooks_retry_schedule_limits"),
        ("UPDATE webhooks SET retry_schedule_secs = '{{1,2},{3,4}}' WHERE id = $1", "webhooks_retry_schedule_limits"),
        ("UPDATE webhooks SET retry_schedule_secs = '{0}' WHERE id = $1", "webhooks_retry_schedule_limits"),
        ("UPDATE webhooks SET url = 'https://user:pw@example.com/' WHERE id = $1", "webhooks_url_https"),
        ("UPDATE webhooks SET url = 'http://example.com/' WHERE id = $1", "webhooks_url_https"),
        ("UPDATE webhooks SET headers = '{\"Transfer-Encoding\": \"chunked\"}' WHERE id = $1", "webhooks_headers_allowed"),
        ("UPDATE webhooks SET headers = '{\"webhook-signature\": \"x\"}' WHERE id = $1", "webhooks_headers_allowed"),
        ("UPDATE webhooks SET headers = '{\"X-Ok\": 1}' WHERE id = $1", "webhooks_headers_allowed"),
        ("UPDATE webhooks SET headers = '{\"X-A\": \"a\\u0001b\"}' WHERE id = $1", "webhooks_headers_allowed"),
        ("UPDATE webhooks SET headers = '{\"X-A\": \"a\\u007fb\"}' WHERE id = $1", "webhooks_headers_allowed"),
        ("INSERT INTO webhook_deliveries (webhook_id, event_type, payload) VALUES ($1, 'goal_completion', '[1]')", "webhook_deliveries_payload_is_object"),
        ("INSERT INTO webhook_deliveries (webhook_id, event_type) VALUES ($1, 'Bad Event')", "webhook_deliveries_event_type_format"),
        // 2147483647 made every claim fail (`attempts + 1` out of range) for every site.
        ("INSERT INTO webhook_deliveries (webhook_id, event_type, attempts) VALUES ($1, 'x', 2147483647)", "webhook_deliveries_attempts_range"),
        ("INSERT INTO webhook_deliveries (webhook_id, event_type, attempts) VALUES ($1, 'x', -4)", "webhook_deliveries_attempts_range"),
        // Never rescued: the rescuer looks for expired leases.
        ("INSERT INTO webhook_deliveries (webhook_id, event_type, status) VALUES ($1, 'x', 'delivering')", "webhook_deliveries_delivering_has_lease"),
    ] {
        let err = env.db.execute(sql, &[&wh]).await.expect_err(sql);
        let db = err.as_db_error().expect("a database error");
        assert_eq!(db.constraint(), Some(constraint), "{sql}: {db}");
    }
    // What is fine stays fine.
    env.db
        .execute(
            "UPDATE webhooks SET retry_schedule_secs = '{1,86400}', url = 'https://example.com:8443/a?b=c#d',
                    headers = '{\"Authorization\": \"Bearer x\"}' WHERE id = $1",
            &[&wh],
        )
        .await
        .unwrap();
}

/// A header value HTTP cannot carry, in a row the constraint did not check
/// (written before it existed): the delivery fails naming the header; it is
/// never sent without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_http_cannot_carry_fails_the_delivery_naming_it() {
    let env = Env::new().await;
    let rx = env.receiver(always(200)).await;
    let wh = env.webhook(&rx.url("/")).await;
    env.db
        .batch_execute("ALTER TABLE webhooks DROP CONSTRAINT webhooks_headers_allowed")
        .await
        .unwrap();
    env.db
        .execute(
            "UPDATE webhooks SET headers = jsonb_build_object('X-Token', 'a' || chr(1) || 'b', 'X-Fine', 'é') WHERE id = $1",
            &[&wh],
        )
        .await
        .unwrap();
    let id = env.enqueue(wh, 1).await[0];
    let _daemon = env.spawn_daemon(&[]);
    env.wait_until(
        &format!("SELECT status = 'failed' FROM webhook_deliveries WHERE id = '{id}'"),
        T,
    )
    .await;
    let error: String = env
        .db
        .query_one(
            "SELECT last_error FROM webhook_deliveries WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        error.contains("\"X-Token\"") && error.contains("not sent"),
        "{error}"
    );
    assert_eq!(rx.count(), 0, "nothing reached the receiver");
}

/// The highest count the schema takes is claimed without overflow, beside
/// ordinary rows: every row is sent, the full one once (its retries are used up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_at_the_attempts_limit_is_sent_once_and_stops_no_other() {
    let env = Env::new().await;
    let rx = env.receiver(always(200)).await;
    let wh = env.webhook(&rx.url("/")).await;
    let full: uuid::Uuid = env
        .db
        .query_one(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, attempts) VALUES ($1, 'x', 1000) RETURNING id",
            &[&wh],
        )
        .await
        .unwrap()
        .get(0);
    let others = env.enqueue(wh, 3).await;
    let _daemon = env.spawn_daemon(&[]);
    env.wait_until(
        "SELECT count(*) = 4 FROM webhook_deliveries WHERE status = 'success'",
        T,
    )
    .await;
    let row = env
        .db
        .query_one(
            "SELECT d.attempts, (SELECT count(*) FROM webhook_delivery_attempts a WHERE a.delivery_id = d.id)
             FROM webhook_deliveries d WHERE d.id = $1",
            &[&full],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i32>(0), row.get::<_, i64>(1)), (1000, 1));
    assert_eq!(others.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_completion_from_an_earlier_claim_is_fenced_out() {
    use plausible_webhooks::queue::{Attempt, Completion, Outcome};
    let env = Env::new().await;
    let wh = env.webhook("https://example.com/hook").await;
    // Claimed again by the same instance, with the same attempt number as an
    // earlier claim whose (deferral) outcome is replayed late.
    let (id, lease): (uuid::Uuid, time::OffsetDateTime) = {
        let r = env
            .db
            .query_one(
                "INSERT INTO webhook_deliveries (webhook_id, event_type, status, attempts, locked_by, locked_until)
                 VALUES ($1, 'goal_completion', 'delivering', 1, 'me', now() + interval '1 minute')
                 RETURNING id, locked_until",
                &[&wh],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    let stale = Completion {
        id,
        webhook_id: wh,
        attempt: 1,
        lease: lease - time::Duration::seconds(5),
        outcome: Outcome::Deferred,
    };
    let current = Completion {
        lease,
        outcome: Outcome::Delivered(Attempt {
            status_code: Some(200),
            error: None,
            error_kind: None,
            response_body: None,
            duration_ms: 0,
            attempted_at: time::OffsetDateTime::now_utc(),
        }),
        ..stale.clone()
    };
    // One completer run per outcome, so the stale one is written first.
    complete(&env, vec![stale]).await;
    complete(&env, vec![current]).await;
    assert_eq!(
        env.count(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'success' AND attempts = 1"
        )
        .await,
        1,
        "the stale completion must not have released the row"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_enabling_a_webhook_clears_its_health() {
    let env = Env::new().await;
    let wh = env.webhook("https://example.com/hook").await;
    env.db
        .execute(
            "UPDATE webhooks SET enabled = false, disabled_reason = 'x', disabled_at = now(),
                    consecutive_failures = 25, failing_since = now() - interval '2 days' WHERE id = $1",
            &[&wh],
        )
        .await
        .unwrap();
    env.db
        .execute("UPDATE webhooks SET enabled = true WHERE id = $1", &[&wh])
        .await
        .unwrap();
    let r = env
        .db
        .query_one(
            "SELECT consecutive_failures, failing_since IS NULL, disabled_reason IS NULL FROM webhooks WHERE id = $1",
            &[&wh],
        )
        .await
        .unwrap();
    assert_eq!(
        (r.get::<_, i32>(0), r.get::<_, bool>(1), r.get::<_, bool>(2)),
        (0, true, true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_whose_body_trickles_past_the_timeout_is_a_success() {
    let env = Env::new().await;
    let rx = env.receiver(Arc::new(|_: &_| Reply::Trickle)).await;
    let wh = env.webhook(&rx.url("/")).await;
    let daemon = env.daemon(env.config()).await; // request timeout 2 s
    env.enqueue(wh, 1).await;
    env.wait_all_final(T).await;
    daemon.shutdown().await.unwrap();
    let r = env
        .db
        .query_one("SELECT d.status, d.attempts, a.status_code FROM webhook_deliveries d JOIN webhook_delivery_attempts a ON a.delivery_id = d.id", &[])
        .await
        .unwrap();
    assert_eq!(
        (
            r.get::<_, String>(0).as_str(),
            r.get::<_, i32>(1),
            r.get::<_, Option<i32>>(2)
        ),
        ("success", 1, Some(200))
    );
    assert_eq!(rx.count(), 1, "not sent again");
}

/// Runs a completer (instance "me") over `batch` until it has written it all.
async fn complete(env: &Env, batch: Vec<plausible_webhooks::queue::Completion>) {
    use plausible_webhooks::queue::completer::{self, Completer, CompleterConfig};
    let (tx, rx) = completer::channel(batch.len().max(1));
    let completer = Completer::new(
        CompleterConfig {
            instance: "me".into(),
            batch_max: 10,
            in_flight: 2,
            disable_after_failures: 0,
            disable_after: Duration::from_secs(1),
        },
        plausible_webhooks::db::pool(&env.url, 2).unwrap(),
        rx,
        Arc::new(tokio::sync::Notify::new()),
    )
    .unwrap();
    for c in batch {
        tx.send((c, None)).await.unwrap();
    }
    drop(tx);
    let handle = completer.start(CancellationToken::new());
    tokio::time::timeout(T, handle).await.unwrap().unwrap();
}

/// Receivers that never answer, with thousands queued, never take the last
/// delivery slots, even a webhook set to "1000 at once" (above max_in_flight):
/// another webhook's deliveries go out at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_receivers_with_thousands_queued_leave_slots_for_everyone_else() {
    let env = Env::new().await;
    let hung = env.receiver(Arc::new(|_: &_| Reply::Hang)).await;
    let fast = env.receiver(always(200)).await;
    let mut hung_hooks = Vec::new();
    for i in 0..8 {
        hung_hooks.push(env.webhook(&hung.url(&format!("/{i}"))).await);
    }
    env.db
        .execute(
            "UPDATE webhooks SET max_concurrency = 1000 WHERE id = $1",
            &[&hung_hooks[0]],
        )
        .await
        .unwrap();
    let wh_fast = env.webhook(&fast.url("/")).await;
    let mut cfg = env.config();
    // The README's 512 slots and 64 per webhook, scaled down by 8.
    cfg.delivery.max_in_flight = 64;
    cfg.delivery.default_max_concurrency = 8;
    cfg.delivery.request_timeout_ms = 20_000;
    cfg.delivery.lease_secs = 40;
    cfg.shutdown.grace_secs = 0;
    let daemon = env.daemon(cfg).await;
    for wh in &hung_hooks {
        env.enqueue(*wh, 500).await;
    }
    // Beyond their light shares (1 each) the hung webhooks leave the reserve
    // (8) free: they hold 56 to 63 of the 64 slots, by the order they came in
    // (see queue::admission).
    hung.wait_for(56, T).await.unwrap();

    let before = std::time::SystemTime::now();
    env.enqueue(wh_fast, 20).await;
    let got = fast.wait_for(20, T).await.unwrap();
    let slowest = got
        .iter()
        .map(|r| r.at.duration_since(before).unwrap_or_default())
        .max()
        .unwrap();
    let held = hung.count();
    daemon.shutdown().await.unwrap();
    assert!(
        slowest <= Duration::from_secs(1),
        "another webhook's deliveries waited {slowest:?} behind hung receivers"
    );
    assert!(
        held <= 63,
        "hung receivers hold {held} of 64 slots: they must leave some free"
    );
}

/// A rate-limited backlog is not claimed ahead of its rate: rows stay
/// untouched until they may be sent, so the database works per delivery sent
/// (its outcome: the claim only reads the row, sql/0020), not per row waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_backlog_costs_one_row_update_per_delivery_sent() {
    let env = Env::new().await;
    let rx = env.receiver(always(200)).await;
    let wh = env.webhook(&rx.url("/")).await;
    env.count_row_updates().await;
    env.db
        .execute(
            "UPDATE webhooks SET rate_limit_per_sec = 2 WHERE id = $1",
            &[&wh],
        )
        .await
        .unwrap();
    env.enqueue(wh, 3_000).await;
    let mut cfg = env.config();
    cfg.delivery.max_in_flight = 64;
    let daemon = env.daemon(cfg).await;
    // A burst of 2, then one every 500 ms.
    let got = rx.wait_for(6, T).await.unwrap();
    daemon.shutdown().await.unwrap();
    let sent = rx.count() as i64;
    let updates = env.count("SELECT n FROM row_updates").await;
    let span = got[5].at.duration_since(got[0].at).unwrap();
    assert!(
        span >= Duration::from_millis(1800),
        "6 requests in {span:?} at 2/s"
    );
    // Each delivery sent: its outcome. A row claimed as the daemon stopped
    // goes back unsent (one more update): at most a burst's worth.
    assert!(
        updates <= sent + 2,
        "{updates} row updates to send {sent} deliveries"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'")
            .await,
        3_000 - sent
    );
}

/// Payloads over the limit are refused at INSERT (and UPDATE) by the
/// database itself, whoever writes them, with the limit, the size and what
/// to do in the message; a payload exactly at the limit is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_payload_is_refused_at_insert_saying_limit_size_and_what_to_do() {
    let env = Env::new().await;
    let wh = env.webhook("https://example.com/hook").await;
    let limit = plausible_webhooks::config::DEFAULT_MAX_PAYLOAD_BYTES as i32;
    // `{"blob": "…"}` renders as 12 bytes around the string.
    let big = "INSERT INTO webhook_deliveries (webhook_id, event_type, payload)
               VALUES ($1, 'goal_completion', jsonb_build_object('blob', repeat('x', $2)))";
    for (sql, n) in [
        (big, limit - 12 + 1),
        // webhook_enqueue inserts the same way.
        (
            "SELECT webhook_enqueue((SELECT site_id FROM webhooks WHERE id = $1), 'goal_completion',
                                    jsonb_build_object('blob', repeat('x', $2)))",
            limit - 12 + 1,
        ),
        (
            "INSERT INTO webhook_deliveries (webhook_id, event_type, payload)
             SELECT $1, 'goal_completion', jsonb_build_object('blob', repeat('x', g * $2))
             FROM generate_series(0, 1) g",
            3 * limit,
        ),
    ] {
        let err = env.db.query(sql, &[&wh, &n]).await.expect_err(sql);
        let db = err.as_db_error().expect("a database error");
        assert_eq!(db.constraint(), Some("webhook_deliveries_payload_size"), "{db}");
        assert_eq!(db.code(), &tokio_postgres::error::SqlState::CHECK_VIOLATION);
        let size = (n + 12).to_string();
        for words in [size.as_str(), &limit.to_string(), "max_payload_bytes", "smaller"] {
            assert!(db.message().contains(words), "{words}: {}", db.message());
        }
    }
    assert_eq!(
        env.db
            .query_one("SELECT count(*) FROM webhook_deliveries", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        0
    );
    // Exactly at the limit: taken; growing it by UPDATE: refused.
    let id: uuid::Uuid = env
        .db
        .query_one(&format!("{big} RETURNING id"), &[&wh, &(limit - 12)])
        .await
        .unwrap()
        .get(0);
    let err = env
        .db
        .execute(
            "UPDATE webhook_deliveries SET payload = payload || '{\"more\": 1}' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.as_db_error().and_then(|e| e.constraint()),
        Some("webhook_deliveries_payload_size"),
        "{err}"
    );
}

/// The daemon writes its `delivery.max_payload_bytes` into the database at
/// start. Rows queued before (here: under a higher limit) are not refused
/// later: they are delivered as written, while new ones over the limit are
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_limit_refuses_new_payloads_and_still_delivers_queued_ones() {
    let env = Env::new().await;
    let rx = env.receiver(always(200)).await;
    let wh = env.webhook(&rx.url("/")).await;
    let insert = "INSERT INTO webhook_deliveries (webhook_id, event_type, payload)
                  VALUES ($1, 'goal_completion', jsonb_build_object('blob', repeat('x', $2))) RETURNING id";
    let queued: uuid::Uuid = env
        .db
        .query_one(insert, &[&wh, &100_000i32])
        .await
        .unwrap()
        .get(0);
    let _daemon = env.spawn_daemon(&[("PLAUSIBLE_WEBHOOKS__DELIVERY__MAX_PAYLOAD_BYTES", "65536")]);
    env.wait_until(
        &format!("SELECT status = 'success' FROM webhook_deliveries WHERE id = '{queued}'"),
        T,
    )
    .await;
    let seen = rx.wait_for(1, T).await.unwrap();
    assert_eq!(
        seen[0].json()["data"]["blob"].as_str().map(str::len),
        Some(100_000)
    );
    let err = env
        .db
        .query_one(insert, &[&wh, &100_000i32])
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("a database error");
    assert_eq!(
        db.constraint(),
        Some("webhook_deliveries_payload_size"),
        "{db}"
    );
    assert!(db.message().contains("65536"), "{}", db.message());
}

/// An upgrade: rows over the limit queued before migration 5 existed are
/// kept by `migrate` and delivered as written; after it, new ones are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_queued_before_the_payload_migration_are_delivered_as_written() {
    let env = Env::new().await;
    let rx = env.receiver(always(200)).await;
    let wh = env.webhook(&rx.url("/")).await;
    // The schema as migration 3 left it: without migration 5, nor 12,
    // which adds its caps to 5's settings table, nor 20, whose trigger
    // reads 5's column.
    env.db
        .batch_execute(&common::undo_migration_20())
        .await
        .unwrap();
    env.db
        .batch_execute(
            "DROP TRIGGER webhooks_per_site_limit ON webhooks;
             DROP FUNCTION plausible_webhooks_webhooks_per_site_check();
             DROP TRIGGER webhook_triggers_per_webhook_limit ON webhook_triggers;
             DROP FUNCTION plausible_webhooks_triggers_per_webhook_check();
             DELETE FROM plausible_webhooks_schema_migrations WHERE version = 12;
             DROP TRIGGER webhook_deliveries_payload_size ON webhook_deliveries;
             DROP FUNCTION plausible_webhooks_payload_size_check();
             DROP FUNCTION plausible_webhooks_max_payload_bytes();
             DROP TABLE plausible_webhooks_settings;
             ALTER TABLE webhook_deliveries DROP COLUMN payload_bytes;
             DELETE FROM plausible_webhooks_schema_migrations WHERE version = 5;",
        )
        .await
        .unwrap();
    let insert = "INSERT INTO webhook_deliveries (webhook_id, event_type, payload)
                  VALUES ($1, 'goal_completion', jsonb_build_object('blob', repeat('x', 300000))) RETURNING id";
    let old: uuid::Uuid = env.db.query_one(insert, &[&wh]).await.unwrap().get(0);
    let mut c = plausible_webhooks::db::connect(&env.url).await.unwrap();
    assert_eq!(
        plausible_webhooks::db::migrate::migrate(&mut c)
            .await
            .unwrap(),
        vec![5, 12, 20]
    );
    // Migration 14 (left in place: it changes the webhooks table too) adds
    // this column to 5's settings table, which the undo above dropped.
    env.db
        .batch_execute(
            "ALTER TABLE plausible_webhooks_settings ADD COLUMN failing_after_failures integer NOT NULL DEFAULT 1,
                 ADD COLUMN owner_mail boolean NOT NULL DEFAULT false",
        )
        .await
        .unwrap();
    let err = env.db.query_one(insert, &[&wh]).await.unwrap_err();
    assert_eq!(
        err.as_db_error().and_then(|e| e.constraint()),
        Some("webhook_deliveries_payload_size"),
        "{err}"
    );
    let _daemon = env.spawn_daemon(&[]);
    env.wait_until(
        &format!("SELECT status = 'success' FROM webhook_deliveries WHERE id = '{old}'"),
        T,
    )
    .await;
    let seen = rx.wait_for(1, T).await.unwrap();
    assert_eq!(
        seen[0].json()["data"]["blob"].as_str().map(str::len),
        Some(300_000)
    );
}

/// Payload bytes in flight are bounded, not only their number: large
/// payloads at a receiver that never answers are claimed only while they fit
/// `max_bytes_in_flight`, and small ones of other webhooks still go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_bytes_in_flight_are_bounded() {
    let env = Env::new().await;
    let hung = env.receiver(Arc::new(|_: &_| Reply::Hang)).await;
    let fast = env.receiver(always(200)).await;
    let wh_hung = env.webhook(&hung.url("/")).await;
    let wh_fast = env.webhook(&fast.url("/")).await;
    let mut cfg = env.config();
    cfg.delivery.max_bytes_in_flight = 1 << 20;
    cfg.delivery.request_timeout_ms = 20_000;
    cfg.delivery.lease_secs = 40;
    cfg.shutdown.grace_secs = 0;
    let daemon = env.daemon(cfg).await;
    // 20 payloads of 200 kB: 5 fit in 1 MiB.
    env.db
        .execute(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, payload)
             SELECT $1, 'goal_completion', jsonb_build_object('n', g, 'blob', repeat('x', 200000))
             FROM generate_series(1, 20) g",
            &[&wh_hung],
        )
        .await
        .unwrap();
    hung.wait_for(5, T).await.unwrap();
    // A claim after those: a small payload of another webhook still fits.
    env.enqueue(wh_fast, 1).await;
    fast.wait_for(1, T).await.unwrap();
    let in_flight = env
        .count(&format!(
            "SELECT count(*) FROM webhook_deliveries_leases WHERE webhook_id = '{wh_hung}'"
        ))
        .await;
    daemon.shutdown().await.unwrap();
    assert_eq!(in_flight, 5, "200 kB payloads in flight within 1 MiB");
}

/// A disabled webhook's deliveries end unsent at once, whatever its rate
/// limit: the limit paces requests, and none are made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_rate_limited_webhooks_backlog_ends_at_once() {
    let env = Env::new().await;
    let rx = env.receiver(always(200)).await;
    let wh = env.webhook(&rx.url("/")).await;
    env.db
        .execute(
            "UPDATE webhooks SET rate_limit_per_sec = 1, max_concurrency = 1, enabled = false,
                                 disabled_reason = 'paused by a test' WHERE id = $1",
            &[&wh],
        )
        .await
        .unwrap();
    env.enqueue(wh, 1_000).await;
    let daemon = env.daemon(env.config()).await;
    // Paced by the limit (one at a time), these took over 25 s.
    env.wait_until(
        "SELECT count(*) = 1000 FROM webhook_deliveries WHERE status = 'failed'",
        Duration::from_secs(15),
    )
    .await;
    daemon.shutdown().await.unwrap();
    assert_eq!(rx.count(), 0);
}
