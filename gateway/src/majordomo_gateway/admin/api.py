"""The admin REST API under ``/api/v1/admin/`` (docs/admin-api.md): keys, proxy keys, users,
budgets and the audit log, as the CLI manages them and through the same code (admin/operations.py).

Every route is one ``AdminRoute`` in ``admin_routes()``: its method, path and who may call it
(``access``).  The OpenAPI document (admin/openapi.py) and the test that walks every route with
every role are both generated from that table.

- ``access="admin"``: admins only; anyone else logged in gets 403.
- ``access="member"``: admins, and members for what they own (a key whose ``owner_user_id`` is
  theirs, a proxy key of such a key).  Another's key is answered exactly as a missing one (404),
  so a member cannot learn which ids exist.  Viewers get 403: they read usage only.
- A change sent with the session cookie needs the ``majordomo_csrf`` cookie's value as
  ``X-CSRF-Token`` (dashboard/auth.py); a Bearer token needs none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from majordomo_gateway.admin import operations as ops
from majordomo_gateway.admin.audit import Actor
from majordomo_gateway.admin.operations import ActionError
from majordomo_gateway.auth.key_rules import RuleError, expiry_from, rule_list
from majordomo_gateway.auth.secrets import Keyring
from majordomo_gateway.clock import Clock, utc_now
from majordomo_gateway.dashboard.api import error_response, json_response
from majordomo_gateway.dashboard.auth import Authenticate, Principal, client_address, csrf_problem
from majordomo_gateway.storage.database import Database
from majordomo_gateway.storage.records import KeyRecord, ProxyKeyRecord, UserRecord

__all__ = ["AdminContext", "AdminRoute", "admin_routes"]

PREFIX = "/api/v1/admin"
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_MAX_BODY = 64 * 1024

Handler = Callable[[Request, Principal], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class AdminRoute:
    method: str
    path: str
    #: "admin" (admins only) or "member" (admins, and members for what they own)
    access: str
    summary: str
    handler: Handler
    #: the JSON body's fields, for the OpenAPI document: name -> (JSON schema, required)
    body: tuple[tuple[str, dict[str, Any], bool], ...] = ()
    #: what a success answers
    status: int = 200


@dataclass(frozen=True, slots=True)
class AdminContext:
    """What the API needs beyond the database: the provider names a rule or proxy key may name,
    the secrets key that encrypts provider keys (None: why not), the budgets' default time zone."""

    providers: frozenset[str]
    keyring: Keyring | None = None
    keyring_error: str = "MAJORDOMO_SECRETS_KEY is not set"
    budget_time_zone: str = "UTC"


class _Forbidden(Exception):
    pass


def _error(exc: ActionError) -> Response:
    message = str(exc)
    body: dict[str, Any] = {"code": exc.code, "message": message}
    if exc.field is not None:
        body["field"] = exc.field
        if exc.field not in message:  # shared messages name the CLI's flag, or nothing
            body["message"] = f"{exc.field}: {message}"
    return json_response({"error": body}, exc.status)


async def read_body(request: Request, fields: tuple[tuple[str, dict[str, Any], bool], ...]) -> dict[str, Any]:
    """The JSON object sent, with only the fields ``fields`` names and every required one."""
    raw = await request.body()
    if len(raw) > _MAX_BODY:
        raise ActionError(f"the body is over {_MAX_BODY} bytes", status=413, code="too_large")
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise ActionError("the body is not JSON: send a JSON object") from None
    if not isinstance(body, dict):
        raise ActionError("send a JSON object")
    names = {name for name, _, _ in fields}
    for name in body:
        if name not in names:
            raise ActionError(f"unknown field {name!r}: use {', '.join(sorted(names)) or 'no body'}", field=name)
    for name, schema, required in fields:
        if required and body.get(name) is None:
            raise ActionError(f"{name} is required", field=name)
        if name in body:
            _check_type(name, body[name], schema)
    return body


