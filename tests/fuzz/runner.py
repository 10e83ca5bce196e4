"""Drive one real gateway subprocess with fuzz cases and check its promises after each one.

Per case (from the client's side): the gateway process is alive; every response head it wrote
parses; no 5xx other than 502/503/504 unless the upstream itself sent that status; its
X-Majordomo-Request-Id is its own (never the upstream's); neither the Majordomo key nor the
provider key appears anywhere in what it wrote back.  Per window of cases (they run
concurrently): no traceback and no secret in the gateway's log, and its RSS stays under the
bound.  Every ``rows_every`` cases and at the end: every request id the gateway answered with has
its llm_requests row once the writer has settled.

    python -m tests.fuzz --cases 100000 --seed 7
    python -m tests.fuzz --seed 7 --case 4242 -v     # replay one case and show its bytes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.fuzz.cases import KEY_TOKEN, PROVIDER_KEY, Case, case
from tests.fuzz.upstream import FuzzUpstream
from tests.support.gateway import GatewayProcess

ALLOWED_5XX = {502, 503, 504}
#: the longest a case may take before the gateway counts as hung: a stall, the read timeout, slack
CASE_TIMEOUT = 20.0
#: the gateway's timeouts during a run, below STALL_SECONDS so stalls are seen to time out
GATEWAY_ENV = {
    "MAJORDOMO_PROXY_READ_TIMEOUT": "1.0",
    "MAJORDOMO_PROXY_CONNECT_TIMEOUT": "2.0",
    "MAJORDOMO_SERVER_HEAD_TIMEOUT": "1.0",
    "MAJORDOMO_SERVER_KEEPALIVE_TIMEOUT": "0.5",
    "MAJORDOMO_PROXY_ABANDONED_STREAM_MAX_SECONDS": "2.0",
    "MAJORDOMO_LOG_LEVEL": "warning",
}
_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})(?: [^\r\n]*)?\r\n")


@dataclass
class Finding:
    case_id: str
    check: str
    detail: str
    describe: str = ""


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n.lower() == name), None)


@dataclass
class Outcome:
    case: Case
    raw: bytes
    responses: list[Response]
    problem: str | None  # a response that does not parse, or the gateway never finishing
    seconds: float


@dataclass
class Summary:
    seed: int
    first: int
    cases: int = 0
    seconds: float = 0.0
    responses: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    request_ids: int = 0
    max_rss_mb: float = 0.0
    findings: list[Finding] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.cases / self.seconds if self.seconds else 0.0


def parse_responses(data: bytes, truncated_ok: bool) -> tuple[list[Response], str | None]:  # noqa: C901
    """The responses in what the gateway wrote on one connection.  A body cut short is allowed
    (a broken upstream stream is ended by closing); a head that doesn't parse is not."""
    responses: list[Response] = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return responses, None if truncated_ok else f"an unterminated response head at byte {pos}"
        match = _STATUS.match(data, pos)
        if match is None:
            return responses, f"a response head that is not HTTP/1.x: {data[pos:pos + 80]!r}"
        headers = []
        for line in data[pos:end].split(b"\r\n")[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                return responses, f"a malformed response header line: {line[:80]!r}"
            headers.append((name, value.strip()))
        response = Response(int(match.group(1)), headers)
        responses.append(response)
        pos = end + 4
        if 100 <= response.status < 200 or response.status in (204, 304):
            continue
        if (response.header(b"transfer-encoding") or b"").lower() == b"chunked":
            while True:
                line_end = data.find(b"\r\n", pos)
                if line_end < 0:
                    return responses, None
                try:
                    size = int(data[pos:line_end].split(b";")[0], 16)
                except ValueError:
                    return responses, f"a malformed chunk size line: {data[pos:pos + 40]!r}"
                pos = line_end + 2 + size + 2
                if size == 0:
                    break
        elif response.header(b"content-length") is not None:
            length = response.header(b"content-length")
            assert length is not None
            if not length.isdigit():
                return responses, f"a malformed Content-Length: {length[:40]!r}"
            pos += int(length)
        else:
            pos = len(data)
    return responses, None


async def drive(port: int, fuzz: Case, key: bytes) -> Outcome:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        for step in fuzz.client:
            if step.kind == "send":
                writer.write(step.data.replace(KEY_TOKEN, key))
                await writer.drain()
            elif step.kind == "pause":
                await asyncio.sleep(step.seconds)
            elif step.kind == "shutdown":
                writer.write_eof()
            elif step.kind == "close":
                writer.close()
                return

    sender = asyncio.create_task(send())
    chunks: list[bytes] = []
    got = 0
    problem = None
    try:
        async with asyncio.timeout(CASE_TIMEOUT):
            while True:
                if fuzz.client_reads is not None and got >= fuzz.client_reads:
                    break
                chunk = await reader.read(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
    except TimeoutError:
        problem = f"the gateway neither finished nor closed the connection within {CASE_TIMEOUT}s"
    except (ConnectionError, OSError):
        pass
    sender.cancel()
    with contextlib.suppress(BaseException):
        await sender
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    raw = b"".join(chunks)
    truncated = fuzz.client_reads is not None or any(s.kind == "close" for s in fuzz.client)
    responses, parse_problem = parse_responses(raw, truncated)
    return Outcome(fuzz, raw, responses, problem or parse_problem, time.monotonic() - started)


def _read_from(path: Path, offset: int) -> bytes:
    """What a log file gained since ``offset`` (small reads: the gateway logs little)."""
    with open(path, "rb") as log:
        log.seek(offset)
        return log.read()


def rss_mb(pid: int) -> float:
    """Resident memory of the process and its descendants (the serve supervisor and workers)."""
    total = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return total / 1024


class FuzzRun:
    def __init__(self, seed: int, cases: int, *, first: int = 0, concurrency: int = 16, window: int = 64,
                 rows_every: int = 1024, max_rss_mb: float = 600.0, workdir: Path | None = None,
                 database_url: str | None = None, keep_going: bool = False, progress: bool = False,
                 max_seconds: float | None = None) -> None:
        self.seed, self.count, self.first = seed, cases, first
        self.concurrency, self.window, self.rows_every = concurrency, window, rows_every
        self.max_rss_mb = max_rss_mb
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="majordomo-fuzz-"))
        self.database_url = database_url or f"sqlite:///{self.workdir / 'majordomo.db'}"
        self.keep_going = keep_going
        self.progress = progress
        self.max_seconds = max_seconds
        self.summary = Summary(seed, first)
        self._log_offset = 0
        self._pending_ids: dict[str, str] = {}  # request id -> case id
        self.last_outcomes: list[Outcome] = []
        self._suspects: list[tuple[Finding, list[Case]]] = []

    def _secrets(self, key: str) -> list[bytes]:
        return [key.encode(), PROVIDER_KEY.encode()]

    async def run(self) -> Summary:
        upstream = await FuzzUpstream().start()
        gateway = GatewayProcess(database_url=self.database_url, upstream_url=upstream.url, workdir=self.workdir,
                                 extra_env=dict(GATEWAY_ENV))
        await asyncio.to_thread(gateway.start)
        started = time.monotonic()
        try:
            await self._loop(gateway, upstream)
            if gateway.process is not None and gateway.process.poll() is None:
                await self._check_rows(gateway)
        finally:
            self.summary.seconds = time.monotonic() - started
            await asyncio.to_thread(gateway.stop)
            await upstream.stop()
        return self.summary

    async def _loop(self, gateway: GatewayProcess, upstream: FuzzUpstream) -> None:
        """Keep ``concurrency`` cases in flight (a stalled one holds up no other), and check the
        log, memory and rows after each ``window`` finished cases."""
        key = gateway.key.encode()
        indices = self._indices()
        running: set[asyncio.Task[Outcome]] = set()
        window: list[Case] = []
        last_rows = 0
        stop = exhausted = False
        while running or window or not (stop or exhausted):
            while not stop and not exhausted and len(running) < self.concurrency:
                index = next(indices, None)
                if index is None:
                    exhausted = True
                    break
                fuzz = case(self.seed, index)
                upstream.plan(fuzz.id, fuzz.upstream)
                running.add(asyncio.create_task(drive(gateway.port, fuzz, key)))
            if running:
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    outcome = task.result()
                    self._check_case(outcome, gateway)
                    if self.count <= 10:
                        self.last_outcomes.append(outcome)
                    window.append(outcome.case)
                    self.summary.cases += 1
            if len(window) < self.window and running:
                continue
            if window and not self._check_window(gateway, window):
                stop = True
            window = []
            if self.summary.cases - last_rows >= self.rows_every:
                last_rows = self.summary.cases
                await self._check_rows(gateway)
            if self.progress:
                print(f"fuzz: {self.summary.cases} cases, {len(self.summary.findings)} findings, "
                      f"rss {self.summary.max_rss_mb:.0f} MB", file=sys.stderr, flush=True)
            if self.summary.findings and not self.keep_going:
                stop = True
        await self._isolate(gateway, key)

    def _indices(self) -> Iterator[int]:
        deadline = time.monotonic() + self.max_seconds if self.max_seconds else None
        for index in range(self.first, self.first + self.count):
            if deadline is not None and time.monotonic() > deadline:
                return
            yield index

    async def _isolate(self, gateway: GatewayProcess, key: bytes) -> None:
        """Replay, one at a time, the cases of each window whose log showed a traceback, to name
        the case that makes it (cases run concurrently, so the window alone can't say)."""
        for finding, suspects in self._suspects[:5]:
            for fuzz in sorted(suspects, key=lambda c: c.index):
                if gateway.process is None or gateway.process.poll() is not None:
                    return
                before = gateway.log_path.stat().st_size
                await drive(gateway.port, fuzz, key)
                await asyncio.sleep(0.05)
                if b"Traceback" in _read_from(gateway.log_path, before):
                    finding.case_id, finding.describe = fuzz.id, fuzz.describe()
                    break

    def _find(self, fuzz: Case | None, check: str, detail: str, case_id: str = "") -> None:
        self.summary.findings.append(Finding(fuzz.id if fuzz else case_id, check, detail,
                                             fuzz.describe() if fuzz else ""))

    def _check_case(self, outcome: Outcome, gateway: GatewayProcess) -> None:
        fuzz = outcome.case
        if outcome.problem:
            self._find(fuzz, "response", outcome.problem)
        for secret in self._secrets(gateway.key):
            if secret in outcome.raw:
                self._find(fuzz, "secret", "a key appears in the gateway's answer")
        for response in outcome.responses:
            self.summary.responses += 1
            self.summary.statuses[response.status] = self.summary.statuses.get(response.status, 0) + 1
            if response.status >= 500 and response.status not in ALLOWED_5XX | set(fuzz.upstream_statuses):
                self._find(fuzz, "5xx", f"the gateway answered {response.status}")
            request_id = response.header(b"x-majordomo-request-id")
            if request_id is not None:
                if request_id.startswith(b"upstream-says-"):
                    self._find(fuzz, "request-id", "the upstream's X-Majordomo-Request-Id reached the client")
                else:
                    self._pending_ids[request_id.decode("latin-1")] = fuzz.id

    def _check_window(self, gateway: GatewayProcess, window: list[Case]) -> bool:
        """False when the gateway is gone."""
        first, last = min(c.index for c in window), max(c.index for c in window)
        where = f"{self.seed}:{first}..{last}"
        assert gateway.process is not None
        if gateway.process.poll() is not None:
            self._find(None, "alive", f"the gateway exited with {gateway.process.returncode}; log tail:\n"
                       + gateway.log_text()[-3000:], where)
            return False
        fresh = _read_from(gateway.log_path, self._log_offset)
        self._log_offset += len(fresh)
        if b"Traceback" in fresh:
            at = fresh.index(b"Traceback")
            self._find(None, "traceback", fresh[max(0, at - 300):at + 3000].decode(errors="replace"), where)
            self._suspects.append((self.summary.findings[-1], list(window)))
        for secret in self._secrets(gateway.key):
            if secret in fresh:
                self._find(None, "secret", "a key appears in the gateway's log", where)
        rss = rss_mb(gateway.process.pid)
        self.summary.max_rss_mb = max(self.summary.max_rss_mb, rss)
        if rss > self.max_rss_mb:
            self._find(None, "memory", f"RSS {rss:.0f} MB > {self.max_rss_mb:.0f} MB", where)
        return True

    async def _check_rows(self, gateway: GatewayProcess, settle: float = 15.0) -> None:
        ids = dict(self._pending_ids)
        self._pending_ids.clear()
        self.summary.request_ids += len(ids)
        deadline = time.monotonic() + settle
        missing = set(ids)
        param = "?" if gateway.dialect == "sqlite" else "$1::text"
        while missing:
            found: set[str] = set()
            todo = sorted(missing)
            for i in range(0, len(todo), 500):
                part = todo[i:i + 500]
                if gateway.dialect == "sqlite":
                    marks = ",".join("?" * len(part))
                    rows = await gateway.query(f"SELECT id FROM llm_requests WHERE id IN ({marks})", *part)
                else:
                    rows = await gateway.query(
                        f"SELECT id::text FROM llm_requests WHERE id::text = ANY({param}[])", part)
                found |= {str(r[0]) for r in rows}
            missing -= found
            if not missing or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        for request_id in sorted(missing)[:20]:
            fuzz = case(self.seed, int(ids[request_id].split(":")[1]))
            self._find(fuzz, "row", f"no llm_requests row for request id {request_id} after {settle}s")


