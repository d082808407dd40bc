-- Trigger evaluation state beyond 0001 (see src/triggers/).

ALTER TABLE webhook_triggers
  -- A spike/drop trigger without a threshold derives one from the site's last
  -- 7 days (rule in src/triggers/threshold.rs), at most once a day.
  ADD COLUMN derived_threshold integer,
  ADD COLUMN threshold_derived_at timestamptz,
  -- What the last evaluation counted (unique visitors in the window), for operators.
  ADD COLUMN last_value integer,
  -- Goal triggers: events before this instant are never sent (set when a
  -- trigger is switched back on, so the time it was off is not replayed).
  ADD COLUMN goal_floor timestamptz;

-- Two services claim due triggers (the spike/drop evaluator every minute, the
-- goal scanner every second): each gets its own partial index, so neither
-- walks past the other's due rows.
CREATE INDEX webhook_triggers_traffic_due_idx ON webhook_triggers (next_evaluation_at)
  WHERE enabled AND trigger_type IN ('visitor_spike', 'traffic_drop');
CREATE INDEX webhook_triggers_goal_due_idx ON webhook_triggers (next_evaluation_at)
  WHERE enabled AND trigger_type = 'goal_completion';
DROP INDEX webhook_triggers_due_idx;

-- A trigger switched back on starts afresh: a goal trigger does not replay
-- the completions of the time it was off (as a disabled webhook does not),
-- and a spike/drop trigger is evaluated at the next round.
CREATE FUNCTION plausible_webhooks_trigger_reenabled() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.enabled AND NOT OLD.enabled THEN
    NEW.goal_floor := now();
    NEW.next_evaluation_at := now();
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER plausible_webhooks_trigger_reenabled
  BEFORE UPDATE OF enabled ON webhook_triggers
  FOR EACH ROW EXECUTE FUNCTION plausible_webhooks_trigger_reenabled();

-- A goal trigger names a goal of its own webhook's site; another site's goal
-- would never match (the scanner reads the webhook's site) and fail silently.
CREATE FUNCTION plausible_webhooks_trigger_goal_site() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.goal_id IS NOT NULL AND NOT EXISTS (
      SELECT 1 FROM goals g JOIN webhooks w ON w.site_id = g.site_id
      WHERE g.id = NEW.goal_id AND w.id = NEW.webhook_id) THEN
    RAISE EXCEPTION 'goal % is not a goal of the webhook''s site', NEW.goal_id
      USING ERRCODE = 'check_violation',
            HINT = 'name one of the site''s goals, or leave goal_id NULL for every goal of the site';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER plausible_webhooks_trigger_goal_site
  BEFORE INSERT OR UPDATE OF goal_id, webhook_id ON webhook_triggers
  FOR EACH ROW EXECUTE FUNCTION plausible_webhooks_trigger_goal_site();
