"""Before/after: the same benchmark against two revisions of the gateway, interleaved.

    bash bench/run.sh compare ec8ccd5 HEAD            # 3 rounds of A then B, PostgreSQL target
    bash bench/run.sh compare main WORKTREE --rounds 2 # WORKTREE = this checkout, uncommitted changes included
    bash bench/run.sh compare A B -- --conc 1,64       # anything after -- goes to every gateway_bench.py run

A feature that touches the request path states its cost as "before vs after" (docs/performance.md).
Two full runs made an hour apart on a shared machine differ by more than the 5 % such a statement
is about, so this runs the two revisions in alternation (A B A B ...) with one harness, this
checkout's bench/, and takes each cell's median over the rounds.  Drift of the machine then lands on
both sides alike.

Each revision is checked out with `git worktree add --detach` under the work directory and put
first on the gateway processes' PYTHONPATH, which shadows the editable install of .venv: same
interpreter, same dependencies, only the gateway's own code differs.  The harness reads the
MAJORDOMO_* environment names of the current code; a revision older than those names cannot be
compared this way.

Output: a Markdown table on stdout and bench/results/compare-<A>-<B>.json (medians and every
round's figures).  Ratios are B/A: 1.03 means B costs 3 % more.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKTREE = "WORKTREE"
# The cells that carry the verdict: CPU per request at each closed-loop level, p99 at half load.
DEFAULT_ARGS = ["--targets", "direct,pg", "--conc", "1,32,64", "--reps", "1",
                "--skip", "ttfb,open,workers,profile", "--no-docs"]


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", ROOT, *args], check=True, capture_output=True, text=True).stdout.strip()


def checkout(rev: str, workdir: str) -> tuple[str, str]:
    """(label, gateway source directory) of a revision; WORKTREE is this checkout as it is."""
    if rev == WORKTREE:
        return "worktree", os.path.join(ROOT, "gateway", "src")
    sha = git("rev-parse", "--short", rev)
    path = os.path.join(workdir, sha)
    if not os.path.isdir(path):
        git("worktree", "add", "--detach", path, sha)
    return sha, os.path.join(path, "gateway", "src")


def run_once(src: str, out: str, extra: list[str], py_spy: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, os.path.join(HERE, "gateway_bench.py"), *DEFAULT_ARGS, *extra, "--out", out]
    if py_spy:
        cmd += ["--py-spy", py_spy]
    subprocess.run(cmd, check=True, env=env)
    with open(out) as f:
        return json.load(f)


def cells(result: dict) -> dict[str, dict]:
    """The gateway's cells by name (kind/workload/cN), PostgreSQL target."""
    return {f"{c['kind']}/{c['workload']}/c{c['conc']}": c
            for c in result["summary"]["cells"] if c["target"] == "pg"}


def median_of(runs: list[dict], name: str, field: str) -> float | None:
    values = [cells(r)[name].get(field) for r in runs if name in cells(r)]
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 4) if values else None


def summarize(label_a: str, runs_a: list[dict], label_b: str, runs_b: list[dict]) -> dict:
    names = sorted(set(cells(runs_a[0])) & set(cells(runs_b[0])))
    rows = []
    for name in names:
        row: dict = {"cell": name}
        for field in ("cpu_us_per_req", "p99_ms", "added_p99_ms", "rps"):
            a, b = median_of(runs_a, name, field), median_of(runs_b, name, field)
            row[field] = {label_a: a, label_b: b, "ratio": round(b / a, 3) if a and b else None}
        rows.append(row)
    return {"a": label_a, "b": label_b, "rounds": len(runs_a), "cells": rows}


def markdown(summary: dict) -> str:
    a, b = summary["a"], summary["b"]
    lines = [f"| cell (PostgreSQL) | CPU µs/req {a} | {b} | ratio | p99 ms {a} | {b} | ratio |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in summary["cells"]:
        cpu, p99 = row["cpu_us_per_req"], row["p99_ms"]
        lines.append(f"| {row['cell']} | {cpu[a]} | {cpu[b]} | {cpu['ratio']} | {p99[a]} | {p99[b]} | {p99['ratio']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rev_a", help="the 'before' revision (any git revision, or WORKTREE)")
    ap.add_argument("rev_b", help="the 'after' revision (any git revision, or WORKTREE)")
    ap.add_argument("--rounds", type=int, default=3, help="how many times each revision runs (default 3)")
    ap.add_argument("--py-spy", default="")
    a = ap.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="majordomo-compare-")
    try:
        label_a, src_a = checkout(a.rev_a, workdir)
        label_b, src_b = checkout(a.rev_b, workdir)
        runs: dict[str, list[dict]] = {label_a: [], label_b: []}
        for i in range(a.rounds):
            for label, src in ((label_a, src_a), (label_b, src_b)):
                print(f"compare: round {i + 1}/{a.rounds}, {label}", file=sys.stderr, flush=True)
                out = os.path.join(workdir, f"{label}-{i}.json")
                runs[label].append(run_once(src, out, extra, a.py_spy))
        summary = summarize(label_a, runs[label_a], label_b, runs[label_b])
        summary |= {"generated": datetime.now(UTC).isoformat(timespec="seconds"),
                    "args": DEFAULT_ARGS + extra,
                    "runs": {k: [list(cells(r).values()) for r in v] for k, v in runs.items()}}
        dest = os.path.join(HERE, "results", f"compare-{label_a}-{label_b}.json")
        with open(dest, "w") as f:
            json.dump(summary, f, indent=1)
        print(markdown(summary))
        print(f"\n(written to {os.path.relpath(dest, ROOT)})")
    finally:
        for sub in os.listdir(workdir):
            path = os.path.join(workdir, sub)
            if os.path.isdir(path):
                subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", path], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
