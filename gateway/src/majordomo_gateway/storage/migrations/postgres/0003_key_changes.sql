-- The change feed (storage/changes.py): every change to a key or a proxy key, by whichever
-- writer (the CLI, the admin API, a hand-typed UPDATE), sends NOTIFY majordomo_key_changes when
-- its transaction commits; every gateway process LISTENs on a connection of its own and drops
-- what its key caches hold.  The counter is the same as SQLite's (a reconnecting listener can
-- tell it missed something; `SELECT version FROM key_changes` shows that changes happen).
-- Request rows bump api_keys' usage counters (request_count, last_used_at) on every batch:
-- those updates leave updated_at and revoked_at alone and so notify nothing.
CREATE TABLE key_changes (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO key_changes (id, version) VALUES (1, 0);

CREATE FUNCTION majordomo_key_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE key_changes SET version = version + 1 WHERE id = 1;
    PERFORM pg_notify('majordomo_key_changes', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_changed AFTER UPDATE ON api_keys FOR EACH ROW
    WHEN (NEW.updated_at IS DISTINCT FROM OLD.updated_at OR NEW.revoked_at IS DISTINCT FROM OLD.revoked_at)
    EXECUTE FUNCTION majordomo_key_changed();
CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys FOR EACH ROW
    EXECUTE FUNCTION majordomo_key_changed();
CREATE TRIGGER proxy_keys_changed AFTER UPDATE OR DELETE ON proxy_keys FOR EACH ROW
    EXECUTE FUNCTION majordomo_key_changed();
CREATE TRIGGER proxy_key_providers_changed AFTER INSERT OR UPDATE OR DELETE ON proxy_key_providers FOR EACH ROW
    EXECUTE FUNCTION majordomo_key_changed();
