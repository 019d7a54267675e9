"""One scheduler replica for the multi-process tests: `python -m tests.scheduler_worker`.

It runs the production scheduler (`bot.scheduler.build_scheduler`) on its own
clock, which it moves through `--periods` Monday mornings, looking `--looks`
times each (09:00, 09:01, 09:02 in Paris by default), as a replica would minute
by minute. `--start`, `--schedule`, `--grace-hours` and `--alert-channel` set
another first look, the review's crontab line and grace time, and where
given-up periods are reported, for the tests of stale claims.

Replicas look in step, as real ones do on clocks kept in time (NTP): look
number k starts `SLOT` seconds of wall time after look k-1, counted from
`--go-at`, the same instant for all, give or take `JITTER` (replicas' looks
are never in perfect phase, and without it the same one tends to win every
race), so their looks race. A replica still busy
when its next looks are due skips them, as APScheduler's coalescing does.
Free-running clocks would not do: a replica a week ahead of the others would
rightly judge their leases lapsed (every lease-based scheme assumes clocks
that roughly agree), and give up periods they are still running.
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime, timedelta

from bot.config import DEFAULT_AUDIT_SCHEDULE, DEFAULT_GRACE_HOURS, Settings
from bot.runtime import build_runtime
from bot.scheduler import build_scheduler
from bot.slack.app import slack_client
from rbac_core import ManualClock

FIRST_MONDAY = datetime(2026, 12, 28, 8, 0, 30, tzinfo=UTC)  # 09:00:30 in Paris
LOOKS = 3
SLOT = 0.5  # seconds of wall time between looks: three looks outlast a run on a busy machine
JITTER = 0.02  # seconds: about as long as a claim takes, so the looks still collide


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--slack", required=True)
    parser.add_argument("--owner", required=True)
    parser.add_argument("--periods", type=int, default=10)
    parser.add_argument("--looks", type=int, default=LOOKS)
    parser.add_argument("--go-at", type=float, default=0.0)
    parser.add_argument("--start", type=datetime.fromisoformat, default=FIRST_MONDAY)
    parser.add_argument("--schedule", default=DEFAULT_AUDIT_SCHEDULE)
    parser.add_argument("--grace-hours", type=int, default=DEFAULT_GRACE_HOURS)
    parser.add_argument("--alert-channel", default=None)
    parser.add_argument("--secret-key", default=None, help="the workspace's WA_SECRET_KEY")
    args = parser.parse_args()
    settings = Settings(
        database_url=args.db,
        slack_bot_token="xoxb-0000-test",
        slack_api_url=args.slack,
        audit_channel="C0WAAUDIT",
        alert_channel=args.alert_channel,
        timezone="Europe/Paris",
        audit_schedule=args.schedule,
        audit_grace_hours=args.grace_hours,
        secret_key=args.secret_key,
    )
    first: datetime = args.start
    clock = ManualClock(first.timestamp())
    runtime = build_runtime(settings, clock=clock)
    scheduler = build_scheduler(runtime, slack_client(settings), owner=args.owner)
    start = args.go_at or time.time()
    looks = args.periods * args.looks
    look = max(0, int((time.time() - start) / SLOT))  # up late: join at the current look
    while look < looks:
        delay = start + look * SLOT + random.uniform(0, JITTER) - time.time()
        if delay > 0:
            time.sleep(delay)
        week, minute = divmod(look, args.looks)
        clock.now = (first + timedelta(weeks=week, minutes=minute)).timestamp()
        scheduler.tick()
        look = max(look + 1, int((time.time() - start) / SLOT))
    runtime.db.dispose()


if __name__ == "__main__":
    main()
