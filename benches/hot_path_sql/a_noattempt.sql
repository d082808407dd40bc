-- a.sql without the attempt rows: what they cost.
WITH c AS (SELECT id FROM webhook_deliveries WHERE webhook_id = (SELECT id FROM webhooks LIMIT 1) AND status = 'pending' AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT 50 FOR UPDATE SKIP LOCKED)
UPDATE webhook_deliveries d SET status = 'delivering', attempts = LEAST(d.attempts, 999) + 1, locked_by = ('c' || :client_id), locked_until = now() + interval '30 s' FROM c WHERE d.id = c.id RETURNING d.id, d.event_type, d.payload, d.attempts, d.locked_until;
UPDATE webhook_deliveries d SET status = 'success', locked_by = NULL, locked_until = NULL, last_response_code = 200, delivered_at = now(), finished_at = now() WHERE d.webhook_id = (SELECT id FROM webhooks LIMIT 1) AND d.status = 'delivering' AND d.locked_by = ('c' || :client_id);
