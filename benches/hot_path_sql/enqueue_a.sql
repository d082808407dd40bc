-- Enqueueing 50 deliveries of ~1.1 KB in one INSERT into webhook_deliveries
-- (today's design).
INSERT INTO webhook_deliveries (webhook_id, event_type, payload)
SELECT (SELECT id FROM webhooks LIMIT 1), 'enq', bench_payload(g)
FROM generate_series(1, 50) g;
