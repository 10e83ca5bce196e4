"""What the test suites share: real processes, real sockets, real databases, and the one fake upstream.

- ``tests.support.processes``: the repo and venv paths, free ports, the ``majordomo`` CLI, ``run_sync``
- ``tests.support.postgres``: throwaway databases on the machine's PostgreSQL
- ``tests.support.gateway``: ``GatewayProcess`` (a real ``majordomo serve``) and reading back its rows
- ``tests.support.client``: calling a gateway as a client does (``post``, ``usage_header``; ``read_until_and_close``,
  a raw socket that hangs up as soon as it has a given event)
- ``tests.support.records``: ``RequestRecord`` rows for the storage and spool tests
- ``tests.support.guide``: the guide's SQL, and the keys and models of the end-to-end agents
- ``tests.support.reliability``: fault-injection plumbing (own PostgreSQL cluster, load, accounting)
- ``tests.support.upstream``: the fake OpenAI/Anthropic/Gemini server (``python -m tests.support.upstream``)

Test modules import from here and from conftest fixtures only, never from one another
(``tests/test_layout.py`` checks it).
"""

from tests.support.gateway import GatewayProcess, assert_no_secret
from tests.support.postgres import PG_ADMIN_URL, PostgresServer, postgres_available
from tests.support.processes import BIN, REPO, free_port, majordomo, run_sync

__all__ = [
    "BIN",
    "PG_ADMIN_URL",
    "REPO",
    "GatewayProcess",
    "PostgresServer",
    "assert_no_secret",
    "free_port",
    "majordomo",
    "postgres_available",
    "run_sync",
]
