"""The gateway against a direct call: throughput, latency, CPU per request, memory, rows written.

    bash bench/run.sh [--quick]            (what `make bench` runs; installs wrk/nginx if missing)
    .venv/bin/python bench/gateway_bench.py [--quick] [--reps N] [--dur S] [--conc 1,8,32,64] ...

Layout on a 2-core machine: every gateway process is pinned to core 0; wrk (one thread), the mock
upstreams (nginx for JSON, upstream.py for streams, paced 1 ms per event), this driver and the
PostgreSQL backends that serve the gateway's connections are pinned to core 1.

Targets: "direct" (wrk straight at the mock upstream), "sqlite" and "pg" (wrk at `majordomo serve`
whose MAJORDOMO_PROVIDERS_*_BASE_URL point at the mock upstream, logging to a fresh SQLite file or
a fresh PostgreSQL database on 127.0.0.1:5432 that is dropped at the end).  Because nginx cannot
pace a stream, each storage target has two gateway processes: one whose upstream is nginx (JSON
workloads) and one whose upstream is upstream.py (streams).

Each repetition runs every (workload, concurrency) cell against every target, targets in a
rotated order, then paced runs at half of the PostgreSQL gateway's saturation; reported numbers
are medians over repetitions.  A phase during which other processes used more than
--max-foreign of a core is re-run (bounded).  Then: first-byte latency of streams, RSS with
1,000 open streams, --workers 1 vs 2, and a py-spy profile.  Finally every request wrk completed
against a gateway (warm-ups and discarded phases included) is compared with the rows in
llm_requests, per phase.

Results: bench/results/gateway.json (a full run) or bench/results/raw/quick.json (--quick), raw
per-phase records in bench/results/raw/, and the tables of docs/performance.md (full runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import json
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import canned  # noqa: E402
import procstat as ps  # noqa: E402
import wrk  # noqa: E402

PY = sys.executable
MAJORDOMO = os.path.join(os.path.dirname(PY), "majordomo")
NGINX_PORT, SSE_PORT = 18181, 18182
GW_PORTS = {("pg", "json"): 18191, ("pg", "sse"): 18192, ("sqlite", "json"): 18193, ("sqlite", "sse"): 18194}
EXTRA_PORT = 18195
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
JSON_TAIL, SSE_TAIL = 0.7, 1.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- databases


async def _pg(sql: str, *args, database: str = "postgres"):
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN.rsplit("/", 1)[0] + "/" + database, timeout=5)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def pg(sql: str, *args, database: str = "postgres"):
    return asyncio.run(_pg(sql, *args, database=database))


def pg_available() -> str | None:
    try:
        pg("SELECT 1")
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


class Store:
    """One fresh database for one gateway process (a target x upstream kind)."""

    def __init__(self, kind: str, name: str, workdir: str):
        self.kind = kind
        self.name = name
        if kind == "pg":
            self.url = f"postgresql://postgres@127.0.0.1:5432/{name}"
            pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            pg(f'CREATE DATABASE "{name}"')
        else:
            self.path = os.path.join(workdir, f"{name}.db")
            self.url = f"sqlite:///{self.path}"

    def counts(self) -> dict[str, dict[str, int]]:
        """Rows per Bench-Phase tag: total, with usage reported, aborted, non-200."""
        sql = ("SELECT raw_metadata->>'Bench-Phase', count(*), "
               "sum(CASE WHEN usage_source = 'reported' THEN 1 ELSE 0 END), "
               "sum(CASE WHEN aborted THEN 1 ELSE 0 END), sum(CASE WHEN status_code <> 200 THEN 1 ELSE 0 END) "
               "FROM llm_requests GROUP BY 1")
        if self.kind == "pg":
            rows = pg(sql, database=self.name)
        else:
            with contextlib.closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)) as c:
                rows = c.execute(sql).fetchall()
        return {r[0]: {"rows": int(r[1]), "reported": int(r[2] or 0), "aborted": int(r[3] or 0),
                       "non200": int(r[4] or 0)} for r in rows}

    def backend_pids(self) -> list[int]:
        if self.kind != "pg":
            return []
        return [r[0] for r in pg("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                                 self.name)]

    def drop(self) -> None:
        if self.kind == "pg":
            with contextlib.suppress(Exception):
                pg(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


# ----------------------------------------------------------------------------- gateway processes


GC_PROBE = {"enabled": False, "freeze": False}
GATEWAY_ENV: dict[str, str] = {}


class Gateway:
    def __init__(self, store: Store, upstream_port: int, port: int, workdir: str, label: str,
                 workers: int = 1, cores: str = "0"):
        self.store, self.port, self.label, self.workers = store, port, label, workers
        self.key = _create_key(store.url, workdir)
        env = dict(os.environ)
        for k in [k for k in env if k.startswith("MAJORDOMO_")]:
            del env[k]
        base = f"http://127.0.0.1:{upstream_port}"
        env.update(MAJORDOMO_DATABASE_URL=store.url, MAJORDOMO_PROVIDERS_OPENAI_BASE_URL=base,
                   MAJORDOMO_PROVIDERS_ANTHROPIC_BASE_URL=base, MAJORDOMO_LOG_LEVEL="warning",
                   MAJORDOMO_WRITER_SPOOL_DIR=os.path.join(workdir, f"spool-{label}"))
        env.update(GATEWAY_ENV)  # --gateway-env what-ifs
        self.gc_log = os.path.join(workdir, f"gc-{label}")
        if GC_PROBE["enabled"]:
            probes = os.path.join(HERE, "probes")
            env["PYTHONPATH"] = probes + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            env["MAJORDOMO_BENCH_GC_LOG"] = self.gc_log
            env["MAJORDOMO_BENCH_GC_FREEZE"] = "1" if GC_PROBE["freeze"] else "0"
            env["MAJORDOMO_BENCH_STALLS"] = "1"
        if not ps.port_free(port):
            raise RuntimeError(f"port {port} is busy: another benchmark still running?")
        self.proc = ps.start([MAJORDOMO, "serve", "--port", str(port), "--workers", str(workers)], cores,
                             env=env, log=os.path.join(workdir, f"gateway-{label}.log"), log_mode="a",
                             cwd=workdir)
        ps.wait_port(port, timeout=30)
        time.sleep(0.5 if workers == 1 else 2.0)
        self.pids = ps.tree(self.proc.pid)
        self.requests: dict[str, int] = {}  # wrk-completed responses per Bench-Phase tag

    def refresh_pids(self) -> None:
        self.pids = ps.tree(self.proc.pid)

    def stop(self) -> None:
        ps.stop(self.proc)

    def hwm_mb(self) -> float:
        return ps.status_kb(self.pids, "VmHWM") / 1024

    def rss_mb(self) -> float:
        return ps.status_kb(self.pids, "VmRSS") / 1024


def gc_pauses(gws: list[Gateway]) -> dict:
    """Collector pauses per gateway process (--gc-probe): count, total and worst per generation."""
    out = {}
    for g in gws:
        per_gen: dict[str, list[float]] = {}
        for path in glob.glob(g.gc_log + ".*"):
            with open(path) as f:
                for line in f:
                    gen, ms, _ = line.split()
                    per_gen.setdefault(f"gen{gen}", []).append(float(ms))
        out[g.label] = {gen: {"count": len(v), "total_ms": round(sum(v), 1), "max_ms": round(max(v), 2),
                              "over_5ms": sum(1 for x in v if x > 5)} for gen, v in sorted(per_gen.items())}
    return out


def _create_key(url: str, workdir: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAJORDOMO_")}
    out = subprocess.run([MAJORDOMO, "keys", "create", "--name", "bench", "--json", "--database-url", url],
                         capture_output=True, text=True, env=env, cwd=workdir, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"majordomo keys create failed: {out.stderr}")
    return json.loads(out.stdout)["key"]


# ----------------------------------------------------------------------------- measurement


class Bench:
    def __init__(self, a: argparse.Namespace, workdir: str):
        self.a = a
        self.workdir = workdir
        self.records: list[dict] = []
        self.raw_path = a.raw
        self.upstream_pids: dict[int, list[int]] = {}
        self.gateways: dict[tuple[str, str], Gateway] = {}
        self.db_pids: list[int] = []
        self.rerun_budget = a.rerun_budget
        self.disturbed = 0

    def emit(self, rec: dict) -> None:
        rec["t"] = round(time.time(), 1)
        # One record per phase: reopening is cheap, and a crash loses nothing.
        with open(self.raw_path, "a") as raw:
            raw.write(json.dumps(rec) + "\n")
        self.records.append(rec)
        if rec.get("kind") in ("closed", "paced"):
            log(f"  rep{rec['rep']} {rec['workload']:>16} c{rec['conc']:<3} {rec['target']:>6}: "
                f"{rec['rps']:8.0f} req/s p50 {rec['p50_ms']:7.3f} p99 {rec['p99_ms']:7.3f} ms "
                f"cpu {rec['cpu_us_per_req']:7.1f} us/req err {rec['errors']} "
                f"foreign {rec['foreign_core0']:.2f}/{rec['foreign_core1']:.2f}"
                + (" DISCARDED" if rec.get("discarded") else ""))

    def headers(self, w: canned.Workload, key: str, tag: str) -> dict[str, str]:
        return {**w.headers, "X-Majordomo-Key": key, "X-Majordomo-Feature": "bench",
                "X-Majordomo-Bench-Phase": tag}

    def wrk_once(self, target: str, w: canned.Workload, conns: int, dur: int, tag: str,
                 delay_ms: float = 0.0) -> dict:
        """One wrk phase with CPU accounting; returns the record (not emitted)."""
        kind = "sse" if w.stream else "json"
        if target == "direct":
            port, key, gw = (SSE_PORT if w.stream else NGINX_PORT), "direct", None
        else:
            gw = self.gateways[(target, kind)]
            port, key = gw.port, gw.key
        up = self.upstream_pids[SSE_PORT if w.stream else NGINX_PORT]
        gw_pids = gw.pids if gw else []
        others = [p for g in self.gateways.values() if g is not gw for p in g.pids]
        def cpu():
            return (ps.cpu_seconds(gw_pids), ps.cpu_seconds(up), ps.cpu_seconds(self.db_pids), ps.cpu_seconds(others))

        def usage():
            return (ps.core_busy(), resource.getrusage(resource.RUSAGE_CHILDREN),
                    resource.getrusage(resource.RUSAGE_SELF))

        b0, w0, s0 = usage()
        c0, u0, d0, o0 = cpu()
        r = wrk.run(self.workdir, tag, w.path, port, self.headers(w, key, tag), w.body, conns, dur,
                    SSE_TAIL if w.stream else JSON_TAIL, delay_ms)
        c1, u1, d1, o1 = cpu()
        b1, w1, s1 = usage()
        if gw is not None:
            gw.requests[tag] = gw.requests.get(tag, 0) + r["requests"]
        elapsed = r["duration_us"] / 1e6
        wrk_cpu = (w1.ru_utime + w1.ru_stime) - (w0.ru_utime + w0.ru_stime)
        self_cpu = (s1.ru_utime + s1.ru_stime) - (s0.ru_utime + s0.ru_stime)
        n = max(r["requests"], 1)
        r.update(
            cpu_us_per_req=(c1 - c0) / n * 1e6,
            cpu_util=(c1 - c0) / r["active_s"],
            upstream_cpu_us_per_req=(u1 - u0) / n * 1e6,
            db_cpu_us_per_req=(d1 - d0) / n * 1e6,
            wrk_cpu_us_per_req=wrk_cpu / n * 1e6,
            foreign_core0=round(((b1[0] - b0[0]) - (c1 - c0) - (o1 - o0)) / elapsed, 3),
            foreign_core1=round(((b1[1] - b0[1]) - wrk_cpu - self_cpu - (u1 - u0) - (d1 - d0)) / elapsed, 3),
            hwm_mb=gw.hwm_mb() if gw else None,
            # kernel TCP work on the gateway's core that no process is charged for
            softirq_core0_us_per_req=(ps.softirq(b1)[0] - ps.softirq(b0)[0]) / n * 1e6,
        )
        return r

    def measure(self, tags: dict, target: str, w: canned.Workload, conns: int, dur: int,
                delay_ms: float = 0.0) -> dict:
        """A phase, re-run (bounded) when other load on the machine disturbed it."""
        for attempt in range(3):
            tag = f"r{tags['rep']}-{tags['kind']}-{w.name}-c{conns}-{target}-a{attempt}"
            r = self.wrk_once(target, w, conns, dur, tag, delay_ms)
            r.update(tags, target=target, workload=w.name, conc=conns, tag=tag, attempt=attempt)
            core0_ok = target == "direct" or r["foreign_core0"] <= self.a.max_foreign
            clean = core0_ok and r["foreign_core1"] <= self.a.max_foreign
            r["clean"] = clean
            if clean or attempt == 2 or self.rerun_budget <= 0:
                if not clean:
                    self.disturbed += 1
                self.emit(r)
                return r
            self.emit({**r, "discarded": True})
            t0 = time.time()
            waited = ps.quiet_wait(max_wait=min(20, self.rerun_budget))
            self.rerun_budget -= time.time() - t0 + dur
            log(f"    (disturbed: foreign load {r['foreign_core0']}/{r['foreign_core1']} cores; waited {waited:.0f}s)")
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------------- phases

    def warm_up(self, gw: Gateway, kind: str) -> None:
        for w in canned.WORKLOADS.values():
            if w.stream == (kind == "sse") and w.name in self.a.workloads:
                tag = f"warmup-{gw.label}-{w.name}-{int(time.time())}"
                self.wrk_gateway_plain(gw, w, 32, 2, tag)

    def wrk_gateway_plain(self, gw: Gateway, w: canned.Workload, conns: int, dur: int, tag: str,
                          cores: str = "1") -> dict:
        r = wrk.run(self.workdir, tag, w.path, gw.port, self.headers(w, gw.key, tag), w.body, conns, dur,
                    SSE_TAIL if w.stream else JSON_TAIL, cores=cores)
        gw.requests[tag] = gw.requests.get(tag, 0) + r["requests"]
        return r

    def pin_db(self) -> None:
        pids = []
        for g in self.gateways.values():
            pids += g.store.backend_pids()
        ps.pin(pids, "1")
        self.db_pids = sorted(set(pids))

    def rep(self, rep: int) -> None:
        a = self.a
        targets = a.targets[rep % len(a.targets):] + a.targets[:rep % len(a.targets)]
        self.pin_db()
        for wname in a.workloads:
            w = canned.WORKLOADS[wname]
            for c in a.conc:
                for t in targets:
                    self.measure({"rep": rep, "kind": "closed"}, t, w, c, a.dur)
        # paced runs: half of this repetition's saturation of the PostgreSQL (else SQLite) gateway
        sat_target = "pg" if "pg" in a.targets else next((t for t in a.targets if t != "direct"), None)
        if sat_target is None:
            return
        for wname in a.workloads:
            w = canned.WORKLOADS[wname]
            closed = [r for r in self.records if r.get("kind") == "closed" and r["rep"] == rep
                      and r["workload"] == wname and not r.get("discarded")]
            sat = max((r["rps"] for r in closed if r["target"] == sat_target), default=0)
            if sat <= 0:
                continue
            rate = sat / 2
            for t in targets:
                c1 = [r for r in closed if r["target"] == t and r["conc"] == 1]
                lat = c1[0]["mean_ms"] if c1 else (25.0 if w.stream else 0.3)
                delay = max(0.0, a.paced_conc / rate * 1000 - lat)
                r = self.measure({"rep": rep, "kind": "paced", "saturation_rps": sat, "offered_rps": rate,
                                  "delay_ms": delay}, t, w, a.paced_conc, a.dur, delay)
                r["load_fraction"] = r["rps"] / sat

    # ------------------------------------------------------------------------- extras

    def ttfb(self) -> dict:
        out = {}
        for target in [t for t in ("pg", "sqlite") if t in self.a.targets]:
            gw = self.gateways[(target, "sse")]
            for conc in (1, 8):
                n = self.a.ttfb_n if conc == 1 else self.a.ttfb_n * 2
                tag = f"ttfb-{target}-c{conc}"
                res = _run_json([PY, os.path.join(HERE, "ttfb.py"), "--direct-port", str(SSE_PORT),
                                 "--gateway-port", str(gw.port), "--key", gw.key, "--tag", tag, "--n", str(n),
                                 "--conc", str(conc), "--workloads", *[w for w in self.a.workloads if "stream" in w]])
                for wname, stats in res["workloads"].items():
                    gw.requests[tag] = gw.requests.get(tag, 0) + stats["gateway"]["completed"]
                    out[f"{target}/{wname}/c{conc}"] = stats
                    d, g = stats["direct"], stats["gateway"]
                    log(f"  ttfb {target} {wname} c{conc}: first event p50 direct {d['first_event_p50_ms']:.3f}"
                        f" gateway {g['first_event_p50_ms']:.3f} ms; p99 "
                        f"{d['first_event_p99_ms']:.3f} / {g['first_event_p99_ms']:.3f} ms")
        return out

    def open_streams(self, store: Store) -> dict:
        """A fresh PostgreSQL gateway holding N streams open at once: idle RSS, RSS with all open, VmHWM."""
        gw = Gateway(store, SSE_PORT, EXTRA_PORT, self.workdir, "open-streams")
        try:
            idle = gw.rss_mb()
            w = "openai_stream"
            tag = f"open-streams-{self.a.open_streams}"
            client = ps.start([PY, os.path.join(HERE, "open_streams.py"), "--port", str(gw.port), "--key", gw.key,
                               "--tag", tag, "--n", str(self.a.open_streams), "--gap-ms", str(self.a.open_gap_ms),
                               "--workload", w, "--out", os.path.join(self.workdir, "open_streams.json")],
                              "1", log=os.path.join(self.workdir, "open_streams.log"))
            samples = []
            t_end = time.time() + 120
            while client.poll() is None and time.time() < t_end:
                samples.append((time.time(), gw.rss_mb()))
                time.sleep(0.1)
            ps.stop(client, timeout=5)
            with open(os.path.join(self.workdir, "open_streams.json")) as f:
                res = json.load(f)
            gw.requests[tag] = res["completed"]
            during = [m for t, m in samples if res["t_all_open"] and res["t_all_open"] <= t <= res["t_first_done"]]
            res.update(rss_idle_mb=round(idle, 1), rss_all_open_max_mb=round(max(during), 1) if during else None,
                       rss_max_sampled_mb=round(max(m for _, m in samples), 1), hwm_mb=round(gw.hwm_mb(), 1))
            log(f"  {self.a.open_streams} open streams: RSS idle {idle:.1f} MB, all open "
                f"{res['rss_all_open_max_mb']} MB, VmHWM {res['hwm_mb']} MB; completed {res['completed']}, "
                f"errors {res['errors']}")
            return res | {"rows_expected": dict(gw.requests)}
        finally:
            gw.stop()

    def workers(self, store: Store) -> dict:
        """--workers 1 vs 2 on both cores (gateway, wrk and nginx share them: see the docs)."""
        w = canned.WORKLOADS["openai_json"]
        out: dict = {"runs": [], "requests": {}}
        ps.pin(self.upstream_pids[NGINX_PORT], "0,1")
        try:
            self._workers(w, store, out)
        finally:
            ps.pin(self.upstream_pids[NGINX_PORT], "1")
        for n in (1, 2):
            runs = [r for r in out["runs"] if r["workers"] == n]
            out[f"workers{n}"] = {k: statistics.median(r[k] for r in runs) for k in
                                  ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "gateway_cores", "machine_busy_cores")}
        out["speedup"] = out["workers2"]["rps"] / out["workers1"]["rps"]
        return out

    def _workers(self, w: canned.Workload, store: Store, out: dict) -> None:
        for rep in range(self.a.worker_reps):
            for n in ((1, 2) if rep % 2 == 0 else (2, 1)):
                gw = Gateway(store, NGINX_PORT, EXTRA_PORT, self.workdir, f"workers{n}", workers=n, cores="0,1")
                try:
                    self.wrk_gateway_plain(gw, w, 64, 2, f"workers{n}-warmup-r{rep}", cores="0,1")
                    gw.refresh_pids()
                    tag = f"workers{n}-r{rep}"
                    b0, c0 = ps.core_busy(), ps.cpu_seconds(gw.pids)
                    r = self.wrk_gateway_plain(gw, w, 64, self.a.dur, tag, cores="0,1")
                    c1, b1 = ps.cpu_seconds(gw.pids), ps.core_busy()
                    busy = sum(b1[c] - b0[c] for c in b1) / r["active_s"]  # the tail is idle
                    rec = {"workers": n, "rep": rep, "rps": r["rps"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
                           "cpu_us_per_req": (c1 - c0) / max(r["requests"], 1) * 1e6,
                           "gateway_cores": (c1 - c0) / r["active_s"], "machine_busy_cores": busy,
                           "errors": r["errors"], "processes": len(gw.pids)}
                    out["runs"].append(rec)
                    self.emit({"kind": "workers", **rec})
                    log(f"  workers={n} rep{rep}: {r['rps']:.0f} req/s, gateway {rec['gateway_cores']:.2f} cores, "
                        f"{rec['cpu_us_per_req']:.0f} us/req, machine busy {busy:.2f} cores")
                    for k, v in gw.requests.items():
                        out["requests"][k] = out["requests"].get(k, 0) + v
                finally:
                    gw.stop()

    def profile(self) -> dict:
        """py-spy on the PostgreSQL gateways under load; per-request costs from the sample shares."""
        spy = self.a.py_spy
        if not spy or not os.path.exists(spy):
            return {"skipped": "py-spy not found (bench/run.sh installs it into a bench venv)"}
        out = {}
        plan = [("openai_json", 32), ("anthropic_json", 32), ("openai_stream", 64), ("anthropic_stream", 64)]
        for wname, conns in plan:
            if wname not in self.a.workloads:
                continue
            w = canned.WORKLOADS[wname]
            gw = self.gateways[("pg", "sse" if w.stream else "json")]
            raw = os.path.join(os.path.dirname(self.a.raw), f"profile-{self.a.stamp}-{wname}.txt")
            dur = self.a.profile_dur
            # Blocking sampling (py-spy pauses the process for each sample): --nonblocking reads the
            # stacks of a running process and returns torn ones under this load.
            spy_proc = ps.start([spy, "record", "--pid", str(gw.proc.pid), "--rate", "250",
                                 "--format", "raw", "--output", raw, "--duration", str(dur - 1)], "1",
                                log=raw + ".log")
            time.sleep(0.5)
            tag = f"profile-{wname}"
            c0 = ps.cpu_seconds(gw.pids)
            r = self.wrk_gateway_plain(gw, w, conns, dur, tag)
            c1 = ps.cpu_seconds(gw.pids)
            spy_proc.wait(timeout=30)
            cpu_us = (c1 - c0) / max(r["requests"], 1) * 1e6
            import profile_summary

            try:
                summary = profile_summary.summarize(raw, cpu_us, r["requests"], top=15)
            except FileNotFoundError:
                summary = {"error": "py-spy wrote no profile (ptrace not permitted?)"}
            summary.update(workload=wname, conc=conns, rps=r["rps"], cpu_us_per_req=cpu_us)
            out[wname] = summary
            log(f"  profile {wname} c{conns}: {r['rps']:.0f} req/s, {cpu_us:.0f} us/req, "
                f"{summary.get('samples', 0)} samples")
        return out

    # ------------------------------------------------------------------------- rows

    def check_rows(self, gws: list[Gateway], extra_requests: dict[str, dict[str, int]]) -> dict:
        """Per database: rows per tag vs wrk-completed requests per tag, after the writers drained."""
        out = {}
        by_store: dict[str, tuple[Store, dict[str, int]]] = {}
        for g in gws:
            _s, req = by_store.setdefault(g.store.name, (g.store, {}))
            for k, v in g.requests.items():
                req[k] = req.get(k, 0) + v
        for name, req in extra_requests.items():
            if name in by_store:
                for k, v in req.items():
                    by_store[name][1][k] = by_store[name][1].get(k, 0) + v
        for name, (store, req) in by_store.items():
            expected = sum(req.values())
            deadline = time.time() + 30
            while True:
                counts = store.counts()
                written = sum(c["rows"] for c in counts.values())
                if written >= expected or time.time() > deadline:
                    break
                time.sleep(0.5)
            mism = {t: {"requests": req.get(t, 0), "rows": counts.get(t, {}).get("rows", 0)}
                    for t in set(req) | set(counts) if req.get(t, 0) != counts.get(t, {}).get("rows", 0)}
            reported = sum(c["reported"] for c in counts.values())
            out[name] = {"target": store.kind, "requests": expected, "rows": written, "match": not mism,
                         "phases": len(req), "mismatched_phases": mism, "usage_reported": reported,
                         "aborted": sum(c["aborted"] for c in counts.values()),
                         "non200": sum(c["non200"] for c in counts.values())}
            log(f"  rows {name}: {written} rows for {expected} requests over {len(req)} phases: "
                f"{'MATCH' if not mism else 'MISMATCH ' + json.dumps(mism)[:300]}; usage reported on {reported}")
        return out


def idle_cpu(gws: list[Gateway], seconds: float = 5.0) -> dict:
    """CPU an idle gateway uses anyway (the writer's timers): the floor under low-load numbers."""
    c0 = {g.label: ps.cpu_seconds(g.pids) for g in gws}
    time.sleep(seconds)
    return {g.label: round((ps.cpu_seconds(g.pids) - c0[g.label]) / seconds * 1000, 2) for g in gws}


def _run_json(cmd: list[str]) -> dict:
    out = subprocess.run([*ps.NICE, "taskset", "-c", "1", *cmd], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[1]} failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- summary


def _med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def summarize(records: list[dict]) -> dict:
    cells: dict[tuple, list[dict]] = {}
    for r in records:
        if r.get("kind") in ("closed", "paced") and not r.get("discarded"):
            cells.setdefault((r["kind"], r["workload"], r["conc"], r["target"]), []).append(r)
    rows = []
    for (kind, wname, conc, target), rs in sorted(cells.items()):
        row = {"kind": kind, "workload": wname, "conc": conc, "target": target, "n": len(rs),
               "clean": sum(1 for r in rs if r["clean"])}
        for k in ("rps", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "mean_ms", "cpu_us_per_req",
                  "upstream_cpu_us_per_req", "db_cpu_us_per_req", "wrk_cpu_us_per_req", "cpu_util", "hwm_mb",
                  "load_fraction", "saturation_rps", "offered_rps"):
            v = _med(r.get(k) for r in rs)
            row[k] = round(v, 4) if v is not None else None
        for k in ("rps", "cpu_us_per_req", "p99_ms"):
            row[f"{k}_range"] = [round(min(r[k] for r in rs), 3), round(max(r[k] for r in rs), 3)]
        row["softirq_core0_us_per_req"] = _med(r.get("softirq_core0_us_per_req") for r in rs)
        row["errors"] = sum(r["errors"] for r in rs)
        if target != "direct":
            # added latency: median over repetitions of (gateway - direct) in the same repetition
            direct = {r["rep"]: r for r in cells.get((kind, wname, conc, "direct"), [])}
            for p in ("p50", "p99"):
                diffs = [r[f"{p}_ms"] - direct[r["rep"]][f"{p}_ms"] for r in rs if r["rep"] in direct]
                row[f"added_{p}_ms"] = round(statistics.median(diffs), 4) if diffs else None
        rows.append(row)
    return {"cells": rows}


TARGETS_DOC = [
    ("cpu_json", "gateway CPU per non-streaming request (PostgreSQL)", "<= 0.25 ms"),
    ("cpu_stream", "gateway CPU per 20-chunk stream (PostgreSQL)", "<= 0.5 ms"),
    ("added_p50", "added latency p50 at half of saturation", "<= 1 ms"),
    ("added_p99", "added latency p99 at half of saturation", "<= 5 ms"),
    ("ttfb", "first event of a stream after the direct call's (p50)", "<= 1 ms"),
    ("rss", "RSS with 1,000 open streams", "<= 150 MB"),
    ("workers", "--workers N scales ~linearly", "~N x"),
    ("rows", "rows written == requests served, every run", "equal"),
]


def _cpu_verdict(cells: list[dict], key: str, workloads: tuple[str, ...], limit: float) -> dict | None:
    """CPU per request with the gateway saturated (its core >= 95% busy): the median over those
    concurrency levels, for the worse of the workloads.  Paced streams may never saturate the core
    (the upstream's pacing bounds the rate): then the busiest level stands in, named."""
    per_wl = []
    for wname in workloads:
        closed = [c for c in cells if c["kind"] == "closed" and c["target"] == "pg" and c["workload"] == wname
                  and c.get("cpu_us_per_req") is not None]
        sat = [c for c in closed if (c.get("cpu_util") or 0) >= 0.95]
        label = "median of saturated levels"
        if not sat and closed:
            sat = [max(closed, key=lambda c: c.get("cpu_util") or 0)]
            label = f"no level saturated the core; the busiest, {sat[0]['cpu_util']:.0%} busy"
        if sat:
            per_wl.append((statistics.median(c["cpu_us_per_req"] for c in sat) / 1000, wname, sat, label))
    if not per_wl:
        return None
    ms, wname, sat, label = max(per_wl)
    levels = ", ".join(f"c{c['conc']} {c['cpu_us_per_req'] / 1000:.3f}" for c in sorted(sat, key=lambda c: c["conc"]))
    return {"id": key, "measured": f"{ms:.3f} ms ({wname}, {label}: {levels})", "value": ms, "met": ms <= limit}


def verdicts(res: dict) -> list[dict]:
    cells = res["summary"]["cells"]
    out = []

    def pick(kind, target, workloads, metric, agg=max, conc=None):
        vals = [(c["workload"], c["conc"], c[metric]) for c in cells if c["kind"] == kind and c["target"] == target
                and c["workload"] in workloads and (conc is None or c["conc"] == conc) and c.get(metric) is not None]
        return agg(vals, key=lambda v: v[2]) if vals else None

    js = ("openai_json", "anthropic_json")
    ss = ("openai_stream", "anthropic_stream")
    for key, ws, limit in (("cpu_json", js, 0.25), ("cpu_stream", ss, 0.5)):
        verdict = _cpu_verdict(cells, key, ws, limit)
        if verdict:
            out.append(verdict)
    for key, metric, limit in (("added_p50", "added_p50_ms", 1.0), ("added_p99", "added_p99_ms", 5.0)):
        worst = pick("paced", "pg", js + ss, metric)
        if worst:
            out.append({"id": key, "measured": f"{worst[2]:.3f} ms ({worst[0]})", "value": worst[2],
                        "met": worst[2] <= limit})
    ttfb = res.get("ttfb") or {}
    diffs = [(k, v["added_first_event_p50_ms"]) for k, v in ttfb.items() if k.startswith("pg/") and k.endswith("/c1")]
    if diffs:
        k, d = max(diffs, key=lambda x: x[1])
        out.append({"id": "ttfb", "measured": f"+{d:.3f} ms ({k})", "value": d, "met": d <= 1.0})
    os_ = res.get("open_streams") or {}
    if os_.get("hwm_mb") is not None:
        out.append({"id": "rss", "measured": f"{os_['hwm_mb']:.1f} MB VmHWM ({os_['n']} streams, "
                    f"{os_['completed']} completed)", "value": os_["hwm_mb"],
                    "met": os_["hwm_mb"] <= 150 and os_["n"] >= 1000})
    wk = res.get("workers") or {}
    if "speedup" in wk:
        out.append({"id": "workers", "measured": f"{wk['speedup']:.2f}x with 2 workers on 2 shared cores",
                    "value": wk["speedup"], "met": None})
    rows = res.get("rows") or {}
    if rows:
        ok = all(v["match"] for v in rows.values())
        out.append({"id": "rows", "measured": ", ".join(f"{v['rows']}/{v['requests']}" for v in rows.values()),
                    "value": ok, "met": ok})
    names = {k: (name, goal) for k, name, goal in TARGETS_DOC}
    for v in out:
        v["target"], v["goal"] = names[v["id"]]
    return out


def versions() -> dict:
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    for pkg in ("majordomo-gateway", "uvicorn", "uvloop", "httptools", "asyncpg", "orjson"):
        with contextlib.suppress(Exception):
            out[pkg] = version(pkg)
    for tool, args in (("wrk", ["-v"]), ("nginx", ["-v"])):
        with contextlib.suppress(Exception):
            p = subprocess.run([tool, *args], capture_output=True, text=True, timeout=10)
            out[tool] = (p.stdout + p.stderr).splitlines()[0].strip()
    with contextlib.suppress(Exception):
        out["postgresql"] = pg("SHOW server_version")[0][0]
    with contextlib.suppress(Exception):
        out["git"] = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True, timeout=10).stdout.strip()
    return out


