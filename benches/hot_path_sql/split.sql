-- Issue 27 (b): claim state out of the wide row (solid_queue's
-- ready_executions → claimed_executions, Hatchet's v1_queue_item →
-- v1_task_runtime). The claim deletes ready rows and inserts lease rows,
-- reading the wide row only; the completion deletes the lease and writes
-- the outcome into the wide row once, which no index covers: HOT.
WITH r AS (SELECT delivery_id FROM split_ready WHERE webhook_id = (SELECT id FROM webhooks LIMIT 1) AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT 50 FOR UPDATE SKIP LOCKED),
c AS (DELETE FROM split_ready x USING r WHERE x.delivery_id = r.delivery_id RETURNING x.delivery_id),
l AS (INSERT INTO split_leases (delivery_id, webhook_id, locked_by, locked_until, attempt)
      SELECT d.id, d.webhook_id, ('c' || :client_id), now() + interval '30 s', LEAST(d.attempts, 999) + 1
      FROM c JOIN split_deliveries d ON d.id = c.delivery_id
      RETURNING delivery_id, attempt, locked_until)
SELECT d.id, d.event_type, d.payload, l.attempt, l.locked_until FROM l JOIN split_deliveries d ON d.id = l.delivery_id;
WITH l AS (DELETE FROM split_leases WHERE locked_by = ('c' || :client_id) RETURNING delivery_id, attempt),
d AS (UPDATE split_deliveries d SET status = 'success', attempts = l.attempt, last_response_code = 200, delivered_at = now(), finished_at = now() FROM l WHERE d.id = l.delivery_id RETURNING d.id, d.attempts)
INSERT INTO webhook_delivery_attempts (delivery_id, attempt, status_code, duration_ms, attempted_at, instance) SELECT id, attempts, 200, 1, now(), 'x' FROM d;