def repro(seed: int, finding: Finding) -> str:
    index = finding.case_id.split(":")[1]
    if ".." in index:
        first, last = index.split("..")
        return f".venv/bin/python -m tests.fuzz --seed {seed} --first {first} --cases {int(last) - int(first) + 1}"
    return f".venv/bin/python -m tests.fuzz --seed {seed} --case {index} -v"


def report(summary: Summary) -> str:
    lines = [f"fuzz: seed {summary.seed}, cases {summary.first}..{summary.first + summary.cases - 1} "
             f"({summary.cases} cases, {summary.responses} responses) in {summary.seconds:.1f}s = "
             f"{summary.rate:.0f} cases/s; request ids checked {summary.request_ids}; "
             f"max RSS {summary.max_rss_mb:.0f} MB; statuses {dict(sorted(summary.statuses.items()))}"]
    by_check: dict[str, int] = {}
    for finding in summary.findings:
        by_check[finding.check] = by_check.get(finding.check, 0) + 1
    if summary.findings:
        lines.append(f"FINDINGS {by_check}")
    seen: set[tuple[str, str]] = set()
    for finding in summary.findings:
        signature = (finding.check, finding.detail[:60])
        if signature in seen:
            continue
        seen.add(signature)
        lines.append(f"- [{finding.check}] case {finding.case_id} {finding.describe}\n  {finding.detail}\n"
                     f"  repro: {repro(summary.seed, finding)}")
    return "\n".join(lines)


