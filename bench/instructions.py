"""Instructions per request: the gateway's CPU cost counted by valgrind, not timed.

    bash bench/run.sh instructions ec8ccd5 HEAD                 # 3 alternating rounds, SQLite
    bash bench/run.sh instructions main WORKTREE --db pg        # this checkout vs main, PostgreSQL
    bash bench/run.sh instructions HEAD --workloads openai_stream --requests 200 --rounds 1
    bash bench/run.sh instructions WORKTREE --credential both   # mdm_sk_ + provider key vs mdm_pk_ alone

Why a second method next to compare.py: CPU time per request on this shared 2-core machine moves by
±5-10 % between runs an hour apart, which is the size of the effects a before/after statement is
about.  The number of instructions the gateway process executes for the same requests moves by
about ±1-3 % (hash seeds, the event loop's timing, the writer's batch sizes), so a 3 % change is
visible.  Instructions are not time (a cache miss costs more than an add), so this complements,
not replaces, the timed runs of gateway_bench.py.

How: the gateway (`majordomo serve`, one process) runs under `valgrind --tool=callgrind
--instr-atstart=no`, so start-up and imports are not counted.  A warm-up of requests runs
uninstrumented; then `callgrind_control -i on`, the measured requests (closed loop, --conc
concurrent clients, each request tagged), a wait until every measured request's row is in the
database (so the writer's work for them is counted), a dump; then --idle seconds of the same
process doing nothing, a second dump.  The idle dump gives what the process's timers cost per
second (the writer's flush tick, the event loop's wake-ups, the change feed's poll); that rate
times the window's length is subtracted, so a window that a loaded machine stretches (slow
clients, a slow database) does not count as gateway work: (window - idle/s x seconds) / requests
is the figure ("net"; "raw" is kept beside it in the results).  The upstream is bench/upstream.py
(no pacing), outside valgrind.

Each revision is checked out as compare.py does (git worktree, first on PYTHONPATH; WORKTREE = this
checkout).  Rounds alternate the revisions (A B A B ...); the table shows each cell's median and the
spread of its rounds, and the ratio to the first revision.  Output: a table on stdout and
bench/results/instructions-<labels>-<db>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime

import httpx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import canned  # noqa: E402
from compare import checkout, git  # noqa: E402

PY = sys.executable
UPSTREAM_PORT = 18291
GATEWAY_PORT = 18292
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
# A fixed, throwaway secrets key: the bench's databases are dropped after each run.
SECRETS_KEY = "mdm_sec_" + "QkVOQ0gtT05MWS1CRU5DSC1PTkxZLUJFTkNILU9OTFk"


def log(msg: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with httpx.Client() as c:
                c.get(f"http://127.0.0.1:{port}/health", timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError(f"nothing answered on port {port} within {timeout:.0f} s")


class Store:
    """A fresh database per gateway run: a SQLite file or a PostgreSQL database."""

    def __init__(self, db: str, name: str, workdir: str) -> None:
        self.db, self.name = db, name
        if db == "pg":
            self.url = f"postgresql://postgres@127.0.0.1:5432/{name}"
            self._pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self._pg(f'CREATE DATABASE "{name}"')
        else:
            self.path = os.path.join(workdir, f"{name}.db")
            self.url = f"sqlite:///{self.path}"

    @staticmethod
    def _pg(sql: str, database: str = "postgres") -> list[tuple[object, ...]]:
        import asyncpg

        async def go() -> list[tuple[object, ...]]:
            conn = await asyncpg.connect(PG_ADMIN.rsplit("/", 1)[0] + "/" + database)
            try:
                return [tuple(r) for r in await conn.fetch(sql)]
            finally:
                await conn.close()
        return asyncio.run(go())

    def rows(self, tag: str) -> int:
        sql = f"SELECT count(*) FROM llm_requests WHERE raw_metadata->>'Bench-Phase' = '{tag}'"
        if self.db == "pg":
            return int(self._pg(sql, self.name)[0][0])  # type: ignore[call-overload]
        if not os.path.exists(self.path):
            return 0
        with contextlib.closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)) as c:
            try:
                return int(c.execute(sql).fetchone()[0])
            except sqlite3.OperationalError:
                return 0

    def drop(self) -> None:
        if self.db == "pg":
            with contextlib.suppress(Exception):
                self._pg(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def gateway_env(src: str, store: Store, workdir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAJORDOMO_")}
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    base = f"http://127.0.0.1:{UPSTREAM_PORT}"
    env.update(MAJORDOMO_DATABASE_URL=store.url, MAJORDOMO_PROVIDERS_OPENAI_BASE_URL=base,
               MAJORDOMO_PROVIDERS_ANTHROPIC_BASE_URL=base, MAJORDOMO_LOG_LEVEL="warning",
               MAJORDOMO_WRITER_SPOOL_DIR=os.path.join(workdir, f"spool-{store.name}"))
    return env


def _cli(env: dict[str, str], workdir: str, *args: str, stdin: str | None = None) -> dict[str, object]:
    out = subprocess.run([PY, "-m", "majordomo_gateway.cli.main", *args, "--json"], input=stdin,
                         capture_output=True, text=True, env=env, cwd=workdir, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"majordomo {' '.join(args)} failed: {out.stderr}")
    parsed: dict[str, object] = json.loads(out.stdout)
    return parsed


def create_key(env: dict[str, str], workdir: str) -> str:
    return str(_cli(env, workdir, "keys", "create", "--name", "bench")["key"])


# Where each workload's SDK puts the provider key (the proxy key goes there instead).
_CREDENTIAL_HEADER = {"openai": "Authorization", "anthropic": "x-api-key"}


def request_headers(workload: canned.Workload, key: str) -> dict[str, str]:
    """The workload's headers with the Majordomo key: an ``mdm_sk_`` beside the provider key, or an
    ``mdm_pk_`` in the provider key's place (then alone)."""
    if not key.startswith("mdm_pk_"):
        return {**workload.headers, "X-Majordomo-Key": key}
    name = _CREDENTIAL_HEADER[workload.provider]
    value = f"Bearer {key}" if name == "Authorization" else key
    return {**workload.headers, name: value}


