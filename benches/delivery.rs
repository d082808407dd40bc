//! Delivery benchmark: `cargo bench --bench delivery` (`BENCH_QUICK=1` runs (a) only).
//!
//! A durable throwaway PostgreSQL (fsync and synchronous_commit on), Debian's
//! nginx as the HTTPS receiver (HTTP/2 by ALPN; the in-process test receiver
//! when nginx cannot be had), and the daemon as a separate process, the built
//! binary configured only through its environment, as systemd would run it.
//!
//! (a) burn-down of 50,000 queued deliveries; (b) latency of single-row
//! inserts at 500/s; (c) memory and claim cost with 1,000,000 rows queued but
//! not yet due. It prints figures and asserts nothing about speed.
//!
//! To say where the time goes, each phase also prints the CPU seconds of the
//! daemon, of PostgreSQL (split by kind of process), of nginx and of the
//! rest of the machine (from /proc), the WAL written, PostgreSQL's busiest
//! statements (pg_stat_statements), and what its log says about lock waits
//! over 100 ms, statements over 250 ms (auto_explain, with their plans),
//! autovacuum and checkpoints. These are diagnostics; durability is untouched.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use plausible_webhooks::queue::claimer;
use plausible_webhooks::testkit::pg::{PgCluster, PgOptions};
use plausible_webhooks::testkit::receiver::{always, Receiver, TestTls};
use tokio::time::MissedTickBehavior;
use tokio_postgres::Client;
use uuid::Uuid;

const BURN_DOWN_ROWS: i32 = 50_000;
const LATENCY_RATE: u32 = 500;
const LATENCY_SECS: u32 = 20;
/// Connections the latency inserts are spread over, round robin (each insert
/// is its own autocommit transaction; on one connection each would wait for
/// the commits queued before it, which is the bench's queue, not the daemon's).
const LATENCY_CONNECTIONS: usize = 32;
const BACKLOG_ROWS: i32 = 1_000_000;
const IDLE_WITH_BACKLOG: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

const TARGET_RATE: f64 = 20_000.0;
const TARGET_P99_MS: f64 = 10.0;
const TARGET_RSS_MIB: f64 = 32.0;

/// The claim of src/queue/claimer.rs, with its parameters as literals:
/// 512 rows, a made-up instance, a 30 s lease, nothing tracked, the default
/// limits and shares of 512 slots. (Highest placeholder first: "$1" is in "$12".)
fn claim_explain_sql() -> String {
    let params = [
        ("$14", "true"),
        ("$13", "33554432"),
        ("$12", "64"),
        ("$11", "8"),
        ("$10", "512"),
        ("$9", "0"),
        ("$8", "512"),
        ("$7", "64"),
        ("$6", "'{}'"),
        ("$5", "'{}'"),
        ("$4", "'{}'"),
        ("$3", "30"),
        ("$2", "'bench:explain'"),
        ("$1", "512"),
    ];
    let sql = params
        .iter()
        .fold(claimer::CLAIM_SQL.to_string(), |sql, (p, v)| {
            sql.replace(p, v)
        });
    format!("EXPLAIN (ANALYZE, BUFFERS) {sql}")
}

/// The claimer's "when is the next row due" query, run when idle.
fn next_due_explain_sql() -> String {
    format!(
        "EXPLAIN (ANALYZE, BUFFERS) {}",
        claimer::NEXT_DUE_SQL.replace("$1", "'{}'")
    )
}

/// Is any delivery not finished yet? Asked through the two partial indexes
/// (due pending rows, leased rows), with EXISTS so it stops at the first live
/// row: a count, or a scan of the table, every 50 ms would cost PostgreSQL a
/// good share of what the queue itself costs (a count of the due rows took
/// 35 ms a poll here), and with the 1M backlog (due in an hour, outside the
/// 30 minute bound) a scan would read a gigabyte. Retries (1 and 5 min) count
/// as open.
const OPEN_SQL: &str = "
SELECT EXISTS (SELECT 1 FROM webhooks w CROSS JOIN LATERAL (
                   SELECT 1 FROM webhook_deliveries p
                   WHERE p.webhook_id = w.id AND p.status = 'pending'
                     AND p.next_attempt_at < now() + interval '30 minutes' LIMIT 1) x)
    OR EXISTS (SELECT 1 FROM webhook_deliveries WHERE status = 'delivering')";

/// How many are open, for the timeout message.
const OPEN_COUNT_SQL: &str = "
SELECT count(*) FROM webhook_deliveries
WHERE status = 'delivering' OR (status = 'pending' AND next_attempt_at < now() + interval '30 minutes')";

/// A ~1 KB goal_completion payload as an SQL expression of the row number `n`.
fn payload_sql(n: &str) -> String {
    format!(
        "jsonb_build_object(
            'goal_id', 7, 'goal_name', 'Signup', 'n', {n},
            'pathname', '/register/step-' || {n},
            'referrer', 'https://news.example.com/article/' || md5({n}::text),
            'country', 'EE', 'region', 'EE-37', 'city', 'Tallinn',
            'device', 'Desktop', 'browser', 'Firefox', 'os', 'Linux',
            'props', jsonb_build_object('plan', 'business', 'ab', 'variant-b', 'seats', 12),
            'notes', repeat(md5(({n} * 7)::text), 24))"
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("plausible-webhooks delivery benchmark (nproc {nproc})\n");
    let mut bench = Bench::setup(nproc).await?;

    let (a, daemon) = burn_down(&mut bench).await?;
    if std::env::var_os("BENCH_QUICK").is_some() {
        // Iterating on the hot path: (a) only, printed above.
        println!(
            "[memory] daemon peak RSS (VmHWM) after (a): {}",
            mib(daemon.vm_hwm_kib())
        );
        daemon.stop().await?;
        bench.sink.stop().await;
        return Ok(());
    }
    let (b, daemon) = latency(&mut bench, daemon).await?;
    let hwm_ab = daemon.vm_hwm_kib();
    println!(
        "\n[memory] daemon peak RSS (VmHWM) after (a) and (b): {}",
        mib(hwm_ab)
    );
    daemon.stop().await?;
    let c = backlog(&mut bench).await?;

    bench.sink.stop().await;
    let receiver = bench.sink.describe();
    let pg_log_problems = bench.cluster_log_problems();
    drop(bench);
    summary(nproc, &receiver, &a, &b, hwm_ab, &c, &pg_log_problems);
    Ok(())
}

// ---------------------------------------------------------------- setup

struct Bench {
    nproc: usize,
    cluster: PgCluster,
    /// The daemon's database URL (its connections are named plausible-webhooks).
    url: String,
    /// The same database, for the bench's own connections (application_name bench).
    bench_url: String,
    db: Client,
    /// pg_stat_statements is loaded: each phase prints its busiest statements.
    statements: bool,
    tls: TestTls,
    sink: Sink,
    webhook: Uuid,
    /// Daemon logs and the (empty) config file.
    dir: tempfile::TempDir,
    daemons_started: u32,
}

