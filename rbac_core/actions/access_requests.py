"""Access requests: a time-bound role asked for, decided by someone else.

The approver must hold `access:approve` in the request's scope, may not be the
requester (separation of duties, SPEC §4 rule 7), and is held to the same
rules as anyone granting the role (no escalation, 2FA for 2FA roles, step-up
for sensitive roles). Requests wait 24 hours at most.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from ..directory import require_user, resolve_scope
from ..errors import Conflict, InvalidInput, PendingActionError, TwoFactorRequired
from ..gate import Action, Context, Data, NoParams, Params, Prepared, Result, wire, wire_name
from ..outbox import AUDIT_CHANNEL, Notice, person
from ..policy.relations import Resource
from ..store.models import AccessRequest
from ..values import clean_text, format_duration, format_moment, parse_duration, scope_text
from .granting import (
    check_grantable,
    create_grant,
    ensure_not_held,
    get_role,
    has_active_2fa,
    sensitive_role,
)
from .request_lookup import find_request

APPROVAL_TTL = timedelta(hours=24)


@dataclass(frozen=True)
class RequestView(Data):
    """An open request, as its requester and the approvers see it."""

    request_id: str
    requester: str
    role: str
    scope: str
    for_: str = field(metadata=wire_name("for"))
    """How long the role would last once approved, e.g. `4h`."""
    reason: str
    expires_at: str
    """When the request lapses undecided."""


def _view(request: AccessRequest) -> RequestView:
    return RequestView(
        request.id,
        request.requester,
        request.role,
        request.scope,
        request.duration,
        request.reason,
        request.expires_at.isoformat(),
    )


@dataclass(frozen=True)
class RequestParams(Params):
    role: str | None = None
    number: int | str | None = None
    """The scope: a registered business number (or its Graph id, which may come as a
    number), or `*`."""
    for_: str | None = wire("for")
    """How long, e.g. `4h`: requested access is always time-bound."""
    reason: str | None = None


class RequestAccessAction(Action[RequestParams]):
    name = "access.request"
    params_type = RequestParams

    def prepare(self, ctx: Context, params: RequestParams) -> Prepared:
        role = get_role(ctx.session, params.role or "")
        scope = resolve_scope(ctx.session, params.number, registered=True)
        if not params.for_:
            raise InvalidInput("say for how long, e.g. --for 4h: requested access is time-bound")
        duration = format_duration(parse_duration(params.for_))
        reason = clean_text(params.reason, "reason", 500)
        if not reason:
            raise InvalidInput("say why, e.g. --reason covering the night shift")
        ensure_not_held(ctx, ctx.actor, role.name, scope)
        _ensure_no_open_request(ctx, role.name, scope)
        return Prepared(
            {"role": role.name, "number": scope, "for": duration, "reason": reason},
            # Rule 1: people without any role there ask an admin directly.
            "roles:view",
            scope,
            f"role:{role.name}",
            f"ask for {role.name} in {scope_text(scope)} for {duration}",
        )

    def check_rules(self, ctx: Context, prepared: Prepared) -> None:
        role = prepared.params["role"]
        if ctx.policy.requires_2fa(role) and not has_active_2fa(ctx.session, ctx.actor):
            # No approver could grant it (SPEC §4 rule 8): say so now, not after they try.
            raise TwoFactorRequired(
                f"{role} requires two-factor authentication: turn it on with "
                "`/wa-2fa enroll`, then ask again."
            )

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        p = prepared.params
        # Asked again under the requester's lock: two identical requests sent at
        # once both passed the check in prepare; only the first opens a request.
        require_user(ctx.session, ctx.actor, lock=True)
        _ensure_no_open_request(ctx, p["role"], p["number"])
        request = AccessRequest(
            id=secrets.token_urlsafe(16),
            requester=ctx.actor,
            role=p["role"],
            scope=p["number"],
            duration=p["for"],
            reason=p["reason"],
            status="pending",
            created_at=ctx.now,
            expires_at=ctx.now + APPROVAL_TTL,
        )
        ctx.session.add(request)
        ctx.session.flush()
        data = _view(request)
        return Result(
            f"Asked for {p['role']} in {scope_text(p['number'])} for {p['for']}; the request "
            "waits for an approver.",
            data=data,
            details={"request_id": request.id},
            # Approvers hear of it in the audit channel, with Approve and Deny buttons.
            notices=(Notice("access.requested", AUDIT_CHANNEL, data.as_dict()),),
        )


def _ensure_no_open_request(ctx: Context, role: str, scope: str) -> None:
    open_request = ctx.session.scalar(
        select(AccessRequest.id).where(
            AccessRequest.requester == ctx.actor,
            AccessRequest.role == role,
            AccessRequest.scope == scope,
            AccessRequest.status == "pending",
            AccessRequest.expires_at > ctx.now,
        )
    )
    if open_request is not None:
        raise Conflict(
            f"You already asked for {role} in {scope_text(scope)}; it is waiting for an approver."
        )


def _pending_request(ctx: Context, request_id: str) -> AccessRequest:
    """The request, locked: its decision reads, then writes, its status."""
    request = find_request(ctx.session, request_id, lock=True)
    if request.status != "pending":
        who = f" by {request.decided_by}" if request.decided_by else ""
        raise PendingActionError(f"This request was already {request.status}{who}.")
    if request.expires_at <= ctx.now:
        raise PendingActionError(
            f"This request expired at {format_moment(request.expires_at)}; "
            "the requester can ask again."
        )
    return request


@dataclass(frozen=True)
class DecideParams(Params):
    request_id: str | None = None
    note: str | None = None
    """A word for the record on why it was approved or denied."""


@dataclass(frozen=True)
class DecidedRequest(Data):
    """A request once decided: `status` is `approved` or `denied`."""

    request_id: str
    requester: str
    user: str
    """The requester again: whose grant changed."""
    role: str
    scope: str
    for_: str = field(metadata=wire_name("for"))
    reason: str
    status: str


@dataclass(frozen=True)
class ApprovedRequest(DecidedRequest):
    """An approved request, with the grant it made."""

    grant_id: int
    expires_at: str | None
    """When the grant ends."""


class DecideAccessAction(Action[DecideParams]):
    """Approve or deny; `approve=True` grants the role for the requested time."""

    params_type = DecideParams
    mutates_policy = True

    def __init__(self, approve: bool) -> None:
        self.approve = approve
        self.name = "access.approve" if approve else "access.deny"

    def prepare(self, ctx: Context, params: DecideParams) -> Prepared:
        request = _pending_request(ctx, params.request_id or "")
        note = clean_text(params.note, "note", 500)
        verb = "approve" if self.approve else "deny"
        return Prepared(
            {"request_id": request.id, "note": note},
            "access:approve",
            request.scope,
            f"user:{request.requester}",
            f"{verb} {request.requester}'s request for {request.role} in "
            f"{scope_text(request.scope)} for {request.duration}",
            needs_step_up=self.approve and sensitive_role(ctx.policy, request.role),
            resource=Resource("access_request", request.id, {"requester": request.requester}),
        )

    def check_rules(self, ctx: Context, prepared: Prepared) -> None:
        request = _pending_request(ctx, prepared.params["request_id"])
        if self.approve:
            check_grantable(ctx, request.requester, request.role, request.scope)

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        request = _pending_request(ctx, prepared.params["request_id"])
        request.decided_by, request.decided_at = ctx.actor, ctx.now
        request.decision_note = prepared.params.get("note")
        base = (
            request.id,
            request.requester,
            request.requester,
            request.role,
            request.scope,
            request.duration,
            request.reason,
        )
        if not self.approve:
            request.status = "denied"
            ctx.session.flush()
            return Result(
                f"Denied {request.requester}'s request for {request.role} in "
                f"{scope_text(request.scope)}.",
                data=DecidedRequest(*base, "denied"),
                details={"request_id": request.id},
                policy_users=frozenset(),
                notices=(_decided(ctx, request, approved=False),),
            )
        ensure_not_held(ctx, request.requester, request.role, request.scope)
        granted = create_grant(
            ctx,
            request.requester,
            request.role,
            request.scope,
            request.duration,
            f"access request: {request.reason}",
        )
        request.status = "approved"
        request.grant_id = int(granted.data["grant_id"])
        ctx.session.flush()
        return Result(
            f"Approved: {granted.message}",
            data=ApprovedRequest(*base, "approved", request.grant_id, granted.data["expires_at"]),
            details={"request_id": request.id, "grant_id": request.grant_id},
            policy_users=granted.policy_users,
            notices=(_decided(ctx, request, approved=True, until=granted.data["expires_at"]),),
        )


def _decided(
    ctx: Context, request: AccessRequest, *, approved: bool, until: str | None = None
) -> Notice:
    """The requester's message: who decided, and until when an approved grant lasts."""
    return Notice(
        "access.decided",
        person(request.requester),
        {
            "approved": approved,
            "by": ctx.actor,
            "role": request.role,
            "scope": request.scope,
            "expires_at": until,
        },
    )


