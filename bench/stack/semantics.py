"""Behaviour checks for each server (x client): what a downstream client sees when things go wrong.

1. break      upstream sends 3 SSE events then closes mid-body (no 0-chunk). The client library raises
              inside the relay loop, i.e. an exception *after the response started*. Does the server
              abort the downstream connection (client sees an incomplete chunked body: good) or end
              the chunked body cleanly (bad: the client thinks the stream finished)?
              Checked with a raw socket + httptools parser, and with httpx as a real SDK would.
2. disconnect client reads 3 events of a 5 s stream (/sse-slow) then closes its socket. Does the
              proxy notice and drop the upstream (upstream log: complete=0 soon) or keep relaying to
              the end (complete=1 after ~5 s)? ASGI servers also run with STACK_WATCH_DISCONNECT=1.
3. backpressure client asks for /big (64 MiB) and does not read for 3 s: does the proxy's RSS
              stay flat (send() waits for the socket) or grow (the server buffers without bound)?

Usage: python semantics.py [--servers ...] [--clients ...]   (prints a JSON report and a summary)
All traffic goes to 127.0.0.1; every wait has a timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

import httptools

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run_http import rss_mb, start, stop, tree, wait_port, wait_port_free  # noqa: E402

PY = sys.executable
UP_PORT, PROXY_PORT = 18182, 18190
WORK = "/tmp/stackbench-sem"
UP_LOG = f"{WORK}/upstream.log"
PROXY_LOG = f"{WORK}/proxy.log"


class Reader:
    def __init__(self):
        self.p = httptools.HttpResponseParser(self)
        self.headers = {}
        self.status = None
        self.body = bytearray()
        self.complete = False

    def on_header(self, k, v):
        self.headers[k.decode().lower()] = v.decode()

    def on_headers_complete(self):
        self.status = self.p.get_status_code()

    def on_body(self, b):
        self.body += b

    def on_message_complete(self):
        self.complete = True


def raw_request(path: str, close_after_events: int | None = None, stall: float = 0, timeout: float = 10) -> dict:
    s = socket.create_connection(("127.0.0.1", PROXY_PORT))
    s.sendall(b"GET %s HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n\r\n" % path.encode())
    r = Reader()
    ending = None
    if stall:
        time.sleep(stall)
    s.settimeout(timeout)
    t0 = time.time()
    try:
        while True:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                ending = "RST (connection reset)"
                break
            except TimeoutError:
                ending = f"no data for {timeout}s (hangs)"
                break
            if not data:
                ending = "FIN (peer closed)"
                break
            try:
                r.p.feed_data(data)
            except httptools.HttpParserError as e:
                ending = f"parser error {e!r}"
                break
            if r.complete:
                ending = "message complete (terminating 0-chunk / full length)"
                break
            if close_after_events and r.body.count(b"data:") >= close_after_events:
                ending = "client closed"
                break
    finally:
        s.close()
    return {
        "status": r.status,
        "framing": r.headers.get("transfer-encoding")
        or ("content-length" if "content-length" in r.headers else "close-delimited"),
        "events": r.body.count(b"data:"),
        "complete": r.complete,
        "ending": ending,
        "secs": round(time.time() - t0, 2),
    }


def httpx_stream(path: str) -> str:
    import httpx

    n = 0
    try:
        with httpx.Client(timeout=10) as c, c.stream("GET", f"http://127.0.0.1:{PROXY_PORT}{path}") as r:
            for line in r.iter_lines():
                n += line.startswith("data:")
        return f"ended cleanly after {n} events (BAD)"
    except Exception as e:
        return f"raised {type(e).__name__}: {str(e)[:90]} after {n} events"


def read_log(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().splitlines()
    except OSError:
        return []


def wait_log(path: str, n_before: int, timeout: float) -> tuple[str | None, float]:
    t0 = time.time()
    while time.time() - t0 < timeout:
        lines = read_log(path)
        if len(lines) > n_before:
            return lines[n_before], time.time() - t0
        time.sleep(0.05)
    return None, timeout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", nargs="+", default=["uvicorn", "granian-asgi", "granian-rsgi", "aiohttp"])
    ap.add_argument("--clients", nargs="+", default=["aiohttp", "httpx", "raw"])
    ap.add_argument("--out", default=os.path.join(HERE, "results", "semantics.json"))
    a = ap.parse_args()
    os.makedirs(WORK, exist_ok=True)
    for f in (UP_LOG, PROXY_LOG):
        if os.path.exists(f):
            os.remove(f)
    up = start(
        [PY, os.path.join(HERE, "upstream.py"), str(UP_PORT)], 1, env=dict(os.environ, STACK_UPSTREAM_LOG=UP_LOG)
    )
    report = []
    try:
        wait_port(UP_PORT)
        runs = [(s, c, False) for s in a.servers for c in a.clients]
        runs += [(s, "aiohttp", True) for s in a.servers if s in ("uvicorn", "granian-asgi")]
        for server, client, watch in runs:
            env = dict(
                os.environ,
                STACK_CLIENT=client,
                STACK_JSON_PORT=str(UP_PORT),
                STACK_SSE_PORT=str(UP_PORT),
                STACK_PROXY_LOG=PROXY_LOG,
                STACK_WATCH_DISCONNECT="1" if watch else "0",
            )
            wait_port_free(PROXY_PORT)
            log = open(f"{WORK}/proxy-{server}-{client}-{int(watch)}.log", "w")
            p = start([PY, os.path.join(HERE, "serve.py"), server, str(PROXY_PORT)], 0, env=env, log=log)
            rec: dict = {"server": server, "client": client, "watch_disconnect": watch}
            try:
                wait_port(PROXY_PORT)
                time.sleep(0.3)
                pids = tree(p.pid)
                # 1. exception after the response started
                if not watch:
                    rec["break_raw"] = raw_request("/sse-break")
                    rec["break_httpx"] = httpx_stream("/sse-break")
                    rec["sse_ok"] = raw_request("/sse")
                # 2. client disconnect
                n_up = len(read_log(UP_LOG))
                n_px = len(read_log(PROXY_LOG))
                rec["disconnect_client"] = raw_request("/sse-slow", close_after_events=3)
                line, secs = wait_log(UP_LOG, n_up, 7)
                rec["disconnect_upstream"] = f"{line} after {secs:.1f}s" if line else "no upstream log in 7s"
                pl, _ = wait_log(PROXY_LOG, n_px, 1)
                rec["disconnect_proxy_log"] = pl
                # 3. backpressure
                if client == "aiohttp":
                    time.sleep(0.3)
                    n_up = len(read_log(UP_LOG))
                    r0 = rss_mb(pids)
                    rss_peak = r0
                    s = socket.create_connection(("127.0.0.1", PROXY_PORT))
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                    s.sendall(b"GET /big HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
                    for _ in range(30):  # 3 s without reading
                        time.sleep(0.1)
                        rss_peak = max(rss_peak, rss_mb(pids))
                    s.close()
                    line, secs = wait_log(UP_LOG, n_up, 8)
                    rec["backpressure"] = {
                        "rss_before_mb": round(r0, 1),
                        "rss_peak_while_stalled_mb": round(rss_peak, 1),
                        "upstream_after_client_close": f"{line} after {secs:.1f}s" if line else "no log in 8s",
                    }
            except Exception as e:
                rec["error"] = repr(e)
            finally:
                stop(p)
                log.close()
            with open(f"{WORK}/proxy-{server}-{client}-{int(watch)}.log") as f:
                rec["server_stderr_tail"] = f.read()[-600:]
            report.append(rec)
            print(json.dumps(rec, indent=1), flush=True)
    finally:
        stop(up)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(report, f, indent=1)
    print("\nSUMMARY")
    for r in report:
        print(
            f"{r['server']:>13} {r['client']:>8} watch={int(r['watch_disconnect'])} | "
            f"break: {r.get('break_raw', {}).get('ending')} / httpx: {r.get('break_httpx')} | "
            f"disconnect: {r.get('disconnect_upstream')} | bp: {r.get('backpressure')}"
        )


if __name__ == "__main__":
    main()
