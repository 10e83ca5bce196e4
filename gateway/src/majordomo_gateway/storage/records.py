"""The plain record types storage reads and writes, and the request row's durable (spool) encoding.

Every layer that talks about stored things (auth, the CLI, the writer, both backends) imports them
from here, and this module imports nothing of the package but ``usage``: that is what keeps storage
and auth from importing each other.
"""

from __future__ import annotations

import fnmatch
import operator
import re
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import orjson

from majordomo_gateway.usage import Usage


@dataclass(slots=True)
class RequestRecord:
    """One proxied request.  Field order is the column order of ``llm_requests``."""

    id: str
    majordomo_api_key_id: str | None
    provider_api_key_hash: str | None
    provider_api_key_alias: str | None
    provider: str
    route: str
    model: str | None
    request_path: str
    request_method: str
    requested_at: datetime
    responded_at: datetime
    response_time_ms: float
    time_to_first_token_ms: float | None = None
    streamed: bool = False
    aborted: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_creation_1h_tokens: int = 0
    reasoning_tokens: int = 0
    web_search_requests: int = 0
    input_cost: Decimal | None = None
    output_cost: Decimal | None = None
    total_cost: Decimal | None = None
    model_alias_found: bool = False
    # "reported": the response carried usage; "missing": it should have but did not (e.g. a stream
    # cut before its usage event); "none": the endpoint reports no usage (model lists, errors);
    # "invalid": it carried usage that is not (a count that is not a whole number from 0 to
    # usage.MAX_TOKEN_COUNT, or a cost the cost columns cannot hold): no tokens, no cost, and
    # error_message says what the values were.
    usage_source: str = "none"
    status_code: int = 0
    error_message: str | None = None
    raw_metadata: dict[str, str] = field(default_factory=dict)

    def as_tuple(self) -> tuple[Any, ...]:
        # Shallow on purpose: dataclasses.astuple deep-copies (raw_metadata included), which cost
        # a cost the writer's profile showed per row (docs/performance.md).
        return _column_values(self)

    def to_json(self) -> bytes:
        return orjson.dumps(self.as_tuple(), default=encode_extra)

    @classmethod
    def from_json(cls, data: bytes) -> RequestRecord:
        values = list(orjson.loads(data))
        record = cls(*values)
        record.requested_at = datetime.fromisoformat(values[_REQUESTED_AT])
        record.responded_at = datetime.fromisoformat(values[_RESPONDED_AT])
        for index in _COST_INDEXES:
            if values[index] is not None:
                setattr(record, COLUMNS[index], Decimal(values[index]))
        return record


def encode_extra(value: Any) -> Any:
    """orjson's default= hook for rows: Decimal costs as text, so no digit is lost."""
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(RequestRecord))
_column_values = operator.attrgetter(*COLUMNS)
_REQUESTED_AT = COLUMNS.index("requested_at")
_RESPONDED_AT = COLUMNS.index("responded_at")
_COST_INDEXES = tuple(COLUMNS.index(name) for name in ("input_cost", "output_cost", "total_cost"))
_TEXT_COLUMNS = tuple(f.name for f in fields(RequestRecord) if f.type in ("str", "str | None"))
_text_values = operator.attrgetter(*_TEXT_COLUMNS)

# PostgreSQL text and jsonb cannot hold U+0000 and SQLite's SQL functions stop at it, so both databases
# store U+FFFD in its place: the row is kept, and reads the same on either.
NUL = "\x00"
REPLACEMENT_CHARACTER = "\ufffd"


def has_nul(record: RequestRecord) -> bool:
    """Whether any string the row stores (metadata keys and values included) contains U+0000."""
    return any(value is not None and NUL in value for value in _text_values(record)) or any(
        NUL in key or (isinstance(value, str) and NUL in value) for key, value in record.raw_metadata.items()
    )


