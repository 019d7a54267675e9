"""The outbox: what actions tell people outside the database, delivered by workers.

An action that must tell someone something (the audit channel of a role
change, approvers of a new access request, a requester of the decision, the
alert channel of a 2FA lockout) returns `Notice`s; the gate writes them here
in the transaction that decided the action, so a notice exists exactly when
its action happened, and the HTTP answer never waits for Slack. Workers
(bot/outbox_worker.py, inside `serve` and as `wa-access worker`) deliver them
at least once:

- a worker claims due rows under a lease (leases.py, shared with scheduled
  periods); on PostgreSQL with `FOR UPDATE SKIP LOCKED`, so several workers
  never wait on each other's rows; a worker killed mid-delivery leaves its
  rows to be taken over once the lease lapses (which may deliver twice: a
  Slack post has no idempotency key);
- each destination (`to`) is paced by one row of `outbox_pace` shared by all
  workers: at most one delivery per `pace` (Slack allows about one post per
  second per channel), taken with a conditional UPDATE that one worker wins;
- a failure is retried after a jittered delay that doubles, up to
  `max_attempts`; a wait the service asked for (Slack's 429 `Retry-After`)
  is honoured for the whole destination and is not counted as an attempt; a
  permanent failure ends the row `given_up` with the reason.

Notices are surface-neutral (what happened, to whom); the worker's
deliverer renders them for Slack (handlers/slack_notices.py). Destinations
are symbolic (`channel:audit`, `person:U…`), resolved by the deliverer.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from . import leases, signals
from .clock import Clock, system_clock, utcnow
from .db import Database, Txn
from .models import OutboxMessage, OutboxPace

AUDIT_CHANNEL = "channel:audit"
ALERT_CHANNEL = "channel:alert"

LEASE = timedelta(seconds=60)
"""How long a claimed row is held: longer than a batch of deliveries at the Slack
client's 5-second timeout, so a live worker never loses a row it is delivering."""
PACE = timedelta(seconds=1)
MAX_ATTEMPTS = 10
FIRST_RETRY = timedelta(seconds=5)  # then about 10, 20, ... up to LONGEST_WAIT
LONGEST_WAIT = timedelta(minutes=15)  # ten attempts outlast a Slack outage of half an hour
ERROR_MAX = 1000

QUEUED, DONE, GIVEN_UP = "queued", "done", "given_up"

_ROWS = cast(Table, OutboxMessage.__table__)
_PACE = cast(Table, OutboxPace.__table__)


def person(user: str) -> str:
    """The destination that reaches one person directly (a Slack DM today)."""
    return f"person:{user}"


@dataclass(frozen=True)
class Notice:
    """Something to tell someone outside the database once the action has committed.

    `kind` names what happened (the deliverer renders it); `to` is a symbolic
    destination (`AUDIT_CHANNEL`, `ALERT_CHANNEL`, `person(user)`); `data`
    must be JSON: it is stored as such and read back by another process.
    """

    kind: str
    to: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class Delivery:
    """One claimed row: deliver it, then report how it went to `Outbox`."""

    id: int
    kind: str
    to: str
    data: dict[str, Any]
    attempt: int
    owner: str
    lease_until: datetime
    created_at: datetime


class DeliveryFailed(Exception):
    """Raised by a deliverer; the subclass says what the outbox does with the row."""


class TryLater(DeliveryFailed):
    """A transient failure (network, 5xx, rate limit): retry the row later.

    `after`, when the service named a wait (Slack's `Retry-After`): the whole
    destination waits that long, and the attempt is not counted against the
    row, since nothing was wrong with it.
    """

    def __init__(self, reason: str, after: timedelta | None = None) -> None:
        super().__init__(reason)
        self.after = after


class Undeliverable(DeliveryFailed):
    """A permanent failure (no such channel, not configured, refused): give the row up."""


def enqueue(txn: Txn, notices: Sequence[Notice], now: datetime) -> None:
    """Write `notices` in `txn`; workers in this process are woken once it commits."""
    if not notices:
        return
    rows = [
        {
            "kind": notice.kind,
            "to": notice.to,
            "data": json.dumps(dict(notice.data), sort_keys=True, separators=(",", ":")),
            "status": QUEUED,
            "attempt": 0,
            "next_try_at": now,
            "created_at": now,
        }
        for notice in notices
    ]
    txn.session.execute(_ROWS.insert(), rows)
    if signals.outbox_queued.listeners:
        txn.after_commit(lambda: signals.outbox_queued.send(len(rows)))


def retry_delay(attempt: int) -> timedelta:
    """The wait after failed attempt number `attempt`: doubling, capped, with full jitter
    over its upper half so workers that failed together do not retry together."""
    ceiling: timedelta = min(FIRST_RETRY * (2 ** (attempt - 1)), LONGEST_WAIT)
    return ceiling * random.uniform(0.5, 1.0)