@dataclass(frozen=True)
class PendingData(Data):
    mine: list[RequestView]
    """The asker's own open requests."""
    waiting: list[RequestView]
    """Others' open requests the asker may decide."""


class PendingRequestsAction(Action[NoParams]):
    """What is waiting: your own open requests and, for approvers, those you may decide."""

    name = "access.pending"
    params_type = NoParams
    read_only = True

    def prepare(self, ctx: Context, params: NoParams) -> Prepared:
        return Prepared({}, None, "*", f"user:{ctx.actor}", "see pending access requests")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        rows = ctx.session.scalars(
            select(AccessRequest)
            .where(AccessRequest.status == "pending", AccessRequest.expires_at > ctx.now)
            .order_by(AccessRequest.created_at)
            .limit(200)
        ).all()
        mine = [_view(r) for r in rows if r.requester == ctx.actor]
        waiting = [
            _view(r)
            for r in rows
            if r.requester != ctx.actor
            and ctx.policy.decide(ctx.actor, "access:approve", r.scope).allowed
        ]
        return Result(
            f"{len(mine)} of your requests and {len(waiting)} for you to decide are pending.",
            data=PendingData(mine, waiting),
        )


ACCESS_ACTIONS: dict[str, Action[Any]] = {
    a.name: a
    for a in (
        RequestAccessAction(),
        DecideAccessAction(True),
        DecideAccessAction(False),
        PendingRequestsAction(),
    )
}
