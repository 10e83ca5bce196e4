"""Start one candidate proxy in the foreground (the driver pins it with taskset).

    python serve.py SERVER PORT        SERVER: uvicorn | granian-asgi | granian-rsgi | aiohttp
    client choice and upstream ports come from the environment (see apps.py)

granian runs one worker process (a child of this one), one runtime thread, uvloop.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main() -> None:
    server, port = sys.argv[1], int(sys.argv[2])
    if server == "uvicorn":
        import uvicorn
        from apps import asgi_app

        uvicorn.run(
            asgi_app,
            host="127.0.0.1",
            port=port,
            loop="uvloop",
            http="httptools",
            lifespan="off",
            access_log=False,
            log_level="warning",
            ws="none",
            backlog=4096,
        )
    elif server in ("granian-asgi", "granian-rsgi"):
        os.environ["PYTHONPATH"] = HERE + os.pathsep + os.environ.get("PYTHONPATH", "")
        iface = "asginl" if server == "granian-asgi" else "rsgi"
        target = "apps:asgi_app" if server == "granian-asgi" else "apps:rsgi_app"
        args = [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            iface,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--http",
            "1",
            "--no-ws",
            "--workers",
            "1",
            "--runtime-threads",
            "1",
            "--runtime-mode",
            "st",
            "--blocking-threads",
            "1",
            "--loop",
            "uvloop",
            "--backlog",
            "4096",
            "--log-level",
            "warning",
            "--no-access-log",
            "--working-dir",
            HERE,
            target,
        ]
        extra = os.environ.get("STACK_GRANIAN_ARGS")
        if extra:
            args[-1:-1] = extra.split()
        os.execv(sys.executable, args)
    elif server == "aiohttp":
        import uvloop
        from aiohttp import web
        from apps import make_aiohttp_app

        uvloop.install()
        web.run_app(make_aiohttp_app(), host="127.0.0.1", port=port, access_log=None, print=None, backlog=4096)
    else:
        raise SystemExit(f"unknown server {server}")


if __name__ == "__main__":
    main()
