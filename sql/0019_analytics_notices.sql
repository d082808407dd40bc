-- The analytics source's health told to the operator endpoint
-- (docs/events.md#operational-events): `analytics.unavailable` (the store
-- cannot be asked: triggers wait, deliveries go on), `analytics.incompatible`
-- (it refuses a statement triggers send: /readyz answers 503) and
-- `analytics.recovered`. The daemon's source checker writes each verdict
-- here and, when it differs from the one recorded, enqueues the notice in
-- the same transaction (src/triggers/source/checker.rs): the verdict is
-- the deployment's, not one process's, so a restart or a second instance
-- seeing the same outage sends nothing more.
CREATE TABLE plausible_webhooks_analytics_state (
  one boolean PRIMARY KEY DEFAULT true CONSTRAINT plausible_webhooks_analytics_state_one CHECK (one),
  -- `unknown` until a daemon with triggers has checked the source once.
  state text NOT NULL
    CONSTRAINT plausible_webhooks_analytics_state_known
      CHECK (state IN ('unknown', 'compatible', 'unavailable', 'incompatible')),
  since timestamptz NOT NULL DEFAULT now(),
  detail text
);
INSERT INTO plausible_webhooks_analytics_state (state) VALUES ('unknown');
