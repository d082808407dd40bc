//! Test harness: one throwaway PostgreSQL cluster shared by every test process
//! (started once, under a file lock), a fresh migrated database per test, and
//! real HTTPS receivers on loopback.
#![allow(dead_code)]

pub mod http;

use std::sync::Arc;
use std::time::Duration;

use plausible_webhooks::config::Config;
use plausible_webhooks::daemon::{Daemon, StartOptions};
use plausible_webhooks::testkit::pg::PgCluster;
use plausible_webhooks::testkit::receiver::{Behavior, Receiver, TestTls};
use uuid::Uuid;

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Takes a database back to the schema before migration 20 (the queue's
/// state in the wide row: its two partial indexes, the NOTIFY trigger, and
/// migration 9's attempt-deleting function, taken from migration 9 itself),
/// for tests of upgrades.
#[allow(dead_code)]
pub fn undo_migration_20() -> String {
    let m9 = include_str!("../../sql/0009_lean_hot_path.sql");
    let start = m9
        .find("CREATE FUNCTION plausible_webhooks_delete_attempts()")
        .expect("migration 9 defines the function");
    let end = start + m9[start..].find("$$;").expect("its body ends") + 3;
    let function = m9[start..end].replacen("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1);
    format!(
        "DROP TRIGGER webhook_deliveries_queue ON webhook_deliveries;
         DROP FUNCTION plausible_webhooks_queue_inserted();
         DROP TRIGGER webhook_deliveries_requeue ON webhook_deliveries;
         DROP FUNCTION plausible_webhooks_requeue_updated();
         DROP TRIGGER webhook_deliveries_refuse_old_claim ON webhook_deliveries;
         DROP FUNCTION plausible_webhooks_refuse_old_claim();
         DROP TABLE webhook_deliveries_ready, webhook_deliveries_leases;
         CREATE TRIGGER webhook_deliveries_notify AFTER INSERT ON webhook_deliveries
           FOR EACH STATEMENT EXECUTE FUNCTION plausible_webhooks_notify();
         CREATE INDEX webhook_deliveries_webhook_due_idx
           ON webhook_deliveries (webhook_id, next_attempt_at) WHERE status = 'pending';
         CREATE INDEX webhook_deliveries_webhook_lease_idx
           ON webhook_deliveries (webhook_id, locked_until) WHERE status = 'delivering';
         {function}
         DELETE FROM plausible_webhooks_schema_migrations WHERE version = 20;"
    )
}

pub struct Env {
    pub cluster: PgCluster,
    pub url: String,
    pub db: tokio_postgres::Client,
    pub tls: TestTls,
    pub site_id: i64,
}

impl Env {
    /// Points `compat.events_v2` (created with its schema when missing) at
    /// the analytics rows with `meta_key` as text instead of text[]: the
    /// columns check passes, the goal query with custom props is refused.
    pub async fn incompatible_view(&self) {
        incompatible_view_on(&self.db).await;
    }

    pub async fn new() -> Env {
        let cluster = tokio::task::spawn_blocking(PgCluster::shared)
            .await
            .unwrap()
            .expect("starting the shared test cluster");
        let name = format!("t_{}", Uuid::new_v4().simple());
        let url = cluster
            .create_migrated_database(&name)
            .await
            .expect("creating a test database");
        Self::on(cluster, url).await
    }

    /// An environment on a given cluster and migrated database.
    pub async fn on(cluster: PgCluster, url: String) -> Env {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
        let db = plausible_webhooks::db::connect(&url).await.unwrap();
        let site_id = plausible_webhooks::testkit::create_site(&db, "example.com")
            .await
            .unwrap();
        Env {
            cluster,
            url,
            db,
            tls: TestTls::new().unwrap(),
            site_id,
        }
    }

    /// The loopback config with short timings suited to tests.
    pub fn config(&self) -> Config {
        let mut c = plausible_webhooks::testkit::loopback_config(&self.url, &self.tls.ca_file);
        c.queue.poll_interval_ms = 1_000;
        c.queue.rescue_interval_ms = 500;
        c.delivery.retry_schedule_secs = vec![1, 1, 1];
        c.delivery.retry_jitter = 0.0;
        c.delivery.request_timeout_ms = 2_000;
        c.delivery.connect_timeout_ms = 1_000;
        c.delivery.lease_secs = 5;
        c.shutdown.grace_secs = 5;
        c
    }

    pub async fn receiver(&self, behavior: Behavior) -> Receiver {
        Receiver::start(&self.tls, behavior).await.unwrap()
    }

    pub async fn daemon(&self, cfg: Config) -> Daemon {
        self.daemon_with(cfg, StartOptions::default()).await
    }

    pub async fn daemon_with(&self, cfg: Config, opts: StartOptions) -> Daemon {
        let d = Daemon::start(cfg, opts).await.expect("starting the daemon");
        tokio::time::timeout(Duration::from_secs(20), d.wait_listening())
            .await
            .expect("listener connects")
            .unwrap();
        d
    }

    /// Creates a webhook (with a goal_completion trigger) for `url`.
    pub async fn webhook(&self, url: &str) -> Uuid {
        self.webhook_with(url, "{}").await
    }

    pub async fn webhook_with(&self, url: &str, headers_json: &str) -> Uuid {
        let headers: serde_json::Value = serde_json::from_str(headers_json).unwrap();
        let id: Uuid = self
            .db
            .query_one(
                "INSERT INTO webhooks (site_id, name, url, secret, headers) VALUES ($1, 'test', $2, $3, $4) RETURNING id",
                &[&self.site_id, &url, &SECRET, &headers],
            )
            .await
            .unwrap()
            .get(0);
        self.db
            .execute(
                "INSERT INTO webhook_triggers (webhook_id, trigger_type) VALUES ($1, 'goal_completion')",
                &[&id],
            )
            .await
            .unwrap();
        id
    }

    /// Enqueues `n` deliveries in one INSERT; returns their ids.
    pub async fn enqueue(&self, webhook: Uuid, n: i32) -> Vec<Uuid> {
        self.db
            .query(
                "INSERT INTO webhook_deliveries (webhook_id, event_type, payload)
                 SELECT $1, 'goal_completion', jsonb_build_object('n', g) FROM generate_series(1, $2) g
                 RETURNING id",
                &[&webhook, &n],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Waits until `sql` (returning one bool) is true; polls the database.
    pub async fn wait_until(&self, sql: &str, timeout: Duration) {
        Self::wait_until_on(&self.db, sql, timeout).await
    }

    /// Waits until `sql` (returning one bool) is true, on a given client.
    pub async fn wait_until_on(db: &tokio_postgres::Client, sql: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ok: bool = db
                .query_one(sql, &[])
                .await
                .map(|r| r.get(0))
                .unwrap_or(false);
            if ok {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let states = db
                    .query(
                        "SELECT status, attempts, coalesce(last_error, '') FROM webhook_deliveries",
                        &[],
                    )
                    .await
                    .map(|rows| {
                        rows.iter()
                            .map(|r| {
                                format!(
                                    "{}/{}/{}",
                                    r.get::<_, String>(0),
                                    r.get::<_, i32>(1),
                                    r.get::<_, String>(2)
                                )
                            })
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                panic!("timed out waiting for: {sql}\ndeliveries: {states:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn wait_all_final(&self, timeout: Duration) {
        self.wait_until(
            "SELECT count(*) > 0 AND bool_and(status IN ('success', 'failed')) FROM webhook_deliveries",
            timeout,
        )
        .await
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.db.query_one(sql, &[]).await.unwrap().get(0)
    }

    /// From now on, every row version an UPDATE of webhook_deliveries writes
    /// is counted in `SELECT n FROM row_updates` (what a claim or a
    /// completion costs the table, and what churn would cost it).
    pub async fn count_row_updates(&self) {
        self.db
            .batch_execute(
                "CREATE TABLE row_updates (n bigint NOT NULL);
                 INSERT INTO row_updates VALUES (0);
                 CREATE FUNCTION count_row_updates() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN UPDATE row_updates SET n = n + (SELECT count(*) FROM changed); RETURN NULL; END $$;
                 CREATE TRIGGER count_row_updates AFTER UPDATE ON webhook_deliveries
                   REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION count_row_updates();",
            )
            .await
            .unwrap();
    }
}

/// One analytics row: the events_v2 columns triggers read.
pub struct EventRow<'a> {
    pub site_id: i64,
    pub at: time::OffsetDateTime,
    pub name: &'a str,
    pub path: &'a str,
    pub user: i64,
    pub session: i64,
    pub source: &'a str,
    pub meta: &'a [(String, String)],
    pub scroll: Option<i16>,
}

/// Writes `rows` into the PostgreSQL analytics table events_v2, in one statement.
pub async fn insert_events(db: &tokio_postgres::Client, rows: &[EventRow<'_>]) {
    let site: Vec<i64> = rows.iter().map(|e| e.site_id).collect();
    let at: Vec<time::OffsetDateTime> = rows.iter().map(|e| e.at).collect();
    let name: Vec<&str> = rows.iter().map(|e| e.name).collect();
    let path: Vec<&str> = rows.iter().map(|e| e.path).collect();
    let user: Vec<i64> = rows.iter().map(|e| e.user).collect();
    let session: Vec<i64> = rows.iter().map(|e| e.session).collect();
    let source: Vec<&str> = rows.iter().map(|e| e.source).collect();
    let meta: Vec<serde_json::Value> = rows
        .iter()
        .map(|e| {
            serde_json::json!({
                "k": e.meta.iter().map(|m| &m.0).collect::<Vec<_>>(),
                "v": e.meta.iter().map(|m| &m.1).collect::<Vec<_>>(),
            })
        })
        .collect();
    let scroll: Vec<Option<i16>> = rows.iter().map(|e| e.scroll).collect();
    db.execute(
        "INSERT INTO events_v2 (site_id, \"timestamp\", name, pathname, user_id, session_id, referrer_source, meta_key, meta_value, scroll_depth)
         SELECT s, a AT TIME ZONE 'UTC', n, p, u, se, src,
                ARRAY(SELECT jsonb_array_elements_text(m->'k')),
                ARRAY(SELECT jsonb_array_elements_text(m->'v')), sc
         FROM unnest($1::int8[], $2::timestamptz[], $3::text[], $4::text[], $5::int8[], $6::int8[], $7::text[], $8::jsonb[], $9::int2[])
              AS x(s, a, n, p, u, se, src, m, sc)",
        &[&site, &at, &name, &path, &user, &session, &source, &meta, &scroll],
    )
    .await
    .unwrap();
}

/// A behaviour that answers by the request's position for its webhook-id.
pub fn by_attempt(
    f: impl Fn(usize) -> plausible_webhooks::testkit::receiver::Reply + Send + Sync + 'static,
) -> Behavior {
    Arc::new(move |r| f(r.nth))
}

/// The daemon binary as an operator runs it, configured through the environment.
pub struct DaemonProcess {
    pub child: std::process::Child,
}

impl Env {
    /// Environment for `plausible-webhooks run` matching `config()`.
    pub fn daemon_env(&self) -> Vec<(String, String)> {
        [
            ("DATABASE_URL", self.url.clone()),
            (
                "PLAUSIBLE_WEBHOOKS__DELIVERY__ALLOW_CIDRS",
                "[\"127.0.0.0/8\"]".into(),
            ),
            (
                "PLAUSIBLE_WEBHOOKS__DELIVERY__EXTRA_CA_FILE",
                self.tls.ca_file.display().to_string(),
            ),
            (
                "PLAUSIBLE_WEBHOOKS__DELIVERY__RETRY_SCHEDULE_SECS",
                "[1, 1, 1]".into(),
            ),
            ("PLAUSIBLE_WEBHOOKS__DELIVERY__RETRY_JITTER", "0.0".into()),
            (
                "PLAUSIBLE_WEBHOOKS__DELIVERY__REQUEST_TIMEOUT_MS",
                "2000".into(),
            ),
            (
                "PLAUSIBLE_WEBHOOKS__DELIVERY__CONNECT_TIMEOUT_MS",
                "1000".into(),
            ),
            ("PLAUSIBLE_WEBHOOKS__DELIVERY__LEASE_SECS", "5".into()),
            (
                "PLAUSIBLE_WEBHOOKS__QUEUE__RESCUE_INTERVAL_MS",
                "500".into(),
            ),
            ("PLAUSIBLE_WEBHOOKS__QUEUE__POLL_INTERVAL_MS", "1000".into()),
            ("PLAUSIBLE_WEBHOOKS__SHUTDOWN__GRACE_SECS", "5".into()),
            ("PLAUSIBLE_WEBHOOKS__LOG__LEVEL", "warn".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub fn spawn_daemon(&self, extra: &[(&str, &str)]) -> DaemonProcess {
        self.spawn_daemon_logging(extra, None)
    }

    /// As `spawn_daemon`, its log (stderr) written to `log` when given.
    pub fn spawn_daemon_logging(
        &self,
        extra: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> DaemonProcess {
        DaemonProcess {
            child: self
                .daemon_command(extra, log)
                .spawn()
                .expect("spawning the daemon binary"),
        }
    }

    /// As `spawn_daemon`, in a process that may open at most `open_files`
    /// descriptors (soft and hard limit alike).
    pub fn spawn_daemon_limited(&self, extra: &[(&str, &str)], open_files: u64) -> DaemonProcess {
        use std::os::unix::process::CommandExt;
        let mut cmd = self.daemon_command(extra, None);
        // SAFETY: setrlimit is async-signal-safe and only touches the child.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: open_files,
                    rlim_max: open_files,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        DaemonProcess {
            child: cmd.spawn().expect("spawning the daemon binary"),
        }
    }

    fn daemon_command(
        &self,
        extra: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_plausible-webhooks"));
        cmd.arg("run").env_remove("PLAUSIBLE_WEBHOOKS_CONFIG");
        for (k, v) in self.daemon_env() {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        if let Some(path) = log {
            cmd.stderr(std::fs::File::create(path).expect("creating the daemon's log file"));
        }
        cmd
    }
}

impl DaemonProcess {
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for exit (polling), up to `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "daemon did not exit within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill9();
        }
    }
}

/// `data`, a real event's, fits the catalog's schema of `event` (GET
/// /api/event-types).
pub fn fits_catalog(event: &str, data: &serde_json::Value) {
    let entry = plausible_webhooks::admin::catalog::catalog()
        .into_iter()
        .find(|e| e.name == event)
        .unwrap_or_else(|| panic!("{event} is not in the catalog"));
    let schema = jsonschema::options()
        .should_validate_formats(true)
        .build(&entry.schema)
        .unwrap();
    let errors: Vec<String> = schema.iter_errors(data).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "a real {event}: {errors:?}\n{data}");
}

/// As `fits_catalog`, and the catalog's example has exactly its keys.
pub fn fits_catalog_exactly(event: &str, data: &serde_json::Value) {
    fits_catalog(event, data);
    let example = plausible_webhooks::admin::catalog::sample(event)
        .unwrap_or_else(|| panic!("{event} has no example"));
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&example),
        keys(data),
        "{event}'s example and a real one"
    );
}

/// `Env::incompatible_view` on any database holding Plausible's events_v2.
pub async fn incompatible_view_on(db: &tokio_postgres::Client) {
    db.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS compat;
         DROP VIEW IF EXISTS compat.events_v2;
         CREATE VIEW compat.events_v2 AS
           SELECT site_id, \"timestamp\", name, pathname, user_id, session_id, referrer_source,
                  array_to_string(meta_key, ',') AS meta_key, meta_value, scroll_depth
           FROM public.events_v2;",
    )
    .await
    .unwrap();
}
