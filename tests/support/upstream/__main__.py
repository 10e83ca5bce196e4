"""``python -m tests.support.upstream --port 9100``: run the mock upstream standalone."""

from __future__ import annotations

import argparse
import json

from .server import MockUpstream


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.upstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100, help="0 picks a free port")
    parser.add_argument(
        "--defaults",
        default=None,
        help='server-wide settings as JSON, e.g. \'{"scenario": "tool-call", "usage": {"input_tokens": 5}}\'',
    )
    args = parser.parse_args()
    defaults = json.loads(args.defaults) if args.defaults else {}
    MockUpstream(host=args.host, port=args.port, **defaults).serve_forever()


if __name__ == "__main__":
    main()
