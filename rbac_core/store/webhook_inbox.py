"""Meta's verified webhook bodies: kept before the 200, then processed by workers under leases.

The request only stores the verified bytes (`store`): one insert-or-ignore keyed
by (source, SHA-256), so a body Meta retries is kept once. Workers, in any
number of processes, `take` due rows under a lease (leases.py); the gate
action that processes a body marks it done in the same transaction as the
events it wrote (`finish_in`, fenced on the holder's attempt), so a body is
processed exactly once even when its worker stalls past its lease and another
takes over: the late one's transaction fails the fence and rolls back. A
failure puts the row back with a growing wait (`retry`); after `MAX_ATTEMPTS`
it is `given_up`, still kept, for an operator to look at.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, exists, func, or_, select
from sqlalchemy.orm import Session

from .. import signals
from ..clock import Clock, system_clock, utcnow
from . import leases
from .db import Database
from .group_commit import Combiner, Pending
from .inserts import insert_new_sql
from .models import InboundWebhook
from .statements import one_of

LEASE = timedelta(seconds=20)
"""Many times what a body of 1,000 events takes on a slow database. A lease that lapsed
mid-body costs a retry, never a double: the first holder's fence takes the row's lock
(PostgreSQL) or the single writer's (SQLite) as its transaction starts."""
MAX_ATTEMPTS = 10
TAKE_LIMIT = 200
"""Bodies per take. Processing them in one gate call costs a fraction per body: with one
event per body, 50 at a time cost the worker a third more CPU per body than 200 (`python -m
bench --only whatsapp-ingest`)."""
TAKE_MAX_BYTES = 1024 * 1024
"""...as long as they are small: a take stops short of this many bytes of bodies (one may be
up to 4 MiB). Bytes stand for events: 200 bodies of 100 events each made one transaction
of 20,000 events, which held SQLite's writer lock, and the door, for most of a second."""
ERROR_MAX = 1000
QUEUED, DONE, GIVEN_UP = "queued", "done", "given_up"

_ROWS = cast(Table, InboundWebhook.__table__)


Ended = Callable[[int, int, str], None]
"""Told of a body given up while taking: (its id, attempts, why)."""


@dataclass(frozen=True)
class TakenWebhook:
    """A body held by one worker: process it, then settle it with its (owner, attempt)."""

    id: int
    source: str
    body: str
    received_at: datetime
    attempt: int
    owner: str
    lease_until: datetime


