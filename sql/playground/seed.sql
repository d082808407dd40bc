-- The playground's rows (`demo --keep`), on top of the Plausible fixture the
-- tests use (which holds no rows): a team, the site example.com as the docs'
-- worked session names it, two goals and a week of analytics events, so
-- that the CLI, the API, spikes, drops and goal completions have something
-- to work on without Plausible.
WITH t AS (
  INSERT INTO teams (name, inserted_at, updated_at)
  VALUES ('Playground team', now(), now()) RETURNING id)
INSERT INTO sites (domain, timezone, team_id, inserted_at, updated_at)
SELECT 'example.com', 'Etc/UTC', id, now(), now() FROM t;

-- goal 1 is the `goal_id` of docs/cli.md's psql line.
INSERT INTO goals (site_id, event_name, page_path, display_name, scroll_threshold, custom_props, inserted_at, updated_at)
SELECT id, 'Signup', NULL, 'Signup', -1, '{}', now(), now() FROM sites WHERE domain = 'example.com';
INSERT INTO goals (site_id, event_name, page_path, display_name, scroll_threshold, custom_props, inserted_at, updated_at)
SELECT id, NULL, '/pricing', 'Visit /pricing', -1, '{}', now(), now() FROM sites WHERE domain = 'example.com';

-- A week of pageviews, a few visitors an hour (the spike and drop
-- triggers derive their thresholds from it), and a Signup now and then.
INSERT INTO events_v2 (site_id, "timestamp", name, pathname, user_id, session_id, referrer_source, meta_key, meta_value)
SELECT s.id, (now() AT TIME ZONE 'UTC') - make_interval(hours => h, mins => v * 7),
       CASE WHEN v = 0 AND h % 5 = 0 THEN 'Signup' ELSE 'pageview' END,
       (ARRAY['/', '/pricing', '/blog/launch', '/register'])[1 + (h + v) % 4],
       h * 10 + v, h * 10 + v,
       (ARRAY['Google', 'Direct / None', 'Hacker News'])[1 + v % 3], '{}', '{}'
FROM sites s, generate_series(1, 7 * 24) h, generate_series(0, 3) v
WHERE s.domain = 'example.com';
