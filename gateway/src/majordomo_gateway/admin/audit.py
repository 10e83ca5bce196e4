"""The audit log: who did what to what, when and from where, for every admin action, by the CLI
or the API.  A row never holds a secret: targets are ids and emails, details are names and rules."""

from __future__ import annotations

import getpass
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import uuid_utils

from majordomo_gateway.storage.database import AdminStore
from majordomo_gateway.storage.records import AuditRecord, KeyRecord

__all__ = ["Actor", "cli_actor", "key_detail", "record_action"]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: a user (by email, with its id) or the command line (``cli:<os user>``)."""

    name: str
    user_id: str | None = None
    remote_address: str | None = None


def cli_actor() -> Actor:
    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no name for the uid (a container's arbitrary user)
        who = "unknown"
    return Actor(f"cli:{who}")


async def record_action(store: AdminStore, actor: Actor, action: str, target: str | None = None,
                        detail: Mapping[str, Any] | None = None, *, now: datetime | None = None) -> AuditRecord:
    entry = AuditRecord(id=str(uuid_utils.uuid7()), at=now or datetime.now(UTC), actor=actor.name,
                        actor_user_id=actor.user_id, action=action, target=target, detail=dict(detail or {}),
                        remote_address=actor.remote_address)
    await store.audit.record(entry)
    return entry


def key_detail(key: KeyRecord) -> dict[str, Any]:
    """What an audit row says about a key: its name, owner and rules (never its hash)."""
    data = key.to_dict()
    return {name: data[name] for name in ("name", "owner_user_id", "expires_at", "allowed_providers",
                                          "allowed_models", "active")}
