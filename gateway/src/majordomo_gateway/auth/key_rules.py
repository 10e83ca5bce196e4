"""What a Majordomo key may do beyond existing: until when (``expires_at``), with which providers
and which models (``allowed_providers``, ``allowed_models``: fnmatch globs such as ``gpt-4o*``).

The rules travel in the KeyRecord the key cache holds, so checking them costs attribute reads
and, for a key with model rules, one match of a pattern compiled when the key was read
(KeyRecord.model_pattern); never a database query.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from majordomo_gateway.storage.records import KeyRecord

__all__ = ["RuleError", "expiry_from", "model_rule", "provider_rule", "refusal", "rule_list"]

_DURATION = re.compile(r"^(\d+)\s*(m|h|d|w)$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_RULE_ITEM = re.compile(r"^[A-Za-z0-9_.:*?\[\]/@+-]{1,200}$")


class RuleError(ValueError):
    """A rule that cannot be stored; the message says what is wrong and what would do."""


def expiry_from(text: str, now: datetime) -> datetime:
    """``30d``, ``12h``, ``90m``, ``2w`` from now, or an ISO date / date-time (UTC unless it says)."""
    value = text.strip()
    duration = _DURATION.match(value.lower())
    if duration:
        amount = int(duration.group(1))
        if amount <= 0:
            raise RuleError(f"expiry {text!r} is not in the future: use a positive duration such as 30d")
        return now + timedelta(**{_UNITS[duration.group(2)]: amount})
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise RuleError(f"cannot read expiry {text!r}: use 30d, 12h, 90m, 2w, a date such as 2026-12-31, or an "
                        "ISO date-time such as 2026-12-31T18:00:00+01:00") from None
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    if moment <= now:
        raise RuleError(f"expiry {text!r} is in the past; to stop a key now, revoke it")
    return moment.astimezone(UTC)


def rule_list(values: Iterable[str] | None, what: str, known: Iterable[str] | None = None) -> tuple[str, ...] | None:
    """Allowed providers or models as stored: None (any) when none are given, else the distinct
    items in the order given.  ``known``, for providers, is what a name must be one of."""
    if values is None:
        return None
    items: list[str] = []
    choices = None if known is None else sorted(known)
    for raw in values:
        item = raw.strip() if isinstance(raw, str) else raw
        if not isinstance(item, str) or not _RULE_ITEM.match(item):
            raise RuleError(f"{what} {raw!r} is not a valid name or pattern (letters, digits, - _ . : / @ + and the "
                            "glob characters * ? [ ])")
        if choices is not None and item not in choices:
            raise RuleError(f"unknown provider {item!r}; the configured ones are {', '.join(choices)}")
        if item not in items:
            items.append(item)
    return tuple(items)


def provider_rule(key: KeyRecord, provider: str) -> str | None:
    """Why ``key`` may not use ``provider`` (the rows' provider name), or None."""
    allowed = key.allowed_providers
    if allowed is None or provider in allowed:
        return None
    return (f"this Majordomo API key may only be used with provider(s) {', '.join(allowed) or '(none)'} "
            f"(allowed_providers), not {provider}")


def model_rule(key: KeyRecord, model: str | None) -> str | None:
    """Why ``key`` may not use ``model``, or None.  A request that names no model (a model list)
    is not a use of one and passes."""
    pattern = key.model_pattern
    if pattern is None or model is None or pattern.fullmatch(model):
        return None
    return (f"this Majordomo API key may only be used with model(s) {', '.join(key.allowed_models or ()) or '(none)'} "
            f"(allowed_models), not {model}")


def refusal(key: KeyRecord, provider: str, model: str | None) -> tuple[str, str] | None:
    """(error code, message) when a rule of ``key`` refuses the request, else None."""
    reason = provider_rule(key, provider)
    if reason is not None:
        return "provider_not_allowed", reason
    reason = model_rule(key, model)
    if reason is not None:
        return "model_not_allowed", reason
    return None
