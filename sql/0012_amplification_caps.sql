-- Caps against amplification, enforced here because Plausible (or anyone
-- with SQL access) writes webhooks, triggers and deliveries itself: a site
-- took 10,000 webhooks by SQL and 1,000 through the API, one webhook 1,000
-- triggers (333 drop POSTs in one round), one webhook_enqueue call 10,001
-- deliveries.
--
-- The caps are the operator's (`[limits]` in the daemon's config), kept in
-- the settings row the daemon writes at `migrate` and at start (migration
-- 5). Each refusal is SQLSTATE 23514 under a constraint name callers can
-- branch on, with a message naming the cap and how to raise it. Rows already
-- over a cap stay; only new ones (and restores, and moves) are refused.

ALTER TABLE plausible_webhooks_settings
  ADD COLUMN max_webhooks_per_site integer NOT NULL DEFAULT 100
    CONSTRAINT plausible_webhooks_settings_max_webhooks_per_site_range
    CHECK (max_webhooks_per_site BETWEEN 1 AND 1000000),
  ADD COLUMN max_triggers_per_webhook integer NOT NULL DEFAULT 20
    CONSTRAINT plausible_webhooks_settings_max_triggers_per_webhook_range
    CHECK (max_triggers_per_webhook BETWEEN 1 AND 1000000),
  ADD COLUMN max_enqueue_deliveries integer NOT NULL DEFAULT 100
    CONSTRAINT plausible_webhooks_settings_max_enqueue_deliveries_range
    CHECK (max_enqueue_deliveries BETWEEN 1 AND 1000000);

-- A site's webhooks: counted under a lock per site, so two writers at once
-- cannot both take the last place (an advisory lock: Plausible's `sites` row
-- is not ours to lock).
CREATE FUNCTION plausible_webhooks_webhooks_per_site_check() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_limit integer;
  v_count bigint;
BEGIN
  IF NEW.deleted_at IS NOT NULL THEN
    RETURN NEW;
  END IF;
  IF TG_OP = 'UPDATE' AND OLD.deleted_at IS NULL AND OLD.site_id = NEW.site_id THEN
    RETURN NEW;
  END IF;
  PERFORM pg_advisory_xact_lock(1886156649, hashtext(NEW.site_id::text));
  v_limit := coalesce((SELECT max_webhooks_per_site FROM plausible_webhooks_settings), 100);
  SELECT count(*) INTO v_count FROM webhooks
  WHERE site_id = NEW.site_id AND deleted_at IS NULL AND id <> NEW.id;
  IF v_count >= v_limit THEN
    RAISE EXCEPTION 'site % has % webhooks, the most a site may have: delete one first, or raise [limits] max_webhooks_per_site in the plausible-webhooks config and restart the daemon',
        NEW.site_id, v_count
      USING ERRCODE = 'check_violation',
            CONSTRAINT = 'webhooks_per_site_limit',
            TABLE = 'webhooks',
            HINT = 'The cap is the daemon''s limits.max_webhooks_per_site, written into plausible_webhooks_settings at `plausible-webhooks migrate` and at start.';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER webhooks_per_site_limit
  BEFORE INSERT OR UPDATE OF site_id, deleted_at ON webhooks
  FOR EACH ROW EXECUTE FUNCTION plausible_webhooks_webhooks_per_site_check();

-- A webhook's triggers: counted with the webhook's row locked (FOR NO KEY
-- UPDATE does not wait for the deliveries' foreign-key checks).
CREATE FUNCTION plausible_webhooks_triggers_per_webhook_check() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_limit integer;
  v_count bigint;
BEGIN
  IF TG_OP = 'UPDATE' AND OLD.webhook_id = NEW.webhook_id THEN
    RETURN NEW;
  END IF;
  PERFORM 1 FROM webhooks WHERE id = NEW.webhook_id FOR NO KEY UPDATE;
  v_limit := coalesce((SELECT max_triggers_per_webhook FROM plausible_webhooks_settings), 20);
  SELECT count(*) INTO v_count FROM webhook_triggers
  WHERE webhook_id = NEW.webhook_id AND id <> NEW.id;
  IF v_count >= v_limit THEN
    RAISE EXCEPTION 'webhook % has % triggers, the most a webhook may have: remove one first, or raise [limits] max_triggers_per_webhook in the plausible-webhooks config and restart the daemon',
        NEW.webhook_id, v_count
      USING ERRCODE = 'check_violation',
            CONSTRAINT = 'webhook_triggers_per_webhook_limit',
            TABLE = 'webhook_triggers',
            HINT = 'The cap is the daemon''s limits.max_triggers_per_webhook, written into plausible_webhooks_settings at `plausible-webhooks migrate` and at start.';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER webhook_triggers_per_webhook_limit
  BEFORE INSERT OR UPDATE OF webhook_id ON webhook_triggers
  FOR EACH ROW EXECUTE FUNCTION plausible_webhooks_triggers_per_webhook_check();

-- (Over migration 11's: the webhooks subscribed to the type, counted first.)
-- One event fanned out to more webhooks than the cap is refused whole (in
-- the caller's transaction, nothing enqueued), not cut: which webhooks would
-- be left out has no right answer.
CREATE OR REPLACE FUNCTION webhook_enqueue(
  p_site_id bigint,
  p_event_type text,
  p_payload jsonb,
  p_idempotency_key text DEFAULT NULL
) RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_limit integer;
  v_count bigint;
BEGIN
  -- As migration 11 has it: a type outside the format is refused.
  IF p_event_type IS NULL OR NOT plausible_webhooks_event_type_ok(p_event_type) THEN
    RAISE EXCEPTION 'webhook_enqueue: % is not an event type', coalesce(quote_literal(p_event_type), 'NULL')
      USING ERRCODE = '22023',
            HINT = 'name it with dot-separated words of a-z, 0-9 and _, each starting with a letter, at most 64 characters (site.tracking_stopped); see docs/events.md';
  END IF;
  v_limit := coalesce((SELECT max_enqueue_deliveries FROM plausible_webhooks_settings), 100);
  SELECT count(*) INTO v_count
  FROM webhooks w
  WHERE w.site_id = p_site_id AND w.enabled AND w.deleted_at IS NULL
    AND plausible_webhooks_subscribed(w.events, p_event_type);
  IF v_count > v_limit THEN
    RAISE EXCEPTION 'webhook_enqueue would make % deliveries for site %, over the limit of %: nothing was enqueued; subscribe fewer webhooks to this event, or raise [limits] max_enqueue_deliveries in the plausible-webhooks config and restart the daemon',
        v_count, p_site_id, v_limit
      USING ERRCODE = 'check_violation',
            CONSTRAINT = 'webhook_enqueue_fanout_limit',
            HINT = 'The cap is the daemon''s limits.max_enqueue_deliveries, written into plausible_webhooks_settings at `plausible-webhooks migrate` and at start.';
  END IF;
  RETURN QUERY
  WITH made AS (
  INSERT INTO webhook_deliveries (webhook_id, event_type, payload, idempotency_key)
  SELECT w.id, p_event_type, p_payload, p_idempotency_key
  FROM webhooks w
  WHERE w.site_id = p_site_id
    AND w.enabled
    AND w.deleted_at IS NULL
    AND plausible_webhooks_subscribed(w.events, p_event_type)
  ON CONFLICT (webhook_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
  RETURNING webhook_deliveries.id)
  SELECT made.id FROM made;
END
$$;
