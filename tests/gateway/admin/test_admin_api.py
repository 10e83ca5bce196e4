"""The admin API (/api/v1/admin/...) on a real gateway process over SQLite and PostgreSQL: every
route with every role, ownership, CSRF, field-naming errors, the audit log, and a key revoked
through the API refused by the proxy within a second."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from majordomo_gateway.admin.api import AdminContext
from majordomo_gateway.auth.secrets import generate_secrets_key
from majordomo_gateway.dashboard.app import build_console
from majordomo_gateway.dashboard.auth import session_authenticator
from majordomo_gateway.storage.database import open_database
from starlette.routing import Route

from tests.support import GatewayProcess, PostgresServer, majordomo
from tests.support.dashboard import KEY_IDS, PASSWORD, USER_IDS, SeededUsage, seed_usage

ROLES = ("admin", "member", "viewer", None)
OPENAI_KEY = "sk-proj-admin-api-0123456789"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]}


@dataclass
class Served:
    seeded: SeededUsage
    gateway: GatewayProcess

    def client(self, role: str | None) -> httpx.Client:
        headers = {"authorization": f"Bearer {self.seeded.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.gateway.url, headers=headers, timeout=20)

    def call(self, role: str | None, method: str, path: str, body: Any = None) -> httpx.Response:
        with self.client(role) as client:
            return client.request(method, path, json=body)

    def ok(self, role: str, method: str, path: str, body: Any = None) -> Any:
        response = self.call(role, method, path, body)
        assert response.status_code in (200, 201), response.text
        return response.json()

    def cli(self, *args: str) -> Any:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAJORDOMO_")}
        return orjson.loads(majordomo(*args, "--json", "--database-url", self.seeded.url, env=env).stdout)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
async def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                 mock_upstream: Any) -> AsyncIterator[Served]:
    workdir = tmp_path_factory.mktemp(f"admin-api-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{workdir / 'majordomo.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.create()
    seeded = await seed_usage(url, count=40)
    gateway = GatewayProcess(database_url=url, upstream_url=mock_upstream.url, workdir=workdir,
                             extra_env={"MAJORDOMO_SECRETS_KEY": generate_secrets_key()}).start()
    yield Served(seeded, gateway)
    gateway.stop()


# -- every route, every role ----------------------------------------------------------------------

#: a request to make: the path to call (ids filled in) and its JSON body
Prepare = Callable[[Served, str | None], tuple[str, Any]]


def _member_key(s: Served) -> str:
    return str(s.ok("member", "POST", "/api/v1/admin/keys", {"name": "walk"})["id"])


def _member_proxy_key(s: Served) -> str:
    return str(s.ok("member", "POST", "/api/v1/admin/proxy-keys", {"name": "walk", "key_id": _member_key(s)})["id"])


def _user(s: Served) -> str:
    email = f"walk-{time.monotonic_ns()}@example.com"
    return str(s.ok("admin", "POST", "/api/v1/admin/users", {"email": email, "role": "viewer",
                                                              "password": PASSWORD})["id"])


def _login(s: Served, role: str | None) -> tuple[str, Any]:
    return "/api/v1/admin/login", {"email": f"{role or 'nobody'}@example.com", "password": PASSWORD}


def _stored_provider(s: Served, role: str | None) -> tuple[str, Any]:
    proxy_key = _member_proxy_key(s)
    s.ok("member", "PUT", f"/api/v1/admin/proxy-keys/{proxy_key}/providers/openai", {"key": OPENAI_KEY})
    return f"/api/v1/admin/proxy-keys/{proxy_key}/providers/openai", None


def _fixed(path: str, body: Any = None) -> Prepare:
    return lambda s, role: (path, body)


def _member_request(s: Served) -> str:
    return next(r.id for r in s.seeded.records if r.majordomo_api_key_id == KEY_IDS[1])


K, PK, U = "/api/v1/admin/keys", "/api/v1/admin/proxy-keys", "/api/v1/admin/users"

#: (method, path) -> (how to call it, the status for admin, member, viewer, no credential)
EXPECTED: dict[tuple[str, str], tuple[Prepare, tuple[int, int, int, int]]] = {
    ("GET", "/api/v1/usage"): (_fixed("/api/v1/usage"), (200, 200, 200, 401)),
    ("GET", "/api/v1/requests"): (_fixed("/api/v1/requests"), (200, 200, 200, 401)),
    ("GET", "/api/v1/requests/{request_id}"): (lambda s, r: (f"/api/v1/requests/{_member_request(s)}", None),
                                               (200, 200, 200, 401)),
    ("GET", "/api/v1/metadata-keys"): (_fixed("/api/v1/metadata-keys"), (200, 200, 200, 401)),
    ("GET", "/api/v1/overview"): (_fixed("/api/v1/overview"), (200, 200, 200, 401)),
    ("GET", "/api/v1/openapi.json"): (_fixed("/api/v1/openapi.json"), (200, 200, 200, 200)),
    ("POST", "/api/v1/admin/login"): (_login, (200, 200, 200, 401)),
    ("POST", "/api/v1/admin/logout"): (_fixed("/api/v1/admin/logout"), (200, 200, 200, 401)),
    ("GET", K): (_fixed(K), (200, 200, 403, 401)),
    ("POST", K): (_fixed(K, {"name": "walk", "expires_at": "30d"}), (201, 201, 403, 401)),
    ("GET", K + "/{key_id}"): (lambda s, r: (f"{K}/{_member_key(s)}", None), (200, 200, 403, 401)),
    ("PATCH", K + "/{key_id}"): (lambda s, r: (f"{K}/{_member_key(s)}", {"name": "renamed",
                                                                        "allowed_models": ["gpt-4o*"]}),
                                 (200, 200, 403, 401)),
    ("POST", K + "/{key_id}/revoke"): (lambda s, r: (f"{K}/{_member_key(s)}/revoke", None), (200, 200, 403, 401)),
    ("GET", PK): (_fixed(PK), (200, 200, 403, 401)),
    ("POST", PK): (lambda s, r: (PK, {"name": "walk", "key_id": _member_key(s)}), (201, 201, 403, 401)),
    ("GET", PK + "/{proxy_key_id}"): (lambda s, r: (f"{PK}/{_member_proxy_key(s)}", None), (200, 200, 403, 401)),
    ("POST", PK + "/{proxy_key_id}/revoke"): (lambda s, r: (f"{PK}/{_member_proxy_key(s)}/revoke", None),
                                              (200, 200, 403, 401)),
    ("PUT", PK + "/{proxy_key_id}/providers/{provider}"): (
        lambda s, r: (f"{PK}/{_member_proxy_key(s)}/providers/openai", {"key": OPENAI_KEY}), (200, 200, 403, 401)),
    ("DELETE", PK + "/{proxy_key_id}/providers/{provider}"): (_stored_provider, (200, 200, 403, 401)),
    ("GET", U): (_fixed(U), (200, 403, 403, 401)),
    ("POST", U): (lambda s, r: (U, {"email": f"new-{time.monotonic_ns()}@example.com", "role": "member",
                                    "password": PASSWORD}), (201, 403, 403, 401)),
    ("GET", U + "/{user_id}"): (_fixed(f"{U}/{USER_IDS['viewer']}"), (200, 403, 403, 401)),
    ("PATCH", U + "/{user_id}"): (lambda s, r: (f"{U}/{_user(s)}", {"role": "member", "disabled": True}),
                                  (200, 403, 403, 401)),
    ("POST", U + "/{user_id}/password"): (lambda s, r: (f"{U}/{_user(s)}/password", {"password": PASSWORD + "!"}),
                                          (200, 403, 403, 401)),
    ("GET", "/api/v1/admin/audit"): (_fixed("/api/v1/admin/audit"), (200, 403, 403, 401)),
}


def mounted_api_routes() -> set[tuple[str, str]]:
    """Every (method, path) the console mounts under /api/v1, read from the application itself."""
    database = open_database("sqlite:///never-opened.db")  # building the routes never connects
    app = build_console(database, session_authenticator(database), AdminContext(frozenset({"openai"})))
    found = set()
    for route in app.routes:
        if isinstance(route, Route) and route.path.startswith("/api/v1/"):
            found |= {(method, route.path) for method in route.methods or () if method != "HEAD"}
    return found


def test_every_mounted_route_has_an_expectation() -> None:
    mounted = mounted_api_routes()
    assert mounted - set(EXPECTED) == set(), "routes without an expected status per role"
    assert set(EXPECTED) - mounted == set(), "expectations for routes that are not mounted"


def test_every_route_answers_every_role_as_expected(served: Served) -> None:
    failures = []
    for (method, _), (prepare, statuses) in EXPECTED.items():
        for role, expected in zip(ROLES, statuses, strict=True):
            path, body = prepare(served, role)
            if path == "/api/v1/admin/logout" and role is not None:
                # A session of its own, so that ending it leaves the role's token alive.
                token = served.ok(role, "POST", "/api/v1/admin/login", {"email": f"{role}@example.com",
                                                                        "password": PASSWORD})["token"]
                with httpx.Client(base_url=served.gateway.url, timeout=20) as client:
                    response = client.post(path, headers={"authorization": f"Bearer {token}"})
            else:
                response = served.call(role, method, path, body)
            if response.status_code != expected:
                failures.append(f"{method} {path} as {role}: {response.status_code}, expected {expected}: "
                                f"{response.text[:200]}")
            if response.status_code >= 400:
                error = response.json()["error"]
                assert error["code"] and error["message"], response.text
    assert not failures, "\n".join(failures)


# -- ownership ------------------------------------------------------------------------------------

def test_a_member_sees_and_changes_only_its_own_keys(served: Served) -> None:
    admins_key = KEY_IDS[0]
    listed = served.ok("member", "GET", K)
    assert listed and all(k["owner_user_id"] == USER_IDS["member"] for k in listed)
    assert admins_key in {k["id"] for k in served.ok("admin", "GET", K)}
    missing = served.call("member", "GET", f"{K}/0190a0a0-0000-7000-9000-00000000ffff")
    for method, path, body in [("GET", f"{K}/{admins_key}", None), ("PATCH", f"{K}/{admins_key}", {"name": "x"}),
                               ("POST", f"{K}/{admins_key}/revoke", None)]:
        response = served.call("member", method, path, body)
        assert response.status_code == 404 == missing.status_code, response.text
        assert response.json()["error"]["code"] == missing.json()["error"]["code"] == "not_found"
    refused = served.call("member", "POST", PK, {"name": "steal", "key_id": admins_key})
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "key_id", refused.text
    assert "does not exist" in refused.json()["error"]["message"]
    assert served.call("member", "POST", K, {"name": "x", "owner_user_id": USER_IDS["admin"]}).status_code == 403
    own = served.ok("member", "POST", K, {"name": "mine"})
    assert own["owner_user_id"] == USER_IDS["member"] and own["key"].startswith("mdm_sk_")
    assert "key" not in served.ok("member", "GET", f"{K}/{own['id']}")
    admin_proxy = served.ok("admin", "POST", PK, {"name": "admins", "key_id": admins_key})
    assert served.call("member", "GET", f"{PK}/{admin_proxy['id']}").status_code == 404
    assert admin_proxy["id"] not in {p["id"] for p in served.ok("member", "GET", PK)}


# -- input errors, secrets ------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "field"), [
    ({"name": 5}, "name"), ({}, "name"), ({"name": "x", "colour": "red"}, "colour"),
    ({"name": "x", "expires_at": "yesterday"}, "expires_at"), ({"name": "x", "allowed_providers": ["nope"]},
                                                               "allowed_providers"),
    ({"name": "x", "allowed_models": "gpt-4o"}, "allowed_models"),
    ({"name": "x", "owner_user_id": "nobody@example.com"}, "owner_user_id"),
])
def test_bad_input_is_a_400_naming_the_field(served: Served, body: dict[str, Any], field: str) -> None:
    response = served.call("admin", "POST", K, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == field, response.text
    assert field in response.json()["error"]["message"]


def test_bad_json_and_user_input(served: Served) -> None:
    with served.client("admin") as client:
        response = client.post(K, content=b"{not json")
    assert response.status_code == 400 and "JSON" in response.json()["error"]["message"]
    weak = served.call("admin", "POST", U, {"email": "weak@example.com", "role": "member", "password": "x"})
    assert weak.status_code == 400 and weak.json()["error"]["field"] == "password"
    role = served.call("admin", "POST", U, {"email": "r@example.com", "role": "owner", "password": PASSWORD})
    assert role.status_code == 400 and role.json()["error"]["field"] == "role"
    taken = served.call("admin", "POST", U, {"email": "ADMIN@example.com", "role": "member", "password": PASSWORD})
    assert taken.status_code == 409, taken.text
    last_admin = served.call("admin", "PATCH", f"{U}/{USER_IDS['admin']}", {"role": "viewer"})
    assert last_admin.status_code == 409 and "last enabled admin" in last_admin.text


def test_a_provider_key_is_never_shown_back(served: Served) -> None:
    key = served.ok("admin", "POST", K, {"name": "vaulted"})
    proxy = served.ok("admin", "POST", PK, {"name": "vaulted-app", "key_id": key["id"]})
    assert proxy["key"].startswith("mdm_pk_")
    stored = served.call("admin", "PUT", f"{PK}/{proxy['id']}/providers/openai", {"key": OPENAI_KEY})
    assert stored.status_code == 200 and stored.json()["providers"] == ["openai"]
    unknown = served.call("admin", "PUT", f"{PK}/{proxy['id']}/providers/nowhere", {"key": OPENAI_KEY})
    assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "provider"
    everything = [stored.text, served.call("admin", "GET", f"{PK}/{proxy['id']}").text,
                  served.call("admin", "GET", PK).text, served.call("admin", "GET", "/api/v1/admin/audit").text,
                  unknown.text, served.gateway.log_path.read_text()]
    assert not any(OPENAI_KEY in text for text in everything)
    assert not any(proxy["key"] in text for text in everything[1:])
    # the proxy then puts the stored key in place of the proxy key
    with httpx.Client(base_url=served.gateway.url, timeout=20) as client:
        answer = client.post("/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {proxy['key']}"})
    assert answer.status_code == 200, answer.text
    removed = served.call("admin", "DELETE", f"{PK}/{proxy['id']}/providers/openai")
    assert removed.status_code == 200 and removed.json()["providers"] == []
    again = served.call("admin", "DELETE", f"{PK}/{proxy['id']}/providers/openai")
    assert again.status_code == 404


# -- CSRF -----------------------------------------------------------------------------------------

def test_a_change_by_cookie_needs_the_csrf_header(served: Served) -> None:
    with httpx.Client(base_url=served.gateway.url, timeout=20) as browser:
        login = browser.post("/api/v1/admin/login", json={"email": "admin@example.com", "password": PASSWORD})
        assert login.status_code == 200
        assert browser.get(K).status_code == 200  # reads need no CSRF token
        refused = browser.post(K, json={"name": "csrf"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf"
        forged = browser.post(K, json={"name": "csrf"}, headers={"x-csrf-token": "guess"})
        assert forged.status_code == 403
        made = browser.post(K, json={"name": "csrf"}, headers={"x-csrf-token": login.json()["csrf_token"]})
        assert made.status_code == 201, made.text
    assert served.call("admin", "POST", K, {"name": "bearer"}).status_code == 201  # Bearer: no CSRF token


# -- audit and the proxy --------------------------------------------------------------------------

def test_api_actions_are_in_the_audit_log(served: Served) -> None:
    key = served.ok("member", "POST", K, {"name": "audited"})
    served.ok("member", "PATCH", f"{K}/{key['id']}", {"description": "for audit"})
    served.ok("member", "POST", f"{K}/{key['id']}/revoke")
    entries = [e for e in served.cli("audit", "--limit", "1000") if e["target"] == key["id"]]
    assert [e["action"] for e in entries] == ["key.create", "key.update", "key.revoke"]
    for entry in entries:
        assert entry["actor"] == "member@example.com" and entry["actor_user_id"] == USER_IDS["member"]
        assert entry["remote_address"] == "127.0.0.1" and entry["at"]
    assert key["key"] not in orjson.dumps(entries).decode()


def test_a_key_revoked_by_the_api_is_refused_within_a_second(served: Served) -> None:
    key = served.ok("admin", "POST", K, {"name": "short-lived"})
    headers = {"x-majordomo-key": key["key"], "authorization": f"Bearer {OPENAI_KEY}"}
    with httpx.Client(base_url=served.gateway.url, timeout=20) as client:
        for _ in range(2):
            assert client.post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 200
        revoked = served.ok("admin", "POST", f"{K}/{key['id']}/revoke")
        assert revoked["active"] is False
        started = time.monotonic()
        while client.post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 200:
            assert time.monotonic() - started < 1.0, "the revoked key was still served after a second"
        assert client.post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 401
