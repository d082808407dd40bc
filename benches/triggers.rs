//! Trigger benchmark: `cargo bench --bench triggers`. Prints figures, asserts
//! nothing about speed.
//!
//! A durable throwaway PostgreSQL (fsync and synchronous_commit on) holding
//! the Plausible fixture and `BENCH_EVENTS` (10 million) analytics rows over 8
//! days for 1,000 sites, with the index the README asks for.
//!
//! (a) one evaluation round over 10,000 enabled spike/drop triggers (5 spike
//!     and 5 drop per site), driven by `Evaluator::round(now)` in this
//!     process: wall time, statements issued, triggers fired. Then the same
//!     round again a minute later (hysteresis: few fire), and a round where
//!     1,000 of the triggers must first derive their threshold from 7 days.
//! (b) goal scanning while 1,000 events/s are ingested for `INGEST_SECS`:
//!     the daemon (in this process, with the test HTTPS receiver) scans 100
//!     goal triggers every second; 20% of the events complete a goal. Prints
//!     completions delivered vs written and the latency from the event row's
//!     commit to the POST's arrival.
//!
//! `BENCH_SOURCE=clickhouse` runs the same phases with the events in a
//! throwaway ClickHouse server (the installed `clickhouse-server`;
//! `BENCH_SOURCE=chdb` for the current engine, chDB 26.x, `BENCH_SOURCE=chdb24`
//! for ClickHouse 24.8, chdb 3.0.1, each behind the test kit's HTTP front) read
//! through the ClickHouse source by a read-only user; (b) then ingests one
//! INSERT of 1,000 rows a second, as Plausible's ingest buffer batches its
//! writes (ClickHouse wants few large inserts, not fifty small ones a second).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use plausible_webhooks::config::{Config, Redacted};
use plausible_webhooks::daemon::{Daemon, StartOptions};
use plausible_webhooks::testkit::clickhouse::{self as ch, ChEngine, ChServer};
use plausible_webhooks::testkit::pg::{PgCluster, PgOptions};
use plausible_webhooks::testkit::receiver::{Receiver, Recorded, Reply, TestTls};
use plausible_webhooks::triggers::evaluator::{Evaluator, EvaluatorConfig};
use plausible_webhooks::triggers::source::AnalyticsSource;
use time::OffsetDateTime;

const SITES: i64 = 1_000;
const TRIGGERS_PER_SITE: i64 = 10;
const GOAL_SITES: i64 = 100;
const INGEST_PER_SEC: u64 = 1_000;
const INGEST_TICK: Duration = Duration::from_millis(20);
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn events() -> i64 {
    std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000)
}

/// The events live in ClickHouse (`BENCH_SOURCE=clickhouse`: the installed
/// server; `BENCH_SOURCE=chdb`: the current engine; `BENCH_SOURCE=chdb24`:
/// ClickHouse 24.8) or PostgreSQL.
fn clickhouse() -> Option<ChEngine> {
    match std::env::var("BENCH_SOURCE").as_deref() {
        Ok("clickhouse") => Some(ChEngine::Server),
        Ok("chdb") => Some(ChEngine::Chdb),
        Ok("chdb24") => Some(ChEngine::Chdb24),
        _ => None,
    }
}

/// The daemon's config, reading analytics from `store` when it is ClickHouse.
fn config(url: &str, tls: &TestTls, store: Option<&ChServer>) -> Config {
    let mut cfg = plausible_webhooks::testkit::loopback_config(url, &tls.ca_file);
    if let Some(server) = store {
        cfg.analytics.source = "clickhouse".into();
        cfg.analytics.clickhouse_url = server.http_url();
        cfg.analytics.clickhouse_user = ch::READER_USER.into();
        cfg.analytics.clickhouse_password = Some(Redacted(ch::READER_PASSWORD.into()));
    }
    cfg
}

