-- Per-webhook limits that hold across instances (src/queue/limits.rs).
--
-- A webhook's own max_concurrency and its rate limit (its own, or a non-zero
-- configured default) are counted over the whole deployment. Only the claims
-- of such webhooks use what follows; the claim of a webhook without them
-- touches neither the table nor anything else new.
--
-- One row per limited webhook, made at its first limited claim. Claims lock it
-- (FOR UPDATE SKIP LOCKED) before counting the webhook's live leases, so two
-- instances never count at once; it holds the rate bucket (no counter of
-- deliveries: those are counted from the delivery rows, so nothing can leak).
CREATE TABLE webhook_limit_state (
  webhook_id uuid PRIMARY KEY REFERENCES webhooks (id) ON DELETE CASCADE,
  -- Rate tokens left at refilled_at (may be below 0 after a lowered limit);
  -- NULL: a full bucket.
  tokens float8,
  refilled_at timestamptz
) WITH (
  -- Updated at every limited claim, never in an indexed column: room on each
  -- page keeps those updates HOT.
  fillfactor = 50
);

-- Held deliveries of a webhook are its `delivering` rows with a live lease:
-- the lease index gains the webhook id in front, so counting them reads only
-- that webhook's entries. One index replaces another: the claim and the
-- completion maintain as many entries as before. The rescuer's scan of
-- expired leases reads the whole index, which holds only rows in flight.
CREATE INDEX webhook_deliveries_webhook_lease_idx
  ON webhook_deliveries (webhook_id, locked_until) WHERE status = 'delivering';
DROP INDEX webhook_deliveries_lease_idx;
