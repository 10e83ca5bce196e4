"""Markdown tables from a results JSON (bench/results/gateway.json), and their place in
docs/performance.md: everything between the ``<!-- bench:begin -->`` and ``<!-- bench:end -->``
markers is regenerated, the prose around it is kept.

    python bench/report.py [bench/results/gateway.json] [--write-docs]
"""

from __future__ import annotations

import json
import os
import sys

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
NAMES = {"direct": "direct", "pg": "gateway, PostgreSQL", "sqlite": "gateway, SQLite"}
_ORDER = {"direct": 0, "pg": 1, "sqlite": 2}  # row order of the targets in a table


def _f(v, digits=3, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}{unit}"
    return f"{v}{unit}"


def _signed(v, digits=3):
    return "-" if v is None else f"{v:+.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def tables(res: dict) -> str:
    cells = res.get("summary", {}).get("cells", [])
    workloads: list[str] = []
    for c in cells:
        if c["workload"] not in workloads:
            workloads.append(c["workload"])
    parts = _intro(res, cells)
    parts += _targets(res)
    parts += _closed(cells, workloads)
    parts += _paced(res, cells, workloads)
    for section in (_ttfb, _open_streams, _workers, _gc, _rows, _profile):
        parts += section(res)
    return "\n\n".join(parts) + "\n"


def _intro(res: dict, cells: list[dict]) -> list[str]:
    m, v, cfg = res["machine"], res["versions"], res["config"]
    parts: list[str] = [
        f"Run {res['generated']} ({'quick' if res['quick'] else 'full'}, {res.get('duration_s', '?')} s, "
        f"commit {v.get('git', '?')}): {m['nproc']} cores, {m['cpu_model']}, {m['mem_gib']} GiB, "
        f"Linux {m['kernel']}; Python {v.get('python')}, uvicorn {v.get('uvicorn')}, uvloop {v.get('uvloop')}, "
        f"httptools {v.get('httptools')}, asyncpg {v.get('asyncpg')}, "
        f"PostgreSQL {v.get('postgresql', '-').split(' ')[0]}, {' '.join(v.get('wrk', 'wrk').split()[:2])}, "
        f"{v.get('nginx', 'nginx').removeprefix('nginx version: ')}.  "
        f"{cfg['reps']} repetitions of {cfg['dur']} s phases (medians shown), streams of {cfg['chunks']} events "
        f"{cfg['sse_gap_ms']} ms apart; {res.get('disturbed_phases', 0)} phases stayed disturbed by other load "
        f"after re-runs.",
    ]
    for note in res.get("notes", []):
        parts.append(f"Note: {note}.")
    extra, softs = [], []
    for kind, label in (("json", "non-streaming request"), ("stream", "stream")):
        soft = [c["softirq_core0_us_per_req"] for c in cells if c["kind"] == "closed" and c["target"] == "pg"
                and c["workload"].endswith(kind) and c.get("softirq_core0_us_per_req") is not None
                and (c.get("cpu_util") or 0) >= 0.95]
        if soft:
            softs.append(f"{min(soft):.0f}-{max(soft):.0f} µs per {label}")
    if softs:
        extra.append("Kernel TCP work on the gateway's core that /proc charges to no process (softirq), not "
                     f"included in \"gateway CPU\": {' and '.join(softs)} at saturation.")
    if res.get("idle_cpu_ms_per_s"):
        idle = res["idle_cpu_ms_per_s"]
        extra.append(f"An idle gateway uses {min(idle.values()):.1f}-{max(idle.values()):.1f} ms of CPU per second "
                     "(the writer's timers).")
    if extra:
        parts.append(" ".join(extra))
    return parts


def _targets(res: dict) -> list[str]:
    parts: list[str] = []
    if res.get("targets"):
        rows = [[t["target"], t["goal"], t["measured"],
                 {True: "**met**", False: "**not met**", None: "see below"}[t["met"]]] for t in res["targets"]]
        parts.append("### Targets\n\n" + _table(["target", "goal", "measured", ""], rows))
    return parts