_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "boolean": (bool,), "array": (list,),
                                       "integer": (int,), "number": (int, float, str)}


def _check_type(name: str, value: Any, schema: dict[str, Any]) -> None:
    kinds = schema.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if value is None:
        if "null" not in kinds:
            raise ActionError(f"{name} may not be null", field=name)
        return
    allowed = tuple(t for kind in kinds if kind != "null" for t in _TYPES[kind])
    if isinstance(value, bool) and bool not in allowed:
        allowed = ()
    if not isinstance(value, allowed):
        raise ActionError(f"{name} must be {' or '.join(k for k in kinds if k != 'null')}", field=name)
    if isinstance(value, list) and not all(isinstance(item, str) for item in value):
        raise ActionError(f"{name} must be a list of strings", field=name)


_NAME = {"type": "string", "minLength": 1, "maxLength": 200}
_TEXT_OR_NULL = {"type": ["string", "null"], "maxLength": 2000}
_LIST_OR_NULL = {"type": ["array", "null"], "items": {"type": "string"}}
_EXPIRY = {"type": ["string", "null"], "description": "30d, 12h, 90m, 2w, or an ISO date / date-time; null: never"}
_OWNER = {"type": ["string", "null"], "description": "the owner's user id or email (admins only); null: no owner"}
_KEY_FIELDS = (("name", _NAME, True), ("description", _TEXT_OR_NULL, False), ("expires_at", _EXPIRY, False),
               ("allowed_providers", _LIST_OR_NULL, False), ("allowed_models", _LIST_OR_NULL, False),
               ("owner_user_id", _OWNER, False))
_KEY_UPDATE_FIELDS = tuple((name, schema, False) for name, schema, _ in _KEY_FIELDS)
_ROLE = {"type": "string", "enum": ["admin", "member", "viewer"]}
_SECRET = {"type": "string", "writeOnly": True, "minLength": 1}


