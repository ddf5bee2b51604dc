-- portcullis schema for PostgreSQL (`[storage] backend = "postgres"`): the same
-- tables, columns and meaning as schema.sql, in PostgreSQL's types. Applied at
-- every start-up inside one transaction; every statement is idempotent.
-- Times are Unix milliseconds (UTC) unless a column says otherwise. The
-- version is the row of schema_version (see src/store/postgres.rs).

CREATE TABLE IF NOT EXISTS schema_version (
    only_row       BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    version        INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS users (
    id             TEXT PRIMARY KEY,            -- UUID v4
    email          TEXT NOT NULL UNIQUE,        -- trimmed, lower-cased
    name           TEXT,
    password_hash  TEXT NOT NULL,               -- argon2id PHC string
    is_admin       BOOLEAN NOT NULL DEFAULT FALSE,
    disabled_at    BIGINT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS sessions (
    id             TEXT PRIMARY KEY,            -- UUID v4, the `sid` claim
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    remember_me    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at     BIGINT NOT NULL,
    last_used_at   BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    revoked_at     BIGINT,
    revoke_reason  TEXT,
    ip_address     TEXT,
    user_agent     TEXT,
    kind           TEXT NOT NULL DEFAULT 'api', -- api | browser
    amr            TEXT NOT NULL DEFAULT 'pwd', -- the factors it was opened with (RFC 8176), comma-separated
    cookie_hash    BYTEA,                       -- browser sessions: SHA-256 of the cookie
    client_id      TEXT,                        -- oidc sessions: the client it was granted to
    scope          TEXT                         -- oidc sessions: the scopes granted, space-separated
);
CREATE INDEX IF NOT EXISTS sessions_user_id ON sessions(user_id);
-- (Databases made by version 1 gain kind, amr and cookie_hash before this
-- file runs: MIGRATIONS in src/store/db/postgres.rs.)
CREATE UNIQUE INDEX IF NOT EXISTS sessions_cookie_hash ON sessions(cookie_hash) WHERE cookie_hash IS NOT NULL;
CREATE INDEX IF NOT EXISTS sessions_revoked_at ON sessions(revoked_at) WHERE revoked_at IS NOT NULL;

-- Every refresh token ever issued, by SHA-256 hash. A session has exactly one
-- token with retired_at NULL; presenting a retired one is reuse.
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash     BYTEA PRIMARY KEY,
    session_id     TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    created_at     BIGINT NOT NULL,
    retired_at     BIGINT
);
CREATE INDEX IF NOT EXISTS refresh_tokens_session_id ON refresh_tokens(session_id);

-- Groups (SPEC section 10): names [a-z0-9_-]{1,64}; admins are also in the
-- implicit group `admins`, which is never stored.
CREATE TABLE IF NOT EXISTS user_groups (
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    PRIMARY KEY (user_id, name)
);
CREATE INDEX IF NOT EXISTS user_groups_name ON user_groups(name);

-- Password-reset tokens, by SHA-256 hash. Valid one hour, single use; a newer
-- request voids the older unused ones.
CREATE TABLE IF NOT EXISTS password_reset_tokens (
    token_hash     BYTEA PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT
);
CREATE INDEX IF NOT EXISTS password_reset_tokens_user_id ON password_reset_tokens(user_id);

-- TOTP: secrets sealed like the signing key (context: user id). pending_secret
-- is set up but not yet confirmed; last_step is the last accepted time step.
CREATE TABLE IF NOT EXISTS totp (
    user_id        TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    secret         BYTEA,
    pending_secret BYTEA,
    enabled_at     BIGINT,
    last_step      BIGINT
);

-- Backup codes, by HMAC-SHA-256 over (user id, code) under a key derived from
-- the storage key (older rows: plain SHA-256, still accepted); single use.
CREATE TABLE IF NOT EXISTS backup_codes (
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash      BYTEA NOT NULL,
    created_at     BIGINT NOT NULL,
    used_at        BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

-- Second-factor challenges of logins whose password was right (mfa_token, by
-- SHA-256 hash). Five minutes, spent by one success or five wrong codes.
CREATE TABLE IF NOT EXISTS mfa_challenges (
    token_hash     BYTEA PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    remember_me    BOOLEAN NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    failures       INTEGER NOT NULL DEFAULT 0
);

-- OpenID Connect clients added with `portcullis client add` (those of the
-- config file are not stored). config: the client's settings as JSON, its
-- secret only as an argon2id PHC string.
CREATE TABLE IF NOT EXISTS oidc_clients (
    id             TEXT PRIMARY KEY,
    config         TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);

-- Authorization codes, by SHA-256 hash: 60 s, single use. session_id is the
-- grant the exchange opened, so that a second use can revoke it.
CREATE TABLE IF NOT EXISTS oidc_codes (
    code_hash      BYTEA PRIMARY KEY,
    client_id      TEXT NOT NULL,
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    redirect_uri   TEXT NOT NULL,
    scope          TEXT NOT NULL,
    nonce          TEXT,
    code_challenge TEXT,
    auth_time      BIGINT NOT NULL,
    amr            TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT,
    session_id     TEXT
);
CREATE INDEX IF NOT EXISTS oidc_codes_expires_at ON oidc_codes(expires_at);

-- What a user allowed a client to read (consent = "once"): asked again when
-- the client asks for more.
CREATE TABLE IF NOT EXISTS oidc_consents (
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_id      TEXT NOT NULL,
    scope          TEXT NOT NULL,
    granted_at     BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

-- Passkeys (WebAuthn credentials, SPEC section 14). credential is the JSON of
-- webauthn-rs's Passkey (public key, counter, id); credential_id its raw id,
-- unique so that one authenticator's key names one account.
CREATE TABLE IF NOT EXISTS passkeys (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    credential_id  BYTEA NOT NULL UNIQUE,
    name           TEXT NOT NULL,
    credential     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    last_used_at   BIGINT
);
CREATE INDEX IF NOT EXISTS passkeys_user_id ON passkeys(user_id);

-- WebAuthn ceremonies under way: single use, five minutes, kept here so that
-- one begun on an instance finishes on another. state is webauthn-rs's JSON;
-- user_id is who registers, or who the second step is for (mfa_token_hash).
CREATE TABLE IF NOT EXISTS webauthn_challenges (
    id_hash        BYTEA PRIMARY KEY,
    purpose        TEXT NOT NULL,
    user_id        TEXT REFERENCES users(id) ON DELETE CASCADE,
    mfa_token_hash BYTEA,
    state          TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS webauthn_challenges_expires_at ON webauthn_challenges(expires_at);

-- JWT signing keys. private_key is sealed with the storage encryption key.
CREATE TABLE IF NOT EXISTS signing_keys (
    kid            TEXT PRIMARY KEY,
    algorithm      TEXT NOT NULL,
    private_key    BYTEA NOT NULL,
    public_key     BYTEA NOT NULL,
    created_at     BIGINT NOT NULL,
    retired_at     BIGINT
);

-- Rate-limit windows saved at graceful shutdown of an instance whose limiter
-- is in memory. A key is kept as its keyed 128-bit identity (key_id) and the
-- start of its text as the admin view shows it (shown), never whole.
-- events: JSON [[at_ms, tag], ...].
CREATE TABLE IF NOT EXISTS rate_limit_state (
    rule           TEXT NOT NULL,
    key_id         BYTEA NOT NULL,
    shown          TEXT NOT NULL,
    events         TEXT NOT NULL,
    saved_at       BIGINT NOT NULL,
    PRIMARY KEY (rule, key_id)
);

-- Windows saved by versions that kept whole keys: read once at the next
-- start-up, emptied at the next save.
CREATE TABLE IF NOT EXISTS rate_limit_windows (rule           TEXT NOT NULL,
    key            TEXT NOT NULL,
    events         TEXT NOT NULL,
    saved_at       BIGINT NOT NULL,
    PRIMARY KEY (rule, key)
);

-- The audit log: append-only, hash-chained, exactly as in schema.sql (the
-- same rows give the same hashes). Ids are given by the appender under a
-- transaction-scoped advisory lock, never by a sequence: a rolled-back
-- sequence value would leave a gap that verification reports as a deletion.
CREATE TABLE IF NOT EXISTS audit_log (
    id             BIGINT PRIMARY KEY,
    created_at     TEXT NOT NULL,
    action         TEXT NOT NULL,
    user_id        TEXT,
    resource_type  TEXT,
    resource_id    TEXT,
    ip_address     TEXT CHECK (ip_address IS NULL OR length(ip_address) <= 45),
    user_agent     TEXT CHECK (user_agent IS NULL OR length(user_agent) <= 512),
    extra_data     TEXT NOT NULL DEFAULT '{}',
    request_id     TEXT,
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_user_id ON audit_log(user_id) WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_log_action ON audit_log(action);
CREATE INDEX IF NOT EXISTS audit_log_created_at ON audit_log(created_at);
CREATE INDEX IF NOT EXISTS audit_log_resource ON audit_log(resource_type, resource_id) WHERE resource_type IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_log_ip_address ON audit_log(ip_address);

INSERT INTO schema_version (version) VALUES (4)
    ON CONFLICT (only_row) DO UPDATE SET version = GREATEST(schema_version.version, 4);
