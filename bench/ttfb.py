"""First-byte latency of streams, direct vs through the gateway, requests interleaved.

For each request: time from writing the request to the response head (status line and headers),
and to the first SSE event (the first body chunk carrying ``data:``), and to the end of the
stream.  ``--conc`` keep-alive connections per target work in lockstep pairs: request i goes to
the direct upstream and to the gateway one after the other (which one first alternates), so
both see the same machine state.  The upstream sends its head at once and the first event 1 ms
later.

Prints one JSON line: {"workloads": {name: {"direct": {...}, "gateway": {...},
"added_first_event_p50_ms": ...}}}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time

import uvloop

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import canned


def request_bytes(w: canned.Workload, port: int, key: str, tag: str) -> bytes:
    headers = {**w.headers, "Host": f"127.0.0.1:{port}", "Content-Length": str(len(w.body)),
               "X-Majordomo-Key": key, "X-Majordomo-Feature": "bench", "X-Majordomo-Bench-Phase": tag}
    head = f"POST {w.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode() + w.body


async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    t_head = time.perf_counter() - t0
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected answer: {head[:200]!r}")
    if b"chunked" not in head.lower():
        raise RuntimeError("expected a chunked stream")
    t_first = None
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        data = await reader.readexactly(size + 2)
        if size == 0:
            break
        if t_first is None and b"data:" in data:
            t_first = time.perf_counter() - t0
    return t_head, t_first if t_first is not None else float("nan"), time.perf_counter() - t0


def stats(samples: list[tuple[float, float, float]]) -> dict:
    def pct(vals: list[float], p: float) -> float:
        vals = sorted(vals)
        return vals[min(len(vals) - 1, int(p / 100 * len(vals)))] * 1000

    out = {"completed": len(samples)}
    for i, name in enumerate(("head", "first_event", "end")):
        vals = [s[i] for s in samples]
        out[f"{name}_p50_ms"] = round(statistics.median(vals) * 1000, 4)
        out[f"{name}_p90_ms"] = round(pct(vals, 90), 4)
        out[f"{name}_p99_ms"] = round(pct(vals, 99), 4)
    return out


async def run(a: argparse.Namespace) -> dict:
    out = {}
    for wname in a.workloads:
        w = canned.WORKLOADS[wname]
        reqs = {"direct": request_bytes(w, a.direct_port, "direct", a.tag),
                "gateway": request_bytes(w, a.gateway_port, a.key, a.tag)}
        samples: dict[str, list] = {"direct": [], "gateway": []}
        per_worker = a.n // a.conc

        async def worker(idx: int, reqs=reqs, samples=samples, per_worker=per_worker) -> None:
            conns = {}
            for name, port in (("direct", a.direct_port), ("gateway", a.gateway_port)):
                conns[name] = await asyncio.open_connection("127.0.0.1", port)
            try:
                for name in ("direct", "gateway"):  # warm the connection (not recorded)
                    await one(*conns[name], reqs[name])
                for i in range(per_worker):
                    order = ("direct", "gateway") if (i + idx) % 2 == 0 else ("gateway", "direct")
                    for name in order:
                        samples[name].append(await one(*conns[name], reqs[name]))
            finally:
                for _, wr in conns.values():
                    wr.close()

        await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(a.conc))), timeout=300)
        d, g = stats(samples["direct"]), stats(samples["gateway"])
        g["completed"] += a.conc  # the warm-up request of each connection has a row too
        out[wname] = {"direct": d, "gateway": g,
                      "added_head_p50_ms": round(g["head_p50_ms"] - d["head_p50_ms"], 4),
                      "added_first_event_p50_ms": round(g["first_event_p50_ms"] - d["first_event_p50_ms"], 4),
                      "added_first_event_p99_ms": round(g["first_event_p99_ms"] - d["first_event_p99_ms"], 4)}
    return {"workloads": out}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--direct-port", type=int, required=True)
    ap.add_argument("--gateway-port", type=int, required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--conc", type=int, default=1)
    ap.add_argument("--workloads", nargs="+", default=["openai_stream", "anthropic_stream"])
    a = ap.parse_args()
    uvloop.install()
    print(json.dumps(asyncio.run(run(a))), flush=True)


if __name__ == "__main__":
    main()
