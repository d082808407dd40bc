-- Chat formats (docs/receiving.md#chat-formats): what a webhook's receiver
-- takes. `standard` is the signed JSON envelope; the others are a chat
-- service's incoming-webhook message, made by the daemon at send time from
-- the stored payload (so rows already queued go out in the webhook's format
-- of the moment). Signature headers are sent with every format.
ALTER TABLE webhooks ADD COLUMN format text NOT NULL DEFAULT 'standard';
ALTER TABLE webhooks ADD CONSTRAINT webhooks_format
  CHECK (format IN ('standard', 'slack', 'discord', 'teams', 'google_chat'));
