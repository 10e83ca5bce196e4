"""The cost of one request, as the price book reports it."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Price:
    """What one request cost, in USD.

    ``found`` False means the gateway could not price the request (unknown model, a model billed
    only in units the gateway does not count, or inconsistent usage numbers); every cost is then
    None so the stored row says "unknown" rather than a misleading $0.

    ``total_cost`` is input + output + per-request charges (web searches), so it can exceed
    ``input_cost + output_cost``.
    """

    input_cost: Decimal | None
    output_cost: Decimal | None
    total_cost: Decimal | None
    found: bool
    #: the catalog model (or override entry) whose prices were used, e.g. "claude-sonnet-4-0"
    model_id: str | None

    @classmethod
    def unpriced(cls, model_id: str | None = None) -> Price:
        return cls(input_cost=None, output_cost=None, total_cost=None, found=False, model_id=model_id)
