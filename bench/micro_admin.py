"""Per-request cost, in ns, of what issue 12 added to the proxy path (docs/performance.md,
"Access control on the proxy path"): the /api/ prefix check in Gateway.__call__, a key's expiry
check in authenticate, and the rule gate (plus, for keys with rules, authorize()).

    .venv/bin/python bench/micro_admin.py            # prints a table and writes nothing

Each figure is the best of 7 timeit repeats (the least-disturbed run), minus the cost of the same
loop with the statement replaced by ``pass``, so it is the statement's own cost.
"""

from __future__ import annotations

import platform
import sys
import timeit
from datetime import UTC, datetime, timedelta

from majordomo_gateway.auth.key_rules import refusal
from majordomo_gateway.storage.records import KeyRecord

NOW = datetime.now(UTC)
PLAIN = KeyRecord(id="k", name="k", description=None, key_prefix="mdm_sk_x", created_at=NOW, updated_at=NOW,
                  revoked_at=None, last_used_at=None, request_count=0)
RULED = KeyRecord(id="k", name="k", description=None, key_prefix="mdm_sk_x", created_at=NOW, updated_at=NOW,
                  revoked_at=None, last_used_at=None, request_count=0, expires_at=NOW + timedelta(days=30),
                  allowed_providers=("openai", "anthropic"), allowed_models=("gpt-4o*", "claude-*", "o3"))
NUMBER = 2_000_000

CASES = {
    # app.py: the one test a proxied request pays for the admin API (it is not /health or /readyz)
    "path.startswith('/api/') on a proxy path": ("path.startswith('/api/')", {"path": "/v1/chat/completions"}),
    # pipeline.authenticate: a key without expiry
    "expiry check, key without expiry": ("key.expires_at is not None and key.expires_at <= now",
                                         {"key": PLAIN, "now": NOW}),
    "expiry check, key with expiry": ("key.expires_at is not None and key.expires_at <= now",
                                      {"key": RULED, "now": NOW}),
    # pipeline.ProxyHandler._steps: the gate before authorize()
    "rule gate, key without rules": ("key.allowed_providers is not None or key.model_pattern is not None",
                                     {"key": PLAIN}),
    # authorize() for a key with both rules, allowed (the common case for such a key)
    "refusal(), key with 2 providers and 3 model globs, allowed": (
        "refusal(key, 'openai', 'gpt-4o-mini-2024-07-18')", {"key": RULED, "refusal": refusal}),
}


def cost_ns(statement: str, names: dict[str, object]) -> float:
    def best(stmt: str) -> float:
        return min(timeit.repeat(stmt, globals=names, number=NUMBER, repeat=7)) / NUMBER * 1e9

    return max(0.0, best(statement) - best("pass"))


def main() -> int:
    print(f"CPython {platform.python_version()} on {platform.machine()}, best of 7 x {NUMBER:,}")
    print("| what | ns per request |")
    print("| --- | --- |")
    for label, (statement, names) in CASES.items():
        print(f"| {label} | {cost_ns(statement, names):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
