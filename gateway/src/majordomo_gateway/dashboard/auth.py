"""Who is asking: the one dependency the dashboard and its API have on the admin login.

A request carries a session token (``POST /api/v1/admin/login`` gives it out) either as
``Authorization: Bearer <token>`` (scripts) or in the HttpOnly cookie ``SESSION_COOKIE`` (the
page).  Only its SHA-256 is stored (admin_sessions), so a copy of the database logs no one in.
A change made with the cookie must also carry the ``majordomo_csrf`` cookie's value as
``X-CSRF-Token`` (``csrf_problem``: a double submit another site can neither read nor forge); the
cookie is SameSite=Strict besides.  A Bearer token is never sent by a browser on its own, so it
needs no CSRF token.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request

from majordomo_gateway.auth.keys import hash_secret
from majordomo_gateway.clock import Clock, utc_now
from majordomo_gateway.storage.database import AdminStore

__all__ = ["CSRF_COOKIE", "ROLES", "SESSION_COOKIE", "Authenticate", "Principal", "client_address", "csrf_problem",
           "session_authenticator", "session_token"]

SESSION_COOKIE = "majordomo_session"
CSRF_COOKIE = "majordomo_csrf"
#: who may read usage: everyone with a login; a member only its own keys' requests
ROLES = frozenset({"admin", "member", "viewer"})


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    email: str
    role: str

    @property
    def owner_scope(self) -> str | None:
        """The owner whose keys' rows this user may see; None: every row."""
        return self.user_id if self.role == "member" else None


#: resolves a request to its user, or None without a valid credential
Authenticate = Callable[[Request], Awaitable[Principal | None]]


def session_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.cookies.get(SESSION_COOKIE) or None


def by_bearer(request: Request) -> bool:
    return request.headers.get("authorization", "").lower().startswith("bearer ")


def csrf_problem(request: Request) -> str | None:
    """Why a change sent with the session cookie may not proceed (None: it may, or it came with a
    Bearer token)."""
    if by_bearer(request):
        return None
    sent, expected = request.headers.get("x-csrf-token", ""), request.cookies.get(CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(sent, expected):
        return f"send the {CSRF_COOKIE} cookie's value as X-CSRF-Token"
    return None


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def session_authenticator(database: AdminStore, clock: Clock = utc_now) -> Authenticate:
    """A live session (not expired, not revoked) of an enabled user."""

    async def authenticate(request: Request) -> Principal | None:
        token = session_token(request)
        if token is None or len(token) > 512:
            return None
        found = await database.sessions.find(hash_secret(token))
        if found is None:
            return None
        session, user = found
        if session.revoked_at is not None or session.expires_at <= clock() or not user.active:
            return None
        if user.role not in ROLES:
            return None
        return Principal(user.id, user.email, user.role)

    return authenticate