impl Bench {
    async fn setup(nproc: usize) -> Result<Bench> {
        println!("[setup] starting a durable PostgreSQL (fsync, synchronous_commit, full_page_writes on)...");
        let cluster = tokio::task::spawn_blocking(|| {
            PgCluster::start(&PgOptions {
                durable: true,
                max_connections: 300,
            })
        })
        .await??;
        let (cluster, statements) = configure_diagnostics(cluster).await?;
        let url = cluster.create_database("bench").await?;
        {
            let mut c = plausible_webhooks::db::connect(&url).await?;
            plausible_webhooks::db::migrate::load_fixture(&c).await?;
            plausible_webhooks::db::migrate::migrate(&mut c).await?;
        }
        let bench_url = format!("{url}?application_name=bench");
        let db = plausible_webhooks::db::connect(&bench_url).await?;
        let statements = statements
            && db
                .batch_execute("CREATE EXTENSION pg_stat_statements")
                .await
                .map_err(|e| println!("[setup] CREATE EXTENSION pg_stat_statements failed: {e}"))
                .is_ok();
        println!(
            "[setup] PostgreSQL on 127.0.0.1:{}, fixture loaded, migrated; pg_stat_statements and auto_explain {}",
            cluster.port(),
            if statements {
                "loaded (per-phase statement times and slow plans below)"
            } else {
                "unavailable"
            }
        );

        let tls = TestTls::new()?;
        let sink = Sink::start(&tls).await?;
        println!("[setup] receiver: {} at {}", sink.describe(), sink.url());

        let site_id = plausible_webhooks::testkit::create_site(&db, "bench.example.com").await?;
        let webhook: Uuid = db
            .query_one(
                "INSERT INTO webhooks (site_id, name, url, secret, max_concurrency)
                 VALUES ($1, 'bench', $2, $3, 1000) RETURNING id",
                &[&site_id, &sink.url(), &SECRET],
            )
            .await?
            .get(0);
        db.execute(
            "INSERT INTO webhook_triggers (webhook_id, trigger_type) VALUES ($1, 'goal_completion')",
            &[&webhook],
        )
        .await?;
        println!("[setup] webhook {webhook}: max_concurrency 1000, no rate limit");
        Ok(Bench {
            nproc,
            cluster,
            url,
            bench_url,
            db,
            statements,
            tls,
            sink,
            webhook,
            dir: tempfile::tempdir()?,
            daemons_started: 0,
        })
    }

    fn postmaster_pid(&self) -> i32 {
        std::fs::read_to_string(self.cluster.data_dir().join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse().ok())
            .unwrap_or(0)
    }

    fn spawn_daemon(&mut self) -> Result<DaemonProc> {
        self.daemons_started += 1;
        DaemonProc::spawn(
            self.daemons_started,
            &self.url,
            &self.tls.ca_file,
            self.dir.path(),
        )
    }

    async fn any_open(&self) -> Result<bool> {
        Ok(self.db.query_one(OPEN_SQL, &[]).await?.get(0))
    }

    /// Polls every 50 ms until no delivery is open; returns when that was seen.
    async fn wait_drained(&self, daemon: &mut DaemonProc) -> Result<Instant> {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            if !self.any_open().await? {
                return Ok(Instant::now());
            }
            daemon.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "deliveries still open after {DRAIN_TIMEOUT:?}: {}",
                    self.db
                        .query_one(OPEN_COUNT_SQL, &[])
                        .await?
                        .get::<_, i64>(0)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Enqueues `n` due deliveries in one INSERT ... SELECT generate_series.
    async fn enqueue_due(&self, n: i32) -> Result<Vec<Uuid>> {
        let sql = format!(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, payload)
             SELECT $1, 'goal_completion', {} FROM generate_series(1, $2::int) g
             RETURNING id",
            payload_sql("g")
        );
        let rows = self.db.query(&sql, &[&self.webhook, &n]).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn statuses(&self, ids: &[Uuid]) -> Result<String> {
        let rows = self
            .db
            .query(
                "SELECT status, count(*) FROM webhook_deliveries WHERE id = ANY($1)
                 GROUP BY status ORDER BY status",
                &[&ids],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| format!("{} {}", r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect::<Vec<_>>()
            .join(", "))
    }

    async fn avg_payload_bytes(&self, ids: &[Uuid]) -> Result<f64> {
        Ok(self
            .db
            .query_one(
                "SELECT avg(length(payload::text))::float8 FROM webhook_deliveries WHERE id = ANY($1)",
                &[&ids],
            )
            .await?
            .get(0))
    }

    fn cluster_log_problems(&self) -> Vec<String> {
        self.server_log()
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("FATAL") || l.contains("PANIC"))
            .map(str::to_string)
            .collect()
    }
}

/// Diagnostics only, durability untouched: logs lock waits longer than
/// 100 ms (deadlock_timeout, which also times deadlock detection), every
/// autovacuum run and checkpoint, and loads pg_stat_statements and
/// auto_explain (a restart). Returns whether they are loaded.
async fn configure_diagnostics(cluster: PgCluster) -> Result<(PgCluster, bool)> {
    let admin = plausible_webhooks::db::connect(&cluster.url("postgres")).await?;
    // One statement each: ALTER SYSTEM cannot run in the implicit transaction
    // of a multi-statement query.
    for setting in [
        "log_lock_waits = on",
        "deadlock_timeout = '100ms'",
        "log_autovacuum_min_duration = 0",
        "log_checkpoints = on",
    ] {
        admin
            .batch_execute(&format!("ALTER SYSTEM SET {setting}"))
            .await?;
    }
    if let Err(e) = admin
        .batch_execute(
            "ALTER SYSTEM SET shared_preload_libraries = pg_stat_statements, auto_explain",
        )
        .await
    {
        println!("[setup] pg_stat_statements and auto_explain not loaded: {e}");
        admin.batch_execute("SELECT pg_reload_conf()").await?;
        return Ok((cluster, false));
    }
    drop(admin);
    let (cluster, loaded) = tokio::task::spawn_blocking(move || {
        cluster.stop()?;
        if cluster.start_again().is_ok() {
            return anyhow::Ok((cluster, true));
        }
        // The library is missing: start without it.
        let conf = cluster.data_dir().join("postgresql.auto.conf");
        let text = std::fs::read_to_string(&conf)?;
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("shared_preload_libraries"))
            .collect();
        std::fs::write(&conf, kept.join("\n") + "\n")?;
        println!("[setup] PostgreSQL would not start with pg_stat_statements and auto_explain; started without them");
        cluster.start_again()?;
        Ok((cluster, false))
    })
    .await??;
    if loaded {
        // Known only once the library is loaded: plans of statements over 250 ms
        // (without ANALYZE, so the other statements pay nothing).
        let admin = plausible_webhooks::db::connect(&cluster.url("postgres")).await?;
        admin
            .batch_execute("ALTER SYSTEM SET auto_explain.log_min_duration = '250ms'")
            .await?;
        admin.batch_execute("SELECT pg_reload_conf()").await?;
    }
    Ok((cluster, loaded))
}

// ---------------------------------------------------------------- (a) burn-down

struct BurnDown {
    rows: usize,
    payload_bytes: f64,
    /// From the daemon's start (or the enqueue) until the queue was seen empty.
    total: Duration,
    arrivals: usize,
    unique_arrivals: usize,
    /// First arrival − daemon start.
    startup_secs: Option<f64>,
    first_to_last_secs: Option<f64>,
    statuses: String,
    cpu: Usage,
}

impl BurnDown {
    fn rate(&self) -> f64 {
        self.rows as f64 / self.total.as_secs_f64()
    }
    fn rate_excl_startup(&self) -> Option<f64> {
        self.first_to_last_secs
            .filter(|s| *s > 0.0)
            .map(|s| self.rows as f64 / s)
    }
    fn print(&self, label: &str, nproc: usize) {
        println!(
            "[{label}] {} rows (payload avg {:.0} bytes as jsonb text): all done in {:.2?} → {:.0} deliveries/s (daemon start → queue empty)",
            self.rows,
            self.payload_bytes,
            self.total,
            self.rate()
        );
        match (self.startup_secs, self.first_to_last_secs, self.rate_excl_startup()) {
            (Some(s), Some(f), Some(r)) => println!(
                "[{label}] daemon start → first arrival {:.0} ms; first → last arrival {f:.3} s → {r:.0} deliveries/s excluding startup",
                s * 1e3
            ),
            _ => println!("[{label}] too few arrivals to time first → last"),
        }
        println!(
            "[{label}] receiver saw {} requests for these rows ({} distinct webhook-ids); final states: {}",
            self.arrivals, self.unique_arrivals, self.statuses
        );
        self.cpu.print(label, nproc);
    }
}

