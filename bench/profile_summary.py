"""Where the gateway's CPU goes, from a py-spy ``--format raw`` profile (collapsed stacks).

py-spy (in its default, blocking mode) samples every thread, waiting ones included: samples whose
innermost frame is a thread pool worker waiting for work (or another known wait) are dropped as
idle.  What is left is a frame's share of the process's CPU time (the event loop thread is never
idle at saturation, when these profiles are taken); multiplied by the CPU per request measured
over the same window, it becomes microseconds per request.  Three views:

- ``gateway_lines``: for every line of majordomo_gateway code, the time spent under it
  (inclusive: what it calls is included), e.g. ``proxy/handler.py:230`` = the upstream request.
- ``buckets``: the leaf frame's package (where the CPU actually was): the gateway's own code,
  uvicorn, aiohttp, asyncio, asyncpg, the event loop and kernel I/O (samples whose innermost
  Python frame is the loop itself: uvloop and syscalls have no Python frame of their own), ...

    python profile_summary.py PROFILE.txt CPU_US_PER_REQUEST [REQUESTS]
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter

# Innermost frames of a thread that waits (blocking sampling cannot tell it from one that runs).
_IDLE_LEAVES = (("_worker", "concurrent/futures/thread.py"), ("wait", "threading.py"), ("get", "queue.py"),
                ("_wait_for_tstate_lock", "threading.py"), ("select", "selectors.py"))
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_PKG = "majordomo_gateway/"


def _parse(frame: str) -> tuple[str, str, int | None]:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip(), "", None
    return m.group("func"), m.group("file"), int(m.group("line")) if m.group("line") else None


def _short(path: str) -> str:
    for marker in ("site-packages/", "lib/python3", _PKG):
        i = path.find(marker)
        if i >= 0:
            rest = path[i + len(marker):]
            return rest.split("/", 1)[1] if marker == "lib/python3" and "/" in rest else rest
    return path


def _bucket(func: str, file: str) -> str:
    if _PKG in file:
        sub = file.split(_PKG, 1)[1]
        return "gateway: " + sub.split("/")[0].removesuffix(".py")
    for name in ("uvicorn", "aiohttp", "asyncpg", "yarl", "multidict", "orjson", "uuid_utils", "httptools"):
        if f"/{name}/" in file or file.startswith(f"{name}/"):
            return name
    if "asyncio/" in file:
        if func.rsplit(".", 1)[-1] in ("run", "run_until_complete", "run_forever", "_run_once", "serve", "main"):
            return "event loop + kernel I/O (no Python frame)"
        return "asyncio"
    if file.endswith(("sqlite3/__init__.py", "sqlite3/dbapi2.py")) or "sqlite" in func.lower():
        return "sqlite3"
    if "threading.py" in file or "concurrent/futures" in file:
        return "threads (executor)"
    if file == "" or "<" in file or ".so" in file or ("lib" in file and ".py" not in file):
        return "native"
    return "other Python (" + _short(file).split("/")[0] + ")"


def summarize(path: str, cpu_us_per_req: float, requests: int | None = None, top: int = 25) -> dict:
    total = idle = 0
    leaf_lines: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    gw_lines: Counter[str] = Counter()
    gw_funcs: Counter[str] = Counter()
    with open(path) as f:
        for raw in f:
            raw = raw.rstrip("\n")
            if not raw:
                continue
            stack, _, count = raw.rpartition(" ")
            n = int(count)
            frames = [_parse(fr) for fr in stack.split(";") if fr]
            if not frames:
                continue
            func, file, line = frames[-1]
            if any(func.rsplit(".", 1)[-1] == f and file.endswith(path) for f, path in _IDLE_LEAVES):
                idle += n
                continue
            total += n
            leaf_lines[f"{func} ({_short(file)}:{line})"] += n
            buckets[_bucket(func, file)] += n
            seen_l, seen_f = set(), set()
            for fn, fl, ln in frames:
                if _PKG in fl and "/cli/" not in fl:  # cli/: serve.run, an ancestor of everything
                    key_l = f"{_short(fl)}:{ln} in {fn}"
                    key_f = f"{_short(fl)} {fn}"
                    if key_l not in seen_l:
                        seen_l.add(key_l)
                        gw_lines[key_l] += n
                    if key_f not in seen_f:
                        seen_f.add(key_f)
                        gw_funcs[key_f] += n
    if total == 0:
        return {"samples": 0}

    def table(counter: Counter[str], k: int) -> list[dict]:
        return [{"where": name, "share": round(c / total, 4), "us_per_req": round(c / total * cpu_us_per_req, 1)}
                for name, c in counter.most_common(k)]

    return {"samples": total, "idle_samples_dropped": idle, "requests": requests, "buckets": table(buckets, 20),
            "gateway_functions": table(gw_funcs, top), "gateway_lines": table(gw_lines, top),
            "leaf_lines": table(leaf_lines, top)}


if __name__ == "__main__":
    res = summarize(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None)
    print(json.dumps(res, indent=1))
