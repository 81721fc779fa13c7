-- The web app's sign-in (issue #12; homemonitor.web.session, docs/web.md) and API tokens
-- that expire and can be listed and revoked (homemonitor token issue|list|revoke).
--
-- clinicians.hsa_id: the HSA id (Inera's catalogue id of a person in Swedish health care,
-- e.g. SE2321000016-1003) the region's identity provider names in the ID token; single
-- sign-on finds the clinician by it. Set from the registry (clinicians[].hsa_id).
ALTER TABLE clinicians ADD COLUMN hsa_id text UNIQUE;

-- Tokens get a short id to name them by in `token list|revoke` (the token itself is only
-- ever a hash here) and an optional end.
ALTER TABLE api_tokens
    ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    ADD COLUMN expires_at timestamptz;

-- A signed-in browser. The cookie carries a random secret; only its SHA-256 is stored, so
-- a copy of the database opens no session. csrf is the synchronizer token every state
-- change from that browser must send back. A session ends at logout (ended_at), or when
-- it has been idle longer than HOMEMONITOR_WEB_IDLE_MINUTES (last_seen_at), or at
-- HOMEMONITOR_WEB_SESSION_HOURS after created_at, whichever is first.
--   via       'oidc' (single sign-on) or 'demo' (the demo-only login)
--   id_token  the provider's ID token, sent back as id_token_hint at logout
CREATE TABLE web_sessions (
    secret_sha256 bytea PRIMARY KEY,
    clinician_id  text NOT NULL REFERENCES clinicians (id),
    csrf          text NOT NULL,
    via           text NOT NULL CHECK (via IN ('oidc', 'demo')),
    id_token      text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    ended_at      timestamptz
);
CREATE INDEX web_sessions_clinician ON web_sessions (clinician_id) WHERE ended_at IS NULL;

-- A sign-in under way: from the redirect to the provider to its return (minutes at most).
-- Keyed by the hash of `state`; holds the PKCE verifier and the nonce the ID token must
-- carry, and the path to return to. Consumed (deleted) by the return, so a state works once.
CREATE TABLE web_logins (
    state_sha256  bytea PRIMARY KEY,
    code_verifier text NOT NULL,
    nonce         text NOT NULL,
    next_path     text NOT NULL DEFAULT '/',
    created_at    timestamptz NOT NULL DEFAULT now()
);
