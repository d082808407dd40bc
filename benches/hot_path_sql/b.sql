-- A narrow lease table instead of the claim's update of the wide row: the
-- claim inserts lease rows (skipping rows leased already), the completion
-- deletes them and updates the delivery once. Not adopted (docs/benchmarks.md).
WITH c AS (SELECT p.id, p.attempts FROM webhook_deliveries p WHERE p.webhook_id = (SELECT id FROM webhooks LIMIT 1) AND p.status = 'pending' AND p.next_attempt_at <= now() AND NOT EXISTS (SELECT 1 FROM webhook_leases l WHERE l.delivery_id = p.id) ORDER BY p.next_attempt_at LIMIT 50 FOR UPDATE OF p SKIP LOCKED),
l AS (INSERT INTO webhook_leases SELECT id, (SELECT id FROM webhooks LIMIT 1), ('c' || :client_id), now() + interval '30 s', LEAST(attempts + 1, 1000) FROM c ON CONFLICT DO NOTHING RETURNING delivery_id, attempt, locked_until)
SELECT d.id, d.event_type, d.payload, l.attempt, l.locked_until FROM webhook_deliveries d JOIN l ON d.id = l.delivery_id;
WITH l AS (DELETE FROM webhook_leases WHERE locked_by = ('c' || :client_id) RETURNING delivery_id, attempt),
d AS (UPDATE webhook_deliveries d SET status = 'success', attempts = l.attempt, last_response_code = 200, delivered_at = now(), finished_at = now() FROM l WHERE d.id = l.delivery_id RETURNING d.id, d.attempts)
INSERT INTO webhook_delivery_attempts (delivery_id, attempt, status_code, duration_ms, attempted_at, instance) SELECT id, attempts, 200, 1, now(), 'x' FROM d;
