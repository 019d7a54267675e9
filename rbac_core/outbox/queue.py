"""Claiming and settling outbox rows: leases, pacing per destination, retries.

A claim, in one short write transaction (taken only after a read found
something due, so idle workers never hold SQLite's writer lock):

1. the oldest due row of each destination that is not held back by its pace
   row (so rows stuck behind a rate-limited channel never starve the others),
   found in the first pages of the oldest live rows, or failing that by one
   query over every due row;
2. per destination, in sorted order (every worker locks pace rows in the same
   order, so two claims cannot deadlock): the row, locked with `FOR UPDATE
   SKIP LOCKED` on PostgreSQL (a row another worker is taking is skipped, not
   waited for); its data parsed (a row that is not JSON is given up alone);
   the destination *held* — its pace row moved to the end of the lease with a
   conditional UPDATE one worker wins — so no second post to it starts while
   this one is in flight;
3. the row leased to this worker (store/leases.py).

Settling (done, retry, give up) first updates the row, fenced on the holder's
attempt, then releases the destination for `pace` (one post a second per
channel, counted from the end of the post), in the same row-then-pace order
as a claim.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, exists, func, or_, select, text, update
from sqlalchemy.orm import Session

from ..clock import Clock, system_clock, utcnow
from ..store import Database, leases
from ..store.inserts import insert_new
from ..store.models import OutboxMessage, OutboxPace
from ..store.models.bookkeeping import LIVE_OUTBOX_ROWS
from . import (
    DEDICATED,
    DONE,
    ERROR_MAX,
    GIVEN_UP,
    QUEUED,
    Delivery,
    Notice,
    TryLater,
    enqueue,
    retry_delay,
)

LEASE = timedelta(seconds=60)
"""How long a claimed row is held. The worker renews it before each post that
might not finish in time, so a live worker never loses a row it is posting."""
PACE = timedelta(seconds=1)
MAX_ATTEMPTS = 10
_PAGE_ROWS = 200
_PAGES = 5
"""A claim reads at most this many pages of the oldest live rows before it asks for every
destination's oldest row (the exhaustive query, which on a deep queue is far slower)."""

_ROWS = cast(Table, OutboxMessage.__table__)

Also = Callable[[Session], Sequence[Notice]]
"""Writes that settle with a delivery, in its transaction; returns notices to queue with it."""
_PACE = cast(Table, OutboxPace.__table__)


