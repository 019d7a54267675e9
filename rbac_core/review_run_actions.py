"""Gate actions that carry an access review from opened to posted.

The review's one sequence (handlers/review_runs.py) is: `audit.review` opens
it, `review.build` computes its findings, `review.export` hands out its CSV,
and `review.mark` records that it is being posted, then where it was posted.
Each is authorised and audited like any action; the scheduler and the
operator run them as the system, a person needs `audit:run` (`audit:view` to
read). Nothing about a review is written outside the gate.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import Table, update

from .access_review import build_in, write_csv_in
from .errors import InvalidInput, NotFound
from .gate import Action, Context, Prepared, Result
from .models import AccessReview
from .sweeps import is_system
from .values import INT_MAX, WILDCARD, parse_user_id, parse_whole_number

MAX_DEACTIVATED = 1_000_000
_CHANNEL = re.compile(r"[CGD][A-Z0-9]{2,20}")
_TS = re.compile(r"[0-9]{1,12}\.[0-9]{1,9}")


def _review_id(params: Mapping[str, Any]) -> int:
    return parse_whole_number(
        params.get("review"), "that names no access review", low=1, high=INT_MAX
    )


def _permission(ctx: Context, permission: str) -> str | None:
    """The system runs its own reviews; a person needs `permission`."""
    return None if is_system(ctx) else permission


class BuildReviewAction(Action):
    """Compute an opened review's findings; a review already built is left as it is
    (its report, with buttons, may be out)."""

    name = "review.build"

    def prepare(self, ctx: Context, params: Mapping[str, Any]) -> Prepared:
        review_id = _review_id(params)
        given = params.get("deactivated") or []
        if not isinstance(given, list | tuple | set | frozenset) or len(given) > MAX_DEACTIVATED:
            raise InvalidInput("deactivated must be a list of user ids")
        gone = sorted({parse_user_id(str(user)) for user in given})
        return Prepared(
            {"review": review_id, "deactivated": gone},
            _permission(ctx, "audit:run"),
            WILDCARD,
            f"review:{review_id}",
            f"build access review #{review_id}",
        )

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        p = prepared.params
        try:
            totals = build_in(
                ctx.txn, p["review"], now=ctx.now, deactivated_in_slack=p["deactivated"]
            )
        except LookupError:
            raise NotFound(f"There is no access review #{p['review']}.") from None
        return Result(
            f"Access review #{p['review']}: {totals.findings} findings for {totals.users} people.",
            data={"totals": totals},
            details={"findings": totals.findings, "deactivated": len(p["deactivated"])},
        )


class ExportReviewAction(Action):
    """Every finding of a review as CSV: the file posted with its report, or saved."""

    name = "review.export"
    read_only = True

    def prepare(self, ctx: Context, params: Mapping[str, Any]) -> Prepared:
        review_id = _review_id(params)
        return Prepared(
            {"review": review_id},
            _permission(ctx, "audit:view"),
            WILDCARD,
            f"review:{review_id}",
            f"export access review #{review_id}",
        )

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        out = io.StringIO()
        count = write_csv_in(ctx.session, prepared.params["review"], out)
        return Result(f"{count} findings.", data={"csv": out.getvalue(), "count": count})


class MarkReviewAction(Action):
    """Record that a review is being posted (from then on never rebuilt), or where it was."""

    name = "review.mark"

    def prepare(self, ctx: Context, params: Mapping[str, Any]) -> Prepared:
        review_id = _review_id(params)
        status = params.get("status")
        kept: dict[str, Any] = {"review": review_id, "status": status}
        if status == "posted":
            channel, ts = str(params.get("channel") or ""), str(params.get("ts") or "")
            if not (_CHANNEL.fullmatch(channel) and _TS.fullmatch(ts)):
                raise InvalidInput("a posted review needs the channel and ts of its message")
            kept.update(channel=channel, ts=ts)
        elif status != "posting":
            raise InvalidInput("a review is marked posting or posted")
        return Prepared(
            kept,
            _permission(ctx, "audit:run"),
            WILDCARD,
            f"review:{review_id}",
            f"mark access review #{review_id} {status}",
        )

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        p = prepared.params
        reviews = cast(Table, AccessReview.__table__)
        if p["status"] == "posting":
            statement = (
                update(reviews)
                .where(reviews.c.id == p["review"], reviews.c.status == "ready")
                .values(status="posting")
            )
        else:
            statement = (
                update(reviews)
                .where(reviews.c.id == p["review"])
                .values(status="posted", channel=p["channel"], message_ts=p["ts"])
            )
        ctx.session.execute(statement)
        return Result(f"Access review #{p['review']} is {p['status']}.")


REVIEW_RUN_ACTIONS: dict[str, Action] = {
    a.name: a for a in (BuildReviewAction(), ExportReviewAction(), MarkReviewAction())
}
