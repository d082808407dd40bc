//! `plausible-webhooks demo`: the delivery engine end to end on a throwaway
//! PostgreSQL cluster and a local HTTPS receiver that verifies both signatures.
//! One event is rejected at first (503 with Retry-After) to show a retry.
//! Then the triggers: synthetic analytics rows make a visitor spike, a
//! traffic drop and three goal completions, each POST shown and verified.
//!
//! Beside it, the playground tools: `demo --keep` (`playground`) and the
//! `listen` receiver (`listen`).

pub mod listen;
pub mod playground;

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
           ('{webhook}', 'goal_completion', NULL), ('{webhook}', 'visitor_spike', 20)"
    ))
    .await?;
    // Triggers: goals and synthetic analytics rows (see `traffic`).
    traffic(&db, site_id, &receiver, &secret).await?;
    println!(
        "  created webhook {:.8} \"Demo receiver\" for demo.example.com (triggers: goal_completion, \
         visitor_spike at 20 visitors in 5 min)\n  created webhook \"Quiet site alerts\" for \
         quiet.example.com (trigger: traffic_drop below 10 visitors in 12 h)",
        webhook.to_string()
    );

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

    // Goal completions happening now: the goal scanner finds them within a second.
    let goals_at = SystemTime::now();
    db.execute(
        "INSERT INTO events_v2 (site_id, \"timestamp\", name, pathname, user_id, session_id, meta_key, meta_value, scroll_depth)
         VALUES ($1, now() AT TIME ZONE 'UTC', 'Signup', '/register', 9001, 9001, '{plan}', '{pro}', NULL),
                ($1, now() AT TIME ZONE 'UTC', 'Signup', '/register', 9002, 9002, '{plan}', '{free}', NULL),
                ($1, now() AT TIME ZONE 'UTC', 'pageview', '/blog/hello-world', 9003, 9003, '{}', '{}', NULL),
                ($1, now() AT TIME ZONE 'UTC', 'engagement', '/blog/hello-world', 9003, 9003, '{}', '{}', 80)",
        &[&site_id],
    )
    .await?;
    println!(
        "  wrote 4 analytics events now: Signup (plan=pro), Signup (plan=free), a /blog pageview, a 80% scroll"
    );
    // 5 enqueued above + 1 spike + 1 drop + 3 goal completions (plan=free matches no goal).
    let expected: i64 = sent_at.len() as i64 + 5;

    let started = Instant::now();
    loop {
        let row = db
            .query_one(
                "SELECT count(*) FILTER (WHERE status NOT IN ('success', 'failed')), count(*) FROM webhook_deliveries",
                &[],
            )
            .await?;
        let (open, total): (i64, i64) = (row.get(0), row.get(1));
        if open == 0 && total >= expected {
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
                     FROM webhook_delivery_attempts a WHERE a.delivery_id = d.id),
                    d.trigger_id IS NOT NULL, d.payload
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
        let from_trigger: bool = r.get(6);
        let event: String = r.get(1);
        let start = if from_trigger && event == "goal_completion" {
            Some(&goals_at)
        } else {
            sent_at.get(&id)
        };
        let latency = match (start, seen.first_arrival.get(&key)) {
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
    let by_trigger = |event: &str| {
        rows.iter()
            .filter(|r| r.get::<_, bool>(6) && r.get::<_, String>(1) == event)
            .count()
    };
    println!(
        "\nlatency: enqueue statement start → first arrival at the receiver (the 503 one shows its first try);\n\
         for goal completions found by the goal scanner: analytics row written → arrival. Spike and drop\n\
         fired at the evaluator's first round, from rows written before the daemon started.\n\
         \n\
         why {total} deliveries for {enqueued} enqueued rows: the {enqueued} rows above (3 INSERTs, 2 through\n\
         webhook_enqueue) plus what the triggers enqueued themselves: {spikes} visitor spike, {drops} traffic drop and\n\
         {goals} goal completions. The Signup with plan=free completed no goal: the \"Signup (pro plan)\" goal\n\
         requires plan=pro, as in Plausible. The 503 was the receiver refusing the first try of the\n\
         \"flaky\" delivery (with Retry-After: 1); the retry succeeded, on the same webhook-id.",
        total = rows.len(),
        enqueued = sent_at.len(),
        spikes = by_trigger("visitor_spike"),
        drops = by_trigger("traffic_drop"),
        goals = by_trigger("goal_completion"),
    );
    println!("\nwhat the triggers sent (payload `data`):");
    for r in rows.iter().filter(|r| r.get::<_, bool>(6)) {
        let event: String = r.get(1);
        let p: serde_json::Value = r.get(7);
        let line = match event.as_str() {
            "goal_completion" => format!(
                "goal {:?} ({}) matched {:?} on {} at {}",
                p["goal_name"].as_str().unwrap_or(""),
                p["goal_type"].as_str().unwrap_or(""),
                p["matched"].as_str().unwrap_or(""),
                p["pathname"].as_str().unwrap_or(""),
                p["occurred_at"].as_str().unwrap_or("")
            ),
            _ => format!(
                "{} visitors in {} s (threshold {}), baseline {} → change {}{}{}",
                p["visitors"],
                p["window_secs"],
                p["threshold"],
                p["baseline_visitors"],
                match p["change_percent"].as_f64() {
                    Some(c) => format!("{c:+}%"),
                    None => "n/a (no traffic at this time in the last 7 days)".into(),
                },
                if p["top_sources"].is_array() {
                    format!(", top sources {}", p["top_sources"])
                } else {
                    String::new()
                },
                if p["top_pages"].is_array() {
                    format!(", top pages {}", p["top_pages"])
                } else {
                    String::new()
                },
            ),
        };
        println!("  {event:<16} {line}");
    }

    anyhow::ensure!(
        all_ok,
        "some deliveries did not succeed with verified signatures"
    );
    println!("every delivery succeeded and both signatures (X-Webhook-Signature, webhook-signature) verified.");
    drop(seen);
    show_one_request(&receiver, &secret)?;
    println!(
        "\nnext:\n\
         \x20 scripts/test                           the tests (installs what they need; real PostgreSQL, ClickHouse, HTTPS receivers)\n\
         \x20 cargo run --features demo -- demo --keep   a playground left running, to try the CLI and the API on\n\
         \x20 cargo run -- --help                    every command; each has --help of its own\n\
         \x20 docs/receiving.md                      what a receiver gets and how to verify it\n\
         \x20 docs/operating.md                      install it beside Plausible as a systemd service\n\
         \x20 docs/cli.md                            manage webhooks: create, test, deliveries, replay"
    );
    Ok(())
}

/// Prints one request exactly as the receiver got it, its secret, and a
/// command that verifies it with the documented Python snippet.
fn show_one_request(receiver: &Receiver, secret: &str) -> Result<()> {
    let reqs = receiver.requests();
    let Some(r) = reqs
        .iter()
        .find(|r| r.nth == 1 && r.json()["event"] == "goal_completion")
    else {
        return Ok(());
    };
    println!("\none request as the receiver got it:\n");
    println!("  POST {} {:?}", r.path, r.version);
    let mut headers = serde_json::Map::new();
    for (name, value) in &r.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        println!("  {name}: {value}");
        headers.insert(name.as_str().to_string(), value.into());
    }
    println!("\n  {}\n", String::from_utf8_lossy(&r.body));
    let dir = std::env::temp_dir().join("plausible-webhooks-demo");
    std::fs::create_dir_all(&dir).context("writing the demo request")?;
    std::fs::write(dir.join("body.json"), &r.body)?;
    std::fs::write(
        dir.join("headers.json"),
        serde_json::Value::Object(headers).to_string(),
    )?;
    println!(
        "  the webhook's secret: {secret}\n\
         \x20 verify it yourself from this checkout (within 5 minutes: the snippet refuses older timestamps):\n\
         \x20   HEADERS=\"$(cat {d}/headers.json)\" WEBHOOK_SECRET='{secret}' python3 docs/verify/verify.py < {d}/body.json\n\
         \x20 (docs/verify/ has the same check for Node and Go; docs/receiving.md explains both signatures)",
        d = dir.display()
    );
    Ok(())
}

