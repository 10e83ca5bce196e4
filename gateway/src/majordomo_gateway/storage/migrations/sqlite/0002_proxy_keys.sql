-- Proxy keys (mdm_pk_...): one secret per app that stands for a Majordomo key and, per provider,
-- a provider key stored encrypted (auth/secrets.py).  Only hashes of the proxy keys are stored.
CREATE TABLE proxy_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    majordomo_api_key_id TEXT NOT NULL REFERENCES api_keys (id),
    key_hash TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    revoked_at TEXT
);

CREATE TABLE proxy_key_providers (
    proxy_key_id TEXT NOT NULL REFERENCES proxy_keys (id),
    provider TEXT NOT NULL,
    secret_key_id TEXT NOT NULL,
    ciphertext TEXT NOT NULL,
    provider_key_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (proxy_key_id, provider)
);
