"""What prometheus-client's own multiprocess mode would cost per request, for comparison with
metrics/process.py: the same series (requests, five token types, cost, three histograms), each
sample written to the mmapped files of PROMETHEUS_MULTIPROC_DIR as it happens.

    .venv/bin/python bench/prometheus_multiprocess_cost.py [--n 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="prom-mp-")
    from prometheus_client import Counter, Histogram  # after the variable: it picks the file-backed values

    requests = Counter("r_total", "r", ["provider", "model", "route", "status"])
    tokens = Counter("t_total", "t", ["provider", "model", "type"])
    cost = Counter("c_total", "c", ["provider", "model"])
    duration = Histogram("d_seconds", "d", ["provider", "model"])
    ttft = Histogram("f_seconds", "f", ["provider", "model"])
    overhead = Histogram("o_seconds", "o", ["provider"])

    def one() -> None:
        requests.labels("openai", "gpt-4o", "openai", "200").inc()
        for kind, count in (("input", 1200), ("output", 80), ("cache_read", 200), ("reasoning", 10)):
            tokens.labels("openai", "gpt-4o", kind).inc(count)
        cost.labels("openai", "gpt-4o").inc(0.0042)
        duration.labels("openai", "gpt-4o").observe(0.4)
        ttft.labels("openai", "gpt-4o").observe(0.1)
        overhead.labels("openai").observe(0.0001)

    best = float("inf")
    for _ in range(args.reps):
        start = time.process_time()
        for _ in range(args.n):
            one()
        best = min(best, (time.process_time() - start) / args.n * 1e6)
    print(json.dumps({"prometheus_client_multiprocess_us": round(best, 2), "n": args.n, "reps": args.reps}))


if __name__ == "__main__":
    main()
