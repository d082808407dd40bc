-- Issue 27 (b'): the ready table of split.sql, with the lease kept in the
-- wide row: the claim deletes ready rows and updates the wide row's status
-- and lease (HOT: no index covers them), recording the row in a narrow
-- `split_inflight` (webhook, delivery) so the rescuer and the limits find
-- what is in flight; the completion updates the wide row again (HOT),
-- fenced as today, and deletes the in-flight row. The wide row says what it
-- says today at every moment.
WITH r AS (SELECT delivery_id FROM split_ready WHERE webhook_id = (SELECT id FROM webhooks LIMIT 1) AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT 50 FOR UPDATE SKIP LOCKED),
c AS (DELETE FROM split_ready x WHERE x.delivery_id = ANY(ARRAY(SELECT delivery_id FROM r)) RETURNING x.delivery_id),
d AS (UPDATE split_deliveries d SET status = 'delivering', attempts = LEAST(d.attempts, 999) + 1, locked_by = ('c' || :client_id), locked_until = now() + interval '30 s'
      FROM c WHERE d.id = c.delivery_id AND d.status = 'pending'
      RETURNING d.id, d.webhook_id, d.event_type, d.payload, d.attempts, d.locked_until),
l AS (INSERT INTO split_inflight SELECT webhook_id, id FROM d)
SELECT id, event_type, payload, attempts, locked_until FROM d;
WITH d AS (UPDATE split_deliveries d SET status = 'success', locked_by = NULL, locked_until = NULL, last_response_code = 200, delivered_at = now(), finished_at = now()
           FROM split_inflight f
           WHERE f.webhook_id = (SELECT id FROM webhooks LIMIT 1) AND d.id = f.delivery_id AND d.status = 'delivering' AND d.locked_by = ('c' || :client_id)
           RETURNING d.id, d.webhook_id, d.attempts),
f AS (DELETE FROM split_inflight f USING d WHERE f.webhook_id = d.webhook_id AND f.delivery_id = d.id)
INSERT INTO webhook_delivery_attempts (delivery_id, attempt, status_code, duration_ms, attempted_at, instance) SELECT id, attempts, 200, 1, now(), 'x' FROM d;