class WebhookInbox:
    """Webhook bodies whose signature held, kept before the answer and once per body.

    Meta retries a POST it saw fail (for up to seven days) with the same bytes, so
    the body's digest keys it: a retry of a stored body is acknowledged and not
    stored again. Events inside bodies that differ are deduplicated when processed.
    """

    def __init__(
        self,
        db: Database,
        clock: Clock = system_clock,
        *,
        lease: timedelta = LEASE,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.db = db
        self.clock = clock
        self.lease = lease
        self.max_attempts = max_attempts
        self._combined: dict[str, Combiner[str, bool]] = {}

    def store(self, source: str, body: str) -> bool:
        """Keep `body` for processing; False when the same body is kept already.

        Concurrent callers in one process are combined (group_commit.py): under load
        a door stores several requests' bodies with one statement.
        """
        if self.db.in_transaction_here():
            # Queueing behind a thread that waits for a lock this one holds would hang both.
            raise RuntimeError("a webhook body is stored outside any transaction")
        combined = self._combined.get(source)
        if combined is None:
            combined = self._combined.setdefault(source, Combiner(self._storer(source)))
        return combined(body)

    def _storer(self, source: str) -> Callable[[list[Pending[str, bool]]], None]:
        def run(batch: list[Pending[str, bool]]) -> None:
            try:
                kept = self.store_many(source, [call.item for call in batch])
            except Exception as exc:
                if len(batch) == 1:
                    batch[0].fail(exc)
                    return
                for call in batch:  # one body that cannot be stored fails alone
                    try:
                        call.answer(self.store_many(source, [call.item])[0])
                    except Exception as alone:
                        call.fail(alone)
                return
            for call, one in zip(batch, kept, strict=True):
                call.answer(one)

        return run

    def store_many(self, source: str, bodies: Sequence[str]) -> list[bool]:
        """Keep every body, with one statement per 200; for each, whether this call kept it
        (False for one kept already, and for the second of two same bodies in `bodies`)."""
        digests = [hashlib.sha256(body.encode("utf-8")).hexdigest() for body in bodies]
        now = utcnow(self.clock)
        rows = [
            {
                "source": source,
                "digest": digest,
                "body": body,
                "received_at": now,
                "status": QUEUED,
                "attempt": 0,
                "next_try_at": now,
            }
            for digest, body in zip(digests, bodies, strict=True)
        ]
        # Each statement (of up to 200 bodies) is atomic alone: no transaction around
        # it (Database.single), and each body is independent of the others.
        statements = insert_new_sql(
            self.db.engine.dialect, _ROWS, rows, ("source", "digest"), "digest"
        )
        new = {digest for sql, params in statements for (digest,) in self.db.single(sql, params)}
        kept = []
        for digest in digests:
            kept.append(digest in new)
            new.discard(digest)
        for one in kept:
            signals.webhook_received.send(source, one)
        return kept

    def take(
        self,
        owner: str,
        limit: int = TAKE_LIMIT,
        on_end: Ended | None = None,
        *,
        max_bytes: int = TAKE_MAX_BYTES,
    ) -> list[TakenWebhook]:
        """Up to `limit` due bodies, oldest first, each leased to `owner`; no more than about
        `max_bytes` of them, but always one.

        A read looks first, so idle workers never take SQLite's writer lock; on
        PostgreSQL rows another worker is taking are skipped, not waited for. The
        rows are leased with one UPDATE that re-checks they are due, so of workers
        racing for a row exactly one gets it. A body whose worker stopped while
        holding it (its lease lapsed) is taken alone: if it is what killed that
        worker, it must not use up the attempts of bodies batched with it. One out
        of attempts is given up, and `on_end(id, attempts, why)` told once it is.
        """
        now = utcnow(self.clock)
        with self.db.transaction(write=False) as txn:
            if not txn.session.scalar(select(exists().where(_due(now)))):
                return []
        ended: list[tuple[int, int, str]] = []
        with self.db.transaction(write=True) as txn:
            ids = self._due_ids(txn.session, now, limit, max_bytes, ended)
            rows: Sequence[Any] = []
            if ids:
                until = now + self.lease
                c = _ROWS.c
                rows = txn.session.execute(
                    _ROWS.update()
                    .where(one_of(txn.session, c.id, ids), _due(now))
                    .values(
                        status=leases.RUNNING,
                        owner=owner,
                        attempt=c.attempt + 1,
                        lease_until=until,
                    )
                    .returning(c.id, c.source, c.body, c.received_at, c.attempt)
                ).all()
        for row_id, attempts, why in ended:
            if on_end is not None:
                on_end(row_id, attempts, why)
        taken = (TakenWebhook(i, s, b, at, n, owner, until) for i, s, b, at, n in rows)
        return sorted(taken, key=lambda t: t.id)

    def _due_ids(
        self,
        session: Session,
        now: datetime,
        limit: int,
        max_bytes: int,
        ended: list[tuple[int, int, str]],
    ) -> list[int]:
        c = _ROWS.c
        # PostgreSQL reads a stored value's size without fetching it; SQLite counts characters.
        size = func.length(c.body) if self.db.is_sqlite else func.octet_length(c.body)
        query = select(c.id, c.attempt, c.status, size).where(_due(now)).order_by(c.id)
        query = query.limit(limit)
        if not self.db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        ids: list[int] = []
        total = 0
        for row_id, attempt, status, length in session.execute(query).all():
            total += int(length or 0)
            if ids and total > max_bytes:  # the rest wait for the next take
                return ids
            if attempt >= self.max_attempts:  # its workers died holding it, every time
                why = f"its worker stopped during each of {attempt} attempts"
                self._end(session, row_id, now, why)
                ended.append((row_id, attempt, why))
            elif status == leases.RUNNING:  # lapsed: alone, or with nothing else
                return ids or [row_id]
            else:
                ids.append(row_id)
        return ids

    def retry(self, taken: TakenWebhook, reason: str) -> bool:
        """Processing failed: queue the body again after a growing wait, or give it up
        once out of attempts. False if the lease was lost (another worker has it)."""
        now = utcnow(self.clock)
        if taken.attempt >= self.max_attempts:
            return self.give_up(taken, f"{reason} (after {taken.attempt} attempts)")
        return self._settle(
            taken,
            status=QUEUED,
            next_try_at=now + leases.retry_delay(taken.attempt),
            lease_until=None,
            last_error=reason[:ERROR_MAX],
        )

    def give_up(self, taken: TakenWebhook, reason: str) -> bool:
        now = utcnow(self.clock)
        return self._settle(
            taken, status=GIVEN_UP, finished_at=now, lease_until=None, last_error=reason[:ERROR_MAX]
        )

    def counts(self) -> dict[str, int]:
        """Bodies by status (for operators and tests)."""
        with self.db.transaction(write=False) as txn:
            rows = txn.session.execute(
                select(_ROWS.c.status, func.count()).group_by(_ROWS.c.status)
            ).all()
        return {str(status): int(n) for status, n in rows}

    def _settle(self, taken: TakenWebhook, **values: Any) -> bool:
        with self.db.transaction(write=True) as txn:
            key = _ROWS.c.id == taken.id
            return leases.settle(txn.session, _ROWS, key, (taken.owner, taken.attempt), values)

    @staticmethod
    def _end(session: Session, row_id: int, now: datetime, why: str) -> None:
        session.execute(
            _ROWS.update()
            .where(_ROWS.c.id == row_id)
            .values(status=GIVEN_UP, finished_at=now, lease_until=None, last_error=why)
        )


def finish_in(session: Session, owner: str, held: Sequence[tuple[int, int]], now: datetime) -> bool:
    """Mark bodies done inside the transaction that wrote their events: `held` is each
    body's (id, attempt) under `owner`. False if `owner` no longer holds them all, in
    which case that transaction must roll back."""
    values = {"status": DONE, "finished_at": now, "lease_until": None, "last_error": None}
    by_attempt: dict[int, list[int]] = {}
    for webhook, attempt in held:
        by_attempt.setdefault(attempt, []).append(webhook)
    moved = 0
    for attempt, ids in sorted(by_attempt.items()):
        result = session.execute(
            _ROWS.update()
            .where(one_of(session, _ROWS.c.id, ids), leases.held(_ROWS, owner, attempt))
            .values(**values)
        )
        moved += result.rowcount  # type: ignore[attr-defined]
    return moved == len(held)


def _due(now: datetime) -> Any:
    """Queued and due, or held by a worker whose lease lapsed."""
    return or_(
        and_(_ROWS.c.status == QUEUED, _ROWS.c.next_try_at <= now), leases.lapsed(_ROWS, now)
    )
