//! Nothing lost: expired leases, kill -9, a PostgreSQL restart, two daemons on
//! one database, SIGTERM.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::Env;
use plausible_webhooks::testkit::pg::{PgCluster, PgOptions};
use plausible_webhooks::testkit::receiver::{always, Reply};
use uuid::Uuid;

const T: Duration = Duration::from_secs(60);

/// How many times the receiver saw each webhook-id.
fn per_id(rx: &plausible_webhooks::testkit::receiver::Receiver) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in rx.requests() {
        *m.entry(r.header("webhook-id").unwrap().to_string())
            .or_insert(0) += 1;
    }
    m
}

/// Every delivery has exactly as many attempt rows as its attempts counter.
async fn attempts_fully_logged(env: &Env) {
    let bad = env
        .count(
            "SELECT count(*) FROM webhook_deliveries d
             WHERE d.attempts <> (SELECT count(*) FROM webhook_delivery_attempts a WHERE a.delivery_id = d.id)
                OR d.attempts <> (SELECT coalesce(max(attempt), 0) FROM webhook_delivery_attempts a WHERE a.delivery_id = d.id)",
        )
        .await;
    assert_eq!(bad, 0, "attempt log out of step with the attempts counter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_rescued_logged_and_delivered() {
    let env = Env::new().await;
    let rx = env.receiver(always(200)).await;
    let wh = env.webhook(&rx.url("/")).await;
    // A row claimed by an instance that died: attempt 1 in flight, lease expired.
    let id: Uuid = env
        .db
        .query_one(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, payload, status, attempts, locked_by, locked_until)
             VALUES ($1, 'goal_completion', '{}', 'delivering', 1, 'dead-host:1:abcd', now() - interval '1 second')
             RETURNING id",
            &[&wh],
        )
        .await
        .unwrap()
        .get(0);
    // And one whose lease is still valid: it must not be touched.
    env.db
        .execute(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, payload, status, attempts, locked_by, locked_until)
             VALUES ($1, 'goal_completion', '{}', 'delivering', 1, 'live-host:1:abcd', now() + interval '1 hour')",
            &[&wh],
        )
        .await
        .unwrap();
    let daemon = env.daemon(env.config()).await;
    env.wait_until(
        "SELECT count(*) = 1 FROM webhook_deliveries WHERE status = 'success'",
        T,
    )
    .await;
    daemon.shutdown().await.unwrap();

    let rows = env
        .db
        .query(
            "SELECT attempt, status_code, error, instance FROM webhook_delivery_attempts WHERE delivery_id = $1 ORDER BY attempt",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<_, Option<i32>>(1), None);
    assert!(rows[0].get::<_, String>(2).contains("lease expired"));
    assert_eq!(rows[0].get::<_, String>(3), "dead-host:1:abcd");
    assert_eq!(
        (rows[1].get::<_, i32>(0), rows[1].get::<_, Option<i32>>(1)),
        (2, Some(200))
    );
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivering' AND locked_by = 'live-host:1:abcd'").await,
        1,
        "a valid lease is left alone"
    );
    assert_eq!(rx.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_batch_then_restart_delivers_everything_with_attempts_logged() {
    let env = Env::new().await;
    let rx = env
        .receiver(Arc::new(|_: &_| {
            Reply::Delayed(Duration::from_millis(100), 200)
        }))
        .await;
    let wh = env.webhook(&rx.url("/")).await;
    env.enqueue(wh, 300).await;
    let mut first = env.spawn_daemon(&[("PLAUSIBLE_WEBHOOKS__DELIVERY__MAX_IN_FLIGHT", "32")]);
    rx.wait_for(40, T).await.unwrap();
    first.kill9();
    // Its server sessions end once they notice: a claim already running
    // commits first, and what is in flight is counted after that.
    env.wait_until(
        "SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        T,
    )
    .await;
    let in_flight = env
        .count("SELECT count(*) FROM webhook_deliveries_leases")
        .await;
    assert!(in_flight > 0, "the kill should land mid-batch");
    let _second = env.spawn_daemon(&[]);
    env.wait_until(
        "SELECT bool_and(status = 'success') FROM webhook_deliveries",
        T,
    )
    .await;

    attempts_fully_logged(&env).await;
    let seen = per_id(&rx);
    assert_eq!(seen.len(), 300, "every delivery reached the receiver");
    // Only deliveries whose attempt was lost in the crash may have been sent twice,
    // and those carry an "outcome unknown" attempt in the log.
    let lost: i64 = env
        .count("SELECT count(*) FROM webhook_delivery_attempts WHERE error LIKE 'outcome unknown%'")
        .await;
    assert!(
        lost >= 1 && lost <= in_flight,
        "lost {lost}, in flight at the kill {in_flight}"
    );
    let dupes = seen.values().filter(|&&n| n > 1).count() as i64;
    assert!(
        dupes <= lost,
        "{dupes} sent twice, only {lost} attempts were lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemon_processes_send_every_delivery_exactly_once() {
    let env = Env::new().await;
    let rx = env.receiver(always(200)).await;
    let wh = env.webhook(&rx.url("/")).await;
    // A generous timeout: on a loaded machine a 2 s one expires while the
    // receiver has the request, and the resend (correct at-least-once
    // behaviour) is not what this test is about.
    let slow_ok = [
        ("PLAUSIBLE_WEBHOOKS__DELIVERY__REQUEST_TIMEOUT_MS", "10000"),
        ("PLAUSIBLE_WEBHOOKS__DELIVERY__LEASE_SECS", "15"),
    ];
    let _a = env.spawn_daemon(&slow_ok);
    let _b = env.spawn_daemon(&slow_ok);
    env.enqueue(wh, 1000).await;
    for _ in 0..10 {
        env.enqueue(wh, 100).await;
    }
    env.wait_until(
        "SELECT count(*) = 2000 FROM webhook_deliveries WHERE status = 'success'",
        T,
    )
    .await;
    let seen = per_id(&rx);
    assert_eq!(seen.len(), 2000);
    // Two instances never send one claim twice: a delivery reaches the
    // receiver again only as a new attempt after a failed one (a timeout
    // under load), never as a second copy of the same attempt.
    for (id, &n) in &seen {
        if n == 1 {
            continue;
        }
        let failed_before = env
            .count(&format!(
                "SELECT count(*) FROM webhook_delivery_attempts
                 WHERE delivery_id = '{id}' AND error IS NOT NULL
                   AND attempt < (SELECT attempts FROM webhook_deliveries WHERE id = '{id}')"
            ))
            .await;
        assert!(
            failed_before >= n as i64 - 1,
            "delivery {id} was sent {n} times with {failed_before} failed attempts before"
        );
    }
    let resent = seen.values().filter(|&&n| n > 1).count();
    assert!(
        resent <= 20,
        "{resent} deliveries were resent after a timeout"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_delivery_attempts")
            .await,
        env.count("SELECT sum(attempts)::int8 FROM webhook_deliveries")
            .await
    );
    let instances = env
        .count("SELECT count(DISTINCT instance) FROM webhook_delivery_attempts")
        .await;
    assert!(instances >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_work_and_exits_zero() {
    let env = Env::new().await;
    let rx = env
        .receiver(Arc::new(|_: &_| {
            Reply::Delayed(Duration::from_millis(500), 200)
        }))
        .await;
    let wh = env.webhook(&rx.url("/")).await;
    env.db
        .execute(
            "UPDATE webhooks SET max_concurrency = 4 WHERE id = $1",
            &[&wh],
        )
        .await
        .unwrap();
    env.enqueue(wh, 50).await;
    let mut d = env.spawn_daemon(&[]);
    rx.wait_for(4, T).await.unwrap();
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0));
    // Nothing left claimed; what was sent is recorded; the rest waits in the queue.
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries_leases")
            .await,
        0
    );
    let done = env
        .count("SELECT count(*) FROM webhook_deliveries WHERE status = 'success'")
        .await;
    assert!(
        done >= 4,
        "in-flight requests finished within the grace period ({done})"
    );
    assert_eq!(
        done as usize,
        rx.count(),
        "every request that reached the receiver is recorded"
    );
    assert_eq!(
        env.count(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending' AND attempts = 0"
        )
        .await,
        50 - done
    );
    attempts_fully_logged(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_while_running_reconnects_and_finishes_everything() {
    // Its own cluster: this test stops the server.
    let cluster = tokio::task::spawn_blocking(|| PgCluster::start(&PgOptions::default()))
        .await
        .unwrap()
        .unwrap();
    let url = cluster.create_migrated_database("restart").await.unwrap();
    let env = Env::on(cluster, url).await;
    let rx = env.receiver(always(200)).await;
    let wh = env.webhook(&rx.url("/")).await;
    let mut cfg = env.config();
    cfg.delivery.lease_secs = 60;
    let daemon = env.daemon(cfg).await;
    let mut up = daemon.listener_connected();
    env.enqueue(wh, 50).await;
    env.wait_until(
        "SELECT count(*) = 50 FROM webhook_deliveries WHERE status = 'success'",
        T,
    )
    .await;

    let c = &env.cluster;
    tokio::task::block_in_place(|| c.stop()).unwrap();
    up.wait_for(|v| !*v).await.unwrap();
    tokio::task::block_in_place(|| c.start_again()).unwrap();
    // The listener comes back by itself.
    tokio::time::timeout(T, up.wait_for(|v| *v))
        .await
        .expect("listener reconnects")
        .unwrap();
    let db = plausible_webhooks::db::connect(&env.url).await.unwrap();
    db.execute(
        "INSERT INTO webhook_deliveries (webhook_id, event_type, payload) SELECT $1, 'goal_completion', '{}' FROM generate_series(1, 50)",
        &[&wh],
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    rx.wait_for(100, T).await.unwrap();
    let wait = Env::wait_until_on(
        &db,
        "SELECT count(*) = 100 FROM webhook_deliveries WHERE status = 'success'",
        T,
    );
    wait.await;
    daemon.shutdown().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    let seen = per_id(&rx);
    assert_eq!(seen.len(), 100);
    assert!(seen.values().all(|&n| n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_grace_period_hung_requests_are_released_not_lost() {
    let env = Env::new().await;
    let rx = env.receiver(Arc::new(|_: &_| Reply::Hang)).await;
    let wh = env.webhook(&rx.url("/")).await;
    env.enqueue(wh, 3).await;
    let mut d = env.spawn_daemon(&[
        ("PLAUSIBLE_WEBHOOKS__SHUTDOWN__GRACE_SECS", "1"),
        ("PLAUSIBLE_WEBHOOKS__DELIVERY__REQUEST_TIMEOUT_MS", "30000"),
        ("PLAUSIBLE_WEBHOOKS__DELIVERY__LEASE_SECS", "60"),
    ]);
    rx.wait_for(3, T).await.unwrap();
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0));
    // Released at once (not left for the lease to expire), with the interrupted
    // attempt logged, and due again.
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending' AND attempts = 1 AND locked_by IS NULL AND next_attempt_at <= now()").await,
        3
    );
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_delivery_attempts WHERE error LIKE '%interrupted by shutdown%'").await,
        3
    );
    attempts_fully_logged(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_is_told_ready_and_stopping() {
    let env = Env::new().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut d = env.spawn_daemon(&[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let mut buf = [0u8; 256];
    let n = tokio::task::block_in_place(|| sock.recv(&mut buf)).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    // READY means the listener is connected: a NOTIFY now is not lost.
    assert_eq!(
        env.count("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'plausible-webhooks-listener'").await,
        1
    );
    d.signal(libc::SIGTERM);
    let n = tokio::task::block_in_place(|| sock.recv(&mut buf)).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    assert_eq!(d.wait_exit(Duration::from_secs(20)).await.code(), Some(0));
}

/// PostgreSQL made read-only (`default_transaction_read_only`, as an
/// operator or a failover does) for longer than the lease while 30
/// deliveries are in flight: `/readyz` and API writes say the database
/// refuses writes (503); once it takes writes again every outcome is
/// recorded by the instance that holds it, nothing is rescued and sent
/// twice, and no attempt is logged as "outcome unknown".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_longer_than_the_lease_sends_nothing_twice() {
    use common::http::{free_port, request, wait_status};
    use plausible_webhooks::admin::auth::operator_token_hash;
    const OPERATOR: &str = "operator-token-for-the-read-only-test-0123";
    // Its own cluster: ALTER SYSTEM reaches every session of the server.
    let cluster = tokio::task::spawn_blocking(|| PgCluster::start(&PgOptions::default()))
        .await
        .unwrap()
        .unwrap();
    let url = cluster.create_migrated_database("readonly").await.unwrap();
    let env = Env::on(cluster, url).await;
    let rx = env
        .receiver(Arc::new(|_: &_| {
            Reply::Delayed(Duration::from_millis(1500), 200)
        }))
        .await;
    let wh = env.webhook(&rx.url("/")).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let tokens = format!("[\"{}\"]", operator_token_hash(OPERATOR));
    let _daemon = env.spawn_daemon(&[
        ("PLAUSIBLE_WEBHOOKS__ADMIN__LISTEN", addr.as_str()),
        ("PLAUSIBLE_WEBHOOKS__ADMIN__OPERATOR_TOKEN_SHA256", &tokens),
        ("PLAUSIBLE_WEBHOOKS__DELIVERY__REQUEST_TIMEOUT_MS", "4000"),
        ("PLAUSIBLE_WEBHOOKS__DELIVERY__LEASE_SECS", "6"),
    ]);
    wait_status(&format!("http://{addr}/readyz"), 200, T).await;
    env.enqueue(wh, 30).await;
    rx.wait_for(30, T).await.unwrap();

    env.db
        .execute("ALTER SYSTEM SET default_transaction_read_only = on", &[])
        .await
        .unwrap();
    env.db
        .execute("SELECT pg_reload_conf()", &[])
        .await
        .unwrap();
    // This session writes the setting back later.
    env.db
        .execute("SET default_transaction_read_only = off", &[])
        .await
        .unwrap();
    let ready = wait_status(&format!("http://{addr}/readyz"), 503, T).await;
    assert!(ready.text.contains("refuses writes"), "{}", ready.text);
    let api = |method: &'static str, path: String, body: serde_json::Value| {
        let addr = addr.clone();
        async move {
            request(
                method,
                &format!("http://{addr}{path}"),
                Some(OPERATOR),
                Some(&body),
            )
            .await
            .unwrap()
        }
    };
    use serde_json::json;
    for (method, path, body) in [
        (
            "POST",
            "/api/webhooks".to_string(),
            json!({"site_id": "example.com", "name": "w", "url": "https://hooks.example.net/x"}),
        ),
        (
            "PATCH",
            format!("/api/webhooks/{wh}"),
            json!({"name": "renamed"}),
        ),
        (
            "POST",
            format!("/api/webhooks/{wh}/rotate-secret"),
            json!({}),
        ),
        (
            "POST",
            format!("/api/webhooks/{wh}/triggers"),
            json!({"type": "goal_completion"}),
        ),
        ("POST", format!("/api/webhooks/{wh}/test"), json!({})),
        ("DELETE", format!("/api/webhooks/{wh}"), json!({})),
    ] {
        let a = api(method, path.clone(), body).await;
        assert_eq!(
            (a.status, a.code().as_str()),
            (503, "database_unavailable"),
            "{method} {path}: {}",
            a.text
        );
        assert!(
            a.text.contains("refuses writes"),
            "{method} {path}: {}",
            a.text
        );
    }
    // Read-only until every lease has been over for a while (the rescuer
    // runs every 500 ms).
    env.wait_until(
        "SELECT now() > max(locked_until) + interval '3 seconds' FROM webhook_deliveries_leases",
        T,
    )
    .await;
    env.db
        .execute("ALTER SYSTEM RESET default_transaction_read_only", &[])
        .await
        .unwrap();
    env.db
        .execute("SELECT pg_reload_conf()", &[])
        .await
        .unwrap();
    env.wait_until(
        "SELECT count(*) = 30 FROM webhook_deliveries WHERE status = 'success'",
        T,
    )
    .await;
    wait_status(&format!("http://{addr}/readyz"), 200, T).await;
    let seen = per_id(&rx);
    assert_eq!(seen.len(), 30);
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    assert_eq!(
        env.count(
            "SELECT count(*) FROM webhook_delivery_attempts WHERE error LIKE 'outcome unknown%'"
        )
        .await,
        0
    );
    attempts_fully_logged(&env).await;
}

/// An upgrade with deliveries in every state of the queue: an installation
/// stopped mid-delivery (its in-flight rows `delivering` under its lease, as
/// the daemon before migration 20 left them), with rows queued, retrying and
/// waiting, migrates to the ready and lease rows, and every delivery ends
/// once: sent once each, the finished ones not at all, the attempt log whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_in_flight_at_the_ready_and_lease_migration_each_end_once() {
    let env = Env::new().await;
    let rx = env.receiver(always(200)).await;
    let wh = env.webhook(&rx.url("/")).await;
    env.db
        .batch_execute(&common::undo_migration_20())
        .await
        .unwrap();
    env.db
        .execute(
            "WITH q AS (
                 -- queued
                 INSERT INTO webhook_deliveries (webhook_id, event_type, payload)
                 SELECT $1, 'goal_completion', jsonb_build_object('n', g) FROM generate_series(1, 5) g
             ), r AS (
                 -- retrying: attempt 1 failed, due now (3) or in two seconds (2)
                 INSERT INTO webhook_deliveries (webhook_id, event_type, payload, attempts, last_response_code, next_attempt_at)
                 SELECT $1, 'goal_completion', jsonb_build_object('r', g), 1, 500,
                        CASE WHEN g <= 3 THEN now() ELSE now() + interval '2 seconds' END
                 FROM generate_series(1, 5) g RETURNING id
             ), ra AS (
                 INSERT INTO webhook_delivery_attempts (delivery_id, attempt, status_code, duration_ms, instance)
                 SELECT id, 1, 500, 5, 'old-host:1:abcd' FROM r
             ), f AS (
                 -- in flight on the stopped instance: attempt 1 (or 2) under
                 -- way, the lease over (3) or ending in two seconds (1)
                 INSERT INTO webhook_deliveries (webhook_id, event_type, payload, status, attempts, locked_by, locked_until)
                 SELECT $1, 'goal_completion', jsonb_build_object('f', g), 'delivering', CASE WHEN g = 1 THEN 2 ELSE 1 END,
                        'old-host:1:abcd',
                        CASE WHEN g <= 3 THEN now() - interval '1 second' ELSE now() + interval '2 seconds' END
                 FROM generate_series(1, 4) g RETURNING id, attempts
             ), fa AS (
                 INSERT INTO webhook_delivery_attempts (delivery_id, attempt, status_code, duration_ms, instance)
                 SELECT id, 1, 503, 5, 'old-host:1:abcd' FROM f WHERE attempts = 2
             )
             -- finished: never sent again
             INSERT INTO webhook_deliveries (webhook_id, event_type, payload, status, attempts, finished_at)
             SELECT $1, 'goal_completion', '{}', s, 0, now()
             FROM unnest(ARRAY['success', 'success', 'failed']) s",
            &[&wh],
        )
        .await
        .unwrap();
    let mut c = plausible_webhooks::db::connect(&env.url).await.unwrap();
    assert_eq!(
        plausible_webhooks::db::migrate::migrate(&mut c)
            .await
            .unwrap(),
        vec![20]
    );
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries_ready")
            .await,
        10,
        "queued and retrying rows are ready"
    );
    assert_eq!(
        env.count(
            "SELECT count(*) FROM webhook_deliveries_leases l JOIN webhook_deliveries d ON d.id = l.delivery_id
             WHERE l.locked_by = 'old-host:1:abcd' AND l.attempt = d.attempts AND l.locked_until = d.locked_until"
        )
        .await,
        4,
        "rows in flight keep their lease"
    );
    // An instance still on the build before migration 20 (a rolling
    // upgrade) is refused its claim, which would set a row `delivering` in
    // place beside the ready rows, and told what to do...
    let err = env
        .db
        .execute(
            "UPDATE webhook_deliveries SET status = 'delivering', attempts = attempts + 1,
                    locked_by = 'old-host:2:abcd', locked_until = now() + interval '30 seconds'
             WHERE payload->>'n' = '1'",
            &[],
        )
        .await
        .unwrap_err();
    let e = err.as_db_error().expect("refused by the database");
    assert_eq!(
        e.code(),
        &tokio_postgres::error::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE
    );
    assert!(
        e.hint()
            .unwrap_or_default()
            .contains("upgrade plausible-webhooks on every host"),
        "{e:?}"
    );
    // ... and what it finishes of its own claims leaves its lease and is
    // queued again: its retry of the row whose lease runs on (its
    // completion: the row `pending` again, its attempt logged).
    env.db
        .batch_execute(
            "WITH u AS (
                 UPDATE webhook_deliveries SET status = 'pending', locked_by = NULL, locked_until = NULL,
                        last_response_code = 502, next_attempt_at = now()
                 WHERE payload->>'f' = '4' RETURNING id, attempts)
             INSERT INTO webhook_delivery_attempts (delivery_id, attempt, status_code, duration_ms, instance)
             SELECT id, attempts, 502, 5, 'old-host:1:abcd' FROM u",
        )
        .await
        .unwrap();
    assert_eq!(
        (
            env.count("SELECT count(*) FROM webhook_deliveries_leases")
                .await,
            env.count("SELECT count(*) FROM webhook_deliveries_ready")
                .await
        ),
        (3, 11)
    );
    let daemon = env.daemon(env.config()).await;
    env.wait_until(
        "SELECT count(*) = 16 FROM webhook_deliveries WHERE status = 'success'",
        T,
    )
    .await;
    daemon.shutdown().await.unwrap();

    let sent = per_id(&rx);
    assert_eq!(
        sent.len(),
        14,
        "every queued, retrying and in-flight row sent"
    );
    assert!(sent.values().all(|&n| n == 1), "none twice: {sent:?}");
    let finished = env
        .count("SELECT count(*) FROM webhook_deliveries WHERE finished_at IS NOT NULL AND attempts = 0")
        .await;
    assert_eq!(finished, 3, "the finished rows are untouched");
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'failed'")
            .await,
        1
    );
    // In flight: the lost attempt logged by the rescuer, then the one sent
    // (the one the old instance answered: its 502, then the one sent).
    assert_eq!(
        env.count(
            "SELECT count(*) FROM webhook_deliveries d
             WHERE d.payload ? 'f' AND d.status = 'success' AND d.locked_by IS NULL AND d.locked_until IS NULL
               AND (SELECT count(*) FROM webhook_delivery_attempts a
                    WHERE a.delivery_id = d.id AND a.instance = 'old-host:1:abcd'
                      AND CASE WHEN d.payload->>'f' = '4' THEN a.status_code = 502
                               ELSE a.error LIKE '%lease expired%' END) = 1"
        )
        .await,
        4
    );
    assert_eq!(
        env.count(
            "SELECT count(*) FROM webhook_deliveries d WHERE d.payload ? 'r' AND d.attempts = 2"
        )
        .await,
        5,
        "a retry is the second attempt"
    );
    attempts_fully_logged(&env).await;
    for t in ["webhook_deliveries_ready", "webhook_deliveries_leases"] {
        assert_eq!(
            env.count(&format!("SELECT count(*) FROM {t}")).await,
            0,
            "{t} holds nothing once all ended"
        );
    }
}
