"""Each delivery processed once: Slack and Meta retry, and a retry must not act twice.

(Meta's verified webhook bodies, kept before they are answered, are `webhook_inbox.py`.)

A delivery is claimed before it is processed and released if processing
fails, so a later retry can do the work; the claim is a row keyed by
(source, id), so two replicas receiving the same retry cannot both win.
Claims older than `KEEP` are pruned on the way (Slack stops retrying after
about five minutes; Meta after days, so its webhook keeps its own horizon).
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import cast

from sqlalchemy import Table, delete

from ..clock import Clock, system_clock, utcnow
from .db import Database
from .inserts import insert_new
from .models import InboundEvent

KEEP = timedelta(days=8)
PRUNE_EVERY = timedelta(hours=1)
ID_MAX = 128

_TABLE = cast(Table, InboundEvent.__table__)


class InboundEvents:
    def __init__(self, db: Database, clock: Clock = system_clock) -> None:
        self.db = db
        self.clock = clock
        self._pruned_at: float | None = None
        self._lock = threading.Lock()

    def claim(self, source: str, delivery_id: str) -> bool:
        """True the first time (source, id) is seen: go ahead; False for a duplicate."""
        if not delivery_id or len(delivery_id) > ID_MAX or not delivery_id.isprintable():
            raise ValueError("a delivery id is 1 to 128 printable characters")
        try:
            delivery_id.encode("utf-8")  # a lone surrogate reaches no database
        except UnicodeEncodeError:
            raise ValueError("a delivery id is text") from None
        now = utcnow(self.clock)
        row = {"source": source, "delivery_id": delivery_id, "received_at": now}
        with self.db.write() as session:
            claimed = insert_new(session, _TABLE, row, ("source", "delivery_id"))
        if claimed:
            self._maybe_prune()
        return claimed

    def release(self, source: str, delivery_id: str) -> None:
        """Processing failed: let a retry of the same delivery claim it again."""
        with self.db.write() as session:
            session.execute(
                delete(_TABLE).where(_TABLE.c.source == source, _TABLE.c.delivery_id == delivery_id)
            )

    def _maybe_prune(self) -> None:
        now = self.clock()
        with self._lock:
            if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY.total_seconds():
                return
            self._pruned_at = now
        with self.db.write() as session:
            session.execute(delete(_TABLE).where(_TABLE.c.received_at < utcnow(self.clock) - KEEP))
