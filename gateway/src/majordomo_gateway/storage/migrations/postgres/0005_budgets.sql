-- Budgets and rate limits (docs/budgets.md).  A budget's scope is what the issue's CLI takes
-- (global, key:<id>, model:<name>, metadata:<Key>=<Value>, metadata:<Key>=*), kept as text and split
-- into kind / key / value for matching.  scope_value is NULL for global and for metadata:<Key>=*,
-- which keeps one counter per distinct value of the key.
CREATE TABLE budgets (
    id UUID PRIMARY KEY,
    scope TEXT NOT NULL,
    scope_kind TEXT NOT NULL CHECK (scope_kind IN ('global', 'key', 'model', 'metadata')),
    scope_key TEXT,
    scope_value TEXT,
    limit_usd NUMERIC(20, 10) NOT NULL CHECK (limit_usd >= 0),
    period TEXT NOT NULL CHECK (period IN ('day', 'week', 'month', 'total')),
    time_zone TEXT NOT NULL DEFAULT 'UTC',
    soft BOOLEAN NOT NULL DEFAULT FALSE,
    alert_at TEXT NOT NULL DEFAULT '[]',
    webhook TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX budgets_scope_period ON budgets (scope, period);

-- The spend ledger: one counter per budget, distinct value ('' unless metadata:<Key>=*) and
-- period start (UTC; 1970-01-01 for period total).  The row writer adds to it in the statement
-- that inserts the rows, for the rows really inserted, so a row is counted exactly once.
CREATE TABLE budget_spend (
    budget_id UUID NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    scope_value TEXT NOT NULL DEFAULT '',
    period_start TIMESTAMPTZ NOT NULL,
    spent NUMERIC(20, 10) NOT NULL DEFAULT 0,
    requests BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (budget_id, scope_value, period_start)
);
CREATE INDEX budget_spend_period ON budget_spend (period_start);

-- What each gateway process has in flight against a counter (requests admitted, not yet in the
-- ledger), published on every refresh so other processes count it; a process that died stops
-- counting once expires_at passes.
CREATE TABLE budget_holds (
    process_id TEXT NOT NULL,
    budget_id UUID NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    scope_value TEXT NOT NULL DEFAULT '',
    period_start TIMESTAMPTZ NOT NULL,
    amount NUMERIC(20, 10) NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (process_id, budget_id, scope_value, period_start)
);

-- Alerts: one row per threshold crossed per counter and period (so it is sent once), delivered
-- by a background task with retries.
CREATE TABLE budget_alerts (
    budget_id UUID NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    scope_value TEXT NOT NULL DEFAULT '',
    period_start TIMESTAMPTZ NOT NULL,
    threshold INTEGER NOT NULL,
    spent NUMERIC(20, 10) NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    sent_at TIMESTAMPTZ,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_error TEXT,
    PRIMARY KEY (budget_id, scope_value, period_start, threshold)
);
CREATE INDEX budget_alerts_due ON budget_alerts (next_attempt_at) WHERE sent_at IS NULL;

-- Rate limits: requests and tokens per minute, counted per fixed UTC minute window and shared
-- through rate_usage (each process adds what it admitted on every refresh).
CREATE TABLE rate_limits (
    id UUID PRIMARY KEY,
    scope TEXT NOT NULL,
    scope_kind TEXT NOT NULL CHECK (scope_kind IN ('global', 'key', 'model', 'metadata')),
    scope_key TEXT,
    scope_value TEXT,
    rpm INTEGER CHECK (rpm IS NULL OR rpm > 0),
    tpm INTEGER CHECK (tpm IS NULL OR tpm > 0),
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX rate_limits_scope ON rate_limits (scope);

CREATE TABLE rate_usage (
    limit_id UUID NOT NULL REFERENCES rate_limits (id) ON DELETE CASCADE,
    scope_value TEXT NOT NULL DEFAULT '',
    window_start TIMESTAMPTZ NOT NULL,
    requests BIGINT NOT NULL DEFAULT 0,
    tokens BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (limit_id, scope_value, window_start)
);
CREATE INDEX rate_usage_window ON rate_usage (window_start);

-- Every change to a budget or a limit bumps one counter, so processes reload the definitions
-- only when they changed (the ledger is read on every refresh).
CREATE TABLE budget_changes (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO budget_changes (id, version) VALUES (1, 0);

CREATE FUNCTION majordomo_budget_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE budget_changes SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END;
$$;
CREATE TRIGGER budgets_changed AFTER INSERT OR UPDATE OR DELETE ON budgets
    FOR EACH STATEMENT EXECUTE FUNCTION majordomo_budget_changed();
CREATE TRIGGER rate_limits_changed AFTER INSERT OR UPDATE OR DELETE ON rate_limits
    FOR EACH STATEMENT EXECUTE FUNCTION majordomo_budget_changed();
