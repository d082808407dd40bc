-- The web page's own sign-ins (docs/web.md), for where the page is not on
-- Plausible's host: a browser signed in with a Plausible API key, or with a
-- portal link an operator or a site's owner or admin handed out. Plausible's
-- own sessions stay Plausible's: the daemon reads `user_sessions`, never
-- writes it. Tokens are kept as SHA-256 only: the database never holds what
-- a browser or a link presents.

CREATE TABLE webhook_portal_links (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  token_sha256 bytea NOT NULL UNIQUE,
  site_id bigint NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
  role text NOT NULL CONSTRAINT webhook_portal_links_role CHECK (role IN ('viewer', 'editor')),
  -- Who handed it out, for the operator reading this table.
  created_by text NOT NULL,
  inserted_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  -- Set when a browser redeems it: a link signs in once.
  used_at timestamptz
);
CREATE INDEX webhook_portal_links_site_id_idx ON webhook_portal_links (site_id);

CREATE TABLE webhook_portal_sessions (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  token_sha256 bytea NOT NULL UNIQUE,
  -- Signed in with this Plausible API key (`api_keys.id`): its user's roles,
  -- checked anew on every request; the key deleted in Plausible, the session
  -- finds no key and signs nobody in. No foreign key: Plausible's own
  -- migrations must stay free to change its table.
  api_key_id bigint,
  -- Signed in with this portal link: its site and role.
  link_id uuid REFERENCES webhook_portal_links (id) ON DELETE CASCADE,
  inserted_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  CONSTRAINT webhook_portal_sessions_one_way CHECK ((api_key_id IS NULL) <> (link_id IS NULL))
);
CREATE INDEX webhook_portal_sessions_api_key_id_idx ON webhook_portal_sessions (api_key_id);
CREATE INDEX webhook_portal_sessions_link_id_idx ON webhook_portal_sessions (link_id);
CREATE INDEX webhook_portal_sessions_expires_at_idx ON webhook_portal_sessions (expires_at);
