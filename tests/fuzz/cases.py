"""Seed and case number → one fuzz case: what a client writes and what the upstream answers.

Everything is derived from ``random.Random(f"{seed}:{index}")``, so a case is replayed exactly
from the two numbers the runner prints.  Bytes are built by hand (never through an HTTP library)
so that they can lie: framing, status lines, header syntax and JSON numbers no library would emit.
The Majordomo key is only known once the gateway runs; cases carry ``KEY_TOKEN`` in its place.
"""

from __future__ import annotations

import functools
import gzip
import random
import zlib
from dataclasses import dataclass, field

KEY_TOKEN = b"@@MAJORDOMO_KEY@@"
PROVIDER_KEY = "sk-fuzz-provider-secret-7f3a9c1e5b"
CASE_HEADER = "X-Fuzz-Case"
#: the upstream pauses this long to stall; the runner sets the gateway's read timeout below it
STALL_SECONDS = 1.3


@dataclass(frozen=True)
class Step:
    """``send`` bytes, ``pause`` seconds, ``reset`` (RST), ``close`` or ``shutdown`` (half-close)."""

    kind: str
    data: bytes = b""
    seconds: float = 0.0


@dataclass(frozen=True)
class RouteSpec:
    name: str
    method: str
    target: str
    wire: str  # the upstream's answer format: openai-chat, responses, anthropic, gemini, ...
    auth: tuple[str, str]
    extra: tuple[tuple[str, str], ...] = ()


ROUTES = (
    RouteSpec("openai-chat", "POST", "/v1/chat/completions", "openai-chat",
              ("Authorization", f"Bearer {PROVIDER_KEY}")),
    RouteSpec("openai-responses", "POST", "/v1/responses", "responses", ("Authorization", f"Bearer {PROVIDER_KEY}")),
    RouteSpec("openai-completions", "POST", "/v1/completions", "openai-completions",
              ("Authorization", f"Bearer {PROVIDER_KEY}")),
    RouteSpec("openai-embeddings", "POST", "/v1/embeddings", "embeddings", ("Authorization", f"Bearer {PROVIDER_KEY}")),
    RouteSpec("openai-models", "GET", "/v1/models", "models", ("Authorization", f"Bearer {PROVIDER_KEY}")),
    RouteSpec("anthropic", "POST", "/v1/messages", "anthropic", ("x-api-key", PROVIDER_KEY),
              (("anthropic-version", "2023-06-01"),)),
    RouteSpec("anthropic-openai", "POST", "/v1/chat/completions", "anthropic", ("x-api-key", PROVIDER_KEY),
              (("X-Majordomo-Provider", "anthropic-openai"),)),
    RouteSpec("gemini", "POST", "/v1beta/models/gemini-2.0-flash:generateContent", "gemini",
              ("x-goog-api-key", PROVIDER_KEY)),
    RouteSpec("gemini-stream", "POST", "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", "gemini",
              ("x-goog-api-key", PROVIDER_KEY)),
)
STREAMED_TARGETS = {"gemini-stream"}


@dataclass
class Case:
    seed: int
    index: int
    route: str
    client: list[Step]
    upstream: list[Step]
    #: what was fuzzed, for the failure report
    labels: list[str] = field(default_factory=list)
    #: after this many response bytes the client hangs up (None: read to the end)
    client_reads: int | None = None
    #: the status lines the upstream writes (1xx included): a relayed 5xx is not the gateway's
    upstream_statuses: list[int] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.seed}:{self.index}"

    def describe(self) -> str:
        return f"route={self.route} " + " ".join(self.labels)


# -- odd values -----------------------------------------------------------------------------

ODD_NUMBERS = (b"-1", b"-100", b"1.5", b"0.0", b"2.0", b"1e300", b"1e999", b"-1e999", b"18446744073709551616",
               b"9223372036854775808", b"340282366920938463463374607431768211456", b'"12"', b'"abc"', b'""',
               b"true", b"false", b"null", b"[]", b"{}", b"[1]", b"NaN", b"Infinity", b"-0", b"01", b"1" * 400,
               b"0x10", b"1_000", b'"\\u0000"')


def _num(rng: random.Random, odd: float) -> bytes:
    if rng.random() < odd:
        return rng.choice(ODD_NUMBERS)
    return str(rng.choice((0, 1, 7, 100, 4096, 1_000_000, 2**31 - 1))).encode()


def _odd_string(rng: random.Random) -> bytes:
    return rng.choice((b'"end_turn"', b'"stop"', b"null", b"[]", b"{}", b"5", b"true", b'"\\ud800"',
                       b'"' + b"x" * 5000 + b'"',
                       b'"tool_use"', b'"max_tokens"', b'"STOP"', b'"SAFETY"', b'""'))


