"""SSE framing: event boundaries found wherever the network happened to cut the stream."""

from __future__ import annotations

import random

import pytest
from majordomo_gateway.providers.sse import (
    Counts,
    SSEFramer,
    as_count,
    error_text,
    event_name,
    has_object_value,
    json_object,
    parse_event,
)
from majordomo_gateway.usage import MAX_TOKEN_COUNT, InvalidUsage
from provider_testkit import byte_by_byte, random_chunks


def frame(chunks: list[bytes], max_event_bytes: int | None = None) -> tuple[list[bytes], bytes | None]:
    framer = SSEFramer() if max_event_bytes is None else SSEFramer(max_event_bytes)
    blocks: list[bytes] = []
    for chunk in chunks:
        blocks.extend(framer.feed(chunk))
    return blocks, framer.close()


STREAM = (
    b'event: message_start\ndata: {"a": 1}\n\n'
    b": keep-alive comment\n\n"
    b'data: {"b": 2}\n\n'
    b"event: ping\ndata: {}\n\n"
    b"data: [DONE]\n\n"
)
BLOCKS = [
    b'event: message_start\ndata: {"a": 1}',
    b": keep-alive comment",
    b'data: {"b": 2}',
    b"event: ping\ndata: {}",
    b"data: [DONE]",
]


def test_several_events_in_one_chunk() -> None:
    assert frame([STREAM]) == (BLOCKS, None)


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"])
def test_any_split_gives_the_same_events(line_end: bytes) -> None:
    data = STREAM.replace(b"\n", line_end)
    assert frame([data]) == (BLOCKS, None)
    assert frame(byte_by_byte(data)) == (BLOCKS, None)
    rng = random.Random(7)
    for _ in range(200):
        assert frame(random_chunks(data, rng)) == (BLOCKS, None)
    for cut in range(len(data) + 1):
        assert frame([data[:cut], data[cut:]]) == (BLOCKS, None), cut


def test_crlf_boundary_split_across_three_chunks() -> None:
    assert frame([b"data: x\r", b"\n\r", b"\ndata: y\r\n\r\n"]) == ([b"data: x", b"data: y"], None)
    assert frame([b"data: x\r\n", b"\r", b"\n"]) == ([b"data: x"], None)


def test_mixed_line_endings() -> None:
    assert frame([b"data: x\n\r\ndata: y\r\n\ndata: z\n\n"]) == ([b"data: x", b"data: y", b"data: z"], None)


def test_extra_blank_lines_yield_no_empty_events() -> None:
    blocks, rest = frame([b"\n\n\n\ndata: x\n\n\n\n\n\ndata: y\n\n"])
    assert [parse_event(b)[1] for b in blocks] == [b"x", b"y"]
    assert rest is None


def test_unterminated_last_event_is_returned_by_close() -> None:
    assert frame([b'data: x\n\ndata: {"y"', b": 1}\n"]) == ([b"data: x"], b'data: {"y": 1}\n')
    assert frame([b"data: x\n\n", b"\n"]) == ([b"data: x"], None)


def test_empty_chunks_are_harmless() -> None:
    assert frame([b"", b"data: x", b"", b"\n", b"", b"\n", b""]) == ([b"data: x"], None)


def test_oversized_event_is_dropped_and_the_next_one_kept() -> None:
    big = b"data: " + b"x" * 1000
    for chunks in ([big + b"\n\ndata: ok\n\n"], byte_by_byte(big + b"\n\ndata: ok\n\n")):
        blocks, rest = frame(chunks, max_event_bytes=100)
        assert blocks == [b"data: ok"]
        assert rest is None
    # The boundary right after the dropped event may arrive split.
    assert frame([big, b"\n", b"\ndata: ok\n\n"], max_event_bytes=100) == ([b"data: ok"], None)
    assert frame([big], max_event_bytes=100) == ([], None)


