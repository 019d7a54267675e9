"""The outbox: what actions tell people outside the database, delivered by workers.

An action that must tell someone something (the audit channel of a role
change, approvers of a new access request, a requester of the decision, the
alert channel of a 2FA lockout) returns `Notice`s; the gate writes them here
in the transaction that decided the action, so a notice exists exactly when
its action happened, and the HTTP answer never waits for Slack. Workers
(bot/outbox_worker.py, inside `serve` and as `wa-access worker`) deliver them
at least once:

- a worker claims due rows under a lease (store/leases.py, shared with scheduled
  periods); on PostgreSQL with `FOR UPDATE SKIP LOCKED`, so several workers
  never wait on each other's rows; a worker killed mid-delivery leaves its
  rows to be taken over once the lease lapses (which may deliver twice: a
  Slack post has no idempotency key);
- each destination (`to`) is paced by one row of `outbox_pace` shared by all
  workers: held while a post to it is in flight, then free again `pace`
  after it ended (Slack allows about one post per second per channel);
- a failure is retried after a jittered delay that doubles, up to
  `max_attempts`; a wait the service asked for (Slack's 429 `Retry-After`)
  is honoured for the whole destination and is not counted as an attempt; a
  permanent failure ends the row `given_up` with the reason.

Notices are surface-neutral (what happened, to whom); the worker's
deliverer renders them for Slack (handlers/slack/notices.py). Destinations
are symbolic (`channel:audit`, `person:U…`), resolved by the deliverer.
This module holds what actions and deliverers share; `queue.py` claims and
settles rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table

from .. import signals
from ..store import Txn
from ..store.inserts import insert_rows
from ..store.leases import retry_delay
from ..store.models import OutboxMessage

AUDIT_CHANNEL = "channel:audit"
ALERT_CHANNEL = "channel:alert"

ERROR_MAX = 1000

QUEUED, DONE, GIVEN_UP = "queued", "done", "given_up"

_ROWS = cast(Table, OutboxMessage.__table__)


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


DEDICATED = ("whatsapp:",)
"""Destination prefixes with a sender of their own (WhatsApp sends, bot/whatsapp/sender.py):
the general worker leaves them alone."""


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
    insert_rows(txn, _ROWS, rows)
    # Each kind wakes only its own workers: a send waking the general worker sent it to
    # the database for rows it leaves alone, and the more sends waited, the longer it
    # looked (measured on `/wa-send` under load).
    sends = sum(1 for notice in notices if notice.to.startswith(DEDICATED))
    others = len(rows) - sends
    if others and signals.outbox_queued.listeners:
        txn.after_commit(lambda: signals.outbox_queued.send(others))
    if sends and signals.sends_queued.listeners:
        txn.after_commit(lambda: signals.sends_queued.send(sends))


# The queue's claims and settlements need the names above.
from .queue import LEASE, MAX_ATTEMPTS, PACE, Outbox  # noqa: E402

__all__ = [
    "ALERT_CHANNEL",
    "AUDIT_CHANNEL",
    "DEDICATED",
    "LEASE",
    "MAX_ATTEMPTS",
    "PACE",
    "Delivery",
    "DeliveryFailed",
    "Notice",
    "Outbox",
    "TryLater",
    "Undeliverable",
    "enqueue",
    "person",
    "retry_delay",
]
