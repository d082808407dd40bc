-- Asymmetric signatures (Standard Webhooks `v1a`, ed25519), per webhook and
-- opt-in (docs/receiving.md#asymmetric-signatures-v1a). `signature` says
-- what signs: `hmac` (the default: every existing webhook is unchanged) or
-- `both` (`v1a,` added beside `v1,`). The HMAC signatures go on every
-- request whatever the mode (the product spec's §4): a receiver that
-- verifies only ed25519 ignores them.
--
-- The private key is kept as its 32-byte seed (RFC 8032's private key), the
-- public key beside it: the views read the public key without ever
-- selecting the private one, and the daemon builds its key pair from both
-- (ring checks they belong together). Rotation keeps the previous pair
-- signing beside the new one until `previous_signing_key_expires_at`, as
-- `previous_secret` does.
ALTER TABLE webhooks
  ADD COLUMN signature text NOT NULL DEFAULT 'hmac'
    CONSTRAINT webhooks_signature_mode CHECK (signature IN ('hmac', 'both')),
  ADD COLUMN signing_key bytea
    CONSTRAINT webhooks_signing_key_seed CHECK (octet_length(signing_key) = 32),
  ADD COLUMN signing_public_key bytea
    CONSTRAINT webhooks_signing_public_key_length CHECK (octet_length(signing_public_key) = 32),
  ADD COLUMN previous_signing_key bytea
    CONSTRAINT webhooks_previous_signing_key_seed CHECK (octet_length(previous_signing_key) = 32),
  ADD COLUMN previous_signing_public_key bytea
    CONSTRAINT webhooks_previous_signing_public_key_length CHECK (octet_length(previous_signing_public_key) = 32),
  ADD COLUMN previous_signing_key_expires_at timestamptz,
  ADD CONSTRAINT webhooks_signing_key_pair CHECK (
    (signing_key IS NULL) = (signing_public_key IS NULL)
    AND (previous_signing_key IS NULL) = (previous_signing_public_key IS NULL)),
  -- A webhook signing with ed25519 has a key to sign with.
  ADD CONSTRAINT webhooks_signing_key_present CHECK (signature = 'hmac' OR signing_key IS NOT NULL);
