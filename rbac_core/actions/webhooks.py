"""Processing verified webhook bodies: the events they hold, written once, through the gate.

A worker takes stored bodies under a lease (store/webhook_inbox.py), reads their
events (handlers/whatsapp/) and submits them here as `WEBHOOK`, the system
principal of Meta's webhooks, on the WhatsApp surface: the bodies it holds
together, so that under load one transaction and one audit entry serve many
(a body of one event costs little more than its own rows). The action marks
each body done, fenced on the worker's lease, and writes every event's records
(messaging/intake.py), in one transaction: a worker that lost the lease of any
of them has the whole transaction rolled back, so a body is processed once even
when two workers held it in turn. The audit entry tells what the bodies did, in
counts and conversation ids: never a customer's number or words.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import Conflict, OperatorOnly
from ..gate import Action, Context, Data, Params, Prepared, Result
from ..messaging.events import Event
from ..messaging.intake import Intake
from ..principals import WEBHOOK_ID
from ..store.webhook_inbox import finish_in

AUDITED = 50
"""Conversation ids named in one audit entry: a batch of a thousand new customers must
not make an entry of a hundred kilobytes."""


class LeaseLost(Conflict):
    code = "lease_lost"


@dataclass(frozen=True)
class IngestParams(Params):
    webhooks: list[int] | None = None
    """The bodies' ids, and the attempt under which `owner` holds each (`attempts`)."""
    attempts: list[int] | None = None
    owner: str | None = None
    events: list[Event] | None = None


@dataclass(frozen=True)
class IngestData(Data):
    counts: dict[str, int]
    conversations: list[int]


class IngestAction(Action[IngestParams]):
    name = "whatsapp.ingest"
    params_type = IngestParams
    secret_params = frozenset({"events"})
    """Customers' words and numbers stay out of the audit log; the counts go in."""

    def prepare(self, ctx: Context, params: IngestParams) -> Prepared:
        if not (ctx.is_system and ctx.principal.id == WEBHOOK_ID):
            raise OperatorOnly("Only the processing of Meta's verified webhooks can do that.")
        webhooks, attempts = params.webhooks or [], params.attempts or []
        if not webhooks or len(attempts) != len(webhooks) or params.owner is None:
            raise Conflict("webhook bodies are processed only under their lease")
        events = params.events or []
        first, last = min(webhooks), max(webhooks)
        bodies = f"webhook body {first}" if first == last else f"webhook bodies {first}-{last}"
        return Prepared(
            {"webhooks": webhooks, "attempts": attempts, "owner": params.owner, "events": events},
            None,
            "*",
            f"webhook:{first}" if first == last else f"webhooks:{first}-{last}",
            f"process {bodies} ({len(events)} events)",
        )

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        params = prepared.params
        held = list(zip(params["webhooks"], params["attempts"], strict=True))
        if not finish_in(ctx.session, str(params["owner"]), held, ctx.now):
            raise LeaseLost("another worker took a body over; it processes it instead")
        intake = Intake(ctx.session, ctx.now)
        intake.apply(params["events"])
        counts = {k: v for k, v in sorted(intake.counts.items()) if v}
        conversations = sorted(intake.conversations)
        details: dict[str, object] = {"counts": counts, "webhooks": list(params["webhooks"])}
        if conversations:  # the first AUDITED of them; the count is always whole
            details["conversations"] = [f"C-{c}" for c in conversations[:AUDITED]]
            details["conversation_count"] = len(conversations)
        if intake.error_codes:
            details["meta_errors"] = sorted(intake.error_codes)
        total = sum(counts.values())
        return Result(
            f"Processed {len(params['webhooks'])} webhook bodies: {total} events.",
            data=IngestData(counts, conversations),
            details=details,
            notices=tuple(intake.notices),
        )


WEBHOOK_ACTIONS: dict[str, Action[IngestParams]] = {IngestAction.name: IngestAction()}
