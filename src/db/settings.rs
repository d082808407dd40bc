//! Settings the database enforces on every writer (Plausible inserts rows
//! itself), written from the daemon's config: the payload size limit
//! (migration 5) and the caps on webhooks per site, triggers per webhook
//! and deliveries per `webhook_enqueue` (migration 12). One value per
//! database: every instance writes its own at start, so instances sharing a
//! database should share the values; a change is logged, so instances
//! disagreeing show in the log.

use anyhow::{Context, Result};

use crate::config::{Config, HealthConfig};

/// Writes the settings when they differ; returns the previous ones when
/// they changed.
const WRITE_SQL: &str = "
WITH old AS (SELECT max_payload_bytes, max_webhooks_per_site, max_triggers_per_webhook,
                    max_enqueue_deliveries FROM plausible_webhooks_settings)
INSERT INTO plausible_webhooks_settings
    (id, max_payload_bytes, max_webhooks_per_site, max_triggers_per_webhook, max_enqueue_deliveries)
VALUES (true, $1, $2, $3, $4)
ON CONFLICT (id) DO UPDATE SET
    max_payload_bytes = EXCLUDED.max_payload_bytes,
    max_webhooks_per_site = EXCLUDED.max_webhooks_per_site,
    max_triggers_per_webhook = EXCLUDED.max_triggers_per_webhook,
    max_enqueue_deliveries = EXCLUDED.max_enqueue_deliveries,
    updated_at = now()
  WHERE (plausible_webhooks_settings.max_payload_bytes, plausible_webhooks_settings.max_webhooks_per_site,
         plausible_webhooks_settings.max_triggers_per_webhook, plausible_webhooks_settings.max_enqueue_deliveries)
     IS DISTINCT FROM (EXCLUDED.max_payload_bytes, EXCLUDED.max_webhooks_per_site,
                       EXCLUDED.max_triggers_per_webhook, EXCLUDED.max_enqueue_deliveries)
RETURNING (SELECT row(old.*)::text FROM old)";

/// Makes the database enforce `cfg`'s limits (after `migrate`, and at start).
pub async fn apply(client: &tokio_postgres::Client, cfg: &Config) -> Result<()> {
    // Validated by the config to 4 KiB..=16 MiB and 1..=1,000,000, so they
    // fit an integer.
    let payload =
        i32::try_from(cfg.delivery.max_payload_bytes).context("delivery.max_payload_bytes")?;
    let l = &cfg.limits;
    let caps = [
        l.max_webhooks_per_site,
        l.max_triggers_per_webhook,
        l.max_enqueue_deliveries,
    ]
    .map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    let changed = client
        .query_opt(WRITE_SQL, &[&payload, &caps[0], &caps[1], &caps[2]])
        .await
        .context(
            "writing delivery.max_payload_bytes and [limits] into plausible_webhooks_settings",
        )?;
    if let Some(row) = changed {
        let was: Option<String> = row.get(0);
        tracing::info!(
            max_payload_bytes = payload,
            max_webhooks_per_site = caps[0],
            max_triggers_per_webhook = caps[1],
            max_enqueue_deliveries = caps[2],
            was = was.as_deref().unwrap_or(""),
            "limits in the database set from delivery.max_payload_bytes and [limits]"
        );
    }
    Ok(())
}

/// Writes `failing_after_failures` when it differs.
const FAILING_AFTER_SQL: &str = "
UPDATE plausible_webhooks_settings SET failing_after_failures = $1, updated_at = now()
WHERE failing_after_failures <> $1";

/// The operator endpoint (`[health] operator_url`): the one webhook without
/// a site, subscribed to every event it can get (operational events only:
/// nothing else is published to a webhook without a site).
const OPERATOR_SQL: &str = "
INSERT INTO webhooks (site_id, operator, name, url, secret, events, format)
VALUES (NULL, true, 'operator endpoint ([health] operator_url)', $1, $2, '{*}', $3)
ON CONFLICT (operator) WHERE operator DO UPDATE
  SET url = EXCLUDED.url, secret = EXCLUDED.secret, format = EXCLUDED.format,
      enabled = true, deleted_at = NULL
  WHERE webhooks.url <> EXCLUDED.url OR webhooks.secret <> EXCLUDED.secret
     OR webhooks.format <> EXCLUDED.format
     OR NOT webhooks.enabled OR webhooks.deleted_at IS NOT NULL";

/// Without an operator endpoint configured, the row (if an earlier start
/// wrote one) is switched off; it is kept for its delivery log.
const NO_OPERATOR_SQL: &str = "
UPDATE webhooks SET enabled = false, disabled_reason = 'no [health] operator_url configured'
WHERE operator AND enabled";

/// Makes the database follow `[health]`: the streak that makes a webhook
/// `failing`, and the operator endpoint (after `migrate`, and at start).
pub async fn apply_health(client: &tokio_postgres::Client, cfg: &HealthConfig) -> Result<()> {
    let after =
        i32::try_from(cfg.failing_after_failures).context("health.failing_after_failures")?;
    client
        .execute(FAILING_AFTER_SQL, &[&after])
        .await
        .context("writing health.failing_after_failures into plausible_webhooks_settings")?;
    let url = cfg.operator_url.trim();
    match (&cfg.operator_secret, url.is_empty()) {
        (Some(secret), false) => {
            if client
                .execute(OPERATOR_SQL, &[&url, &secret.0, &cfg.operator_format])
                .await
                .context("writing the operator endpoint ([health] operator_url)")?
                > 0
            {
                tracing::info!(
                    // Scheme and host only: a chat service's URL path is
                    // its credential.
                    operator_url = %url.splitn(4, '/').take(3).collect::<Vec<_>>().join("/"),
                    format = %cfg.operator_format,
                    "operational events go to the operator endpoint"
                );
            }
        }
        _ => {
            client
                .execute(NO_OPERATOR_SQL, &[])
                .await
                .context("switching off the operator endpoint")?;
        }
    }
    Ok(())
}

/// Writes `owner_mail` when it differs.
const OWNER_MAIL_SQL: &str = "
UPDATE plausible_webhooks_settings SET owner_mail = $1, updated_at = now()
WHERE owner_mail <> $1";

/// Makes the database queue owner emails (migration 15) when `[mail]
/// enabled` is on, and stop queuing them when it is off (after `migrate`,
/// and at start).
pub async fn apply_mail(client: &tokio_postgres::Client, enabled: bool) -> Result<()> {
    if client
        .execute(OWNER_MAIL_SQL, &[&enabled])
        .await
        .context("writing mail.enabled into plausible_webhooks_settings")?
        > 0
    {
        tracing::info!(
            owner_mail = enabled,
            "owner emails on disable set from mail.enabled"
        );
    }
    Ok(())
}
