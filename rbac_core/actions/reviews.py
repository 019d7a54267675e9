"""Gate actions of the access review: act on its findings, and read it a page at a time.

Starting one (`audit.review`) is the first step of its run (review_runs.py).

*Revoke* and *Keep 30 days* are decided afresh at the click, like any
confirmation (SPEC §4 rule 3): the clicker needs `roles:assign` where the
grant applies, the finding must still be open, the grant still live, and an
"inactive" finding must still be true — someone who has done anything since
the review is not revoked on its word. "Keep" on an expiring grant extends it
by 30 days, which is granting again, so it follows the granting rules (and
step-up 2FA for a sensitive role); on other findings it leaves the grant out
of reviews for 30 days.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update

from ..errors import Conflict, NotFound
from ..gate import Action, Context, Data, NoParams, Params, Prepared, Result
from ..policy.builtin_roles import ADMIN
from ..policy.grant_rules import ensure_holds, ensure_not_last_admin
from ..policy.relations import Resource
from ..review.building import KEEP_FOR, last_active
from ..review.reading import Page, Review, page_of, read_page
from ..store.models import AccessReview, Grant, ReviewFinding, ReviewKeep, SecondFactor
from ..values import (
    INT_MAX,
    MAX_DURATION,
    WILDCARD,
    for_scope,
    format_moment,
    parse_whole_number,
    scope_text,
)
from .granting import check_grantable, sensitive_role

ID_MAX = INT_MAX  # the largest id either database's integer column holds


def _id(value: object, problem: str) -> int:
    return parse_whole_number(value, problem, low=1, high=ID_MAX)


@dataclass(frozen=True)
class FindingParams(Params):
    finding: int | str | None = None
    """A finding's id, as its button sends it."""


def _finding(ctx: Context, finding_param: object) -> ReviewFinding:
    finding_id = _id(finding_param, "that button names no finding")
    finding = ctx.session.scalar(
        select(ReviewFinding).where(ReviewFinding.id == finding_id).with_for_update()
    )
    if finding is None:
        raise NotFound("That finding no longer exists (the review was removed).")
    return finding


def _ensure_open(ctx: Context, finding: ReviewFinding) -> Grant:
    if finding.status != "open":
        when = format_moment(finding.handled_at) if finding.handled_at else "earlier"
        raise Conflict(
            f"Already handled: {finding.status} by <@{finding.handled_by}> at {when}. "
            "Nothing changed."
        )
    grant = ctx.session.get(Grant, finding.grant_id)
    if grant is None or grant.revoked_at is not None:
        raise Conflict(
            f"{finding.user_id} no longer holds {finding.role} in {scope_text(finding.scope)}; "
            "nothing changed."
        )
    if grant.expires_at is not None and grant.expires_at <= ctx.now:
        raise Conflict(
            f"{finding.user_id}'s {finding.role} grant expired at "
            f"{format_moment(grant.expires_at)}; nothing changed."
        )
    return grant


def _ensure_still_true(ctx: Context, finding: ReviewFinding) -> None:
    """Refuse to act on a finding that stopped being true since the review."""
    if finding.kind == "no_2fa":
        factor = ctx.session.get(SecondFactor, finding.user_id)
        if factor is not None and factor.active:
            raise Conflict(
                f"{finding.user_id} has turned on 2FA since this review; nothing changed."
            )
        return
    if finding.kind != "inactive":
        return
    review = ctx.session.get(AccessReview, finding.review_id)
    since = review.created_at if review is not None else ctx.now
    seen: datetime | None = last_active(ctx.session, finding.user_id)
    if seen is not None and seen > since:
        raise Conflict(
            f"{finding.user_id} has been active since this review (last at "
            f"{format_moment(seen)}), so they are no longer inactive; nothing changed."
        )


def _prepared(
    finding: ReviewFinding, what: str, sensitive: bool = False, *, vouches: bool = False
) -> Prepared:
    """`vouches`: keeping access vouches for it, which its holder may not do for
    themselves (a relation rule, relations.py); revoking one's own is allowed."""
    holder = {"holder": finding.user_id} if vouches else {}
    return Prepared(
        {"finding": finding.id},
        "roles:assign",
        finding.scope,
        f"user:{finding.user_id}",
        f"{what} {finding.role} of {finding.user_id} in {scope_text(finding.scope)} "
        f"(review #{finding.review_id}, {finding.kind})",
        sensitive,
        Resource("finding", f"#{finding.id}", holder),
    )


