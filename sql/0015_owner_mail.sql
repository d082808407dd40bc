-- Owner emails (docs/operating.md#owner-emails): when a webhook of a site is
-- disabled, the owners and admins of the site's team are told by email, once
-- per disable, when the daemon's `[mail] enabled` is on. The disable is seen
-- here, by a trigger in the transaction that disables the webhook (whoever
-- writes it, like webhook.disabled of migration 14), which only queues a row
-- in an outbox; the daemon's mailer reads the recipients from Plausible's
-- tables and talks SMTP outside any transaction, so a slow or failing mail
-- server holds no lock and delays no delivery.

-- Whether owner emails are queued: written from `[mail] enabled` at
-- `migrate` and at start, as the payload limit is.
ALTER TABLE plausible_webhooks_settings
  ADD COLUMN owner_mail boolean NOT NULL DEFAULT false;

-- The outbox: one row per disable (unique on the webhook and when it was
-- disabled). `attempts` counts the mailer's claims; a claim moves
-- `next_attempt_at` past the mailer's timeout (a lease: an instance that
-- dies mid-send leaves the row to be claimed again).
CREATE TABLE webhook_owner_mail (
  id bigserial PRIMARY KEY,
  webhook_id uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
  disabled_at timestamptz NOT NULL,
  reason text NOT NULL,
  -- The webhook's last failure when it was disabled.
  last_failure text,
  status text NOT NULL DEFAULT 'pending'
    CONSTRAINT webhook_owner_mail_status CHECK (status IN ('pending', 'sent', 'failed')),
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  -- Who it was sent to (owners and admins of the site's team, at sending).
  recipients text[],
  -- Why the last attempt failed (the SMTP server's answer, a timeout...).
  last_error text,
  inserted_at timestamptz NOT NULL DEFAULT now(),
  sent_at timestamptz,
  CONSTRAINT webhook_owner_mail_once UNIQUE (webhook_id, disabled_at)
);
CREATE INDEX webhook_owner_mail_pending_idx ON webhook_owner_mail (next_attempt_at)
  WHERE status = 'pending';

-- Not for the operator endpoint (no site) nor a deleted webhook. A separate
-- trigger from migration 14's watch: queuing a mail never changes the row.
CREATE FUNCTION plausible_webhooks_owner_mail() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF coalesce((SELECT owner_mail FROM plausible_webhooks_settings), false) THEN
    INSERT INTO webhook_owner_mail (webhook_id, disabled_at, reason, last_failure)
    VALUES (NEW.id, coalesce(NEW.disabled_at, now()), coalesce(NEW.disabled_reason, 'disabled'),
            NEW.last_failure)
    ON CONFLICT ON CONSTRAINT webhook_owner_mail_once DO NOTHING;
  END IF;
  RETURN NULL;
END
$$;
CREATE TRIGGER webhooks_owner_mail AFTER UPDATE OF enabled ON webhooks
  FOR EACH ROW
  WHEN (OLD.enabled AND NOT NEW.enabled AND NOT NEW.operator AND NEW.deleted_at IS NULL)
  EXECUTE FUNCTION plausible_webhooks_owner_mail();
