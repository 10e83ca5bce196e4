"""`majordomo keys create/update` with an owner, an expiry and allowed providers/models, audited."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support import PostgresServer, majordomo


@pytest.fixture(params=["sqlite", "postgres"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAJORDOMO_")}
    if request.param == "sqlite":
        env["MAJORDOMO_DATABASE_URL"] = f"sqlite:///{tmp_path / 'rules.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        env["MAJORDOMO_DATABASE_URL"] = server.create()
    return env


def ok(env: dict[str, str], *args: str, stdin: str | None = None) -> Any:
    result = majordomo(*args, "--json", env=env, input=stdin, check=False)
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


def test_rules_are_set_changed_cleared_and_audited(env: dict[str, str]) -> None:
    member = ok(env, "users", "create", "--email", "m@example.com", "--role", "member",
                stdin="a long enough password\n")
    created = ok(env, "keys", "create", "--name", "ruled", "--expires", "30d", "--allow-provider", "openai",
                 "--allow-provider", "anthropic", "--allow-model", "gpt-4o*", "--allow-model", "claude-*",
                 "--owner", "M@example.com")
    expires = datetime.fromisoformat(created["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=1)
    assert created["allowed_providers"] == ["openai", "anthropic"]
    assert created["allowed_models"] == ["gpt-4o*", "claude-*"]
    assert created["owner_user_id"] == member["id"]

    narrowed = ok(env, "keys", "update", created["id"], "--allow-model", "gpt-4o-mini", "--expires", "2099-01-01")
    assert narrowed["allowed_models"] == ["gpt-4o-mini"]
    assert narrowed["allowed_providers"] == ["openai", "anthropic"]  # not given: kept
    assert narrowed["expires_at"].startswith("2099-01-01T00:00:00")
    cleared = ok(env, "keys", "update", created["id"], "--any-provider", "--any-model", "--no-expiry", "--no-owner")
    assert (cleared["allowed_providers"], cleared["allowed_models"], cleared["expires_at"],
            cleared["owner_user_id"]) == (None, None, None, None)
    plain = ok(env, "keys", "create", "--name", "plain")
    assert (plain["expires_at"], plain["allowed_providers"], plain["allowed_models"], plain["owner_user_id"]) == (
        None, None, None, None)
    ok(env, "keys", "revoke", plain["id"])

    audit = ok(env, "audit")
    assert [(e["action"], e["target"]) for e in audit] == [
        ("user.create", member["id"]), ("key.create", created["id"]), ("key.update", created["id"]),
        ("key.update", created["id"]), ("key.create", plain["id"]), ("key.revoke", plain["id"])]
    assert audit[1]["detail"]["allowed_models"] == ["gpt-4o*", "claude-*"]
    assert audit[2]["detail"]["before"]["allowed_models"] == ["gpt-4o*", "claude-*"]
    assert audit[2]["detail"]["after"]["allowed_models"] == ["gpt-4o-mini"]
    dump = orjson.dumps(audit).decode()
    assert created["key"] not in dump and plain["key"] not in dump


def test_bad_rules_are_refused_and_nothing_is_created(env: dict[str, str]) -> None:
    def refused(*args: str) -> str:
        result = majordomo(*args, env=env, check=False)
        assert result.returncode != 0 and not result.stdout
        return result.stderr

    assert "cannot read expiry 'soon'" in refused("keys", "create", "--name", "x", "--expires", "soon")
    assert "in the past" in refused("keys", "create", "--name", "x", "--expires", "2001-01-01")
    assert "not in the future" in refused("keys", "create", "--name", "x", "--expires", "0d")
    assert "unknown provider 'opneai'" in refused("keys", "create", "--name", "x", "--allow-provider", "opneai")
    assert "not a valid name or pattern" in refused("keys", "create", "--name", "x", "--allow-model", "gpt 4")
    assert "no user ghost@example.com" in refused("keys", "create", "--name", "x", "--owner", "ghost@example.com")
    assert ok(env, "keys", "list") == [] and ok(env, "audit") == []
    key = ok(env, "keys", "create", "--name", "y")
    assert "contradict" in refused("keys", "update", key["id"], "--expires", "1d", "--no-expiry")
    assert "nothing to change" in refused("keys", "update", key["id"])