struct BurnDownA {
    burn: BurnDown,
    /// EXPLAIN ANALYZE of one claim of 1000 before the daemon started.
    claim_ms: Option<f64>,
}

async fn burn_down(bench: &mut Bench) -> Result<(BurnDownA, DaemonProc)> {
    println!("\n== (a) burn-down: {BURN_DOWN_ROWS} queued deliveries, then start the daemon");
    let t = Instant::now();
    let ids = bench.enqueue_due(BURN_DOWN_ROWS).await?;
    println!(
        "[a] enqueued {} rows in one INSERT ... SELECT generate_series in {:.2?}",
        ids.len(),
        t.elapsed()
    );
    let payload_bytes = bench.avg_payload_bytes(&ids).await?;
    let claim_ms = explain(
        &bench.db,
        "a",
        "claim, LIMIT 1000, 50,000 due, no backlog",
        &claim_explain_sql(),
        false,
    )
    .await?;

    let (result, daemon) = drain(bench, &ids, payload_bytes, true).await?;
    result.print("a", bench.nproc);
    Ok((
        BurnDownA {
            burn: result,
            claim_ms,
        },
        daemon,
    ))
}

/// Starts a daemon on the queued `ids`, waits until all are done and measures
/// the burn-down (`restart_receiver` as for `Sink::arrivals`).
async fn drain(
    bench: &mut Bench,
    ids: &[Uuid],
    payload_bytes: f64,
    restart_receiver: bool,
) -> Result<(BurnDown, DaemonProc)> {
    let phase = Phase::begin(bench, None).await?;
    let mut daemon = bench.spawn_daemon()?;
    let done = bench.wait_drained(&mut daemon).await?;
    let total = done - daemon.spawned_at;
    let cpu = phase.end(bench, Some(daemon.pid())).await?;
    let arrivals = bench.sink.arrivals(restart_receiver).await?;
    let result = burn_down_result(
        bench,
        ids,
        payload_bytes,
        total,
        unix_secs(daemon.spawned),
        &arrivals,
        cpu,
    )
    .await?;
    Ok((result, daemon))
}

async fn burn_down_result(
    bench: &Bench,
    ids: &[Uuid],
    payload_bytes: f64,
    total: Duration,
    start_unix: f64,
    arrivals: &[Arrival],
    cpu: Usage,
) -> Result<BurnDown> {
    let wanted: HashSet<String> = ids.iter().map(|u| u.to_string()).collect();
    let mine: Vec<&Arrival> = arrivals.iter().filter(|a| wanted.contains(&a.id)).collect();
    let unique: HashSet<&str> = mine.iter().map(|a| a.id.as_str()).collect();
    let first = mine.iter().map(|a| a.at).fold(f64::INFINITY, f64::min);
    let last = mine.iter().map(|a| a.at).fold(f64::NEG_INFINITY, f64::max);
    Ok(BurnDown {
        rows: ids.len(),
        payload_bytes,
        total,
        arrivals: mine.len(),
        unique_arrivals: unique.len(),
        startup_secs: first.is_finite().then_some(first - start_unix),
        first_to_last_secs: (mine.len() > 1).then_some(last - first),
        statuses: bench.statuses(ids).await?,
        cpu,
    })
}

// ---------------------------------------------------------------- (b) latency

struct Latency {
    sent: usize,
    issue_secs: f64,
    matched: usize,
    /// Arrival at the receiver − the moment just before the INSERT was issued (ms).
    end_to_end: Stats,
    /// The INSERT's round trip, commit included (ms).
    commit: Stats,
    /// Arrival − the INSERT's return (ms): the daemon's own share.
    after_commit: Stats,
    statuses: String,
    cpu: Usage,
}

async fn latency(bench: &mut Bench, mut daemon: DaemonProc) -> Result<(Latency, DaemonProc)> {
    let n = (LATENCY_RATE * LATENCY_SECS) as usize;
    println!(
        "\n== (b) latency: single-row INSERTs (each its own autocommit transaction) at {LATENCY_RATE}/s for {LATENCY_SECS} s, daemon idle"
    );
    daemon.check_alive()?;
    let sql = format!(
        "INSERT INTO webhook_deliveries (webhook_id, event_type, payload)
         VALUES ($1, 'goal_completion', {}) RETURNING id",
        payload_sql("$2::int")
    );
    let mut clients = Vec::new();
    for _ in 0..LATENCY_CONNECTIONS {
        let c = plausible_webhooks::db::connect(&bench.bench_url).await?;
        let stmt = c.prepare(&sql).await?;
        clients.push(Arc::new((c, stmt)));
    }

    let phase = Phase::begin(bench, Some(daemon.pid())).await?;
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let mut interval = tokio::time::interval(Duration::from_secs(1) / LATENCY_RATE);
    interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let webhook = bench.webhook;
    for i in 0..n {
        interval.tick().await;
        let c = clients[i % clients.len()].clone();
        tasks.spawn(async move {
            let before = SystemTime::now();
            let row = c.0.query_one(&c.1, &[&webhook, &(i as i32)]).await?;
            let after = SystemTime::now();
            Ok::<_, anyhow::Error>((row.get::<_, Uuid>(0), before, after))
        });
    }
    let issue_secs = started.elapsed().as_secs_f64();
    let mut sent = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        sent.push(r??);
    }
    println!(
        "[b] issued {} inserts in {issue_secs:.2} s ({:.0}/s)",
        sent.len(),
        sent.len() as f64 / issue_secs
    );
    bench.wait_drained(&mut daemon).await?;
    let cpu = phase.end(bench, Some(daemon.pid())).await?;
    let arrivals = bench.sink.arrivals(true).await?;

    let mut first_arrival: HashMap<&str, f64> = HashMap::new();
    for a in &arrivals {
        let t = first_arrival.entry(a.id.as_str()).or_insert(a.at);
        *t = t.min(a.at);
    }
    let (mut e2e, mut commit, mut after_commit) = (Vec::new(), Vec::new(), Vec::new());
    for (id, before, after) in &sent {
        let (b, a) = (unix_secs(*before), unix_secs(*after));
        commit.push((a - b) * 1e3);
        if let Some(at) = first_arrival.get(id.to_string().as_str()) {
            e2e.push((at - b) * 1e3);
            after_commit.push((at - a) * 1e3);
        }
    }
    let ids: Vec<Uuid> = sent.iter().map(|s| s.0).collect();
    let result = Latency {
        sent: sent.len(),
        issue_secs,
        matched: e2e.len(),
        end_to_end: Stats::of(e2e),
        commit: Stats::of(commit),
        after_commit: Stats::of(after_commit),
        statuses: bench.statuses(&ids).await?,
        cpu,
    };
    println!(
        "[b] matched {} of {} inserts to an access-log line by webhook-id; final states: {}",
        result.matched, result.sent, result.statuses
    );
    println!(
        "[b] insert start → arrival (includes the INSERT's commit): {}",
        result.end_to_end
    );
    println!(
        "[b]   of which the INSERT round trip (commit, fsync): {}",
        result.commit
    );
    println!(
        "[b]   and INSERT returned → arrival (daemon):         {}",
        result.after_commit
    );
    println!("[b] (arrival = nginx's $msec, millisecond resolution, written when the response is logged)");
    print_stalls(&sent, started_wall);
    result.cpu.print("b", bench.nproc);
    Ok((result, daemon))
}

