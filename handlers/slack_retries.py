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
from typing import Any

from slack_bolt import BoltResponse

from rbac_core.deliveries import ID_MAX, Deliveries

log = logging.getLogger(__name__)

SOURCE = "slack"


def once_per_event(deliveries: Deliveries) -> Callable[..., BoltResponse]:
    """A listener middleware for event listeners."""

    def middleware(body: dict[str, Any], next: Callable[[], BoltResponse]) -> BoltResponse:
        event_id = body.get("event_id")
        if not isinstance(event_id, str) or not 0 < len(event_id) <= ID_MAX:
            return next()  # nothing to recognise a retry by
        if not deliveries.claim(SOURCE, event_id):
            log.info("event %s was already handled; Slack's retry is ignored", event_id)
            return BoltResponse(status=200, body="")
        try:
            return next()
        except Exception:
            deliveries.release(SOURCE, event_id)
            raise

    return middleware
