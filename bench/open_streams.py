"""Hold N streams open through the gateway at once (the memory test).

Opens N connections (in batches of 100), sends one streamed request on each with
``?gap_ms=G`` so the upstream sends an event every G ms (20 events + the usage event), and
reads every stream to its end.  Writes a JSON file with the wall-clock times at which all N
streams had delivered their first event (``t_all_open``) and at which the first one ended
(``t_first_done``): between the two, all N are open, and the driver samples the gateway's RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import uvloop

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import canned
from ttfb import request_bytes


async def run(a: argparse.Namespace) -> dict:
    w = canned.WORKLOADS[a.workload]
    req = request_bytes(w, a.port, a.key, a.tag).replace(
        f"POST {w.path} ".encode(), f"POST {w.path}?gap_ms={a.gap_ms:g} ".encode(), 1)
    state = {"first": 0, "done": 0, "errors": 0, "t_all_open": None, "t_first_done": None}
    all_open = asyncio.Event()

    async def stream() -> None:
        writer = None
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head[:100])
            seen = False
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
                if not seen:
                    seen = True
                    state["first"] += 1
                    if state["first"] == a.n:
                        state["t_all_open"] = time.time()
                        all_open.set()
            state["done"] += 1
            if state["t_first_done"] is None:
                state["t_first_done"] = time.time()
        except Exception as exc:
            state["errors"] += 1
            state.setdefault("error", repr(exc)[:200])
        finally:
            if writer is not None:
                writer.close()

    t0 = time.time()
    tasks = []
    for i in range(a.n):
        tasks.append(asyncio.create_task(stream()))
        if i % 100 == 99:
            await asyncio.sleep(0.05)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=a.timeout)
    return {"n": a.n, "gap_ms": a.gap_ms, "workload": a.workload, "completed": state["done"],
            "errors": state["errors"], "error": state.get("error"), "t_start": t0,
            "t_all_open": state["t_all_open"], "t_first_done": state["t_first_done"],
            "open_all_after_s": round(state["t_all_open"] - t0, 2) if state["t_all_open"] else None,
            "all_open_for_s": round(state["t_first_done"] - state["t_all_open"], 2)
            if state["t_all_open"] and state["t_first_done"] else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--gap-ms", type=float, default=500)
    ap.add_argument("--workload", default="openai_stream")
    ap.add_argument("--timeout", type=float, default=100)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    uvloop.install()
    res = asyncio.run(run(a))
    with open(a.out, "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    main()
