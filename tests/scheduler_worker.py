"""One scheduler replica for the multi-process tests: `python -m tests.scheduler_worker`.

It runs the production scheduler (`bot.scheduler.build_scheduler`) on its own
clock, which it moves through `--periods` Monday mornings, looking three times
each (09:00, 09:01, 09:02 in Paris), as a replica would minute by minute. All
replicas start at the same wall-clock instant (`--go-at`), so their looks race.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

from bot.config import Settings
from bot.runtime import build_runtime
from bot.scheduler import build_scheduler
from bot.slack_app import slack_client
from rbac_core import ManualClock

FIRST_MONDAY = datetime(2026, 12, 28, 8, 0, 30, tzinfo=UTC)  # 09:00:30 in Paris
LOOKS = 3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--slack", required=True)
    parser.add_argument("--owner", required=True)
    parser.add_argument("--periods", type=int, default=10)
    parser.add_argument("--go-at", type=float, default=0.0)
    args = parser.parse_args()
    settings = Settings(
        database_url=args.db,
        slack_bot_token="xoxb-0000-test",
        slack_api_url=args.slack,
        audit_channel="C0WAAUDIT",
        timezone="Europe/Paris",
    )
    clock = ManualClock(FIRST_MONDAY.timestamp())
    runtime = build_runtime(settings, clock=clock)
    scheduler = build_scheduler(runtime, slack_client(settings), owner=args.owner)
    while time.time() < args.go_at:
        time.sleep(0.005)
    for week in range(args.periods):
        for look in range(LOOKS):
            moment = FIRST_MONDAY + timedelta(weeks=week, minutes=look)
            clock.now = moment.timestamp()
            scheduler.tick()
    runtime.db.dispose()


if __name__ == "__main__":
    main()
