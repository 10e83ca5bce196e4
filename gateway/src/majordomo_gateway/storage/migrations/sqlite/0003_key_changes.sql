-- The change feed (storage/changes.py): every change to a key or a proxy key, by whichever
-- writer (the CLI, the admin API, a hand-typed UPDATE), bumps one counter, which every gateway
-- process polls (a read of one row, about every 250 ms) to drop what its key caches hold.
-- Request rows bump api_keys' usage counters (request_count, last_used_at) on every batch:
-- those updates leave updated_at and revoked_at alone and so bump nothing.
CREATE TABLE key_changes (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO key_changes (id, version) VALUES (1, 0);

CREATE TRIGGER api_keys_changed AFTER UPDATE ON api_keys
WHEN NEW.updated_at IS NOT OLD.updated_at OR NEW.revoked_at IS NOT OLD.revoked_at
BEGIN
    UPDATE key_changes SET version = version + 1 WHERE id = 1;
END;

CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys
BEGIN
    UPDATE key_changes SET version = version + 1 WHERE id = 1;
END;

CREATE TRIGGER proxy_keys_changed AFTER UPDATE ON proxy_keys
BEGIN
    UPDATE key_changes SET version = version + 1 WHERE id = 1;
END;

CREATE TRIGGER proxy_keys_deleted AFTER DELETE ON proxy_keys
BEGIN
    UPDATE key_changes SET version = version + 1 WHERE id = 1;
END;

CREATE TRIGGER proxy_key_providers_added AFTER INSERT ON proxy_key_providers
BEGIN
    UPDATE key_changes SET version = version + 1 WHERE id = 1;
END;

CREATE TRIGGER proxy_key_providers_changed AFTER UPDATE ON proxy_key_providers
BEGIN
    UPDATE key_changes SET version = version + 1 WHERE id = 1;
END;

CREATE TRIGGER proxy_key_providers_deleted AFTER DELETE ON proxy_key_providers
BEGIN
    UPDATE key_changes SET version = version + 1 WHERE id = 1;
END;