class AdminApi:
    def __init__(self, database: Database, authenticate: Authenticate, clock: Clock, context: AdminContext) -> None:
        self.database = database
        self.authenticate = authenticate
        self.clock = clock
        self.context = context

    # -- plumbing ------------------------------------------------------------------------------

    def endpoint(self, route: AdminRoute) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            principal = await self.authenticate(request)
            if principal is None:
                return error_response(401, "unauthenticated",
                                      "log in first: POST /api/v1/admin/login, then send the token as "
                                      "Authorization: Bearer")
            if principal.role != "admin" and (route.access == "admin" or principal.role != "member"):
                what = "admins" if route.access == "admin" else "admins and members"
                return error_response(403, "forbidden", f"{request.method} {route.path} is for {what}; you are "
                                                        f"a {principal.role}")
            if request.method in _WRITES:
                problem = csrf_problem(request)
                if problem is not None:
                    return error_response(403, "csrf", problem)
            try:
                return await route.handler(request, principal)
            except ActionError as exc:
                return _error(exc)
            except _Forbidden as exc:
                return error_response(403, "forbidden", str(exc))

        return serve

    @staticmethod
    def actor(request: Request, principal: Principal) -> Actor:
        return Actor(principal.email, principal.user_id, client_address(request))

    def _rules(self, body: dict[str, Any], now: datetime) -> dict[str, Any]:
        rules: dict[str, Any] = {}
        try:
            if "expires_at" in body:
                rules["expires_at"] = None if body["expires_at"] is None else expiry_from(body["expires_at"], now)
        except RuleError as exc:
            raise ActionError(str(exc), field="expires_at") from None
        for name, what, known in (("allowed_providers", "provider", self.context.providers),
                                  ("allowed_models", "model", None)):
            if name in body:
                try:
                    rules[name] = rule_list(body[name], what, known)
                except RuleError as exc:
                    raise ActionError(str(exc), field=name) from None
        return rules

    async def _owner(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        if "owner_user_id" not in body:
            return {}
        if principal.role != "admin":
            raise _Forbidden("only an admin sets a key's owner_user_id")
        if body["owner_user_id"] is None:
            return {"owner_user_id": None}
        user = await self.database.users.find(body["owner_user_id"])
        if user is None:
            raise ActionError(f"no user {body['owner_user_id']} (see GET /api/v1/admin/users)", field="owner_user_id")
        return {"owner_user_id": user.id}

    @staticmethod
    def _owns(principal: Principal, key: KeyRecord | None) -> bool:
        return key is not None and (principal.role == "admin" or key.owner_user_id == principal.user_id)

    async def _key(self, request: Request, principal: Principal) -> KeyRecord:
        key_id = request.path_params["key_id"]
        key = await self.database.get_key(key_id)
        if key is None or not self._owns(principal, key):
            raise ActionError(f"no key with id {key_id}", status=404, code="not_found")
        return key

    async def _proxy_key(self, request: Request, principal: Principal) -> ProxyKeyRecord:
        proxy_key_id = request.path_params["proxy_key_id"]
        record = await self.database.proxy_keys.get(proxy_key_id)
        if record is None or not self._owns(principal, await self.database.get_key(record.majordomo_api_key_id)):
            raise ActionError(f"no proxy key with id {proxy_key_id}", status=404, code="not_found")
        return record

    async def _user(self, request: Request) -> UserRecord:
        user_id = request.path_params["user_id"]
        user = await self.database.users.find(user_id)
        if user is None:
            raise ActionError(f"no user {user_id}", status=404, code="not_found")
        return user

    async def _proxy_key_body(self, record: ProxyKeyRecord, status: int = 200, **extra: Any) -> Response:
        return json_response(ops.proxy_key_data(record, await self.database.proxy_keys.providers(record.id)) | extra,
                             status)

    # -- keys ----------------------------------------------------------------------------------

    async def list_keys(self, request: Request, principal: Principal) -> Response:
        keys = await self.database.list_keys()
        return json_response([k.to_dict() for k in keys if self._owns(principal, k)])

    async def create_key(self, request: Request, principal: Principal) -> Response:
        body = await read_body(request, _KEY_FIELDS)
        now = self.clock()
        rules = self._rules(body, now)
        rules["owner_user_id"] = principal.user_id if principal.role != "admin" else None
        rules.update(await self._owner(principal, body))
        record, secret = await ops.create_key(self.database, self.actor(request, principal), name=body["name"],
                                              description=body.get("description"), rules=rules, now=now)
        return json_response(record.to_dict() | {"key": secret}, 201)

    async def get_key(self, request: Request, principal: Principal) -> Response:
        return json_response((await self._key(request, principal)).to_dict())

    async def update_key(self, request: Request, principal: Principal) -> Response:
        record = await self._key(request, principal)
        body = await read_body(request, _KEY_UPDATE_FIELDS)
        if not body:
            raise ActionError(f"nothing to change: send any of {', '.join(n for n, _, _ in _KEY_FIELDS)}")
        if "name" in body and body["name"] is None:
            raise ActionError("name may not be null", field="name")
        now = self.clock()
        rules = self._rules(body, now) | await self._owner(principal, body)
        updated = await ops.update_key(self.database, self.actor(request, principal), record, name=body.get("name"),
                                       description=body.get("description"), rules=rules, now=now)
        if updated is None:
            raise ActionError(f"no key with id {record.id}", status=404, code="not_found")
        return json_response(updated.to_dict())

    async def revoke_key(self, request: Request, principal: Principal) -> Response:
        record = await self._key(request, principal)
        revoked = await ops.revoke_key(self.database, self.actor(request, principal), record.id, self.clock())
        assert revoked is not None  # keys are never deleted
        return json_response(revoked.to_dict())

    # -- proxy keys ----------------------------------------------------------------------------

    async def list_proxy_keys(self, request: Request, principal: Principal) -> Response:
        owned = {k.id for k in await self.database.list_keys() if self._owns(principal, k)}
        entries = [ops.proxy_key_data(r, await self.database.proxy_keys.providers(r.id))
                   for r in await self.database.proxy_keys.all() if r.majordomo_api_key_id in owned]
        return json_response(entries)

    async def create_proxy_key(self, request: Request, principal: Principal) -> Response:
        body = await read_body(request, (("name", _NAME, True),
                                         ("key_id", {"type": "string", "description": "the Majordomo key's id"},
                                          True)))
        key = await self.database.get_key(body["key_id"])
        if key is not None and not self._owns(principal, key):
            key = None  # another's key: as if it did not exist
        record, secret = await ops.create_proxy_key(self.database, self.actor(request, principal), name=body["name"],
                                                    key=key, key_id=body["key_id"], now=self.clock(),
                                                    field="key_id")
        return await self._proxy_key_body(record, 201, key=secret)

    async def get_proxy_key(self, request: Request, principal: Principal) -> Response:
        return await self._proxy_key_body(await self._proxy_key(request, principal))

    async def revoke_proxy_key(self, request: Request, principal: Principal) -> Response:
        record = await self._proxy_key(request, principal)
        revoked = await ops.revoke_proxy_key(self.database, self.actor(request, principal), record.id, self.clock())
        assert revoked is not None
        return await self._proxy_key_body(revoked)

    async def set_provider(self, request: Request, principal: Principal) -> Response:
        record = await self._proxy_key(request, principal)
        provider = ops.check_provider(request.path_params["provider"], self.context.providers)
        body = await read_body(request, (("key", _SECRET, True),))
        if self.context.keyring is None:
            raise ActionError(f"provider keys cannot be stored: {self.context.keyring_error}", status=503,
                              code="secrets_key_missing")
        await ops.set_provider(self.database, self.context.keyring, self.actor(request, principal), record, provider,
                               body["key"], self.clock())
        return await self._proxy_key_body(record)

    async def remove_provider(self, request: Request, principal: Principal) -> Response:
        record = await self._proxy_key(request, principal)
        await ops.remove_provider(self.database, self.actor(request, principal), record,
                                  request.path_params["provider"], self.clock())
        return await self._proxy_key_body(record)

    # -- users ---------------------------------------------------------------------------------

    async def list_users(self, request: Request, principal: Principal) -> Response:
        return json_response([u.to_dict() for u in await self.database.users.all()])

    async def create_user(self, request: Request, principal: Principal) -> Response:
        body = await read_body(request, (("email", {"type": "string"}, True), ("role", _ROLE, True),
                                         ("password", _SECRET, True)))
        record = await ops.create_user(self.database, self.actor(request, principal), email=body["email"],
                                       role=body["role"], password=body["password"], now=self.clock())
        return json_response(record.to_dict(), 201)

    async def get_user(self, request: Request, principal: Principal) -> Response:
        return json_response((await self._user(request)).to_dict())

    async def update_user(self, request: Request, principal: Principal) -> Response:
        user = await self._user(request)
        body = await read_body(request, (("role", _ROLE, False), ("disabled", {"type": "boolean"}, False)))
        if not body:
            raise ActionError("nothing to change: send role and/or disabled")
        actor, now = self.actor(request, principal), self.clock()
        if "role" in body and body["role"] != user.role:
            user = await ops.set_user_role(self.database, actor, user, body["role"], now)
        if "disabled" in body and body["disabled"] == user.active:
            user = await ops.set_user_disabled(self.database, actor, user, disabled=body["disabled"], now=now,
                                               keep_an_admin=True)
        return json_response(user.to_dict())

    async def set_password(self, request: Request, principal: Principal) -> Response:
        user = await self._user(request)
        body = await read_body(request, (("password", _SECRET, True),))
        record, ended = await ops.set_user_password(self.database, self.actor(request, principal), user,
                                                    body["password"], self.clock())
        return json_response(record.to_dict() | {"sessions_ended": ended})

    # -- audit ---------------------------------------------------------------------------------

    async def audit(self, request: Request, principal: Principal) -> Response:
        text = request.query_params.get("limit", "100")
        if not text.isdigit() or not 1 <= int(text) <= 10_000:
            raise ActionError(f"limit={text!r}: a whole number from 1 to 10000", field="limit")
        entries = await self.database.audit.recent(limit=int(text))
        return json_response([e.to_dict() for e in entries])

    # -- the table -----------------------------------------------------------------------------

    def routes(self) -> list[AdminRoute]:
        k, pk, u = f"{PREFIX}/keys", f"{PREFIX}/proxy-keys", f"{PREFIX}/users"
        return [
            AdminRoute("GET", k, "member", "List keys (a member: its own)", self.list_keys),
            AdminRoute("POST", k, "member", "Create a key; the answer holds its secret `key`, shown once",
                       self.create_key, _KEY_FIELDS),
            AdminRoute("GET", k + "/{key_id}", "member", "One key", self.get_key),
            AdminRoute("PATCH", k + "/{key_id}", "member",
                       "Change a key's name, description, expiry, allowed providers/models or owner; a field "
                       "sent as null clears it", self.update_key, _KEY_UPDATE_FIELDS),
            AdminRoute("POST", k + "/{key_id}/revoke", "member", "Revoke a key: refused by every gateway within "
                       "a second", self.revoke_key),
            AdminRoute("GET", pk, "member", "List proxy keys (a member: those of its keys)", self.list_proxy_keys),
            AdminRoute("POST", pk, "member", "Create a proxy key for a Majordomo key; the answer holds its secret "
                       "`key`, shown once", self.create_proxy_key,
                       (("name", _NAME, True), ("key_id", {"type": "string"}, True)), 201),
            AdminRoute("GET", pk + "/{proxy_key_id}", "member", "One proxy key", self.get_proxy_key),
            AdminRoute("POST", pk + "/{proxy_key_id}/revoke", "member", "Revoke a proxy key", self.revoke_proxy_key),
            AdminRoute("PUT", pk + "/{proxy_key_id}/providers/{provider}", "member",
                       "Store (or replace) the provider key used for `provider`; never shown back",
                       self.set_provider, (("key", _SECRET, True),)),
            AdminRoute("DELETE", pk + "/{proxy_key_id}/providers/{provider}", "member",
                       "Forget the provider key for `provider`", self.remove_provider),
            AdminRoute("GET", u, "admin", "List users", self.list_users),
            AdminRoute("POST", u, "admin", "Create a user", self.create_user,
                       (("email", {"type": "string"}, True), ("role", _ROLE, True), ("password", _SECRET, True)), 201),
            AdminRoute("GET", u + "/{user_id}", "admin", "One user (by id or email)", self.get_user),
            AdminRoute("PATCH", u + "/{user_id}", "admin", "Change a user's role, or disable (ending its sessions) "
                       "or enable it", self.update_user,
                       (("role", _ROLE, False), ("disabled", {"type": "boolean"}, False))),
            AdminRoute("POST", u + "/{user_id}/password", "admin", "Set a user's password; ends its sessions",
                       self.set_password, (("password", _SECRET, True),)),
            AdminRoute("GET", f"{PREFIX}/audit", "admin", "The newest audit rows, oldest first (`?limit=`)",
                       self.audit),
        ]


def admin_routes(database: Database, authenticate: Authenticate, context: AdminContext,
                 clock: Clock = utc_now) -> tuple[list[AdminRoute], list[Route]]:
    """The table, and the Starlette routes serving it."""
    api = AdminApi(database, authenticate, clock, context)
    table = api.routes()
    return table, [Route(r.path, api.endpoint(r), methods=[r.method]) for r in table]
