"""Sending a WhatsApp message to a customer: decided, recorded and queued in one transaction.

`/wa-send` (Slack, the console) runs this through the gate: the permission is
`messages:send_text` or `messages:send_template` in the business number's scope;
free text needs the customer's 24-hour window open (SPEC §6), templates go any
time; a paused number sends nothing. The message is recorded in its
conversation as `queued` and its send written to the outbox, in the same
transaction as the decision and its audit entry, so the person is told
"queued" only once all three are committed. A sender (bot/whatsapp/sender.py)
delivers it; the outbox row's id travels to Meta as `biz_opaque_callback_data`,
which is how statuses and late failures find the message and its sender.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select

from ..directory import registered_number
from ..errors import Forbidden, InvalidInput, UnknownNumber
from ..gate import Action, Context, Data, Params, Prepared, Result, wire
from ..messaging import people
from ..messaging.events import Contact
from ..messaging.intake import SEND
from ..outbox import Notice
from ..store import Sql
from ..store.inserts import insert_rows
from ..store.models import Conversation, ConversationMessage, Customer, Number
from ..store.statements import utc
from ..values import clean_text, format_moment, masked_phone, parse_e164

TEXT_MAX = 4096
"""WhatsApp's limit on a text message's body."""
TEMPLATE_NAME = re.compile(r"[a-z][a-z0-9_]{0,511}")
LANGUAGE = re.compile(r"[a-z]{2,3}(_[A-Z]{2,3})?")
PARAMS_MAX, PARAM_MAX = 20, 1024
BAD_PARAM = re.compile(r"[\n\t]| {5}")


# Every `/wa-send` reads these: precompiled (store/statements.py), as through the ORM
# they cost most of the command.
_N = cast(Table, Number.__table__).c
_SENDER_COLUMNS = (_N.e164, _N.phone_number_id, _N.paused_at, _N.paused_reason)
_SENDER = Sql(select(*_SENDER_COLUMNS).where(_N.e164 == bindparam("e164")))
_SENDERS = Sql(
    select(*_SENDER_COLUMNS).where(_N.phone_number_id.is_not(None)).order_by(_N.e164).limit(2)
)
_C = cast(Table, Customer.__table__).c
_CUSTOMER = Sql(select(_C.id).where(_C.wa_id == bindparam("wa_id")).order_by(_C.id.desc()).limit(1))
_V = cast(Table, Conversation.__table__).c
_CONVERSATION = Sql(
    select(_V.id, _V.last_customer_at).where(
        _V.number == bindparam("number"), _V.customer_id == bindparam("customer")
    )
)
_MESSAGES = cast(Table, ConversationMessage.__table__)


@dataclass(frozen=True)
class Sender:
    """A business number as a send needs it."""

    e164: str
    phone_number_id: str | None
    paused_at: datetime | None
    paused_reason: str | None

    @classmethod
    def of(cls, row: tuple[Any, ...]) -> Sender:
        return cls(str(row[0]), row[1], utc(row[2]), row[3])


class WindowClosed(Forbidden):
    code = "window_closed"


class NumberPaused(Forbidden):
    code = "number_paused"


def destination(phone_number_id: str, conversation: int) -> str:
    """The outbox destination of a send: one per conversation, so each customer is paced
    on their own (about one message per 6 s) and the number's rate is shared apart."""
    return f"whatsapp:{phone_number_id}:C{conversation}"


@dataclass(frozen=True)
class SendParams(Params):
    to: str | None = None
    """The customer's number, E.164."""
    from_: str | None = wire("from")
    """The business number (E.164 or phone-number id); default: the only one registered."""
    text: str | None = None
    template: str | None = None
    lang: str | None = None
    params: list[str] | None = None


@dataclass(frozen=True)
class SendData(Data):
    message: int
    conversation: str
    to: str
    """Masked."""
    status: str


class SendAction(Action[SendParams]):
    name = "whatsapp.send"
    params_type = SendParams
    secret_params = frozenset({"to", "text", "params"})
    """A customer's number and words stay out of the audit log: it names the conversation."""

    def prepare(self, ctx: Context, params: SendParams) -> Prepared:
        to = parse_e164(params.to or "")
        number = _business_number(ctx, params.from_)
        canonical: dict[str, Any] = {"to": to, "from": number.e164}
        if (params.text is None) == (params.template is None):
            raise InvalidInput("Send either a text or a template (--template NAME), not both.")
        if params.text is not None:
            text = clean_text(params.text, "message", TEXT_MAX)
            if not text:
                raise InvalidInput("The message is empty.")
            canonical["text"] = text
            permission, what = "messages:send_text", "send a text message"
        else:
            canonical.update(_template(params))
            permission, what = "messages:send_template", f"send template {params.template}"
        found = _conversation(ctx, number.e164, to)
        target = f"conversation:C-{found[0]}" if found else f"customer:{masked_phone(to)}"
        return Prepared(canonical, permission, number.e164, target, f"{what} to {masked_phone(to)}")

    def check_rules(self, ctx: Context, prepared: Prepared) -> None:
        p = prepared.params
        number = _sender(ctx, p["from"])
        if number is not None and number.paused_at is not None:
            raise NumberPaused(
                f"Sending from {number.e164} is paused since {format_moment(number.paused_at)} "
                f"({number.paused_reason or 'Meta restricted it'}); an admin resumes it "
                f"with `wa-access number resume {number.e164}` once Meta allows it again."
            )
        if "text" in p:
            _require_open_window(ctx, p["from"], p["to"])

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        p = prepared.params
        number = _sender(ctx, p["from"])
        assert number is not None and number.phone_number_id is not None
        customer = _customer(ctx, p["to"])
        found = ctx.txn.first(_CONVERSATION, {"number": number.e164, "customer": customer})
        conversation = (
            int(found[0])
            if found is not None
            else people.conversation_for(ctx.session, number.e164, customer, ctx.now)
        )
        row = {
            "conversation_id": conversation,
            "direction": "out",
            "kind": "text" if "text" in p else "template",
            "text": p.get("text") or _template_line(p),
            "sender": ctx.actor,
            "sent_at": ctx.now,
            "received_at": ctx.now,
            "status": "queued",
            "status_rank": 0,
        }
        [message_id] = insert_rows(ctx.txn, _MESSAGES, [row], returning="id")
        message = int(message_id)
        send = {
            "message": message,
            "conversation": conversation,
            "sender": ctx.actor,
            "from": number.e164,
            "phone_number_id": number.phone_number_id,
            "to": p["to"],
            **{k: p[k] for k in ("text", "template", "lang", "params") if k in p},
        }
        shown = masked_phone(p["to"])
        return Result(
            f"Queued message {message} to {shown} (conversation C-{conversation}) from "
            f"{number.e164}; you will hear here if it fails.",
            data=SendData(message, f"C-{conversation}", shown, "queued"),
            details={"message": message, "conversation": f"C-{conversation}"},
            notices=(Notice(SEND, destination(number.phone_number_id, conversation), send),),
        )


