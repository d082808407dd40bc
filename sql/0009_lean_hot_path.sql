-- What each delivery costs PostgreSQL (docs/benchmarks.md, 2026-12-02 (2)).
--
-- A delivery is written three times: inserted, claimed (status 'delivering'
-- and its lease) and completed. Neither update can be HOT (status is in the
-- partial indexes' predicates), and on a full page the new version of the
-- ~1.2 KB row went to another page, so PostgreSQL logged the whole row each
-- time. With room on its page the new version stays there, and PostgreSQL
-- logs only the bytes that changed: measured, the WAL per delivery of the
-- claim and completion statements fell from 3.5 to 1.6 KiB at 60 (2.3 at 70,
-- 3.0 at 80). The price is space: a page holds about 4 deliveries instead of
-- 6, so the table (the delivery log included) is about 1.6 times as large.
-- It applies to pages written from now on.
ALTER TABLE webhook_deliveries SET (fillfactor = 60);

-- An attempt row was checked against its delivery by a foreign key: one
-- lookup and one row lock per attempt, about 15% of PostgreSQL's time per
-- delivery in a pgbench of the bare statements (benches/hot_path_sql; less
-- in the daemon's benchmark, within its spread). Attempt rows are written only by the daemon, in the statement
-- that updates their delivery row (completion, rescue), so they never name a
-- delivery that is not there. What the key also did, deleting a delivery's
-- attempts with it, a trigger per statement now does: by row, by the
-- cleaner, with a deleted webhook, and on TRUNCATE.
ALTER TABLE webhook_delivery_attempts DROP CONSTRAINT webhook_delivery_attempts_delivery_id_fkey;

CREATE FUNCTION plausible_webhooks_delete_attempts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    BEGIN
      TRUNCATE webhook_delivery_attempts;
    EXCEPTION WHEN object_in_use THEN
      -- Truncated by this very statement too (TRUNCATE webhook_delivery_attempts,
      -- webhook_deliveries), or open in a cursor: emptied row by row instead.
      DELETE FROM webhook_delivery_attempts;
    END;
  ELSE
    DELETE FROM webhook_delivery_attempts a USING gone g WHERE a.delivery_id = g.id;
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER webhook_deliveries_delete_attempts
  AFTER DELETE ON webhook_deliveries
  REFERENCING OLD TABLE AS gone
  FOR EACH STATEMENT EXECUTE FUNCTION plausible_webhooks_delete_attempts();

CREATE TRIGGER webhook_deliveries_truncate_attempts
  AFTER TRUNCATE ON webhook_deliveries
  FOR EACH STATEMENT EXECUTE FUNCTION plausible_webhooks_delete_attempts();
