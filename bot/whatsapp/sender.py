"""The WhatsApp sender: delivers queued sends to Meta, at each number's rate, from any
number of processes at once.

It claims outbox rows of WhatsApp destinations (`whatsapp:<phone-number id>:C<n>`,
one per conversation) under a lease, at most one per conversation at a time and
then that conversation waits `CUSTOMER_PACE` (about one message per 6 s to a
customer, SPEC §6). Before each send it takes its number's next slot
(rbac_core/outbox/slots.py), shared by every sender, and waits for it, so
the number keeps to its rate (`WA_SEND_RATE`, or its own) however many senders
run. Sends go out from a small pool of threads, since each waits on Meta.

What Meta answers decides the row (bot/whatsapp/graph_errors.py): accepted, the
wamid is recorded and statuses take it from there; transient, it is retried
with jittered backoff (131056, the customer's pair rate: that conversation
waits); permanent, the message is marked failed and its sender told why; a
number Meta restricted (131048, 368, 131031) is paused, the alert channel told,
and its messages wait until an admin resumes it. The outbox row's id travels as
`biz_opaque_callback_data`, so statuses find the message.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from rbac_core import signals
from rbac_core.clock import utcnow
from rbac_core.messaging import outgoing
from rbac_core.outbox import Delivery, Outbox, TryLater
from rbac_core.outbox.slots import SendSlots
from rbac_core.store import Database
from rbac_core.store.leases import default_owner

from ..polling import Poller
from .graph import GraphClient
from .graph_errors import (
    GraphError,
    PauseNumber,
    Permanent,
    TokenProblem,
    TryAgain,
    UnknownOutcome,
    WaitADay,
)
from .messages import graph_message

log = logging.getLogger(__name__)

PREFIX = "whatsapp:"
CUSTOMER_PACE = timedelta(seconds=6)
PAUSED_WAIT = timedelta(minutes=5)
"""How often a message of a paused number looks again whether it was resumed."""
TOKEN_WAIT = timedelta(minutes=1)
STATE_TTL = 1.0
"""Seconds a number's rate and pause are read once for (an admin's resume shows soon)."""


class WhatsAppSender(Poller):
    thread_name = "whatsapp-sender"

    def __init__(
        self,
        db: Database,
        graph: GraphClient,
        *,
        default_rate: float,
        outbox: Outbox | None = None,
        threads: int = 8,
        owner: str | None = None,
        poll: float = 1.0,
    ) -> None:
        super().__init__(poll, (signals.outbox_queued,))
        self.db = db
        self.graph = graph
        self.default_rate = default_rate
        self.outbox = outbox or Outbox(db, prefix=PREFIX, pace=CUSTOMER_PACE)
        self.slots = SendSlots(db, self.outbox.clock)
        self.threads = threads
        self.owner = owner or default_owner()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="whatsapp-send")
        self._state: tuple[float, dict[str, tuple[int | None, bool]]] = (-STATE_TTL, {})
        self._state_lock = threading.Lock()

    def run_once(self) -> int:
        claimed = self.outbox.claim(self.owner, self.threads)
        for failure in self._pool.map(self._deliver, claimed):
            if failure is not None:
                log.error("whatsapp send could not be recorded: %s", failure)
        return len(claimed)

    def _deliver(self, delivery: Delivery) -> str | None:
        """Send one row and settle it; a description of what went wrong settling, if so."""
        try:
            self._send(delivery)
        except Exception as exc:  # the database while settling: the lease brings it back
            log.exception("outbox %d: whatsapp send failed unexpectedly", delivery.id)
            return type(exc).__name__
        return None

    def _send(self, delivery: Delivery) -> None:
        data = delivery.data
        number, message = str(data["from"]), int(data["message"])
        rate, is_paused = self._number_state(number)
        if is_paused:
            self._settled(
                delivery, "paused", self.outbox.retry(delivery, _wait("paused", PAUSED_WAIT))
            )
            return
        wait = self.slots.take(number, rate)
        if wait > 0:
            time.sleep(wait)
        try:
            sent = self.graph.send_message(
                str(data["phone_number_id"]), graph_message(data, str(delivery.id))
            )
        except GraphError as error:
            self._failed(delivery, number, message, error)
            return
        self._settled(
            delivery, "sent", self.outbox.done(delivery, also=outgoing.sent(message, sent.wamid))
        )

    def _failed(self, delivery: Delivery, number: str, message: int, error: GraphError) -> None:
        what = f"{error} ({error.explanation})"
        if isinstance(error, Permanent):
            settle = outgoing.failed(message, error.code, error.title, error.detail)
            self._settled(delivery, "failed", self.outbox.give_up(delivery, what, also=settle))
        elif isinstance(error, PauseNumber):
            pause = outgoing.paused(number, what, utcnow(self.outbox.clock))
            kept = self.outbox.retry(delivery, _wait(what, PAUSED_WAIT), also=pause)
            with self._state_lock:
                self._state = (-STATE_TTL, {})  # read again: this number is paused now
            log.error("whatsapp number paused by Meta: %s", what)
            self._settled(delivery, "paused", kept)
        elif isinstance(error, TokenProblem):
            log.error("whatsapp access token problem: %s", what)
            self._settled(delivery, "retry", self.outbox.retry(delivery, _wait(what, TOKEN_WAIT)))
        elif isinstance(error, WaitADay):
            self._settled(
                delivery, "retry", self.outbox.retry(delivery, _wait(what, timedelta(days=1)))
            )
        else:  # TryAgain and UnknownOutcome: sent at least once, so try again
            self._retry(delivery, message, error)

    def _retry(self, delivery: Delivery, message: int, error: GraphError) -> None:
        after = None
        if isinstance(error, TryAgain) and error.after is not None:
            after = timedelta(seconds=min(error.after, 3600))
        if isinstance(error, TryAgain) and error.per_customer:  # 131056: this customer waits
            after = max(after or timedelta(0), CUSTOMER_PACE * 2)
        if after is None and delivery.attempt >= self.outbox.max_attempts:
            settle = outgoing.failed(
                message,
                error.code,
                error.title,
                f"{error.detail} (gave up after {delivery.attempt} attempts)",
            )
            self._settled(
                delivery, "failed", self.outbox.give_up(delivery, str(error), also=settle)
            )
            return
        if isinstance(error, UnknownOutcome):
            log.warning("outbox %d: Meta's answer was lost (%s); sending again", delivery.id, error)
        self._settled(
            delivery, "retry", self.outbox.retry(delivery, TryLater(str(error), after=after))
        )

    def _number_state(self, number: str) -> tuple[float, bool]:
        with self._state_lock:
            read_at, state = self._state
            if time.monotonic() - read_at > STATE_TTL:
                with self.db.read() as session:
                    state = outgoing.sending_state(session)
                self._state = (time.monotonic(), state)
        own_rate, is_paused = state.get(number, (None, False))
        return float(own_rate or self.default_rate), is_paused

    @staticmethod
    def _settled(delivery: Delivery, result: str, kept: bool) -> None:
        if signals.outbox_delivered.listeners:
            signals.outbox_delivered.send(delivery.kind, result if kept else "lost")

    def stop(self) -> None:
        super().stop()
        self._pool.shutdown(wait=False)


def _wait(reason: str, after: timedelta) -> TryLater:
    return TryLater(reason, after=after)