class RevokeFindingAction(Action[FindingParams]):
    name = "review.revoke"
    params_type = FindingParams
    mutates_policy = True

    def prepare(self, ctx: Context, params: FindingParams) -> Prepared:
        return _prepared(_finding(ctx, params.finding), "revoke")

    def check_rules(self, ctx: Context, prepared: Prepared) -> None:
        # After the permission check, so only those allowed learn how the row stands.
        finding = _finding(ctx, prepared.params["finding"])
        _ensure_open(ctx, finding)
        _ensure_still_true(ctx, finding)
        if finding.user_id != ctx.actor:
            ensure_holds(
                ctx.policy,
                ctx.actor,
                ctx.policy.permissions_of_role(finding.role),
                finding.scope,
                f"revoke {finding.role}{for_scope(finding.scope)}",
            )
        if finding.role == ADMIN and finding.scope == WILDCARD:
            ensure_not_last_admin(ctx.session, finding.user_id, ctx.now, "revoking admin")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        finding = _finding(ctx, prepared.params["finding"])
        grant = _ensure_open(ctx, finding)
        grant.revoked_at = ctx.now
        grant.revoked_by = ctx.actor
        grant.revoke_reason = f"access review #{finding.review_id}: {finding.kind}"
        _handled(ctx, finding, "revoked", same_kind=False)
        return Result(
            f"Revoked {finding.role} from {finding.user_id} in {scope_text(finding.scope)} "
            f"(grant #{grant.id}).",
            data=_data(ctx, finding),
            details={"finding": finding.id, "grant_id": grant.id, "kind": finding.kind},
            policy_users=frozenset({grant.user_id}),
        )


class KeepFindingAction(Action[FindingParams]):
    name = "review.keep"
    params_type = FindingParams
    mutates_policy = True

    def prepare(self, ctx: Context, params: FindingParams) -> Prepared:
        finding = _finding(ctx, params.finding)
        extends = finding.kind == "expiring"
        sensitive = extends and sensitive_role(ctx.policy, finding.role)
        return _prepared(finding, "extend" if extends else "keep", sensitive, vouches=True)

    def check_rules(self, ctx: Context, prepared: Prepared) -> None:
        finding = _finding(ctx, prepared.params["finding"])
        _ensure_open(ctx, finding)
        _ensure_still_true(ctx, finding)
        if finding.kind == "expiring":
            check_grantable(ctx, finding.user_id, finding.role, finding.scope)
            return
        # Keeping a grant vouches for it: only someone who could grant it may.
        ensure_holds(
            ctx.policy,
            ctx.actor,
            ctx.policy.permissions_of_role(finding.role),
            finding.scope,
            f"keep {finding.role}{for_scope(finding.scope)}",
        )

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        finding = _finding(ctx, prepared.params["finding"])
        grant = _ensure_open(ctx, finding)
        details: dict[str, Any] = {"finding": finding.id, "grant_id": grant.id}
        if finding.kind == "expiring":
            if grant.expires_at is None or grant.expires_at != finding.expires_at:
                raise Conflict(
                    f"{finding.user_id}'s {finding.role} grant changed since this review "
                    "(it was extended or made permanent); nothing changed."
                )
            extended = grant.expires_at + KEEP_FOR
            if extended - ctx.now > MAX_DURATION:
                raise Conflict("Time-bound access is limited to 366 days; nothing changed.")
            grant.expires_at = extended
            message = (
                f"Extended {finding.role} of {finding.user_id} in {scope_text(finding.scope)} "
                f"by 30 days, until {format_moment(extended)}."
            )
            details["expires_at"] = extended.isoformat()
        else:
            until = ctx.now + KEEP_FOR
            keep = ctx.session.get(ReviewKeep, (grant.id, finding.kind))
            if keep is None:
                ctx.session.add(
                    ReviewKeep(
                        grant_id=grant.id,
                        kind=finding.kind,
                        until=until,
                        kept_by=ctx.actor,
                        kept_at=ctx.now,
                    )
                )
            else:
                keep.until, keep.kept_by, keep.kept_at = until, ctx.actor, ctx.now
            message = (
                f"Kept {finding.role} of {finding.user_id} in {scope_text(finding.scope)}; "
                f"reviews will not call it {finding.kind.replace('_', ' ')} again "
                f"until {format_moment(until)}."
            )
            details["kept_until"] = until.isoformat()
        _handled(ctx, finding, "kept", same_kind=True)
        return Result(
            message,
            data=_data(ctx, finding),
            details=details,
            policy_users=frozenset({grant.user_id}),
        )


