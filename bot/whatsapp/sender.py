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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from rbac_core import signals
from rbac_core.clock import utcnow
from rbac_core.messaging import outgoing
from rbac_core.outbox import Delivery, Outbox, TryLater
from rbac_core.outbox.slots import SendSlots
from rbac_core.store import Database
from rbac_core.store.leases import default_owner

from ..polling import IDLE_AFTER_ERROR_SECONDS, Poller
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
MAX_SLOT_WAIT = 5.0
"""Seconds a sender waits for its number's slot at most: with no slot that soon the row
goes back to the queue (without taking one), rather than holding a lease and a thread."""
RENEW_BELOW = timedelta(seconds=40)
"""A lease with less than this left is renewed before posting: a post may take the
client's connect, write and read timeouts (30 s), and must end inside the lease."""
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
        super().__init__(poll, (signals.sends_queued,))
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
        """One batch of rows (one per conversation), their sends side by side."""
        claimed = self.outbox.claim(self.owner, self.threads)
        for failure in self._pool.map(self._deliver, claimed):
            if failure is not None:
                log.error("whatsapp send could not be recorded: %s", failure)
        return len(claimed)

    def run_forever(self) -> None:
        """Send until `stop()` (inside `serve` and `wa-access worker`); never raises.
        The posts in flight end first, so none is left for another sender to repeat."""
        try:
            self.run_window(self._stop.is_set)
        finally:
            self._pool.shutdown(wait=False)

    def run_window(self, done: Callable[[], bool]) -> int:
        """Keep up to `threads` sends in flight until `done()`; how many rows were held.

        Rows are claimed whenever half the lanes are free, not once a whole batch has
        ended: a batch would wait for its slowest post, and its number's rate would go
        unused meanwhile."""
        lanes = threading.Condition()
        free, handled = self.threads, 0

        def finished(_: object) -> None:
            nonlocal free
            with lanes:
                free += 1
                lanes.notify()

        signals.sends_queued.connect(self.wake)
        try:
            while not done():
                with lanes:
                    while free < max(1, self.threads // 2) and not done():
                        lanes.wait(0.5)
                    want = free
                claimed = self._claim(want)
                if not claimed:
                    self._wake.wait(self.poll)
                    self._wake.clear()
                    continue
                with lanes:
                    free -= len(claimed)
                for delivery in claimed:
                    self._pool.submit(self._deliver, delivery).add_done_callback(finished)
                handled += len(claimed)
            with lanes:  # let the posts in flight end before returning
                while free < self.threads:
                    lanes.wait(0.5)
        finally:
            signals.sends_queued.disconnect(self.wake)
        return handled

    def _claim(self, limit: int) -> list[Delivery]:
        try:
            return self.outbox.claim(self.owner, limit)
        except Exception:  # the database away: waited out, never raised out of the loop
            log.exception("the whatsapp sender could not claim work; trying again soon")
            self._stop.wait(IDLE_AFTER_ERROR_SECONDS)
            return []

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
        state = self._number_state(number)
        if state is None:  # unregistered since it was queued: nobody may send from it now
            why = f"{number} is no longer a registered business number"
            settle = outgoing.failed(message, None, "number removed", why)
            self._settled(delivery, "failed", self.outbox.give_up(delivery, why, also=settle))
            return
        rate, is_paused = state
        if is_paused:
            self._settled(
                delivery, "paused", self.outbox.retry(delivery, _wait("paused", PAUSED_WAIT))
            )
            return
        wait = self.slots.take(number, rate, within=MAX_SLOT_WAIT)
        if wait is None:  # more queued than the rate serves now: back in the queue a while
            later = _wait("waiting for the number's rate", timedelta(seconds=MAX_SLOT_WAIT))
            self._settled(delivery, "retry", self.outbox.retry(delivery, later))
            return
        if wait > 0:
            time.sleep(wait)
        held = self._still_held(delivery)
        if held is None:
            return
        self._post(held, number, message)

    def _still_held(self, delivery: Delivery) -> Delivery | None:
        """The row, its lease long enough for the post; None if another sender has it now.

        Never post a row whose lease may lapse mid-post: another sender would take it
        over and post it again (the customer would get it twice)."""
        if delivery.lease_until - utcnow(self.outbox.clock) >= RENEW_BELOW:
            return delivery
        renewed = self.outbox.renew(delivery)
        if renewed is None:
            log.warning("outbox %d was taken over before it was sent", delivery.id)
            self._settled(delivery, "lost", False)
        return renewed

    def _post(self, delivery: Delivery, number: str, message: int) -> None:
        data = delivery.data
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
        once = isinstance(error, TryAgain) and error.retry_once and delivery.attempt >= 2
        if once or (after is None and delivery.attempt >= self.outbox.max_attempts):
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

    def _number_state(self, number: str) -> tuple[float, bool] | None:
        """(rate, paused) of a sending number; None if it is not registered (any more)."""
        with self._state_lock:
            read_at, state = self._state
            if time.monotonic() - read_at > STATE_TTL:
                with self.db.read() as session:
                    state = outgoing.sending_state(session)
                self._state = (time.monotonic(), state)
        if number not in state:
            return None
        own_rate, is_paused = state[number]
        return float(own_rate or self.default_rate), is_paused

    @staticmethod
    def _settled(delivery: Delivery, result: str, kept: bool) -> None:
        if signals.outbox_delivered.listeners:
            signals.outbox_delivered.send(delivery.kind, result if kept else "lost")


def _wait(reason: str, after: timedelta) -> TryLater:
    return TryLater(reason, after=after)
