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
from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import Table, update

from ..errors import Conflict, InvalidInput, NotFound
from ..gate import Action, Context, Prepared, Result
from ..policy.relations import Resource
from ..review.building import build_in
from ..review.reading import read_page
from ..store.models import AccessReview
from ..values import INT_MAX, WILDCARD, is_user_id, parse_whole_number
from .sweeps import is_system, system_only

MAX_DEACTIVATED = 1_000_000
_CHANNEL = re.compile(r"[CGD][A-Z0-9]{2,20}")
_TS = re.compile(r"[0-9]{1,12}\.[0-9]{1,9}")
_REVIEWS = cast(Table, AccessReview.__table__)


def _review(ctx: Context, params: Mapping[str, Any]) -> AccessReview:
    review_id = parse_whole_number(
        params.get("review"), "that names no access review", low=1, high=INT_MAX
    )
    review = ctx.session.get(AccessReview, review_id)
    if review is None:
        raise NotFound(f"There is no access review #{review_id}.")
    return review


def _as_resource(review: AccessReview) -> Resource:
    return Resource("access_review", f"#{review.id}", {"requester": review.requested_by})


class BuildReviewAction(Action):
    """Compute an opened review's findings; a review already built is left as it is
    (its report, with buttons, may be out)."""

    name = "review.build"

    def prepare(self, ctx: Context, params: Mapping[str, Any]) -> Prepared:
        review = _review(ctx, params)
        given = params.get("deactivated") or []
        if not isinstance(given, list | tuple | set | frozenset) or len(given) > MAX_DEACTIVATED:
            raise InvalidInput("deactivated must be a list of at most 1,000,000 user ids")
        gone = sorted({str(user) for user in given})
        if not all(is_user_id(user) for user in gone):
            raise InvalidInput("deactivated must be a list of Slack user ids")
        return Prepared(
            {"review": review.id, "deactivated": gone},
            None if is_system(ctx) else "audit:run",
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
            data={"totals": totals, "page": read_page(ctx.session, p["review"], 0)},
            details={"findings": totals.findings, "deactivated": len(p["deactivated"])},
        )


class ExportReviewAction(Action):
    """Authorises reading every finding of a review, which the surface then streams from
    the snapshot the gate hands out (the file posted with the report, or saved)."""

    name = "review.export"
    read_only = True
    hands_out_snapshot = True

    def prepare(self, ctx: Context, params: Mapping[str, Any]) -> Prepared:
        review = _review(ctx, params)
        return Prepared(
            {"review": review.id},
            None if is_system(ctx) else "audit:view",
            WILDCARD,
            f"review:{review.id}",
            f"export access review #{review.id}",
        )

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        review = prepared.params["review"]
        return Result(f"Export of access review #{review}.", data={"review": review})


class MarkReviewAction(Action):
    """Record that a review is being posted (from then on never rebuilt), or where it
    was. The system's alone: the channel and message it records are the report's."""

    name = "review.mark"

    def prepare(self, ctx: Context, params: Mapping[str, Any]) -> Prepared:
        system_only(ctx, "mark an access review posted")
        review = _review(ctx, params)
        status = params.get("status")
        kept: dict[str, Any] = {"review": review.id, "status": status}
        if status == "posted":
            channel, ts = str(params.get("channel") or ""), str(params.get("ts") or "")
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


REVIEW_RUN_ACTIONS: dict[str, Action] = {
    a.name: a for a in (BuildReviewAction(), ExportReviewAction(), MarkReviewAction())
}