# -- upstream bodies, as JSON text (numbers spliced in raw) ----------------------------------

def _usage_odd(rng: random.Random) -> float:
    return rng.choice((0.0, 0.0, 0.3, 1.0))


def _openai_usage(rng: random.Random, odd: float) -> bytes:
    p, c, t, cached, reason = (_num(rng, odd) for _ in range(5))
    return (b'{"prompt_tokens":' + p + b',"completion_tokens":' + c + b',"total_tokens":' + t
            + b',"prompt_tokens_details":{"cached_tokens":' + cached + b'},"completion_tokens_details":'
            b'{"reasoning_tokens":' + reason + b"}}")


def _responses_usage(rng: random.Random, odd: float) -> bytes:
    i, o, t, cached = (_num(rng, odd) for _ in range(4))
    return (b'{"input_tokens":' + i + b',"output_tokens":' + o + b',"total_tokens":' + t
            + b',"input_tokens_details":{"cached_tokens":' + cached + b"}}")


def _anthropic_usage(rng: random.Random, odd: float) -> bytes:
    i, o, cr, cc = (_num(rng, odd) for _ in range(4))
    return (b'{"input_tokens":' + i + b',"output_tokens":' + o + b',"cache_read_input_tokens":' + cr
            + b',"cache_creation_input_tokens":' + cc + b"}")


def _gemini_usage(rng: random.Random, odd: float) -> bytes:
    p, c, t, th = (_num(rng, odd) for _ in range(4))
    return (b'{"promptTokenCount":' + p + b',"candidatesTokenCount":' + c + b',"totalTokenCount":' + t
            + b',"thoughtsTokenCount":' + th + b"}")


def json_body(wire: str, rng: random.Random, odd: float) -> bytes:
    if wire in ("openai-chat", "openai-completions"):
        finish = rng.choice((b'"stop"', b"null", b"[]", b'"length"'))
        return (b'{"id":"chatcmpl-fuzz","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,'
                b'"message":{"role":"assistant","content":"hi"},"text":"hi","finish_reason":' + finish + b'}],"usage":'
                + _openai_usage(rng, odd) + b"}")
    if wire == "responses":
        return (b'{"id":"resp_fuzz","object":"response","status":"completed","model":"gpt-4o","output":'
                b'[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"hi"}]}],"usage":'
                + _responses_usage(rng, odd) + b"}")
    if wire == "anthropic":
        return (b'{"id":"msg_fuzz","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":'
                b'"text","text":"hi"}],"stop_reason":' + _odd_string(rng) + b',"stop_sequence":null,"usage":'
                + _anthropic_usage(rng, odd) + b"}")
    if wire == "gemini":
        return (b'{"candidates":[{"content":{"parts":[{"text":"hi"}],"role":"model"},"finishReason":' + _odd_string(rng)
                + b'}],"usageMetadata":' + _gemini_usage(rng, odd) + b',"modelVersion":"gemini-2.0-flash"}')
    if wire == "embeddings":
        p, t = _num(rng, odd), _num(rng, odd)
        return (b'{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],'
                b'"model":"text-embedding-3-small","usage":{"prompt_tokens":' + p + b',"total_tokens":' + t + b"}}")
    return b'{"object":"list","data":[{"id":"gpt-4o","object":"model","created":1,"owned_by":"fuzz"}]}'


