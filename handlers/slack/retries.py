"""Slack's Events API retries a delivery it thinks failed; each event_id runs once.

Slack retries up to three times (at once, after about a minute, after about
five), marking them with X-Slack-Retry-Num; the envelope's `event_id` is the
same on every try. A retry of an event already taken in is acknowledged with
200 and nothing else, so Slack stops; if handling it raised, the claim is
released so the next retry can do the work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from slack_bolt import BoltResponse

log = logging.getLogger(__name__)

SOURCE = "slack"


class TakenOnce(Protocol):
    """Where events already taken in are remembered (the store's `InboundEvents`)."""

    def claim(self, source: str, delivery_id: str) -> bool:
        """True the first time; raises ValueError for an id it cannot key."""
        ...

    def release(self, source: str, delivery_id: str) -> None: ...


def once_per_event(inbound: TakenOnce) -> Callable[..., BoltResponse]:
    """A listener middleware for event listeners."""

    def middleware(body: dict[str, Any], next: Callable[[], BoltResponse]) -> BoltResponse:
        event_id = body.get("event_id")
        if not isinstance(event_id, str):
            return next()  # nothing to recognise a retry by
        try:
            first = inbound.claim(SOURCE, event_id)
        except ValueError:
            return next()  # not an id that can be keyed: nothing to recognise a retry by
        if not first:
            log.info("event %s was already handled; Slack's retry is ignored", event_id)
            return BoltResponse(status=200, body="")
        try:
            return next()
        except Exception:
            inbound.release(SOURCE, event_id)
            raise

    return middleware
