-- Tracking stopped (docs/triggers.md#tracking-stopped, docs/events.md): a
-- `tracking_stopped` trigger watches a site that normally receives events
-- (it had events on most of the previous 7 days of its timezone) and sends
-- `site.tracking_stopped` once when none arrived for `window_secs` (the
-- script was removed or broke), and `site.tracking_resumed` once when events
-- arrive again. Its state is the existing `armed` (false during an outage)
-- and `last_fired_at`; `last_value` holds the outage's baseline.

ALTER TABLE webhook_triggers DROP CONSTRAINT webhook_triggers_type;
ALTER TABLE webhook_triggers ADD CONSTRAINT webhook_triggers_type
  CHECK (trigger_type IN ('visitor_spike', 'traffic_drop', 'goal_completion', 'custom_event',
                          'tracking_stopped'));

-- Its own claim (the tracking service), through its own index.
CREATE INDEX webhook_triggers_tracking_due_idx ON webhook_triggers (next_evaluation_at)
  WHERE enabled AND trigger_type = 'tracking_stopped';

-- The event types a trigger makes: one, but two for a tracking trigger.
CREATE FUNCTION plausible_webhooks_trigger_event_types(trigger_type text, delivery_mode text)
RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN trigger_type = 'tracking_stopped'
              THEN ARRAY['site.tracking_stopped', 'site.tracking_resumed']
              ELSE ARRAY[plausible_webhooks_trigger_event_type(trigger_type, delivery_mode)] END
$$;

CREATE OR REPLACE FUNCTION plausible_webhooks_subscribe_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_type text;
BEGIN
  FOREACH v_type IN ARRAY plausible_webhooks_trigger_event_types(NEW.trigger_type, NEW.delivery_mode) LOOP
    UPDATE webhooks SET events = array_append(events, v_type)
    WHERE id = NEW.webhook_id AND NOT plausible_webhooks_subscribed(events, v_type);
  END LOOP;
  RETURN NULL;
END
$$;
