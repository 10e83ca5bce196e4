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