def _handled(ctx: Context, finding: ReviewFinding, status: str, *, same_kind: bool) -> None:
    """Close this finding, and the grant's open findings in other reviews it settles too,
    so an older report's button cannot act on the grant a second time."""
    others = update(ReviewFinding).where(
        ReviewFinding.grant_id == finding.grant_id,
        ReviewFinding.status == "open",
        ReviewFinding.id != finding.id,
    )
    if same_kind:
        others = others.where(ReviewFinding.kind == finding.kind)
    ctx.session.execute(others.values(status=status, handled_by=ctx.actor, handled_at=ctx.now))
    finding.status = status
    finding.handled_by = ctx.actor
    finding.handled_at = ctx.now
    ctx.session.flush()


@dataclass(frozen=True)
class DecidedData(Data):
    """What a surface shows after a decision: the finding, and its page drawn afresh
    (handed out here, so the clicker needs no permission to read the review)."""

    page: Page | None
    finding: int
    review_id: int
    position: int
    user: str
    role: str
    scope: str


def _data(ctx: Context, finding: ReviewFinding) -> DecidedData:
    return DecidedData(
        read_page(ctx.session, finding.review_id, page_of(finding.position)),
        finding.id,
        finding.review_id,
        finding.position,
        finding.user_id,
        finding.role,
        finding.scope,
    )


@dataclass(frozen=True)
class PageParams(Params):
    review: int | str | None = None
    """The review's id."""
    page: int | str | None = None
    """Which page, from 0; the first when left out."""


@dataclass(frozen=True)
class PageData(Data):
    page: Page


class ViewReviewPageAction(Action[PageParams]):
    """One page of a review, for the report's Previous / Next buttons."""

    name = "review.page"
    params_type = PageParams
    read_only = True

    def prepare(self, ctx: Context, params: PageParams) -> Prepared:
        review_id = _id(params.review, "that button names no review page")
        number = parse_whole_number(
            params.page or 0, "that button names no review page", low=0, high=ID_MAX - 1
        )
        return Prepared(
            {"review": review_id, "page": number},
            None if ctx.is_system else "audit:view",
            WILDCARD,
            f"review:{review_id}",
            f"read page {number + 1} of access review #{review_id}",
        )

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        shown = read_page(ctx.session, prepared.params["review"], prepared.params["page"])
        if shown is None:
            raise NotFound(f"There is no access review #{prepared.params['review']}.")
        return Result(
            f"Page {shown.number + 1} of {shown.pages} of access review #{shown.review.id}.",
            data=PageData(shown),
        )


@dataclass(frozen=True)
class LatestData(Data):
    review: Review | None
    """The last finished review; None before any."""
    open: int
    """How many of its findings are still open."""


class LatestReviewAction(Action[NoParams]):
    """The last finished review and how much of it is still open: for admins' App Home."""

    name = "review.latest"
    params_type = NoParams
    read_only = True

    def prepare(self, ctx: Context, params: NoParams) -> Prepared:
        return Prepared({}, "audit:view", WILDCARD, "review:latest", "see the latest access review")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        row = ctx.session.scalar(
            select(AccessReview)
            .where(AccessReview.status.in_(("ready", "posted")))
            .order_by(AccessReview.id.desc())
            .limit(1)
        )
        if row is None:
            return Result("No access review has run yet.", data=LatestData(None, 0))
        still_open = ctx.session.scalar(
            select(func.count())
            .select_from(ReviewFinding)
            .where(ReviewFinding.review_id == row.id, ReviewFinding.status == "open")
        )
        review = Review.of(row)
        return Result(
            f"Access review #{review.id}: {review.totals.findings} findings, "
            f"{still_open} still open.",
            data=LatestData(review, int(still_open or 0)),
        )


REVIEW_ACTIONS: dict[str, Action[Any]] = {
    a.name: a
    for a in (
        RevokeFindingAction(),
        KeepFindingAction(),
        ViewReviewPageAction(),
        LatestReviewAction(),
    )
}