/// INSERTs whose round trip exceeded 50 ms, grouped into windows (slow
/// inserts less than 100 ms apart), with UTC times to match server.log.
fn print_stalls(sent: &[(Uuid, SystemTime, SystemTime)], start: SystemTime) {
    const SLOW_MS: f64 = 50.0;
    let mut slow: Vec<(f64, f64)> = sent
        .iter()
        .map(|(_, b, a)| (unix_secs(*b), (unix_secs(*a) - unix_secs(*b)) * 1e3))
        .filter(|(_, ms)| *ms > SLOW_MS)
        .collect();
    slow.sort_by(|x, y| x.0.total_cmp(&y.0));
    if slow.is_empty() {
        println!("[b] no INSERT took longer than {SLOW_MS} ms");
        return;
    }
    // (first start, last start, count, worst round trip)
    let mut windows: Vec<(f64, f64, usize, f64)> = Vec::new();
    for (at, ms) in slow.iter().copied() {
        match windows.last_mut() {
            Some(w) if at - w.1 < 0.1 => {
                w.1 = at;
                w.2 += 1;
                w.3 = w.3.max(ms);
            }
            _ => windows.push((at, at, 1, ms)),
        }
    }
    println!(
        "[b] {} INSERTs took longer than {SLOW_MS} ms, in {} window(s) (UTC, +s from the first insert):",
        slow.len(),
        windows.len()
    );
    let t0 = unix_secs(start);
    for (first, last, n, worst) in windows.iter().take(8) {
        println!(
            "      {} – {} (+{:.2} s): {n} inserts, worst round trip {worst:.0} ms",
            utc(*first),
            utc(*last),
            first - t0
        );
    }
}

