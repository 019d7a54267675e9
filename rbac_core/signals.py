"""Named hooks through which the core tells operators' tooling what it did.

The core must not depend on a metrics library (nor on a surface), yet
operators need counts of gate outcomes, audit appends and policy reloads that
only the core sees. Each `Signal` is a list of listeners the composition layer
fills (`bot/metrics.py`); with none connected, sending costs one attribute
read, so the hot path pays nothing when nobody listens. A listener that raises
is logged and skipped: observing an action must never change its outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Signal:
    def __init__(self, name: str, doc: str) -> None:
        self.name = name
        self.__doc__ = doc
        self.listeners: tuple[Callable[..., None], ...] = ()

    def connect(self, listener: Callable[..., None]) -> None:
        if listener not in self.listeners:
            self.listeners = (*self.listeners, listener)

    def disconnect(self, listener: Callable[..., None]) -> None:
        self.listeners = tuple(fn for fn in self.listeners if fn is not listener)

    def send(self, *args: Any) -> None:
        for listener in self.listeners:
            try:
                listener(*args)
            except Exception:
                log.exception("a listener of %s failed", self.name)


gate_outcome = Signal(
    "gate_outcome", "(action: str, status: str) once per gate call, after its transaction ended"
)
audit_appended = Signal(
    "audit_appended", "(count: int) entries appended, sent after their transaction committed"
)
policy_reloaded = Signal("policy_reloaded", "(kind: 'full' | 'partial') a snapshot was reloaded")
job_finished = Signal(
    "job_finished",
    "(job: str, result: 'done' | 'failed' | 'given_up') a scheduled run ended",
)

outbox_queued = Signal(
    "outbox_queued",
    "(count: int) notices for the general worker written to the outbox, after their commit",
)
sends_queued = Signal(
    "sends_queued",
    "(count: int) WhatsApp sends written to the outbox, sent after their commit",
)
outbox_delivered = Signal(
    "outbox_delivered",
    "(kind: str, result: 'done' | 'retry' | 'given_up' | 'lost') one delivery attempt ended",
)

webhook_received = Signal(
    "webhook_received",
    "(source: str, stored: bool) a verified webhook body was kept, or was a retry of one kept",
)

webhook_processed = Signal(
    "webhook_processed",
    "(result: 'done' | 'retry' | 'given_up' | 'lost', counts: Mapping[str, int]) a worker "
    "finished with one stored webhook body; `counts` are its events by what became of them",
)

ALL = (
    gate_outcome,
    audit_appended,
    policy_reloaded,
    job_finished,
    outbox_queued,
    sends_queued,
    outbox_delivered,
    webhook_received,
    webhook_processed,
)
