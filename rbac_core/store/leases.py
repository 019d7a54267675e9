"""Leases on rows: how scheduled periods and outbox deliveries are held by one worker.

Work shared by several processes (schedulers claiming a period, workers
delivering outbox rows) is held the same way: the row says who holds it
(`owner`), which attempt this is (`attempt`), and until when (`lease_until`),
with `status = 'running'` while held. Every move is one conditional UPDATE:

- taking a row over is allowed only once its lease has lapsed (`lapsed`),
  so of several processes racing, exactly one wins;
- renewing, finishing or giving a row back is allowed only to the holder of
  that very attempt (`held`), so a worker that stalled past its lease and
  was taken over cannot overwrite its successor's work (a fencing token,
  as in Kleppmann's "How to do distributed locking").

A holder that dies (SIGKILL, host lost) simply stops renewing; the row is
taken over when its lease lapses. The tables keep their own other columns
and statuses; this module owns only these four.
"""

from __future__ import annotations

import os
import random
import secrets
import socket
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, update
from sqlalchemy.orm import Session

RUNNING = "running"
FIRST_RETRY = timedelta(seconds=5)  # then about 10, 20, ... up to LONGEST_WAIT
LONGEST_WAIT = timedelta(minutes=15)  # ten attempts outlast an outage of half an hour


def default_owner() -> str:
    """A name for this process's leases, unique across hosts, processes and restarts."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"


def held(table: Table, owner: str, attempt: int) -> ColumnElement[bool]:
    """The row is still held by `owner`'s attempt `attempt`."""
    c = table.c
    return and_(c.owner == owner, c.attempt == attempt, c.status == RUNNING)


def lapsed(table: Table, now: datetime) -> ColumnElement[bool]:
    """The row was held, and its holder stopped renewing before `now`."""
    c = table.c
    return and_(c.status == RUNNING, c.lease_until < now)


def take(session: Session, table: Table, where: ColumnElement[bool], **values: Any) -> bool:
    """Move the row(s) matching `where` to `running` with `values`; True if one moved.

    `where` must include the condition that made the row takeable (queued and
    due, or `lapsed`): the UPDATE re-checks it, so of several racing takers one wins.
    """
    result = session.execute(update(table).where(where).values(status=RUNNING, **values))
    return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def settle(
    session: Session,
    table: Table,
    key: ColumnElement[bool],
    holder: tuple[str, int],
    values: Mapping[str, Any],
) -> bool:
    """Update the row named by `key` only while `owner`'s attempt still holds it.

    `holder` is (owner, attempt). Used to renew (`lease_until`), finish, fail
    or give up. False means the lease was lost: another process took the row
    over, so the caller's work on it must stop and its result is not recorded.
    """
    owner, attempt = holder
    result = session.execute(update(table).where(key, held(table, owner, attempt)).values(**values))
    return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def retry_delay(attempt: int) -> timedelta:
    """The wait after failed attempt number `attempt` of a held row: doubling, capped,
    with full jitter over its upper half so workers that failed together do not retry
    together."""
    ceiling: timedelta = min(FIRST_RETRY * (2 ** (attempt - 1)), LONGEST_WAIT)
    return ceiling * random.uniform(0.5, 1.0)
