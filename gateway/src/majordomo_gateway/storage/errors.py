"""The one failure every storage caller must tell apart from the rest: the database is not there."""

from __future__ import annotations


class DatabaseUnavailable(Exception):
    """The database could not be reached or did not answer; the caller decides what that means."""


class ConstraintViolation(Exception):
    """A write broke a uniqueness or reference constraint (an email already taken, an unknown owner)."""
