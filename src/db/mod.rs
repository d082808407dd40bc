//! Database access: the connection pool, the embedded migrations, the
//! settings the database enforces (`settings`) and the LISTEN connection. The daemon needs a direct or session-pooled connection: PgBouncer
//! in transaction mode breaks LISTEN/NOTIFY.

pub mod listener;
pub mod migrate;
pub mod settings;
pub mod timestamp;

pub use timestamp::Timestamp;

use anyhow::{Context, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
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
    let cfg = pg_config(url)?;
    let mgr = Manager::from_config(
        cfg,
        NoTls,
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