class Outbox:
    def __init__(
        self,
        db: Database,
        clock: Clock = system_clock,
        *,
        lease: timedelta = LEASE,
        pace: timedelta = PACE,
        max_attempts: int = MAX_ATTEMPTS,
        prefix: str | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.lease = lease
        self.pace = pace
        self.max_attempts = max_attempts
        self.prefix = prefix
        """Only destinations starting with it; None: all but the DEDICATED ones."""
        if prefix is not None:
            self._mine: Any = _ROWS.c.to.startswith(prefix, autoescape=True)
        else:
            self._mine = and_(*(~_ROWS.c.to.startswith(p, autoescape=True) for p in DEDICATED))

    def _due(self, now: datetime) -> Any:
        return and_(_due(now), self._mine)

    # -- claiming ----------------------------------------------------------------

    def claim(self, owner: str, limit: int = 5) -> list[Delivery]:
        """Up to `limit` due rows, at most one per destination, each held and leased."""
        now = utcnow(self.clock)
        with self.db.transaction(write=False) as txn:
            if not txn.session.scalar(select(exists().where(self._due(now)))):
                return []
        taken: list[Delivery] = []
        with self.db.transaction(write=True) as txn:
            session = txn.session
            for to, row_id in sorted(self._firsts(session, now, limit * 4, limit)):
                if len(taken) == limit:
                    break
                delivery = self._take(session, int(row_id), to, owner, now)
                if delivery is not None:
                    taken.append(delivery)
        return sorted(taken, key=lambda d: d.id)

    def _firsts(
        self, session: Session, now: datetime, n: int, enough: int
    ) -> list[tuple[str, int]]:
        """(destination, oldest due row) of up to `n` destinations not held back.

        The oldest live rows of destinations not held back are read a page at a time
        (ix_outbox_live, where the planner has statistics: delivered rows are never
        walked), which on a deep queue of many destinations finds `n` in the first
        page. Only when the pages read hold fewer than `enough` destinations (many
        rows to a few of them) does it ask for every destination's oldest row at once.
        """
        c = _ROWS.c
        found: dict[str, int] = {}
        after = 0
        for _ in range(_PAGES):
            page = session.execute(
                select(c.id, c.to)
                .where(text(LIVE_OUTBOX_ROWS), self._due(now), ~_held_back(now), c.id > after)
                .order_by(c.id)
                .limit(_PAGE_ROWS)
            ).all()
            for row_id, to in page:
                found.setdefault(str(to), int(row_id))
            if len(found) >= n or len(page) < _PAGE_ROWS:
                return sorted(found.items(), key=lambda first: first[1])[:n]
            after = int(page[-1][0])
        if len(found) >= enough:
            return sorted(found.items(), key=lambda first: first[1])[:n]
        return self._firsts_of_all(session, now, n)

    def _firsts_of_all(self, session: Session, now: datetime, n: int) -> list[tuple[str, int]]:
        oldest = func.min(_ROWS.c.id)
        query = (
            select(_ROWS.c.to, oldest)
            .where(self._due(now), ~_held_back(now))
            .group_by(_ROWS.c.to)
            .order_by(oldest)
            .limit(n)
        )
        return [(str(to), int(row_id)) for to, row_id in session.execute(query)]

    def _take(
        self, session: Session, row_id: int, to: str, owner: str, now: datetime
    ) -> Delivery | None:
        query = select(_ROWS.c.kind, _ROWS.c.data, _ROWS.c.attempt, _ROWS.c.created_at).where(
            _ROWS.c.id == row_id, self._due(now)
        )
        if not self.db.is_sqlite:  # SQLite's one writer needs no row locks
            query = query.with_for_update(skip_locked=True)
        row = session.execute(query).first()
        if row is None:  # another worker is taking it, or took it since we looked
            return None
        kind, raw, attempt, created_at = row
        if attempt >= self.max_attempts:  # its workers died holding it, every time
            self._end(session, row_id, now, f"its worker stopped during each of {attempt} attempts")
            return None
        data = _parsed(raw)
        if data is None:
            self._end(session, row_id, now, "its data is not a JSON object")
            return None
        if not self._hold(session, to, now):
            return None
        lease_until = now + self.lease
        values = {"owner": owner, "attempt": attempt + 1, "lease_until": lease_until}
        if not leases.take(session, _ROWS, and_(_ROWS.c.id == row_id, self._due(now)), **values):
            return None
        return Delivery(row_id, kind, to, data, attempt + 1, owner, lease_until, created_at)

    def _hold(self, session: Session, to: str, now: datetime) -> bool:
        """Hold `to` for this delivery until its lease ends; False if it is held already."""
        insert_new(session, _PACE, {"to": to, "next_at": now}, ("to",))
        moved = session.execute(
            update(_PACE)
            .where(_PACE.c.to == to, _PACE.c.next_at <= now)
            .values(next_at=now + self.lease)
        )
        return moved.rowcount == 1  # type: ignore[attr-defined,no-any-return]

    @staticmethod
    def _end(session: Session, row_id: int, now: datetime, why: str) -> None:
        session.execute(
            update(_ROWS)
            .where(_ROWS.c.id == row_id)
            .values(status=GIVEN_UP, finished_at=now, lease_until=None, last_error=why)
        )

    # -- settling ------------------------------------------------------------------

    def renew(self, delivery: Delivery) -> Delivery | None:
        """A fresh lease for a row about to be posted; None if it was lost meanwhile."""
        now = utcnow(self.clock)
        until = now + self.lease
        with self.db.transaction(write=True) as txn:
            if not self._settle_in(txn.session, delivery, lease_until=until):
                return None
            self._release(txn.session, delivery.to, until)
        return Delivery(
            delivery.id,
            delivery.kind,
            delivery.to,
            delivery.data,
            delivery.attempt,
            delivery.owner,
            until,
            delivery.created_at,
        )

    def done(self, delivery: Delivery, also: Also | None = None) -> bool:
        """Record a delivery; False if its lease was lost (another worker has the row).

        `also(session)` runs in the same transaction, only if the lease held: what the
        delivery itself tells the records (the wamid Meta gave a WhatsApp send)."""
        now = utcnow(self.clock)
        return self._settle(
            delivery,
            now + self.pace,
            also,
            status=DONE,
            finished_at=now,
            lease_until=None,
            last_error=None,
        )

    def retry(self, delivery: Delivery, failure: TryLater, also: Also | None = None) -> bool:
        """Queue the row again after a delay, or give it up once out of attempts."""
        now = utcnow(self.clock)
        reason = str(failure)[:ERROR_MAX]
        if failure.after is None and delivery.attempt >= self.max_attempts:
            return self.give_up(delivery, f"{reason} (after {delivery.attempt} attempts)", also)
        wait = failure.after if failure.after is not None else retry_delay(delivery.attempt)
        # A wait the service asked for is not the row's fault: it keeps its attempts,
        # and the whole destination waits with it.
        asked = failure.after is not None
        return self._settle(
            delivery,
            now + max(self.pace, wait) if asked else now + self.pace,
            also,
            status=QUEUED,
            attempt=delivery.attempt - 1 if asked else delivery.attempt,
            next_try_at=now + wait,
            lease_until=None,
            last_error=reason,
        )

    def give_up(self, delivery: Delivery, reason: str, also: Also | None = None) -> bool:
        """End the row for good; `also(session)` as for `done`."""
        now = utcnow(self.clock)
        return self._settle(
            delivery,
            now + self.pace,
            also,
            status=GIVEN_UP,
            finished_at=now,
            lease_until=None,
            last_error=reason[:ERROR_MAX],
        )

    def _settle(
        self, delivery: Delivery, free_at: datetime, also: Also | None, **values: Any
    ) -> bool:
        """Settle the row (fenced), then free its destination at `free_at`: row, then pace;
        then `also`, in the same transaction."""
        with self.db.transaction(write=True) as txn:
            if not self._settle_in(txn.session, delivery, **values):
                return False
            self._release(txn.session, delivery.to, free_at)
            if also is not None:
                notices = also(txn.session)
                if notices:
                    enqueue(txn, notices, utcnow(self.clock))
            return True

    @staticmethod
    def _settle_in(session: Session, delivery: Delivery, **values: Any) -> bool:
        key = _ROWS.c.id == delivery.id
        return leases.settle(session, _ROWS, key, (delivery.owner, delivery.attempt), values)

    @staticmethod
    def _release(session: Session, to: str, at: datetime) -> None:
        session.execute(update(_PACE).where(_PACE.c.to == to).values(next_at=at))

    # -- more notices, and reading ---------------------------------------------------

    def add(self, notices: list[Notice]) -> None:
        """Queue notices outside any action (a fallback for one that could not be delivered)."""
        with self.db.transaction(write=True) as txn:
            enqueue(txn, notices, utcnow(self.clock))

    def due_now(self) -> int:
        """Queued rows of this outbox's destinations due now, whether or not their
        destination is free."""
        now = utcnow(self.clock)
        due = and_(_ROWS.c.status == QUEUED, _ROWS.c.next_try_at <= now, self._mine)
        with self.db.transaction(write=False) as txn:
            return int(txn.session.scalar(select(func.count()).where(due)) or 0)

    def pending(self) -> int:
        """Rows of this outbox's destinations not yet settled (queued, due or not, and
        running): zero when every one is delivered or given up."""
        waiting = and_(_ROWS.c.status.in_((QUEUED, leases.RUNNING)), self._mine)
        with self.db.transaction(write=False) as txn:
            return int(txn.session.scalar(select(func.count()).where(waiting)) or 0)

    def counts(self) -> dict[str, int]:
        """Rows by status (for operators and `/metrics`: the depth is `queued` + `running`)."""
        with self.db.transaction(write=False) as txn:
            rows = txn.session.execute(
                select(_ROWS.c.status, func.count()).group_by(_ROWS.c.status)
            ).all()
        return {str(status): int(n) for status, n in rows}


def _due(now: datetime) -> Any:
    """Queued and due, or held by a worker whose lease lapsed."""
    return or_(
        and_(_ROWS.c.status == QUEUED, _ROWS.c.next_try_at <= now), leases.lapsed(_ROWS, now)
    )


def _held_back(now: datetime) -> Any:
    """The row's destination may not be posted to yet (its pace row is in the future)."""
    return exists().where(_PACE.c.to == _ROWS.c.to, _PACE.c.next_at > now)


def _parsed(raw: object) -> dict[str, Any] | None:
    try:
        data = json.loads(str(raw))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
