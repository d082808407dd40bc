-- The queue's state out of the wide row (issue 27; docs/how-it-works.md,
-- docs/benchmarks.md 2026-12-06 (5)): solid_queue's ready_executions →
-- claimed_executions, Hatchet's queue item → task runtime.
--
-- Until now a delivery's row was rewritten at its claim (status
-- 'delivering', lease) and again at its outcome, and neither rewrite could
-- be HOT: `status` sat in the predicates of the claim's and the lease's
-- partial indexes, so each added an entry to every index of the table.
-- Now what is due is a narrow row in `webhook_deliveries_ready` and what is
-- in flight a narrow row in `webhook_deliveries_leases`: the claim moves a
-- delivery from one to the other and only reads the wide row; the outcome
-- deletes the lease and writes the wide row once, and since no index of
-- the wide table covers a column the outcome changes, that write is HOT.
-- Measured on the hot path's SQL alone (benches/hot_path_sql, split.sql
-- against a.sql): PostgreSQL's CPU per claim and completion 65–69 µs
-- against 95–100, WAL 0.97 KiB against 1.8.
--
-- What a writer sees is unchanged: an INSERT into webhook_deliveries (or
-- webhook_enqueue) with status 'pending' (the default) queues the delivery;
-- the ready row is made by a trigger. What a reader sees changes in one
-- way: while a delivery is in flight its row keeps status 'pending' and
-- the attempts recorded so far; the lease row says it is being delivered
-- (the CLI, the API and the page show 'delivering' from it). A row written
-- 'delivering' with a lease (the test send, rows in flight at this
-- migration) gets its lease row from the same trigger.
--
-- Neither narrow table has a foreign key (one lookup and lock per row, as
-- the attempt rows' key that migration 9 dropped): their rows go with
-- their delivery by the statement trigger that deletes attempt rows, and a
-- row whose delivery is gone is ignored and dropped by the claim, the
-- completion and the rescuer.

CREATE TABLE webhook_deliveries_ready (
  delivery_id uuid PRIMARY KEY,
  webhook_id uuid NOT NULL,
  next_attempt_at timestamptz NOT NULL,
  -- The payload as the claim budgets it: the size the payload trigger
  -- measured (kept over 4096 bytes) or the stored size, whichever is larger.
  bytes integer NOT NULL
) WITH (
  autovacuum_vacuum_scale_factor = 0.01,
  autovacuum_vacuum_threshold = 1000,
  autovacuum_vacuum_insert_scale_factor = 0.01,
  autovacuum_analyze_scale_factor = 0.02
);
-- The claim walks webhooks and takes each one's due rows in due order.
CREATE INDEX webhook_deliveries_ready_due_idx ON webhook_deliveries_ready (webhook_id, next_attempt_at);

CREATE TABLE webhook_deliveries_leases (
  delivery_id uuid PRIMARY KEY,
  webhook_id uuid NOT NULL,
  -- The fence: the outcome of a claim applies only while its holder, its
  -- lease end and its attempt number are still these.
  locked_by text NOT NULL,
  locked_until timestamptz NOT NULL,
  attempt integer NOT NULL
) WITH (
  autovacuum_vacuum_scale_factor = 0.01,
  autovacuum_vacuum_threshold = 1000,
  autovacuum_vacuum_insert_scale_factor = 0.01,
  autovacuum_analyze_scale_factor = 0.02
);
-- A limited webhook's live leases, counted by the limited claim.
CREATE INDEX webhook_deliveries_leases_webhook_idx ON webhook_deliveries_leases (webhook_id, locked_until);

-- What is queued or in flight now moves over, in this transaction: no
-- delivery is left behind or taken twice. A row 'delivering' keeps its
-- status and lease; its holder (an instance stopped for this migration)
-- is gone, so the rescuer returns it when the lease ends, as before.
INSERT INTO webhook_deliveries_ready (delivery_id, webhook_id, next_attempt_at, bytes)
SELECT id, webhook_id, next_attempt_at, GREATEST(coalesce(payload_bytes, 0), pg_column_size(payload))
FROM webhook_deliveries WHERE status = 'pending';
INSERT INTO webhook_deliveries_leases (delivery_id, webhook_id, locked_by, locked_until, attempt)
SELECT id, webhook_id, coalesce(locked_by, ''), locked_until, attempts
FROM webhook_deliveries WHERE status = 'delivering';

-- Replaces the NOTIFY trigger: one statement trigger queues what was
-- inserted and wakes the daemon (once per statement, at commit).
CREATE FUNCTION plausible_webhooks_queue_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  -- Without ON CONFLICT, which cost 5-10% of an enqueue's time: a ready
  -- row can only be there already if written by hand with the id of a
  -- delivery not yet inserted, and then that INSERT is refused, loudly.
  INSERT INTO webhook_deliveries_ready (delivery_id, webhook_id, next_attempt_at, bytes)
  SELECT id, webhook_id, next_attempt_at, GREATEST(coalesce(payload_bytes, 0), pg_column_size(payload))
  FROM added WHERE status = 'pending';
  IF FOUND THEN
    PERFORM pg_notify('plausible_webhooks', '');
  END IF;
  -- A row inserted already claimed (the test send) is in flight.
  INSERT INTO webhook_deliveries_leases (delivery_id, webhook_id, locked_by, locked_until, attempt)
  SELECT id, webhook_id, coalesce(locked_by, ''), locked_until, attempts
  FROM added WHERE status = 'delivering'
  ON CONFLICT (delivery_id) DO UPDATE SET webhook_id = EXCLUDED.webhook_id, locked_by = EXCLUDED.locked_by,
    locked_until = EXCLUDED.locked_until, attempt = EXCLUDED.attempt;
  RETURN NULL;
END
$$;
DROP TRIGGER webhook_deliveries_notify ON webhook_deliveries;
CREATE TRIGGER webhook_deliveries_queue
  AFTER INSERT ON webhook_deliveries
  REFERENCING NEW TABLE AS added
  FOR EACH STATEMENT EXECUTE FUNCTION plausible_webhooks_queue_inserted();

-- Deleting deliveries (the cleaner, a deleted webhook's purge, by hand)
-- deletes their attempt rows (migration 9) and now their queue rows.
CREATE OR REPLACE FUNCTION plausible_webhooks_delete_attempts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    BEGIN
      TRUNCATE webhook_delivery_attempts, webhook_deliveries_ready, webhook_deliveries_leases;
    EXCEPTION WHEN object_in_use THEN
      -- Truncated by this very statement too, or open in a cursor: emptied
      -- row by row instead.
      DELETE FROM webhook_delivery_attempts;
      DELETE FROM webhook_deliveries_ready;
      DELETE FROM webhook_deliveries_leases;
    END;
  ELSE
    DELETE FROM webhook_delivery_attempts a USING gone g WHERE a.delivery_id = g.id;
    DELETE FROM webhook_deliveries_ready r USING gone g WHERE r.delivery_id = g.id;
    DELETE FROM webhook_deliveries_leases l USING gone g WHERE l.delivery_id = g.id;
  END IF;
  RETURN NULL;
END
$$;

-- What an UPDATE does to a row's place in the queue, for writers other
-- than this build's queue (which keeps its narrow rows itself): a row made
-- `pending` again (by hand, or by an instance still running the build
-- before this migration, whose completion and rescue set it so) is queued
-- again; a row that stops being `delivering` (such an instance's outcome)
-- leaves its lease. This build's hot path never matches the WHEN: its rows
-- are `pending` while in flight and stay so on a retry.
CREATE FUNCTION plausible_webhooks_requeue_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.status = 'delivering' THEN
    DELETE FROM webhook_deliveries_leases WHERE delivery_id = NEW.id;
  END IF;
  IF NEW.status = 'pending' THEN
    INSERT INTO webhook_deliveries_ready (delivery_id, webhook_id, next_attempt_at, bytes)
    VALUES (NEW.id, NEW.webhook_id, NEW.next_attempt_at,
            GREATEST(coalesce(NEW.payload_bytes, 0), pg_column_size(NEW.payload)))
    ON CONFLICT (delivery_id) DO UPDATE SET next_attempt_at = EXCLUDED.next_attempt_at;
  END IF;
  RETURN NULL;
END
$$;
CREATE TRIGGER webhook_deliveries_requeue AFTER UPDATE OF status ON webhook_deliveries
  FOR EACH ROW WHEN ((NEW.status = 'pending' AND OLD.status <> 'pending')
                     OR (OLD.status = 'delivering' AND NEW.status <> 'delivering'))
  EXECUTE FUNCTION plausible_webhooks_requeue_updated();

-- An instance of the build before this migration claims by setting a row
-- `delivering` in place, which no ready or lease row would record: another
-- instance could send it too. Refused, saying what to do, so that during a
-- rolling upgrade only upgraded instances claim. This build never makes a
-- row `delivering` by UPDATE.
CREATE FUNCTION plausible_webhooks_refuse_old_claim() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'webhook_deliveries: a delivery is claimed by setting it delivering, as plausible-webhooks before schema version 20 did'
    USING ERRCODE = 'object_not_in_prerequisite_state',
          HINT = 'this database is at schema version 20 or later: upgrade plausible-webhooks on every host that runs it against this database';
END
$$;
CREATE TRIGGER webhook_deliveries_refuse_old_claim BEFORE UPDATE OF status ON webhook_deliveries
  FOR EACH ROW WHEN (NEW.status = 'delivering' AND OLD.status <> 'delivering')
  EXECUTE FUNCTION plausible_webhooks_refuse_old_claim();

-- Their work is done by the narrow tables now; without them no index of
-- the wide table covers what the outcome writes, and the write is HOT.
DROP INDEX webhook_deliveries_webhook_due_idx;
DROP INDEX webhook_deliveries_webhook_lease_idx;
