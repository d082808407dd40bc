-- Seeds the ready/lease split designs (split.sql, lazy.sql; issue 27): the
-- wide row in `split_deliveries`, as webhook_deliveries but without the
-- indexes whose predicates name `status` (the claim reads `split_ready`,
-- the rescuer `split_leases`), so an update of the outcome changes no
-- indexed column and can be HOT. The same :n rows of ~1.1 KB as seed.sql,
-- and 500 in flight at the head as lease rows of another worker.
TRUNCATE webhook_delivery_attempts, webhook_deliveries CASCADE;
DROP TABLE IF EXISTS split_inflight, split_leases, split_ready, split_deliveries;
CREATE TABLE split_deliveries (LIKE webhook_deliveries INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
  WITH (fillfactor = 60);
ALTER TABLE split_deliveries ADD PRIMARY KEY (id);
CREATE UNIQUE INDEX ON split_deliveries (webhook_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX ON split_deliveries (webhook_id, inserted_at);
CREATE INDEX ON split_deliveries (trigger_id) WHERE trigger_id IS NOT NULL;
CREATE INDEX ON split_deliveries USING brin (inserted_at);
-- As on webhook_deliveries: the outcome's update evaluates the same WHEN.
CREATE TRIGGER split_exhausted AFTER UPDATE OF status ON split_deliveries
  FOR EACH ROW
  WHEN (NEW.status = 'failed' AND OLD.status <> 'failed' AND NEW.attempts > 0
        AND NEW.event_type NOT LIKE 'webhook.%' AND NEW.event_type NOT LIKE 'delivery.%')
  EXECUTE FUNCTION plausible_webhooks_delivery_exhausted();
-- What is due: one narrow row per pending delivery, deleted by the claim.
CREATE TABLE split_ready (
  delivery_id uuid PRIMARY KEY,
  webhook_id uuid NOT NULL,
  next_attempt_at timestamptz NOT NULL);
CREATE INDEX ON split_ready (webhook_id, next_attempt_at);
-- Enqueueing as on webhook_deliveries (its payload check and NOTIFY), plus
-- the ready row, written by a statement trigger so a writer's INSERT into
-- the wide table stays as it is.
CREATE TRIGGER split_payload_size BEFORE INSERT OR UPDATE OF payload ON split_deliveries
  FOR EACH ROW EXECUTE FUNCTION plausible_webhooks_payload_size_check();
CREATE TRIGGER split_notify AFTER INSERT ON split_deliveries
  FOR EACH STATEMENT EXECUTE FUNCTION plausible_webhooks_notify();
CREATE OR REPLACE FUNCTION split_make_ready() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO split_ready SELECT id, webhook_id, next_attempt_at FROM added WHERE status = 'pending';
  RETURN NULL;
END $$;
CREATE TRIGGER split_ready_rows AFTER INSERT ON split_deliveries
  REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION split_make_ready();
-- What is in flight: the lease, its fence (locked_by, attempt), deleted by
-- the completion.
CREATE TABLE split_leases (
  delivery_id uuid PRIMARY KEY,
  webhook_id uuid NOT NULL,
  locked_by text NOT NULL,
  locked_until timestamptz NOT NULL,
  attempt int NOT NULL);
CREATE INDEX ON split_leases (locked_by);
CREATE INDEX ON split_leases (webhook_id, locked_until);
-- hot.sql: what is in flight, as an index only (the lease stays in the
-- wide row, written by HOT updates).
CREATE TABLE split_inflight (
  webhook_id uuid NOT NULL,
  delivery_id uuid NOT NULL,
  PRIMARY KEY (webhook_id, delivery_id));
CHECKPOINT;
INSERT INTO split_deliveries (webhook_id, event_type, payload, next_attempt_at)
SELECT (SELECT id FROM webhooks LIMIT 1), 'goal_completion', bench_payload(g),
       now() - interval '1 hour' + g * interval '1 microsecond'
FROM generate_series(1, :n) g;
-- 500 in flight at the head of the queue (a slow receiver's share)
WITH h AS (DELETE FROM split_ready WHERE delivery_id IN
             (SELECT delivery_id FROM split_ready ORDER BY next_attempt_at LIMIT 500)
           RETURNING delivery_id, webhook_id)
INSERT INTO split_leases SELECT delivery_id, webhook_id, 'other', now() + interval '1 day', 1 FROM h;
VACUUM ANALYZE split_deliveries; VACUUM ANALYZE split_ready; VACUUM ANALYZE split_leases; VACUUM ANALYZE webhooks;
