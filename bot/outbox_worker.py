"""The outbox worker: delivers what actions wrote to the outbox (rbac_core/outbox.py).

It runs as a thread in every `serve` worker process (unless `--no-worker`)
and as `wa-access worker`; any number of them share one database safely,
since every row is claimed under a lease. A worker sleeps until a gate call
in its own process commits a notice (`signals.outbox_queued`), or for at
most `poll` seconds, which is how it sees notices written by other processes
(the CLI, other replicas) and retries falling due.

Deliveries to Slack are posted by a Web API client of their own: no
automatic 429 retry (slack_sdk's handler would sleep inside the worker);
a 429 becomes `TryLater(after=Retry-After)`, which holds back that whole
destination (rbac_core/outbox.py).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from handlers.slack_notices import UnknownNotice, render
from rbac_core import signals
from rbac_core.leases import default_owner
from rbac_core.outbox import (
    ALERT_CHANNEL,
    AUDIT_CHANNEL,
    Delivery,
    DeliveryFailed,
    Outbox,
    TryLater,
    Undeliverable,
)

from .config import Settings

log = logging.getLogger(__name__)

SLACK_TIMEOUT_SECONDS = 5
POLL_SECONDS = 1.0
IDLE_AFTER_ERROR_SECONDS = 5.0

Deliver = Callable[[Delivery], None]
"""Delivers one row or raises DeliveryFailed (TryLater, Undeliverable)."""

# Slack errors no retry can mend: the message, its channel or its person is wrong.
PERMANENT = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "msg_too_long",
        "no_text",
        "invalid_blocks",
        "invalid_arguments",
        "user_not_found",
        "user_disabled",
        "cannot_dm_bot",
        "restricted_action",
        "too_many_attachments",
    }
)


def slack_deliverer(settings: Settings) -> Deliver:
    """Posts notices to Slack: channels from the settings, people by their DM."""
    client = WebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_url,
        timeout=SLACK_TIMEOUT_SECONDS,
    )
    channels = {AUDIT_CHANNEL: settings.audit_channel, ALERT_CHANNEL: settings.alert_channel}
    names = {AUDIT_CHANNEL: "WA_AUDIT_CHANNEL", ALERT_CHANNEL: "WA_ALERT_CHANNEL"}

    def channel_of(to: str) -> str:
        if to.startswith("person:"):
            return to.removeprefix("person:")
        if to in channels:
            channel = channels[to]
            if channel is None:
                raise Undeliverable(f"{names[to]} is not set")
            return channel
        raise Undeliverable(f"no Slack destination for {to!r}")

    def deliver(delivery: Delivery) -> None:
        if not settings.slack_bot_token:
            raise Undeliverable("SLACK_BOT_TOKEN is not set")
        try:
            message = render(delivery.kind, delivery.data)
        except UnknownNotice as exc:
            raise Undeliverable(str(exc)) from None
        channel = channel_of(delivery.to)
        try:
            client.chat_postMessage(channel=channel, **message)
        except SlackApiError as exc:
            raise _classified(exc) from None
        except OSError as exc:  # refused, reset, timed out: Slack may be back in a moment
            raise TryLater(f"Slack unreachable ({type(exc).__name__})") from None

    return deliver


def _classified(exc: SlackApiError) -> DeliveryFailed:
    response = exc.response
    error = str(response.get("error") or "unknown_error")
    if response.status_code == 429 or error == "ratelimited":
        return TryLater("Slack rate limit", after=_retry_after(response.headers))
    if error in PERMANENT:
        return Undeliverable(f"Slack refused it: {error}")
    return TryLater(f"Slack said {error}")  # internal_error, token trouble fixed later, ...


def _retry_after(headers: Any) -> timedelta:
    """Slack's `Retry-After` seconds, bounded to [1 s, 15 min]; 1 s if absent or odd."""
    raw = ""
    for key, value in dict(headers or {}).items():
        if str(key).lower() == "retry-after":
            raw = str(value[0] if isinstance(value, list) else value).strip()
    seconds = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 7 else 1
    return timedelta(seconds=min(max(seconds, 1), 900))


class OutboxWorker:
    def __init__(
        self,
        outbox: Outbox,
        deliver: Deliver,
        *,
        owner: str | None = None,
        batch: int = 5,
        poll: float = POLL_SECONDS,
    ) -> None:
        self.outbox = outbox
        self.deliver = deliver
        self.owner = owner or default_owner()
        self.batch = batch
        self.poll = poll
        self._wake = threading.Event()
        self._stop = threading.Event()

    def run_once(self) -> int:
        """Claim and deliver one batch; how many rows it held."""
        claimed = self.outbox.claim(self.owner, self.batch)
        for delivery in claimed:
            self._deliver(delivery)
        return len(claimed)

    def run_until_idle(self) -> int:
        """Deliver until nothing is due now (tests, `wa-access worker --once`)."""
        total = 0
        while (handled := self.run_once()) > 0:
            total += handled
        return total

    def _deliver(self, delivery: Delivery) -> None:
        try:
            self.deliver(delivery)
        except TryLater as failure:
            kept = self.outbox.retry(delivery, failure)
            log.warning("outbox %d (%s): %s; retrying", delivery.id, delivery.kind, failure)
            self._report(delivery, "retry" if kept else "lost")
            return
        except Undeliverable as failure:
            kept = self.outbox.give_up(delivery, str(failure))
            log.error("outbox %d (%s) given up: %s", delivery.id, delivery.kind, failure)
            self._report(delivery, "given_up" if kept else "lost")
            return
        except Exception as exc:  # a bug in rendering or delivering: retried, then given up
            log.exception("outbox %d (%s) failed", delivery.id, delivery.kind)
            kept = self.outbox.retry(delivery, TryLater(f"unexpected {type(exc).__name__}"))
            self._report(delivery, "retry" if kept else "lost")
            return
        if not self.outbox.done(delivery):
            log.warning("outbox %d was taken over while it was being delivered", delivery.id)
            self._report(delivery, "lost")
            return
        self._report(delivery, "done")

    @staticmethod
    def _report(delivery: Delivery, result: str) -> None:
        if signals.outbox_delivered.listeners:
            signals.outbox_delivered.send(delivery.kind, result)

    def wake(self, *_: object) -> None:
        self._wake.set()

    def run_forever(self) -> None:
        """Deliver until `stop()`; never raises (a database away is waited out)."""
        signals.outbox_queued.connect(self.wake)
        try:
            while not self._stop.is_set():
                try:
                    handled = self.run_once()
                except Exception:
                    log.exception("the outbox worker could not claim work; trying again soon")
                    self._stop.wait(IDLE_AFTER_ERROR_SECONDS)
                    continue
                if handled == 0:
                    self._wake.wait(self.poll)
                    self._wake.clear()
        finally:
            signals.outbox_queued.disconnect(self.wake)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def start(self) -> threading.Thread:
        """Run in a daemon thread (inside `serve`): it dies with its process, and a row
        it held is taken over by another worker once the lease lapses."""
        thread = threading.Thread(target=self.run_forever, name="outbox-worker", daemon=True)
        thread.start()
        return thread


def build_worker(settings: Settings, outbox: Outbox, *, owner: str | None = None) -> OutboxWorker:
    return OutboxWorker(outbox, slack_deliverer(settings), owner=owner)


def serve_worker(worker: OutboxWorker) -> None:
    """`wa-access worker`: deliver until SIGTERM or SIGINT."""

    def stop(signum: int, frame: object) -> None:
        log.info("outbox worker stopping (signal %d)", signum)
        worker.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("outbox worker %s started", worker.owner)
    worker.run_forever()
