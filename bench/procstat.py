"""Process and machine accounting from /proc (the ideas of the stack-choice harness's run_http.py;
that harness, bench/stack/, has been removed, see docs/stack-choice.md).

CPU of a process tree = utime + stime of every process in it (all threads included), read from
/proc/<pid>/stat; peak RSS = VmHWM from /proc/<pid>/status.  "Foreign" load = CPU that the two
cores spent during a phase minus what our own processes spent: when other work on the machine
disturbed a phase, the phase is re-run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

TICK = os.sysconf("SC_CLK_TCK")
# Our processes run at nice -19 when we are root: other load then gets a small share of our cores.
NICE = ["nice", "-n", "-19"] if os.geteuid() == 0 else []


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return None
    return st[st.rindex(")") + 2:].split()


def children_map() -> dict[int, list[int]]:
    m: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            fields = _stat_fields(int(d))
            if fields is not None:
                m.setdefault(int(fields[1]), []).append(int(d))
    return m


def tree(pid: int) -> list[int]:
    m = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(m.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for p in pids:
        fields = _stat_fields(p)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def status_kb(pids: list[int], key: str) -> int:
    """Sum of a /proc/<pid>/status field (VmRSS, VmHWM) in kB."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


class Busy(dict):
    """Per-core user+nice+system seconds (irq/softirq are charged to no process: left out), and
    the softirq seconds apart (``softirq(busy)``)."""

    soft: dict[int, float]


def core_busy() -> Busy:
    out = Busy()
    out.soft = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = line.split()
                out[int(v[0][3:])] = (int(v[1]) + int(v[2]) + int(v[3])) / TICK
                out.soft[int(v[0][3:])] = int(v[7]) / TICK
    return out


def softirq(busy: Busy) -> dict[int, float]:
    return busy.soft


def quiet_wait(max_wait: float = 60, limit: float = 0.10) -> float:
    """Wait, bounded, until both cores together are busy less than ``limit`` of a core."""
    t0 = time.time()
    while True:
        b0 = core_busy()
        time.sleep(1)
        b1 = core_busy()
        if sum(b1[c] - b0[c] for c in b1) < limit or time.time() - t0 > max_wait:
            return time.time() - t0
        time.sleep(1)


def wait_port(port: int, timeout: float = 20) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open within {timeout}s")


def port_free(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return False
    except OSError:
        return True


def start(cmd: list[str], cores: str, env=None, log: str | None = None, log_mode: str = "w",
          cwd=None) -> subprocess.Popen:
    """``cmd`` pinned to ``cores`` (taskset list, e.g. "0" or "0,1"), in its own process group.

    ``log``: a path that gets the process's stdout and stderr (opened with ``log_mode``); the child
    keeps its own copy of the descriptor, so ours is closed once the process has started.
    """
    argv = [*NICE, "taskset", "-c", cores, *cmd]
    if log is None:
        return subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                start_new_session=True)
    with open(log, log_mode) as out:
        return subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(p: subprocess.Popen, timeout: float = 35) -> None:
    """SIGTERM the process group (a graceful drain for the gateway), SIGKILL after ``timeout``."""
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    except ProcessLookupError:
        pass


def pin(pids: list[int], cores: str) -> None:
    for p in pids:
        subprocess.run(["taskset", "-a", "-p", "-c", cores, str(p)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)


def machine() -> dict:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {"nproc": os.cpu_count(), "cpu_model": model, "mem_gib": round(mem_kb / 2**20, 1),
            "kernel": os.uname().release}