def show(seed: int, index: int) -> str:
    """One case's bytes, for a repro."""
    fuzz = case(seed, index)
    out = [f"case {fuzz.id}: {fuzz.describe()}", "client:"]
    out += [f"  {s.kind} {s.data[:600]!r}{'...' if len(s.data) > 600 else ''} {s.seconds or ''}" for s in fuzz.client]
    out.append("upstream:")
    out += [f"  {s.kind} {s.data[:600]!r}{'...' if len(s.data) > 600 else ''} {s.seconds or ''}" for s in fuzz.upstream]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=None, help="default: from the clock (printed)")
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--first", type=int, default=0, help="the first case number")
    parser.add_argument("--case", type=int, default=None, help="run just this case number")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-rss-mb", type=float, default=600.0)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="stop starting cases after this long (the count run is then reported)")
    parser.add_argument("--keep-going", action="store_true", help="don't stop at the first finding")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the case's bytes and the answer")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time()) % 1_000_000
    first, count = (args.case, 1) if args.case is not None else (args.first, args.cases)
    if args.verbose and args.case is not None:
        print(show(seed, args.case))
    fuzz_run = FuzzRun(seed, count, first=first, concurrency=args.concurrency, max_rss_mb=args.max_rss_mb,
                       database_url=args.database_url, keep_going=args.keep_going,
                       progress=count >= 5000 and os.isatty(2), max_seconds=args.max_seconds)
    summary = asyncio.run(fuzz_run.run())
    if args.verbose:
        for outcome in fuzz_run.last_outcomes:
            print(f"answer ({outcome.seconds:.2f}s): {outcome.raw[:3000]!r}")
    print(report(summary))
    return 1 if summary.findings else 0
