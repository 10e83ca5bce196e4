"""What the mock answers: scenario selection, usage numbers and the reply plan.

Everything here is provider-neutral.  A request's behaviour is assembled from layers, later layers
winning (scenario *names* accumulate instead):

1. built-in defaults (see the ``DEFAULT_*`` constants),
2. the server's defaults (``MockUpstream.configure(...)`` / ``POST /_mock/defaults``),
3. ``[mock:...]`` markers in the system prompt / instructions,
4. ``[mock:...]`` markers in the last user message that has text,
5. ``X-Mock-*`` request headers.

A setting has the same name in every layer: header ``X-Mock-Delay-Ms: 50`` == marker
``[mock:delay-ms=50]`` == ``configure(delay_ms=50)``.  ``[mock:tool-call]`` (a bare name) adds
that scenario, like ``X-Mock-Scenario: tool-call``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

# --------------------------------------------------------------------------------------------------
# Defaults (documented in README.md; tests may rely on them)

DEFAULT_INPUT_TOKENS = 100
DEFAULT_OUTPUT_TOKENS = 20
#: reasoning tokens reported (as part of the output tokens) when thinking is active
DEFAULT_REASONING_TOKENS = 8
DEFAULT_CHUNKS = 3
DEFAULT_SLOW_DELAY_MS = 100
DEFAULT_TEXT = "Hello from the mock upstream."
DEFAULT_THINKING_TEXT = "Let me think about this request."

SCENARIOS: dict[str, str] = {
    "tool-call": "call the first declared (non-output) tool when no tool result is pending",
    "thinking": "emit a thinking/reasoning block and report reasoning tokens",
    "no-usage": "omit usage from the response entirely",
    "slow": f"pause X-Mock-Delay-Ms (default {DEFAULT_SLOW_DELAY_MS} ms) between stream events",
    "cut-stream": "send part of the response, then close the TCP connection without finishing the body",
    "stream-error": "send part of a 200 stream, then the provider's in-stream error event",
    "hang": "read the request and never answer",
    "hang-mid-stream": "send part of a 200 stream, then stall forever",
    "usage-in-last-chunk": "OpenAI chat streams: put usage on the finish_reason chunk (no usage-only chunk)",
}

#: setting name (header ``X-Mock-<Name>`` / marker key) -> attribute of :class:`Scenario`
SETTINGS: dict[str, str] = {
    "scenario": "names",
    "status": "status",
    "delay-ms": "delay_ms",
    "initial-delay-ms": "initial_delay_ms",
    "end-delay-ms": "end_delay_ms",
    "chunks": "chunks",
    "usage": "usage_overrides",
    "raw-usage": "raw_usage",
    "text": "text",
    "model": "model",
    "tool-name": "tool_name",
    "tool-args": "tool_args",
    "cut-after": "cut_after",
    "error-type": "error_type",
    "error-message": "error_message",
    "retry-after": "retry_after",
    "stop-reason": "stop_reason",
    # accepted and ignored: every response is recorded anyway
    "record-response": "",
}


class MockConfigError(ValueError):
    """The test asked for something the mock does not understand (answered with a 400 ``mock: ...``)."""


# --------------------------------------------------------------------------------------------------
# Usage


@dataclass(frozen=True, slots=True)
class MockUsage:
    """Provider-neutral usage, with the gateway's conventions (``majordomo_gateway.usage.Usage``).

    ``input_tokens`` is the whole prompt: uncached + cache reads + cache writes (+ Gemini's
    tool-use prompt).  ``cached_tokens``, ``cache_creation_tokens`` (of which
    ``cache_creation_1h_tokens`` are 1-hour writes) and ``tool_use_prompt_tokens`` are parts of it.
    ``output_tokens`` includes ``reasoning_tokens``.  Each provider module maps this to its own
    fields, so a gateway that parses correctly records exactly these numbers back.
    """

    input_tokens: int = DEFAULT_INPUT_TOKENS
    output_tokens: int = DEFAULT_OUTPUT_TOKENS
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_creation_1h_tokens: int = 0
    reasoning_tokens: int = 0
    tool_use_prompt_tokens: int = 0
    web_search_requests: int = 0

    # -- derived numbers used by the provider mappings
    @property
    def uncached_input_tokens(self) -> int:
        """Anthropic's ``input_tokens``: the prompt minus cache reads and cache writes."""
        return self.input_tokens - self.cached_tokens - self.cache_creation_tokens

    @property
    def cache_creation_5m_tokens(self) -> int:
        return self.cache_creation_tokens - self.cache_creation_1h_tokens

    @property
    def prompt_tokens_without_tool_use(self) -> int:
        """Gemini's ``promptTokenCount`` (``toolUsePromptTokenCount`` is reported beside it)."""
        return self.input_tokens - self.tool_use_prompt_tokens

    @property
    def visible_output_tokens(self) -> int:
        """Gemini's ``candidatesTokenCount`` (``thoughtsTokenCount`` is reported beside it)."""
        return self.output_tokens - self.reasoning_tokens

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def validate(self) -> MockUsage:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise MockConfigError(f"usage {f.name} must be a non-negative integer, got {value!r}")
        if self.uncached_input_tokens < 0:
            raise MockConfigError("usage: cached_tokens + cache_creation_tokens exceed input_tokens")
        if self.cache_creation_5m_tokens < 0:
            raise MockConfigError("usage: cache_creation_1h_tokens exceed cache_creation_tokens")
        if self.prompt_tokens_without_tool_use < self.cached_tokens:
            raise MockConfigError("usage: cached_tokens + tool_use_prompt_tokens exceed input_tokens")
        if self.visible_output_tokens < 0:
            raise MockConfigError("usage: reasoning_tokens exceed output_tokens")
        return self