def without_nul(record: RequestRecord) -> RequestRecord:
    """The row with U+0000 replaced by U+FFFD in every stored string; a copy, the caller's row is untouched."""
    changes: dict[str, Any] = {name: _clean(getattr(record, name)) for name in _TEXT_COLUMNS}
    changes["raw_metadata"] = _clean(record.raw_metadata)
    return replace(record, **changes)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace(NUL, REPLACEMENT_CHARACTER)
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


#: Costs are NUMERIC(20, 10) on PostgreSQL: ten digits before the point.  SQLite would store any
#: number; a cost at or above this is refused before either sees it, so both keep the same rows.
COST_LIMIT = Decimal(10) ** 10


_COST_QUANTUM = Decimal("1e-10")


def fits_cost_column(cost: Decimal) -> bool:
    """Whether the cost columns can hold ``cost``."""
    if not cost.is_finite() or abs(cost) >= COST_LIMIT:
        return False
    # PostgreSQL rounds to 10 places (ties away from zero), and 9999999999.99999999999 rounds up
    # to 10^10, which overflows.
    return abs(cost.quantize(_COST_QUANTUM, rounding=ROUND_HALF_UP)) < COST_LIMIT


def truncate_message(message: str, limit: int = 2000) -> str:
    """Cut on a character boundary (never inside a UTF-8 sequence) and say that it was cut."""
    # Upstream error bodies may carry NULs, which PostgreSQL text cannot store.
    message = message.replace(NUL, REPLACEMENT_CHARACTER)
    if len(message) <= limit:
        return message
    return message[: limit - 1] + "…"


@dataclass(slots=True, frozen=True)
class KeyRecord:
    """An API key as stored: never the key itself.  Field names are the ``api_keys`` columns read."""

    id: str
    name: str
    description: str | None
    key_prefix: str
    created_at: datetime
    updated_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    request_count: int
    #: the user who manages it (a member manages only its own keys); None: admins only
    owner_user_id: str | None = None
    #: requests after this get 401 (``keys create --expires 30d``)
    expires_at: datetime | None = None
    #: provider names and model globs (fnmatch) its requests may use; None allows any
    allowed_providers: tuple[str, ...] | None = None
    allowed_models: tuple[str, ...] | None = None
    #: allowed_models as one compiled pattern, made once when the record is read (so once per key
    #: cache fill, not per request); not a column
    model_pattern: re.Pattern[str] | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.allowed_models is not None:
            pattern = "|".join(f"(?:{fnmatch.translate(glob)})" for glob in self.allowed_models) or "(?!)"
            object.__setattr__(self, "model_pattern", re.compile(pattern))

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def has_rules(self) -> bool:
        return self.allowed_providers is not None or self.allowed_models is not None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "key_prefix": self.key_prefix,
            "active": self.active,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "revoked_at": _iso(self.revoked_at),
            "last_used_at": _iso(self.last_used_at),
            "request_count": self.request_count,
            "owner_user_id": self.owner_user_id,
            "expires_at": _iso(self.expires_at),
            "allowed_providers": None if self.allowed_providers is None else list(self.allowed_providers),
            "allowed_models": None if self.allowed_models is None else list(self.allowed_models),
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(slots=True)
class InsertResult:
    """How many rows were new (a replayed row already present counts as a duplicate, not an error)."""

    inserted: int
    duplicates: int


@dataclass(slots=True, frozen=True)
class UsageRow:
    """What re-pricing a stored row needs: its raw usage numbers and the costs it holds now."""

    id: str
    provider: str
    model: str | None
    requested_at: datetime
    usage: Usage
    input_cost: Decimal | None
    output_cost: Decimal | None
    total_cost: Decimal | None
    model_alias_found: bool


@dataclass(slots=True, frozen=True)
class CostUpdate:
    id: str
    input_cost: Decimal | None
    output_cost: Decimal | None
    total_cost: Decimal | None
    model_alias_found: bool


@dataclass(slots=True, frozen=True)
class UnpricedModel:
    """A (provider, model) seen with reported usage but no price, and how often."""

    provider: str
    model: str | None
    requests: int
    first_seen: datetime
    last_seen: datetime


