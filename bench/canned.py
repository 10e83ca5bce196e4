"""Canned requests and responses, shaped exactly like the providers' (OpenAI Chat Completions and
Anthropic Messages, plain and streamed), shared by the mock upstreams and the load generators.

Four workloads:

  openai_json      POST /v1/chat/completions                        -> chat.completion JSON
  openai_stream    same with "stream":true + stream_options.include_usage
                   -> 20 chat.completion.chunk events, then the usage-only chunk + [DONE]
  anthropic_json   POST /v1/messages                                -> message JSON
  anthropic_stream same with "stream":true
                   -> message_start (+content_block_start, ping), 20 content_block_delta,
                      then content_block_stop + message_delta (usage) + message_stop

Every streamed event is one write on the upstream (paced, see upstream.py), so the gateway sees
one TCP read per event and has to relay each as it arrives.
"""

from __future__ import annotations

import json

N_CHUNKS = 20

# ----------------------------------------------------------------------------- requests

_MESSAGES = [
    {"role": "user" if i % 2 == 0 else "assistant",
     "content": f"Message {i}: please summarise the quarterly report in three bullet points, keeping numbers exact."}
    for i in range(6)
]

OPENAI_REQUEST = {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "You are terse."}, *_MESSAGES],
                  "temperature": 0.2, "max_tokens": 256}
OPENAI_STREAM_REQUEST = {**OPENAI_REQUEST, "stream": True, "stream_options": {"include_usage": True}}
ANTHROPIC_REQUEST = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "system": "You are terse.",
                     "messages": _MESSAGES}
ANTHROPIC_STREAM_REQUEST = {**ANTHROPIC_REQUEST, "stream": True}

# What the official Python SDKs send besides the body (the X-Stainless-* family included).
_STAINLESS = {
    "Accept": "application/json",
    "X-Stainless-Lang": "python",
    "X-Stainless-Package-Version": "1.99.0",
    "X-Stainless-OS": "Linux",
    "X-Stainless-Arch": "x64",
    "X-Stainless-Runtime": "CPython",
    "X-Stainless-Runtime-Version": "3.12.3",
    "X-Stainless-Async": "false",
    "X-Stainless-Retry-Count": "0",
    "X-Stainless-Read-Timeout": "600",
}
OPENAI_HEADERS = {
    "Content-Type": "application/json",
    "Authorization": "Bearer sk-proj-bench0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH",
    "User-Agent": "OpenAI/Python 1.99.0",
    **_STAINLESS,
}
ANTHROPIC_HEADERS = {
    "Content-Type": "application/json",
    "x-api-key": "sk-ant-api03-bench0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH",
    "anthropic-version": "2023-06-01",
    "User-Agent": "Anthropic/Python 0.64.0",
    **_STAINLESS,
}

# ----------------------------------------------------------------------------- responses

_ANSWER = "- Revenue rose 12% to 4.2M USD.\n- Operating margin held at 18%.\n- Headcount grew from 41 to 47."
OPENAI_JSON = {
    "id": "chatcmpl-C1a2B3c4D5e6F7g8H9i0J1k2L3m4N", "object": "chat.completion", "created": 1754000000,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {
        "role": "assistant",
        "content": _ANSWER,
        "refusal": None, "annotations": []}, "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 143, "completion_tokens": 42, "total_tokens": 185,
              "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
    "service_tier": "default", "system_fingerprint": "fp_560af6e559",
}
ANTHROPIC_JSON = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": _ANSWER}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 151, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
              "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
              "output_tokens": 42, "service_tier": "standard"},
}

OPENAI_RESPONSE_HEADERS = [
    ("access-control-expose-headers", "X-Request-ID"),
    ("openai-organization", "user-bench0123456789"),
    ("openai-processing-ms", "412"),
    ("openai-project", "proj_bench0123456789"),
    ("openai-version", "2020-10-01"),
    ("x-envoy-upstream-service-time", "415"),
    ("x-ratelimit-limit-requests", "10000"),
    ("x-ratelimit-limit-tokens", "30000000"),
    ("x-ratelimit-remaining-requests", "9999"),
    ("x-ratelimit-remaining-tokens", "29999757"),
    ("x-ratelimit-reset-requests", "6ms"),
    ("x-ratelimit-reset-tokens", "0s"),
    ("x-request-id", "req_0123456789abcdef0123456789abcdef"),
    ("strict-transport-security", "max-age=31536000; includeSubDomains; preload"),
    ("cf-cache-status", "DYNAMIC"),
    ("x-content-type-options", "nosniff"),
]
ANTHROPIC_RESPONSE_HEADERS = [
    ("request-id", "req_011CPnbS5vvSBB4zDuKkZ7ZW"),
    ("anthropic-organization-id", "0b7c2a5e-bench-4e2b-9f4c-0123456789ab"),
    ("anthropic-ratelimit-requests-limit", "4000"),
    ("anthropic-ratelimit-requests-remaining", "3999"),
    ("anthropic-ratelimit-requests-reset", "2025-08-01T00:00:01Z"),
    ("anthropic-ratelimit-input-tokens-limit", "2000000"),
    ("anthropic-ratelimit-input-tokens-remaining", "1999000"),
    ("anthropic-ratelimit-input-tokens-reset", "2025-08-01T00:00:01Z"),
    ("anthropic-ratelimit-output-tokens-limit", "400000"),
    ("anthropic-ratelimit-output-tokens-remaining", "400000"),
    ("anthropic-ratelimit-output-tokens-reset", "2025-08-01T00:00:01Z"),
    ("anthropic-ratelimit-tokens-limit", "2400000"),
    ("anthropic-ratelimit-tokens-remaining", "2399000"),
    ("anthropic-ratelimit-tokens-reset", "2025-08-01T00:00:01Z"),
    ("x-robots-tag", "none"),
    ("cf-cache-status", "DYNAMIC"),
]


