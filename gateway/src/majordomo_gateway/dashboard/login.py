"""``POST /api/v1/admin/login`` and ``POST /api/v1/admin/logout``: the sessions the dashboard and
scripts use (issue 12, point 2).  The admin API proper (keys, users, ...) is admin/api.py.

- A login answers ``{"token", "expires_at", "csrf_token"}`` and sets two cookies: the session
  (HttpOnly, SameSite=Strict) and ``majordomo_csrf``, readable by the page, which sends it back as
  ``X-CSRF-Token`` on a cookie-authenticated change (double submit: another site can neither read
  it nor set the header).  Scripts send the token as ``Authorization: Bearer`` and need no CSRF.
- Only the token's SHA-256 is stored.  A wrong password and an unknown (or disabled) user get the
  same 401 after the same argon2 work (admin/passwords.py).
- Failed logins are throttled per account and per client address (``Throttle``): after
  ``MAX_FAILURES`` in ``WINDOW`` seconds, 429 with Retry-After, checked before any password work.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from datetime import timedelta

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from majordomo_gateway.admin.audit import Actor, record_action
from majordomo_gateway.admin.passwords import MAX_PASSWORD_LENGTH, verify_password_async
from majordomo_gateway.auth.keys import hash_secret
from majordomo_gateway.clock import Clock, utc_now
from majordomo_gateway.dashboard.auth import CSRF_COOKIE, SESSION_COOKIE, client_address, csrf_problem, session_token
from majordomo_gateway.storage.database import AdminStore

__all__ = ["CSRF_COOKIE", "SESSION_TTL", "Throttle", "login_routes"]

SESSION_TTL = timedelta(hours=12)
MAX_FAILURES = 5
WINDOW = 15 * 60.0
_MAX_TRACKED = 10_000


class Throttle:
    """Recent failures per name (an email, an address), in this process's memory: enough to make
    guessing slow; a restart forgets them, which costs an attacker a restart it cannot cause."""

    def __init__(self, max_failures: int = MAX_FAILURES, window: float = WINDOW) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, name: str, now: float) -> int | None:
        """Seconds until ``name`` may try again, or None when it may now."""
        failures = self._failures.get(name)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if len(failures) < self.max_failures:
            return None
        return max(1, int(failures[0] + self.window - now) + 1)

    def failed(self, name: str, now: float) -> None:
        if len(self._failures) >= _MAX_TRACKED and name not in self._failures:
            # Bounded memory under a spray of names: forget the stalest entry.
            oldest = min(self._failures, key=lambda key: self._failures[key][-1] if self._failures[key] else 0.0)
            del self._failures[oldest]
        self._failures.setdefault(name, deque(maxlen=self.max_failures)).append(now)

    def succeeded(self, name: str) -> None:
        self._failures.pop(name, None)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps({"error": {"code": code, "message": message}}), status,
                    media_type="application/json", headers={"cache-control": "no-store", **(headers or {})})


def login_routes(database: AdminStore, clock: Clock = utc_now, throttle: Throttle | None = None) -> list[Route]:
    limits = throttle or Throttle()

    async def login(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
            email, password = body["email"], body["password"]
            if not isinstance(email, str) or not isinstance(password, str):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _error(400, "invalid_request", 'send JSON: {"email": "...", "password": "..."}')
        address, account = client_address(request), f"account:{email.strip().lower()}"
        now = time.monotonic()
        waits = [w for w in (limits.retry_after(account, now), limits.retry_after(f"address:{address}", now)) if w]
        if waits:
            return _error(429, "too_many_attempts", "too many failed logins; try again later",
                          {"retry-after": str(max(waits))})
        user = await database.users.by_email(email.strip()) if len(password) <= MAX_PASSWORD_LENGTH else None
        valid = await verify_password_async(user.password_hash if user else None, password[:MAX_PASSWORD_LENGTH])
        if not valid or user is None or not user.active:
            limits.failed(account, now)
            limits.failed(f"address:{address}", now)
            return _error(401, "invalid_credentials", "wrong email or password")
        limits.succeeded(account)
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        moment = clock()
        session = await database.sessions.create(hash_secret(token), user.id, moment, moment + SESSION_TTL, address)
        await record_action(database, Actor(user.email, user.id, address), "login", user.id, now=moment)
        response = Response(orjson.dumps({"token": token, "expires_at": session.expires_at.isoformat(),
                                          "csrf_token": csrf}),
                            media_type="application/json", headers={"cache-control": "no-store"})
        secure = request.url.scheme == "https"
        max_age = int(SESSION_TTL.total_seconds())
        response.set_cookie(SESSION_COOKIE, token, max_age=max_age, path="/", httponly=True, samesite="strict",
                            secure=secure)
        response.set_cookie(CSRF_COOKIE, csrf, max_age=max_age, path="/", httponly=False, samesite="strict",
                            secure=secure)
        return response

    async def logout(request: Request) -> Response:
        token = session_token(request)
        if token is None:
            return _error(401, "unauthenticated", "no session to end")
        problem = csrf_problem(request)
        if problem is not None:
            return _error(403, "csrf", problem)
        moment = clock()
        found = await database.sessions.find(hash_secret(token))
        await database.sessions.revoke(hash_secret(token), moment)
        if found is not None:
            _, user = found
            await record_action(database, Actor(user.email, user.id, client_address(request)), "logout", user.id,
                                now=moment)
        response = Response(b'{"ok": true}', media_type="application/json", headers={"cache-control": "no-store"})
        response.delete_cookie(SESSION_COOKIE, path="/")
        response.delete_cookie(CSRF_COOKIE, path="/")
        return response

    return [Route("/api/v1/admin/login", login, methods=["POST"]),
            Route("/api/v1/admin/logout", logout, methods=["POST"])]