def _closed(cells: list[dict], workloads: list[str]) -> list[str]:
    parts: list[str] = []
    for wname in workloads:
        rows = []
        for c in sorted((c for c in cells if c["kind"] == "closed" and c["workload"] == wname),
                        key=lambda c: (_ORDER.get(c["target"], 9), c["conc"])):
            gw = c["target"] != "direct"
            rows.append([NAMES.get(c["target"], c["target"]), str(c["conc"]), _f(c["rps"], 0), _f(c["p50_ms"]),
                         _f(c["p99_ms"]), _signed(c.get("added_p50_ms")) if gw else "", _signed(c.get("added_p99_ms"))
                         if gw else "", _f(c["cpu_us_per_req"] / 1000, 3) if gw else "",
                         _f(c["cpu_util"], 2) if gw else "",
                         _f(c["upstream_cpu_us_per_req"], 0), _f(c["db_cpu_us_per_req"], 0) if c["target"] == "pg"
                         else "", _f(c["hwm_mb"], 0) if gw else "", str(c["errors"])])
        parts.append(f"### {wname}: closed loop (each connection sends its next request when the last one ends)\n\n"
                     + _table(["target", "conns", "req/s", "p50 ms", "p99 ms", "added p50 ms", "added p99 ms",
                               "gateway CPU ms/req", "gateway cores busy", "upstream CPU µs/req",
                               "PostgreSQL CPU µs/req", "gateway VmHWM MB", "errors"], rows))
    return parts


def _paced(res: dict, cells: list[dict], workloads: list[str]) -> list[str]:
    parts: list[str] = []
    cfg = res["config"]
    paced = [c for c in cells if c["kind"] == "paced"]
    if paced:
        rows = []
        for c in sorted(paced, key=lambda c: (workloads.index(c["workload"]), _ORDER.get(c["target"], 9))):
            gw = c["target"] != "direct"
            rows.append([c["workload"], NAMES.get(c["target"], c["target"]), _f(c["rps"], 0),
                         f"{c['rps'] / c['saturation_rps'] * 100:.0f}%" if c.get("saturation_rps") else "-",
                         _f(c["p50_ms"]), _f(c["p99_ms"]), _signed(c.get("added_p50_ms")) if gw else "",
                         _signed(c.get("added_p99_ms")) if gw else "",
                         _f(c["cpu_us_per_req"] / 1000, 3) if gw else ""])
        parts.append(f"### Latency at half of saturation ({cfg['paced_conc']} connections with random think time, "
                     "aimed at half the PostgreSQL gateway's best closed-loop req/s)\n\n"
                     + _table(["workload", "target", "req/s", "of saturation", "p50 ms", "p99 ms", "added p50 ms",
                               "added p99 ms", "gateway CPU ms/req"], rows))
    return parts


def _ttfb(res: dict) -> list[str]:
    parts: list[str] = []
    if res.get("ttfb"):
        rows = []
        for k, s in res["ttfb"].items():
            d, g = s["direct"], s["gateway"]
            rows.append([k, _f(d["head_p50_ms"]), _f(g["head_p50_ms"]), _f(d["first_event_p50_ms"]),
                         _f(g["first_event_p50_ms"]), _signed(s["added_first_event_p50_ms"]),
                         _f(d["first_event_p99_ms"]), _f(g["first_event_p99_ms"]),
                         _signed(s["added_first_event_p99_ms"]), str(g["completed"])])
        parts.append("### First byte of a stream (request written → response head / first `data:` event)\n\n"
                     + _table(["gateway/workload/conns", "head p50 direct", "head p50 gateway",
                               "first event p50 direct", "first event p50 gateway", "added p50", "p99 direct",
                               "p99 gateway", "added p99", "streams"], rows))
    return parts


def _open_streams(res: dict) -> list[str]:
    parts: list[str] = []
    o = res.get("open_streams")
    if o:
        parts.append("### Open streams\n\n" + _table(
            ["streams", "event gap", "RSS idle MB", "RSS, all open MB", "VmHWM MB", "completed", "errors",
             "all open after", "all open for"],
            [[str(o["n"]), f"{o['gap_ms']:g} ms", _f(o["rss_idle_mb"], 1), _f(o["rss_all_open_max_mb"], 1),
              _f(o["hwm_mb"], 1), str(o["completed"]), str(o["errors"]), _f(o["open_all_after_s"], 1, " s"),
              _f(o["all_open_for_s"], 1, " s")]]))
    return parts


