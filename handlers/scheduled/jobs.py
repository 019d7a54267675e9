"""The scheduler's jobs: each one gate call (as the `scheduler`), then Slack messages.

Thin like the Slack listeners: the core decides and records, these functions
only carry the outcome to the people it concerns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from slack_sdk import WebClient

from rbac_core import Gate, Outcome
from rbac_core.actions.sweeps import Expired, sweep_due
from rbac_core.clock import utcnow
from rbac_core.principals import SCHEDULER, Surface
from rbac_core.values import is_user_id, period_key

from ..commands.review_runs import run_review
from ..slack.review import slack_poster

log = logging.getLogger(__name__)


USERS_PAGE = 1000  # users.list allows up to 1,000 a page; fewer calls on a Tier 2 method

Checkpoint = Callable[[], None]
"""Renews the run's claim between steps; raises if another scheduler took it over or
the run passed its time bound (`rbac_core.job_runs.RunTooLong`): the run must stop."""


def sweep_expired(gate: Gate) -> Outcome | None:
    """Mark what expired; None when nothing had (no write, no audit). Each owner is told
    by a notice of the sweep, delivered through the outbox."""
    now = utcnow(gate.clock)
    if not gate.peek(lambda conn: sweep_due(conn, now)):
        return None
    outcome = gate.submit(SCHEDULER, Surface.SCHEDULER, "system.sweep", {})
    if outcome.status != "done":
        log.error("the expiry sweep was refused: %s", outcome.message)
        return outcome
    expired: list[Expired] = list(outcome.data.get("expired", ()))
    if expired:
        log.info("%s", outcome.message)
    return outcome


def slack_deactivated(client: WebClient, checkpoint: Checkpoint) -> set[str]:
    """Ids of people Slack says are deactivated (`deleted`), read a page at a time.

    Only the deactivated ids are kept, so memory follows them, not the workspace.
    """
    gone: set[str] = set()
    cursor = ""
    while True:
        answer = client.users_list(limit=USERS_PAGE, cursor=cursor or None)
        for member in answer.get("members") or ():
            # Only ids `review.build` accepts: anything else is no person we could know.
            if member.get("deleted") and is_user_id(str(member.get("id") or "")):
                gone.add(member["id"])
        cursor = str((answer.get("response_metadata") or {}).get("next_cursor") or "")
        checkpoint()
        if not cursor:
            return gone


def weekly_review(
    gate: Gate, client: WebClient, channel: str, days: int
) -> Callable[[datetime, Checkpoint], str]:
    """The scheduler's job: the review of one period, posted to the audit channel."""

    def run(period: datetime, checkpoint: Checkpoint) -> str:
        # A refusal (review_runs.ReviewRefused) is a misconfiguration, never a person's typo: the
        # run fails and is retried, then given up with an alert.
        return run_review(
            gate,
            SCHEDULER,
            Surface.SCHEDULER,
            days=days,
            period=period_key(period),
            deactivated=lambda: slack_deactivated(client, checkpoint),
            post=slack_poster(client, channel, gate.clock),
            checkpoint=checkpoint,
        ).summary

    return run
