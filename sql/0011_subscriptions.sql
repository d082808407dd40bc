-- Subscriptions by event type (docs/events.md). A webhook subscribes to
-- event types by name or by a prefix wildcard (`site.*`, `*`); its triggers
-- still make the events of their own type for it, and `webhook_enqueue`
-- fans an event out to every enabled webhook of the site subscribed to its
-- type (before: to those with an enabled trigger of that type).

-- An event type: dot-separated words of lowercase letters, digits and
-- underscores, each starting with a letter, at most 64 characters
-- (`goal_completion`, `site.tracking_stopped`, `plausible.site_created`).
CREATE FUNCTION plausible_webhooks_event_type_ok(t text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
  SELECT t ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$' AND char_length(t) <= 64
$$;

-- A subscription: an event type, a prefix of one followed by `.*`, or `*`;
-- at most 100 (the admin takes 64, leaving room for its triggers to add theirs).
CREATE FUNCTION plausible_webhooks_events_ok(e text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
  SELECT cardinality(e) <= 100 AND NOT EXISTS (
    SELECT 1 FROM unnest(e) p
    WHERE p IS NULL OR NOT (p = '*'
      OR plausible_webhooks_event_type_ok(p)
      OR (right(p, 2) = '.*' AND plausible_webhooks_event_type_ok(left(p, -2)))))
$$;

-- Whether subscriptions `e` take event type `t`.
CREATE FUNCTION plausible_webhooks_subscribed(e text[], t text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
  SELECT EXISTS (
    SELECT 1 FROM unnest(e) p
    WHERE p = '*' OR p = t OR (right(p, 2) = '.*' AND starts_with(t, left(p, -1))))
$$;

ALTER TABLE webhooks ADD COLUMN events text[] NOT NULL DEFAULT '{}'
  CONSTRAINT webhooks_events_format CHECK (plausible_webhooks_events_ok(events));

-- Existing webhooks keep what `webhook_enqueue` sent them: the types of
-- their enabled triggers.
UPDATE webhooks w SET events = sub.types
FROM (
  SELECT t.webhook_id, array_agg(DISTINCT t.trigger_type ORDER BY t.trigger_type) AS types
  FROM webhook_triggers t WHERE t.enabled GROUP BY t.webhook_id
) sub
WHERE sub.webhook_id = w.id;

-- A trigger subscribes its webhook to what it makes, however the trigger
-- is written (the admin, or SQL from the host): an enabled trigger whose
-- webhook did not take its type would make events nobody asked for.
CREATE FUNCTION plausible_webhooks_subscribe_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  UPDATE webhooks SET events = array_append(events, NEW.trigger_type)
  WHERE id = NEW.webhook_id AND NOT plausible_webhooks_subscribed(events, NEW.trigger_type);
  RETURN NULL;
END
$$;

CREATE TRIGGER webhook_triggers_subscribe
  AFTER INSERT OR UPDATE OF enabled, trigger_type, webhook_id ON webhook_triggers
  FOR EACH ROW WHEN (NEW.enabled) EXECUTE FUNCTION plausible_webhooks_subscribe_trigger();

-- Publishing: fans the event out to every enabled, undeleted webhook of the
-- site subscribed to its type. A type outside the format is refused with a
-- message saying what to do, rather than queued for `*` subscribers alone.
CREATE OR REPLACE FUNCTION webhook_enqueue(
  p_site_id bigint,
  p_event_type text,
  p_payload jsonb,
  p_idempotency_key text DEFAULT NULL
) RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  IF p_event_type IS NULL OR NOT plausible_webhooks_event_type_ok(p_event_type) THEN
    RAISE EXCEPTION 'webhook_enqueue: % is not an event type', coalesce(quote_literal(p_event_type), 'NULL')
      USING ERRCODE = '22023',
            HINT = 'name it with dot-separated words of a-z, 0-9 and _, each starting with a letter, at most 64 characters (site.tracking_stopped); see docs/events.md';
  END IF;
  RETURN QUERY
  INSERT INTO webhook_deliveries (webhook_id, event_type, payload, idempotency_key)
  SELECT w.id, p_event_type, p_payload, p_idempotency_key
  FROM webhooks w
  WHERE w.site_id = p_site_id
    AND w.enabled
    AND w.deleted_at IS NULL
    AND plausible_webhooks_subscribed(w.events, p_event_type)
  ON CONFLICT (webhook_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
  RETURNING id;
END
$$;
