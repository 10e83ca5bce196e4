-- Same logical schema as the PostgreSQL migration; types follow SQLite's affinities.
-- Timestamps are ISO-8601 UTC text (readable, and usable with SQLite's date functions);
-- raw_metadata is JSON text, queried with ->> exactly as on PostgreSQL.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT,
    key_hash TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    revoked_at TEXT,
    last_used_at TEXT,
    request_count INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE llm_requests (
    id TEXT PRIMARY KEY,
    majordomo_api_key_id TEXT REFERENCES api_keys (id),
    provider_api_key_hash TEXT,
    provider_api_key_alias TEXT,
    provider TEXT NOT NULL,
    route TEXT NOT NULL,
    model TEXT,
    request_path TEXT NOT NULL,
    request_method TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    responded_at TEXT NOT NULL,
    response_time_ms REAL NOT NULL,
    time_to_first_token_ms REAL,
    streamed INTEGER NOT NULL DEFAULT 0,
    aborted INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens INTEGER NOT NULL DEFAULT 0,
    cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
    cache_creation_1h_tokens INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens INTEGER NOT NULL DEFAULT 0,
    web_search_requests INTEGER NOT NULL DEFAULT 0,
    input_cost NUMERIC,
    output_cost NUMERIC,
    total_cost NUMERIC,
    model_alias_found INTEGER NOT NULL DEFAULT 0,
    usage_source TEXT NOT NULL DEFAULT 'none',
    status_code INTEGER NOT NULL,
    error_message TEXT,
    raw_metadata TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(raw_metadata))
);

CREATE INDEX llm_requests_requested_at ON llm_requests (requested_at);
CREATE INDEX llm_requests_key ON llm_requests (majordomo_api_key_id, requested_at);
CREATE INDEX llm_requests_model ON llm_requests (provider, model);
CREATE INDEX llm_requests_feature ON llm_requests (raw_metadata ->> 'Feature');