fn utc(unix: f64) -> String {
    let t = time::OffsetDateTime::UNIX_EPOCH + Duration::from_secs_f64(unix.max(0.0));
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

// ---------------------------------------------------------------- (c) backlog

struct Backlog {
    insert: Duration,
    vacuum: Duration,
    table_size: String,
    hwm_idle_kib: Option<u64>,
    claim_idle_ms: Option<f64>,
    next_due_ms: Option<f64>,
    claim_due_ms: Option<f64>,
    burn: BurnDown,
    hwm_burn_kib: Option<u64>,
}

async fn backlog(bench: &mut Bench) -> Result<Backlog> {
    println!(
        "\n== (c) memory and claim cost with {BACKLOG_ROWS} pending rows due in an hour (daemon stopped while they are inserted)"
    );
    let t = Instant::now();
    bench
        .db
        .execute(
            &format!(
                "INSERT INTO webhook_deliveries (webhook_id, event_type, payload, next_attempt_at)
                 SELECT $1, 'goal_completion', {}, now() + interval '1 hour'
                 FROM generate_series(1, $2::int) g",
                payload_sql("g")
            ),
            &[&bench.webhook, &BACKLOG_ROWS],
        )
        .await?;
    let insert = t.elapsed();
    println!("[c] inserted {BACKLOG_ROWS} not-due rows in {insert:.2?}");
    let t = Instant::now();
    bench
        .db
        .batch_execute("VACUUM (ANALYZE) webhook_deliveries")
        .await?;
    let vacuum = t.elapsed();
    let table_size: String = bench
        .db
        .query_one(
            "SELECT pg_size_pretty(pg_total_relation_size('webhook_deliveries'))",
            &[],
        )
        .await?
        .get(0);
    println!("[c] VACUUM (ANALYZE) in {vacuum:.2?} (what autovacuum would do within a minute); webhook_deliveries is {table_size} with indexes");

    let claim_idle_ms = explain(
        &bench.db,
        "c",
        "claim, LIMIT 1000, nothing due",
        &claim_explain_sql(),
        false,
    )
    .await?;
    let next_due_ms = explain(
        &bench.db,
        "c",
        "next-due query",
        &next_due_explain_sql(),
        false,
    )
    .await?;

    let mut daemon = bench.spawn_daemon()?;
    let until = Instant::now() + IDLE_WITH_BACKLOG;
    while Instant::now() < until {
        daemon.check_alive()?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let hwm_idle_kib = daemon.vm_hwm_kib();
    println!(
        "[c] fresh daemon #{} idle for {IDLE_WITH_BACKLOG:?} at {BACKLOG_ROWS} backlog: VmHWM {}",
        daemon.n,
        mib(hwm_idle_kib)
    );
    daemon.stop().await?;

    println!(
        "\n[c] burn-down of {BURN_DOWN_ROWS} due rows on top of the {BACKLOG_ROWS} not-due backlog"
    );
    let t = Instant::now();
    let ids = bench.enqueue_due(BURN_DOWN_ROWS).await?;
    println!("[c] enqueued {} due rows in {:.2?}", ids.len(), t.elapsed());
    let claim_due_ms = explain(
        &bench.db,
        "c",
        "claim, LIMIT 1000, 50,000 due, 1M not due",
        &claim_explain_sql(),
        true,
    )
    .await?;
    let payload_bytes = bench.avg_payload_bytes(&ids).await?;

    let (burn, daemon) = drain(bench, &ids, payload_bytes, false).await?;
    burn.print("c", bench.nproc);
    let hwm_burn_kib = daemon.vm_hwm_kib();
    println!(
        "[c] daemon #{} VmHWM after that burn-down: {}",
        daemon.n,
        mib(hwm_burn_kib)
    );
    daemon.stop().await?;
    Ok(Backlog {
        insert,
        vacuum,
        table_size,
        hwm_idle_kib,
        claim_idle_ms,
        next_due_ms,
        claim_due_ms,
        burn,
        hwm_burn_kib,
    })
}

/// Runs `sql` (an EXPLAIN ANALYZE) in a transaction that is rolled back;
/// prints the plan and returns its execution time in ms.
async fn explain(
    db: &Client,
    phase: &str,
    label: &str,
    sql: &str,
    print_plan: bool,
) -> Result<Option<f64>> {
    db.batch_execute("BEGIN").await?;
    let rows = db.query(sql, &[]).await;
    db.batch_execute("ROLLBACK").await?;
    let lines: Vec<String> = rows?.iter().map(|r| r.get(0)).collect();
    let time = |key: &str| {
        lines.iter().find_map(|l| {
            l.trim()
                .strip_prefix(key)?
                .trim()
                .strip_suffix("ms")?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    let exec = time("Execution Time:");
    println!(
        "[{phase}] EXPLAIN ANALYZE {label} (rolled back): planning {:.3} ms, execution {:.3} ms",
        time("Planning Time:").unwrap_or(f64::NAN),
        exec.unwrap_or(f64::NAN)
    );
    if print_plan {
        for l in &lines {
            println!("      {l}");
        }
    }
    Ok(exec)
}

// ---------------------------------------------------------------- summary

fn summary(
    nproc: usize,
    receiver: &str,
    a: &BurnDownA,
    b: &Latency,
    hwm_ab: Option<u64>,
    c: &Backlog,
    pg_problems: &[String],
) {
    let opt = |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v:.0}{unit}"));
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
    let cpu = |u: &Usage| {
        format!(
            "CPU-s over {:.1} s: daemon {:.2}, postgres {:.2}, receiver {:.2}, bench {:.2}, other work on the machine {:.2} (machine busy {:.1} of {:.1})",
            u.wall.as_secs_f64(),
            u.daemon,
            u.postgres,
            u.receiver,
            u.bench,
            u.other(),
            u.machine,
            u.wall.as_secs_f64() * nproc as f64
        )
    };
    let top_pg = |u: &Usage| {
        u.postgres_by_kind
            .iter()
            .take(3)
            .map(|(k, s)| format!("{k} {s:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let per_delivery = |u: &Usage, n: usize| {
        let n = n.max(1) as f64;
        format!(
            "per delivery: daemon {:.0} µs, postgres {:.0} µs, receiver {:.0} µs CPU; {:.1} KiB WAL",
            u.daemon / n * 1e6,
            u.postgres / n * 1e6,
            u.receiver / n * 1e6,
            u.wal_bytes / n / 1024.0
        )
    };
    let busiest = |u: &Usage| {
        u.statements
            .first()
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
            .map(|s| s.chars().take(150).collect::<String>())
            .unwrap_or_else(|| "-".into())
    };
    let burn = |x: &BurnDown| {
        format!(
            "{:.0} deliveries/s from daemon start ({} rows in {:.2} s), {} first → last arrival, startup {}",
            x.rate(),
            x.rows,
            x.total.as_secs_f64(),
            opt(x.rate_excl_startup(), " deliveries/s"),
            opt(x.startup_secs.map(|s| s * 1e3), " ms"),
        )
    };
    println!("\n==================== summary ====================");
    println!("machine: nproc {nproc}; PostgreSQL durable (fsync, synchronous_commit, full_page_writes on; pg_stat_statements, auto_explain > 250 ms, lock waits > 100 ms logged); receiver: {receiver}");
    println!("daemon: separate process (`plausible-webhooks run`, release build), configured by environment, defaults otherwise; webhook max_concurrency 1000, no rate limit; payloads ~{:.0} B", a.burn.payload_bytes);
    println!("(a) burn-down: {}", burn(&a.burn));
    println!("    {}", cpu(&a.burn.cpu));
    println!("    postgres CPU by process: {}", top_pg(&a.burn.cpu));
    println!("    {}", per_delivery(&a.burn.cpu, a.burn.rows));
    println!("    busiest statement: {}", busiest(&a.burn.cpu));
    println!(
        "    one claim of 1000 (EXPLAIN ANALYZE, 50,000 due, no backlog): {}",
        ms(a.claim_ms)
    );
    println!(
        "(b) latency, {} single-row INSERTs at {LATENCY_RATE}/s ({:.1} s), {} matched by webhook-id:",
        b.sent, b.issue_secs, b.matched
    );
    println!(
        "    insert start → arrival (commit included): {}",
        b.end_to_end
    );
    println!("    INSERT round trip (commit) alone:         {}", b.commit);
    println!(
        "    INSERT returned → arrival:                {}",
        b.after_commit
    );
    println!("    {}", cpu(&b.cpu));
    println!("    postgres CPU by process: {}", top_pg(&b.cpu));
    println!(
        "    {} (the INSERTs included)",
        per_delivery(&b.cpu, b.sent)
    );
    for l in b.cpu.log.iter().filter(|l| {
        l.starts_with("lock waits")
            || l.trim_start().starts_with("held by")
            || l.contains("acquired in the end")
    }) {
        println!("    {}", l.trim_start());
    }
    println!("(c) daemon VmHWM after (a)+(b): {}", mib(hwm_ab));
    println!(
        "    {BACKLOG_ROWS} not-due rows: inserted in {:.1} s, VACUUM ANALYZE {:.1} s, table with indexes {}",
        c.insert.as_secs_f64(),
        c.vacuum.as_secs_f64(),
        c.table_size
    );
    println!(
        "    fresh daemon idle {} s at the 1M backlog: VmHWM {}",
        IDLE_WITH_BACKLOG.as_secs(),
        mib(c.hwm_idle_kib)
    );
    println!(
        "    claim of ≤ 1000 at the 1M backlog: {} with nothing due, {} with 50,000 due; next-due query {}",
        ms(c.claim_idle_ms),
        ms(c.claim_due_ms),
        ms(c.next_due_ms)
    );
    println!(
        "    burn-down of 50,000 due on the 1M backlog: {}",
        burn(&c.burn)
    );
    println!("    VmHWM after it: {}", mib(c.hwm_burn_kib));
    println!("    {}", cpu(&c.burn.cpu));
    println!("    postgres CPU by process: {}", top_pg(&c.burn.cpu));
    println!("    {}", per_delivery(&c.burn.cpu, c.burn.rows));
    println!("    busiest statement: {}", busiest(&c.burn.cpu));
    println!(
        "targets: burn-down ≥ {TARGET_RATE:.0} deliveries/s; p99 ≤ {TARGET_P99_MS} ms at {LATENCY_RATE}/s; RSS ≤ {TARGET_RSS_MIB} MiB at 1M backlog"
    );
    if !pg_problems.is_empty() {
        println!(
            "PostgreSQL server.log ERROR/FATAL lines ({}):",
            pg_problems.len()
        );
        for l in pg_problems.iter().take(20) {
            println!("    {l}");
        }
    }
    println!("=================================================");
}

#[derive(Default)]
struct Stats {
    n: usize,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

impl Stats {
    fn of(mut v: Vec<f64>) -> Stats {
        if v.is_empty() {
            return Stats::default();
        }
        v.sort_by(f64::total_cmp);
        let pct = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Stats {
            n: v.len(),
            p50: pct(0.50),
            p95: pct(0.95),
            p99: pct(0.99),
            max: v[v.len() - 1],
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n {})",
            self.p50, self.p95, self.p99, self.max, self.n
        )
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("unknown".into(), |k| {
        format!("{:.1} MiB", k as f64 / 1024.0)
    })
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

// ---------------------------------------------------------------- the daemon process

/// `plausible-webhooks run` as a child process, configured by environment only.
struct DaemonProc {
    n: u32,
    child: Child,
    stderr: PathBuf,
    spawned: SystemTime,
    spawned_at: Instant,
}

impl DaemonProc {
    fn spawn(n: u32, url: &str, ca_file: &Path, dir: &Path) -> Result<DaemonProc> {
        // An empty config file, so a /etc/plausible-webhooks/config.toml on this
        // machine cannot change what is measured: every key comes from below.
        let config = dir.join("empty-config.toml");
        std::fs::write(&config, "")?;
        let stdout = dir.join(format!("daemon-{n}.stdout"));
        let stderr = dir.join(format!("daemon-{n}.stderr"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_plausible-webhooks"));
        cmd.arg("run");
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("PLAUSIBLE_WEBHOOKS") || k == "DATABASE_URL" || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.env("PLAUSIBLE_WEBHOOKS_CONFIG", &config)
            .env("DATABASE_URL", url)
            .env(
                "PLAUSIBLE_WEBHOOKS__DELIVERY__ALLOW_CIDRS",
                r#"["127.0.0.0/8"]"#,
            )
            .env("PLAUSIBLE_WEBHOOKS__DELIVERY__EXTRA_CA_FILE", ca_file)
            .env("PLAUSIBLE_WEBHOOKS__LOG__LEVEL", "warn");
        // Tuning experiments: BENCH_PLAUSIBLE_WEBHOOKS__<SECTION>__<KEY> is
        // passed to the daemon as PLAUSIBLE_WEBHOOKS__<SECTION>__<KEY>.
        for (k, v) in std::env::vars() {
            if let Some(rest) = k.strip_prefix("BENCH_PLAUSIBLE_WEBHOOKS__") {
                println!("[daemon #{n}] PLAUSIBLE_WEBHOOKS__{rest}={v}");
                cmd.env(format!("PLAUSIBLE_WEBHOOKS__{rest}"), v);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout)?)
            .stderr(std::fs::File::create(&stderr)?);
        let spawned = SystemTime::now();
        let spawned_at = Instant::now();
        let child = cmd.spawn().context("starting the daemon binary")?;
        println!(
            "[daemon #{n}] started pid {} ({} run)",
            child.id(),
            env!("CARGO_BIN_EXE_plausible-webhooks")
        );
        Ok(DaemonProc {
            n,
            child,
            stderr,
            spawned,
            spawned_at,
        })
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn stderr_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.stderr)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "daemon #{} exited early ({status}); stderr:\n{}",
                self.n,
                self.stderr_lines().join("\n")
            );
        }
        Ok(())
    }

    fn vm_hwm_kib(&self) -> Option<u64> {
        vm_hwm_kib(self.pid())
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 60 s); prints how it
    /// ended and its stderr.
    async fn stop(mut self) -> Result<()> {
        let t = Instant::now();
        signal(self.pid(), libc::SIGTERM);
        let status = match wait_child(&mut self.child, Duration::from_secs(60)).await? {
            Some(s) => s,
            None => {
                println!(
                    "[daemon #{}] still running 60 s after SIGTERM: SIGKILL",
                    self.n
                );
                self.child.kill()?;
                self.child.wait()?
            }
        };
        println!(
            "[daemon #{}] stopped by SIGTERM: {status} after {:.2?}",
            self.n,
            t.elapsed()
        );
        let lines = self.stderr_lines();
        if lines.is_empty() {
            println!("[daemon #{}] stderr: empty (log level warn)", self.n);
        } else {
            println!(
                "[daemon #{}] stderr ({} lines, log level warn; first 30):",
                self.n,
                lines.len()
            );
            for l in lines.iter().take(30) {
                println!("    {l}");
            }
        }
        Ok(())
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn wait_child(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) on a pid of a child we started and have not reaped.
    unsafe {
        libc::kill(pid, sig);
    }
}

// ---------------------------------------------------------------- the receiver

/// One request as the receiver logged it.
struct Arrival {
    /// Unix seconds.
    at: f64,
    /// The `webhook-id` header.
    id: String,
}

enum Sink {
    Nginx(Nginx),
    InProcess { receiver: Receiver, seen: usize },
}

impl Sink {
    /// nginx when it is installed or can be installed; else the in-process receiver.
    async fn start(tls: &TestTls) -> Result<Sink> {
        match ensure_nginx() {
            Some(bin) => match Nginx::start(bin, tls).await {
                Ok(n) => return Ok(Sink::Nginx(n)),
                Err(e) => println!("[setup] nginx would not start ({e:#}); falling back"),
            },
            None => println!("[setup] nginx is not available; falling back"),
        }
        println!("[setup] RECEIVER: in-process testkit::receiver::Receiver answering 200 (its CPU counts as the bench's)");
        Ok(Sink::InProcess {
            receiver: Receiver::start(tls, always(200)).await?,
            seen: 0,
        })
    }

    fn describe(&self) -> String {
        match self {
            Sink::Nginx(n) => format!("nginx {} (1 worker, HTTP/2 by ALPN, return 200)", n.version),
            Sink::InProcess { .. } => {
                "in-process testkit Receiver (rustls + hyper), always(200)".into()
            }
        }
    }

    fn url(&self) -> String {
        match self {
            Sink::Nginx(n) => format!("https://127.0.0.1:{}/webhook", n.port),
            Sink::InProcess { receiver, .. } => receiver.url("/webhook"),
        }
    }

    /// The nginx master's pid (its worker is counted as its child).
    fn pid(&self) -> Option<i32> {
        match self {
            Sink::Nginx(n) => n.child.as_ref().map(|c| c.id() as i32),
            Sink::InProcess { .. } => None,
        }
    }

    /// Every request since the last call. nginx is stopped with SIGQUIT first,
    /// so its buffered access log is complete, and started again if `restart`.
    async fn arrivals(&mut self, restart: bool) -> Result<Vec<Arrival>> {
        match self {
            Sink::Nginx(n) => {
                let log = n.stop().await?;
                let text = std::fs::read_to_string(&log)
                    .with_context(|| format!("reading {}", log.display()))?;
                let mut out = Vec::new();
                let mut protocols: HashMap<String, usize> = HashMap::new();
                for line in text.lines() {
                    let mut f = line.split(' ');
                    let (Some(at), Some(id)) = (f.next(), f.next()) else {
                        continue;
                    };
                    let proto = format!("{} {}", f.next().unwrap_or("?"), f.next().unwrap_or("?"));
                    *protocols.entry(proto).or_default() += 1;
                    if let Ok(at) = at.parse::<f64>() {
                        out.push(Arrival {
                            at,
                            id: id.to_string(),
                        });
                    }
                }
                let mut protocols: Vec<_> = protocols.into_iter().collect();
                protocols.sort();
                println!(
                    "[nginx] stopped with SIGQUIT; access log: {} lines ({})",
                    out.len(),
                    protocols
                        .iter()
                        .map(|(p, c)| format!("{p}: {c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                if restart {
                    n.launch().await?;
                }
                Ok(out)
            }
            Sink::InProcess { receiver, seen } => {
                let all = receiver.requests();
                let new = all[*seen..]
                    .iter()
                    .map(|r| Arrival {
                        at: unix_secs(r.at),
                        id: r.header("webhook-id").unwrap_or("").to_string(),
                    })
                    .collect();
                *seen = all.len();
                Ok(new)
            }
        }
    }

    async fn stop(&mut self) {
        match self {
            Sink::Nginx(n) => {
                if n.child.is_some() {
                    let _ = n.stop().await;
                }
                let errors =
                    std::fs::read_to_string(n.dir.path().join("error.log")).unwrap_or_default();
                let lines: Vec<&str> = errors.lines().collect();
                println!("[nginx] error.log: {} lines", lines.len());
                for l in lines.iter().take(10) {
                    println!("    {l}");
                }
            }
            Sink::InProcess { receiver, .. } => receiver.shutdown(),
        }
    }
}

/// /usr/sbin/nginx, installed with apt-get if it is missing.
fn ensure_nginx() -> Option<PathBuf> {
    let bin = PathBuf::from("/usr/sbin/nginx");
    if bin.exists() {
        return Some(bin);
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "nginx"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
    };
    println!("[setup] /usr/sbin/nginx is missing: running `apt-get install -y nginx`...");
    let mut out = install();
    if !matches!(&out, Ok(o) if o.status.success()) {
        println!("[setup] apt-get install failed; running `apt-get update` and trying again...");
        let _ = Command::new("apt-get").arg("update").output();
        out = install();
    }
    match out {
        Ok(o) if o.status.success() && bin.exists() => {
            println!("[setup] nginx installed");
            Some(bin)
        }
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stderr);
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            println!("[setup] apt-get install nginx failed: {}", tail.join(" | "));
            None
        }
        Err(e) => {
            println!("[setup] could not run apt-get: {e}");
            None
        }
    }
}

/// nginx from a temp dir: one worker, in the foreground as our child.
struct Nginx {
    bin: PathBuf,
    version: String,
    dir: tempfile::TempDir,
    port: u16,
    cert: PathBuf,
    key: PathBuf,
    child: Option<Child>,
    /// Each launch writes its own access log.
    launches: u32,
}

impl Nginx {
    async fn start(bin: PathBuf, tls: &TestTls) -> Result<Nginx> {
        let out = Command::new(&bin).arg("-v").output()?;
        let version = String::from_utf8_lossy(&out.stderr)
            .trim()
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string();
        let dir = tempfile::Builder::new().prefix("bench-nginx-").tempdir()?;
        // nginx's worker runs as an unprivileged user when we are root.
        std::fs::set_permissions(
            dir.path(),
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut n = Nginx {
            bin,
            version,
            dir,
            port,
            cert: tls.cert_file.clone(),
            key: tls.key_file.clone(),
            child: None,
            launches: 0,
        };
        n.launch().await?;
        Ok(n)
    }

    /// `listen ... ssl http2;` before 1.25.1, `http2 on;` from then on.
    fn http2_on_directive(&self) -> bool {
        let v: Vec<u32> = self
            .version
            .split('.')
            .map(|p| p.parse().unwrap_or(0))
            .collect();
        v >= vec![1, 25, 1]
    }

    fn access_log(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("access-{}.log", self.launches))
    }

    async fn launch(&mut self) -> Result<()> {
        self.launches += 1;
        let d = self.dir.path().display();
        let (listen, http2) = if self.http2_on_directive() {
            ("ssl", "http2 on;")
        } else {
            ("ssl http2", "")
        };
        let conf = format!(
            "worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    log_format webhook '$msec $http_webhook_id $server_protocol $status';
    server {{
        listen 127.0.0.1:{port} {listen};
        {http2}
        ssl_certificate {cert};
        ssl_certificate_key {key};
        keepalive_requests 1000000;
        keepalive_timeout 300s;
        access_log {log} webhook buffer=256k flush=1s;
        location / {{ return 200 \"ok\"; }}
    }}
}}
",
            port = self.port,
            cert = self.cert.display(),
            key = self.key.display(),
            log = self.access_log().display(),
        );
        let conf_path = self.dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new(&self.bin)
            .arg("-p")
            .arg(self.dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(self.dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("stderr.log"))?)
            .spawn()
            .context("starting nginx")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.as_mut().expect("just set").try_wait()? {
                self.child = None;
                bail!(
                    "nginx exited ({s}): {}{}",
                    std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default(),
                    std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "nginx did not listen on 127.0.0.1:{} within 10 s",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Graceful stop (SIGQUIT: the worker flushes its log buffer and finishes
    /// open requests); returns the complete access log of this launch.
    async fn stop(&mut self) -> Result<PathBuf> {
        let Some(mut child) = self.child.take() else {
            bail!("nginx is not running");
        };
        signal(child.id() as i32, libc::SIGQUIT);
        if wait_child(&mut child, Duration::from_secs(30))
            .await?
            .is_none()
        {
            println!("[nginx] still running 30 s after SIGQUIT: SIGKILL");
            child.kill()?;
            child.wait()?;
        }
        Ok(self.access_log())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id() as i32, libc::SIGTERM);
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------- CPU and PostgreSQL per phase

/// What one phase cost: CPU seconds (user + system) of each party,
/// PostgreSQL's split by kind of process, its busiest statements and the
/// autovacuum runs on the queue table.
struct Usage {
    wall: Duration,
    daemon: f64,
    /// The postmaster and all its processes, those that exited during the
    /// phase included (they are in the postmaster's cutime/cstime).
    postgres: f64,
    /// nginx master and worker; the in-process receiver counts under `bench`.
    receiver: f64,
    bench: f64,
    /// Non-idle CPU time of the whole machine, other people's work included.
    machine: f64,
    postgres_by_kind: Vec<(String, f64)>,
    statements: Vec<String>,
    autovacuums: i64,
    autoanalyzes: i64,
    /// server.log during the phase, summarised (see `summarize_log`).
    log: Vec<String>,
    /// WAL PostgreSQL wrote during the phase.
    wal_bytes: f64,
}

impl Usage {
    fn other(&self) -> f64 {
        (self.machine - self.daemon - self.postgres - self.receiver - self.bench).max(0.0)
    }

    fn print(&self, label: &str, nproc: usize) {
        let w = self.wall.as_secs_f64();
        let pct = |v: f64| 100.0 * v / w;
        println!(
            "[{label}] CPU-seconds over {w:.2} s: daemon {:.2} ({:.0}% of a core), postgres {:.2} ({:.0}%), receiver {:.2} ({:.0}%), bench {:.2}, \
             other work on this machine {:.2}; machine busy {:.2} of {:.2}",
            self.daemon,
            pct(self.daemon),
            self.postgres,
            pct(self.postgres),
            self.receiver,
            pct(self.receiver),
            self.bench,
            self.other(),
            self.machine,
            w * nproc as f64
        );
        println!(
            "[{label}]   postgres by process: {}",
            self.postgres_by_kind
                .iter()
                .filter(|(_, s)| *s >= 0.005)
                .map(|(k, s)| format!("{k} {s:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "[{label}]   WAL written: {:.1} MiB; autovacuum on webhook_deliveries during the phase: {} vacuum(s), {} analyze(s)",
            self.wal_bytes / 1048576.0,
            self.autovacuums,
            self.autoanalyzes
        );
        if !self.statements.is_empty() {
            println!("[{label}]   busiest statements (pg_stat_statements, executor time):");
            for s in &self.statements {
                println!("        {s}");
            }
        }
        if !self.log.is_empty() {
            println!("[{label}]   PostgreSQL server.log during the phase (lock waits > 100 ms, statements > 250 ms with their plans, autovacuum, checkpoints, errors):");
            for l in &self.log {
                println!("        {}", l.chars().take(240).collect::<String>());
            }
        }
    }
}

/// Raw counters at one moment, in clock ticks.
struct Snapshot {
    daemon: u64,
    /// utime + stime of every live PostgreSQL process.
    pg_own: HashMap<i32, u64>,
    /// The postmaster's cutime + cstime.
    pg_reaped: u64,
    receiver: u64,
    bench: u64,
    machine: f64,
}

struct Phase {
    started: Instant,
    before: Snapshot,
    vacuum_before: (i64, i64),
    log_offset: usize,
    wal_lsn: String,
}

impl Phase {
    /// `daemon`: its pid if it is running already.
    async fn begin(bench: &Bench, daemon: Option<i32>) -> Result<Phase> {
        if bench.statements {
            bench
                .db
                .batch_execute("SELECT pg_stat_statements_reset()")
                .await?;
        }
        Ok(Phase {
            wal_lsn: bench
                .db
                .query_one("SELECT pg_current_wal_lsn()::text", &[])
                .await?
                .get(0),
            log_offset: bench.server_log().len(),
            vacuum_before: bench.vacuum_counts().await?,
            before: bench.snapshot(daemon),
            started: Instant::now(),
        })
    }

    async fn end(self, bench: &Bench, daemon: Option<i32>) -> Result<Usage> {
        let wall = self.started.elapsed();
        let after = bench.snapshot(daemon);
        let wal_bytes: f64 = bench
            .db
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::float8",
                &[&self.wal_lsn],
            )
            .await?
            .get(0);
        let before = &self.before;
        let (av, aa) = bench.vacuum_counts().await?;
        let kinds = bench.backend_kinds().await?;
        let postmaster = bench.postmaster_pid();
        let tck = clk_tck();

        let mut by_kind: HashMap<String, u64> = HashMap::new();
        for (pid, own) in &after.pg_own {
            let d = own.saturating_sub(before.pg_own.get(pid).copied().unwrap_or(0));
            let kind = kinds.get(pid).cloned().unwrap_or_else(|| {
                if *pid == postmaster {
                    "postmaster".into()
                } else {
                    proc_title(*pid)
                }
            });
            *by_kind.entry(kind).or_default() += d;
        }
        let gone: u64 = before
            .pg_own
            .iter()
            .filter(|(pid, _)| !after.pg_own.contains_key(pid))
            .map(|(_, t)| t)
            .sum();
        let exited = after
            .pg_reaped
            .saturating_sub(before.pg_reaped)
            .saturating_sub(gone);
        *by_kind
            .entry("exited during the phase (autovacuum workers, closed connections)".into())
            .or_default() += exited;
        let postgres = by_kind.values().sum::<u64>() as f64 / tck;
        let mut postgres_by_kind: Vec<(String, f64)> = by_kind
            .into_iter()
            .map(|(k, t)| (k, t as f64 / tck))
            .collect();
        postgres_by_kind.sort_by(|a, b| b.1.total_cmp(&a.1));

        Ok(Usage {
            wall,
            daemon: after.daemon.saturating_sub(before.daemon) as f64 / tck,
            postgres,
            receiver: after.receiver.saturating_sub(before.receiver) as f64 / tck,
            bench: after.bench.saturating_sub(before.bench) as f64 / tck,
            machine: after.machine - before.machine,
            postgres_by_kind,
            statements: bench.top_statements().await?,
            autovacuums: av - self.vacuum_before.0,
            autoanalyzes: aa - self.vacuum_before.1,
            log: summarize_log(
                bench.server_log().get(self.log_offset..).unwrap_or(""),
                &kinds,
            ),
            wal_bytes,
        })
    }
}

impl Bench {
    /// PostgreSQL's log (PgCluster starts the server with `-l <root>/server.log`).
    fn server_log(&self) -> String {
        self.cluster
            .data_dir()
            .parent()
            .and_then(|root| std::fs::read_to_string(root.join("server.log")).ok())
            .unwrap_or_default()
    }

    fn snapshot(&self, daemon: Option<i32>) -> Snapshot {
        let procs = all_procs();
        let postmaster = self.postmaster_pid();
        let pg_own = descendants(&procs, postmaster)
            .into_iter()
            .map(|p| (p.pid, p.own))
            .collect();
        Snapshot {
            daemon: daemon.map_or(0, |p| tree_ticks(&procs, p)),
            pg_own,
            pg_reaped: procs
                .iter()
                .find(|p| p.pid == postmaster)
                .map_or(0, |p| p.reaped),
            receiver: self.sink.pid().map_or(0, |p| tree_ticks(&procs, p)),
            bench: procs
                .iter()
                .find(|p| p.pid == std::process::id() as i32)
                .map_or(0, |p| p.own),
            machine: machine_busy_secs(),
        }
    }

    /// PostgreSQL's pid → "connection: <application_name>" or its backend type.
    async fn backend_kinds(&self) -> Result<HashMap<i32, String>> {
        let rows = self
            .db
            .query(
                "SELECT pid, CASE WHEN backend_type = 'client backend'
                                  THEN 'connections of ' || coalesce(nullif(application_name, ''), '?')
                                  ELSE backend_type END
                 FROM pg_stat_activity",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn vacuum_counts(&self) -> Result<(i64, i64)> {
        let r = self
            .db
            .query_one(
                "SELECT autovacuum_count, autoanalyze_count FROM pg_stat_user_tables
                 WHERE relname = 'webhook_deliveries'",
                &[],
            )
            .await?;
        Ok((r.get(0), r.get(1)))
    }

    async fn top_statements(&self) -> Result<Vec<String>> {
        if !self.statements {
            return Ok(Vec::new());
        }
        let rows = self
            .db
            .query(
                "SELECT calls, total_exec_time, rows, regexp_replace(query, '\\s+', ' ', 'g')
                 FROM pg_stat_statements
                 WHERE query NOT LIKE '%pg_stat_statements%'
                 ORDER BY total_exec_time DESC LIMIT 6",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let (calls, total, n): (i64, f64, i64) = (r.get(0), r.get(1), r.get(2));
                let q: String = r.get(3);
                format!(
                    "{total:>8.0} ms {calls:>7} calls {:>8.3} ms each {n:>8} rows  {}",
                    total / calls.max(1) as f64,
                    q.chars().take(100).collect::<String>()
                )
            })
            .collect())
    }
}

/// The server.log lines of one phase, summarised: lock waits grouped by lock
/// with the kinds of process holding it, the first plan auto_explain logged
/// (statements over 250 ms), autovacuum runs, checkpoints and errors.
fn summarize_log(text: &str, kinds: &HashMap<i32, String>) -> Vec<String> {
    // lock → (waits, first, last)
    let mut waits: Vec<(String, usize, String, String)> = Vec::new();
    let mut holders: HashMap<String, usize> = HashMap::new();
    let (mut acquired, mut longest_wait_ms) = (0usize, 0f64);
    let (mut plan, mut plans, mut in_plan) = (Vec::new(), 0usize, false);
    let mut other = Vec::new();
    for line in text.lines() {
        if line.starts_with(char::is_whitespace) {
            let l = line.trim();
            let planish = ["cost=", "Cond:", "Filter:", "Query Text:"]
                .iter()
                .any(|k| l.contains(k));
            if in_plan && planish && plan.len() < 30 {
                plan.push(format!("  {l}"));
            }
            continue;
        }
        in_plan = false;
        let time = line.get(11..23).unwrap_or("").to_string();
        if let Some(i) = line.find("still waiting for ") {
            let what = line[i + 18..]
                .split(" after ")
                .next()
                .unwrap_or("")
                .to_string();
            match waits.iter_mut().find(|w| w.0 == what) {
                Some(w) => {
                    w.1 += 1;
                    w.3 = time;
                }
                None => waits.push((what, 1, time.clone(), time)),
            }
        } else if let Some(i) = line.find("holding the lock: ") {
            let pids = line[i + 18..].split('.').next().unwrap_or("");
            for pid in pids.split(',').filter_map(|p| p.trim().parse::<i32>().ok()) {
                let kind = kinds
                    .get(&pid)
                    .cloned()
                    .unwrap_or_else(|| "a process gone by the phase's end".into());
                *holders.entry(format!("{kind} (pid {pid})")).or_default() += 1;
            }
        } else if line.contains(" acquired ") && line.contains(" after ") {
            acquired += 1;
            let ms = line
                .rsplit(" after ")
                .next()
                .and_then(|t| t.trim().strip_suffix("ms"))
                .and_then(|t| t.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            longest_wait_ms = longest_wait_ms.max(ms);
        } else if line.contains("duration: ") && line.contains(" plan:") {
            plans += 1;
            if plan.is_empty() {
                in_plan = true;
                plan.push(format!(
                    "auto_explain: {}",
                    &line[line.find("duration: ").unwrap_or(0)..]
                ));
            }
        } else if [
            "automatic vacuum",
            "automatic analyze",
            "checkpoint starting",
            "checkpoint complete",
            "ERROR",
            "FATAL",
            "PANIC",
        ]
        .iter()
        .any(|k| line.contains(k))
        {
            other.push(line.to_string());
        }
    }
    let mut out = Vec::new();
    for (what, n, first, last) in &waits {
        out.push(format!(
            "lock waits > 100 ms: {n} for {what}, {first} – {last} UTC"
        ));
    }
    if acquired > 0 {
        out.push(format!(
            "  ... acquired in the end ({acquired} logged), longest wait {longest_wait_ms:.0} ms"
        ));
    }
    if !holders.is_empty() {
        let mut h: Vec<_> = holders.into_iter().collect();
        h.sort_by_key(|x| std::cmp::Reverse(x.1));
        out.push(format!(
            "  held by: {}",
            h.iter()
                .take(6)
                .map(|(k, n)| format!("{k} ×{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if plans > 0 {
        out.push(format!(
            "{plans} statement(s) over 250 ms; the first one's plan:"
        ));
        out.extend(plan);
    }
    let n_other = other.len();
    out.extend(other.into_iter().take(10));
    if n_other > 10 {
        out.push(format!(
            "... {} more autovacuum/checkpoint/error lines",
            n_other - 10
        ));
    }
    out
}

// ---------------------------------------------------------------- /proc

struct ProcStat {
    pid: i32,
    ppid: i32,
    /// utime + stime, in clock ticks.
    own: u64,
    /// cutime + cstime: reaped children's (and their reaped children's) time.
    reaped: u64,
}

fn read_stat(pid: i32) -> Option<ProcStat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // rest[0] is field 3 (state): ppid is field 4, utime..cstime fields 14..17.
    let num = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    Some(ProcStat {
        pid,
        ppid: num(4)? as i32,
        own: num(14)? + num(15)?,
        reaped: num(16)? + num(17)?,
    })
}

fn all_procs() -> Vec<ProcStat> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .collect()
}

/// `root` and its live descendants.
fn descendants(procs: &[ProcStat], root: i32) -> Vec<&ProcStat> {
    let mut out = Vec::new();
    if root <= 0 {
        return out;
    }
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for p in procs {
            if p.pid == pid {
                out.push(p);
            }
            if p.ppid == pid {
                stack.push(p.pid);
            }
        }
    }
    out
}

/// Clock ticks of `root` and its descendants, live and reaped.
fn tree_ticks(procs: &[ProcStat], root: i32) -> u64 {
    descendants(procs, root)
        .iter()
        .map(|p| p.own + p.reaped)
        .sum()
}

/// "postgres: walwriter" and the like.
fn proc_title(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("pid {pid}"))
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Non-idle time of all CPUs, from the first line of /proc/stat.
fn machine_busy_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = f
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 3 | 4) && *i < 8)
        .map(|(_, v)| v)
        .sum();
    busy as f64 / clk_tck()
}

fn vm_hwm_kib(pid: i32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}
