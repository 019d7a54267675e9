"""Gate actions that carry an access review from opened to posted.

The review's one sequence (handlers/review_runs.py) is: `audit.review` opens
it, `review.build` computes its findings, `review.export` authorises reading
all of them (streamed by the surface from the snapshot the gate hands out),
and `review.mark` records that it is being posted, then where it was posted.
Each is authorised and audited like any action. The scheduler and the
operator run them as the system; a person may build only a review they asked
for (a relation rule, relations.py) and never marks one: posting is the
system's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, select, update

from ..errors import Conflict, InvalidInput, NotFound
from ..gate import Action, Context, Data, Params, Prepared, Result
from ..policy.relations import Resource
from ..review.building import DEFAULT_DAYS, MAX_DAYS, Totals, build_in
from ..review.reading import Page, read_page
from ..store.models import AccessReview
from ..values import INT_MAX, WILDCARD, clean_text, is_user_id, parse_whole_number
from .sweeps import system_only

MAX_DEACTIVATED = 1_000_000
PERIOD_MAX = 32
_CHANNEL = re.compile(r"[CGD][A-Z0-9]{2,20}")
_TS = re.compile(r"[0-9]{1,12}\.[0-9]{1,9}")
_REVIEWS = cast(Table, AccessReview.__table__)


def _days(value: object) -> int:
    if value is None or value == "":
        return DEFAULT_DAYS
    return parse_whole_number(
        value, f"--days takes a whole number of days from 1 to {MAX_DAYS}", low=1, high=MAX_DAYS
    )


@dataclass(frozen=True)
class StartReviewParams(Params):
    days: int | str | None = None
    """Inactive after this many days; DEFAULT_DAYS when left out."""
    period: str | None = None
    """The scheduler's period key: at most one review is made per period."""


@dataclass(frozen=True)
class OpenedData(Data):
    review_id: int
    status: str
    """building, or further along when a period's review is resumed."""
    resumed: bool
    """The period's review existed already."""


class StartReviewAction(Action[StartReviewParams]):
    """Open an access review; the scheduler's has a period and is made once per period."""

    name = "audit.review"
    params_type = StartReviewParams

    def prepare(self, ctx: Context, params: StartReviewParams) -> Prepared:
        days = _days(params.days)
        period = params.period
        system = ctx.is_system
        if period is not None:
            if not system:
                raise InvalidInput("only the scheduler opens a review for a period")
            period = clean_text(period[:PERIOD_MAX], "period", PERIOD_MAX)
        return Prepared(
            {"days": days, "period": period},
            None if system else "audit:run",
            WILDCARD,
            f"review:{period or 'now'}",
            f"run the access review (inactive for {days} days)",
        )

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        p = prepared.params
        session = ctx.session
        existing = None
        if p["period"] is not None:
            existing = session.scalar(
                select(AccessReview).where(AccessReview.period == p["period"])
            )
        review = existing or AccessReview(
            period=p["period"],
            requested_by=ctx.actor,
            created_at=ctx.now,
            days=p["days"],
            status="building",
        )
        if existing is None:
            session.add(review)
            session.flush()
        elif review.status == "building":
            review.created_at = ctx.now  # rebuilt by a run that took the period over
        return Result(
            f"Access review #{review.id} opened.",
            data=OpenedData(review.id, review.status, bool(existing)),
            details={"review_id": review.id, "days": review.days},
        )


def _review(ctx: Context, review_param: object) -> AccessReview:
    review_id = parse_whole_number(review_param, "that names no access review", low=1, high=INT_MAX)
    review = ctx.session.get(AccessReview, review_id)
    if review is None:
        raise NotFound(f"There is no access review #{review_id}.")
    return review


def _as_resource(review: AccessReview) -> Resource:
    return Resource("access_review", f"#{review.id}", {"requester": review.requested_by})


@dataclass(frozen=True)
class ReviewParams(Params):
    review: int | str | None = None
    """The review's id."""


@dataclass(frozen=True)
class BuildParams(Params):
    review: int | str | None = None
    """The review's id."""
    deactivated: list[str] | None = None
    """Slack ids of people Slack says are deactivated."""


@dataclass(frozen=True)
class BuiltData(Data):
    totals: Totals
    page: Page | None
    """The review's first page."""