def sse_events(wire: str, rng: random.Random, odd: float) -> list[bytes]:
    """A stream's events, each complete with its blank line."""
    def data(payload: bytes, event: bytes | None = None) -> bytes:
        return (b"event: " + event + b"\n" if event else b"") + b"data: " + payload + b"\n\n"

    if wire in ("openai-chat", "openai-completions"):
        chunk = (b'{"id":"chatcmpl-fuzz","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":'
                 b'[{"index":0,"delta":{"content":"hi"},"text":"hi","finish_reason":null}]}')
        last = (b'{"id":"chatcmpl-fuzz","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":'
                b'[{"index":0,"delta":{},"finish_reason":"stop"}]}')
        usage = (b'{"id":"chatcmpl-fuzz","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],'
                 b'"usage":' + _openai_usage(rng, odd) + b"}")
        return [data(chunk)] * rng.randint(1, 4) + [data(last), data(usage), data(b"[DONE]")]
    if wire == "responses":
        created = b'{"type":"response.created","response":{"id":"resp_fuzz","status":"in_progress","model":"gpt-4o"}}'
        delta = b'{"type":"response.output_text.delta","delta":"hi","output_index":0,"content_index":0}'
        done = (b'{"type":"response.completed","response":{"id":"resp_fuzz","status":"completed","model":"gpt-4o",'
                b'"usage":' + _responses_usage(rng, odd) + b"}}")
        return ([data(created, b"response.created")] + [data(delta, b"response.output_text.delta")] * rng.randint(1, 3)
                + [data(done, b"response.completed")])
    if wire == "anthropic":
        start = (b'{"type":"message_start","message":{"id":"msg_fuzz","type":"message","role":"assistant","model":'
                 b'"claude-sonnet-4-5","content":[],"stop_reason":null,"usage":' + _anthropic_usage(rng, odd) + b"}}")
        block = b'{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'
        delta = b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}'
        stop = b'{"type":"content_block_stop","index":0}'
        message_delta = (b'{"type":"message_delta","delta":{"stop_reason":' + _odd_string(rng)
                         + b',"stop_sequence":null},"usage":{"output_tokens":' + _num(rng, odd) + b"}}")
        return ([data(start, b"message_start"), data(block, b"content_block_start"), data(b'{"type":"ping"}', b"ping")]
                + [data(delta, b"content_block_delta")] * rng.randint(1, 3)
                + [data(stop, b"content_block_stop"), data(message_delta, b"message_delta"),
                   data(b'{"type":"message_stop"}', b"message_stop")])
    if wire == "gemini":
        events = []
        for _ in range(rng.randint(1, 3)):
            events.append(b'data: {"candidates":[{"content":{"parts":[{"text":"hi"}],"role":"model"}}],"usageMetadata":'
                          + _gemini_usage(rng, odd) + b"}\r\n\r\n")
        events.append(b'data: {"candidates":[{"content":{"parts":[{"text":"."}],"role":"model"},"finishReason":'
                      + _odd_string(rng) + b'}],"usageMetadata":' + _gemini_usage(rng, odd) + b"}\r\n\r\n")
        return events
    return [data(json_body(wire, rng, odd))]


def mangle_sse(events: list[bytes], rng: random.Random, labels: list[str]) -> list[bytes]:  # noqa: C901 (one branch per mutation)
    events = list(events)
    how = rng.choice(("drop", "dup", "truncate", "garbage", "no-prefix", "cr-only", "comment", "huge-line", "binary",
                      "no-terminal", "after-terminal", "split-data", "empty-data", "bom", "retry-id"))
    labels.append(f"sse:{how}")
    i = rng.randrange(len(events))
    if how == "drop":
        del events[i]
    elif how == "dup":
        events.insert(i, events[i])
    elif how == "truncate":
        events[i] = events[i][:rng.randrange(max(1, len(events[i])))]
        del events[i + 1:]
    elif how == "garbage":
        events[i] = b"data: {\"usage\": {\"prompt_tokens\": 1, oops\n\n"
    elif how == "no-prefix":
        events[i] = events[i].replace(b"data: ", b"", 1)
    elif how == "cr-only":
        events = [e.replace(b"\r\n", b"\n").replace(b"\n", b"\r") for e in events]
    elif how == "comment":
        events.insert(i, b": keep-alive\n\n" * rng.randint(1, 50))
    elif how == "huge-line":
        events.insert(i, b"data: " + b"x" * rng.choice((70_000, 300_000, 2_000_000)) + b"\n\n")
    elif how == "binary":
        events.insert(i, bytes(rng.randrange(256) for _ in range(rng.randint(1, 200))))
    elif how == "no-terminal":
        events.pop()
    elif how == "after-terminal":
        events.append(events[0])
    elif how == "split-data":
        event = events[i]
        cut = rng.randrange(max(1, len(event) - 2))
        events[i] = event[:cut] + b"\ndata: " + event[cut:]
    elif how == "empty-data":
        events.insert(i, b"data:\n\ndata: \n\n")
    elif how == "bom":
        events[0] = b"\xef\xbb\xbf" + events[0]
    else:
        events.insert(i, b"retry: -5\nid: \x00\nevent: \n\n")
    return events


@functools.cache
def _bomb() -> bytes:
    # 64 MiB of zeros is 64 KiB of gzip: cheap to send, dear to inflate without a bound.
    return gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)


# -- the upstream's answer ------------------------------------------------------------------

def _status_line(rng: random.Random, status: int, labels: list[str]) -> bytes:
    if rng.random() < 0.03:
        odd = rng.choice((b"HTTP/1.0 200 OK\r\n", b"HTTP/1.1 200\r\n", b"HTTP/1.1 200 \xff\xfe\r\n", b"HTTP/2 200\r\n",
                          b"HTTP/1.1 20 OK\r\n", b"HTTP/1.1 2000 OK\r\n", b"ICY 200 OK\r\n", b"HTTP/1.1 200 OK\n",
                          b"\r\nHTTP/1.1 200 OK\r\n", b"garbage\r\n"))
        labels.append(f"status-line:{odd[:24]!r}")
        return odd
    return f"HTTP/1.1 {status} X\r\n".encode()