/// The analytics side of the demo, written before the daemon starts:
/// - demo.example.com: goals (an event goal with a custom property, a page
///   goal `/blog/**`, a scroll goal), a week of history at this time of day
///   (the spike's baseline) and 25 visitors in the last 5 minutes: a spike
///   (threshold 20);
/// - quiet.example.com: its own webhook with a traffic_drop trigger
///   (threshold 10 visitors in 12 h) and only 3 visitors: a drop.
async fn traffic(
    db: &tokio_postgres::Client,
    site_id: i64,
    receiver: &Receiver,
    secret: &str,
) -> Result<()> {
    db.execute(
        "INSERT INTO goals (site_id, event_name, page_path, display_name, scroll_threshold, custom_props, inserted_at, updated_at) VALUES
           ($1, 'Signup', NULL, 'Signup (pro plan)', -1, '{\"plan\": \"pro\"}', now(), now()),
           ($1, NULL, '/blog/**', 'Read the blog', -1, '{}', now(), now()),
           ($1, NULL, '/blog/**', 'Scrolled a blog post 75%', 75, '{}', now(), now())",
        &[&site_id],
    )
    .await?;
    // History: on each of the last 7 days, 2..8 visitors in these 5 minutes.
    // Now: 25 visitors from a handful of sources.
    db.execute(
        "INSERT INTO events_v2 (site_id, \"timestamp\", name, pathname, user_id, session_id, referrer_source)
         SELECT $1::int8, (now() AT TIME ZONE 'UTC') - make_interval(days => d, secs => 60 + v), 'pageview', '/', d * 1000 + v, d * 1000 + v, ''
         FROM generate_series(1, 7) d, generate_series(1, 2 + d) v
         UNION ALL
         SELECT $1::int8, (now() AT TIME ZONE 'UTC') - make_interval(secs => 10 * v), 'pageview',
                (ARRAY['/', '/pricing', '/blog/launch'])[1 + v % 3], 100 + v, 100 + v,
                (ARRAY['Hacker News', 'Hacker News', 'Hacker News', 'Twitter', 'Direct / None'])[1 + v % 5]
         FROM generate_series(1, 25) v",
        &[&site_id],
    )
    .await?;
    let quiet = crate::testkit::create_site(db, "quiet.example.com").await?;
    let webhook: Uuid = db
        .query_one(
            "INSERT INTO webhooks (site_id, name, url, secret) VALUES ($1, 'Quiet site alerts', $2, $3) RETURNING id",
            &[&quiet, &receiver.url("/webhooks/quiet"), &secret],
        )
        .await?
        .get(0);
    db.execute(
        "INSERT INTO webhook_triggers (webhook_id, trigger_type, threshold) VALUES ($1, 'traffic_drop', 10)",
        &[&webhook],
    )
    .await?;
    db.execute(
        "INSERT INTO events_v2 (site_id, \"timestamp\", name, pathname, user_id, session_id)
         SELECT $1::int8, (now() AT TIME ZONE 'UTC') - make_interval(hours => v), 'pageview', '/', v, v
         FROM generate_series(1, 3) v",
        &[&quiet],
    )
    .await?;
    println!(
        "  analytics: demo.example.com has 25 visitors in the last 5 min (spike trigger at 20), \
         3 goals; quiet.example.com has 3 visitors in 12 h (drop trigger at 10)"
    );
    Ok(())
}
