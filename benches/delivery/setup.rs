//! The durable throwaway PostgreSQL with its diagnostics, the receiver, and
//! the webhook every phase enqueues for.

use std::time::Instant;

use anyhow::{bail, Result};
use plausible_webhooks::testkit::pg::{PgCluster, PgOptions};
use plausible_webhooks::testkit::receiver::TestTls;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::daemon::DaemonProc;
use crate::queries::{
    payload_sql, OPEN_COUNT_SQL, OPEN_COUNT_SQL_BEFORE_20, OPEN_SQL, OPEN_SQL_BEFORE_20,
};
use crate::receiver::Sink;
use crate::{DRAIN_TIMEOUT, POLL, SECRET};

pub struct Bench {
    pub nproc: usize,
    pub cluster: PgCluster,
    /// The daemon's database URL (its connections are named plausible-webhooks).
    pub url: String,
    /// The same database, for the bench's own connections (application_name bench).
    pub bench_url: String,
    pub db: Client,
    /// pg_stat_statements is loaded: each phase prints its busiest statements.
    pub statements: bool,
    pub tls: TestTls,
    pub sink: Sink,
    pub webhook: Uuid,
    /// Daemon logs and the (empty) config file.
    pub dir: tempfile::TempDir,
    pub daemons_started: u32,
    /// The schema has the ready and lease rows (sql/0020): which statements
    /// ask whether deliveries are open.
    pub ready_rows: bool,
}

impl Bench {
    pub async fn setup(nproc: usize) -> Result<Bench> {
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
            // Another commit's daemon (BENCH_DAEMON_BIN) runs on its own schema.
            if std::env::var_os("BENCH_DAEMON_BIN").is_some() {
                let empty = tempfile::NamedTempFile::new()?;
                let out = std::process::Command::new(crate::daemon::daemon_binary())
                    .arg("migrate")
                    .env("PLAUSIBLE_WEBHOOKS_CONFIG", empty.path())
                    .env("DATABASE_URL", &url)
                    .output()?;
                anyhow::ensure!(
                    out.status.success(),
                    "BENCH_DAEMON_BIN migrate failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            } else {
                plausible_webhooks::db::migrate::migrate(&mut c).await?;
            }
        }
        let bench_url = format!("{url}?application_name=bench");
        let db = plausible_webhooks::db::connect(&bench_url).await?;
        // The EXPLAINs below are of the daemon's statements, planned as its
        // sessions plan them: without JIT (src/db/mod.rs, pool_from). With JIT
        // the claim at the 1M backlog measured 2.8 s, nearly all compiling.
        db.batch_execute("SET jit = off").await?;
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
        // Unlimited by default: the daemon's default concurrency (1000, see
        // daemon.rs) lets it take every slot, and the claim stays on the
        // single-statement path. BENCH_LIMITED=1 gives the webhook its own
        // max_concurrency of 1000 instead: a limit that holds across
        // instances, claimed through src/queue/limits.rs.
        let limited = std::env::var_os("BENCH_LIMITED").is_some();
        let own_limit: Option<i32> = limited.then_some(1000);
        let webhook: Uuid = db
            .query_one(
                "INSERT INTO webhooks (site_id, name, url, secret, max_concurrency)
                 VALUES ($1, 'bench', $2, $3, $4) RETURNING id",
                &[&site_id, &sink.url(), &SECRET, &own_limit],
            )
            .await?
            .get(0);
        db.execute(
            "INSERT INTO webhook_triggers (webhook_id, trigger_type) VALUES ($1, 'goal_completion')",
            &[&webhook],
        )
        .await?;
        println!(
            "[setup] webhook {webhook}: {}, no rate limit",
            if limited {
                "its own max_concurrency 1000 (BENCH_LIMITED: the deployment-wide limited claim)"
            } else {
                "no limits of its own (the daemon's default max_concurrency 1000: the unlimited claim)"
            }
        );
        let ready_rows: bool = db
            .query_one(
                "SELECT to_regclass('webhook_deliveries_ready') IS NOT NULL",
                &[],
            )
            .await?
            .get(0);
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
            ready_rows,
        })
    }

    pub fn postmaster_pid(&self) -> i32 {
        std::fs::read_to_string(self.cluster.data_dir().join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn spawn_daemon(&mut self) -> Result<DaemonProc> {
        self.daemons_started += 1;
        DaemonProc::spawn(
            self.daemons_started,
            &self.url,
            &self.tls.ca_file,
            self.dir.path(),
        )
    }

    pub async fn any_open(&self) -> Result<bool> {
        let sql = if self.ready_rows {
            OPEN_SQL
        } else {
            OPEN_SQL_BEFORE_20
        };
        Ok(self.db.query_one(sql, &[]).await?.get(0))
    }

    /// Polls every 50 ms until no delivery is open; returns when that was seen.
    pub async fn wait_drained(&self, daemon: &mut DaemonProc) -> Result<Instant> {
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
                        .query_one(
                            if self.ready_rows {
                                OPEN_COUNT_SQL
                            } else {
                                OPEN_COUNT_SQL_BEFORE_20
                            },
                            &[]
                        )
                        .await?
                        .get::<_, i64>(0)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Enqueues `n` due deliveries in one INSERT ... SELECT generate_series.
    pub async fn enqueue_due(&self, n: i32) -> Result<Vec<Uuid>> {
        let sql = format!(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, payload)
             SELECT $1, 'goal_completion', {} FROM generate_series(1, $2::int) g
             RETURNING id",
            payload_sql("g")
        );
        let rows = self.db.query(&sql, &[&self.webhook, &n]).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub async fn statuses(&self, ids: &[Uuid]) -> Result<String> {
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

    pub async fn avg_payload_bytes(&self, ids: &[Uuid]) -> Result<f64> {
        Ok(self
            .db
            .query_one(
                "SELECT avg(length(payload::text))::float8 FROM webhook_deliveries WHERE id = ANY($1)",
                &[&ids],
            )
            .await?
            .get(0))
    }

    pub fn cluster_log_problems(&self) -> Vec<String> {
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
pub async fn configure_diagnostics(cluster: PgCluster) -> Result<(PgCluster, bool)> {
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
