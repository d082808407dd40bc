-- What a claim budgets for a row's payload (the bytes in flight bound,
-- src/queue/admission.rs): the size the payload trigger of migration 5
-- measures anyway, kept for payloads over 4096 bytes (smaller ones are
-- budgeted by their stored size, which the claim reads for free). Adding a
-- nullable column rewrites nothing; rows queued before are budgeted by their
-- stored size (for a compressed payload, less than its text).
ALTER TABLE webhook_deliveries ADD COLUMN payload_bytes integer;

CREATE OR REPLACE FUNCTION plausible_webhooks_payload_size_check() RETURNS trigger
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
  -- Whatever a writer put here, the measure is ours.
  NEW.payload_bytes := v_size;
  RETURN NEW;
END
$$;

-- The trigger fires on payload changes only; a direct write of
-- payload_bytes alone is taken as it is, and the claim never budgets less
-- than the stored size anyway.
