"""Overload: an open-loop (constant-rate, wrk2-style) load at 1x, 2x and 4x the gateway's saturation.

    .venv/bin/python bench/overload.py [--max-in-flight 128] [--repeat 10] [--workload openai_stream] [--dur 8]

What docs/reliability.md reports (about 3 minutes in all):

    bench/overload.py --repeat 10 --max-in-flight 128 --conc 64,96,120 --dur 6 --reps 2
    bench/overload.py --repeat 1 --max-in-flight 64 --conc 32,48,60 --dur 6
    bench/overload.py --repeat 10 --max-in-flight 1000000 --conc 64,96,120 --mults 2,4 --dur 6

Layout (as gateway_bench.py): the gateway is pinned to core 0; the load generator (this process),
the mock upstream (upstream.py, streams paced 1 ms per event) and the PostgreSQL backends that
serve the gateway are pinned to core 1.  The gateway's core is the bottleneck by construction.

1. Saturation: closed-loop connections at rising concurrency; the best goodput (200s with their
   whole body, per second) is the saturation throughput, and the p99 at that level the reference.
2. Open loop at 1x, 2x and 4x that rate: request i is due at start + i / rate whatever happened
   to the earlier ones.  It goes out on an idle keep-alive connection of a pre-opened pool (none
   idle: counted as not sent, the client's cap).  Latency is measured from the time it was due,
   so time spent queued on the client side counts (no coordinated omission).
3. Rows: every response (200 or 503) must have its row, per phase (``X-Majordomo-Bench-Phase``).

The client is raw asyncio on uvloop (a preformatted request, the response framed by
Content-Length or the chunked terminator), so that 4x the gateway's rate costs its core, not the
gateway's, as little as possible.  Results: bench/results/overload.json (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

import uvloop

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import canned  # noqa: E402
import gateway_bench as gb  # noqa: E402
import procstat as ps  # noqa: E402

UPSTREAM_PORT, GATEWAY_PORT = 18281, 18291
END_CHUNKED = b"0\r\n\r\n"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Conn(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.due = 0.0
        self.need: int | None = None  # body bytes still expected (Content-Length), None: chunked
        self.status = 0
        self.head_done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.lost(self)

    def send(self, request: bytes, due: float) -> None:
        self.due, self.head_done = due, False
        self.buf.clear()
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.head_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(buf[:end]).split(b"\r\n")
            self.status = int(lines[0][9:12])
            self.need = None
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    self.need = int(value)
            self.head_done = True
            del buf[:end + 4]
        if self.need is not None:
            if len(buf) < self.need:
                return
        elif not buf.endswith(END_CHUNKED):
            return
        self.client.done(self, self.status, self.due)


class Client:
    def __init__(self, port: int, request: bytes) -> None:
        self.port = port
        self.request = request
        self.idle: deque[Conn] = deque()
        self.results: list[tuple[float, float, int]] = []  # (due, latency s, status)
        self.pending = 0
        self.not_sent = 0
        self.errors = 0
        self.loop = asyncio.get_running_loop()
        self.on_done: asyncio.Future[None] | None = None
        self.closed_loop = False

    async def open(self, n: int) -> None:
        for _ in range(n):
            _, conn = await self.loop.create_connection(lambda: Conn(self), "127.0.0.1", self.port)
            self.idle.append(conn)

    def lost(self, conn: Conn) -> None:
        if conn.head_done or conn.due:
            self.errors += 1

    def done(self, conn: Conn, status: int, due: float) -> None:
        now = time.monotonic()
        self.results.append((due, now - due, status))
        self.pending -= 1
        conn.due = 0.0
        if self.closed_loop:
            self.pending += 1
            conn.send(self.request, now)
        else:
            self.idle.append(conn)

    def fire(self, due: float) -> None:
        if not self.idle:
            self.not_sent += 1
            return
        self.pending += 1
        self.idle.popleft().send(self.request, due)

    async def drain(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while self.pending and time.monotonic() < end:  # noqa: ASYNC110 (a bounded poll)
            await asyncio.sleep(0.05)


def request_bytes(w: canned.Workload, key: str, tag: str) -> bytes:
    body = w.body
    headers = {**w.headers, "Host": f"127.0.0.1:{GATEWAY_PORT}", "X-Majordomo-Key": key,
               "X-Majordomo-Feature": "overload", "X-Majordomo-Bench-Phase": tag,
               "Content-Length": str(len(body))}
    lines = [f"POST {w.path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def summary(results: list[tuple[float, float, int]], start: float, active: float) -> dict:
    ok = sorted(lat for due, lat, status in results if status == 200 and start <= due < start + active)
    refused = sum(1 for due, _, status in results if status == 503 and start <= due < start + active)
    other = sum(1 for due, _, status in results if status not in (200, 503) and start <= due < start + active)

    def pct(p: float) -> float | None:
        return round(ok[min(len(ok) - 1, int(p * len(ok)))] * 1000, 2) if ok else None

    return {"goodput_per_s": round(len(ok) / active, 1), "ok": len(ok), "refused_503": refused, "other": other,
            "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0)}


async def closed(port: int, request: bytes, conc: int, dur: float) -> dict:
    client = Client(port, request)
    await client.open(conc)
    client.closed_loop = True
    start = time.monotonic()
    for conn in list(client.idle):
        client.pending += 1
        conn.send(request, start)
    client.idle.clear()
    await asyncio.sleep(dur)
    client.closed_loop = False
    await client.drain(15)
    out = summary(client.results, start, dur) | {"concurrency": conc, "sent": len(client.results)}
    _close(client)
    return out


async def open_loop(port: int, request: bytes, rate: float, dur: float, pool: int,
                    cpu: Callable[[], float]) -> dict:
    client = Client(port, request)
    await client.open(pool)
    await asyncio.sleep(1)  # the gateway's accepts of the whole pool are not part of the phase
    start = time.monotonic()
    cpu0 = cpu()
    total = int(rate * dur)
    i = 0
    while i < total:
        now = time.monotonic()
        # Everything due by now goes out now (timers tick in ~1 ms), each stamped with its due time.
        while i < total and start + i / rate <= now:
            client.fire(start + i / rate)
            i += 1
        await asyncio.sleep(0.0005)
    cpu1 = cpu()
    await client.drain(15)
    out = summary(client.results, start, dur) | {"gateway_cpu_s": cpu1 - cpu0,
        "offered_per_s": round(rate, 1), "sent": len(client.results) + client.pending, "answered": len(client.results),
        "unanswered": client.pending, "not_sent_client_cap": client.not_sent, "connection_errors": client.errors}
    _close(client)
    return out


def _close(client: Client) -> None:
    for conn in client.idle:
        if conn.transport is not None:
            conn.transport.close()


def rows_by_phase(store: gb.Store) -> dict[str, int]:
    return {tag: c["rows"] for tag, c in store.counts().items()}


async def run(a: argparse.Namespace, gw: gb.Gateway, store: gb.Store, res: dict) -> None:
    w = canned.WORKLOADS[a.workload]
    answered: dict[str, int] = {}
    # Warm up (the key cache, the upstream pool, PostgreSQL's backends, which are pinned after).
    await closed(gw.port, request_bytes(w, gw.key, "warmup"), 32, 2)
    # Store's helpers run their own event loop: in a thread, off this one.
    ps.pin(await asyncio.to_thread(store.backend_pids), "1")
    steps = []
    for conc in a.conc:
        tag = f"closed-c{conc}"
        c0 = ps.cpu_seconds(gw.pids)
        r = await closed(gw.port, request_bytes(w, gw.key, tag), conc, a.sat_dur)
        r["gateway_cpu_us_per_answer"] = round((ps.cpu_seconds(gw.pids) - c0) / max(1, r["sent"]) * 1e6, 1)
        answered[tag] = r["sent"]
        steps.append(r)
        log(f"  closed c{conc}: {r['goodput_per_s']:.0f}/s p50 {r['p50_ms']} p99 {r['p99_ms']} ms "
            f"503 {r['refused_503']}")
    best = max(steps, key=lambda r: r["goodput_per_s"])
    sat = best["goodput_per_s"]
    res["saturation"] = {"steps": steps, "per_s": sat, "p99_ms": best["p99_ms"], "at_concurrency": best["concurrency"]}
    res["runs"] = []
    for rep in range(a.reps):
        for mult in a.mults:
            tag = f"open-x{mult}-r{rep}"
            r = await open_loop(gw.port, request_bytes(w, gw.key, tag), sat * mult, a.dur, a.pool,
                                lambda: ps.cpu_seconds(gw.pids))
            cpu = r.pop("gateway_cpu_s")
            answered[tag] = r["answered"]
            r.update(multiple=mult, rep=rep, goodput_of_saturation=round(r["goodput_per_s"] / sat, 3),
                     p99_of_saturation=round(r["p99_ms"] / best["p99_ms"], 2) if r["p99_ms"] else None,
                     gateway_cores=round(cpu / a.dur, 2),
                     gateway_cpu_us_per_answer=round(cpu / max(1, r["ok"] + r["refused_503"]) * 1e6, 1))
            res["runs"].append(r)
            log(f"  open x{mult}: offered {r['offered_per_s']:.0f}/s goodput {r['goodput_per_s']:.0f}/s "
                f"({r['goodput_of_saturation']:.0%}) p99 {r['p99_ms']} ms ({r['p99_of_saturation']}x) "
                f"503 {r['refused_503']} not sent {r['not_sent_client_cap']} unanswered {r['unanswered']}")
            await asyncio.sleep(1)
    deadline = time.time() + 30
    while time.time() < deadline:
        rows = await asyncio.to_thread(rows_by_phase, store)
        if all(rows.get(t, 0) >= n for t, n in answered.items()):
            break
        await asyncio.sleep(0.5)
    res["rows"] = {t: {"answered": n, "rows": rows.get(t, 0)} for t, n in answered.items()}
    # Where the time goes: the row's response_time_ms runs from the app's first line to the last
    # byte; the client's latency minus that is queueing before the app (kernel, uvicorn, the loop).
    for r in res["runs"]:
        tag = f"open-x{r['multiple']}-r{r['rep']}"
        found = await asyncio.to_thread(gb.pg, "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY response_time_ms), "
                                        "percentile_cont(0.99) WITHIN GROUP (ORDER BY response_time_ms) "
                                        "FROM llm_requests WHERE raw_metadata->>'Bench-Phase' = $1 "
                                        "AND status_code = 200", tag, database=store.name)
        r["in_app_p50_ms"], r["in_app_p99_ms"] = (round(v, 2) if v is not None else None for v in found[0])
    res["rows_match"] = all(rows.get(t, 0) == n for t, n in answered.items())
    log(f"  rows == answers in every phase: {res['rows_match']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default="openai_stream", choices=sorted(canned.WORKLOADS))
    ap.add_argument("--max-in-flight", type=int, default=None, help="proxy.max_in_flight (default: the gateway's)")
    ap.add_argument("--conc", default="32,64,128", help="closed-loop concurrency levels for the saturation")
    ap.add_argument("--sat-dur", type=float, default=4)
    ap.add_argument("--mults", default="1,2,4")
    ap.add_argument("--dur", type=float, default=8, help="seconds per open-loop phase")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--pool", type=int, default=2000, help="client connections for the open loop")
    ap.add_argument("--repeat", type=int, default=1,
                    help="stream length: upstream.py sends each content event this many times (~18 x N + 3 events)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "overload.json"))
    a = ap.parse_args()
    a.conc = [int(c) for c in a.conc.split(",")]
    a.mults = [float(m) if "." in m else int(m) for m in a.mults.split(",")]
    missing = gb.pg_available()
    if missing:
        raise SystemExit(f"PostgreSQL on 127.0.0.1:5432 is needed: {missing}")
    if a.max_in_flight is not None:
        gb.GATEWAY_ENV["MAJORDOMO_PROXY_MAX_IN_FLIGHT"] = str(a.max_in_flight)
    for port in (UPSTREAM_PORT, GATEWAY_PORT):
        if not ps.port_free(port):
            raise SystemExit(f"port {port} is in use")
    ps.pin([os.getpid()], "1")
    # The pool, the gateway's side of it and the upstream's: several thousand descriptors.
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    workdir = tempfile.mkdtemp(prefix="majordomo-overload-")
    upstream = ps.start([gb.PY, os.path.join(HERE, "upstream.py"), str(UPSTREAM_PORT), "--gap-ms", "1",
                         "--repeat", str(a.repeat)], "1",
                        log=os.path.join(workdir, "upstream.log"))
    store = gb.Store("pg", f"majordomo_overload_{os.getpid()}", workdir)
    gw = None
    res: dict = {"generated": datetime.now(UTC).isoformat(timespec="seconds"), "machine": ps.machine(),
                 "config": {k: getattr(a, k) for k in ("workload", "max_in_flight", "conc", "sat_dur", "mults",
                                                      "dur", "reps", "pool", "repeat")}}
    t0 = time.time()
    try:
        ps.wait_port(UPSTREAM_PORT)
        gw = gb.Gateway(store, UPSTREAM_PORT, GATEWAY_PORT, workdir, "overload")
        b0 = ps.core_busy()
        uvloop.run(run(a, gw, store, res))
        b1 = ps.core_busy()
        res["cores_busy"] = {c: round((b1[c] - b0[c]) / (time.time() - t0), 2) for c in b1}
    finally:
        if gw is not None:
            gw.stop()
        ps.stop(upstream, timeout=5)
        store.drop()
    res["duration_s"] = round(time.time() - t0)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    log(f"results: {a.out} ({res['duration_s']} s)")
    return 0 if res.get("rows_match") else 1


if __name__ == "__main__":
    sys.exit(main())
