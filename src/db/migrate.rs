//! Embedded migrations. Each runs in its own transaction, under an advisory
//! lock so two instances starting at once never migrate concurrently; a re-run
//! is a no-op.

use anyhow::{bail, Context, Result};

/// (version, name, sql) in order. Never edit a shipped migration: add one.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "delivery_schema",
        include_str!("../../sql/0001_delivery_schema.sql"),
    ),
    (2, "triggers", include_str!("../../sql/0002_triggers.sql")),
    (
        3,
        "delivery_row_limits",
        include_str!("../../sql/0003_delivery_row_limits.sql"),
    ),
    (
        4,
        "readable_times",
        include_str!("../../sql/0004_readable_times.sql"),
    ),
    (
        5,
        "payload_size",
        include_str!("../../sql/0005_payload_size.sql"),
    ),
    (
        6,
        "fair_claim",
        include_str!("../../sql/0006_fair_claim.sql"),
    ),
    (
        7,
        "attempt_error_kind",
        include_str!("../../sql/0007_attempt_error_kind.sql"),
    ),
    (
        8,
        "global_limits",
        include_str!("../../sql/0008_global_limits.sql"),
    ),
    (
        9,
        "lean_hot_path",
        include_str!("../../sql/0009_lean_hot_path.sql"),
    ),
    (10, "portal", include_str!("../../sql/0010_portal.sql")),
    (
        11,
        "subscriptions",
        include_str!("../../sql/0011_subscriptions.sql"),
    ),
    (
        12,
        "amplification_caps",
        include_str!("../../sql/0012_amplification_caps.sql"),
    ),
    (
        13,
        "custom_events",
        include_str!("../../sql/0013_custom_events.sql"),
    ),
    (
        14,
        "operational_events",
        include_str!("../../sql/0014_operational_events.sql"),
    ),
    (
        15,
        "owner_mail",
        include_str!("../../sql/0015_owner_mail.sql"),
    ),
    (
        16,
        "tracking_stopped",
        include_str!("../../sql/0016_tracking.sql"),
    ),
    (17, "ed25519", include_str!("../../sql/0017_ed25519.sql")),
    (
        18,
        "chat_formats",
        include_str!("../../sql/0018_chat_formats.sql"),
    ),
    (
        19,
        "analytics_notices",
        include_str!("../../sql/0019_analytics_notices.sql"),
    ),
    (
        20,
        "ready_and_leases",
        include_str!("../../sql/0020_ready_and_leases.sql"),
    ),
];

/// The Plausible-shaped fixture for tests and the demo (not a migration).
pub const PLAUSIBLE_FIXTURE: &str = include_str!("../../sql/fixtures/plausible_fixture.sql");

/// Arbitrary but fixed: the advisory lock key guarding migrations.
const MIGRATION_LOCK_KEY: i64 = 0x706c_7768_6d69_6772; // "plwhmigr"

const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS plausible_webhooks_schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())";

/// Applies every pending migration; returns the versions applied now.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<Vec<i32>> {
    check_plausible_tables(client).await?;
    let mut applied = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
            .await
            .context("taking the migration advisory lock")?;
        // "relation ... already exists, skipping" on every start is not news
        // (the unit runs migrate before each start); warnings still show.
        tx.batch_execute("SET LOCAL client_min_messages = warning")
            .await
            .context("quieting notices")?;
        tx.batch_execute(VERSION_TABLE)
            .await
            .context("creating the migrations table")?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM plausible_webhooks_schema_migrations WHERE version = $1",
                &[&version],
            )
            .await?
            .is_some();
        if done {
            tx.rollback().await?;
            continue;
        }
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("applying migration {version} ({name})"))?;
        tx.execute(
            "INSERT INTO plausible_webhooks_schema_migrations (version, name) VALUES ($1, $2)",
            &[&version, &name],
        )
        .await?;
        tx.commit().await?;
        applied.push(version);
    }
    Ok(applied)
}

/// The latest version applied in the database (0 when none).
pub async fn current_version(client: &tokio_postgres::Client) -> Result<i32> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('plausible_webhooks_schema_migrations') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let v: Option<i32> = client
        .query_one(
            "SELECT max(version) FROM plausible_webhooks_schema_migrations",
            &[],
        )
        .await?
        .get(0);
    Ok(v.unwrap_or(0))
}

pub fn latest_version() -> i32 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

/// Fails with a clear message when the database is not migrated to this build.
pub async fn ensure_current(client: &tokio_postgres::Client) -> Result<()> {
    let have = current_version(client).await?;
    let want = latest_version();
    if have < want {
        bail!("database schema is at version {have}, this build needs {want}: run `plausible-webhooks migrate`");
    }
    Ok(())
}

async fn check_plausible_tables(client: &tokio_postgres::Client) -> Result<()> {
    let row = client
        .query_one(
            "SELECT to_regclass('sites') IS NOT NULL, to_regclass('goals') IS NOT NULL",
            &[],
        )
        .await
        .context("checking for Plausible's tables")?;
    let (sites, goals): (bool, bool) = (row.get(0), row.get(1));
    if !sites || !goals {
        bail!(
            "Plausible's `sites`/`goals` tables are missing from this database: point DATABASE_URL at \
             Plausible's PostgreSQL database (or, for a standalone trial, load sql/fixtures/plausible_fixture.sql first)"
        );
    }
    Ok(())
}

/// Loads the Plausible-shaped fixture (tests and the demo only).
pub async fn load_fixture(client: &tokio_postgres::Client) -> Result<()> {
    client
        .batch_execute(PLAUSIBLE_FIXTURE)
        .await
        .context("loading the Plausible fixture")
}
