"""The dashboard's JSON API on a real gateway process, over a seeded SQLite file and PostgreSQL
database: its numbers are `majordomo report`'s, nothing answers without a live session, and a
member sees only its own keys' requests."""

from __future__ import annotations

import csv
import io
import os
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support import GatewayProcess, PostgresServer, majordomo, run_sync
from tests.support.dashboard import KEY_IDS, KEY_NAMES, PASSWORD, SeededUsage, seed_usage

PROTECTED = ["/api/v1/usage", "/api/v1/requests", "/api/v1/requests/0190a0a0-0000-7000-8000-000000000001",
             "/api/v1/metadata-keys", "/api/v1/overview", "/api/v1/usage?format=csv",
             "/dashboard/static/app.js"]


@dataclass
class Served:
    seeded: SeededUsage
    gateway: GatewayProcess

    def client(self, role: str | None = "admin", token: str | None = None) -> httpx.Client:
        headers = {}
        if role is not None or token is not None:
            headers["authorization"] = f"Bearer {token or self.seeded.tokens[role or 'admin']}"
        return httpx.Client(base_url=self.gateway.url, headers=headers, timeout=10)

    def get(self, path: str, role: str = "admin", **params: Any) -> Any:
        with self.client(role) as client:
            response = client.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json() if response.headers["content-type"].startswith("application/json") else response.text

    def report(self, *args: str) -> Any:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAJORDOMO_")}
        result = majordomo("report", *args, "--database-url", self.seeded.url, env=env)
        return orjson.loads(result.stdout) if "--json" in args else result.stdout


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
async def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                 mock_upstream: Any) -> AsyncIterator[Served]:
    workdir = tmp_path_factory.mktemp(f"dashboard-api-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{workdir / 'majordomo.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.create()
    seeded = await seed_usage(url)
    gateway = GatewayProcess(database_url=url, upstream_url=mock_upstream.url, workdir=workdir).start()
    yield Served(seeded, gateway)
    gateway.stop()


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return abs(Decimal(str(a)) - Decimal(str(b))) < Decimal("1e-9")


def test_nothing_answers_without_a_live_session(served: Served) -> None:
    dead = served.seeded.dead_tokens
    for path in PROTECTED:
        for token in [None, "not-a-token", dead["expired"], dead["revoked"], dead["disabled"]]:
            with served.client(None, token) as client:
                response = client.get(path)
            assert response.status_code == 401, (path, token, response.text)
            assert "cost" not in response.text and "gpt" not in response.text
        # A cookie is a credential too, checked the same way.
        with httpx.Client(base_url=served.gateway.url, cookies={"majordomo_session": dead["revoked"]}) as client:
            assert client.get(path).status_code == 401
    with httpx.Client(base_url=served.gateway.url, cookies={"majordomo_session": served.seeded.tokens["viewer"]}) as c:
        assert c.get("/api/v1/usage").status_code == 200
    # Without a login the page is the login form, and it carries no numbers.
    with httpx.Client(base_url=served.gateway.url) as client:
        page = client.get("/dashboard")
    assert page.status_code == 200 and 'id="login"' in page.text and "app.js" not in page.text
    assert page.headers["cache-control"] == "no-store"
    # The proxy is untouched: an unknown non-API path still gets the proxy's answer, not the console's.
    with httpx.Client(base_url=served.gateway.url) as client:
        assert client.get("/dashboardx").json()["type"] == "error"  # the proxy's neutral error shape
        assert client.get("/api/v1/nothing-here", headers={
            "authorization": f"Bearer {served.seeded.tokens['admin']}"}).status_code == 404


@pytest.mark.parametrize("args", [
    ["--group-by", "feature"],
    ["--group-by", "model", "--group-by", "TEAM", "--group-by", "key", "--since", "40d"],
    ["--group-by", "provider", "--every", "day", "--tz", "America/New_York"],
    ["--group-by", "user", "--where", "feature=summarize", "--where", "status=200", "--limit", "2"],
    [],
])
def test_usage_is_the_report(served: Served, args: list[str]) -> None:
    params: dict[str, list[str]] = defaultdict(list)
    for flag, value in zip(args[::2], args[1::2], strict=True):
        params[flag.removeprefix("--").replace("-", "_")].append(value)
    body = served.get("/api/v1/usage", **params)
    cli = served.report(*args, "--json")
    assert body["rows"] == cli
    assert body["columns"][:len(params.get("group_by", []))] == params.get("group_by", [])
    assert body["totals"]["requests"] == sum(row["requests"] for row in cli)
    # The CSV is the CLI's CSV, byte for byte.
    assert served.get("/api/v1/usage", **params, format="csv") == served.report(*args, "--csv")


def test_a_member_sees_only_its_own_keys(served: Served) -> None:
    records = [r for r in served.seeded.records if r.requested_at >= served.seeded.now - timedelta(days=30)]
    mine = [r for r in records if r.majordomo_api_key_id == KEY_IDS[1]]
    for role, expected in [("member", mine), ("viewer", records), ("admin", records)]:
        rows = served.get("/api/v1/usage", role, group_by="key")["rows"]
        assert {row["key"]: row["requests"] for row in rows} == {
            name: sum(1 for r in expected if KEY_NAMES[r.majordomo_api_key_id or ""] == name)
            for name in {KEY_NAMES[r.majordomo_api_key_id or ""] for r in expected}}
    listed = served.get("/api/v1/requests", "member", limit=500)["rows"]
    assert {row["key"] for row in listed} == {"batch-jobs"}
    other = next(r for r in records if r.majordomo_api_key_id == KEY_IDS[0])
    with served.client("member") as client:
        assert client.get(f"/api/v1/requests/{other.id}").status_code == 404
    assert served.get(f"/api/v1/requests/{other.id}", "viewer")["id"] == other.id
    overview = served.get("/api/v1/overview", "member")
    assert overview["totals"]["requests"] == len(mine)
    assert {row["key"] for row in overview["top"]["key"]} == {"batch-jobs"}


def _walk(served: Served, **params: Any) -> Iterator[dict[str, Any]]:
    cursor = None
    pages = 0
    while True:
        body = served.get("/api/v1/requests", **params, **({"cursor": cursor} if cursor else {}))
        pages += 1
        yield from body["rows"]
        cursor = body["next"]
        if cursor is None:
            return
        assert pages < 100


def test_request_log_pages_newest_first_without_gaps(served: Served) -> None:
    records = served.seeded.records
    want = sorted(records, key=lambda r: (r.requested_at, r.id), reverse=True)
    got = list(_walk(served, limit=37))
    assert [row["id"] for row in got] == [r.id for r in want]
    first = got[0]
    source = next(r for r in records if r.id == first["id"])
    assert first["model"] == source.model and first["key"] == KEY_NAMES[source.majordomo_api_key_id or ""]
    assert first["metadata"] == source.raw_metadata and first["status"] == source.status_code
    assert _close(first["cost_usd"], source.total_cost)
    assert datetime.fromisoformat(first["requested_at"]) == source.requested_at


def test_request_log_filters(served: Served) -> None:
    records, now = served.seeded.records, served.seeded.now

    def ids(**params: Any) -> set[str]:
        return {row["id"] for row in _walk(served, limit=500, **params)}

    assert ids(model="gpt-4.1", status="error") == {
        r.id for r in records if r.model == "gpt-4.1" and r.status_code >= 400}
    assert ids(where=["feature=summarize", "Team=core"], status="200") == {
        r.id for r in records if r.raw_metadata.get("Feature") == "summarize"
        and r.raw_metadata.get("Team") == "core" and r.status_code == 200}
    assert ids(since="7d", key="backend") == {
        r.id for r in records if r.requested_at >= now - timedelta(days=7) and r.majordomo_api_key_id == KEY_IDS[0]}
    until = (now - timedelta(days=20)).isoformat()
    assert ids(until=until, provider="local", status="5xx") == {
        r.id for r in records if r.requested_at < now - timedelta(days=20) and r.provider == "local"
        and 500 <= r.status_code <= 599}
    text = served.get("/api/v1/requests", model="gpt-4.1", limit=500, format="csv")
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert {row["id"] for row in parsed} == ids(model="gpt-4.1")
    assert all(orjson.loads(row["metadata"]) is not None for row in parsed)


def test_one_request_in_detail(served: Served) -> None:
    source = next(r for r in served.seeded.records if r.status_code >= 400)
    row = served.get(f"/api/v1/requests/{source.id}")
    assert row["error_message"] == "upstream said no" and row["request_path"] == "/v1/chat/completions"
    assert row["key_id"] == source.majordomo_api_key_id and row["status"] == source.status_code
    assert "provider_api_key_hash" not in row
    with served.client() as client:
        for missing in ["0190a0a0-0000-7000-8000-999999999999", "not-a-uuid"]:
            response = client.get(f"/api/v1/requests/{missing}")
            assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_metadata_keys_seen(served: Served) -> None:
    records = [r for r in served.seeded.records if r.requested_at >= served.seeded.now - timedelta(days=30)]
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        for key in r.raw_metadata:
            counts[key] += 1
    body = served.get("/api/v1/metadata-keys")
    assert {k["key"]: k["requests"] for k in body["keys"]} == counts
    assert [k["requests"] for k in body["keys"]] == sorted(counts.values(), reverse=True)


def test_overview_numbers_are_the_reports(served: Served) -> None:
    body = served.get("/api/v1/overview", since="14d", stack_by="model", tz="Europe/Paris")
    assert body["every"] == "day"
    [total] = served.report("--since", "14d", "--json")
    assert body["totals"]["requests"] == total["requests"] and _close(body["totals"]["cost_usd"], total["cost_usd"])
    assert body["error_rate"] == pytest.approx(total["errors"] / total["requests"])
    chart = body["spend_over_time"]
    daily = served.report("--since", "14d", "--group-by", "model", "--every", "day", "--tz", "Europe/Paris", "--json")
    for series in chart["series"]:
        for bucket, cost, requests in zip(chart["buckets"], series["cost_usd"], series["requests"], strict=True):
            match = [row for row in daily if row["model"] == series["value"] and row["bucket"] == bucket]
            assert requests == sum(row["requests"] for row in match)
            assert _close(cost, sum((Decimal(str(row["cost_usd"] or 0)) for row in match), Decimal(0)))
    assert len(chart["buckets"]) in (14, 15) and len(set(chart["buckets"])) == len(chart["buckets"])
    for name in ("feature", "user", "model", "key"):
        assert body["top"][name] == served.report("--since", "14d", "--group-by", name, "--limit", "10", "--json")
    assert [(m["provider"], m["model"]) for m in body["unpriced_models"]] == [("local", "llama-3")]


def test_bad_parameters_say_what_is_wrong(served: Served) -> None:
    cases = [
        ("/api/v1/usage", {"since": "last tuesday"}, "cannot read 'last tuesday' as a time"),
        ("/api/v1/usage", {"every": "fortnight"}, "use one of hour, day, week, month"),
        ("/api/v1/usage", {"where": "feature"}, "write DIM=VALUE"),
        ("/api/v1/usage", {"limit": "-3"}, "a positive whole number"),
        ("/api/v1/usage", {"groupby": "model"}, "unknown parameter 'groupby'"),
        ("/api/v1/usage", {"format": "xml"}, "json or csv"),
        ("/api/v1/usage", {"tz": "Mars/Olympus"}, "unknown time zone"),
        ("/api/v1/requests", {"cursor": "bogus"}, "cursor: not one this server gave out"),
        ("/api/v1/requests", {"status": "teapot"}, "status 'teapot'"),
        ("/api/v1/requests", {"limit": "5000"}, "between 1 and 500"),
        ("/api/v1/overview", {"stack_by": ""}, None),
        ("/api/v1/overview", {"since": "2026-12-01", "until": "2026-11-01"}, "earlier than"),
    ]
    with served.client() as client:
        for path, params, message in cases:
            response = client.get(path, params=params)
            if message is None:
                assert response.status_code == 200, response.text  # an empty value is the default
                continue
            assert response.status_code == 400, (path, params, response.text)
            assert message in response.json()["error"]["message"], (path, params, response.text)


def test_csv_download_is_an_attachment(served: Served, tmp_path: Path) -> None:
    with served.client() as client:
        response = client.get("/api/v1/usage", params={"group_by": "feature", "format": "csv"})
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]


