"""Helpers shared by the provider parser tests: recorded fixtures and ways of chopping a stream.

(A uniquely named module rather than conftest.py, so that importing it cannot pick up another
directory's conftest.)
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

from majordomo_gateway.providers.base import Provider, RequestInfo, UsageResult

FIXTURES = Path(__file__).parent / "fixtures"

# Fixed so that a failure on some split reproduces.
SEED = 20240611


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def random_chunks(data: bytes, rng: random.Random) -> list[bytes]:
    """Splits of very different sizes, so boundaries land inside events, fields and separators."""
    chunks: list[bytes] = []
    i = 0
    while i < len(data):
        n = rng.randint(1, rng.choice((2, 7, 40, 300, 4000)))
        chunks.append(data[i : i + n])
        i += n
    return chunks


def split_variants(data: bytes, rounds: int = 25) -> Iterable[tuple[str, list[bytes]]]:
    """The same body delivered whole, byte by byte, and in many random splits."""
    yield "whole", [data]
    yield "bytes", byte_by_byte(data)
    rng = random.Random(SEED)
    for i in range(rounds):
        yield f"random-{i}", random_chunks(data, rng)


def run_stream(
    provider: Provider, path: str, chunks: Iterable[bytes], request: RequestInfo | None = None
) -> UsageResult:
    parser = provider.stream_parser(path, request or RequestInfo())
    for chunk in chunks:
        parser.feed(chunk)
    return parser.finish()


def assert_split_invariant(
    provider: Provider, path: str, data: bytes, request: RequestInfo | None = None
) -> UsageResult:
    """Stream ``data`` every which way; all must agree with the whole-body result, which is returned."""
    expected = run_stream(provider, path, [data], request)
    for label, chunks in split_variants(data):
        assert run_stream(provider, path, chunks, request) == expected, label
    return expected


def mutations(data: bytes, rng: random.Random, count: int = 40) -> Iterable[bytes]:
    """Truncated and corrupted copies of a body, for the never-raise tests."""
    for _ in range(count):
        cut = rng.randrange(len(data) + 1)
        yield data[:cut]
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            damaged[rng.randrange(len(damaged))] = rng.choice(b'{}[]":,\n\r \x00\xffa0')
        yield bytes(damaged)


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