def _dumps(obj: object) -> bytes:
    # The providers' own compact separators.
    return json.dumps(obj, separators=(",", ":")).encode()


OPENAI_JSON_BODY = _dumps(OPENAI_JSON)
ANTHROPIC_JSON_BODY = _dumps(ANTHROPIC_JSON)

_TOKENS = ["- Revenue", " rose", " 12%", " to", " 4.2M USD", ".\n", "- Operating", " margin", " held", " at",
           " 18%", ".\n", "- Headcount", " grew", " from", " 41", " to", " 47", ".", ""]


def openai_stream_events() -> list[bytes]:
    """The upstream's writes: 20 chunks, then the usage-only chunk and [DONE] together."""
    head = ('{"id":"chatcmpl-C1a2B3c4D5e6F7g8H9i0J1k2L3m4N","object":"chat.completion.chunk","created":1754000000,'
            '"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_560af6e559",')
    events = []
    for i in range(N_CHUNKS):
        if i == 0:
            delta = {"role": "assistant", "content": _TOKENS[0], "refusal": None}
        elif i == N_CHUNKS - 1:
            delta = {}
        else:
            delta = {"content": _TOKENS[i]}
        finish = "stop" if i == N_CHUNKS - 1 else None
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        choice_text = json.dumps(choice, separators=(",", ":"))
        events.append(f'data: {head}"choices":[{choice_text}],"usage":null}}\n\n'.encode())
    usage = {"prompt_tokens": 143, "completion_tokens": 20, "total_tokens": 163,
             "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                           "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
    events.append(f'data: {head}"choices":[],"usage":{json.dumps(usage, separators=(",", ":"))}}}\n\n'
                  'data: [DONE]\n\n'.encode())
    return events


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def anthropic_stream_events() -> list[bytes]:
    """The upstream's writes: message_start (+content_block_start, ping), 20 deltas, then
    content_block_stop + message_delta (with usage) + message_stop."""
    start = {"type": "message_start", "message": {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5-20250929", "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 151, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                  "output_tokens": 1, "service_tier": "standard"}}}
    events = [(_sse("message_start", start)
               + _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                              "content_block": {"type": "text", "text": ""}})
               + "event: ping\ndata: {\"type\": \"ping\"}\n\n").encode()]
    for i in range(N_CHUNKS):
        delta = {"type": "text_delta", "text": _TOKENS[i] or " "}
        events.append(_sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}).encode())
    events.append((_sse("content_block_stop", {"type": "content_block_stop", "index": 0})
                   + _sse("message_delta", {"type": "message_delta",
                                            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                            "usage": {"output_tokens": 20}})
                   + _sse("message_stop", {"type": "message_stop"})).encode())
    return events


# ----------------------------------------------------------------------------- workloads


class Workload:
    def __init__(self, name: str, path: str, body: dict, headers: dict[str, str], stream: bool, provider: str):
        self.name = name
        self.path = path
        self.body = _dumps(body)
        self.headers = headers
        self.stream = stream
        self.provider = provider


WORKLOADS = {
    w.name: w for w in (
        Workload("openai_json", "/v1/chat/completions", OPENAI_REQUEST, OPENAI_HEADERS, False, "openai"),
        Workload("openai_stream", "/v1/chat/completions", OPENAI_STREAM_REQUEST, OPENAI_HEADERS, True, "openai"),
        Workload("anthropic_json", "/v1/messages", ANTHROPIC_REQUEST, ANTHROPIC_HEADERS, False, "anthropic"),
        Workload("anthropic_stream", "/v1/messages", ANTHROPIC_STREAM_REQUEST, ANTHROPIC_HEADERS, True, "anthropic"),
    )
}


def nginx_conf(prefix: str, port: int) -> str:
    """nginx serving the two non-streaming canned answers, keep-alive forever."""

    def location(path: str, headers: list[tuple[str, str]], body: bytes) -> str:
        adds = "\n".join(f"            add_header {k} '{v}' always;" for k, v in headers)
        text = body.decode().replace("\\", "\\\\").replace("'", "\\'")
        return (f"        location = {path} {{\n            default_type application/json;\n{adds}\n"
                f"            return 200 '{text}';\n        }}\n")

    return f"""# generated by bench/gateway_bench.py
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_buffer_size 64k;
    server_tokens off;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
{location("/v1/chat/completions", OPENAI_RESPONSE_HEADERS, OPENAI_JSON_BODY)}
{location("/v1/messages", ANTHROPIC_RESPONSE_HEADERS, ANTHROPIC_JSON_BODY)}
        location / {{ return 404; }}
    }}
}}
"""
