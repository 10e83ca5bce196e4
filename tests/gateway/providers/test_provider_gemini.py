"""Gemini's native wire format: generateContent, and streamGenerateContent with and without alt=sse."""

from __future__ import annotations

import json
import random

import pytest
from majordomo_gateway.providers.base import RequestInfo, UsageResult
from majordomo_gateway.providers.gemini import (
    GeminiProvider,
    _ArrayElements,
    model_from_path,
    usage_from_gemini,
)
from majordomo_gateway.usage import Usage
from provider_testkit import assert_split_invariant, byte_by_byte, load, mutations, run_stream

gemini = GeminiProvider()
GENERATE = "/v1beta/models/gemini-2.5-flash:generateContent"
STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"

# prompt 5200 (4096 of it cached) + 244 tool-use prompt tokens; 44 candidates + 186 thoughts.
USAGE = Usage(input_tokens=5444, output_tokens=230, cached_tokens=4096, reasoning_tokens=186)
# The first chunk of the same stream: only 12 candidate tokens so far.
FIRST_CHUNK_USAGE = Usage(input_tokens=5444, output_tokens=198, cached_tokens=4096, reasoning_tokens=186)

STREAMS = [
    "gemini_stream.sse",
    "gemini_stream_array.json",
    "gemini_stream_error.sse",
    "gemini_stream_error_array.json",
]


def compact_array() -> bytes:
    """The array stream as a server that writes no newlines at all would send it."""
    return json.dumps(json.loads(load("gemini_stream_array.json")), separators=(",", ":")).encode()


RESPONSE_ID = "AdVRaMmDCYekqtsPrb_-iAw"  # the fixtures' responseId


def test_json_usage() -> None:
    result = gemini.parse_response(GENERATE, load("gemini_generate.json"))
    assert result == UsageResult(usage=USAGE, model="gemini-2.5-flash", response_id=RESPONSE_ID,
                                 finish_reasons=["STOP"])


@pytest.mark.parametrize("stream", ["gemini_stream.sse", "gemini_stream_array.json"])
def test_streamed_usage_is_the_last_cumulative_report(stream: str) -> None:
    request = gemini.request_info(STREAM, b"")
    assert run_stream(gemini, STREAM, [load(stream)], request) == UsageResult(
        usage=USAGE, model="gemini-2.5-flash", response_id=RESPONSE_ID, finish_reasons=["STOP"]
    )


@pytest.mark.parametrize("stream", ["gemini_stream.sse", "gemini_stream_array.json"])
def test_streamed_and_plain_agree(stream: str) -> None:
    assert run_stream(gemini, STREAM, [load(stream)]) == gemini.parse_response(
        GENERATE, load("gemini_generate.json")
    )


@pytest.mark.parametrize("stream", STREAMS)
def test_chunk_boundaries_anywhere(stream: str) -> None:
    assert_split_invariant(gemini, STREAM, load(stream))


def test_array_with_commas_after_the_closing_brace() -> None:
    # `[{...},\r\n{...}\n]`: the comma ends the `}` line instead of starting its own.
    elements = [json.dumps(e, indent=2).encode() for e in json.loads(load("gemini_stream_array.json"))]
    data = b"[" + b",\r\n".join(elements) + b"\n]"
    assert assert_split_invariant(gemini, STREAM, data).usage == USAGE


def test_array_is_split_into_elements_as_it_arrives() -> None:
    # Only the element being received is held, not the whole stream.
    splitter = _ArrayElements()
    data = load("gemini_stream_array.json")
    pieces = [p for chunk in byte_by_byte(data) for p in splitter.feed(chunk)]
    assert len(pieces) == 2
    assert [json.loads(p.strip().lstrip(b"[,")) for p in pieces] == json.loads(data)[:2]
    assert splitter.close() == data[data.rindex(b"\n,") + 2 :]


def test_array_without_newlines_is_decoded_whole() -> None:
    data = compact_array()
    assert b"\n" not in data
    assert assert_split_invariant(gemini, STREAM, data).usage == USAGE


def test_sse_with_lf_line_endings() -> None:
    data = load("gemini_stream.sse").replace(b"\r\n", b"\n")
    assert assert_split_invariant(gemini, STREAM, data).usage == USAGE


@pytest.mark.parametrize("stream", ["gemini_stream_error.sse", "gemini_stream_error_array.json"])
def test_error_in_stream(stream: str) -> None:
    result = run_stream(gemini, STREAM, [load(stream)])
    assert result.error == "UNAVAILABLE: The model is overloaded. Please try again later."
    assert result.usage == FIRST_CHUNK_USAGE
    assert result.model == "gemini-2.5-flash"


def test_error_body() -> None:
    result = gemini.parse_response(GENERATE, load("gemini_error.json"))
    assert result == UsageResult(
        model="gemini-2.5-flash", error="INVALID_ARGUMENT: API key not valid. Please pass a valid API key."
    )
    # The same error as the whole answer to a streaming request.
    streamed = run_stream(gemini, STREAM, [load("gemini_error.json")], gemini.request_info(STREAM, b""))
    assert streamed == result