def upstream_answer(route: RouteSpec, streamed: bool, rng: random.Random, labels: list[str],  # noqa: C901
                    statuses: list[int]) -> list[Step]:
    odd = _usage_odd(rng)
    if odd:
        labels.append(f"usage-odd:{odd}")
    steps: list[Step] = []
    roll = rng.random()
    if roll < 0.02:
        labels.append("up:reset-at-once")
        return [Step("reset")]
    if roll < 0.04:
        labels.append("up:close-at-once")
        return [Step("close")]
    if roll < 0.05:
        labels.append("up:stall-at-once")
        return [Step("pause", seconds=STALL_SECONDS), Step("close")]
    # interim responses: 100 and 103 are legitimate before the final one, 101 is not
    if rng.random() < 0.05:
        interim = rng.choice((100, 102, 103, 101, 199))
        labels.append(f"up:interim-{interim}")
        statuses.append(interim)
        steps.append(Step("send", f"HTTP/1.1 {interim} X\r\n\r\n".encode()))
        if interim == 101:
            steps.append(Step("send", b"\x81\x05hello"))
            steps.append(Step("close"))
            return steps
    status = 200
    if rng.random() < 0.12:
        status = rng.choice((204, 304, 205, 400, 401, 404, 429, 500, 502, 503, 504, 529, 599, 600, 999, 302, 206))
        labels.append(f"up:status-{status}")
    statuses.append(status)

    if status >= 400:
        body = b'{"error":{"message":"fuzz says no","type":"fuzz_error"}}'
        content_type = b"application/json"
    elif streamed and rng.random() < 0.95:
        events = sse_events(route.wire, rng, odd)
        if rng.random() < 0.35:
            events = mangle_sse(events, rng, labels)
        body = b"".join(events)
        content_type = rng.choice((b"text/event-stream", b"text/event-stream; charset=utf-8")) \
            if rng.random() < 0.95 else rng.choice((b"application/json", b"text/plain", b""))
    else:
        body = json_body(route.wire, rng, odd)
        if rng.random() < 0.08:
            cut = rng.randrange(max(1, len(body)))
            body = body[:cut] + rng.choice((b"", b"\xff\xfe", b"}}}}", b"\x00"))
            labels.append("up:bad-json")
        content_type = b"application/json"
    headers = [b"Content-Type: " + content_type] if content_type else []

    encoding = None
    if rng.random() < 0.06:
        encoding = rng.choice(("gzip", "gzip-corrupt", "deflate", "deflate-raw", "br-claim", "gzip-twice-claim", "bomb",
                               "identity", "x-unknown"))
        labels.append(f"up:encoding-{encoding}")
        if encoding == "gzip":
            body, name = gzip.compress(body), b"gzip"
        elif encoding == "gzip-corrupt":
            packed = bytearray(gzip.compress(body))
            packed[len(packed) // 2] ^= 0xFF
            body, name = bytes(packed), b"gzip"
        elif encoding == "deflate":
            body, name = zlib.compress(body), b"deflate"
        elif encoding == "deflate-raw":
            squeezer = zlib.compressobj(wbits=-15)
            body, name = squeezer.compress(body) + squeezer.flush(), b"deflate"
        elif encoding == "br-claim":
            name = b"br"
        elif encoding == "gzip-twice-claim":
            body, name = gzip.compress(body), b"gzip, gzip"
        elif encoding == "bomb":
            body, name = _bomb(), b"gzip"
        else:
            name = encoding.encode()
        headers.append(b"Content-Encoding: " + name)
    if rng.random() < 0.1:
        extra = rng.choice((b"X-Majordomo-Request-Id: upstream-says-" + str(rng.randrange(10**6)).encode(),
                            b"X-Majordomo-Key: mdm_sk_from_upstream", b"Set-Cookie: a=b",
                            b"X-Long: " + b"v" * rng.choice((100, 10_000, 100_000)),
                            b"X-Bad\x00Name: 1", b"Bad Header Without Colon", b" folded: continuation",
                            b"Connection: keep-alive, Upgrade", b"Upgrade: h2c", b"Trailer: X-Usage",
                            b"Transfer-Encoding: gzip", b"Content-Length: 5", b"Content-Length: -1",
                            b"Content-Length: abc", b"Keep-Alive: timeout=0"))
        labels.append(f"up:header:{extra[:30]!r}")
        headers.append(extra)
    head = _status_line(rng, status, labels) + b"".join(h + b"\r\n" for h in headers)

    framing = rng.choices(("length", "chunked", "close", "length-short", "length-long", "chunked-bad", "both"),
                          weights=(40, 35, 8, 4, 4, 5, 4))[0]
    if framing != "length" and framing != "chunked":
        labels.append(f"up:framing-{framing}")
    if framing == "length":
        steps += _split(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body, rng)
    elif framing == "length-short":
        steps += _split(head + f"Content-Length: {rng.randrange(max(1, len(body)))}\r\n\r\n".encode() + body, rng)
    elif framing == "length-long":
        steps += _split(head + f"Content-Length: {len(body) + rng.randint(1, 10_000)}\r\n\r\n".encode() + body, rng)
        steps.append(Step("close"))
    elif framing == "close":
        steps += _split(head + b"Connection: close\r\n\r\n" + body, rng)
        steps.append(Step("close"))
    elif framing == "both":
        steps += _split(head + f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                        + _chunked(body, rng), rng)
    elif framing == "chunked":
        steps += _split(head + b"Transfer-Encoding: chunked\r\n\r\n", rng)
        steps += _chunk_steps(body, rng)
        steps.append(Step("send", rng.choice((b"0\r\n\r\n", b"0\r\n\r\n", b"0\r\nX-Usage: 5\r\n\r\n"))))
    else:
        how = rng.choice((b"zz\r\n", b"ffffffffffffffffffff\r\n", b"5\r\nab", b"-1\r\n", b"\r\n", b"3;\xff\r\nabc\r\n"))
        steps += _split(head + b"Transfer-Encoding: chunked\r\n\r\n", rng)
        steps += _chunk_steps(body[: len(body) // 2], rng)
        steps.append(Step("send", how))
        steps.append(Step("close"))

    # mid-answer faults
    fault = rng.random()
    if fault < 0.05 and len(steps) > 1:
        at = rng.randrange(1, len(steps))
        what = rng.choice(("reset", "close", "stall"))
        labels.append(f"up:{what}-mid@{at}")
        steps = steps[:at] + ([Step("pause", seconds=STALL_SECONDS)] if what == "stall" else [Step(what)])
    elif fault < 0.08:
        labels.append("up:slow-drip")
        steps = [x for s in steps for x in (s, Step("pause", seconds=0.01))]
    return steps


def _chunked(body: bytes, rng: random.Random) -> bytes:
    return b"".join(s.data for s in _chunk_steps(body, rng)) + b"0\r\n\r\n"


def _chunk_steps(body: bytes, rng: random.Random) -> list[Step]:
    steps = []
    pos = 0
    while pos < len(body):
        size = rng.choice((1, 7, 64, 1024, 16384, len(body)))
        piece = body[pos:pos + size]
        pos += size
        ext = b";ext=1" if rng.random() < 0.02 else b""
        steps.append(Step("send", f"{len(piece):x}".encode() + ext + b"\r\n" + piece + b"\r\n"))
    return steps


def _split(data: bytes, rng: random.Random) -> list[Step]:
    """One write, or the same bytes in a few pieces (so parsers see every boundary)."""
    if rng.random() < 0.8 or len(data) < 2:
        return [Step("send", data)]
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 4))))
    return [Step("send", data[a:b]) for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


# -- the client's request -------------------------------------------------------------------

def _request_body(route: RouteSpec, streamed: bool, rng: random.Random, labels: list[str]) -> bytes:  # noqa: C901 (one branch per mutation)
    if route.method == "GET":
        return b""
    if route.wire == "embeddings":
        body = b'{"model":"text-embedding-3-small","input":"hello"}'
    elif route.wire == "gemini":
        body = b'{"contents":[{"role":"user","parts":[{"text":"hello"}]}]}'
    elif route.wire == "anthropic" and route.name == "anthropic":
        body = (b'{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hello"}]'
                + (b',"stream":true' if streamed else b"") + b"}")
    elif route.wire == "responses":
        body = b'{"model":"gpt-4o","input":"hello"' + (b',"stream":true' if streamed else b"") + b"}"
    elif route.wire == "openai-completions":
        body = b'{"model":"gpt-3.5-turbo-instruct","prompt":"hello"' + (b',"stream":true' if streamed else b"") + b"}"
    else:
        model = b"claude-sonnet-4-5" if route.name == "anthropic-openai" else b"gpt-4o"
        body = (b'{"model":"' + model + b'","max_tokens":64,"messages":[{"role":"user","content":"hello"}]'
                + (b',"stream":true,"stream_options":{"include_usage":true}' if streamed else b"") + b"}")
    if rng.random() < 0.15:
        how = rng.choice(("invalid", "array", "empty", "deep", "huge-number", "stream-string", "model-number",
                          "long-model", "non-utf8", "big", "nul", "dup-keys", "max-tokens-odd"))
        labels.append(f"body:{how}")
        if how == "invalid":
            body = body[: rng.randrange(max(1, len(body)))]
        elif how == "array":
            body = b"[" + body + b"]"
        elif how == "empty":
            body = b""
        elif how == "deep":
            depth = rng.choice((100, 1000, 100_000))
            body = body[:-1] + b',"x":' + b"[" * depth + b"]" * depth + b"}"
        elif how == "huge-number":
            body = body[:-1] + b',"temperature":1e999,"n":' + b"9" * 500 + b"}"
        elif how == "stream-string":
            body = body[:-1] + b',"stream":' + rng.choice((b'"yes"', b"1", b"null", b"[]")) + b"}"
        elif how == "model-number":
            body = body.replace(b'"model":"', b'"model":5,"m":"', 1)
        elif how == "long-model":
            body = body[:-1] + b',"model":"' + b"m" * rng.choice((300, 10_000, 200_000)) + b'"}'
        elif how == "non-utf8":
            body = body.replace(b"hello", b"h\xff\xfe\xc0llo")
        elif how == "big":
            body = body[:-1] + b',"pad":"' + b"p" * rng.choice((100_000, 2_000_000)) + b'"}'
        elif how == "nul":
            body = body.replace(b"hello", b"he\\u0000llo\x00")
        elif how == "dup-keys":
            body = body[:-1] + b',"model":"other","stream":' + (b"false" if streamed else b"true") + b"}"
        else:
            body = body.replace(b'"max_tokens":64', b'"max_tokens":' + rng.choice(ODD_NUMBERS))
    return body


def _metadata(rng: random.Random, labels: list[str]) -> list[tuple[bytes, bytes]]:  # noqa: C901 (one branch per mutation)
    headers: list[tuple[bytes, bytes]] = []
    if rng.random() < 0.5:
        headers.append((b"X-Majordomo-Feature", b"fuzz"))
    if rng.random() < 0.25:
        how = rng.choice(("many", "long-value", "long-name", "non-ascii", "empty", "provider", "alias", "request-id",
                          "underscore", "dup", "total", "seq", "controls"))
        labels.append(f"meta:{how}")
        if how == "many":
            headers += [(f"X-Majordomo-M{i}".encode(), b"v") for i in range(rng.choice((31, 33, 100, 1000)))]
        elif how == "long-value":
            headers.append((b"X-Majordomo-Team", b"t" * rng.choice((1023, 1024, 1025, 60_000))))
        elif how == "long-name":
            headers.append((b"X-Majordomo-" + b"n" * rng.choice((127, 128, 129, 5000)), b"v"))
        elif how == "non-ascii":
            headers.append((b"X-Majordomo-User", "usér-ünïcode".encode() + b"\xff\x80"))
        elif how == "empty":
            headers.append((b"X-Majordomo-", b""))
        elif how == "provider":
            value = rng.choice((b"nope", b"OPENAI", b" anthropic ", b"gemini", b"gemini-openai", b"anthropic_openai",
                                b"", b"\xff"))
            headers.append((b"X-Majordomo-Provider", value))
        elif how == "alias":
            headers.append((b"X-Majordomo-Provider-Alias", b"a" * rng.choice((10, 256, 257, 5000))))
        elif how == "request-id":
            headers.append((b"X-Majordomo-Request-Id", b"client-chosen-id"))
        elif how == "underscore":
            headers.append((rng.choice((b"X_Majordomo_Key", b"x-majordomo_feature", b"X_MAJORDOMO_PROVIDER")),
                            b"mdm_sk_underscored"))
        elif how == "dup":
            headers += [(b"X-Majordomo-Feature", b"a"), (b"x-majordomo-feature", b"b")]
        elif how == "total":
            headers += [(f"X-Majordomo-T{i}".encode(), b"x" * 1000) for i in range(20)]
        elif how == "seq":
            headers.append((b"X-Majordomo-Seq", str(rng.randrange(10**9)).encode()))
        else:
            headers.append((b"X-Majordomo-Note", b"a\tb\x01c\x7f"))
    return headers


def _key_header(rng: random.Random, labels: list[str]) -> list[tuple[bytes, bytes]]:
    roll = rng.random()
    if roll < 0.9:
        return [(b"X-Majordomo-Key", KEY_TOKEN)]
    how = rng.choice(("missing", "wrong", "garbage", "dup", "padded", "bearer", "lower"))
    labels.append(f"key:{how}")
    if how == "missing":
        return []
    if how == "wrong":
        return [(b"X-Majordomo-Key", b"mdm_sk_" + b"0" * 40)]
    if how == "garbage":
        return [(b"X-Majordomo-Key", b"\xff\x00??")]
    if how == "dup":
        return [(b"X-Majordomo-Key", KEY_TOKEN), (b"X-Majordomo-Key", b"mdm_sk_other")]
    if how == "padded":
        return [(b"X-Majordomo-Key", b"  " + KEY_TOKEN + b"  ")]
    if how == "bearer":
        return [(b"X-Majordomo-Key", b"Bearer " + KEY_TOKEN)]
    return [(b"x-majordomo-key", KEY_TOKEN)]


def _request_line(route: RouteSpec, case_id: str, rng: random.Random, labels: list[str]) -> bytes:  # noqa: C901 (one branch per mutation)
    method = route.method.encode()
    target = route.target.encode()
    version = b"HTTP/1.1"
    if rng.random() < 0.1:
        how = rng.choice(("method", "pct", "dots", "long", "nonascii", "star", "absolute", "empty", "version",
                          "spaces", "query", "fragment", "lf"))
        labels.append(f"line:{how}")
        if how == "method":
            method = rng.choice((b"GET", b"PUT", b"DELETE", b"PATCH", b"HEAD", b"OPTIONS", b"post", b"P\x00ST",
                                 b"CONNECT", b"TRACE", b"M" * 5000, b"BREW"))
        elif how == "pct":
            chars = bytearray(target)
            spots = [i for i, c in enumerate(chars) if chr(c).isalnum()]
            for i in sorted(rng.sample(spots, min(len(spots), rng.randint(1, 3))), reverse=True):
                chars[i:i + 1] = f"%{chars[i]:02{rng.choice('xX')}}".encode()
            target = bytes(chars)
        elif how == "dots":
            target = rng.choice((b"/v1/../v1/chat/completions", b"/v1/./messages", b"//v1/chat/completions",
                                 b"/v1%2fchat/completions", b"/v1/chat/completions/..", b"/v1\\chat"))
        elif how == "long":
            target = target + b"/" + b"a" * rng.choice((1000, 70_000))
        elif how == "nonascii":
            target = target + "/é".encode() + b"\xff"
        elif how == "star":
            target = b"*"
        elif how == "absolute":
            target = b"http://127.0.0.1:1" + target
        elif how == "empty":
            target = b""
        elif how == "version":
            version = rng.choice((b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"", b"HTTP/1.1 extra", b"http/1.1",
                                  b"HTTP/9"))
        elif how == "spaces":
            return method + b"  " + target + b"   " + version + b"\r\n"
        elif how == "query":
            target += rng.choice((b"?a=1&a=2", b"?" + b"q" * 5000, b"?key=%00", b"?&&&", b"?beta=true"))
        elif how == "fragment":
            target += b"#frag"
        else:
            return method + b" " + target + b" " + version + b"\n"
    return method + b" " + target + b" " + version + b"\r\n"


def _odd_headers(rng: random.Random, labels: list[str]) -> list[bytes]:
    """Raw header lines (without CRLF) that break the rules."""
    if rng.random() >= 0.12:
        return []
    how = rng.choice(("fold", "no-colon", "space-colon", "nul", "high", "huge", "many", "expect", "upgrade", "te-odd",
                      "no-host", "dup-host", "empty-name", "long-line"))
    labels.append(f"hdr:{how}")
    return {
        "fold": [b"X-Folded: a", b" continued"],
        "no-colon": [b"NoColonHere"],
        "space-colon": [b"X-Space : 1"],
        "nul": [b"X-Nul: a\x00b"],
        "high": [b"X-High: \xff\xfe\x80"],
        "huge": [b"X-Huge: " + b"h" * rng.choice((60_000, 70_000, 1_000_000))],
        "many": [f"X-H{i}: v".encode() for i in range(rng.choice((100, 2000)))],
        "expect": [b"Expect: 100-continue"],
        "upgrade": [b"Connection: Upgrade", b"Upgrade: websocket"],
        "te-odd": [rng.choice((b"Transfer-Encoding: gzip", b"Transfer-Encoding: identity",
                               b"Transfer-Encoding: chunked, chunked", b"Transfer-Encoding: xchunked"))],
        "no-host": [],
        "dup-host": [b"Host: evil.example"],
        "empty-name": [b": value"],
        "long-line": [b"X-L: " + b"l" * 8000] * 9,
    }[how]


def client_request(route: RouteSpec, streamed: bool, case_id: str, rng: random.Random,  # noqa: C901
                   labels: list[str]) -> tuple[list[Step], int | None]:
    line = _request_line(route, case_id, rng, labels)
    body = _request_body(route, streamed, rng, labels)
    headers: list[tuple[bytes, bytes]] = [(b"Host", b"127.0.0.1")]
    headers.append((route.auth[0].encode(), route.auth[1].encode()))
    headers += [(n.encode(), v.encode()) for n, v in route.extra]
    headers += _key_header(rng, labels)
    headers += _metadata(rng, labels)
    headers.append((CASE_HEADER.encode(), case_id.encode()))
    if route.method != "GET" or body:
        headers.append((b"Content-Type", b"application/json"))
    keep_alive = rng.random() < 0.1
    if not keep_alive:
        headers.append((b"Connection", b"close"))
    odd_lines = _odd_headers(rng, labels)
    if "hdr:no-host" in labels:
        headers = headers[1:]
    head = line + b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"".join(x + b"\r\n" for x in odd_lines)

    framing = "length"
    if rng.random() < 0.2:
        framing = rng.choice(("chunked", "chunked-ext", "trailers", "chunked-bad", "chunked-no-end", "cl-short",
                              "cl-long-close", "cl-bad", "cl-dup", "cl-te", "drip", "close-after-head",
                              "pipeline", "huge-cl", "half-close"))
        labels.append(f"frame:{framing}")
    steps: list[Step] = []
    if framing in ("chunked", "chunked-ext", "trailers", "chunked-bad", "chunked-no-end"):
        head += b"Transfer-Encoding: chunked\r\n\r\n"
        chunks = b"".join(s.data for s in _chunk_steps(body, rng))
        if framing == "chunked-ext":
            chunks = chunks.replace(b"\r\n", b";name=value\r\n", 1)
        if framing == "trailers":
            trailer = rng.choice((b"X-Majordomo-Key: mdm_sk_trailer\r\n", b"X-Majordomo-Feature: from-trailer\r\n",
                                  b"Authorization: Bearer sk-trailer\r\n", b"X-Trailer: 1\r\n"))
            end = b"0\r\n" + trailer + b"\r\n"
        elif framing == "chunked-bad":
            end = rng.choice((b"zz\r\n\r\n", b"ffffffffffffffffffffff\r\n", b"3\r\nabcdef\r\n0\r\n\r\n", b"-2\r\n"))
        elif framing == "chunked-no-end":
            end = b""
        else:
            end = b"0\r\n\r\n"
        steps.append(Step("send", head + chunks + end))
        if framing in ("chunked-no-end", "chunked-bad"):
            steps.append(Step("shutdown"))
    elif framing == "cl-short":
        steps.append(Step("send", head + f"Content-Length: {max(0, len(body) - rng.randint(1, 10))}\r\n\r\n".encode()
                          + body + b"GARBAGE /x HTTP/1.1\r\n\r\n"))
    elif framing == "cl-long-close":
        steps.append(Step("send", head + f"Content-Length: {len(body) + rng.randint(1, 1000)}\r\n\r\n".encode() + body))
        steps.append(Step("shutdown"))
    elif framing == "cl-bad":
        value = rng.choice((b"abc", b"-1", b"1.5", b" ", b"0x10", b"1e3", b"+5", b"99999999999999999999999"))
        steps.append(Step("send", head + b"Content-Length: " + value + b"\r\n\r\n" + body))
    elif framing == "cl-dup":
        lengths = f"Content-Length: {len(body)}\r\nContent-Length: {len(body) + 1}\r\n\r\n"
        steps.append(Step("send", head + lengths.encode() + body))
    elif framing == "cl-te":
        steps.append(Step("send", head + f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                          + _chunked(body, rng)))
    elif framing == "drip":
        data = head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        for i in range(0, len(data), 97):
            steps += [Step("send", data[i:i + 97]), Step("pause", seconds=0.001)]
    elif framing == "close-after-head":
        steps.append(Step("send", head + f"Content-Length: {len(body) + 10}\r\n\r\n".encode() + body[: len(body) // 2]))
        steps.append(Step("close"))
    elif framing == "pipeline":
        data = head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        steps.append(Step("send", data.replace(b"Connection: close\r\n", b"") + data))
    elif framing == "huge-cl":
        steps.append(Step("send", head + rng.choice((b"Content-Length: 1099511627776\r\n\r\n",
                                                     b"Content-Length: 67108865\r\n\r\n")) + body))
        steps.append(Step("shutdown"))
    elif framing == "half-close":
        steps.append(Step("send", head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body))
        steps.append(Step("shutdown"))
    else:
        steps += _split(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body, rng)
    client_reads = None
    if rng.random() < 0.05:
        client_reads = rng.choice((0, 1, 20, 200, 600))
        labels.append(f"client:hangup-after-{client_reads}")
    return steps, client_reads


def case(seed: int, index: int) -> Case:
    rng = random.Random(f"{seed}:{index}")
    route = rng.choice(ROUTES)
    streamed = route.name in STREAMED_TARGETS or (route.method == "POST" and route.wire != "embeddings"
                                                  and route.wire != "gemini" and rng.random() < 0.5)
    labels = ["stream"] if streamed else []
    case_id = f"{seed}:{index}"
    client, reads = client_request(route, streamed, case_id, rng, labels)
    statuses: list[int] = []
    upstream = upstream_answer(route, streamed, rng, labels, statuses)
    return Case(seed, index, route.name, client, upstream, labels, reads, statuses)