def create_proxy_key(env: dict[str, str], workdir: str, workload: canned.Workload) -> str:
    """A Majordomo key, a proxy key for it, and the workload's provider key stored in it."""
    key_id = str(_cli(env, workdir, "keys", "create", "--name", "bench")["id"])
    proxy = _cli(env, workdir, "proxy-keys", "create", "--name", "bench-app", "--key", key_id)
    provider_key = workload.headers[_CREDENTIAL_HEADER[workload.provider]].removeprefix("Bearer ")
    _cli(env, workdir, "proxy-keys", "set-provider", str(proxy["id"]), workload.provider, stdin=provider_key)
    return str(proxy["key"])


async def drive(workload: canned.Workload, key: str, tag: str, n: int, conc: int) -> int:
    """n requests over conc keep-alive connections; each read to its end.  Returns the 200s."""
    headers = {**request_headers(workload, key), "X-Majordomo-Bench-Phase": tag}
    url = f"http://127.0.0.1:{GATEWAY_PORT}{workload.path}"
    left = n
    ok = 0

    async def client(c: httpx.AsyncClient) -> None:
        nonlocal left, ok
        while left > 0:
            left -= 1
            async with c.stream("POST", url, content=workload.body, headers=headers) as r:
                async for _ in r.aiter_raw():
                    pass
                ok += r.status_code == 200

    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(limits=limits, timeout=600) as c:
        await asyncio.gather(*(client(c) for _ in range(conc)))
    return ok


def callgrind_total(path: str) -> int:
    """The instructions counted while instrumentation was on: callgrind's `totals:` line (its
    `summary:` line is 0 when instrumentation starts switched off)."""
    with open(path) as f:
        text = f.read()
    m = re.search(r"^totals:\s+(\d+)", text, re.M)
    if not m:
        raise RuntimeError(f"no totals in {path}")
    return int(m.group(1))


def measure(label: str, src: str, db: str, workload: canned.Workload, a: argparse.Namespace,
            workdir: str, round_no: int, credential: str = "majordomo-key") -> dict[str, float]:
    name = f"instr_{label}_{workload.name}_{credential}_{round_no}".lower().replace("-", "_")
    store = Store(db, name, workdir)
    env = gateway_env(src, store, workdir)
    if credential == "proxy-key":
        env["MAJORDOMO_SECRETS_KEY"] = SECRETS_KEY
        key = create_proxy_key(env, workdir, workload)
    else:
        key = create_key(env, workdir)
    out = os.path.join(workdir, f"callgrind-{name}.out")
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
           PY, "-m", "majordomo_gateway.cli.main", "serve", "--port", str(GATEWAY_PORT), "--workers", "1"]
    with open(os.path.join(workdir, f"gateway-{name}.log"), "w") as gw_log:
        proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=gw_log, stderr=subprocess.STDOUT)
    try:
        wait_port(GATEWAY_PORT, timeout=300)
        asyncio.run(drive(workload, key, "warmup", a.warmup, a.conc))
        control(proc.pid, "-z")  # nothing before the window counts, even if instrumentation leaked
        control(proc.pid, "-i", "on")
        started = time.monotonic()
        ok = asyncio.run(drive(workload, key, "measured", a.requests, a.conc))
        deadline = time.monotonic() + 120
        while store.rows("measured") < a.requests and time.monotonic() < deadline:
            time.sleep(0.2)
        rows = store.rows("measured")
        elapsed = time.monotonic() - started
        control(proc.pid, "-d")  # dump 1: the measured window
        time.sleep(a.idle)
        control(proc.pid, "-d")  # dump 2: the same process idle, for its timers' cost per second
        control(proc.pid, "-i", "off")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        store.drop()
    if ok != a.requests or rows != a.requests:
        raise RuntimeError(f"{label} {workload.name}: {ok} answers of 200 and {rows} rows for {a.requests} requests")
    window, idle = callgrind_total(f"{out}.1"), callgrind_total(f"{out}.2")
    if not a.keep:
        for path in glob.glob(out + "*"):
            os.remove(path)
    idle_per_s = idle / a.idle
    net = max(window - idle_per_s * elapsed, 0.0)
    return {"instructions_per_request": net / a.requests, "raw_per_request": window / a.requests,
            "idle_per_s": idle_per_s, "window_s": round(elapsed, 1)}


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True, timeout=120)


