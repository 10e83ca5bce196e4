"""Each stream parser's ``ended``: True from the last byte of the stream's terminal event on, never
before, however the body is split.  The relay's ``aborted`` rests on it (tests/gateway/test_aborted.py)."""

from __future__ import annotations

import pytest
from majordomo_gateway.providers.base import Provider, RequestInfo
from majordomo_gateway.providers.registry import PROVIDERS
from provider_testkit import load, split_variants


def _event_end(data: bytes, marker: bytes) -> int:
    """Where the event holding ``marker`` ends: just after its blank line."""
    start = data.index(marker)
    crlf = data.find(b"\r\n\r\n", start)
    lf = data.find(b"\n\n", start)
    return crlf + 4 if crlf >= 0 and (lf < 0 or crlf < lf) else lf + 2


CASES = [
    ("openai", "/v1/chat/completions", "openai_chat_stream.sse", b"data: [DONE]"),
    ("openai", "/v1/chat/completions", "openai_chat_stream_no_usage.sse", b"data: [DONE]"),
    ("openai", "/v1/chat/completions", "openai_chat_stream_error.sse", b'data: {"error"'),
    ("openai", "/v1/completions", "openai_completions_stream.sse", b"data: [DONE]"),
    ("openai", "/v1/responses", "openai_responses_stream.sse", b"event: response.completed"),
    ("openai", "/v1/responses", "openai_responses_stream_failed.sse", b"event: response.failed"),
    ("openai", "/v1/responses", "openai_responses_stream_incomplete.sse", b"event: response.incomplete"),
    ("anthropic", "/v1/messages", "anthropic_messages_stream.sse", b"event: message_stop"),
    ("anthropic", "/v1/messages", "anthropic_basic_stream.sse", b"event: message_stop"),
    ("anthropic", "/v1/messages", "anthropic_stream_error.sse", b"event: error\n"),
    ("gemini", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", "gemini_stream.sse",
     b'"finishReason"'),
    ("gemini", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", "gemini_stream_error.sse",
     b'data: {"error"'),
]


def _fed(provider: Provider, path: str, chunks: list[bytes]) -> list[tuple[int, bool]]:
    """(bytes fed so far, ended) after each chunk."""
    parser = provider.stream_parser(path, RequestInfo())
    seen = 0
    states = []
    for chunk in chunks:
        parser.feed(chunk)
        seen += len(chunk)
        states.append((seen, parser.ended))
    return states


def _check(provider: Provider, path: str, data: bytes, end: int) -> None:
    for label, chunks in split_variants(data):
        for seen, ended in _fed(provider, path, chunks):
            assert ended is (seen >= end), (label, seen, end)


@pytest.mark.parametrize(("name", "path", "fixture", "marker"), CASES, ids=[c[2] for c in CASES])
def test_ended_from_the_terminal_event_on(name: str, path: str, fixture: str, marker: bytes) -> None:
    data = load(fixture)
    _check(PROVIDERS[name], path, data, _event_end(data, marker))


@pytest.mark.parametrize("fixture", ["gemini_stream_array.json", "gemini_stream_error_array.json"])
def test_a_gemini_json_array_ends_with_its_closing_bracket(fixture: str) -> None:
    data = load(fixture)
    _check(PROVIDERS["gemini"], "/v1beta/models/gemini-2.5-flash:streamGenerateContent", data,
           data.rindex(b"\n]") + 2)


@pytest.mark.parametrize(("name", "path", "fixture", "marker"), CASES[:1] + CASES[4:5] + CASES[7:8] + CASES[10:11],
                         ids=["chat", "responses", "anthropic", "gemini"])
def test_a_stream_cut_before_its_terminal_event_has_not_ended(name: str, path: str, fixture: str,
                                                              marker: bytes) -> None:
    data = load(fixture)
    parser = PROVIDERS[name].stream_parser(path, RequestInfo())
    parser.feed(data[: data.index(marker)])
    assert parser.ended is False
    parser.finish()


def test_text_that_mentions_the_terminal_events_does_not_end_a_stream() -> None:
    # Content can say anything; JSON escapes its quotes, and every test is on an event's first bytes.
    chat = (b'data: {"choices":[{"delta":{"content":"data: [DONE] and event: message_stop, '
            b'\\"finishReason\\": \\"STOP\\""}}]}\n\n')
    anthropic = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                 b'"delta":{"type":"text_delta","text":"event: message_stop\\n\\ndata: [DONE]"}}\n\n')
    gemini = b'data: {"candidates":[{"content":{"parts":[{"text":"\\"finishReason\\": \\"STOP\\""}]}}]}\r\n\r\n'
    for name, path, body in [("openai", "/v1/chat/completions", chat), ("anthropic", "/v1/messages", anthropic),
                             ("gemini", "/v1beta/models/g:streamGenerateContent?alt=sse", gemini)]:
        parser = PROVIDERS[name].stream_parser(path, RequestInfo())
        parser.feed(body)
        assert parser.ended is False, name
