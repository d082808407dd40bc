//! Settings the database enforces on every writer (Plausible inserts rows
//! itself), written from the daemon's config: today the payload size limit
//! (migration 5). One value per database: every instance writes its own at
//! start, so instances sharing a database should share the value; a change
//! is logged, so instances disagreeing show in the log.

use anyhow::{Context, Result};

use crate::config::DeliveryConfig;

/// Writes the limit when it differs; returns the previous value when it changed.
const WRITE_SQL: &str = "
WITH old AS (SELECT max_payload_bytes FROM plausible_webhooks_settings)
INSERT INTO plausible_webhooks_settings (id, max_payload_bytes) VALUES (true, $1)
ON CONFLICT (id) DO UPDATE SET max_payload_bytes = EXCLUDED.max_payload_bytes, updated_at = now()
  WHERE plausible_webhooks_settings.max_payload_bytes <> EXCLUDED.max_payload_bytes
RETURNING (SELECT max_payload_bytes FROM old)";

/// Makes the database enforce `cfg`'s limits (after `migrate`, and at start).
pub async fn apply(client: &tokio_postgres::Client, cfg: &DeliveryConfig) -> Result<()> {
    // Validated by the config to 4 KiB..=16 MiB, so it fits an integer.
    let limit = i32::try_from(cfg.max_payload_bytes).context("delivery.max_payload_bytes")?;
    let changed = client
        .query_opt(WRITE_SQL, &[&limit])
        .await
        .context("writing delivery.max_payload_bytes into plausible_webhooks_settings")?;
    if let Some(row) = changed {
        let was: Option<i32> = row.get(0);
        tracing::info!(
            max_payload_bytes = limit,
            was = was.unwrap_or(0),
            "payload size limit in the database set from delivery.max_payload_bytes"
        );
    }
    Ok(())
}
