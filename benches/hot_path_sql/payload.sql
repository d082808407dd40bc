-- The ~1.1 KB payload every script writes (the delivery benchmark's), made
-- once here: measure.sh loads it before seeding.
CREATE OR REPLACE FUNCTION bench_payload(g int) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
  SELECT jsonb_build_object(
            'goal_id', 7, 'goal_name', 'Signup', 'n', g,
            'pathname', '/register/step-' || g,
            'referrer', 'https://news.example.com/article/' || md5(g::text),
            'country', 'EE', 'region', 'EE-37', 'city', 'Tallinn',
            'device', 'Desktop', 'browser', 'Firefox', 'os', 'Linux',
            'props', jsonb_build_object('plan', 'business', 'ab', 'variant-b', 'seats', 12),
            'notes', repeat(md5((g * 7)::text), 24))
$$;