@dataclass(slots=True, frozen=True)
class ProxyKeyRecord:
    """A proxy key as stored: never the key itself.  Field names are the ``proxy_keys`` columns read."""

    id: str
    name: str
    majordomo_api_key_id: str
    key_prefix: str
    created_at: datetime
    updated_at: datetime
    revoked_at: datetime | None


@dataclass(slots=True, frozen=True)
class ProviderSecretRecord:
    """One provider key of a proxy key, encrypted (auth/secrets.py); ``provider_key_hash`` is the
    SHA-256 the request rows record, so rows can be matched to the key without decrypting it."""

    proxy_key_id: str
    provider: str
    secret_key_id: str
    ciphertext: str
    provider_key_hash: str
    created_at: datetime
    updated_at: datetime


ROLES: tuple[str, ...] = ("admin", "member", "viewer")


@dataclass(slots=True, frozen=True)
class UserRecord:
    """A person who manages the gateway.  ``password_hash`` is argon2id (admin/passwords.py) and
    never leaves the server: ``to_dict`` leaves it out."""

    id: str
    email: str
    role: str
    password_hash: str
    disabled_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def active(self) -> bool:
        return self.disabled_at is None

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "email": self.email, "role": self.role, "active": self.active,
                "disabled_at": _iso(self.disabled_at), "created_at": _iso(self.created_at),
                "updated_at": _iso(self.updated_at)}


@dataclass(slots=True, frozen=True)
class SessionRecord:
    """A login.  Only the SHA-256 of its token is stored."""

    token_hash: str
    user_id: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    remote_address: str | None


@dataclass(slots=True, frozen=True)
class AuditRecord:
    """One admin action.  ``actor`` is the user's email, or ``cli:<os user>`` for the command line."""

    id: str
    at: datetime
    actor: str
    actor_user_id: str | None
    action: str
    target: str | None
    detail: dict[str, Any]
    remote_address: str | None

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "at": _iso(self.at), "actor": self.actor, "actor_user_id": self.actor_user_id,
                "action": self.action, "target": self.target, "detail": self.detail,
                "remote_address": self.remote_address}


@dataclass(slots=True, frozen=True)
class BudgetRecord:
    """A budget as stored (docs/budgets.md).  ``scope`` is its text (``metadata:User-Id=*``);
    ``scope_kind``/``scope_key``/``scope_value`` the same, split for matching (budgets/scope.py)."""

    id: str
    scope: str
    scope_kind: str
    scope_key: str | None
    scope_value: str | None
    limit_usd: Decimal
    period: str
    time_zone: str
    soft: bool
    alert_at: tuple[int, ...]
    webhook: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def per_value(self) -> bool:
        return self.scope_kind == "metadata" and self.scope_value is None


@dataclass(slots=True, frozen=True)
class BudgetSpend:
    """One ledger counter: a budget's spend in one period (for ``metadata:<Key>=*``, of one value)."""

    budget_id: str
    scope_value: str
    period_start: datetime
    spent: Decimal
    requests: int


@dataclass(slots=True, frozen=True)
class BudgetHold:
    """What one process has admitted against a counter and not yet seen in the ledger."""

    process_id: str
    budget_id: str
    scope_value: str
    period_start: datetime
    amount: Decimal
    expires_at: datetime


@dataclass(slots=True, frozen=True)
class BudgetAlert:
    """A threshold crossed by a counter in a period: sent once (``sent_at``), retried until then."""

    budget_id: str
    scope_value: str
    period_start: datetime
    threshold: int
    spent: Decimal
    created_at: datetime
    sent_at: datetime | None
    attempts: int
    next_attempt_at: datetime
    last_error: str | None


@dataclass(slots=True, frozen=True)
class RateLimitRecord:
    """Requests and/or tokens per minute for a scope (``majordomo limits create``)."""

    id: str
    scope: str
    scope_kind: str
    scope_key: str | None
    scope_value: str | None
    rpm: int | None
    tpm: int | None
    created_at: datetime
    updated_at: datetime

    @property
    def per_value(self) -> bool:
        return self.scope_kind == "metadata" and self.scope_value is None
