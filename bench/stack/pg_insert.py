"""asyncpg batch-insert strategies for usage rows (~25 columns), against the local PostgreSQL.

Strategies (each batch in one transaction):
  executemany   INSERT ... VALUES ($1..$25) ON CONFLICT (id) DO NOTHING, executemany (pipelined)
  unnest        INSERT ... SELECT * FROM unnest($1::uuid[], ..., $25::jsonb[]) ON CONFLICT (id) DO NOTHING
  copy          copy_records_to_table (binary COPY; no ON CONFLICT: a duplicate id fails the batch)
  copy_stage    copy_records_to_table into a temp table (ON COMMIT DELETE ROWS), then
                INSERT ... SELECT * FROM stage ON CONFLICT (id) DO NOTHING

Metrics per (strategy, batch size): rows/s (wall), client CPU per row (time.process_time of this process),
server CPU per row (utime+stime of the connection's backend from /proc/<pg_backend_pid()>/stat).
Rows are generated before timing; the table is truncated before every measurement.
Repeated --reps times with strategies interleaved; medians are printed.

Usage: python pg_insert.py [--rows 30000] [--batches 100 300 1000] [--reps 3]
DSN: postgresql://postgres@127.0.0.1:5432/test ; creates and drops its own table stack_bench_<pid>.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import statistics
import time
import uuid
from decimal import Decimal

import asyncpg

DSN = os.environ.get("STACK_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
TICK = os.sysconf("SC_CLK_TCK")
HERE = os.path.dirname(os.path.abspath(__file__))

COLUMNS = [
    ("id", "uuid primary key"),
    ("created_at", "timestamptz"),
    ("api_key_id", "uuid"),
    ("request_id", "text"),
    ("provider", "text"),
    ("model", "text"),
    ("endpoint", "text"),
    ("status_code", "int"),
    ("streamed", "bool"),
    ("input_tokens", "int"),
    ("output_tokens", "int"),
    ("cached_input_tokens", "int"),
    ("cache_write_tokens", "int"),
    ("reasoning_tokens", "int"),
    ("input_cost", "numeric(20,10)"),
    ("output_cost", "numeric(20,10)"),
    ("total_cost", "numeric(20,10)"),
    ("latency_ms", "int"),
    ("ttft_ms", "int"),
    ("upstream_request_id", "text"),
    ("user_agent", "text"),
    ("client_ip", "text"),
    ("finish_reason", "text"),
    ("error", "text"),
    ("metadata", "jsonb"),
]
NAMES = [c for c, _ in COLUMNS]
TYPES = [t.split()[0] for _, t in COLUMNS]


def make_rows(n: int) -> list[tuple]:
    now = dt.datetime.now(dt.UTC)
    keys = [uuid.uuid4() for _ in range(20)]
    rows = []
    for i in range(n):
        inp, out = random.randint(50, 4000), random.randint(1, 800)
        ic = Decimal(inp) * Decimal("0.00000015")
        oc = Decimal(out) * Decimal("0.0000006")
        rows.append(
            (
                uuid.uuid4(),
                now + dt.timedelta(microseconds=i),
                random.choice(keys),
                f"req_{uuid.uuid4().hex}",
                "openai",
                "gpt-4o-mini-2024-07-18",
                "/v1/chat/completions",
                200,
                i % 3 == 0,
                inp,
                out,
                inp // 4,
                0,
                0,
                ic,
                oc,
                ic + oc,
                random.randint(200, 9000),
                random.randint(100, 900),
                f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "OpenAI/Python 1.50.0",
                "127.0.0.1",
                "stop",
                None,
                json.dumps({"team": "search", "feature": "summarise", "trace": uuid.uuid4().hex[:16]}),
            )
        )
    return rows


def backend_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        st = f.read()
    fields = st[st.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def run_strategy(conn, table: str, strategy: str, batches: list[list[tuple]]) -> None:
    cols = ", ".join(NAMES)
    if strategy == "executemany":
        params = ", ".join(f"${i + 1}" for i in range(len(NAMES)))
        q = f"INSERT INTO {table} ({cols}) VALUES ({params}) ON CONFLICT (id) DO NOTHING"
        for b in batches:
            async with conn.transaction():
                await conn.executemany(q, b)
    elif strategy == "unnest":
        args = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(TYPES))
        q = f"INSERT INTO {table} ({cols}) SELECT * FROM unnest({args}) ON CONFLICT (id) DO NOTHING"
        for b in batches:
            await conn.execute(q, *[list(c) for c in zip(*b, strict=True)])  # one statement = one transaction
    elif strategy == "copy":
        for b in batches:
            await conn.copy_records_to_table(table, records=b, columns=NAMES)
    elif strategy == "copy_stage":
        q = f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {table}_stage ON CONFLICT (id) DO NOTHING"
        for b in batches:
            async with conn.transaction():
                await conn.copy_records_to_table(f"{table}_stage", records=b, columns=NAMES)
                await conn.execute(q)
    else:
        raise ValueError(strategy)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=30000)
    ap.add_argument("--batches", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--strategies", nargs="+", default=["executemany", "unnest", "copy", "copy_stage"])
    ap.add_argument("--out", default=os.path.join(HERE, "results", "pg_insert.json"))
    a = ap.parse_args()
    table = f"stack_bench_{os.getpid()}"
    conn = await asyncpg.connect(DSN)
    results = []
    try:
        ddl = ", ".join(f"{c} {t}" for c, t in COLUMNS)
        await conn.execute(f"CREATE TABLE {table} ({ddl})")
        await conn.execute(f"CREATE INDEX ON {table} (created_at)")
        await conn.execute(f"CREATE TEMP TABLE {table}_stage (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        bpid = await conn.fetchval("SELECT pg_backend_pid()")
        server = await conn.fetchval("SELECT version()")
        sc = await conn.fetchval("SHOW synchronous_commit")
        print(f"{server}\nsynchronous_commit={sc} table={table}", flush=True)
        # warm-up: prepare statements, codecs
        warm = make_rows(200)
        for s in a.strategies:
            await run_strategy(conn, table, s, [warm[:100]] if s != "executemany" else [warm[100:]])
            await conn.execute(f"TRUNCATE {table}")
            warm = make_rows(200)
        for rep in range(a.reps):
            order = a.strategies[rep % len(a.strategies) :] + a.strategies[: rep % len(a.strategies)]
            for bs in a.batches:
                for s in order:
                    rows = make_rows(a.rows)
                    batches = [rows[i : i + bs] for i in range(0, len(rows), bs)]
                    await conn.execute(f"TRUNCATE {table}")
                    await conn.execute("CHECKPOINT")
                    c0, s0, w0 = time.process_time(), backend_cpu(bpid), time.perf_counter()
                    await run_strategy(conn, table, s, batches)
                    c1, s1, w1 = time.process_time(), backend_cpu(bpid), time.perf_counter()
                    n = await conn.fetchval(f"SELECT count(*) FROM {table}")
                    assert n == a.rows, (s, n)
                    r = {
                        "rep": rep,
                        "strategy": s,
                        "batch": bs,
                        "rows": a.rows,
                        "rows_per_s": a.rows / (w1 - w0),
                        "client_cpu_us_per_row": (c1 - c0) / a.rows * 1e6,
                        "server_cpu_us_per_row": (s1 - s0) / a.rows * 1e6,
                        "ms_per_batch": (w1 - w0) / len(batches) * 1e3,
                    }
                    results.append(r)
                    print(
                        f"rep{rep} batch {bs:>5} {s:>12}: {r['rows_per_s']:9.0f} rows/s  "
                        f"client {r['client_cpu_us_per_row']:6.2f} us/row  "
                        f"server {r['server_cpu_us_per_row']:6.2f} us/row  "
                        f"{r['ms_per_batch']:7.2f} ms/batch",
                        flush=True,
                    )
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:  # noqa: ASYNC230 (after the measurement)
        json.dump(results, f, indent=1)
    print("\nMEDIANS")
    print("| batch | strategy | rows/s | client CPU us/row | server CPU us/row | ms/batch |")
    print("|---:|---|---:|---:|---:|---:|")
    for bs in a.batches:
        for s in a.strategies:
            rs = [r for r in results if r["strategy"] == s and r["batch"] == bs]
            med = {
                k: statistics.median(r[k] for r in rs)
                for k in ("rows_per_s", "client_cpu_us_per_row", "server_cpu_us_per_row", "ms_per_batch")
            }
            print(
                f"| {bs} | {s} | {med['rows_per_s']:.0f} | {med['client_cpu_us_per_row']:.2f} | "
                f"{med['server_cpu_us_per_row']:.2f} | {med['ms_per_batch']:.2f} |"
            )


if __name__ == "__main__":
    asyncio.run(main())
