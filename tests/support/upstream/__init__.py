"""A mock LLM upstream (OpenAI, Anthropic, Gemini wire formats) for the gateway's tests.

See README.md in this directory for the routes, the X-Mock-* scenario headers, the ``[mock:...]``
prompt markers and the default usage numbers.
"""

from .recording import RecordedRequest, RecordedResponse
from .scenarios import (
    DEFAULT_CHUNKS,
    DEFAULT_INPUT_TOKENS,
    DEFAULT_OUTPUT_TOKENS,
    DEFAULT_REASONING_TOKENS,
    DEFAULT_TEXT,
    DEFAULT_THINKING_TEXT,
    SCENARIOS,
    MockConfigError,
    MockUsage,
    Scenario,
)
from .server import MockUpstream, build_app

__all__ = [
    "DEFAULT_CHUNKS",
    "DEFAULT_INPUT_TOKENS",
    "DEFAULT_OUTPUT_TOKENS",
    "DEFAULT_REASONING_TOKENS",
    "DEFAULT_TEXT",
    "DEFAULT_THINKING_TEXT",
    "SCENARIOS",
    "MockConfigError",
    "MockUpstream",
    "MockUsage",
    "RecordedRequest",
    "RecordedResponse",
    "Scenario",
    "build_app",
]
