"""Each business number's sending rate, kept by every sender in every process together.

Meta allows a number about 80 messages a second (SPEC §6, `WA_SEND_RATE`).
Senders in several processes share that one budget through a row per number
(`send_slots.next_us`): taking a slot is one conditional UPDATE that returns the
slot and moves it `1 / rate` on, so slots are handed out one after another,
`1 / rate` apart, whoever asks. A sender then waits until its slot begins. A
slot in the past is not saved up: a number idle for a minute does not get to
burst a minute's worth (the generic cell rate algorithm, without tolerance).
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, case, update
from sqlalchemy.orm import Session

from ..clock import Clock, system_clock
from ..store import Database
from ..store.inserts import insert_new
from ..store.models import SendSlot

_SLOTS = cast(Table, SendSlot.__table__)


class SendSlots:
    def __init__(self, db: Database, clock: Clock = system_clock) -> None:
        self.db = db
        self.clock = clock

    def take(self, number: str, rate: float, within: float | None = None) -> float | None:
        """Take `number`'s next slot at `rate` a second; the seconds to wait for it. With
        `within`, only a slot that begins within that many seconds is taken: None means
        none does (the slot is left for whoever can use it in time)."""
        if rate <= 0:
            raise ValueError("a sending rate is more than 0 messages a second")
        step = max(1, int(1_000_000 / rate))
        with self.db.transaction(write=True) as txn:
            # Read the time once the transaction holds its connection: a thread that
            # waited for one must not measure slots from a moment long past.
            now_us = int(self.clock() * 1_000_000)
            latest = None if within is None else now_us + int(within * 1_000_000)
            start = self._move(txn.session, number, now_us, step, latest)
            if start is None:
                # No slot soon enough, or no row yet: the number's first send makes it
                # (a sender racing to make it too finds it made), then one more try.
                row = {"number": number, "next_us": now_us}
                insert_new(txn.session, _SLOTS, row, ("number",))
                start = self._move(txn.session, number, now_us, step, latest)
        if start is None:
            return None
        return max(0.0, (start - now_us) / 1_000_000)

    @staticmethod
    def _move(
        session: Session, number: str, now_us: int, step: int, latest: int | None
    ) -> int | None:
        """Move the number's slot on by `step`; the start of the slot taken, or None."""
        c = _SLOTS.c
        begins = case((c.next_us < now_us, now_us), else_=c.next_us)
        where = [c.number == number]
        if latest is not None:
            where.append(c.next_us <= latest)
        moved = session.execute(
            update(_SLOTS).where(*where).values(next_us=begins + step).returning(c.next_us)
        ).scalar_one_or_none()
        return None if moved is None else int(moved) - step
