-- Custom events and delivery modes (docs/triggers.md, docs/events.md).
--
-- A `custom_event` trigger names a Plausible custom event by its name (any
-- name, not only those defined as goals) and optionally props, matched as a
-- goal's custom_props are; the goal scanner scans it beside goal triggers.
-- Goal and custom-event triggers send `each` occurrence (as before) or a
-- `digest`: one POST per window (`window_secs`) with the count and the
-- first occurrences, under the event type `<type>_digest`.

ALTER TABLE webhook_triggers DROP CONSTRAINT webhook_triggers_type;
ALTER TABLE webhook_triggers ADD CONSTRAINT webhook_triggers_type
  CHECK (trigger_type IN ('visitor_spike', 'traffic_drop', 'goal_completion', 'custom_event'));

ALTER TABLE webhook_triggers
  -- Plausible's own limit on an event name is 120 characters.
  ADD COLUMN event_name text
    CONSTRAINT webhook_triggers_event_name_format
      CHECK (char_length(event_name) BETWEEN 1 AND 120 AND event_name !~ '[[:cntrl:]]'),
  -- {"key": "value", ...}: every key's value must be the event's (as goals' custom_props).
  ADD COLUMN event_props jsonb NOT NULL DEFAULT '{}'
    CONSTRAINT webhook_triggers_event_props_format
      CHECK (jsonb_typeof(event_props) = 'object' AND pg_column_size(event_props) <= 8192),
  ADD COLUMN delivery_mode text NOT NULL DEFAULT 'each'
    CONSTRAINT webhook_triggers_delivery_mode
      CHECK (delivery_mode IN ('each', 'digest')),
  ADD CONSTRAINT webhook_triggers_event_name_for_custom_event
    CHECK ((trigger_type = 'custom_event') = (event_name IS NOT NULL)),
  ADD CONSTRAINT webhook_triggers_event_props_for_custom_event
    CHECK (trigger_type = 'custom_event' OR event_props = '{}'),
  ADD CONSTRAINT webhook_triggers_digest_for_occurrences
    CHECK (delivery_mode = 'each' OR trigger_type IN ('goal_completion', 'custom_event'));

-- The goal scanner claims both kinds it scans through one index.
CREATE INDEX webhook_triggers_occurrence_due_idx ON webhook_triggers (next_evaluation_at)
  WHERE enabled AND trigger_type IN ('goal_completion', 'custom_event');
DROP INDEX webhook_triggers_goal_due_idx;

-- The event type a trigger makes: its type, or `<type>_digest`.
CREATE FUNCTION plausible_webhooks_trigger_event_type(trigger_type text, delivery_mode text)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN delivery_mode = 'digest' THEN trigger_type || '_digest' ELSE trigger_type END
$$;

CREATE OR REPLACE FUNCTION plausible_webhooks_subscribe_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_type text := plausible_webhooks_trigger_event_type(NEW.trigger_type, NEW.delivery_mode);
BEGIN
  UPDATE webhooks SET events = array_append(events, v_type)
  WHERE id = NEW.webhook_id AND NOT plausible_webhooks_subscribed(events, v_type);
  RETURN NULL;
END
$$;

DROP TRIGGER webhook_triggers_subscribe ON webhook_triggers;
CREATE TRIGGER webhook_triggers_subscribe
  AFTER INSERT OR UPDATE OF enabled, trigger_type, webhook_id, delivery_mode ON webhook_triggers
  FOR EACH ROW WHEN (NEW.enabled) EXECUTE FUNCTION plausible_webhooks_subscribe_trigger();

-- A trigger switched to another mode starts its cursor afresh (a digest's
-- cursor is a window boundary, an occurrence scan's the last instant read).
CREATE FUNCTION plausible_webhooks_trigger_mode_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.delivery_mode IS DISTINCT FROM OLD.delivery_mode
     OR NEW.window_secs IS DISTINCT FROM OLD.window_secs THEN
    NEW.goal_floor := now();
    NEW.goal_cursor := NULL;
    NEW.next_evaluation_at := now();
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER plausible_webhooks_trigger_mode_changed
  BEFORE UPDATE OF delivery_mode, window_secs ON webhook_triggers
  FOR EACH ROW EXECUTE FUNCTION plausible_webhooks_trigger_mode_changed();
