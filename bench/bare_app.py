"""The baseline of the HTTP benchmarks: a Flask app whose routes answer 200 at once.

It is served by `python -m bench.bare_app --port P --workers 2`, which goes through
`bot.server.serve` itself with only the app swapped, so the gunicorn settings
(worker class, threads, timeouts) are those of `wa-access serve` by construction
and cannot drift apart when bot/server.py changes. `bench.bare_app:app` also works
with gunicorn's own command line, for poking at it by hand.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from flask import Flask, request

app = Flask("wa_access_bare")


@app.post("/slack/events")
@app.post("/whatsapp/webhook")
def read_and_answer() -> tuple[str, int]:
    # Read the body as the real endpoints do, so both pay for receiving it.
    request.get_data()
    return "", 200


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pin-workers", action="store_true", help="as `wa-access serve`'s")
    args = parser.parse_args(argv)

    from bot import server
    from bot.config import Settings
    from bot.logs import configure_logging

    configure_logging(Settings())  # the master's lines, as `wa-access serve` has them

    # serve() builds each worker's app as create_app(build_runtime(settings)):
    # swap both, and everything else (the gunicorn options) stays bot.server's. A bare
    # 200 has no outbox to deliver, so no worker thread runs beside it.
    vars(server).update(build_runtime=lambda settings: None, create_app=lambda runtime: app)
    server.serve(
        Settings(),
        host=args.host,
        port=args.port,
        workers=args.workers,
        background=False,
        pinning=server.CpuPinning.of_this_process() if args.pin_workers else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