fn ingest_secs() -> u64 {
    std::env::var("BENCH_INGEST_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

#[tokio::main]
async fn main() -> Result<()> {
    println!("plausible-webhooks trigger benchmark\n");
    let cluster = tokio::task::spawn_blocking(|| {
        PgCluster::start(&PgOptions {
            durable: true,
            ..PgOptions::default()
        })
    })
    .await??;
    let url = cluster.create_database("bench").await?;
    let mut db = plausible_webhooks::db::connect(&url).await?;
    plausible_webhooks::db::migrate::load_fixture(&db).await?;
    plausible_webhooks::db::migrate::migrate(&mut db).await?;
    let db = db;
    let store = match clickhouse() {
        Some(engine) => {
            let server = ChServer::start_engine(engine, None).await?;
            server.create_events_table().await?;
            Some(server)
        }
        None => None,
    };
    match &store {
        Some(s) => println!(
            "events in: ClickHouse {} ({}, read-only user)",
            s.exec("SELECT version()").await?.trim(),
            s.engine().name()
        ),
        None => println!("events in: PostgreSQL"),
    }

    let n = events();
    let started = Instant::now();
    setup(&db, n, store.as_ref()).await?;
    println!(
        "setup: {SITES} sites, {n} events over 8 days, {} spike/drop triggers, {GOAL_SITES} goal triggers ({:.0} s)\n",
        SITES * TRIGGERS_PER_SITE,
        started.elapsed().as_secs_f64()
    );

    // The bulk load leaves gigabytes of dirty pages and WAL: flush them now,
    // so the phases measure steady work, not the load's checkpoint.
    db.batch_execute("CHECKPOINT").await?;
    if std::env::var_os("BENCH_SKIP_A").is_none() {
        evaluation(&db, &url, store.as_ref()).await?;
        db.batch_execute("CHECKPOINT").await?;
    } else {
        db.batch_execute("UPDATE webhook_triggers SET enabled = false")
            .await?;
    }
    let diag = std::env::var_os("BENCH_DIAG").is_some();
    if diag {
        // Plans of slow statements (over 300 ms) into the server log.
        for stmt in [
            "LOAD 'auto_explain'",
            "ALTER SYSTEM SET session_preload_libraries = 'auto_explain'",
            "ALTER SYSTEM SET auto_explain.log_min_duration = '300ms'",
            "ALTER SYSTEM SET auto_explain.log_analyze = on",
            "ALTER SYSTEM SET auto_explain.log_buffers = on",
            "SELECT pg_reload_conf()",
        ] {
            db.batch_execute(stmt).await?;
        }
        plausible_webhooks::logging::init("text", "warn,plausible_webhooks::triggers=debug");
    }
    goal_scanning(&db, &url, store.as_ref()).await?;
    if diag {
        let log = cluster.data_dir().parent().unwrap().join("server.log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        println!("\nslow statements (auto_explain) in {}:", log.display());
        for block in text.split("LOG:  duration:").skip(1).take(3) {
            println!("duration:{}", &block[..block.len().min(4000)]);
        }
    }
    drop(cluster);
    Ok(())
}

async fn setup(db: &tokio_postgres::Client, n: i64, store: Option<&ChServer>) -> Result<()> {
    db.batch_execute(&format!(
        "INSERT INTO teams (name, inserted_at, updated_at) VALUES ('bench', now(), now());
         INSERT INTO sites (domain, timezone, team_id, inserted_at, updated_at)
           SELECT 'site' || g || '.example', 'Etc/UTC', 1, now(), now() FROM generate_series(1, {SITES}) g;
         INSERT INTO webhooks (site_id, name, url, secret)
           SELECT id, 'bench', 'https://127.0.0.1:9/hook', '{SECRET}' FROM sites;
         DROP INDEX IF EXISTS events_v2_site_time_idx;"
    ))
    .await?;
    // Events: uniform over sites and over the last 8 days, 90% pageviews,
    // 10% engagement; ~30 visitors a day per site come back.
    let chunk = 1_000_000;
    let mut done = 0;
    if let Some(server) = store {
        // The same distribution, generated inside ClickHouse (each rand(k)
        // is its own random column).
        while done < n {
            let m = chunk.min(n - done);
            server
                .exec(&format!(
                    "INSERT INTO {db}.events_v2 (`timestamp`, name, site_id, user_id, session_id, pathname, referrer_source)
                     SELECT toDateTime(toUInt32(now()) - rand(1) % 691200),
                            if(rand(2) % 10 < 9, 'pageview', 'engagement'),
                            1 + rand(3) % {SITES}, rand(4) % 5001, rand64(5) % 1000000000000,
                            concat('/page/', toString(rand(6) % 21)),
                            ['', 'Google', 'Twitter', 'Hacker News', 'Bing', 'DuckDuckGo'][1 + rand(7) % 6]
                     FROM system.numbers LIMIT {m}",
                    db = ch::DATABASE
                ))
                .await?;
            done += m;
        }
        server
            .exec(&format!("OPTIMIZE TABLE {}.events_v2 FINAL", ch::DATABASE))
            .await?;
    }
    while done < n {
        let m = chunk.min(n - done);
        db.execute(
            "INSERT INTO events_v2 (site_id, \"timestamp\", name, pathname, user_id, session_id, referrer_source)
             SELECT 1 + (random() * ($2::int8 - 1))::int8,
                    (now() AT TIME ZONE 'UTC') - random() * interval '8 days',
                    CASE WHEN random() < 0.9 THEN 'pageview' ELSE 'engagement' END,
                    '/page/' || (random() * 20)::int,
                    (random() * 5000)::int8, (random() * 1e12)::int8,
                    (ARRAY['', 'Google', 'Twitter', 'Hacker News', 'Bing', 'DuckDuckGo'])[1 + (random() * 5)::int]
             FROM generate_series(1, $1::int8)",
            &[&m, &SITES],
        )
        .await?;
        done += m;
    }
    db.batch_execute(
        "CREATE INDEX events_v2_site_time_idx ON events_v2 (site_id, \"timestamp\") INCLUDE (user_id, name)",
    )
    .await?;
    db.batch_execute("VACUUM ANALYZE events_v2").await?;
    // Per site 5 spike triggers (thresholds 5..25 visitors in 5 min) and 5
    // drop triggers (thresholds 50..250 in 12 h). With ~1.2 visitors per
    // 5 min and ~150 per 12 h per site, spikes rarely fire, drops often.
    db.batch_execute(
        "INSERT INTO webhook_triggers (webhook_id, trigger_type, threshold, cooldown_secs, next_evaluation_at)
         SELECT w.id, CASE WHEN k <= 5 THEN 'visitor_spike' ELSE 'traffic_drop' END,
                CASE WHEN k <= 5 THEN 1 + k ELSE 50 * (k - 5) END, 0, now() - interval '1 day'
         FROM webhooks w, generate_series(1, 10) k;
         ANALYZE webhook_triggers;",
    )
    .await?;
    Ok(())
}

fn evaluator(url: &str, source: Arc<AnalyticsSource>) -> Result<Evaluator> {
    Evaluator::new(
        EvaluatorConfig {
            interval: Duration::from_secs(60),
            batch: plausible_webhooks::config::DEFAULT_EVALUATION_BATCH,
            base_url: "https://plausible.example.com".into(),
            before_commit: None,
        },
        plausible_webhooks::db::pool(url, 4)?,
        source,
    )
}

async fn evaluation(
    db: &tokio_postgres::Client,
    url: &str,
    store: Option<&ChServer>,
) -> Result<()> {
    let tls = TestTls::new()?;
    let cfg = config(url, &tls, store);
    let source = Arc::new(AnalyticsSource::from_config(&cfg)?);
    let ev = evaluator(url, source.clone())?;
    let now = OffsetDateTime::now_utc();
    for (label, at) in [
        ("first round (all 10,000 due)", now),
        (
            "a minute later (hysteresis)",
            now + time::Duration::minutes(1),
        ),
    ] {
        let t = Instant::now();
        let r = ev.round(at).await?;
        let secs = t.elapsed().as_secs_f64();
        let by_type: Vec<String> = db
            .query(
                "SELECT event_type || ' ' || count(*) FROM webhook_deliveries GROUP BY event_type ORDER BY 1",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        println!(
            "(a) {label}: {:.2} s, {} statements, {} evaluated, {} fired (deliveries so far: {}), {:.0} µs per trigger",
            secs,
            r.queries,
            r.evaluated,
            r.fired,
            by_type.join(", "),
            secs * 1e6 / r.evaluated.max(1) as f64
        );
    }
    // 1,000 triggers without a threshold: each derives one from 7 days first.
    db.batch_execute(
        "UPDATE webhook_triggers SET threshold = NULL WHERE trigger_type = 'visitor_spike'
           AND id IN (SELECT id FROM webhook_triggers WHERE trigger_type = 'visitor_spike' ORDER BY id LIMIT 1000)",
    )
    .await?;
    let t = Instant::now();
    let r = ev.round(now + time::Duration::minutes(2)).await?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "(a) with 1,000 triggers lacking a threshold: {:.2} s, {} statements, {} thresholds derived (at most {} a round), {} evaluated, {} fired",
        secs,
        r.queries,
        r.derived,
        plausible_webhooks::triggers::evaluator::DERIVE_PER_ROUND,
        r.evaluated,
        r.fired
    );
    let (sample,): (String,) = {
        let row = db
            .query_one(
                "SELECT payload::text FROM webhook_deliveries WHERE event_type = 'visitor_spike' LIMIT 1",
                &[],
            )
            .await?;
        (row.get(0),)
    };
    println!("    a spike payload: {sample}\n");
    // The evaluator's deliveries are not part of (b).
    db.batch_execute(
        "DELETE FROM webhook_deliveries; UPDATE webhook_triggers SET enabled = false;",
    )
    .await?;
    Ok(())
}

#[derive(Default)]
struct Seen {
    /// pathname (unique per completion) -> first arrival.
    arrival: HashMap<String, SystemTime>,
}

async fn goal_scanning(
    db: &tokio_postgres::Client,
    url: &str,
    store: Option<&ChServer>,
) -> Result<()> {
    // Sites 1..=100 get three goals each (event with a property, a page
    // wildcard, a scroll goal) and one goal trigger covering all of them.
    db.batch_execute(&format!(
        "INSERT INTO goals (site_id, event_name, page_path, display_name, scroll_threshold, custom_props, inserted_at, updated_at)
           SELECT s, 'Signup', NULL, 'Signup', -1, '{{\"plan\": \"pro\"}}'::jsonb, now(), now() FROM generate_series(1, {GOAL_SITES}) s
           UNION ALL SELECT s, NULL, '/checkout/**', 'Checkout', -1, '{{}}'::jsonb, now(), now() FROM generate_series(1, {GOAL_SITES}) s
           UNION ALL SELECT s, NULL, '/blog/*', 'Read', 75, '{{}}'::jsonb, now(), now() FROM generate_series(1, {GOAL_SITES}) s;
         INSERT INTO webhook_triggers (webhook_id, trigger_type, inserted_at)
           SELECT id, 'goal_completion', now() - interval '2 seconds' FROM webhooks WHERE site_id <= {GOAL_SITES};"
    ))
    .await?;
    let tls = TestTls::new()?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let behavior = {
        let seen = seen.clone();
        Arc::new(move |r: &Recorded| {
            let p = r.json()["data"]["pathname"]
                .as_str()
                .unwrap_or("")
                .to_string();
            seen.lock().unwrap().arrival.entry(p).or_insert(r.at);
            Reply::Status(200)
        })
    };
    let receiver = Receiver::start(&tls, behavior).await?;
    db.execute(
        "UPDATE webhooks SET url = $1 || id::text, rate_limit_per_sec = NULL",
        &[&receiver.url("/hook/")],
    )
    .await?;
    let mut cfg = config(url, &tls, store);
    cfg.log.level = "warn".into();
    let daemon = Daemon::start(cfg, StartOptions::default()).await?;
    daemon.wait_listening().await?;

    // Ingest: every 20 ms a batch of 20 events (1,000/s), one in five a goal
    // completion with a unique pathname; its commit instant is recorded.
    let secs = ingest_secs();
    let ingest_tick = if store.is_some() {
        Duration::from_secs(1)
    } else {
        INGEST_TICK
    };
    let per_tick = (INGEST_PER_SEC * ingest_tick.as_millis() as u64 / 1000) as i64;
    let mut committed: HashMap<String, SystemTime> = HashMap::new();
    let mut tick = tokio::time::interval(ingest_tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut seq: i64 = 0;
    let mut written = 0i64;
    while started.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        let first = seq;
        seq += per_tick;
        // kind by n % 5: 0 = completion (cycling event/page/scroll), else a plain pageview.
        if let Some(server) = store {
            server
                .exec(&format!(
                    "INSERT INTO {db}.events_v2 (site_id, `timestamp`, name, pathname, user_id, session_id, `meta.key`, `meta.value`, scroll_depth)
                     SELECT 1 + n % {GOAL_SITES}, now(),
                            multiIf(n % 5 != 0, 'pageview', n % 15 = 0, 'Signup', n % 15 = 5, 'pageview', 'engagement'),
                            concat(multiIf(n % 5 != 0, '/page/', n % 15 = 0, '/signup/', n % 15 = 5, '/checkout/', '/blog/'), toString(n)),
                            n, n,
                            if(n % 15 = 0, ['plan'], emptyArrayString()), if(n % 15 = 0, ['pro'], emptyArrayString()),
                            if(n % 15 = 10, 90, 0)
                     FROM (SELECT number + {first} AS n FROM system.numbers LIMIT {per_tick})",
                    db = ch::DATABASE
                ))
                .await?;
        } else {
            db.execute(
            "INSERT INTO events_v2 (site_id, \"timestamp\", name, pathname, user_id, session_id, meta_key, meta_value, scroll_depth)
             SELECT 1 + n % $3, now() AT TIME ZONE 'UTC',
                    CASE WHEN n % 5 <> 0 THEN 'pageview'
                         WHEN n % 15 = 0 THEN 'Signup'
                         WHEN n % 15 = 5 THEN 'pageview'
                         ELSE 'engagement' END,
                    CASE WHEN n % 5 <> 0 THEN '/page/' || n
                         WHEN n % 15 = 0 THEN '/signup/' || n
                         WHEN n % 15 = 5 THEN '/checkout/' || n
                         ELSE '/blog/' || n END,
                    n, n,
                    CASE WHEN n % 15 = 0 THEN '{plan}'::text[] ELSE '{}' END,
                    CASE WHEN n % 15 = 0 THEN '{pro}'::text[] ELSE '{}' END,
                    CASE WHEN n % 15 = 10 THEN 90 END
             FROM generate_series($1::int8, $2::int8 - 1) n",
            &[&first, &seq, &GOAL_SITES],
        )
        .await?;
        }
        let at = SystemTime::now();
        for n in first..seq {
            if n % 5 == 0 {
                let p = match n % 15 {
                    0 => format!("/signup/{n}"),
                    5 => format!("/checkout/{n}"),
                    _ => format!("/blog/{n}"),
                };
                committed.insert(p, at);
            }
        }
        written += per_tick;
    }
    let ingest = started.elapsed().as_secs_f64();
    // Wait for the stragglers (up to 30 s).
    let want = committed.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().arrival.len() < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.shutdown().await?;
    let arrival = std::mem::take(&mut seen.lock().unwrap().arrival);
    let mut lat: Vec<f64> = committed
        .iter()
        .filter_map(|(p, at)| {
            arrival
                .get(p)
                .map(|a| a.duration_since(*at).unwrap_or_default().as_secs_f64() * 1e3)
        })
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    let dups: i64 = db
        .query_one(
            "SELECT count(*) - count(DISTINCT payload->>'pathname') FROM webhook_deliveries",
            &[],
        )
        .await?
        .get(0);
    println!(
        "(b) ingest {} events in {:.1} s ({:.0}/s), {} goal completions: {} delivered, {} duplicate deliveries",
        written,
        ingest,
        written as f64 / ingest,
        want,
        lat.len(),
        dups
    );
    if !lat.is_empty() {
        println!(
            "    event row committed → POST arrived: p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms (scan interval 1 s, one insert every {} ms)",
            pct(0.5),
            pct(0.95),
            pct(0.99),
            lat[lat.len() - 1],
            ingest_tick.as_millis()
        );
    }
    Ok(())
}
