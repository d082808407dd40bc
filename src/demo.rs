//! `plausible-webhooks demo`: the delivery engine end to end on a throwaway
//! PostgreSQL cluster and a local HTTPS receiver that verifies both signatures.
//! One event is rejected at first (503 with Retry-After) to show a retry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use uuid::Uuid;

use crate::daemon::{Daemon, StartOptions};
use crate::delivery::signing::{generate_secret, verify_legacy, verify_standard};
use crate::testkit::pg::{PgCluster, PgOptions};
use crate::testkit::receiver::{Receiver, Recorded, Reply, TestTls};

#[derive(Default)]
struct Seen {
    first_arrival: HashMap<String, SystemTime>,
    all_verified: HashMap<String, bool>,
}

pub async fn run() -> Result<()> {
    println!("plausible-webhooks demo: starting a throwaway PostgreSQL cluster...");
    let cluster = tokio::task::spawn_blocking(|| PgCluster::start(&PgOptions::default())).await??;
    let url = cluster.create_database("plausible").await?;
    {
        let mut c = crate::db::connect(&url).await?;
        crate::db::migrate::load_fixture(&c).await?;
        crate::db::migrate::migrate(&mut c).await?;
    }
    let db = crate::db::connect(&url).await?;
    println!(
        "  PostgreSQL on 127.0.0.1:{}, Plausible fixture loaded, migrations applied",
        cluster.port()
    );

    let tls = TestTls::new()?;
    let secret = generate_secret();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let behavior = {
        let (secret, seen) = (secret.clone(), seen.clone());
        Arc::new(move |r: &Recorded| {
            let id = r.header("webhook-id").unwrap_or("").to_string();
            let ts: i64 = r
                .header("webhook-timestamp")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let ok = verify_standard(
                &secret,
                &id,
                ts,
                &r.body,
                r.header("webhook-signature").unwrap_or(""),
            ) && verify_legacy(
                &secret,
                &r.body,
                r.header("x-webhook-signature").unwrap_or(""),
            );
            let mut s = seen.lock().unwrap();
            s.first_arrival.entry(id.clone()).or_insert(r.at);
            let v = s.all_verified.entry(id).or_insert(true);
            *v &= ok;
            let flaky = r.json()["data"]["flaky"] == true;
            if flaky && r.nth == 1 {
                Reply::Full {
                    status: 503,
                    headers: vec![("Retry-After".into(), "1".into())],
                    body: b"busy, try again".to_vec(),
                }
            } else {
                Reply::Status(200)
            }
        })
    };
    let receiver = Receiver::start(&tls, behavior).await?;
    println!(
        "  HTTPS receiver on {} (certificate made just now)",
        receiver.url("/")
    );

    let site_id = crate::testkit::create_site(&db, "demo.example.com").await?;
    let webhook: Uuid = db
        .query_one(
            "INSERT INTO webhooks (site_id, name, url, secret) VALUES ($1, 'Demo receiver', $2, $3) RETURNING id",
            &[&site_id, &receiver.url("/webhooks/plausible"), &secret],
        )
        .await?
        .get(0);
    db.batch_execute(&format!(
        "INSERT INTO webhook_triggers (webhook_id, trigger_type, threshold) VALUES
           ('{webhook}', 'goal_completion', NULL), ('{webhook}', 'visitor_spike', 100)"
    ))
    .await?;

    let mut cfg = crate::testkit::loopback_config(&url, &tls.ca_file);
    cfg.delivery.retry_schedule_secs = vec![1, 5, 30];
    let daemon = Daemon::start(cfg, StartOptions::default()).await?;
    tokio::time::timeout(Duration::from_secs(20), daemon.wait_listening())
        .await
        .context("the listener did not connect")??;
    println!("  daemon running (instance {})\n", daemon.instance);

    // Enqueue as Plausible would: plain INSERTs and the fan-out function.
    let mut sent_at: HashMap<Uuid, SystemTime> = HashMap::new();
    let enqueue = [
        (
            "INSERT",
            "goal_completion",
            r#"{"goal_id": 1, "goal_name": "Signup", "pathname": "/register"}"#,
        ),
        (
            "INSERT",
            "goal_completion",
            r#"{"goal_id": 2, "goal_name": "Visit /pricing", "flaky": true}"#,
        ),
        (
            "FANOUT",
            "goal_completion",
            r#"{"goal_id": 3, "goal_name": "Purchase", "pathname": "/checkout"}"#,
        ),
        (
            "FANOUT",
            "visitor_spike",
            r#"{"current_visitors": 250, "threshold": 100, "window_minutes": 5}"#,
        ),
        ("INSERT", "test", r#"{"test": true}"#),
    ];
    for (how, event, payload) in enqueue {
        let payload: serde_json::Value = serde_json::from_str(payload)?;
        let before = SystemTime::now();
        let rows = if how == "INSERT" {
            db.query(
                "INSERT INTO webhook_deliveries (webhook_id, event_type, payload) VALUES ($1, $2, $3) RETURNING id",
                &[&webhook, &event, &payload],
            )
            .await?
        } else {
            db.query(
                "SELECT webhook_enqueue($1, $2, $3, $4)",
                &[&site_id, &event, &payload, &format!("demo:{event}")],
            )
            .await?
        };
        for r in rows {
            sent_at.insert(r.get(0), before);
        }
    }
    // The same idempotency key again: a no-op.
    let dup = db
        .query(
            "SELECT webhook_enqueue($1, 'goal_completion', '{}', 'demo:goal_completion')",
            &[&site_id],
        )
        .await?;
    println!(
        "  enqueued {} deliveries (a repeated idempotency key added {})",
        sent_at.len(),
        dup.len()
    );

    let started = Instant::now();
    loop {
        let open: i64 = db
            .query_one(
                "SELECT count(*) FROM webhook_deliveries WHERE status NOT IN ('success', 'failed')",
                &[],
            )
            .await?
            .get(0);
        if open == 0 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "deliveries did not finish within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon.shutdown().await?;

    let rows = db
        .query(
            "SELECT d.id, d.event_type, d.attempts, d.status, d.last_response_code,
                    (SELECT string_agg(coalesce(a.status_code::text, 'error'), ' → ' ORDER BY a.attempt)
                     FROM webhook_delivery_attempts a WHERE a.delivery_id = d.id)
             FROM webhook_deliveries d ORDER BY d.inserted_at, d.id",
            &[],
        )
        .await?;
    let seen = seen.lock().unwrap();
    println!(
        "\n{:<10} {:<16} {:>8} {:<8} {:<16} {:<10} {:>12}",
        "delivery", "event", "attempts", "status", "responses", "signed ok", "latency ms"
    );
    println!("{}", "-".repeat(86));
    let mut all_ok = true;
    for r in &rows {
        let id: Uuid = r.get(0);
        let key = id.to_string();
        let verified = seen.all_verified.get(&key).copied().unwrap_or(false);
        let latency = match (sent_at.get(&id), seen.first_arrival.get(&key)) {
            (Some(a), Some(b)) => format!(
                "{:.1}",
                b.duration_since(*a).unwrap_or_default().as_secs_f64() * 1e3
            ),
            _ => "-".into(),
        };
        let status: String = r.get(3);
        all_ok &= verified && status == "success";
        println!(
            "{:<10} {:<16} {:>8} {:<8} {:<16} {:<10} {:>12}",
            &key[..8],
            r.get::<_, String>(1),
            r.get::<_, i32>(2),
            status,
            r.get::<_, Option<String>>(5).unwrap_or_default(),
            if verified { "both" } else { "NO" },
            latency
        );
    }
    println!(
        "\nlatency: enqueue statement start → first arrival at the receiver (the 503 one shows its first try)."
    );
    anyhow::ensure!(
        all_ok,
        "some deliveries did not succeed with verified signatures"
    );
    println!("every delivery succeeded and both signatures (X-Webhook-Signature, webhook-signature) verified.");
    Ok(())
}