# ----------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 repetition, 2 s phases, c1 and c32, small extras (~3 min)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dur", type=int, default=4, help="seconds per wrk phase (the last 0.7-1 s drain)")
    ap.add_argument("--conc", default="1,8,32,64")
    ap.add_argument("--targets", default="direct,sqlite,pg")
    ap.add_argument("--workloads", default=",".join(canned.WORKLOADS))
    ap.add_argument("--paced-conc", type=int, default=32)
    ap.add_argument("--ttfb-n", type=int, default=200)
    ap.add_argument("--open-streams", type=int, default=1000)
    ap.add_argument("--open-gap-ms", type=float, default=500)
    ap.add_argument("--worker-reps", type=int, default=3)
    ap.add_argument("--profile-dur", type=int, default=8)
    ap.add_argument("--max-foreign", type=float, default=0.05, help="cores of other load that void a phase")
    ap.add_argument("--rerun-budget", type=float, default=240,
                    help="seconds spent re-running disturbed phases, at most")
    ap.add_argument("--skip", default="", help="comma list of extras to skip: ttfb,open,workers,profile")
    ap.add_argument("--py-spy", default=os.environ.get("MAJORDOMO_BENCH_PY_SPY", ""))
    ap.add_argument("--out", default=None)
    ap.add_argument("--gc-probe", action="store_true",
                    help="record the gateways' garbage-collector pauses and event-loop stalls over 2 ms with the "
                         "stack that held the loop (bench/probes/sitecustomize.py; files kept with --keep-workdir)")
    ap.add_argument("--gc-freeze", action="store_true",
                    help="what-if: gc.freeze() in the gateways after start-up (implies --gc-probe)")
    ap.add_argument("--gateway-env", action="append", default=[], metavar="MAJORDOMO_NAME=VALUE",
                    help="a setting for every gateway process, for what-ifs (repeatable), e.g. "
                         "MAJORDOMO_WRITER_FLUSH_INTERVAL=0.02, or an OTEL_* variable "
                         "(OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 with bench/otlp_sink.py)")
    ap.add_argument("--keep-workdir", action="store_true",
                    help="keep the temporary directory (logs, profiles) and the PostgreSQL databases")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite the tables in docs/performance.md")
    a = ap.parse_args(argv)
    if a.quick:
        a.reps, a.dur, a.conc = 1, 2, "1,32"
        a.ttfb_n, a.open_streams, a.open_gap_ms, a.worker_reps, a.profile_dur = 40, 1000, 200, 1, 3
    GC_PROBE.update(enabled=a.gc_probe or a.gc_freeze, freeze=a.gc_freeze)
    for item in a.gateway_env:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith(("MAJORDOMO_", "OTEL_")):
            raise SystemExit(f"--gateway-env wants MAJORDOMO_NAME=value or OTEL_NAME=value, got {item!r}")
        GATEWAY_ENV[name] = value
    a.conc = [int(c) for c in a.conc.split(",")]
    a.targets = a.targets.split(",")
    a.workloads = a.workloads.split(",")
    a.skip = set(filter(None, a.skip.split(",")))
    results = os.path.join(HERE, "results")
    os.makedirs(os.path.join(results, "raw"), exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    a.stamp = stamp
    # The committed results/gateway.json is written by full runs that were not sent elsewhere.
    a.final = None if (a.quick or a.out) else os.path.join(results, "gateway.json")
    a.out = a.out or os.path.join(results, "raw", "quick.json" if a.quick else f"gateway-{stamp}.json")
    a.raw = os.path.join(results, "raw", f"phases-{stamp}.jsonl")
    return a


def run_extras(a, b: Bench, res: dict, extra_requests: dict[str, dict[str, int]]) -> None:
    """The runs after the repetitions (first-byte latency, open streams, workers, profile), unless skipped."""
    pg_sse = b.gateways.get(("pg", "sse"))
    pg_json = b.gateways.get(("pg", "json"))
    if "ttfb" not in a.skip and b.gateways:
        log("first-byte latency of streams")
        res["ttfb"] = b.ttfb()
    if "open" not in a.skip and pg_sse is not None:
        log(f"{a.open_streams} concurrent open streams")
        os_res = b.open_streams(pg_sse.store)
        extra_requests.setdefault(pg_sse.store.name, {}).update(os_res.pop("rows_expected"))
        res["open_streams"] = os_res
    if "workers" not in a.skip and pg_json is not None:
        log("--workers 1 vs 2")
        wk = b.workers(pg_json.store)
        extra_requests.setdefault(pg_json.store.name, {}).update(wk.pop("requests"))
        res["workers"] = wk
    if "profile" not in a.skip and pg_json is not None:
        log("profile (py-spy)")
        res["profile"] = b.profile()


def tear_down(a, workdir: str, gateways: list[Gateway], upstreams: list[subprocess.Popen],
              stores: list[Store]) -> None:
    for g in gateways:
        g.stop()
    for u in upstreams:
        ps.stop(u, timeout=5)
    for store in stores:
        if a.keep_workdir and store.kind == "pg":
            log(f"kept database {store.name} (--keep-workdir)")
        else:
            store.drop()
    if not a.keep_workdir:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None) -> int:
    a = parse_args(argv)
    t_start = time.time()
    notes: list[str] = []
    missing = pg_available() if "pg" in a.targets else None
    if missing:
        notes.append(f"PostgreSQL on 127.0.0.1:5432 unavailable ({missing}): pg target skipped")
        log(f"WARNING: {notes[-1]}")
        a.targets = [t for t in a.targets if t != "pg"]
    workdir = tempfile.mkdtemp(prefix="majordomo-bench-")
    os.makedirs(os.path.join(workdir, "nginx"), exist_ok=True)
    with open(os.path.join(workdir, "nginx.conf"), "w") as f:
        f.write(canned.nginx_conf(os.path.join(workdir, "nginx"), NGINX_PORT))
    for port in (NGINX_PORT, SSE_PORT, EXTRA_PORT, *GW_PORTS.values()):
        if not ps.port_free(port):
            raise SystemExit(f"port {port} is in use: is another run of the benchmark going on?")
    ps.pin([os.getpid()], "1")
    b = Bench(a, workdir)
    ups = [ps.start(["nginx", "-p", os.path.join(workdir, "nginx"), "-c", os.path.join(workdir, "nginx.conf")], "1",
                    log=os.path.join(workdir, "nginx.log")),
           ps.start([PY, os.path.join(HERE, "upstream.py"), str(SSE_PORT), "--gap-ms", "1"], "1",
                    log=os.path.join(workdir, "upstream.log"))]
    stores: list[Store] = []
    all_gws: list[Gateway] = []
    extra_requests: dict[str, dict[str, int]] = {}
    res: dict = {"generated": datetime.now(UTC).isoformat(timespec="seconds"), "quick": a.quick,
                 "command": "make bench" + (" BENCH_ARGS=--quick" if a.quick else ""),
                 "machine": ps.machine(), "versions": versions(),
                 "config": {k: getattr(a, k) for k in ("reps", "dur", "conc", "targets", "workloads", "paced_conc",
                                                       "ttfb_n", "open_streams", "open_gap_ms", "worker_reps",
                                                       "max_foreign", "gc_probe", "gc_freeze", "gateway_env")}
                           | {"sse_gap_ms": 1, "chunks": canned.N_CHUNKS},
                 "notes": notes}
    try:
        ps.wait_port(NGINX_PORT)
        ps.wait_port(SSE_PORT)
        b.upstream_pids = {NGINX_PORT: ps.tree(ups[0].pid), SSE_PORT: ps.tree(ups[1].pid)}
        suffix = f"{os.getpid()}"
        for target in [t for t in a.targets if t != "direct"]:
            for kind, up in (("json", NGINX_PORT), ("sse", SSE_PORT)):
                store = Store(target, f"majordomo_bench_{suffix}_{target}_{kind}", workdir)
                stores.append(store)
                gw = Gateway(store, up, GW_PORTS[(target, kind)], workdir, f"{target}-{kind}")
                b.gateways[(target, kind)] = gw
                all_gws.append(gw)
        log(f"gateways up: {', '.join(f'{g.label}:{g.port} pid {g.proc.pid}' for g in all_gws)}; workdir {workdir}")
        for (_, kind), gw in b.gateways.items():
            b.warm_up(gw, kind)
        ps.quiet_wait(max_wait=30)
        res["idle_cpu_ms_per_s"] = idle_cpu(all_gws)
        for rep in range(a.reps):
            log(f"repetition {rep + 1}/{a.reps}")
            b.rep(rep)
        res["summary"] = summarize(b.records)
        res["rss_hwm_mb"] = {g.label: round(g.hwm_mb(), 1) for g in all_gws}
        if GC_PROBE["enabled"]:
            res["gc"] = {"freeze": GC_PROBE["freeze"], "gateways": gc_pauses(all_gws)}
        run_extras(a, b, res, extra_requests)
        log("rows written vs requests served")
        res["rows"] = b.check_rows(all_gws, extra_requests)
        res["disturbed_phases"] = b.disturbed
        res["duration_s"] = round(time.time() - t_start)
        res["targets"] = verdicts(res)
    finally:
        tear_down(a, workdir, all_gws, ups, stores)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    log(f"results: {a.out}")
    if a.final:
        with open(a.final, "w") as f:
            json.dump(res, f, indent=1)
        log(f"results: {a.final}")
    if a.final and not a.no_docs:
        import report

        report.write_docs(res, os.path.join(ROOT, "docs", "performance.md"))
        log("tables written to docs/performance.md")
    import report

    print(report.tables(res))
    log(f"done in {time.time() - t_start:.0f}s")
    return 0 if all(v["match"] for v in res.get("rows", {}).values()) else 1


if __name__ == "__main__":
    sys.exit(main())
