//! The delivery engine end to end: real PostgreSQL, real HTTPS receivers.

mod common;

use std::time::Duration;

use common::{by_attempt, Env, SECRET};
use plausible_webhooks::delivery::signing::{verify_legacy, verify_standard};
use plausible_webhooks::testkit::receiver::{always, Reply};
use uuid::Uuid;

const T: Duration = Duration::from_secs(30);

/// The claim's parameters for `n` rows with nothing in flight and the
/// default shares of 512 slots (the order of CLAIM_SQL's doc comment).
async fn explain_claim(db: &deadpool_postgres::Object, n: i64) -> String {
    let none: Vec<Uuid> = Vec::new();
    let held: Vec<i32> = Vec::new();
    let sql = format!("EXPLAIN {}", plausible_webhooks::queue::claimer::CLAIM_SQL);
    let rows = db
        .query(
            &sql,
            &[
                &n,
                &"test:explain",
                &30f64,
                &none,
                &held,
                &none,
                &64i32,
                &512i32,
                &0i32,
                &512i64,
                &8i64,
                &64i64,
                &(32i64 << 20),
                &true,
            ],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// With a large backlog analyzed and `webhooks` never analyzed (a handful of
/// webhooks never reaches autovacuum's threshold, so it never is), the claim
/// as `id IN (SELECT ...)` was planned as a hash of the picks against a scan
/// of the whole queue, twice: 280 ms a claim instead of 60 in the benchmark,
/// and PostgreSQL's JIT compiling it on top. It must read its rows by key,
/// and the daemon's sessions must not JIT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claim_reads_rows_by_key_whatever_the_statistics_say() {
    let env = Env::new().await;
    let wh = env.webhook("https://127.0.0.1:9/").await;
    env.enqueue(wh, 5_000).await;
    env.db
        .batch_execute("ANALYZE webhook_deliveries")
        .await
        .unwrap();
    let never_analyzed: f32 = env
        .db
        .query_one(
            "SELECT reltuples FROM pg_class WHERE oid = 'webhooks'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        never_analyzed, -1.0,
        "the case under test: webhooks without statistics"
    );

    let mut cfg = env.config();
    let pool = plausible_webhooks::db::engine_pool(&cfg.database).unwrap();
    let db = pool.get().await.unwrap();
    let plan = explain_claim(&db, 512).await;
    assert!(
        !plan.contains("Seq Scan on webhook_deliveries"),
        "the claim scans the queue:\n{plan}"
    );
    // Settings and who set them: the test cluster itself runs with
    // synchronous_commit off, so what counts is whether the session asked.
    async fn setting(db: &tokio_postgres::Client, name: &str) -> (String, String) {
        let r = db
            .query_one(
                "SELECT setting, source FROM pg_settings WHERE name = $1",
                &[&name],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    }
    assert_eq!(setting(&db, "jit").await, ("off".into(), "client".into()));
    assert_ne!(
        setting(&db, "synchronous_commit").await.1,
        "client",
        "durable unless configured: the session leaves the server's setting"
    );

    // The opt-in: the engine's sessions only (the admin's pool stays durable).
    cfg.database.synchronous_commit = false;
    let fast = plausible_webhooks::db::engine_pool(&cfg.database).unwrap();
    assert_eq!(
        setting(&fast.get().await.unwrap(), "synchronous_commit").await,
        ("off".into(), "client".into())
    );
    let admin = plausible_webhooks::db::pool(&cfg.database.url, 2).unwrap();
    let admin = admin.get().await.unwrap();
    assert_ne!(setting(&admin, "synchronous_commit").await.1, "client");
    assert_eq!(setting(&admin, "jit").await.0, "off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserted_rows_are_delivered_once_signed_and_logged() {
    let env = Env::new().await;
    let rx = env.receiver(always(200)).await;
    let wh = env
        .webhook_with(
            &rx.url("/hook"),
            r#"{"X-Custom": "yes", "Authorization": "Bearer abc"}"#,
        )
        .await;
    let daemon = env.daemon(env.config()).await;
    let ids = env.enqueue(wh, 25).await;
    let reqs = rx.wait_for(25, T).await.unwrap();
    env.wait_until(
        "SELECT count(*) = 25 FROM webhook_deliveries WHERE status = 'success'",
        T,
    )
    .await;
    daemon.shutdown().await.unwrap();

    assert_eq!(rx.count(), 25, "each delivery sent exactly once");
    let mut seen: Vec<Uuid> = reqs
        .iter()
        .map(|r| r.header("webhook-id").unwrap().parse().unwrap())
        .collect();
    seen.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(seen, want);
    for r in &reqs {
        let id = r.header("webhook-id").unwrap();
        let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
        assert!(verify_standard(
            SECRET,
            id,
            ts,
            &r.body,
            r.header("webhook-signature").unwrap()
        ));
        assert!(verify_legacy(
            SECRET,
            &r.body,
            r.header("x-webhook-signature").unwrap()
        ));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r
            .header("user-agent")
            .unwrap()
            .starts_with("plausible-webhooks/"));
        assert_eq!(r.header("x-custom"), Some("yes"));
        assert_eq!(r.header("authorization"), Some("Bearer abc"));
        assert_eq!(r.path, "/hook");
        let body = r.json();
        assert_eq!(body["id"], id);
        assert_eq!(body["event"], "goal_completion");
        assert_eq!(body["site_id"], "example.com");
        assert!(body["data"]["n"].as_i64().unwrap() >= 1);
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    // One attempt row per delivery, with status code, duration and instance.
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_delivery_attempts WHERE status_code = 200 AND attempt = 1 AND instance IS NOT NULL AND response_body = 'ok'").await,
        25
    );
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries WHERE attempts = 1 AND delivered_at IS NOT NULL AND last_response_code = 200 AND locked_by IS NULL").await,
        25
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_function_is_idempotent_and_respects_subscriptions() {
    let env = Env::new().await;
    let rx = env.receiver(always(204)).await;
    let a = env.webhook(&rx.url("/a")).await;
    let b = env.webhook(&rx.url("/b")).await;
    // Not subscribed to goal_completion (spike only), and a disabled one: both skipped.
    let c: Uuid = env.db.query_one(
        "INSERT INTO webhooks (site_id, name, url, secret) VALUES ($1, 'c', $2, $3) RETURNING id",
        &[&env.site_id, &rx.url("/c"), &SECRET]).await.unwrap().get(0);
    env.db.execute("INSERT INTO webhook_triggers (webhook_id, trigger_type, threshold) VALUES ($1, 'visitor_spike', 10)", &[&c]).await.unwrap();
    let d = env.webhook(&rx.url("/d")).await;
    env.db
        .execute("UPDATE webhooks SET enabled = false WHERE id = $1", &[&d])
        .await
        .unwrap();

    let daemon = env.daemon(env.config()).await;
    let sql =
        "SELECT count(*) FROM webhook_enqueue($1, 'goal_completion', '{\"goal\": \"Signup\"}', $2)";
    let key = Some("goal:42:event:1");
    let n: i64 = env
        .db
        .query_one(sql, &[&env.site_id, &key])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    let again: i64 = env
        .db
        .query_one(sql, &[&env.site_id, &key])
        .await
        .unwrap()
        .get(0);
    assert_eq!(again, 0, "a duplicate idempotency key is a no-op");
    let no_key: i64 = env
        .db
        .query_one(sql, &[&env.site_id, &None::<&str>])
        .await
        .unwrap()
        .get(0);
    assert_eq!(no_key, 2);
    rx.wait_for(4, T).await.unwrap();
    env.wait_until(
        "SELECT count(*) = 4 FROM webhook_deliveries WHERE status = 'success'",
        T,
    )
    .await;
    daemon.shutdown().await.unwrap();
    let mut paths: Vec<String> = rx.requests().into_iter().map(|r| r.path).collect();
    paths.sort();
    assert_eq!(paths, ["/a", "/a", "/b", "/b"]);
    let _ = (a, b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_on_schedule_then_fail_with_every_attempt_logged() {
    let env = Env::new().await;
    // First delivery: 500, 500, then 200. Second: always 500.
    let rx = env
        .receiver(std::sync::Arc::new(
            |r: &plausible_webhooks::testkit::receiver::Recorded| {
                if r.json()["data"]["n"] == 1 && r.nth >= 3 {
                    Reply::Status(200)
                } else {
                    Reply::Status(500)
                }
            },
        ))
        .await;
    let wh = env.webhook(&rx.url("/")).await;
    let mut cfg = env.config();
    cfg.delivery.retry_schedule_secs = vec![1, 2, 1];
    cfg.queue.poll_interval_ms = 600_000; // retries must come from the timer, not the poll
    let daemon = env.daemon(cfg).await;
    env.enqueue(wh, 2).await;
    env.wait_all_final(T).await;
    daemon.shutdown().await.unwrap();

    let rows = env.db.query(
        "SELECT (payload->>'n')::int, status, attempts, last_response_code FROM webhook_deliveries ORDER BY 1", &[]).await.unwrap();
    assert_eq!(
        (
            rows[0].get::<_, String>(1).as_str(),
            rows[0].get::<_, i32>(2)
        ),
        ("success", 3)
    );
    assert_eq!(
        (
            rows[1].get::<_, String>(1).as_str(),
            rows[1].get::<_, i32>(2),
            rows[1].get::<_, Option<i32>>(3)
        ),
        ("failed", 4, Some(500))
    );
    // Attempt log: 3 + 4 rows, numbered 1..n, and the gaps follow the schedule.
    let attempts = env
        .db
        .query(
            "SELECT (d.payload->>'n')::int, a.attempt, a.status_code, a.error, a.attempted_at
         FROM webhook_delivery_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
         ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(attempts.len(), 7);
    let second: Vec<_> = attempts
        .iter()
        .filter(|r| r.get::<_, i32>(0) == 2)
        .collect();
    assert_eq!(
        second
            .iter()
            .map(|r| r.get::<_, i32>(1))
            .collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert!(second
        .iter()
        .all(|r| r.get::<_, Option<String>>(3).as_deref() == Some("HTTP 500")));
    let times: Vec<time::OffsetDateTime> = second.iter().map(|r| r.get(4)).collect();
    for (i, want) in [1.0, 2.0, 1.0].iter().enumerate() {
        let gap = (times[i + 1] - times[i]).as_seconds_f64();
        assert!(
            gap >= want - 0.05 && gap < want + 1.5,
            "gap {i}: {gap}s, schedule says {want}s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_and_gone_disables_the_webhook() {
    let env = Env::new().await;
    let slow = env
        .receiver(by_attempt(|n| {
            if n == 1 {
                Reply::Full {
                    status: 429,
                    headers: vec![("Retry-After".into(), "3".into())],
                    body: b"slow down".to_vec(),
                }
            } else {
                Reply::Status(200)
            }
        }))
        .await;
    let gone = env.receiver(always(410)).await;
    let wh_slow = env.webhook(&slow.url("/")).await;
    let wh_gone = env.webhook(&gone.url("/")).await;
    let daemon = env.daemon(env.config()).await;
    env.enqueue(wh_slow, 1).await;
    env.enqueue(wh_gone, 1).await;
    env.wait_all_final(T).await;
    // A delivery enqueued after the 410 is not sent, and says why.
    env.enqueue(wh_gone, 1).await;
    env.wait_until(
        "SELECT count(*) = 3 FROM webhook_deliveries WHERE status IN ('success','failed')",
        T,
    )
    .await;
    daemon.shutdown().await.unwrap();

    let reqs = slow.requests();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].at.duration_since(reqs[0].at).unwrap();
    assert!(
        gap >= Duration::from_millis(2900),
        "Retry-After 3 s honoured, waited {gap:?}"
    );
    let (enabled, reason): (bool, Option<String>) = {
        let r = env
            .db
            .query_one(
                "SELECT enabled, disabled_reason FROM webhooks WHERE id = $1",
                &[&wh_gone],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(!enabled);
    assert!(reason.unwrap().contains("410"));
    assert_eq!(
        gone.count(),
        1,
        "410 is not retried, and nothing more is sent to a disabled webhook"
    );
    let errs = env.db.query(
        "SELECT status, attempts, last_error FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY inserted_at", &[&wh_gone]).await.unwrap();
    assert_eq!(errs[0].get::<_, String>(0), "failed");
    assert_eq!(errs[1].get::<_, String>(0), "failed");
    assert_eq!(errs[1].get::<_, i32>(1), 0, "no attempt was made");
    assert!(errs[1].get::<_, String>(2).contains("disabled"));
    assert!(slow.requests()[0].header("webhook-id") == slow.requests()[1].header("webhook-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_timeouts_resets_and_huge_bodies_are_failures_handled_cleanly() {
    let env = Env::new().await;
    let redirect = env
        .receiver(std::sync::Arc::new(|_: &_| Reply::Full {
            status: 302,
            headers: vec![("Location".into(), "https://127.0.0.1:1/elsewhere".into())],
            body: vec![],
        }))
        .await;
    let hang = env.receiver(std::sync::Arc::new(|_: &_| Reply::Hang)).await;
    let reset = env
        .receiver(std::sync::Arc::new(|_: &_| Reply::Reset))
        .await;
    let huge = env
        .receiver(std::sync::Arc::new(|_: &_| Reply::Huge(100 * 1024 * 1024)))
        .await;
    let mut cfg = env.config();
    cfg.delivery.retry_schedule_secs = vec![];
    let ids = [
        env.webhook(&redirect.url("/")).await,
        env.webhook(&hang.url("/")).await,
        env.webhook(&reset.url("/")).await,
        env.webhook(&huge.url("/")).await,
    ];
    let daemon = env.daemon(cfg).await;
    for id in ids {
        env.enqueue(id, 1).await;
    }
    env.wait_all_final(T).await;
    daemon.shutdown().await.unwrap();
    let db = &env.db;
    let row = |id: Uuid| async move {
        db.query_one(
            "SELECT d.status, d.last_response_code, d.last_error, a.response_body, a.duration_ms
             FROM webhook_deliveries d JOIN webhook_delivery_attempts a ON a.delivery_id = d.id WHERE d.webhook_id = $1",
            &[&id]).await.unwrap()
    };
    let r = row(ids[0]).await;
    assert_eq!(
        (r.get::<_, String>(0).as_str(), r.get::<_, Option<i32>>(1)),
        ("failed", Some(302))
    );
    assert!(r.get::<_, String>(2).contains("redirects are not followed"));
    assert_eq!(redirect.count(), 1);
    let r = row(ids[1]).await;
    assert_eq!(r.get::<_, String>(0), "failed");
    assert!(
        r.get::<_, String>(2).contains("timed out"),
        "{}",
        r.get::<_, String>(2)
    );
    assert!(r.get::<_, i32>(4) >= 1900);
    let r = row(ids[2]).await;
    assert_eq!(
        (r.get::<_, String>(0).as_str(), r.get::<_, Option<i32>>(1)),
        ("failed", None)
    );
    // A 100 MB body: success on status, only 64 KiB read, 4 KiB logged.
    let r = row(ids[3]).await;
    assert_eq!(
        (r.get::<_, String>(0).as_str(), r.get::<_, Option<i32>>(1)),
        ("success", Some(200))
    );
    assert_eq!(r.get::<_, Option<String>>(3).unwrap().len(), 4096);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_response_body_cannot_poison_the_log() {
    let env = Env::new().await;
    // NUL bytes and invalid UTF-8: PostgreSQL text cannot hold a NUL.
    let rx = env
        .receiver(std::sync::Arc::new(|_: &_| Reply::Full {
            status: 500,
            headers: vec![],
            body: b"bad\x00body\xff\xfe".to_vec(),
        }))
        .await;
    let ok = env.receiver(always(200)).await;
    let hostile = env.webhook(&rx.url("/")).await;
    let fine = env.webhook(&ok.url("/")).await;
    let mut cfg = env.config();
    cfg.delivery.retry_schedule_secs = vec![];
    let daemon = env.daemon(cfg).await;
    env.enqueue(hostile, 1).await;
    env.enqueue(fine, 1).await;
    env.wait_all_final(T).await;
    daemon.shutdown().await.unwrap();
    let body: String = env
        .db
        .query_one(
            "SELECT a.response_body FROM webhook_delivery_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id WHERE d.webhook_id = $1",
            &[&hostile],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        body.starts_with("bad") && body.contains("body") && !body.contains('\0'),
        "{body:?}"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'success'")
            .await,
        1
    );
}

/// A receiver certificate that is its own CA (`openssl req -x509`, CA:TRUE)
/// fails even when it is in `extra_ca_file`: the error says why and how to
/// make a CA and a leaf, and the attempt is a TLS failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_ca_certificate_on_the_receiver_is_refused_saying_how_to_make_a_leaf() {
    use plausible_webhooks::testkit::receiver::{Receiver, TestTls};
    let env = Env::new().await;
    let tls = TestTls::self_signed_ca_as_leaf().unwrap();
    let rx = Receiver::start(&tls, always(200)).await.unwrap();
    let wh = env.webhook(&rx.url("/")).await;
    let mut cfg = env.config();
    cfg.delivery.extra_ca_file = Some(tls.ca_file.clone());
    cfg.delivery.retry_schedule_secs = vec![];
    let daemon = env.daemon(cfg).await;
    env.enqueue(wh, 1).await;
    env.wait_until(
        "SELECT count(*) = 1 FROM webhook_deliveries WHERE status = 'failed'",
        T,
    )
    .await;
    daemon.shutdown().await.unwrap();
    assert_eq!(rx.count(), 0);
    let row = env
        .db
        .query_one(
            "SELECT a.error, a.error_kind FROM webhook_delivery_attempts a",
            &[],
        )
        .await
        .unwrap();
    let (error, kind): (String, Option<String>) = (row.get(0), row.get(1));
    assert_eq!(kind.as_deref(), Some("tls"));
    assert!(
        error.contains("presents a CA certificate as its own")
            && error.contains("docs/operating.md#a-receiver-with-a-private-ca"),
        "{error}"
    );
}

/// A receiver that echoes the request's headers in its answer: the stored
/// snippet holds none of the webhook's custom header values (whole, as a
/// word of them, or cut at the log's limit), only the headers' names; other
/// text stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_header_values_echoed_by_a_receiver_are_not_stored() {
    const TOKEN: &str = "HDRSECRET-4f1d9c2b7a";
    let env = Env::new().await;
    let log_max = env.config().delivery.response_log_max_bytes;
    let rx = env
        .receiver(std::sync::Arc::new(move |r: &_| {
            let r: &plausible_webhooks::testkit::receiver::Recorded = r;
            let mut echo = String::from("you sent:\n");
            for (k, v) in r.headers.iter() {
                echo.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("")));
            }
            echo.push_str(&format!("token alone: {TOKEN}\n"));
            // A copy straddling the log's limit: only its start would be kept.
            let pad = log_max - echo.len() - 8;
            echo.push_str(&".".repeat(pad));
            echo.push_str(&format!("Bearer {TOKEN} and more"));
            Reply::Full {
                status: 500,
                headers: vec![],
                body: echo.into_bytes(),
            }
        }))
        .await;
    let wh = env
        .webhook_with(
            &rx.url("/"),
            &format!(r#"{{"Authorization": "Bearer {TOKEN}", "X-Api-Key": "key-0123456789"}}"#),
        )
        .await;
    let mut cfg = env.config();
    cfg.delivery.retry_schedule_secs = vec![];
    let daemon = env.daemon(cfg).await;
    env.enqueue(wh, 1).await;
    env.wait_all_final(T).await;
    daemon.shutdown().await.unwrap();
    let body: String = env
        .db
        .query_one("SELECT response_body FROM webhook_delivery_attempts", &[])
        .await
        .unwrap()
        .get(0);
    assert!(body.starts_with("you sent:"), "{body}");
    assert!(body.contains("[value of header authorization]"), "{body}");
    assert!(body.contains("[value of header x-api-key]"), "{body}");
    for secret in ["HDRSECRET", "4f1d9c2b", "key-0123456789", "HDRSEC"] {
        assert!(!body.contains(secret), "{secret} stored: {body}");
    }
    assert!(body.len() <= log_max);
}

/// Resident memory of the daemon process, in KiB (`VmRSS`, or `VmHWM`: its peak).
fn memory_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Payloads of 10 MB at the largest payload limit (16 MiB, bytes in flight
/// at its default 32 MiB): the daemon's peak stays within about twice the
/// bytes in flight (a payload and its signed body), and once they are sent
/// the memory goes back to the system (60 of them left it at 200 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payloads_bound_the_peak_and_give_the_memory_back() {
    const IN_FLIGHT_KIB: u64 = 32 * 1024;
    let env = Env::new().await;
    let rx = env.receiver(always(200)).await;
    let wh = env.webhook(&rx.url("/")).await;
    let daemon = env.spawn_daemon(&[
        (
            "PLAUSIBLE_WEBHOOKS__DELIVERY__MAX_PAYLOAD_BYTES",
            "16777216",
        ),
        ("PLAUSIBLE_WEBHOOKS__DELIVERY__REQUEST_TIMEOUT_MS", "20000"),
        ("PLAUSIBLE_WEBHOOKS__DELIVERY__LEASE_SECS", "30"),
    ]);
    let pid = daemon.child.id();
    env.wait_until(
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = 'plausible-webhooks-listener'",
        T,
    )
    .await;
    // "At rest" is after ordinary work: 24 small deliveries first, so the
    // pools, the TLS sessions and the allocator's per-thread arenas are
    // warm (measured right after start, a busy machine's scheduling alone
    // moved the rest by more than the slack below).
    env.enqueue(wh, 24).await;
    env.wait_until(
        "SELECT count(*) = 24 FROM webhook_deliveries WHERE status = 'success'",
        T,
    )
    .await;
    let base = memory_kib(pid, "VmRSS");
    env.db
        .execute(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, payload)
             SELECT $1, 'goal_completion', jsonb_build_object('blob', repeat('x', 10000000))
             FROM generate_series(1, 24)",
            &[&wh],
        )
        .await
        .unwrap();
    env.wait_until(
        "SELECT count(*) = 48 FROM webhook_deliveries WHERE status = 'success'",
        Duration::from_secs(120),
    )
    .await;
    let peak = memory_kib(pid, "VmHWM");
    assert!(
        peak <= base + 3 * IN_FLIGHT_KIB,
        "peak {} MiB from {} MiB at rest, bytes in flight at most {} MiB",
        peak / 1024,
        base / 1024,
        IN_FLIGHT_KIB / 1024
    );
    // Given back: resident memory falls to near where it started.
    let deadline = std::time::Instant::now() + T;
    loop {
        let now = memory_kib(pid, "VmRSS");
        if now <= base + 16 * 1024 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} MiB resident after the payloads were sent ({} MiB at rest, peak {} MiB)",
            now / 1024,
            base / 1024,
            peak / 1024
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rx.count(), 48);
}
