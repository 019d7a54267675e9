"""The access review's one sequence, for every surface that runs it.

open (`audit.review`) -> build (`review.build`, with who the chat platform
says is deactivated) -> first page (`review.page`) -> and, when the surface
posts it: CSV (`review.export`) -> `review.mark posting` -> post ->
`review.mark posted`. Every step is a gate action, so it is authorised and
audited, and nothing here touches the database. The scheduler, `/wa-audit
run` and `wa-access audit run [--post]` all call `run_review`; they differ
only in who acts, where, and whether (and how) the report is posted.

A period's review is one row: a run that took the period over finds it and
rebuilds it, or, if it was already posted, posts nothing again. A review built
(now or by a run that died later) is never rebuilt, so the buttons of a report
that may already be out keep working; at worst it is posted a second time.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rbac_core import Gate, Outcome
from rbac_core.principals import Principal
from rbac_core.review.building import DEFAULT_DAYS, Totals
from rbac_core.review.reading import Page, write_csv

Checkpoint = Callable[[], None]
"""Renews a scheduled run's claim between steps; raises if the run must stop."""

Post = Callable[[Page, str | None], tuple[str, str]]
"""Posts the first page (and the CSV of every finding, when there is more than one
page); returns (channel, message ts)."""


class ReviewRefused(RuntimeError):
    """The gate refused a step of the review; `outcome` says which and why."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome


@dataclass(frozen=True)
class ReviewRun:
    review_id: int
    totals: Totals
    first: Page
    posted_to: str | None = None
    already_posted: bool = False

    @property
    def summary(self) -> str:
        if self.already_posted:
            return f"review #{self.review_id} was already posted"
        return (
            f"review #{self.review_id}: {self.totals.findings} findings "
            f"for {self.totals.users} people"
        )


def run_review(
    gate: Gate,
    actor: Principal,
    surface: str,
    *,
    days: int = DEFAULT_DAYS,
    period: str | None = None,
    deactivated: Callable[[], set[str]] | None = None,
    post: Post | None = None,
    checkpoint: Checkpoint = lambda: None,
) -> ReviewRun:
    """Open (or resume), build, and post when `post` is given; raises ReviewRefused."""
    params: dict[str, Any] = {"days": days}
    if period is not None:
        params["period"] = period
    opened = gate.submit(actor, surface, "audit.review", params)
    if opened.status != "done":
        raise ReviewRefused(opened)
    return complete_review(
        gate,
        actor,
        surface,
        opened,
        deactivated=deactivated,
        post=post,
        checkpoint=checkpoint,
    )


def export_csv(gate: Gate, allowed: Outcome) -> str:
    """Every finding as CSV, streamed from the snapshot the gate hands out for `allowed`
    (a done `review.export`): no write lock is held while it is read."""
    buffer = io.StringIO()
    with gate.snapshot_for(allowed) as conn:
        write_csv(conn, int(allowed.data["review"]), buffer)
    return buffer.getvalue()


def complete_review(
    gate: Gate,
    actor: Principal,
    surface: str,
    opened: Outcome,
    *,
    deactivated: Callable[[], set[str]] | None = None,
    post: Post | None = None,
    checkpoint: Checkpoint = lambda: None,
) -> ReviewRun:
    """The rest of the sequence after `audit.review` opened a review (`opened`)."""

    def step(action: str, **params: Any) -> Outcome:
        outcome = gate.submit(actor, surface, action, params)
        if outcome.status != "done":
            raise ReviewRefused(outcome)
        return outcome

    review_id = int(opened.data["review_id"])
    status = opened.data.get("status")
    if status == "building":
        gone = sorted(deactivated()) if deactivated is not None else []
        checkpoint()
        first: Page = step("review.build", review=review_id, deactivated=gone).data["page"]
    else:  # built by a run that died later: read back, never rebuilt
        first = step("review.page", review=review_id, page=0).data["page"]
    totals = first.review.totals
    if status == "posted":
        return ReviewRun(review_id, totals, first, already_posted=True)
    if post is None:
        return ReviewRun(review_id, totals, first)
    csv_text = None
    if first.pages > 1:  # one page is all in the message; more go whole in a file
        csv_text = export_csv(gate, step("review.export", review=review_id))
    checkpoint()
    step("review.mark", review=review_id, status="posting")
    channel, ts = post(first, csv_text)
    step("review.mark", review=review_id, status="posted", channel=channel, ts=ts)
    return ReviewRun(review_id, totals, first, posted_to=channel)