class Outbox:
    def __init__(
        self,
        db: Database,
        clock: Clock = system_clock,
        *,
        lease: timedelta = LEASE,
        pace: timedelta = PACE,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.db = db
        self.clock = clock
        self.lease = lease
        self.pace = pace
        self.max_attempts = max_attempts

    def claim(self, owner: str, limit: int = 5) -> list[Delivery]:
        """Up to `limit` due rows, at most one per destination, each paced and leased."""
        now = utcnow(self.clock)
        with self.db.transaction(write=True) as txn:
            session = txn.session
            due = or_(and_(_ROWS.c.status == QUEUED, _ROWS.c.next_try_at <= now), _lapsed(now))
            query = select(_ROWS.c.id, _ROWS.c.to, _ROWS.c.attempt).where(due).order_by(_ROWS.c.id)
            query = query.limit(limit * 8)
            if not self.db.is_sqlite:  # SQLite's one writer needs no row locks
                query = query.with_for_update(skip_locked=True)
            first: dict[str, tuple[int, int]] = {}  # each destination's oldest due row
            for row_id, to, attempt in session.execute(query).all():
                first.setdefault(to, (int(row_id), int(attempt)))
            taken: list[int] = []
            # Destinations in one order for every worker: their pace rows are locked in
            # that order, so two workers can never deadlock on each other's.
            for to in sorted(first):
                if len(taken) == limit:
                    break
                row_id, attempt = first[to]
                if attempt >= self.max_attempts:  # its workers died holding it, every time
                    self._end_lapsed(session, row_id, now, attempt)
                    continue
                if not self._paced(session, to, now):
                    continue
                where = and_(_ROWS.c.id == row_id, due)
                if leases.take(
                    session,
                    _ROWS,
                    where,
                    owner=owner,
                    attempt=attempt + 1,
                    lease_until=now + self.lease,
                ):
                    taken.append(row_id)
            if not taken:
                return []
            rows = session.execute(
                select(
                    _ROWS.c.id,
                    _ROWS.c.kind,
                    _ROWS.c.to,
                    _ROWS.c.data,
                    _ROWS.c.attempt,
                    _ROWS.c.lease_until,
                    _ROWS.c.created_at,
                )
                .where(_ROWS.c.id.in_(taken))
                .order_by(_ROWS.c.id)
            ).all()
        return [
            Delivery(
                int(r.id),
                r.kind,
                r.to,
                json.loads(r.data),
                int(r.attempt),
                owner,
                r.lease_until,
                r.created_at,
            )
            for r in rows
        ]

    def _paced(self, session: Session, to: str, now: datetime) -> bool:
        """Take `to`'s next delivery slot; False when another delivery holds it."""
        insert = pg_insert if not self.db.is_sqlite else sqlite_insert
        session.execute(
            insert(_PACE).values(to=to, next_at=now).on_conflict_do_nothing(index_elements=["to"])
        )
        moved = session.execute(
            update(_PACE)
            .where(_PACE.c.to == to, _PACE.c.next_at <= now)
            .values(next_at=now + self.pace)
        )
        return moved.rowcount == 1  # type: ignore[attr-defined,no-any-return]

    def _end_lapsed(self, session: Session, row_id: int, now: datetime, attempt: int) -> None:
        session.execute(
            update(_ROWS)
            .where(_ROWS.c.id == row_id, _lapsed(now))
            .values(
                status=GIVEN_UP,
                finished_at=now,
                lease_until=None,
                last_error=f"its worker stopped during each of {attempt} attempts",
            )
        )

    def done(self, delivery: Delivery) -> bool:
        """Record a delivery; False if its lease was lost (another worker has the row)."""
        now = utcnow(self.clock)
        return self._settle(
            delivery, status=DONE, finished_at=now, lease_until=None, last_error=None
        )

    def retry(self, delivery: Delivery, failure: TryLater) -> bool:
        """Queue the row again after a delay, or give it up once out of attempts."""
        now = utcnow(self.clock)
        reason = str(failure)[:ERROR_MAX]
        if failure.after is None and delivery.attempt >= self.max_attempts:
            return self.give_up(delivery, f"{reason} (after {delivery.attempt} attempts)")
        wait = failure.after if failure.after is not None else retry_delay(delivery.attempt)
        # A wait the service asked for is not the row's fault: it keeps its attempts.
        attempt = delivery.attempt - 1 if failure.after is not None else delivery.attempt
        with self.db.transaction(write=True) as txn:
            if failure.after is not None:
                txn.session.execute(
                    update(_PACE)
                    .where(_PACE.c.to == delivery.to, _PACE.c.next_at < now + wait)
                    .values(next_at=now + wait)
                )
            return self._settle_in(
                txn.session,
                delivery,
                status=QUEUED,
                attempt=attempt,
                next_try_at=now + wait,
                lease_until=None,
                last_error=reason,
            )

    def give_up(self, delivery: Delivery, reason: str) -> bool:
        now = utcnow(self.clock)
        return self._settle(
            delivery,
            status=GIVEN_UP,
            finished_at=now,
            lease_until=None,
            last_error=reason[:ERROR_MAX],
        )

    def _settle(self, delivery: Delivery, **values: Any) -> bool:
        with self.db.transaction(write=True) as txn:
            return self._settle_in(txn.session, delivery, **values)

    @staticmethod
    def _settle_in(session: Session, delivery: Delivery, **values: Any) -> bool:
        key = _ROWS.c.id == delivery.id
        return leases.settle(session, _ROWS, key, (delivery.owner, delivery.attempt), values)

    def counts(self) -> dict[str, int]:
        """Rows by status (for operators and `/metrics`: the depth is `queued` + `running`)."""
        with self.db.transaction(write=False) as txn:
            rows = txn.session.execute(
                select(_ROWS.c.status, func.count()).group_by(_ROWS.c.status)
            ).all()
        return {str(status): int(n) for status, n in rows}

    def next_due(self) -> datetime | None:
        """When the earliest queued row falls due (a worker sleeps until then, at most)."""
        with self.db.transaction(write=False) as txn:
            due: datetime | None = txn.session.scalar(
                select(func.min(_ROWS.c.next_try_at)).where(_ROWS.c.status == QUEUED)
            )
        return due


def _lapsed(now: datetime) -> Any:
    return leases.lapsed(_ROWS, now)
