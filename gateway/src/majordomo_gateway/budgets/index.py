"""Which budgets (or rate limits) cover a request, found by lookups rather than by trying each one:
the cost of matching grows with the request's metadata headers, not with the number of budgets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Generic, Protocol, TypeVar

__all__ = ["ScopeIndex", "Scoped"]


class Scoped(Protocol):
    @property
    def scope_kind(self) -> str: ...

    @property
    def scope_key(self) -> str | None: ...

    @property
    def scope_value(self) -> str | None: ...


T = TypeVar("T", bound=Scoped)


class ScopeIndex(Generic[T]):
    def __init__(self, items: Iterable[T]) -> None:
        self.everything: list[T] = []
        self.by_key: dict[str, list[T]] = {}
        self.by_model: dict[str, list[T]] = {}
        #: metadata name -> value -> items; and metadata name -> per-value items (metadata:<Key>=*)
        self.by_metadata: dict[str, dict[str, list[T]]] = {}
        self.per_value: dict[str, list[T]] = {}
        self.size = 0
        for item in items:
            self.size += 1
            kind, value = item.scope_kind, item.scope_value
            if kind == "global":
                self.everything.append(item)
            elif kind == "key":
                self.by_key.setdefault(value or "", []).append(item)
            elif kind == "model":
                self.by_model.setdefault(value or "", []).append(item)
            elif item.scope_key is not None:
                if value is None:
                    self.per_value.setdefault(item.scope_key, []).append(item)
                else:
                    self.by_metadata.setdefault(item.scope_key, {}).setdefault(value, []).append(item)
        self._metadata_names = frozenset(self.by_metadata) | frozenset(self.per_value)

    def match(self, key_id: str | None, model: str | None, metadata: Mapping[str, str]) -> list[tuple[T, str]]:
        """The items covering the request, each with its counter's value ('' but for per-value items)."""
        found: list[tuple[T, str]] = [(item, "") for item in self.everything]
        if key_id is not None and self.by_key:
            found.extend((item, "") for item in self.by_key.get(key_id, ()))
        if model is not None and self.by_model:
            found.extend((item, "") for item in self.by_model.get(model, ()))
        if metadata and self._metadata_names:
            for name in self._metadata_names.intersection(metadata):
                value = metadata[name]
                found.extend((item, "") for item in self.by_metadata.get(name, {}).get(value, ()))
                found.extend((item, value) for item in self.per_value.get(name, ()))
        return found
