-- People who manage the gateway (admin API, dashboard), their sessions, and what they did.
-- Passwords are stored as argon2id hashes (admin/passwords.py), session tokens as SHA-256: a copy
-- of the database lets no one log in.
CREATE TABLE users (
    id UUID PRIMARY KEY,
    email TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'member', 'viewer')),
    password_hash TEXT NOT NULL,
    disabled_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
-- One account per address, whatever its case.
CREATE UNIQUE INDEX users_email ON users (lower(email));

CREATE TABLE admin_sessions (
    token_hash TEXT PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users (id),
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ,
    remote_address TEXT
);
CREATE INDEX admin_sessions_user ON admin_sessions (user_id);

-- Every admin action, by the CLI or the API: who (a user, or cli:<os user>), what, when, from where.
CREATE TABLE audit_log (
    id UUID PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL,
    actor TEXT NOT NULL,
    actor_user_id UUID,
    action TEXT NOT NULL,
    target TEXT,
    detail JSONB NOT NULL DEFAULT '{}'::jsonb,
    remote_address TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);

-- Majordomo keys: an owner (a member manages its own), an optional expiry, and optional rules
-- (JSON arrays of provider names and model globs; NULL allows any).
ALTER TABLE api_keys ADD COLUMN owner_user_id UUID REFERENCES users (id);
ALTER TABLE api_keys ADD COLUMN expires_at TIMESTAMPTZ;
ALTER TABLE api_keys ADD COLUMN allowed_providers TEXT;
ALTER TABLE api_keys ADD COLUMN allowed_models TEXT;
CREATE INDEX api_keys_owner ON api_keys (owner_user_id);