def _sender(ctx: Context, e164: str) -> Sender | None:
    row = ctx.txn.first(_SENDER, {"e164": e164})
    return None if row is None else Sender.of(row)


def _business_number(ctx: Context, given: str | None) -> Sender:
    """The number to send from: the one named, else the only one that can send."""
    if given and not given.strip():
        raise InvalidInput(
            "--from is empty: name the business number to send from (E.164 or its "
            "phone-number id), or leave --from out."
        )
    if given:
        number = _sender(ctx, registered_number(ctx.txn, given))
    else:
        senders = [Sender.of(row) for row in ctx.txn.rows(_SENDERS)]
        if len(senders) != 1:
            raise InvalidInput(
                "Say which business number to send from with --from (E.164 or its phone-number id)."
                if senders
                else "No business number can send yet: an operator registers one with "
                "`wa-access number add E164 --id PHONE_NUMBER_ID`."
            )
        number = senders[0]
    if number is None:
        raise UnknownNumber(f"{given} is not a registered business number.")
    if number.phone_number_id is None:
        raise InvalidInput(
            f"{number.e164} has no phone-number id, so nothing can be sent from it: an "
            f"operator adds it with `wa-access number add {number.e164} --id PHONE_NUMBER_ID`."
        )
    return number


def _template(params: SendParams) -> dict[str, Any]:
    name = (params.template or "").strip()
    if not TEMPLATE_NAME.fullmatch(name):
        raise InvalidInput(
            f"'{name[:60]}' is not a template name (lowercase letters, digits and _, "
            "starting with a letter)."
        )
    lang = (params.lang or "en_US").strip()
    if not LANGUAGE.fullmatch(lang):
        raise InvalidInput(f"'{lang[:20]}' is not a language code like en_US.")
    values = list(params.params or [])
    if len(values) > PARAMS_MAX:
        raise InvalidInput(f"A template takes at most {PARAMS_MAX} parameters.")
    cleaned = [clean_text(v, "template parameter", PARAM_MAX) or "" for v in values]
    if any(not v for v in cleaned):
        raise InvalidInput("A template parameter is empty.")
    if any(BAD_PARAM.search(v) for v in cleaned):
        raise InvalidInput(
            "A template parameter may not hold a new line, a tab or more than four spaces "
            "in a row (Meta refuses them)."
        )
    return {"template": name, "lang": lang, "params": cleaned}


def _template_line(p: Any) -> str:
    values = ", ".join(p.get("params") or [])
    return f"[template {p['template']} ({p['lang']})" + (f": {values}]" if values else "]")


def _customer_of(ctx: Context, to: str) -> int | None:
    """The customer with this number (the latest, if Meta named two), if any wrote."""
    row = ctx.txn.first(_CUSTOMER, {"wa_id": to.lstrip("+")})
    return None if row is None else int(row[0])


def _conversation(ctx: Context, number: str, to: str) -> tuple[int, datetime | None] | None:
    """(id, when the customer last wrote) of the conversation with this customer."""
    customer = _customer_of(ctx, to)
    if customer is None:
        return None
    row = ctx.txn.first(_CONVERSATION, {"number": number, "customer": customer})
    return None if row is None else (int(row[0]), utc(row[1]))


def _customer(ctx: Context, to: str) -> int:
    """The customer with this number, made for a first template if they never wrote."""
    found = _customer_of(ctx, to)
    if found is not None:
        return found
    made = people.customer_for(ctx.session, Contact(to.lstrip("+"), "", "", ""), ctx.now)
    assert made is not None
    return made


def _require_open_window(ctx: Context, number: str, to: str) -> None:
    conversation = _conversation(ctx, number, to)
    last = conversation[1] if conversation else None
    if people.window_open(last, ctx.now):
        return
    since = (
        f"their last message to {number} was at {format_moment(last)}"
        if last
        else f"they have not written to {number}"
    )
    raise WindowClosed(
        f"Free text can only go to a customer within 24 hours of their last message, and "
        f"{since}. Send an approved template instead: `/wa-send {to} --template NAME`."
    )


SEND_ACTIONS: dict[str, Action[SendParams]] = {SendAction.name: SendAction()}