def test_model_comes_from_the_path_when_the_response_has_none() -> None:
    body = b'{"candidates": [], "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4}}'
    result = gemini.parse_response("/v1/models/gemini-2.0-flash:generateContent", body)
    assert result == UsageResult(usage=Usage(3, 4), model="gemini-2.0-flash")
    streamed = run_stream(gemini, STREAM, [b"data: " + body + b"\r\n\r\n"], gemini.request_info(STREAM, b""))
    assert streamed.model == "gemini-2.5-flash"
    # Google has written modelVersion as a resource name at times.
    versioned = b'{"usageMetadata": {}, "modelVersion": "models/gemini-2.5-flash-preview-05-20"}'
    assert gemini.parse_response(GENERATE, versioned).model == "gemini-2.5-flash-preview-05-20"


def test_missing_usage_is_none() -> None:
    body = (
        b'data: {"candidates": [{"content": {"parts": [{"text": "hi"}]}}], '
        b'"modelVersion": "gemini-2.0-flash"}\r\n\r\n'
    )
    assert run_stream(gemini, STREAM, [body]) == UsageResult(model="gemini-2.0-flash")
    assert gemini.parse_response(GENERATE, b'{"candidates": []}') == UsageResult(model="gemini-2.5-flash")


def test_count_tokens_is_not_usage() -> None:
    path = "/v1beta/models/gemini-2.5-flash:countTokens"
    assert gemini.parse_response(path, load("gemini_count_tokens.json")).usage is None
    assert gemini.parse_response(path, load("gemini_generate.json")).usage is None


def test_usage_from_gemini_defaults() -> None:
    assert usage_from_gemini({}) == Usage()
    assert usage_from_gemini({"promptTokenCount": 8, "totalTokenCount": 8}) == Usage(input_tokens=8)


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("/v1beta/models/gemini-2.0-flash:generateContent", "gemini-2.0-flash"),
        ("/v1/models/gemini-2.5-pro:streamGenerateContent?alt=sse", "gemini-2.5-pro"),
        ("/v1beta/models/gemini-2.0-flash%3AgenerateContent", "gemini-2.0-flash"),
        ("/v1beta/tunedModels/my-tuned-7x:generateContent", "tunedModels/my-tuned-7x"),
        (
            "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent",
            "gemini-2.5-flash",
        ),
        ("/v1beta/cachedContents", None),
    ],
)
def test_model_from_path(path: str, model: str | None) -> None:
    assert model_from_path(path) == model


def test_request_info_reads_only_the_path() -> None:
    assert gemini.request_info(STREAM, b"{not json") == RequestInfo(model="gemini-2.5-flash", stream=True)
    assert gemini.request_info(STREAM + "?alt=sse", b"") == RequestInfo(model="gemini-2.5-flash", stream=True)
    assert gemini.request_info(GENERATE, b'{"contents": []}') == RequestInfo(model="gemini-2.5-flash")


def test_handles_path() -> None:
    for path in (
        GENERATE,
        STREAM,
        "/v1/models/gemini-2.0-flash:generateContent",
        "/v1beta/tunedModels/x:generateContent",
        "/v1beta/models/text-embedding-004:embedContent",
        "/v1beta/cachedContents",
    ):
        assert gemini.handles_path(path), path
    for path in (
        "/v1/models",
        "/v1/models/gpt-4o",
        "/v1/chat/completions",
        "/v1beta/openai/chat/completions",
    ):
        assert not gemini.handles_path(path), path


def test_credential() -> None:
    assert gemini.credential({"x-goog-api-key": "AIza1"}, {}) == "AIza1"
    assert gemini.credential({}, {"key": "AIza2"}) == "AIza2"
    assert gemini.credential({"x-goog-api-key": "AIza1"}, {"key": "AIza2"}) == "AIza1"
    assert gemini.credential({"authorization": "Bearer ya29.x"}, {}) is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"[",
        b"[]",
        b"{",
        b"null",
        b'{"usageMetadata": 7}',
        b'{"usageMetadata": {"promptTokenCount": "x"}, "modelVersion": 3}',
        b'[{"usageMetadata": {"promptTokenCount": 1}}\n,\r\n{broken',
        b"data: {broken\r\n\r\n",
        b'[{"error": "plain string"}]',
    ],
)
def test_bad_json_never_raises(body: bytes) -> None:
    assert isinstance(gemini.parse_response(GENERATE, body), UsageResult)
    assert isinstance(run_stream(gemini, STREAM, [body]), UsageResult)


def test_truncated_array_keeps_the_last_complete_report() -> None:
    data = load("gemini_stream_array.json")
    cut = data.rindex(b"\n,\r\n") + 4 + 30  # a few bytes into the last element
    result = run_stream(gemini, STREAM, [data[:cut]])
    assert result.usage == Usage(
        input_tokens=5444, output_tokens=217, cached_tokens=4096, reasoning_tokens=186
    )


@pytest.mark.parametrize("stream", [*STREAMS, "gemini_generate.json"])
def test_damaged_streams_never_raise(stream: str, rng: random.Random) -> None:
    for body in mutations(load(stream), rng):
        assert isinstance(run_stream(gemini, STREAM, [body]), UsageResult)
        assert isinstance(gemini.parse_response(GENERATE, body), UsageResult)


@pytest.mark.parametrize("stream", ["gemini_stream.sse", "gemini_stream_array.json"])
def test_stream_cut_inside_the_last_report_keeps_the_one_before(stream: str) -> None:
    data = load(stream)
    cut = data.rindex(b'"usageMetadata"') + 40
    result = run_stream(gemini, STREAM, [data[:cut]])
    assert result.usage == Usage(
        input_tokens=5444, output_tokens=217, cached_tokens=4096, reasoning_tokens=186
    )
    assert result.error is None