# --------------------------------------------------------------------------------------------------
# Scenario


@dataclass(slots=True)
class Scenario:
    """The resolved behaviour for one request."""

    names: frozenset[str] = frozenset()
    status: int | None = None
    delay_ms: int | None = None
    initial_delay_ms: int = 0
    end_delay_ms: int = 0
    chunks: int = DEFAULT_CHUNKS
    usage_overrides: dict[str, int] = field(default_factory=dict)
    raw_usage: dict[str, Any] | None = None
    text: str | None = None
    model: str | None = None
    tool_name: str | None = None
    tool_args: dict[str, Any] | None = None
    cut_after: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    retry_after: str | None = None
    #: Anthropic: the stop_reason to report, as JSON (any value, for the tests of odd answers)
    stop_reason: str | None = None

    def has(self, name: str) -> bool:
        return name in self.names

    @property
    def chunk_delay(self) -> float:
        """Seconds to wait between stream events."""
        if self.delay_ms is not None:
            return self.delay_ms / 1000
        return DEFAULT_SLOW_DELAY_MS / 1000 if self.has("slow") else 0.0

    @property
    def is_error(self) -> bool:
        return self.status is not None and not 200 <= self.status < 300

    def usage(self, *, thinking: bool) -> MockUsage:
        values: dict[str, int] = {"reasoning_tokens": DEFAULT_REASONING_TOKENS if thinking else 0}
        values.update(self.usage_overrides)
        return MockUsage(**values).validate()

    # -- building
    def apply(self, key: str, value: Any) -> None:
        """Apply one setting (header/marker/defaults form) on top of the current values."""
        key = key.strip().lower().replace("_", "-")
        if key not in SETTINGS:
            raise MockConfigError(f"unknown setting {key!r} (known: {', '.join(SETTINGS)})")
        attr = SETTINGS[key]
        if not attr:
            return
        if attr == "names":
            self.names = self.names | _parse_names(value)
        elif attr in ("status", "delay_ms", "initial_delay_ms", "chunks", "cut_after"):
            setattr(self, attr, _parse_int(key, value))
        elif attr == "end_delay_ms":
            setattr(self, attr, _parse_int(key, value) or 0)
        elif attr == "usage_overrides":
            usage = _parse_json_object(key, value)
            unknown = set(usage) - set(MockUsage.keys())
            if unknown:
                raise MockConfigError(
                    f"unknown usage keys {sorted(unknown)} (known: {', '.join(MockUsage.keys())})"
                )
            self.usage_overrides = {**self.usage_overrides, **usage}
        elif attr in ("raw_usage", "tool_args"):
            setattr(self, attr, None if value is None else _parse_json_object(key, value))
        else:
            setattr(self, attr, None if value is None else str(value))


