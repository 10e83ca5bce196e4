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
    # Lives as long as the process (no with-block can span it); line-buffered, so nothing is lost at exit.
    _out = open(f"{_LOG}.{os.getpid()}", "a", buffering=1)  # noqa: SIM115
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

# Event-loop stalls: a watcher thread samples the loop thread's stack whenever the loop has not
# run its 1 ms heartbeat for over 2 ms, and appends "stall_ms<TAB>innermost frames" lines.  The
# switch interval is lowered so the watcher gets the GIL during a stall (a small perturbation;
# diagnosis only).
if _LOG and "serve" in sys.argv and os.environ.get("MAJORDOMO_BENCH_STALLS") == "1":
    import asyncio
    import threading
    import traceback

    sys.setswitchinterval(0.0005)
    _stalls = open(f"{_LOG}.stalls.{os.getpid()}", "a", buffering=1)  # noqa: SIM115 - as _out above
    _beat = [time.perf_counter(), 0]

    def _heartbeat(loop):
        _beat[0] = time.perf_counter()
        loop.call_later(0.001, _heartbeat, loop)

    def _watch(main_id):
        seen = None
        while True:
            time.sleep(0.0005)
            lag = time.perf_counter() - _beat[0]
            if lag > 0.002 and seen != _beat[0]:
                seen = _beat[0]
                frame = sys._current_frames().get(main_id)
                stack = traceback.extract_stack(frame)[-6:] if frame is not None else []
                where = " < ".join(f"{os.path.basename(f.filename)}:{f.lineno}:{f.name}" for f in reversed(stack))
                _stalls.write(f"{lag * 1000:.2f}\t{where}\n")

    from majordomo_gateway import app as _app_mod

    _orig_startup = _app_mod.Gateway.startup

    async def _startup_with_watch(self):
        await _orig_startup(self)
        loop = asyncio.get_running_loop()
        loop.call_soon(_heartbeat, loop)
        threading.Thread(target=_watch, args=(threading.get_ident(),), daemon=True).start()

    _app_mod.Gateway.startup = _startup_with_watch
