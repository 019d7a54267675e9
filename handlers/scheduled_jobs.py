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
from rbac_core.access_review import DEFAULT_DAYS, build, mark_posted, mark_posting, page
from rbac_core.clock import utcnow
from rbac_core.job_runs import period_key
from rbac_core.principals import SCHEDULER, Surface
from rbac_core.sweeps import Expired, sweep_due

from .slack_review import post_report, report_csv

log = logging.getLogger(__name__)


USERS_PAGE = 1000  # users.list allows up to 1,000 a page; fewer calls on a Tier 2 method

Checkpoint = Callable[[], None]
"""Renews the run's claim between steps; raises if another scheduler took it over or
the run passed its time bound (`rbac_core.job_runs.RunTooLong`): the run must stop."""


def sweep_expired(gate: Gate) -> Outcome | None:
    """Mark what expired; None when nothing had (no write, no audit). Each owner is told
    by a notice of the sweep, delivered through the outbox."""
    if not sweep_due(gate.db, utcnow(gate.clock)):
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
            if member.get("deleted") and isinstance(member.get("id"), str):
                gone.add(member["id"])
        cursor = str((answer.get("response_metadata") or {}).get("next_cursor") or "")
        checkpoint()
        if not cursor:
            return gone


def run_review(
    gate: Gate,
    client: WebClient,
    channel: str,
    *,
    actor: str = SCHEDULER,
    surface: str = Surface.SCHEDULER,
    days: int = DEFAULT_DAYS,
    period: str | None = None,
    checkpoint: Checkpoint = lambda: None,
) -> str:
    """Open (or resume) a review through the gate, build it, post it; returns a summary.

    A period's review is one row: a run that took the period over finds the
    row and rebuilds it, or, if it was already posted, posts nothing again.
    """
    params: dict[str, object] = {"days": days}
    if period is not None:
        params["period"] = period
    opened = gate.submit(actor, surface, "audit.review", params)
    if opened.status != "done":
        raise ReviewRefused(opened.message)
    review_id = int(opened.data["review_id"])
    status = opened.data.get("status")
    if status == "posted":
        return f"review #{review_id} was already posted"
    now = utcnow(gate.clock)
    if status == "building":
        deactivated = slack_deactivated(client, checkpoint)
        build(gate.db, review_id, now=now, deactivated_in_slack=deactivated, checkpoint=checkpoint)
    # Built (now or by a run that died later): never rebuilt from here, so buttons of a
    # report that may already be out keep working; at worst it is posted a second time.
    first = page(gate.db, review_id, 0)
    if first is None:
        raise ReviewRefused(f"review #{review_id} vanished while it was built")
    csv_text = report_csv(gate.db, first)
    checkpoint()
    mark_posting(gate.db, review_id)
    ts = post_report(client, channel, first, now, csv_text)
    mark_posted(gate.db, review_id, channel, ts)
    totals = first.review.totals
    return f"review #{review_id}: {totals.findings} findings for {totals.users} people"


class ReviewRefused(RuntimeError):
    """The gate would not open the review (a misconfiguration, never a person's typo)."""


def weekly_review(
    gate: Gate, client: WebClient, channel: str, days: int
) -> Callable[[datetime, Checkpoint], str]:
    """The scheduler's job: the review of one period, posted to the audit channel."""

    def run(period: datetime, checkpoint: Checkpoint) -> str:
        return run_review(
            gate, client, channel, days=days, period=period_key(period), checkpoint=checkpoint
        )

    return run
