-- Limits on what any writer may put in a delivery row (Plausible inserts
-- rows itself): a value the daemon cannot work with is refused at INSERT,
-- naming the constraint, instead of stopping the queue later.
--
-- attempts: 0 for a new row (the default). The claim adds 1 and stops at
-- 1000, so no claim can overflow the integer (2147483647 + 1 made every
-- claim fail, for every site) and a negative count (zero retries, attempt
-- numbers below 1) cannot be written. Rows already outside the range are
-- brought into it first: negative ones start afresh, huge ones keep their
-- meaning (retries used up: the next attempt is their last).
UPDATE webhook_deliveries SET attempts = LEAST(GREATEST(attempts, 0), 1000)
WHERE attempts < 0 OR attempts > 1000;
ALTER TABLE webhook_deliveries
  ADD CONSTRAINT webhook_deliveries_attempts_range CHECK (attempts BETWEEN 0 AND 1000);

-- A `delivering` row always holds a lease: the rescuer finds crashed
-- claims by their expired `locked_until`, and a row without one would stay
-- `delivering` forever. Such rows already there get an expired lease now,
-- so the rescuer returns them to the queue (logged as an interrupted attempt).
UPDATE webhook_deliveries SET locked_until = now()
WHERE status = 'delivering' AND locked_until IS NULL;
ALTER TABLE webhook_deliveries
  ADD CONSTRAINT webhook_deliveries_delivering_has_lease
  CHECK (status <> 'delivering' OR locked_until IS NOT NULL);

-- Header values: HTTP carries visible characters, spaces and tabs; any
-- other control character (\x01, \x7f, …) made the header drop out of the
-- request while the delivery reported success. New writes are refused here;
-- a row written before this check fails its deliveries naming the header.
CREATE OR REPLACE FUNCTION plausible_webhooks_headers_ok(h jsonb) RETURNS boolean
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
          OR (e.v #>> '{}') ~ '[\x00-\x08\x0a-\x1f\x7f]'
     )
$$;
