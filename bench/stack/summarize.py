"""Medians of results/http.jsonl as markdown tables (discarded/disturbed phases excluded).

Usage: python summarize.py [results/http.jsonl]
"""

from __future__ import annotations

import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "results", "http.jsonl")
    recs = [json.loads(line) for line in open(path)]
    recs = [r for r in recs if not r.get("discarded")]
    keys = []
    for r in recs:
        k = (r["server"], r["client"])
        if k not in keys:
            keys.append(k)
    phases = ["json_c32", "json_c1", "sse_c32"]
    print(
        "| server | client | "
        + " | ".join(f"{p}: CPU us/req | req/s | p50 ms | p99 ms" for p in phases)
        + " | n | disturbed |"
    )
    print("|---|---|" + "---:|---:|---:|---:|" * len(phases) + "---:|---:|")
    for k in keys:
        cells = []
        n = 0
        dist = 0
        for p in phases:
            rs = [r for r in recs if (r["server"], r["client"]) == k and r["phase"] == p]
            if not rs:
                cells.append("- | - | - | -")
                continue
            n = max(n, len(rs))
            dist += sum(1 for r in rs if r.get("clean") is False)

            def med(f, rs=rs):
                return statistics.median(r[f] for r in rs)

            cells.append(f"{med('cpu_us_per_req'):.0f} | {med('rps'):.0f} | {med('p50_ms'):.2f} | {med('p99_ms'):.2f}")
        print(f"| {k[0]} | {k[1]} | " + " | ".join(cells) + f" | {n} | {dist} |")
    print("\nspread (min-max CPU us/req over repetitions):")
    for k in keys:
        parts = []
        for p in phases:
            rs = [r["cpu_us_per_req"] for r in recs if (r["server"], r["client"]) == k and r["phase"] == p]
            if rs:
                parts.append(f"{p} {min(rs):.0f}-{max(rs):.0f}")
        print(f"  {k[0]:>15} {k[1]:>11}: " + ", ".join(parts))


if __name__ == "__main__":
    main()
