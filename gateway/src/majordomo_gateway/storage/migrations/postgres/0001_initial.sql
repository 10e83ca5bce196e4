CREATE TABLE api_keys (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT,
    key_hash TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ,
    request_count BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE llm_requests (
    id UUID PRIMARY KEY,
    majordomo_api_key_id UUID REFERENCES api_keys (id),
    provider_api_key_hash TEXT,
    provider_api_key_alias TEXT,
    provider TEXT NOT NULL,
    route TEXT NOT NULL,
    model TEXT,
    request_path TEXT NOT NULL,
    request_method TEXT NOT NULL,
    requested_at TIMESTAMPTZ NOT NULL,
    responded_at TIMESTAMPTZ NOT NULL,
    response_time_ms DOUBLE PRECISION NOT NULL,
    time_to_first_token_ms DOUBLE PRECISION,
    streamed BOOLEAN NOT NULL DEFAULT FALSE,
    aborted BOOLEAN NOT NULL DEFAULT FALSE,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    cached_tokens BIGINT NOT NULL DEFAULT 0,
    cache_creation_tokens BIGINT NOT NULL DEFAULT 0,
    cache_creation_1h_tokens BIGINT NOT NULL DEFAULT 0,
    reasoning_tokens BIGINT NOT NULL DEFAULT 0,
    web_search_requests BIGINT NOT NULL DEFAULT 0,
    input_cost NUMERIC(20, 10),
    output_cost NUMERIC(20, 10),
    total_cost NUMERIC(20, 10),
    model_alias_found BOOLEAN NOT NULL DEFAULT FALSE,
    usage_source TEXT NOT NULL DEFAULT 'none',
    status_code INTEGER NOT NULL,
    error_message TEXT,
    raw_metadata JSONB NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX llm_requests_requested_at ON llm_requests (requested_at);
CREATE INDEX llm_requests_key ON llm_requests (majordomo_api_key_id, requested_at);
CREATE INDEX llm_requests_model ON llm_requests (provider, model);
CREATE INDEX llm_requests_raw_metadata ON llm_requests USING GIN (raw_metadata);
