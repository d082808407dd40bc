-- Seeds the queue for measure.sh: :n due rows of ~1.1 KB (the delivery
-- benchmark's payload) and 500 rows in flight at its head (a slow receiver's
-- share), as leased rows (:inflight_status delivering) or lease rows (b).
TRUNCATE webhook_delivery_attempts, webhook_deliveries CASCADE;
DROP TABLE IF EXISTS webhook_leases;
CREATE TABLE webhook_leases (
    delivery_id uuid PRIMARY KEY REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    webhook_id uuid NOT NULL,
    locked_by text NOT NULL,
    locked_until timestamptz NOT NULL,
    attempt int NOT NULL);
CREATE INDEX webhook_leases_by_idx ON webhook_leases (locked_by);
CHECKPOINT;
INSERT INTO webhook_deliveries (webhook_id, event_type, payload, next_attempt_at)
SELECT (SELECT id FROM webhooks LIMIT 1), 'goal_completion', bench_payload(g),
       now() - interval '1 hour' + g * interval '1 microsecond'
FROM generate_series(1, :n) g;
-- 500 in flight at the head of the queue (a slow receiver's share)
WITH h AS (SELECT id FROM webhook_deliveries ORDER BY next_attempt_at LIMIT 500)
UPDATE webhook_deliveries d SET status = :'inflight_status', attempts = 1, locked_by = 'other', locked_until = now() + interval '1 day'
FROM h WHERE d.id = h.id;
INSERT INTO webhook_leases SELECT id, webhook_id, 'other', now() + interval '1 day', 1
FROM webhook_deliveries WHERE locked_by = 'other' AND :'inflight_status' = 'pending';
VACUUM ANALYZE webhook_deliveries; VACUUM ANALYZE webhook_leases; VACUUM ANALYZE webhooks;
