"""A database seeded for the dashboard's tests: varied rows over 40 days, two keys (one owned by a
member), users of every role with live sessions, and sessions that must not work."""

from __future__ import annotations

import hashlib
import random
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from majordomo_gateway.admin.passwords import hash_password
from majordomo_gateway.storage.database import open_database
from majordomo_gateway.storage.records import RequestRecord

FEATURES = ["summarize", "chat", "search", None]
USERS = ["u-1", "u-2", "u-3", None]
MODELS = [("openai", "gpt-4.1"), ("anthropic", "claude-sonnet-4-20250514"), ("gemini", "gemini-2.5-flash"),
          ("local", "llama-3")]
KEY_IDS = ("0190a0a0-0000-7000-9000-000000000000", "0190a0a0-0000-7000-9000-000000000001")
KEY_NAMES = {KEY_IDS[0]: "backend", KEY_IDS[1]: "batch-jobs"}
#: the member owns the second key
USER_IDS = {"admin": "0190b0b0-0000-7000-8000-000000000001", "member": "0190b0b0-0000-7000-8000-000000000002",
            "viewer": "0190b0b0-0000-7000-8000-000000000003", "disabled": "0190b0b0-0000-7000-8000-000000000004"}
PASSWORD = "correct horse battery staple"


@dataclass
class SeededUsage:
    url: str
    now: datetime
    records: list[RequestRecord]
    #: live session tokens by role
    tokens: dict[str, str]
    #: tokens that must be refused: expired, revoked, of a disabled user
    dead_tokens: dict[str, str] = field(default_factory=dict)

    def emails(self, role: str) -> str:
        return f"{role}@example.com"


def usage_records(now: datetime, count: int = 400, seed: int = 20261204) -> list[RequestRecord]:
    rng = random.Random(seed)
    records = []
    for i in range(count):
        provider, model = rng.choice(MODELS)
        feature, user = rng.choice(FEATURES), rng.choice(USERS)
        metadata = {k: v for k, v in (("Feature", feature), ("User-Id", user)) if v is not None}
        if rng.random() < 0.5:
            metadata["Team"] = rng.choice(["core", "growth"])
        # Several rows share one instant, so keyset paging must break ties by id.
        when = now - timedelta(days=rng.uniform(0, 40)) if i % 10 else now - timedelta(days=3)
        status = rng.choice([200] * 8 + [400, 429, 500])
        reported = status == 200
        priced = reported and provider != "local"
        cost = Decimal(rng.randint(1, 10**7)) / Decimal(10**10) if priced else None
        records.append(RequestRecord(
            id=f"0190a0a0-0000-7000-8000-{i:012d}", majordomo_api_key_id=rng.choice(KEY_IDS),
            provider_api_key_hash=None, provider_api_key_alias=None, provider=provider, route=provider, model=model,
            request_path="/v1/chat/completions", request_method="POST", requested_at=when,
            responded_at=when + timedelta(seconds=1), response_time_ms=1000.0, streamed=rng.random() < 0.3,
            aborted=rng.random() < 0.1, input_tokens=rng.randint(0, 5000) if reported else 0,
            output_tokens=rng.randint(0, 900) if reported else 0, cached_tokens=rng.randint(0, 100),
            cache_creation_tokens=rng.randint(0, 50), reasoning_tokens=rng.randint(0, 30), total_cost=cost,
            input_cost=cost, output_cost=Decimal(0) if priced else None,
            usage_source="reported" if reported else "none", status_code=status, raw_metadata=metadata,
            error_message=None if reported else "upstream said no"))
    return records


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def seed_usage(url: str, *, count: int = 400) -> SeededUsage:
    """Rows, keys, users and sessions in a migrated database at ``url``."""
    now = datetime.now(UTC).replace(microsecond=0)
    database = open_database(url)
    await database.connect()
    await database.migrate()
    password_hash = hash_password(PASSWORD)
    for role, user_id in USER_IDS.items():
        await database.users.create(user_id, f"{role}@example.com", "viewer" if role == "disabled" else role,
                                    password_hash, now)
    await database.users.set_disabled(USER_IDS["disabled"], now, now)
    for index, key_id in enumerate(KEY_IDS):
        await database.create_key(key_id, KEY_NAMES[key_id], None, f"hash-{index}", "mdm_sk_x", now,
                                  owner_user_id=USER_IDS["member"] if index == 1 else None)
    records = usage_records(now, count)
    await database.insert_requests(records)
    tokens, dead = {}, {}
    for role in ("admin", "member", "viewer"):
        tokens[role] = secrets.token_urlsafe(32)
        await database.sessions.create(_token_hash(tokens[role]), USER_IDS[role], now, now + timedelta(days=1), None)
    for kind in ("expired", "revoked", "disabled"):
        dead[kind] = secrets.token_urlsafe(32)
        user = USER_IDS["disabled" if kind == "disabled" else "admin"]
        expires = now - timedelta(seconds=1) if kind == "expired" else now + timedelta(days=1)
        await database.sessions.create(_token_hash(dead[kind]), user, now - timedelta(days=1), expires, None)
    await database.sessions.revoke(_token_hash(dead["revoked"]), now)
    await database.close()
    return SeededUsage(url, now, records, tokens, dead)
