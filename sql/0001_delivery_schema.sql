-- plausible-webhooks: the daemon's own tables, beside Plausible's schema.
-- Requires Plausible's `sites (id bigint)` and `goals (id bigint)` tables.
-- Timestamps are timestamptz (stored as UTC).

-- Custom headers may not override what the daemon owns: the content type, the
-- user agent, and every signature header. Names are compared case-insensitively.
CREATE FUNCTION plausible_webhooks_headers_ok(h jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT jsonb_typeof(h) = 'object'
     AND NOT EXISTS (
       SELECT 1 FROM jsonb_each(h) AS e(k, v)
       WHERE jsonb_typeof(e.v) <> 'string'
          OR lower(e.k) IN ('content-type', 'user-agent', 'content-length', 'host',
                            'x-webhook-signature', 'webhook-id', 'webhook-timestamp',
                            'webhook-signature',
                            -- hop-by-hop: the HTTP client owns these
                            'connection', 'keep-alive', 'proxy-connection', 'te',
                            'trailer', 'transfer-encoding', 'upgrade', 'expect')
          OR e.k !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]{1,128}$'
          OR (e.v #>> '{}') ~ '[\r\n\x00]'
     )
$$;

CREATE TABLE webhooks (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  site_id bigint NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
  name text NOT NULL CONSTRAINT webhooks_name_length CHECK (char_length(name) BETWEEN 1 AND 255),
  url text NOT NULL
    -- https, a host without userinfo, then a path, query or fragment (or nothing).
    CONSTRAINT webhooks_url_https CHECK (url ~ '^https://[^/?#@\s]+([/?#]\S*)?$' AND char_length(url) <= 2048),
  secret text NOT NULL CONSTRAINT webhooks_secret_length CHECK (char_length(secret) BETWEEN 32 AND 256),
  -- Rotation: the previous secret keeps signing (alongside the new one) until it expires.
  previous_secret text
    CONSTRAINT webhooks_previous_secret_length CHECK (previous_secret IS NULL OR char_length(previous_secret) BETWEEN 32 AND 256),
  previous_secret_expires_at timestamptz,
  headers jsonb NOT NULL DEFAULT '{}'
    CONSTRAINT webhooks_headers_allowed CHECK (plausible_webhooks_headers_ok(headers)),
  enabled boolean NOT NULL DEFAULT true,
  -- NULL: the daemon's configured schedule. Otherwise seconds after each failed attempt.
  retry_schedule_secs integer[]
    CONSTRAINT webhooks_retry_schedule_limits CHECK (
      retry_schedule_secs IS NULL OR cardinality(retry_schedule_secs) = 0 OR (
        cardinality(retry_schedule_secs) <= 10
        AND array_ndims(retry_schedule_secs) = 1
        AND array_position(retry_schedule_secs, NULL) IS NULL
        AND 0 < ALL (retry_schedule_secs) AND 86400 >= ALL (retry_schedule_secs))),
  -- NULL: the daemon's configured defaults.
  rate_limit_per_sec integer CONSTRAINT webhooks_rate_limit_positive CHECK (rate_limit_per_sec > 0),
  max_concurrency integer CONSTRAINT webhooks_max_concurrency_positive CHECK (max_concurrency BETWEEN 1 AND 1000),
  -- Health: consecutive deliveries that ended `failed`, and since when.
  consecutive_failures integer NOT NULL DEFAULT 0,
  failing_since timestamptz,
  disabled_reason text,
  disabled_at timestamptz,
  deleted_at timestamptz,
  inserted_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_site_id_idx ON webhooks (site_id);

-- Any change to a webhook, by whatever writer, moves updated_at: the daemon
-- caches a webhook's signing keys and headers until it does.
-- Re-enabling a webhook (by whatever writer) starts its health afresh.
CREATE FUNCTION plausible_webhooks_touch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  IF NEW.enabled AND NOT OLD.enabled THEN
    NEW.consecutive_failures := 0;
    NEW.failing_since := NULL;
    NEW.disabled_reason := NULL;
    NEW.disabled_at := NULL;
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER webhooks_touch BEFORE UPDATE ON webhooks
  FOR EACH ROW EXECUTE FUNCTION plausible_webhooks_touch();

CREATE TABLE webhook_triggers (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  webhook_id uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
  trigger_type text NOT NULL
    CONSTRAINT webhook_triggers_type CHECK (trigger_type IN ('visitor_spike', 'traffic_drop', 'goal_completion')),
  -- NULL for spike/drop: derived from recent traffic (SPEC §5).
  threshold integer CONSTRAINT webhook_triggers_threshold_range CHECK (threshold BETWEEN 1 AND 10000000),
  -- NULL = every goal of the site. Deleting a goal deletes its triggers: a trigger
  -- must never widen to all goals because its goal went away.
  goal_id bigint REFERENCES goals (id) ON DELETE CASCADE,
  -- NULL = the type's default (spike 5 min, drop 12 h).
  window_secs integer CONSTRAINT webhook_triggers_window_range CHECK (window_secs BETWEEN 60 AND 604800),
  cooldown_secs integer NOT NULL DEFAULT 3600
    CONSTRAINT webhook_triggers_cooldown_range CHECK (cooldown_secs BETWEEN 0 AND 604800),
  enabled boolean NOT NULL DEFAULT true,
  -- Evaluation state (hysteresis and multi-instance evaluation).
  armed boolean NOT NULL DEFAULT true,
  last_fired_at timestamptz,
  last_evaluated_at timestamptz,
  next_evaluation_at timestamptz NOT NULL DEFAULT now(),
  goal_cursor timestamptz,
  inserted_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT webhook_triggers_goal_only_for_goal_completion
    CHECK (goal_id IS NULL OR trigger_type = 'goal_completion')
);
CREATE INDEX webhook_triggers_webhook_id_idx ON webhook_triggers (webhook_id);
CREATE INDEX webhook_triggers_goal_id_idx ON webhook_triggers (goal_id) WHERE goal_id IS NOT NULL;
CREATE INDEX webhook_triggers_due_idx ON webhook_triggers (next_evaluation_at) WHERE enabled;

-- The queue. `id` is the event id sent as `webhook-id`, stable across retries.
-- `failed` is final; a `pending` row with attempts > 0 is retrying.
CREATE TABLE webhook_deliveries (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  webhook_id uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
  trigger_id uuid REFERENCES webhook_triggers (id) ON DELETE SET NULL,
  event_type text NOT NULL
    CONSTRAINT webhook_deliveries_event_type_format CHECK (event_type ~ '^[a-z][a-z0-9_.]{0,63}$'),
  payload jsonb NOT NULL DEFAULT '{}'
    CONSTRAINT webhook_deliveries_payload_is_object CHECK (jsonb_typeof(payload) = 'object'),
  status text NOT NULL DEFAULT 'pending'
    CONSTRAINT webhook_deliveries_status CHECK (status IN ('pending', 'delivering', 'success', 'failed')),
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  locked_by text,
  locked_until timestamptz,
  last_response_code integer,
  last_error text,
  delivered_at timestamptz,
  finished_at timestamptz,
  inserted_at timestamptz NOT NULL DEFAULT now(),
  idempotency_key text CONSTRAINT webhook_deliveries_idempotency_key_length CHECK (char_length(idempotency_key) <= 255)
) WITH (

  -- Every claim and completion leaves a dead tuple: vacuum early and often so
  -- the hot table and its claim index stay small.
  autovacuum_vacuum_scale_factor = 0.01,
  autovacuum_vacuum_threshold = 1000,
  autovacuum_vacuum_insert_scale_factor = 0.01,
  autovacuum_analyze_scale_factor = 0.02
);
-- Idempotency keys are optional: index only the rows that have one.
CREATE UNIQUE INDEX webhook_deliveries_idempotency_idx
  ON webhook_deliveries (webhook_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- The claim: due pending rows in due order. Partial, so finished rows cost nothing here.
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
-- The rescuer: expired leases.
CREATE INDEX webhook_deliveries_lease_idx ON webhook_deliveries (locked_until) WHERE status = 'delivering';
-- The delivery log of a webhook by time, and the FK's cascade.
CREATE INDEX webhook_deliveries_webhook_time_idx ON webhook_deliveries (webhook_id, inserted_at);
CREATE INDEX webhook_deliveries_trigger_id_idx ON webhook_deliveries (trigger_id) WHERE trigger_id IS NOT NULL;
-- Pruning by age: rows arrive in time order, so a BRIN index is nearly free to maintain.
CREATE INDEX webhook_deliveries_inserted_brin ON webhook_deliveries USING brin (inserted_at);

-- One row per HTTP attempt (and one per attempt whose outcome was lost in a crash).
CREATE TABLE webhook_delivery_attempts (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  delivery_id uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
  attempt integer NOT NULL,
  status_code integer,
  response_body text,
  error text,
  duration_ms integer NOT NULL DEFAULT 0,
  attempted_at timestamptz NOT NULL DEFAULT now(),
  instance text
) WITH (autovacuum_vacuum_insert_scale_factor = 0.02);
CREATE INDEX webhook_delivery_attempts_delivery_id_idx ON webhook_delivery_attempts (delivery_id);
CREATE INDEX webhook_delivery_attempts_time_brin ON webhook_delivery_attempts USING brin (attempted_at);

-- Wake the daemon when rows are enqueued: once per statement, never per row
-- (a 50,000-row INSERT sends one notification, delivered at commit).
CREATE FUNCTION plausible_webhooks_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('plausible_webhooks', '');
  RETURN NULL;
END
$$;
CREATE TRIGGER webhook_deliveries_notify
  AFTER INSERT ON webhook_deliveries
  FOR EACH STATEMENT EXECUTE FUNCTION plausible_webhooks_notify();

-- Fan one event out to every enabled webhook of a site that has an enabled
-- trigger of this event type, in the caller's transaction. With an idempotency
-- key, a second call with the same key is a no-op for the webhooks that already
-- have it. Returns the ids of the deliveries it created.
CREATE FUNCTION webhook_enqueue(
  p_site_id bigint,
  p_event_type text,
  p_payload jsonb,
  p_idempotency_key text DEFAULT NULL
) RETURNS SETOF uuid
LANGUAGE sql VOLATILE AS $$
  INSERT INTO webhook_deliveries (webhook_id, event_type, payload, idempotency_key)
  SELECT w.id, p_event_type, p_payload, p_idempotency_key
  FROM webhooks w
  WHERE w.site_id = p_site_id
    AND w.enabled
    AND w.deleted_at IS NULL
    AND EXISTS (
      SELECT 1 FROM webhook_triggers t
      WHERE t.webhook_id = w.id AND t.enabled AND t.trigger_type = p_event_type)
  ON CONFLICT (webhook_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
  RETURNING id
$$;
