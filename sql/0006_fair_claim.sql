-- The claim walks webhooks and takes each one's due rows up to what its
-- limits and fair share allow (src/queue/claimer.rs): it needs the pending
-- rows by webhook, in due order. The index by due time alone made a claim
-- read past every row of a backlog its limits held back, so it goes: one
-- index kept on the hot path instead of two.
CREATE INDEX webhook_deliveries_webhook_due_idx
  ON webhook_deliveries (webhook_id, next_attempt_at) WHERE status = 'pending';
DROP INDEX webhook_deliveries_due_idx;
