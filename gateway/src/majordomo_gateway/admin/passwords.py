"""Passwords: argon2id (argon2-cffi's defaults, RFC 9106's second recommended profile: 64 MiB,
3 passes, 4 lanes), checked off the event loop because one check takes ~0.1 s of CPU.

A login for an unknown email is checked against a dummy hash made with the same parameters, so
it costs what a wrong password costs and the answer's timing does not tell which emails exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = ["MAX_PASSWORD_LENGTH", "MIN_PASSWORD_LENGTH", "hash_password", "needs_rehash", "normalise_email",
           "password_problem", "verify_password", "verify_password_async"]

MIN_PASSWORD_LENGTH = 12
# argon2 takes any length, but a megabyte "password" is a way to make the server hash a megabyte.
MAX_PASSWORD_LENGTH = 1024
_HASHER = PasswordHasher()
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; ``password_hash`` None checks against the dummy hash (and is False)."""
    if password_hash is None:
        with contextlib.suppress(VerificationError):
            _HASHER.verify(_dummy_hash(), password)
        return False
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password_async(password_hash: str | None, password: str) -> bool:
    """``verify_password`` on a thread: argon2-cffi releases the GIL, so proxied requests keep flowing."""
    return await asyncio.to_thread(verify_password, password_hash, password)


def needs_rehash(password_hash: str) -> bool:
    """Whether a stored hash was made with weaker parameters than today's (rehashed at the next login)."""
    try:
        return _HASHER.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


@functools.cache
def _dummy_hash() -> str:
    return _HASHER.hash("majordomo: no such user")


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"a password needs at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"a password has at most {MAX_PASSWORD_LENGTH} characters"
    if password.strip() != password:
        return "a password cannot start or end with spaces"
    return None


def normalise_email(email: str) -> str:
    """The stored form: trimmed, lower case (accounts are one per address, whatever its case).
    ValueError when it is not an email address."""
    value = email.strip().lower()
    if not _EMAIL.match(value) or len(value) > 320:
        raise ValueError(f"{email!r} is not an email address")
    return value
