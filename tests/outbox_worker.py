"""One outbox worker in a process of its own: `python -m tests.outbox_worker`.

It is the production worker (`bot.outbox_worker.build_worker`, the Slack
deliverer and `rbac_core.outbox.Outbox`) with a short lease, so a test can
kill it with SIGKILL and see its rows taken over in seconds rather than a
minute. It starts delivering at `--go-at` (the same instant for every worker
of a test, so they race) and exits once it has found nothing to do for
`--idle` seconds.
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta

from bot.config import Settings
from bot.outbox_worker import build_worker
from rbac_core import Database
from rbac_core.outbox import Outbox


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--slack", required=True)
    parser.add_argument("--owner", required=True)
    parser.add_argument("--lease", type=float, default=60.0)
    parser.add_argument("--go-at", type=float, default=0.0)
    parser.add_argument("--idle", type=float, default=3.0)
    args = parser.parse_args()
    settings = Settings(
        database_url=args.db,
        slack_bot_token="xoxb-0000-test",
        slack_api_url=args.slack,
        audit_channel="C0WAAUDIT",
        alert_channel="C0WAALERT",
    )
    db = Database(settings.database_url)
    outbox = Outbox(db, lease=timedelta(seconds=args.lease))
    worker = build_worker(settings, outbox, owner=args.owner)
    time.sleep(max(0.0, args.go_at - time.time()))
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < args.idle:
        if worker.run_once():
            idle_since = time.monotonic()
        else:
            time.sleep(0.05)
    db.dispose()


if __name__ == "__main__":
    main()
