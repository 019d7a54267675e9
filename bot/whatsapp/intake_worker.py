"""The webhook intake worker: processes the bodies the door stored, each exactly once.

It runs beside the outbox worker, as a thread of `serve`'s background process
(unless `--no-worker`) and of `wa-access worker`; any number of them share one
database. It takes due bodies under a lease (rbac_core/store/webhook_inbox.py),
hands each to the gate (handlers/whatsapp/intake.py), which writes its events
and marks it done in one transaction fenced on the lease, and settles what the
gate could not do: a failure is retried with a growing wait, then given up
(the body stays stored, and the alert channel is told). A worker killed
mid-body leaves it to be taken over when its lease lapses; the fence makes
sure only one of them ever commits it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from handlers.whatsapp.intake import ingest
from rbac_core import signals
from rbac_core.gate import Gate, Outcome
from rbac_core.outbox import ALERT_CHANNEL, Notice, Outbox
from rbac_core.store.leases import default_owner
from rbac_core.store.webhook_inbox import (
    TAKE_LIMIT,
    TAKE_MAX_BYTES,
    TakenWebhook,
    WebhookInbox,
)

from ..polling import Poller

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0


class IntakeWorker(Poller):
    thread_name = "webhook-worker"
    linger = 0.1
    """Meta needs the 200, which the door gives; processing can wait a tenth of a second
    for more bodies, and then costs a fraction per body (measured: `python -m bench
    --only whatsapp-ingest`)."""

    def __init__(
        self,
        inbox: WebhookInbox,
        gate: Gate,
        outbox: Outbox,
        *,
        owner: str | None = None,
        batch: int = TAKE_LIMIT,
        poll: float = POLL_SECONDS,
    ) -> None:
        super().__init__(poll, (signals.webhook_received,))
        self.inbox = inbox
        self.gate = gate
        self.outbox = outbox
        self.owner = owner or default_owner()
        self.batch = batch
        self.full = batch
        self._bytes = 0

    def was_full(self, handled: int) -> bool:
        # A take stops short of TAKE_MAX_BYTES: half of it is a full batch of large bodies.
        return handled >= self.full or self._bytes * 2 >= TAKE_MAX_BYTES

    def run_once(self) -> int:
        taken = self.inbox.take(self.owner, self.batch, on_end=self._given_up)
        self._bytes = sum(len(t.body) for t in taken)
        if not taken:
            return 0
        try:
            self._process(taken)
        except Exception:  # the database, while settling: the leases bring them back
            log.exception("webhook bodies %s: could not record how it went", _ids(taken))
        return len(taken)

    def _process(self, taken: list[TakenWebhook]) -> None:
        """All the bodies in one gate call; if that fails, each on its own, so one body
        that cannot be processed (or whose lease was lost) holds up no other."""
        outcome = self._ingest(taken)
        if outcome is not None and outcome.status == "done":
            _report("done", _counts(outcome))
            return
        if len(taken) > 1:
            for body in taken:
                self._process([body])
            return
        [body] = taken
        if outcome is not None and outcome.error_code == "lease_lost":
            log.warning("webhook body %d was taken over by another worker", body.id)
            _report("lost", {})
            return
        reason = "unexpected error" if outcome is None else _reason(outcome)
        self._retry(body, reason)

    def _ingest(self, taken: list[TakenWebhook]) -> Outcome | None:
        try:
            return ingest(self.gate, self.owner, [(t.id, t.attempt, t.body) for t in taken])
        except Exception:  # a bug before the gate could audit it: tried again later
            log.exception("webhook bodies %s could not be processed", _ids(taken))
            return None

    def _given_up(self, webhook: int, attempts: int, reason: str) -> None:
        """A body given up: kept in `inbound_webhooks`, logged, and the alert channel told."""
        log.error("webhook body %d given up after %d attempts: %s", webhook, attempts, reason)
        data = {"webhook": webhook, "attempts": attempts, "reason": reason[:300]}
        self.outbox.add([Notice("whatsapp.webhook_given_up", ALERT_CHANNEL, data)])
        _report("given_up", {})

    def _retry(self, taken: TakenWebhook, reason: str) -> None:
        last = taken.attempt >= self.inbox.max_attempts
        if not self.inbox.retry(taken, reason):
            _report("lost", {})
            return
        if last:
            self._given_up(taken.id, taken.attempt, reason)
        else:
            log.warning("webhook body %d failed (attempt %d): %s", taken.id, taken.attempt, reason)
            _report("retry", {})


def _reason(outcome: Outcome) -> str:
    return f"{outcome.error_code or outcome.status}: {outcome.message}"


def _ids(taken: list[TakenWebhook]) -> str:
    return ", ".join(str(t.id) for t in taken)


def _counts(outcome: Outcome) -> dict[str, int]:
    counts = outcome.data.get("counts") if outcome.status == "done" else None
    return dict(counts) if isinstance(counts, Mapping) else {}


def _report(result: str, counts: Mapping[str, int]) -> None:
    if signals.webhook_processed.listeners:
        signals.webhook_processed.send(result, counts)