def _parse_names(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        items: Iterable[Any] = re.split(r"[\s,]+", value)
    elif isinstance(value, Iterable):
        items = value
    else:
        raise MockConfigError(f"scenario must be a string or a list, got {value!r}")
    names = frozenset(str(item).strip().lower() for item in items if str(item).strip())
    unknown = names - set(SCENARIOS)
    if unknown:
        raise MockConfigError(f"unknown scenario {sorted(unknown)} (known: {', '.join(SCENARIOS)})")
    return names


def _parse_int(key: str, value: Any) -> int | None:
    if value is None:
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        raise MockConfigError(f"{key} must be an integer, got {value!r}") from None
    if number < 0:
        raise MockConfigError(f"{key} must not be negative, got {number}")
    return number


def _parse_json_object(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError):
        raise MockConfigError(f"{key} must be a JSON object, got {value!r}") from None
    if not isinstance(parsed, dict):
        raise MockConfigError(f"{key} must be a JSON object, got {value!r}")
    return parsed


Layer = Iterable[tuple[str, Any]]

# [mock:name] or [mock:key=value]; the value may contain one level of [...] (JSON arrays).
_MARKER = re.compile(r"\[mock:([A-Za-z0-9_-]+)(?:=((?:[^\[\]]|\[[^\[\]]*\])*))?\]")


def settings_from_text(text: str) -> list[tuple[str, Any]]:
    """``[mock:...]`` markers found in a prompt, as (setting, value) pairs."""
    out: list[tuple[str, Any]] = []
    for match in _MARKER.finditer(text or ""):
        name, value = match.group(1).lower(), match.group(2)
        if value is None:
            out.append(("scenario", name))
        else:
            out.append((name, value))
    return out


def settings_from_headers(headers: Mapping[str, str]) -> list[tuple[str, Any]]:
    """``X-Mock-*`` request headers as (setting, value) pairs (``X-Mock-Should-Retry`` excluded)."""
    out: list[tuple[str, Any]] = []
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith("x-mock-") and lower != "x-mock-should-retry":
            out.append((lower.removeprefix("x-mock-"), value))
    return out


def settings_from_kwargs(values: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``configure(delay_ms=50, usage={...})`` / JSON defaults as (setting, value) pairs."""
    return [(key.replace("_", "-"), value) for key, value in values.items()]


def resolve_scenario(layers: Iterable[Layer]) -> Scenario:
    scenario = Scenario()
    for layer in layers:
        for key, value in layer:
            scenario.apply(key, value)
    return scenario


# --------------------------------------------------------------------------------------------------
# The conversation, as far as the reply plan cares


@dataclass(slots=True)
class ToolSpec:
    name: str
    schema: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Conversation:
    """What a provider module extracted from the request body."""

    #: text of the last user message that has text (markers are read from here)
    user_text: str = ""
    #: system prompt / instructions text (markers are read from here too, with lower priority)
    system_text: str = ""
    tools: list[ToolSpec] = field(default_factory=list)
    #: None when the trailing messages carry no tool result; otherwise the names of the tools whose
    #: results they carry ("" where the provider's format does not say)
    tool_results: list[str] | None = None
    #: "auto", "none", "required"
    tool_choice: str = "auto"
    #: a tool the request forces (OpenAI named tool_choice, Anthropic {"type":"tool"}, ...)
    forced_tool: str | None = None
    #: the request itself asked for visible thinking (Anthropic ``thinking``, Gemini ``includeThoughts``)
    thinking_requested: bool = False

    def marker_layers(self) -> list[Layer]:
        return [settings_from_text(self.system_text), settings_from_text(self.user_text)]


@dataclass(slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, separators=(",", ":"))


@dataclass(slots=True)
class Reply:
    """What the mock "model" says, before any wire format."""

    text: str | None = None
    thinking: str | None = None
    tool_call: ToolCall | None = None

    @property
    def is_tool_call(self) -> bool:
        return self.tool_call is not None


def is_output_tool(name: str) -> bool:
    """pydantic-ai's structured-output tools: ``final_result`` (``final_result_<Type>`` for unions)."""
    return name == "final_result" or name.startswith("final_result_")


def plan_reply(scenario: Scenario, conversation: Conversation) -> Reply:
    thinking = DEFAULT_THINKING_TEXT if thinking_active(scenario, conversation) else None
    tool = _choose_tool(scenario, conversation)
    if tool is not None:
        args = scenario.tool_args if scenario.tool_args is not None else example_from_schema(tool.schema)
        if not isinstance(args, dict):
            args = {}
        return Reply(thinking=thinking, tool_call=ToolCall(tool.name, args))
    text = scenario.text if scenario.text is not None else DEFAULT_TEXT
    return Reply(text=text, thinking=thinking)


def thinking_active(scenario: Scenario, conversation: Conversation) -> bool:
    return scenario.has("thinking") or conversation.thinking_requested


def _choose_tool(scenario: Scenario, conv: Conversation) -> ToolSpec | None:
    if conv.tool_choice == "none" or not conv.tools:
        return None
    by_name = {tool.name: tool for tool in conv.tools}
    results = conv.tool_results
    if conv.forced_tool and conv.forced_tool in by_name:
        if results is None or conv.forced_tool not in results:
            return by_name[conv.forced_tool]
        return None
    output_tool = next((tool for tool in conv.tools if is_output_tool(tool.name)), None)
    if results is not None:
        # Answering a tool result: a structured-output agent still needs its final_result call.
        if output_tool is not None and output_tool.name not in results:
            return output_tool
        return None
    if scenario.has("tool-call"):
        if scenario.tool_name:
            if scenario.tool_name not in by_name:
                raise MockConfigError(f"tool-name {scenario.tool_name!r} is not among the request's tools")
            return by_name[scenario.tool_name]
        function_tools = [tool for tool in conv.tools if not is_output_tool(tool.name)]
        return (function_tools or conv.tools)[0]
    if output_tool is not None:
        return output_tool
    if conv.tool_choice == "required":
        return conv.tools[0]
    return None


# --------------------------------------------------------------------------------------------------
# Arguments from a JSON schema

_STRING_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "duration": "PT1S",
    "email": "mock@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "hostname": "example.com",
}


def example_from_schema(schema: Any, root: Any = None, depth: int = 0) -> Any:  # noqa: C901
    """A small value that validates against ``schema``: only required properties, simple values."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 12:
        return {} if depth == 0 else None
    if "$ref" in schema:
        return example_from_schema(_resolve_ref(root, schema["$ref"]), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "default" in schema:
        return schema["default"]
    if schema.get("enum"):
        return schema["enum"][0]
    if isinstance(schema.get("examples"), list) and schema["examples"]:
        return schema["examples"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return example_from_schema((non_null or options)[0], root, depth + 1)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            part = _resolve_ref(root, part["$ref"]) if isinstance(part, dict) and "$ref" in part else part
            if isinstance(part, dict):
                merged.update(part)
        return example_from_schema(merged, root, depth + 1)

    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if isinstance(kind, str):
        kind = kind.lower()  # Gemini's OpenAPI schemas say "OBJECT", "STRING", ...
    if kind is None:
        kind = "object" if "properties" in schema else ("array" if "items" in schema else None)
    if kind == "object":
        props = schema.get("properties") or {}
        required = schema.get("required") or []
        return {name: example_from_schema(props.get(name, {}), root, depth + 1) for name in required}
    if kind == "array":
        count = int(schema.get("minItems") or 0)
        return [example_from_schema(schema.get("items") or {}, root, depth + 1) for _ in range(count)]
    if kind == "string":
        value = _STRING_FORMATS.get(schema.get("format", ""), "mock")
        min_len = int(schema.get("minLength") or 0)
        if len(value) < min_len:
            value = value + "x" * (min_len - len(value))
        if schema.get("maxLength") is not None:
            value = value[: int(schema["maxLength"])]
        return value
    if kind in ("integer", "number"):
        value = _number_in_range(schema)
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return {} if depth == 0 else "mock"


def _number_in_range(schema: dict[str, Any]) -> float:
    value: float = 1
    if schema.get("minimum") is not None:
        value = max(value, schema["minimum"])
    if schema.get("exclusiveMinimum") is not None and not isinstance(schema["exclusiveMinimum"], bool):
        value = max(value, schema["exclusiveMinimum"] + 1)
    if schema.get("maximum") is not None:
        value = min(value, schema["maximum"])
    if schema.get("exclusiveMaximum") is not None and not isinstance(schema["exclusiveMaximum"], bool):
        value = min(value, schema["exclusiveMaximum"] - 1)
    return value


def _resolve_ref(root: Any, ref: str) -> Any:
    if not isinstance(ref, str) or not ref.startswith("#"):
        return {}
    node = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if not part:
            continue
        if not isinstance(node, dict):
            return {}
        node = node.get(part.replace("~1", "/").replace("~0", "~"), {})
    return node


# --------------------------------------------------------------------------------------------------
# Chunking


def split_text(text: str, parts: int) -> list[str]:
    """``text`` in ``parts`` consecutive non-empty pieces (fewer if the text is shorter)."""
    if not text or parts <= 0:
        return []
    parts = min(parts, len(text))
    size, extra = divmod(len(text), parts)
    out: list[str] = []
    start = 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(text[start:end])
        start = end
    return out
