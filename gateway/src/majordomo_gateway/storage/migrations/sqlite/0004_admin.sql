-- Same logical schema as the PostgreSQL migration (timestamps as ISO-8601 UTC text, JSON as text).
-- Passwords are stored as argon2id hashes (admin/passwords.py), session tokens as SHA-256.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'member', 'viewer')),
    password_hash TEXT NOT NULL,
    disabled_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX users_email ON users (lower(email));

CREATE TABLE admin_sessions (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    revoked_at TEXT,
    remote_address TEXT
);
CREATE INDEX admin_sessions_user ON admin_sessions (user_id);

CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    actor_user_id TEXT,
    action TEXT NOT NULL,
    target TEXT,
    detail TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(detail)),
    remote_address TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);

ALTER TABLE api_keys ADD COLUMN owner_user_id TEXT REFERENCES users (id);
ALTER TABLE api_keys ADD COLUMN expires_at TEXT;
ALTER TABLE api_keys ADD COLUMN allowed_providers TEXT CHECK (allowed_providers IS NULL OR json_valid(allowed_providers));
ALTER TABLE api_keys ADD COLUMN allowed_models TEXT CHECK (allowed_models IS NULL OR json_valid(allowed_models));
CREATE INDEX api_keys_owner ON api_keys (owner_user_id);
