"""Migrations are split into statements; a trigger's body keeps its own semicolons."""

from __future__ import annotations

from majordomo_gateway.storage.migration import load_migrations, split_statements


def test_trigger_bodies_stay_whole() -> None:
    sql = """CREATE TABLE a (x INTEGER);
-- a comment; with a semicolon
CREATE TRIGGER t AFTER UPDATE ON a
WHEN NEW.x IS NOT OLD.x
BEGIN
    UPDATE b SET v = v + 1;
    UPDATE c SET v = 1;
END;
CREATE TRIGGER u AFTER DELETE ON a BEGIN DELETE FROM b; END;
INSERT INTO a VALUES (1);"""
    assert split_statements(sql) == [
        "CREATE TABLE a (x INTEGER)",
        "CREATE TRIGGER t AFTER UPDATE ON a\nWHEN NEW.x IS NOT OLD.x\nBEGIN\n    UPDATE b SET v = v + 1;\n"
        "    UPDATE c SET v = 1;\nEND",
        "CREATE TRIGGER u AFTER DELETE ON a BEGIN DELETE FROM b; END",
        "INSERT INTO a VALUES (1)",
    ]


def test_the_change_feed_migration_splits_into_its_triggers() -> None:
    [migration] = [m for m in load_migrations("sqlite") if m.name == "key_changes"]
    statements = split_statements(migration.sql)
    triggers = [s for s in statements if s.startswith("CREATE TRIGGER")]
    assert len(triggers) == 7 and all(s.endswith("END") for s in triggers)
