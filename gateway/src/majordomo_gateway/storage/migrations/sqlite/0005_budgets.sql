-- Same logical schema as the PostgreSQL migration (timestamps as ISO-8601 UTC text, JSON as text).
CREATE TABLE budgets (
    id TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    scope_kind TEXT NOT NULL CHECK (scope_kind IN ('global', 'key', 'model', 'metadata')),
    scope_key TEXT,
    scope_value TEXT,
    limit_usd NUMERIC NOT NULL CHECK (limit_usd >= 0),
    period TEXT NOT NULL CHECK (period IN ('day', 'week', 'month', 'total')),
    time_zone TEXT NOT NULL DEFAULT 'UTC',
    soft INTEGER NOT NULL DEFAULT 0,
    alert_at TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(alert_at)),
    webhook TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX budgets_scope_period ON budgets (scope, period);

CREATE TABLE budget_spend (
    budget_id TEXT NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    scope_value TEXT NOT NULL DEFAULT '',
    period_start TEXT NOT NULL,
    spent NUMERIC NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (budget_id, scope_value, period_start)
);
CREATE INDEX budget_spend_period ON budget_spend (period_start);

CREATE TABLE budget_holds (
    process_id TEXT NOT NULL,
    budget_id TEXT NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    scope_value TEXT NOT NULL DEFAULT '',
    period_start TEXT NOT NULL,
    amount NUMERIC NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (process_id, budget_id, scope_value, period_start)
);

CREATE TABLE budget_alerts (
    budget_id TEXT NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    scope_value TEXT NOT NULL DEFAULT '',
    period_start TEXT NOT NULL,
    threshold INTEGER NOT NULL,
    spent NUMERIC NOT NULL,
    created_at TEXT NOT NULL,
    sent_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error TEXT,
    PRIMARY KEY (budget_id, scope_value, period_start, threshold)
);
CREATE INDEX budget_alerts_due ON budget_alerts (next_attempt_at) WHERE sent_at IS NULL;

CREATE TABLE rate_limits (
    id TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    scope_kind TEXT NOT NULL CHECK (scope_kind IN ('global', 'key', 'model', 'metadata')),
    scope_key TEXT,
    scope_value TEXT,
    rpm INTEGER CHECK (rpm IS NULL OR rpm > 0),
    tpm INTEGER CHECK (tpm IS NULL OR tpm > 0),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX rate_limits_scope ON rate_limits (scope);

CREATE TABLE rate_usage (
    limit_id TEXT NOT NULL REFERENCES rate_limits (id) ON DELETE CASCADE,
    scope_value TEXT NOT NULL DEFAULT '',
    window_start TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (limit_id, scope_value, window_start)
);
CREATE INDEX rate_usage_window ON rate_usage (window_start);

CREATE TABLE budget_changes (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO budget_changes (id, version) VALUES (1, 0);

CREATE TRIGGER budgets_added AFTER INSERT ON budgets
BEGIN
    UPDATE budget_changes SET version = version + 1 WHERE id = 1;
END;

CREATE TRIGGER budgets_changed AFTER UPDATE ON budgets
BEGIN
    UPDATE budget_changes SET version = version + 1 WHERE id = 1;
END;

CREATE TRIGGER budgets_deleted AFTER DELETE ON budgets
BEGIN
    UPDATE budget_changes SET version = version + 1 WHERE id = 1;
END;

CREATE TRIGGER rate_limits_added AFTER INSERT ON rate_limits
BEGIN
    UPDATE budget_changes SET version = version + 1 WHERE id = 1;
END;

CREATE TRIGGER rate_limits_changed AFTER UPDATE ON rate_limits
BEGIN
    UPDATE budget_changes SET version = version + 1 WHERE id = 1;
END;

CREATE TRIGGER rate_limits_deleted AFTER DELETE ON rate_limits
BEGIN
    UPDATE budget_changes SET version = version + 1 WHERE id = 1;
END;