def test_parse_event_fields() -> None:
    assert parse_event(b'data: {"a":1}') == (None, b'{"a":1}')
    assert parse_event(b"data:{}") == (None, b"{}")
    assert parse_event(b"event: error\ndata: {}") == (b"error", b"{}")
    assert parse_event(b"event:x\ndata: a\ndata: b") == (b"x", b"a\nb")
    assert parse_event(b"id: 7\nretry: 10\n: comment\ndata: z") == (None, b"z")
    assert parse_event(b": only a comment") == (None, None)
    assert parse_event(b"\ndata: late") == (None, b"late")


def test_event_name() -> None:
    assert event_name(b"event: message_delta\ndata: {}") == b"message_delta"
    assert event_name(b"event:error") == b"error"
    assert event_name(b"id: 1\nevent: ping\ndata: {}") == b"ping"
    assert event_name(b"data: {}") is None


def test_has_object_value() -> None:
    assert has_object_value(b'{"usage":{"a":1}}', b'"usage"')
    assert has_object_value(b'{"usage" : \n {"a":1}}', b'"usage"')
    assert has_object_value(b'{"x":"\\"usage\\": {","usage":{}}', b'"usage"')
    assert not has_object_value(b'{"usage":null}', b'"usage"')
    assert not has_object_value(b'{"text":"\\"usage\\": {"}', b'"usage"')
    assert not has_object_value(b'{"usage":', b'"usage"')
    # A later key of the same name with a string value does not hide the object.
    assert has_object_value(b'{"usage":{"a":1},"metadata":{"usage":"x"}}', b'"usage"')
    # A null at the end settles it, whatever an earlier nested key holds.
    assert not has_object_value(b'{"tools":[{"properties":{"usage":{}}}],"usage":null}', b'"usage"')


def test_json_object_never_raises() -> None:
    assert json_object(b'{"a": 1}') == {"a": 1}
    for bad in (None, b"", b"{", b"[]", b"null", b"1", b"\xff\xfe", b'{"a": 1}garbage', "{}x"):
        assert json_object(bad) is None


def test_as_count_takes_whole_numbers_within_the_bound_only() -> None:
    assert [as_count(v) for v in (3, 0, 2.0, 1e3, MAX_TOKEN_COUNT, float(MAX_TOKEN_COUNT))] == [
        3, 0, 2, 1000, MAX_TOKEN_COUNT, MAX_TOKEN_COUNT]
    for bad in (-2, -0.5, 2.5, 1e300, float("inf"), float("nan"), MAX_TOKEN_COUNT + 1, 2**63, 2**64 - 1, 2**64,
                "4", True, False, [], {}, None):
        assert as_count(bad) is None, bad


def test_counts_keeps_every_value_that_is_not_a_count() -> None:
    count = Counts()
    usage = {"a": 5, "b": None, "c": -1, "d": "7", "n": {"x": True}}
    assert [count.get(usage, "a"), count.get(usage, "b"), count.get(usage, "c"), count.get(usage, "d"),
            count.get(usage, "missing"), count.get(usage["n"], "x", "n.")] == [5, 0, 0, 0, 0, 0]
    assert count.bad == {"c": -1, "d": "7", "n.x": True}
    with pytest.raises(InvalidUsage) as caught:
        count.check()
    assert str(caught.value).startswith("invalid usage reported by the upstream: c=-1, d='7', n.x=True (")
    Counts().check()  # nothing read, nothing wrong


def test_error_text() -> None:
    assert error_text({"type": "overloaded_error", "message": "Overloaded"}) == "overloaded_error: Overloaded"
    assert error_text({"code": 503, "message": "busy", "status": "UNAVAILABLE"}) == "UNAVAILABLE: busy"
    assert error_text({"message": "plain"}) == "plain"
    assert error_text({}) == "unknown error"
    assert error_text(None) == "unknown error"
    assert error_text("boom") == "boom"
    assert len(error_text({"message": "x" * 10_000})) == 500