def test_login_gives_a_token_and_cookies_and_logout_ends_it(served: Served) -> None:
    with httpx.Client(base_url=served.gateway.url) as client:
        response = client.post("/api/v1/admin/login", json={"email": "Viewer@Example.com", "password": PASSWORD})
        assert response.status_code == 200, response.text
        body = response.json()
        cookies = response.headers.get_list("set-cookie")
        session = next(c for c in cookies if c.startswith("majordomo_session="))
        assert "HttpOnly" in session and "SameSite=strict" in session and body["token"] in session
        csrf = next(c for c in cookies if c.startswith("majordomo_csrf="))
        assert "HttpOnly" not in csrf and body["csrf_token"] in csrf
        # The cookie works for the page and the API; the token works as a Bearer for scripts.
        assert client.get("/api/v1/usage").status_code == 200
        assert 'id="login"' not in client.get("/dashboard").text
        assert client.get("/dashboard/static/app.js").status_code == 200
        # Logging out with the cookie needs the CSRF token (another site could send the cookie, not this).
        assert client.post("/api/v1/admin/logout").status_code == 403
        assert client.get("/api/v1/usage").status_code == 200
        out = client.post("/api/v1/admin/logout", headers={"x-csrf-token": body["csrf_token"]})
        assert out.status_code == 200
    for credential in ({"authorization": f"Bearer {body['token']}"}, {"cookie": f"majordomo_session={body['token']}"}):
        with httpx.Client(base_url=served.gateway.url, headers=credential) as client:
            assert client.get("/api/v1/usage").status_code == 401
    # Only the token's hash is stored; the audit log says who logged in and out.
    rows = run_sync(served.gateway.query("SELECT token_hash FROM admin_sessions"))
    assert body["token"] not in str(rows)
    audit = orjson.loads(served.gateway.cli("audit", "--json").stdout)
    assert {"login", "logout"} <= {entry["action"] for entry in audit if entry["actor"] == "viewer@example.com"}


def test_wrong_password_and_unknown_user_answer_alike_then_throttle(served: Served) -> None:
    # Last in the module: its gateway then refuses logins from this address for 15 minutes.
    with httpx.Client(base_url=served.gateway.url) as client:
        wrong = client.post("/api/v1/admin/login", json={"email": "member@example.com", "password": "nope" * 4})
        unknown = client.post("/api/v1/admin/login", json={"email": "nobody@example.com", "password": "nope" * 4})
        disabled = client.post("/api/v1/admin/login", json={"email": "disabled@example.com", "password": PASSWORD})
        assert wrong.status_code == unknown.status_code == disabled.status_code == 401
        assert wrong.json() == unknown.json() == disabled.json()
        assert "set-cookie" not in wrong.headers
        bad = client.post("/api/v1/admin/login", content=b"email=x")
        assert bad.status_code == 400 and "send JSON" in bad.json()["error"]["message"]
        for _ in range(2):  # five failures in all
            assert client.post("/api/v1/admin/login",
                               json={"email": "member@example.com", "password": "nope" * 4}).status_code == 401
        # Five failures from this address: even the right password waits now, without a password check.
        refused = client.post("/api/v1/admin/login", json={"email": "admin@example.com", "password": PASSWORD})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
