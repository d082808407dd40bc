-- Operational events (docs/events.md#operational-events): a webhook's health
-- told to whoever should hear it. `webhook.failing` (a streak of failed
-- deliveries reached `[health] failing_after_failures`), `webhook.disabled`,
-- `webhook.recovered` (a success after a failing notice) and
-- `delivery.exhausted` (a delivery failed for good) go to the operator
-- endpoint of the daemon's config (`[health] operator_url`) and to every
-- webhook of the site subscribed to them, never to the webhook they are
-- about. They are made here, by database triggers, so that they follow the
-- health the completer writes in its one statement, whoever writes it, in
-- the same transaction: no notice without its cause, no cause without its
-- notice.

-- The streak that makes a webhook `failing` (and sends webhook.failing),
-- written from the config at `migrate` and at start as the payload limit is.
ALTER TABLE plausible_webhooks_settings
  ADD COLUMN failing_after_failures integer NOT NULL DEFAULT 1
    CONSTRAINT plausible_webhooks_settings_failing_after_range
      CHECK (failing_after_failures BETWEEN 1 AND 1000000);

-- The operator endpoint is a webhook without a site: it goes through the
-- same queue, limits, address guard and signing as every delivery. The
-- daemon writes it from its config at start (one row at most). Every read of
-- a site's webhooks joins `sites`, so it is never listed as a site's.
ALTER TABLE webhooks
  ALTER COLUMN site_id DROP NOT NULL,
  ADD COLUMN operator boolean NOT NULL DEFAULT false,
  ADD CONSTRAINT webhooks_operator_has_no_site CHECK (operator = (site_id IS NULL)),
  -- The last error of a delivery that failed for good (what webhook.failing
  -- and webhook.disabled say).
  ADD COLUMN last_failure text,
  -- When webhook.failing was sent for the current streak: the webhook's
  -- status is `failing` from then until it recovers or is disabled.
  ADD COLUMN failing_noticed_at timestamptz;
CREATE UNIQUE INDEX webhooks_one_operator_idx ON webhooks (operator) WHERE operator;

CREATE FUNCTION plausible_webhooks_rfc3339(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
$$;

-- One operational event about webhook `p_about` of site `p_site_id`: to the
-- operator endpoint and to the site's enabled webhooks subscribed to it, but
-- not to the one it is about; once per key.
CREATE FUNCTION plausible_webhooks_notice(
  p_about uuid, p_site_id bigint, p_event_type text, p_payload jsonb, p_key text
) RETURNS void
LANGUAGE sql VOLATILE AS $$
  INSERT INTO webhook_deliveries (webhook_id, event_type, payload, idempotency_key)
  SELECT w.id, p_event_type, p_payload, p_key
  FROM webhooks w
  WHERE w.id <> p_about AND w.enabled AND w.deleted_at IS NULL
    AND (w.operator OR (w.site_id = p_site_id AND plausible_webhooks_subscribed(w.events, p_event_type)))
  ON CONFLICT (webhook_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
$$;

-- What every notice about webhook `w` says of it.
CREATE FUNCTION plausible_webhooks_about(w webhooks) RETURNS jsonb
LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object(
    'webhook_id', w.id,
    'webhook_name', w.name,
    'site_id', (SELECT domain FROM sites WHERE id = w.site_id),
    'plausible_site_id', w.site_id,
    'url_host', substring(w.url from '^https://([^/?#:]+)'))
$$;

-- A webhook failing before the upgrade is failing after it (as it showed).
UPDATE webhooks SET failing_noticed_at = coalesce(failing_since, now())
WHERE enabled AND deleted_at IS NULL AND consecutive_failures > 0;

-- Named to fire after webhooks_touch (BEFORE triggers fire in name order),
-- which resets the health of a webhook switched back on.
CREATE FUNCTION plausible_webhooks_watch_health() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_after integer := coalesce((SELECT failing_after_failures FROM plausible_webhooks_settings), 1);
BEGIN
  IF NEW.operator OR NEW.deleted_at IS NOT NULL THEN
    RETURN NEW;
  END IF;
  IF OLD.enabled AND NOT NEW.enabled THEN
    PERFORM plausible_webhooks_notice(NEW.id, NEW.site_id, 'webhook.disabled',
      plausible_webhooks_about(NEW) || jsonb_build_object(
        'reason', coalesce(NEW.disabled_reason, 'disabled'),
        'disabled_at', plausible_webhooks_rfc3339(coalesce(NEW.disabled_at, now())),
        'consecutive_failures', NEW.consecutive_failures,
        'failing_since', plausible_webhooks_rfc3339(NEW.failing_since),
        'last_error', NEW.last_failure),
      'webhook.disabled:' || NEW.id || ':' || (extract(epoch FROM coalesce(NEW.disabled_at, now())) * 1000000)::bigint);
    NEW.failing_noticed_at := NULL;
    RETURN NEW;
  END IF;
  IF NOT NEW.enabled THEN
    RETURN NEW;
  END IF;
  IF NEW.consecutive_failures >= v_after AND NEW.failing_noticed_at IS NULL THEN
    NEW.failing_noticed_at := now();
    PERFORM plausible_webhooks_notice(NEW.id, NEW.site_id, 'webhook.failing',
      plausible_webhooks_about(NEW) || jsonb_build_object(
        'consecutive_failures', NEW.consecutive_failures,
        'failing_since', plausible_webhooks_rfc3339(coalesce(NEW.failing_since, now())),
        'last_error', NEW.last_failure),
      'webhook.failing:' || NEW.id || ':' || (extract(epoch FROM NEW.failing_noticed_at) * 1000000)::bigint);
  ELSIF NEW.consecutive_failures = 0 AND OLD.failing_noticed_at IS NOT NULL THEN
    PERFORM plausible_webhooks_notice(NEW.id, NEW.site_id, 'webhook.recovered',
      plausible_webhooks_about(NEW) || jsonb_build_object(
        'failed_deliveries', OLD.consecutive_failures,
        'failing_since', plausible_webhooks_rfc3339(OLD.failing_since),
        'recovered_at', plausible_webhooks_rfc3339(now())),
      'webhook.recovered:' || NEW.id || ':' || (extract(epoch FROM OLD.failing_noticed_at) * 1000000)::bigint);
    NEW.failing_noticed_at := NULL;
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER webhooks_watch_health BEFORE UPDATE OF enabled, consecutive_failures ON webhooks
  FOR EACH ROW EXECUTE FUNCTION plausible_webhooks_watch_health();

-- A delivery that failed for good (it was attempted; not one ended unsent
-- because its webhook is disabled or deleted). Not about an operational
-- event's own delivery (a failing operator endpoint would otherwise feed
-- itself), nor about the operator endpoint's.
CREATE FUNCTION plausible_webhooks_delivery_exhausted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  w webhooks;
BEGIN
  SELECT * INTO w FROM webhooks WHERE id = NEW.webhook_id;
  IF NOT FOUND OR w.operator THEN
    RETURN NULL;
  END IF;
  PERFORM plausible_webhooks_notice(w.id, w.site_id, 'delivery.exhausted',
    plausible_webhooks_about(w) || jsonb_build_object(
      'delivery_id', NEW.id,
      'event_type', NEW.event_type,
      'attempts', NEW.attempts,
      'last_response_code', NEW.last_response_code,
      'last_error', NEW.last_error,
      'created_at', plausible_webhooks_rfc3339(NEW.inserted_at)),
    'delivery.exhausted:' || NEW.id);
  RETURN NULL;
END
$$;
CREATE TRIGGER webhook_deliveries_exhausted AFTER UPDATE OF status ON webhook_deliveries
  FOR EACH ROW
  WHEN (NEW.status = 'failed' AND OLD.status <> 'failed' AND NEW.attempts > 0
        AND NEW.event_type NOT LIKE 'webhook.%' AND NEW.event_type NOT LIKE 'delivery.%')
  EXECUTE FUNCTION plausible_webhooks_delivery_exhausted();
