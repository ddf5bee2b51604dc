-- portcullis database schema. Applied at every start-up; every statement is
-- idempotent. Times are Unix milliseconds (UTC) unless a column says otherwise.
-- PRAGMA user_version records the schema version (see src/store/db/sqlite/connection.rs, which
-- also brings older databases up to it).

CREATE TABLE IF NOT EXISTS users (
    id             TEXT PRIMARY KEY,            -- UUID v4
    email          TEXT NOT NULL UNIQUE,        -- trimmed, lower-cased
    name           TEXT,
    password_hash  TEXT NOT NULL,               -- argon2id PHC string
    is_admin       INTEGER NOT NULL DEFAULT 0,
    disabled_at    INTEGER,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS sessions (
    id             TEXT PRIMARY KEY,            -- UUID v4, the `sid` claim
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    remember_me    INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    last_used_at   INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    revoked_at     INTEGER,
    revoke_reason  TEXT,
    ip_address     TEXT,
    user_agent     TEXT,
    kind           TEXT NOT NULL DEFAULT 'api', -- api | browser | oidc
    amr            TEXT NOT NULL DEFAULT 'pwd', -- the factors it was opened with (RFC 8176), comma-separated
    cookie_hash    BLOB,                       -- browser sessions: SHA-256 of the cookie
    client_id      TEXT,                       -- oidc sessions: the client it was granted to
    scope          TEXT                        -- oidc sessions: the scopes granted, space-separated
);
CREATE INDEX IF NOT EXISTS sessions_user_id ON sessions(user_id);
CREATE UNIQUE INDEX IF NOT EXISTS sessions_cookie_hash ON sessions(cookie_hash) WHERE cookie_hash IS NOT NULL;
CREATE INDEX IF NOT EXISTS sessions_revoked_at ON sessions(revoked_at) WHERE revoked_at IS NOT NULL;

-- Every refresh token ever issued, by SHA-256 hash. A session has exactly one
-- token with retired_at NULL; presenting a retired one is reuse.
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash     BLOB PRIMARY KEY,
    session_id     TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    created_at     INTEGER NOT NULL,
    retired_at     INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS refresh_tokens_session_id ON refresh_tokens(session_id);

-- Groups (SPEC section 10): names [a-z0-9_-]{1,64}; admins are also in the
-- implicit group `admins`, which is never stored.
CREATE TABLE IF NOT EXISTS user_groups (
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    PRIMARY KEY (user_id, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS user_groups_name ON user_groups(name);

-- Password-reset tokens, by SHA-256 hash. Valid one hour, single use; a newer
-- request voids the older unused ones.
CREATE TABLE IF NOT EXISTS password_reset_tokens (
    token_hash     BLOB PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    used_at        INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS password_reset_tokens_user_id ON password_reset_tokens(user_id);

-- TOTP: secrets sealed like the signing key (context: user id). pending_secret
-- is set up but not yet confirmed; last_step is the last accepted time step,
-- so a code cannot be replayed.
CREATE TABLE IF NOT EXISTS totp (
    user_id        TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    secret         BLOB,
    pending_secret BLOB,
    enabled_at     INTEGER,
    last_step      INTEGER
);

-- Backup codes, by HMAC-SHA-256 over (user id, code) under a key derived from
-- the storage key (older rows: plain SHA-256, still accepted); single use.
CREATE TABLE IF NOT EXISTS backup_codes (
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash      BLOB NOT NULL,
    created_at     INTEGER NOT NULL,
    used_at        INTEGER,
    PRIMARY KEY (user_id, code_hash)
) WITHOUT ROWID;

-- Second-factor challenges of logins whose password was right (mfa_token, by
-- SHA-256 hash). Five minutes, spent by one success or five wrong codes.
CREATE TABLE IF NOT EXISTS mfa_challenges (
    token_hash     BLOB PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    remember_me    INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    failures       INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- OpenID Connect clients added with `portcullis client add` (those of the
-- config file are not stored). config: the client's settings as JSON, its
-- secret only as an argon2id PHC string.
CREATE TABLE IF NOT EXISTS oidc_clients (
    id             TEXT PRIMARY KEY,
    config         TEXT NOT NULL,
    created_at     INTEGER NOT NULL
);

-- Authorization codes, by SHA-256 hash: 60 s, single use. session_id is the
-- grant the exchange opened, so that a second use can revoke it.
CREATE TABLE IF NOT EXISTS oidc_codes (
    code_hash      BLOB PRIMARY KEY,
    client_id      TEXT NOT NULL,
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    redirect_uri   TEXT NOT NULL,
    scope          TEXT NOT NULL,
    nonce          TEXT,
    code_challenge TEXT,
    auth_time      INTEGER NOT NULL,
    amr            TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    used_at        INTEGER,
    session_id     TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS oidc_codes_expires_at ON oidc_codes(expires_at);

-- What a user allowed a client to read (consent = "once"): asked again when
-- the client asks for more.
CREATE TABLE IF NOT EXISTS oidc_consents (
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_id      TEXT NOT NULL,
    scope          TEXT NOT NULL,
    granted_at     INTEGER NOT NULL,
    PRIMARY KEY (user_id, client_id)
) WITHOUT ROWID;

-- Passkeys (WebAuthn credentials, SPEC section 14). credential is the JSON of
-- webauthn-rs's Passkey (public key, counter, id); credential_id its raw id,
-- unique so that one authenticator's key names one account.
CREATE TABLE IF NOT EXISTS passkeys (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    credential_id  BLOB NOT NULL UNIQUE,
    name           TEXT NOT NULL,
    credential     TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    last_used_at   INTEGER
);
CREATE INDEX IF NOT EXISTS passkeys_user_id ON passkeys(user_id);

-- WebAuthn ceremonies under way: single use, five minutes, kept here so that
-- one begun on an instance finishes on another. state is webauthn-rs's JSON;
-- user_id is who registers, or who the second step is for (mfa_token_hash).
CREATE TABLE IF NOT EXISTS webauthn_challenges (
    id_hash        BLOB PRIMARY KEY,
    purpose        TEXT NOT NULL,
    user_id        TEXT REFERENCES users(id) ON DELETE CASCADE,
    mfa_token_hash BLOB,
    state          TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS webauthn_challenges_expires_at ON webauthn_challenges(expires_at);

-- JWT signing keys. private_key is sealed with the storage encryption key
-- (XChaCha20-Poly1305: 24-byte nonce || ciphertext).
CREATE TABLE IF NOT EXISTS signing_keys (
    kid            TEXT PRIMARY KEY,
    algorithm      TEXT NOT NULL,
    private_key    BLOB NOT NULL,
    public_key     BLOB NOT NULL,
    created_at     INTEGER NOT NULL,
    retired_at     INTEGER
);

-- Rate-limit windows saved at graceful shutdown and reloaded at start-up, so a
-- restart does not lift a lockout. A key is kept as its keyed 128-bit identity
-- (key_id) and the start of its text as the admin view shows it (shown), never
-- whole. events: JSON [[at_ms, tag], ...].
CREATE TABLE IF NOT EXISTS rate_limit_state (
    rule           TEXT NOT NULL,
    key_id         BLOB NOT NULL,
    shown          TEXT NOT NULL,
    events         TEXT NOT NULL,
    saved_at       INTEGER NOT NULL,
    PRIMARY KEY (rule, key_id)
) WITHOUT ROWID;

-- Windows saved by versions that kept whole keys: read once at the next
-- start-up, emptied at the next save.
CREATE TABLE IF NOT EXISTS rate_limit_windows (
    rule           TEXT NOT NULL,
    key            TEXT NOT NULL,
    events         TEXT NOT NULL,
    saved_at       INTEGER NOT NULL,
    PRIMARY KEY (rule, key)
) WITHOUT ROWID;

-- The audit log: append-only, hash-chained. hash = SHA-256(prev_hash || canonical
-- row) in hex; see src/audit/chain.rs for the canonical form. created_at is
-- RFC 3339 UTC with milliseconds.
CREATE TABLE IF NOT EXISTS audit_log (
    id             INTEGER PRIMARY KEY,
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
-- Columns that are often NULL (events of unknown accounts, rate-limit rows) get
-- partial indexes: an equality filter still uses them, and appends skip them.
CREATE INDEX IF NOT EXISTS audit_log_user_id ON audit_log(user_id) WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_log_action ON audit_log(action);
CREATE INDEX IF NOT EXISTS audit_log_created_at ON audit_log(created_at);
CREATE INDEX IF NOT EXISTS audit_log_resource ON audit_log(resource_type, resource_id) WHERE resource_type IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_log_ip_address ON audit_log(ip_address);

PRAGMA user_version = 4;
