-- Enqueueing 50 deliveries of ~1.1 KB in one INSERT into webhook_deliveries
-- (today's design).
INSERT INTO webhook_deliveries (webhook_id, event_type, payload)
SELECT (SELECT id FROM webhooks LIMIT 1), 'enq', jsonb_build_object(
            'goal_id', 7, 'goal_name', 'Signup', 'n', g,
            'pathname', '/register/step-' || g,
            'referrer', 'https://news.example.com/article/' || md5(g::text),
            'country', 'EE', 'region', 'EE-37', 'city', 'Tallinn',
            'device', 'Desktop', 'browser', 'Firefox', 'os', 'Linux',
            'props', jsonb_build_object('plan', 'business', 'ab', 'variant-b', 'seats', 12),
            'notes', repeat(md5((g * 7)::text), 24))
FROM generate_series(1, 50) g;
