"""The outbox worker: delivers what actions wrote to the outbox (rbac_core/outbox/).

It runs as a thread of `serve`'s background process (unless `--no-worker`)
and of `wa-access worker`; any number of them share one database safely,
since every row is claimed under a lease. It is a `Poller` (polling.py): it
sleeps until a gate call commits a notice (`signals.outbox_queued`, in its own
process or relayed from `serve`'s web workers), or for at most `poll` seconds, which is how it
sees notices written by other processes and retries falling due.

Deliveries to Slack are posted by a Web API client of their own, with none
of slack_sdk's retry handlers: its 429 handler would sleep inside the worker,
and its connection-error handler posts again after a reset, when Slack may
have taken the first post. A 429 becomes `TryLater(after=Retry-After)`, which
holds back that whole destination (rbac_core/outbox/). Before each post the
worker makes sure the row's lease outlasts it (renewing it if not), so a live
worker is never taken over mid-post.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from handlers.slack.notices import UnknownKind, UnknownNotice, render
from rbac_core import signals
from rbac_core.clock import utcnow
from rbac_core.outbox import (
    ALERT_CHANNEL,
    AUDIT_CHANNEL,
    Delivery,
    DeliveryFailed,
    Notice,
    Outbox,
    TryLater,
    Undeliverable,
    person,
)
from rbac_core.store.leases import default_owner

from .config import Settings
from .polling import Poller

log = logging.getLogger(__name__)

SLACK_TIMEOUT_SECONDS = 5
POLL_SECONDS = 1.0
RENEW_BELOW = timedelta(seconds=4 * SLACK_TIMEOUT_SECONDS)
"""A row whose lease has less than this left is renewed before it is posted: a post
may take the client's timeout for each of connecting, sending and reading."""

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
        retry_handlers=[],
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
        except UnknownKind as exc:
            raise TryLater(str(exc)) from None
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


class OutboxWorker(Poller):
    thread_name = "outbox-worker"

    def __init__(
        self,
        outbox: Outbox,
        deliver: Deliver,
        *,
        owner: str | None = None,
        batch: int = 5,
        poll: float = POLL_SECONDS,
    ) -> None:
        super().__init__(poll, (signals.outbox_queued,))
        self.outbox = outbox
        self.deliver = deliver
        self.owner = owner or default_owner()
        self.batch = batch

    def run_once(self) -> int:
        """Claim and deliver one batch; how many rows it held."""
        claimed = self.outbox.claim(self.owner, self.batch)
        for delivery in claimed:
            try:
                self._deliver(delivery)
            except Exception:  # the database, while recording: the lease brings it back
                log.exception("outbox %d: could not record how its delivery went", delivery.id)
        return len(claimed)

    def run_until_idle(self, patience: float = 0.0) -> int:
        """Deliver until nothing is due; with `patience` (seconds), also wait for due
        rows whose destination is paced (`wa-access worker --once`)."""
        total = 0
        give_up_at = time.monotonic() + patience
        while True:
            handled = self.run_once()
            total += handled
            if handled:
                continue
            if time.monotonic() >= give_up_at or not self.outbox.due_now():
                return total
            time.sleep(0.1)

    def _deliver(self, delivery: Delivery) -> None:
        left = delivery.lease_until - utcnow(self.outbox.clock)
        if left < RENEW_BELOW:
            renewed = self.outbox.renew(delivery)
            if renewed is None:
                log.warning("outbox %d was taken over before it was posted", delivery.id)
                self._report(delivery, "lost")
                return
            delivery = renewed
        try:
            self.deliver(delivery)
        except TryLater as failure:
            kept = self.outbox.retry(delivery, failure)
            log.warning("outbox %d (%s): %s; retrying", delivery.id, _about(delivery), failure)
            self._report(delivery, "retry" if kept else "lost")
            return
        except Undeliverable as failure:
            self._give_up(delivery, str(failure))
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

    def _give_up(self, delivery: Delivery, reason: str) -> None:
        kept = self.outbox.give_up(delivery, reason)
        # A setting left unset is the operator's choice, not an incident.
        level = logging.WARNING if reason.endswith("is not set") else logging.ERROR
        log.log(level, "outbox %d (%s) given up: %s", delivery.id, _about(delivery), reason)
        self._report(delivery, "given_up" if kept else "lost")
        fallback = FALLBACKS.get(delivery.kind)
        if kept and fallback is not None and level == logging.ERROR:
            self.outbox.add([fallback(delivery.data, reason)])

    @staticmethod
    def _report(delivery: Delivery, result: str) -> None:
        if signals.outbox_delivered.listeners:
            signals.outbox_delivered.send(delivery.kind, result)


def _about(delivery: Delivery) -> str:
    """The kind, and who it concerns when the data says: enough to act on from the log."""
    who = delivery.data.get("user") or delivery.data.get("requester")
    return f"{delivery.kind} about {who}" if isinstance(who, str) else delivery.kind


def _unannounced(data: dict[str, Any], why: str) -> Notice:
    return Notice(
        "access.unannounced",
        person(str(data.get("requester"))),
        {"role": data.get("role"), "why": why},
    )


FALLBACKS: dict[str, Callable[[dict[str, Any], str], Notice]] = {
    "access.requested": _unannounced,
}
"""What to send instead when a notice is given up: a requester whose request
the approvers never saw is told so, as they were before the outbox."""


def build_worker(settings: Settings, outbox: Outbox, *, owner: str | None = None) -> OutboxWorker:
    return OutboxWorker(outbox, slack_deliverer(settings), owner=owner)
