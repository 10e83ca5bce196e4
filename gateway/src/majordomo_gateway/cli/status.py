"""``majordomo status``: what a running gateway's row writer is doing, from its ``/readyz``.

Exit status: 0 ready, 1 degraded or not ready (the database is unreachable, the spool is not
writable), 2 the gateway could not be reached.  With ``--workers N`` each call is answered by one
worker: the queue and counters are that worker's, the spool figures cover the whole (shared)
spool directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:7680"


def add_parser(commands: Any) -> None:
    status = commands.add_parser(
        "status", help="show a running gateway's database and row-writer state",
        description="Read a running gateway's /readyz and show the database and row-writer state: "
                    "queue depth, spool size, oldest unwritten row, errors. Exit status 0 ready, "
                    "1 degraded or not ready, 2 unreachable.")
    status.add_argument("--url", default=DEFAULT_URL, help=f"the gateway's base URL (default {DEFAULT_URL})")
    status.add_argument("--json", action="store_true", help="print /readyz's JSON as it is")
    status.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer (default 5)")
    status.set_defaults(handler=run)


def fetch(url: str, timeout: float) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of ``GET {url}/readyz``; a 503 is an answer too."""
    request = urllib.request.Request(url.rstrip("/") + "/readyz", headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def run(args: argparse.Namespace) -> int:
    try:
        code, body = fetch(args.url, args.timeout)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"majordomo: cannot reach the gateway at {args.url}: {reason}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(body, indent=2, sort_keys=True))
    else:
        print(render(args.url, code, body))
    return 0 if code == 200 and body.get("status") == "ok" else 1


def _bytes(value: Any) -> str:
    size = float(value or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def render(url: str, code: int, body: dict[str, Any]) -> str:
    writer: dict[str, Any] = body.get("writer") or {}
    status = body.get("status", "?")
    if body.get("error"):
        status = f"{status}: {body['error']}"
    age = writer.get("oldest_unwritten_age_s")
    spool = f"{_bytes(writer.get('spool_bytes'))} in {writer.get('spool_files', '?')} files"
    spool += ", writable" if writer.get("spool_ok", True) else ", NOT WRITABLE"
    rows: list[tuple[str, Any]] = [
        ("gateway", f"{url} (HTTP {code}, worker pid {writer.get('pid', '?')})"),
        ("status", status),
        ("database", "ok" if writer.get("database_ok", code == 200) else "unavailable (rows go to the spool)"),
        ("queue", f"{writer.get('queue_depth', '?')} rows (bound {writer.get('queue_size', '?')}), "
                  f"{writer.get('inflight_rows', 0)} being written"),
        ("spool", spool),
        ("oldest unwritten row", "-" if age is None else f"{age:.1f} s"),
        ("group-commit window", f"{writer.get('flush_interval_s', '?')} s (writer.flush_interval)"),
        ("rows written", writer.get("rows_written")),
        ("rows spooled", writer.get("rows_spooled")),
        ("rows replayed", writer.get("rows_replayed")),
        ("rows dropped", writer.get("rows_dropped")),
        ("rows rejected", writer.get("rows_rejected")),
        ("damaged spool records", writer.get("records_damaged")),
        ("write errors", writer.get("write_errors")),
        ("spool errors", writer.get("spool_errors")),
        ("last error", writer.get("last_error") or "-"),
        ("last spool error", writer.get("last_spool_error") or "-"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {'-' if value is None else value}" for name, value in rows]
    for warning in body.get("warnings") or []:
        lines.append(f"{'warning':<{width}}  {warning}")
    return "\n".join(lines)
