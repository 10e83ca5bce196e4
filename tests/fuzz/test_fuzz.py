"""The short fuzz run of the default suite (the long one is `make fuzz`, docs/reliability.md).

FUZZ_SEED and FUZZ_CASES change the run; a failure prints each finding's case and the command
that replays it.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.fuzz.cases import case
from tests.fuzz.runner import FuzzRun, parse_responses, report

SEED = int(os.environ.get("FUZZ_SEED", "20261206"))
CASES = int(os.environ.get("FUZZ_SHORT_CASES", "400"))


def test_a_case_is_a_function_of_its_seed_and_number() -> None:
    assert case(SEED, 17) == case(SEED, 17)
    assert case(SEED, 17) != case(SEED, 18)


def test_the_response_checker_rejects_a_broken_head() -> None:
    assert parse_responses(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                           False)[1] is None
    assert parse_responses(b"HTTP/1.1 200 OK\r\nbroken\r\n\r\n", False)[1] is not None
    assert parse_responses(b"garbage\r\n\r\n", False)[1] is not None


async def test_a_short_seeded_run_finds_nothing(tmp_path: Path) -> None:
    summary = await FuzzRun(SEED, CASES, workdir=tmp_path).run()
    text = report(summary)
    print(text)
    assert summary.cases == CASES, text
    assert summary.request_ids > CASES // 3, text  # most cases reached the proxy and were answered
    assert not summary.findings, text
