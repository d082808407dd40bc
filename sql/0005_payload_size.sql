-- A maximum payload size for deliveries, enforced here because Plausible
-- (or anyone with SQL access) enqueues by INSERT: 60 payloads of 10 MB due
-- at once took the daemon to 1.2 GiB.
--
-- The limit is the operator's (`[delivery] max_payload_bytes`), so it cannot
-- be a CHECK constant: it lives in a one-row settings table the daemon writes
-- from its config at `migrate` and at start. A CHECK's error would also only
-- say "violates check constraint" and quote the whole row; the trigger below
-- says the size, the limit and what to do, under a constraint name callers can
-- branch on (`webhook_deliveries_payload_size`, SQLSTATE 23514).
--
-- Size is octet_length(payload::text): the bytes the payload takes in the
-- request body (`data` is the payload as PostgreSQL renders jsonb).
--
-- The size measured is kept in `payload_bytes` (for payloads over 4096 bytes;
-- smaller ones NULL): the claim budgets the payload bytes in flight by it
-- (src/queue/admission.rs). Adding a nullable column rewrites nothing.
--
-- Rows already queued are left as they are, whatever their size: the limit is
-- checked when a payload is written (INSERT, or an UPDATE that changes it),
-- never when a delivery is claimed, retried, replayed or completed, so rows
-- queued before this migration (or before the limit was lowered) are still
-- delivered as written.
ALTER TABLE webhook_deliveries ADD COLUMN payload_bytes integer;

CREATE TABLE plausible_webhooks_settings (
  id boolean PRIMARY KEY DEFAULT true
    CONSTRAINT plausible_webhooks_settings_one_row CHECK (id),
  -- The range of the daemon's config (src/config.rs MIN/MAX_MAX_PAYLOAD_BYTES);
  -- the trigger's fast path relies on the lower bound.
  max_payload_bytes integer NOT NULL DEFAULT 262144
    CONSTRAINT plausible_webhooks_settings_max_payload_bytes_range
    CHECK (max_payload_bytes BETWEEN 4096 AND 16777216),
  updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO plausible_webhooks_settings DEFAULT VALUES;

-- The limit in force (the default should the row ever be deleted).
CREATE FUNCTION plausible_webhooks_max_payload_bytes() RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT coalesce((SELECT max_payload_bytes FROM plausible_webhooks_settings), 262144)
$$;

CREATE FUNCTION plausible_webhooks_payload_size_check() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_size integer;
  v_limit integer;
BEGIN
  -- An UPDATE that leaves the payload as it was refuses nothing: a row
  -- written under an earlier, higher limit stays workable.
  IF TG_OP = 'UPDATE' AND NEW.payload = OLD.payload THEN
    NEW.payload_bytes := OLD.payload_bytes;
    RETURN NEW;
  END IF;
  v_size := octet_length(NEW.payload::text);
  -- No limit can be below 4096 (the settings CHECK): the many small
  -- payloads (of 50,000-row INSERTs too) need no settings look-up.
  IF v_size IS NULL OR v_size <= 4096 THEN
    NEW.payload_bytes := NULL;
    RETURN NEW;
  END IF;
  v_limit := plausible_webhooks_max_payload_bytes();
  IF v_size > v_limit THEN
    RAISE EXCEPTION 'webhook_deliveries.payload is % bytes, over the limit of % bytes: send a smaller payload (ids and a link rather than whole records), or raise [delivery] max_payload_bytes in the plausible-webhooks config and restart the daemon',
        v_size, v_limit
      USING ERRCODE = 'check_violation',
            CONSTRAINT = 'webhook_deliveries_payload_size',
            TABLE = 'webhook_deliveries',
            COLUMN = 'payload',
            HINT = 'The limit is the daemon''s delivery.max_payload_bytes (4096..16777216), written into plausible_webhooks_settings at `plausible-webhooks migrate` and at start.';
  END IF;
  -- Whatever a writer put here, the measure is ours. (The trigger fires on
  -- payload changes only: a write of payload_bytes alone is taken as it is,
  -- and the claim never budgets less than the stored size anyway.)
  NEW.payload_bytes := v_size;
  RETURN NEW;
END
$$;

CREATE TRIGGER webhook_deliveries_payload_size
  BEFORE INSERT OR UPDATE OF payload ON webhook_deliveries
  FOR EACH ROW EXECUTE FUNCTION plausible_webhooks_payload_size_check();
