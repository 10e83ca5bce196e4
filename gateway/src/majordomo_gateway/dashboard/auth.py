"""Who is asking: the one dependency the dashboard and its API have on the admin login.

A request carries a session token (``POST /api/v1/admin/login`` gives it out) either as
``Authorization: Bearer <token>`` (scripts) or in the HttpOnly cookie ``SESSION_COOKIE`` (the
page).  Only its SHA-256 is stored (admin_sessions), so a copy of the database logs no one in.
Everything here reads; the API's routes are all GETs, so a cookie cannot be made to change anything
from another site (no CSRF surface), and the cookie is SameSite=Strict besides.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request

from majordomo_gateway.auth.keys import hash_secret
from majordomo_gateway.clock import Clock, utc_now
from majordomo_gateway.storage.database import AdminStore

__all__ = ["ROLES", "SESSION_COOKIE", "Authenticate", "Principal", "session_authenticator", "session_token"]

SESSION_COOKIE = "majordomo_session"
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
