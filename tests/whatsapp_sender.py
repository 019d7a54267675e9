"""One WhatsApp sender in a process of its own: `python -m tests.whatsapp_sender`.

It is the production sender (`bot.whatsapp.sender.WhatsAppSender` with the real
Graph client, sending as in `serve`) against a fake Graph API, with a short lease
so a test can kill it with SIGKILL and see its rows taken over in seconds. It
starts at `--go-at` (the same instant for every sender of a test, so they race)
and exits once nothing is left to send and it has been idle for `--idle` seconds
(a row put back for a while must not be left behind).
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta

from bot.whatsapp.graph import GraphClient
from bot.whatsapp.sender import CUSTOMER_PACE, PREFIX, WhatsAppSender
from rbac_core import Database
from rbac_core.outbox import Outbox


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--graph", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--owner", required=True)
    parser.add_argument("--rate", type=float, default=80.0)
    parser.add_argument("--lease", type=float, default=60.0)
    parser.add_argument("--go-at", type=float, default=0.0)
    parser.add_argument("--idle", type=float, default=3.0)
    args = parser.parse_args()
    db = Database(args.db)
    outbox = Outbox(db, prefix=PREFIX, pace=CUSTOMER_PACE, lease=timedelta(seconds=args.lease))
    sender = WhatsAppSender(
        db,
        GraphClient(args.graph, args.token),
        default_rate=args.rate,
        outbox=outbox,
        owner=args.owner,
    )
    time.sleep(max(0.0, args.go_at - time.time()))
    sender.poll = 0.1
    busy = [time.monotonic(), 0]

    def done() -> bool:
        """Idle for `--idle` seconds with nothing left to send (looked at twice a second)."""
        now = time.monotonic()
        if now - busy[0] < 0.5:
            return False
        pending = outbox.pending()
        if pending != busy[1]:
            busy[0], busy[1] = now, pending
            return False
        return pending == 0 and now - busy[0] > args.idle

    sender.run_window(done)
    sender.stop()
    db.dispose()


if __name__ == "__main__":
    main()