class BuildReviewAction(Action[BuildParams]):
    """Compute an opened review's findings; a review already built is left as it is
    (its report, with buttons, may be out)."""

    name = "review.build"
    params_type = BuildParams

    def prepare(self, ctx: Context, params: BuildParams) -> Prepared:
        review = _review(ctx, params.review)
        given = params.deactivated or []
        if len(given) > MAX_DEACTIVATED:
            raise InvalidInput("deactivated must be a list of at most 1,000,000 user ids")
        gone = sorted(set(given))
        if not all(is_user_id(user) for user in gone):
            raise InvalidInput("deactivated must be a list of Slack user ids")
        return Prepared(
            {"review": review.id, "deactivated": gone},
            None if ctx.is_system else "audit:run",
            WILDCARD,
            f"review:{review.id}",
            f"build access review #{review.id}",
            resource=_as_resource(review),
        )

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        p = prepared.params
        totals = build_in(ctx.txn, p["review"], now=ctx.now, deactivated_in_slack=p["deactivated"])
        return Result(
            f"Access review #{p['review']}: {totals.findings} findings for {totals.users} people.",
            # Its first page: whoever may build a review may see what they built.
            data=BuiltData(totals, read_page(ctx.session, p["review"], 0)),
            details={"findings": totals.findings, "deactivated": len(p["deactivated"])},
        )


@dataclass(frozen=True)
class ExportData(Data):
    review: int
    """The review's id, to stream its findings from the snapshot."""


class ExportReviewAction(Action[ReviewParams]):
    """Authorises reading every finding of a review, which the surface then streams from
    the snapshot the gate hands out (the file posted with the report, or saved)."""

    name = "review.export"
    params_type = ReviewParams
    read_only = True
    hands_out_snapshot = True

    def prepare(self, ctx: Context, params: ReviewParams) -> Prepared:
        review = _review(ctx, params.review)
        return Prepared(
            {"review": review.id},
            None if ctx.is_system else "audit:view",
            WILDCARD,
            f"review:{review.id}",
            f"export access review #{review.id}",
        )

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        review = prepared.params["review"]
        return Result(f"Export of access review #{review}.", data=ExportData(review))


@dataclass(frozen=True)
class MarkParams(Params):
    review: int | str | None = None
    """The review's id."""
    status: str | None = None
    """posting, or posted (with the channel and ts of the report's message)."""
    channel: str | None = None
    ts: str | None = None


class MarkReviewAction(Action[MarkParams]):
    """Record that a review is being posted (from then on never rebuilt), or where it
    was. The system's alone: the channel and message it records are the report's."""

    name = "review.mark"
    params_type = MarkParams

    def prepare(self, ctx: Context, params: MarkParams) -> Prepared:
        system_only(ctx, "mark an access review posted")
        review = _review(ctx, params.review)
        status = params.status
        kept: dict[str, Any] = {"review": review.id, "status": status}
        if status == "posted":
            channel, ts = params.channel or "", params.ts or ""
            if not (_CHANNEL.fullmatch(channel) and _TS.fullmatch(ts)):
                raise InvalidInput("a posted review needs the channel and ts of its message")
            kept.update(channel=channel, ts=ts)
        elif status != "posting":
            raise InvalidInput("a review is marked posting or posted")
        return Prepared(
            kept,
            None,
            WILDCARD,
            f"review:{review.id}",
            f"mark access review #{review.id} {status}",
        )

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        p = prepared.params
        # Posting follows building (or a post that died half way); posted follows posting.
        after = ("ready", "posting") if p["status"] == "posting" else ("posting",)
        values: dict[str, Any] = {"status": p["status"]}
        if p["status"] == "posted":
            values.update(channel=p["channel"], message_ts=p["ts"])
        moved = ctx.session.execute(
            update(_REVIEWS)
            .where(_REVIEWS.c.id == p["review"], _REVIEWS.c.status.in_(after))
            .values(**values)
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict(
                f"Access review #{p['review']} is not {' or '.join(after)}, so it cannot "
                f"be marked {p['status']}."
            )
        return Result(f"Access review #{p['review']} is {p['status']}.")


REVIEW_RUN_ACTIONS: dict[str, Action[Any]] = {
    a.name: a
    for a in (StartReviewAction(), BuildReviewAction(), ExportReviewAction(), MarkReviewAction())
}