def start_upstream(workdir: str) -> subprocess.Popen[bytes]:
    with open(os.path.join(workdir, "upstream.log"), "w") as up_log:
        proc = subprocess.Popen([PY, os.path.join(HERE, "upstream.py"), str(UPSTREAM_PORT), "--gap-ms", "0"],
                                stdout=up_log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{UPSTREAM_PORT}/__stats", timeout=2)
            return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("bench/upstream.py did not start")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("revisions", nargs="+", help="git revisions, or WORKTREE for this checkout as it is")
    ap.add_argument("--db", choices=["sqlite", "pg"], default="sqlite")
    ap.add_argument("--workloads", default=",".join(canned.WORKLOADS))
    ap.add_argument("--requests", type=int, default=400, help="measured requests per cell (default 400)")
    ap.add_argument("--warmup", type=int, default=100, help="uninstrumented requests first (default 100)")
    ap.add_argument("--conc", type=int, default=8, help="concurrent clients (default 8)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--credential", choices=["majordomo-key", "proxy-key", "both"], default="majordomo-key",
                    help="how requests authenticate: X-Majordomo-Key beside the provider key (default), a proxy "
                         "key (mdm_pk_) alone in the provider key's place, or both, alternating")
    ap.add_argument("--idle", type=float, default=3.0,
                    help="seconds of idle process measured after each window (default 3)")
    ap.add_argument("--keep", action="store_true", help="keep the callgrind files and the work directory")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    workloads = [canned.WORKLOADS[w] for w in a.workloads.split(",")]
    workdir = tempfile.mkdtemp(prefix="majordomo-instr-")
    checked_out = [checkout(r, workdir) for r in a.revisions]
    credentials = ["majordomo-key", "proxy-key"] if a.credential == "both" else [a.credential]
    # One column per revision and credential; a single credential keeps the revision's own label.
    revs = [(label if len(credentials) == 1 else f"{label}:{credential}", src, credential)
            for label, src in checked_out for credential in credentials]
    upstream = start_upstream(workdir)
    cells: dict[str, dict[str, list[float]]] = {label: {w.name: [] for w in workloads} for label, _, _ in revs}
    details: dict[str, dict[str, list[dict[str, float]]]] = {label: {w.name: [] for w in workloads}
                                                             for label, _, _ in revs}
    try:
        for round_no in range(a.rounds):
            for label, src, credential in revs:
                for w in workloads:
                    r = measure(label.split(":")[0], src, a.db, w, a, workdir, round_no, credential)
                    cells[label][w.name].append(r["instructions_per_request"])
                    details[label][w.name].append(r)
                    log(f"round {round_no + 1}/{a.rounds} {label} {w.name}: "
                        f"{r['instructions_per_request']:,.0f} instructions/request net, "
                        f"{r['raw_per_request']:,.0f} raw, idle {r['idle_per_s']:,.0f}/s "
                        f"over the {r['window_s']} s window")
    finally:
        upstream.kill()
        for label, _ in checked_out:
            path = os.path.join(workdir, label)
            if label != "worktree" and os.path.isdir(path) and not a.keep:
                with contextlib.suppress(subprocess.CalledProcessError):
                    git("worktree", "remove", "--force", path)

    first = revs[0][0]
    table = ["| workload | " + " | ".join(label for label, _, _ in revs) + " |",
             "|---|" + "---|" * len(revs)]
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for w in workloads:
        base = statistics.median(cells[first][w.name])
        row = [w.name]
        for label, _, _ in revs:
            vals = cells[label][w.name]
            med = statistics.median(vals)
            spread = (max(vals) - min(vals)) / 2 / med if med else 0.0
            ratio = med / base if base else 0.0
            summary.setdefault(label, {})[w.name] = {"median": round(med), "spread": round(spread, 4),
                                                      "ratio": round(ratio, 4)}
            cell = f"{med:,.0f} ±{spread * 100:.1f}%"
            row.append(cell if label == first else f"{cell} ({ratio:.3f})")
        table.append("| " + " | ".join(row) + " |")
    print("\n".join(table))
    result = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "db": a.db,
              "revisions": {label: rev for (label, _), rev in zip(checked_out, a.revisions, strict=True)},
              "credential": a.credential,
              "requests": a.requests, "warmup": a.warmup, "conc": a.conc, "round_count": a.rounds,
              "idle_s": a.idle,
              "median": summary, "rounds": cells, "rounds_detail": details}
    labels = "-".join(label for label, _ in checked_out) + ("" if a.credential == "majordomo-key"
                                                             else f"-{a.credential}")
    out = os.path.join(HERE, "results", f"instructions-{labels}-{a.db}.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    log(f"wrote {os.path.relpath(out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
