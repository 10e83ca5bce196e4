"""Token usage as the gateway records it, independent of any provider's wire format."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Usage:
    """Normalised token counts for one request.

    The conventions matter for pricing and for the stored row, so every provider parser follows them:

    - ``input_tokens`` is the *total* prompt size: uncached input + cache reads + cache writes
      (Anthropic reports these three separately; OpenAI and Gemini already include cached tokens).
      Gemini's ``toolUsePromptTokenCount`` is billed as input and is included here.
    - ``cached_tokens`` (cache reads) and ``cache_creation_tokens`` (cache writes, all TTLs) are
      subsets of ``input_tokens``; ``cache_creation_1h_tokens`` is the part of the writes made with
      the 1-hour TTL (the rest are 5-minute writes).
    - ``output_tokens`` is everything billed as output, reasoning/thinking included;
      ``reasoning_tokens`` is the subset of it spent on reasoning.
    - ``web_search_requests`` counts server-side tool calls that the provider bills per request.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_creation_1h_tokens: int = 0
    reasoning_tokens: int = 0
    web_search_requests: int = 0


#: The largest token (or request) count a usage report may hold: a thousand times the longest
#: context window of any model today (1 to 10 million tokens), and far inside the BIGINT columns
#: (2^63) even summed, and inside the cost columns once priced.  A larger count is an upstream's
#: bug or a hostile upstream, never a bill: the usage is recorded as ``invalid``.
MAX_TOKEN_COUNT = 1_000_000_000

_SHOWN_CHARS = 80


class InvalidUsage(ValueError):
    """A usage report whose counts are not whole numbers from 0 to ``MAX_TOKEN_COUNT``.

    ``values`` holds each offending field (dotted for nested ones) with the value as decoded.
    """

    def __init__(self, values: dict[str, object]) -> None:
        self.values = values
        shown = ", ".join(f"{name}={shown_value(value)}" for name, value in values.items())
        super().__init__(f"invalid usage reported by the upstream: {shown} (token counts must be whole numbers "
                         f"from 0 to {MAX_TOKEN_COUNT}); tokens and cost not recorded")


def shown_value(value: object) -> str:
    """A raw value as the row's error_message shows it: its repr, cut short."""
    try:
        text = repr(value)
    except ValueError:  # an int too long for str() (sys.set_int_max_str_digits)
        text = f"<an integer of {value.bit_length() if isinstance(value, int) else '?'} bits>"
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"
