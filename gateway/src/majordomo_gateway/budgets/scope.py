"""What a budget or a rate limit covers: ``global``, ``key:<id>``, ``model:<name>``,
``metadata:<Key>=<Value>`` or ``metadata:<Key>=*`` (one counter per distinct value of the key).

``key:`` takes a key id or name on the command line; the caller resolves a name to the id, which
is what is stored (a renamed key keeps its budget).  Metadata names are compared in the casing
rows store them (``user-id`` and ``User-Id`` are the same header).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EVERY_VALUE", "Scope", "ScopeError", "canonical_metadata_name", "parse_scope"]

EVERY_VALUE = "*"
_KINDS = ("global", "key", "model", "metadata")
_EXAMPLES = "global, key:<key id or name>, model:<name>, metadata:<Key>=<Value> or metadata:<Key>=*"


class ScopeError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Scope:
    kind: str
    #: the metadata name (``metadata`` scopes only)
    key: str | None = None
    #: the key id, model name or metadata value; None for ``global`` and ``metadata:<Key>=*``
    value: str | None = None

    @property
    def per_value(self) -> bool:
        """One counter per distinct metadata value (``metadata:<Key>=*``)."""
        return self.kind == "metadata" and self.value is None

    @property
    def text(self) -> str:
        if self.kind == "global":
            return "global"
        if self.kind == "metadata":
            return f"metadata:{self.key}={EVERY_VALUE if self.value is None else self.value}"
        return f"{self.kind}:{self.value}"


def canonical_metadata_name(name: str) -> str:
    """``user-id`` → ``User-Id``, as proxy/headers.py stores X-Majordomo-* names."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def parse_scope(text: str) -> Scope:
    text = text.strip()
    if text == "global":
        return Scope("global")
    kind, colon, rest = text.partition(":")
    if not colon or kind not in _KINDS or kind == "global":
        raise ScopeError(f"unknown scope {text!r}: use {_EXAMPLES}")
    if not rest:
        raise ScopeError(f"scope {text!r} names nothing after {kind}: (use {_EXAMPLES})")
    if kind != "metadata":
        return Scope(kind, value=rest)
    name, equals, value = rest.partition("=")
    name = name.strip()
    if name.lower().startswith("x-majordomo-"):
        name = name[len("x-majordomo-"):]
    if not equals or not name or not value:
        raise ScopeError(f"scope {text!r}: metadata scopes look like metadata:User-Id=u-42 or metadata:User-Id=*")
    if any(c.isspace() for c in name) or not all(c.isalnum() or c == "-" for c in name):
        raise ScopeError(f"scope {text!r}: {name!r} is not a header name (letters, digits and -)")
    return Scope("metadata", key=canonical_metadata_name(name), value=None if value == EVERY_VALUE else value)
