-- The daemon's design (src/queue/claimer.rs, completer.rs), reduced to its
-- writes: claim 50 due rows (FOR UPDATE SKIP LOCKED, status and lease set),
-- then complete them with one attempt row each.
WITH c AS (SELECT id FROM webhook_deliveries WHERE webhook_id = (SELECT id FROM webhooks LIMIT 1) AND status = 'pending' AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT 50 FOR UPDATE SKIP LOCKED)
UPDATE webhook_deliveries d SET status = 'delivering', attempts = LEAST(d.attempts, 999) + 1, locked_by = ('c' || :client_id), locked_until = now() + interval '30 s' FROM c WHERE d.id = c.id RETURNING d.id, d.event_type, d.payload, d.attempts, d.locked_until;
WITH d AS (UPDATE webhook_deliveries d SET status = 'success', locked_by = NULL, locked_until = NULL, last_response_code = 200, delivered_at = now(), finished_at = now() WHERE d.webhook_id = (SELECT id FROM webhooks LIMIT 1) AND d.status = 'delivering' AND d.locked_by = ('c' || :client_id) RETURNING d.id, d.attempts)
INSERT INTO webhook_delivery_attempts (delivery_id, attempt, status_code, duration_ms, attempted_at, instance) SELECT id, attempts, 200, 1, now(), 'x' FROM d;
