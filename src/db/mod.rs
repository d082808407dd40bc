//! Database access: the connection pool, the embedded migrations, the
//! settings the database enforces (`settings`), the LISTEN connection, and
//! reading what rows hold (`row`, `timestamp`). The daemon needs a direct or
//! session-pooled connection: PgBouncer in transaction mode breaks
//! LISTEN/NOTIFY.

pub mod listener;
pub mod migrate;
pub mod row;
pub mod settings;
pub mod timestamp;

pub use timestamp::Timestamp;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::future::BoxFuture;
use tokio_postgres::NoTls;

/// The channel the enqueue trigger notifies.
pub const NOTIFY_CHANNEL: &str = "plausible_webhooks";

/// Parses a database URL into a tokio-postgres config, naming the daemon.
pub fn pg_config(url: &str) -> Result<tokio_postgres::Config> {
    let mut cfg: tokio_postgres::Config = url
        .parse()
        .with_context(|| "database.url cannot be parsed as a PostgreSQL URL")?;
    if cfg.get_application_name().is_none() {
        cfg.application_name("plausible-webhooks");
    }
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(std::time::Duration::from_secs(5));
    }
    Ok(cfg)
}

/// A pool whose connections are checked cheaply before reuse, so a database
/// restart costs one failed statement at most, not a pool of dead connections.
pub fn pool(url: &str, size: usize) -> Result<Pool> {
    pool_for("the delivery engine", url, size)
}

/// The delivery engine's pool (claims, completions, rescues, trigger rounds).
/// With `database.synchronous_commit = false` its sessions commit without
/// waiting for the WAL flush: a PostgreSQL crash may then forget the last
/// fraction of a second of the daemon's bookkeeping, never Plausible's own
/// writes (the setting is this pool's sessions'), and every forgotten step
/// is redone: a forgotten claim leaves the row due, a forgotten completion
/// leaves it leased until the rescuer returns it. Deliveries stay
/// at-least-once with a stable `webhook-id`; the attempt log may then lack
/// the attempts of that fraction of a second. (docs/operating.md)
pub fn engine_pool(db: &crate::config::DatabaseConfig) -> Result<Pool> {
    let mut cfg = pg_config(&db.url)?;
    if !db.synchronous_commit {
        add_option(&mut cfg, "-c synchronous_commit=off");
    }
    pool_from("the delivery engine", cfg, db.pool_size)
}

/// Appends a server option to the session's (after any the URL gives).
fn add_option(cfg: &mut tokio_postgres::Config, option: &str) {
    let options = match cfg.get_options() {
        Some(o) if !o.is_empty() => format!("{o} {option}"),
        _ => option.to_owned(),
    };
    cfg.options(&options);
}

/// `pool`, its lost connections reported as `part`'s (see `WatchedConnect`).
pub fn pool_for(part: &'static str, url: &str, size: usize) -> Result<Pool> {
    pool_from(part, pg_config(url)?, size)
}

fn pool_from(part: &'static str, mut cfg: tokio_postgres::Config, size: usize) -> Result<Pool> {
    // The pools run short statements on the queue. PostgreSQL's JIT (on by
    // default where it is built in) compiled the claim whenever the planner's
    // estimate crossed jit_above_cost, which an unanalyzed `webhooks` table
    // makes it do: 120-250 ms of compiling per claim of ~450 rows, a claim
    // that otherwise takes ~50 ms (docs/benchmarks.md).
    add_option(&mut cfg, "-c jit=off");
    let mgr = Manager::from_connect(
        cfg,
        WatchedConnect {
            part,
            lost: Arc::new(AtomicU8::new(CONNECTED)),
        },
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(size)
        .wait_timeout(Some(std::time::Duration::from_secs(30)))
        .create_timeout(Some(std::time::Duration::from_secs(10)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .context("building the PostgreSQL connection pool")
}

/// Connects the pool's connections and watches each. When the server ends
/// them (a restart, an administrator), every connection of the pool learns
/// it at once: the server's reason is logged once for the outage, naming the
/// part of the daemon, and once again when a connection succeeds. (deadpool's
/// own per-connection lines, `Connection error: db error` ×pool size, are
/// filtered out in `logging`.)
struct WatchedConnect {
    part: &'static str,
    /// CONNECTED, LOST (said without the server's reason) or LOST_SAID_WHY.
    lost: Arc<AtomicU8>,
}

const CONNECTED: u8 = 0;
const LOST: u8 = 1;
const LOST_SAID_WHY: u8 = 2;
/// A connection that merely closed waits this long for a sibling that
/// carries the server's reason before saying so itself.
const REASON_WAIT: std::time::Duration = std::time::Duration::from_millis(300);

impl deadpool_postgres::Connect for WatchedConnect {
    fn connect(
        &self,
        pg_config: &tokio_postgres::Config,
    ) -> BoxFuture<
        '_,
        Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
    > {
        let cfg = pg_config.clone();
        Box::pin(async move {
            let (client, conn) = cfg.connect(NoTls).await?;
            if self.lost.swap(CONNECTED, Ordering::Relaxed) != CONNECTED {
                tracing::info!(part = self.part, "database connection restored");
            }
            let (part, lost) = (self.part, self.lost.clone());
            let task = tokio::spawn(async move {
                let Err(e) = conn.await else { return };
                let say = |error: String| {
                    tracing::warn!(
                        part,
                        error,
                        "database connection lost; reconnecting (deliveries wait, none is lost)"
                    )
                };
                if e.as_db_error().is_some() {
                    // The server said why (a restart, an administrator).
                    if lost.swap(LOST_SAID_WHY, Ordering::Relaxed) != LOST_SAID_WHY {
                        say(crate::logging::error_line(&e));
                    }
                    return;
                }
                tokio::time::sleep(REASON_WAIT).await;
                if lost
                    .compare_exchange(CONNECTED, LOST, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    say(crate::logging::error_line(&e));
                }
            });
            Ok((client, task))
        })
    }
}

/// Connects one client outside the pool (for LISTEN and for one-shot commands).
pub async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let cfg = pg_config(url)?;
    let (client, conn) = cfg
        .connect(NoTls)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {}", describe(&cfg)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}

/// Host/port/dbname of a config, never the password.
pub fn describe(cfg: &tokio_postgres::Config) -> String {
    let host = cfg
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(s) => s.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", cfg.get_dbname().unwrap_or(""))
}
