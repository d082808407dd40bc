-- Times the daemon can read. PostgreSQL's timestamptz holds `infinity`,
-- `-infinity` and years up to 294276; the daemon's time library (and RFC
-- 3339, the format of the API and of the envelope's `timestamp`) holds years
-- 1 to 9999. A row with such a time made every read of it panic: the
-- claimer, the trigger services (the daemon crash-looped) and the read paths.
--
-- Every time below is written by the daemon itself (now(), now() plus a
-- schedule) or, for a delivery's inserted_at, by its default or Plausible's
-- own clock: none of those writers needs anything outside 0001-9999, so
-- such values are refused from any writer. next_attempt_at is not checked:
-- `infinity` there means "never due" and is read as that.
CREATE FUNCTION plausible_webhooks_time_ok(t timestamptz) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT t IS NULL OR (t >= '0001-01-01 00:00:00+00' AND t < '10000-01-01 00:00:00+00')
$$;

-- Existing rows first, so the checks cannot fail on a live database. One
-- rule: a time past 9999 (or infinity) becomes now(); one before year 1 (or
-- -infinity) becomes NULL where NULL means "not yet" / "never", else now().
-- Exceptions say why beside them.
CREATE FUNCTION pg_temp.readable(t timestamptz, later timestamptz, earlier timestamptz)
RETURNS timestamptz LANGUAGE sql STABLE AS $$
  SELECT CASE WHEN plausible_webhooks_time_ok(t) THEN t WHEN t > now() THEN later ELSE earlier END
$$;

UPDATE webhooks SET
  inserted_at = pg_temp.readable(inserted_at, now(), now()),
  -- (the webhooks_touch trigger sets updated_at to now() on any update)
  updated_at = pg_temp.readable(updated_at, now(), now()),
  disabled_at = pg_temp.readable(disabled_at, now(), now()),
  failing_since = pg_temp.readable(failing_since, now(), now()),
  -- Still deleted; the retention clock starts now.
  deleted_at = pg_temp.readable(deleted_at, now(), now()),
  -- A previous secret meant to sign "forever" signs for the longest grace
  -- rotate-secret gives (30 days), so receivers have time to switch.
  previous_secret_expires_at = pg_temp.readable(previous_secret_expires_at, now() + interval '30 days', NULL)
WHERE NOT (plausible_webhooks_time_ok(inserted_at) AND plausible_webhooks_time_ok(updated_at)
       AND plausible_webhooks_time_ok(disabled_at) AND plausible_webhooks_time_ok(failing_since)
       AND plausible_webhooks_time_ok(deleted_at) AND plausible_webhooks_time_ok(previous_secret_expires_at));

UPDATE webhook_triggers SET
  -- Evaluated at the next round.
  next_evaluation_at = pg_temp.readable(next_evaluation_at, now(), now()),
  -- Past everything: scans go on from now (nothing replayed); before
  -- everything: as a new trigger, from its creation (bounded by max_catchup).
  goal_cursor = pg_temp.readable(goal_cursor, now(), NULL),
  goal_floor = pg_temp.readable(goal_floor, now(), NULL),
  -- A firing in the future holds the cooldown from now; one before
  -- everything is no firing.
  last_fired_at = pg_temp.readable(last_fired_at, now(), NULL),
  -- Evaluated and derived afresh.
  last_evaluated_at = pg_temp.readable(last_evaluated_at, NULL, NULL),
  threshold_derived_at = pg_temp.readable(threshold_derived_at, NULL, NULL),
  inserted_at = pg_temp.readable(inserted_at, now(), now()),
  updated_at = pg_temp.readable(updated_at, now(), now())
WHERE NOT (plausible_webhooks_time_ok(next_evaluation_at) AND plausible_webhooks_time_ok(goal_cursor)
       AND plausible_webhooks_time_ok(goal_floor) AND plausible_webhooks_time_ok(last_fired_at)
       AND plausible_webhooks_time_ok(last_evaluated_at) AND plausible_webhooks_time_ok(threshold_derived_at)
       AND plausible_webhooks_time_ok(inserted_at) AND plausible_webhooks_time_ok(updated_at));

UPDATE webhook_deliveries SET
  -- The envelope's timestamp: the time of the repair is the best known.
  inserted_at = pg_temp.readable(inserted_at, now(), now()),
  -- An expired lease: the rescuer returns a `delivering` row to the queue
  -- (a lease at infinity never expired: the row was never rescued).
  locked_until = pg_temp.readable(locked_until, now(), now()),
  delivered_at = pg_temp.readable(delivered_at, now(), now()),
  finished_at = pg_temp.readable(finished_at, now(), now())
WHERE NOT (plausible_webhooks_time_ok(inserted_at) AND plausible_webhooks_time_ok(locked_until)
       AND plausible_webhooks_time_ok(delivered_at) AND plausible_webhooks_time_ok(finished_at));

UPDATE webhook_delivery_attempts SET attempted_at = pg_temp.readable(attempted_at, now(), now())
WHERE NOT plausible_webhooks_time_ok(attempted_at);

DROP FUNCTION pg_temp.readable(timestamptz, timestamptz, timestamptz);

ALTER TABLE webhooks ADD CONSTRAINT webhooks_times_in_range CHECK (
  plausible_webhooks_time_ok(inserted_at) AND plausible_webhooks_time_ok(updated_at)
  AND plausible_webhooks_time_ok(disabled_at) AND plausible_webhooks_time_ok(failing_since)
  AND plausible_webhooks_time_ok(deleted_at) AND plausible_webhooks_time_ok(previous_secret_expires_at));
ALTER TABLE webhook_triggers ADD CONSTRAINT webhook_triggers_times_in_range CHECK (
  plausible_webhooks_time_ok(next_evaluation_at) AND plausible_webhooks_time_ok(goal_cursor)
  AND plausible_webhooks_time_ok(goal_floor) AND plausible_webhooks_time_ok(last_fired_at)
  AND plausible_webhooks_time_ok(last_evaluated_at) AND plausible_webhooks_time_ok(threshold_derived_at)
  AND plausible_webhooks_time_ok(inserted_at) AND plausible_webhooks_time_ok(updated_at));
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_times_in_range CHECK (
  plausible_webhooks_time_ok(inserted_at) AND plausible_webhooks_time_ok(locked_until)
  AND plausible_webhooks_time_ok(delivered_at) AND plausible_webhooks_time_ok(finished_at));
ALTER TABLE webhook_delivery_attempts ADD CONSTRAINT webhook_delivery_attempts_times_in_range CHECK (
  plausible_webhooks_time_ok(attempted_at));