def _workers(res: dict) -> list[str]:
    parts: list[str] = []
    wk = res.get("workers")
    if wk and "workers1" in wk:
        rows = [[str(n), _f(wk[f"workers{n}"]["rps"], 0), _f(wk[f"workers{n}"]["p50_ms"]),
                 _f(wk[f"workers{n}"]["p99_ms"]), _f(wk[f"workers{n}"]["gateway_cores"], 2),
                 _f(wk[f"workers{n}"]["cpu_us_per_req"] / 1000, 3), _f(wk[f"workers{n}"]["machine_busy_cores"], 2)]
                for n in (1, 2)]
        parts.append(f"### `--workers` 1 vs 2 (openai_json, 64 connections, PostgreSQL; gateway, wrk and nginx all "
                     f"on both cores): {wk['speedup']:.2f}x\n\n"
                     + _table(["workers", "req/s", "p50 ms", "p99 ms", "gateway cores used", "gateway CPU ms/req",
                               "machine cores busy"], rows))
    return parts


def _gc(res: dict) -> list[str]:
    parts: list[str] = []
    gc = res.get("gc")
    if gc:
        rows = []
        for label, gens in gc["gateways"].items():
            for gen, s in gens.items():
                rows.append([label, gen, str(s["count"]), _f(s["total_ms"], 1), _f(s["max_ms"], 2), str(s["over_5ms"])])
        title = "--gc-probe" + (", with gc.freeze()" if gc["freeze"] else "")
        parts.append(f"### Garbage-collector pauses during the repetitions ({title})\n\n"
                     + _table(["gateway", "generation", "collections", "total ms", "longest ms", "over 5 ms"], rows))
    return parts


def _rows(res: dict) -> list[str]:
    parts: list[str] = []
    if res.get("rows"):
        rows = [[k, NAMES.get(r["target"], r["target"]), str(r["phases"]), str(r["requests"]), str(r["rows"]),
                 "yes" if r["match"] else "**NO**", str(r["usage_reported"]), str(r["aborted"]), str(r["non200"])]
                for k, r in res["rows"].items()]
        parts.append("### Rows written vs requests served (every wrk phase, warm-ups and re-runs included)\n\n"
                     + _table(["database", "target", "phases", "requests", "rows", "equal", "usage reported",
                               "aborted", "non-200"], rows))
    return parts


def _profile(res: dict) -> list[str]:
    parts: list[str] = []
    prof = res.get("profile") or {}
    for wname, p in prof.items():
        if not isinstance(p, dict) or not p.get("samples"):
            continue
        rows = [[b["where"], f"{b['share'] * 100:.1f}%", _f(b["us_per_req"], 1)] for b in p["buckets"][:12]]
        lines = [[f"`{x['where']}`", f"{x['share'] * 100:.1f}%", _f(x["us_per_req"], 1)]
                 for x in p["gateway_lines"][:15]]
        parts.append(f"### Profile: {wname}, {p['conc']} connections, {p['rps']:.0f} req/s, "
                     f"{p['cpu_us_per_req']:.0f} µs CPU/request ({p['samples']} py-spy samples)\n\n"
                     + "Where the CPU was (innermost frame):\n\n"
                     + _table(["where", "share", "µs/request"], rows)
                     + "\n\nGateway lines, inclusive (everything called from that line):\n\n"
                     + _table(["file:line", "share", "µs/request"], lines))
    return parts


def write_docs(res: dict, path: str) -> None:
    body = f"{BEGIN}\n<!-- generated by bench/report.py from bench/results/gateway.json: do not edit by hand -->\n\n" \
           f"{tables(res)}\n{END}"
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
        if BEGIN in text and END in text:
            text = text[: text.index(BEGIN)] + body + text[text.index(END) + len(END):]
        else:
            text = text.rstrip("\n") + "\n\n## Results\n\n" + body + "\n"
    else:
        text = "# Performance\n\n## Results\n\n" + body + "\n"
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    src = args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "gateway.json")
    with open(src) as f:
        data = json.load(f)
    if "--write-docs" in sys.argv:
        write_docs(data, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                                      "performance.md"))
    print(tables(data))
