"""Diagnostic probe loaded into gateway processes by ``gateway_bench.py --gc-probe`` (through
PYTHONPATH; the gateway's code is not changed): records every garbage-collector pause, to tell
collector stalls from other latency tails.

MAJORDOMO_BENCH_GC_LOG: the file to append one line per collection to ("gen ms collected").
MAJORDOMO_BENCH_GC_FREEZE=1: also call gc.freeze() once the gateway has started (the what-if of
keeping the objects built at start-up, the price catalog among them, out of every collection).
"""

import gc
import os
import sys
import time

_LOG = os.environ.get("MAJORDOMO_BENCH_GC_LOG")

if _LOG and "serve" in sys.argv:
    _out = open(f"{_LOG}.{os.getpid()}", "a", buffering=1)  # lives as long as the process
    _start = [0.0]

    def _callback(phase, info):
        if phase == "start":
            _start[0] = time.perf_counter()
        else:
            _out.write(f"{info['generation']} {(time.perf_counter() - _start[0]) * 1000:.3f} {info['collected']}\n")

    gc.callbacks.append(_callback)

    if os.environ.get("MAJORDOMO_BENCH_GC_FREEZE") == "1":
        from majordomo_gateway import app as _app

        _startup = _app.Gateway.startup

        async def _startup_then_freeze(self):
            await _startup(self)
            gc.collect()
            gc.freeze()

        _app.Gateway.startup = _startup_then_freeze
