"""10,000 fuzzed, signed webhook bodies through the real door and the intake worker.

The issue's bar: no 5xx, every duplicate processed once, no status moving a message
backwards, no traceback in the log. Meta retries what failed for days and drops it then,
batches, reorders and adds fields (PROTOCOLS). Bodies are mostly Meta's shapes with odd
values (wrong types, missing fields, NUL and lone surrogates escaped in the JSON text,
huge numbers), some junk; a batch's bodies share a small pool of messages and statuses,
as Meta re-batches retries, ids come from small pools, and two sends of ours race their
statuses. One database serves the whole run: every invariant is checked after each batch.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections import Counter
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, or_, select, update

from bot.app import create_app
from bot.config import Settings
from bot.runtime import build_runtime
from bot.whatsapp.intake_worker import IntakeWorker
from rbac_core import Database, Gate, ManualClock
from rbac_core.directory import register_number
from rbac_core.outbox import Outbox
from rbac_core.store import models
from rbac_core.store.webhook_inbox import WebhookInbox

from . import whatsapp_requests as meta
from .test_whatsapp_intake import BUSINESS, outbound

EXAMPLES, FRESH, ECHOES = 200, 20, 30
"""200 batches of 20 new bodies and 30 that Meta sent again, re-serialised or re-batched."""
ONLY_GENERATE = {"phases": [Phase.generate], "suppress_health_check": list(HealthCheck)}
"""The state is cumulative: a smaller batch proves nothing, and slow generation is fine."""
RANK = {"sent": 1, "delivered": 2, "read": 3, "played": 4, "failed": 99}
"""Meta's order of statuses, kept here so that a wrong order in the code shows."""

# -- shapes: Meta's, and loosened -------------------------------------------------------------


def loosen(draw: st.DrawFn, item: dict[str, Any]) -> Any:
    """Meta's shape, or (one time in ten) with a field dropped, wrong-typed or added, or
    (one in forty) not an object at all. Shapes nest: few bodies are perfect, none far off."""
    roll = draw(st.integers(0, 39))
    if roll == 0 or roll > 4:
        return draw(LOOSE) if roll == 0 else item
    keys = sorted(item) or [""]
    key, item = keys[draw(st.integers(0, 63)) % len(keys)], dict(item)
    value = item.pop(key, None) if roll == 1 else draw(TEXT if roll == 3 else LOOSE)
    if roll > 1:
        item[draw(st.sampled_from(EXTRA_KEYS)) if roll == 4 else key] = value
    return item


@st.composite
def loosened(draw: st.DrawFn, shaped: st.SearchStrategy[dict[str, Any]]) -> Any:
    return loosen(draw, draw(shaped))


def shape(required: dict[str, Any], **optional: Any) -> st.SearchStrategy[Any]:
    return loosened(st.fixed_dictionaries(required, optional=optional))


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, by weight (`st.one_of` would merge repeated ones)."""
    return st.sampled_from([s for weight, s in choices for _ in range(weight)]).flatmap(lambda s: s)


def mostly(usual: tuple[Any, ...], *odd: Any) -> st.SearchStrategy[Any]:
    """Usually what Meta sends; about one time in twelve what it should not (a wrong type,
    empty, too long, too big, NUL or a lone surrogate: those two clean to the same text)."""
    return st.sampled_from(usual * -(-11 * len(odd) // len(usual)) + odd)


NASTY = ("", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "\U0001f600", "Olá", "<b>", "\u202e")
WORDS = ("Kerry Fisher", "hello", "image/jpeg", "en_US", "TIER_1K", "x" * 300)
LONG = st.integers(4000, 5000).map(lambda n: "x" * n)  # past every limit the code cuts at
RANDOM = st.text(st.characters(exclude_characters="0123456789"), max_size=8)  # no outbox id
TEXT = weighted((8, st.sampled_from(NASTY + WORDS)), (1, RANDOM), (1, LONG))
HUGE = (2**31, 2**63, -(2**63) - 1, 10**30, 1e308, float("nan"))
ODD = (None, True, 0, -1, 1.5, *HUGE, "", "\x00", "\ud800", [], {}, [None, "x", [[[]]]])
LOOSE = st.one_of(st.sampled_from(ODD), st.dictionaries(TEXT, st.sampled_from(ODD), max_size=2))
EXTRA_KEYS = ("id", "type", "status", "timestamp", "from", "brand_new", "\x00", "")
# Placeholders each batch fills in (`Run.begin`): NOW is its send Meta named, NEW its
# send Meta names by a status (found by the outbox id), BEFORE and LATE the last batch's;
# each wamid with its outbox id as the callback data its statuses carry.
CALLBACKS = {f"wamid.{send}": f"@{send}@" for send in ("NOW", "NEW", "BEFORE", "LATE")}
WAMID = mostly(
    ("wamid.A", "wamid.B", "wamid.C", "wamid.FRESH", *CALLBACKS),
    *("wamid.\x00", "wamid.\ud800", "", "w" * 600, 42, None),
)
PERSON = mostly((meta.CUSTOMER, "16505550000"), "", "9" * 40, 16505550000, None)
USER_ID = mostly(("US.1", "US.2"), "", "u" * 300, 7)
STATE = mostly(tuple(RANK), "deleted", "SENT", "", 3, None)
MOMENT = mostly(
    tuple(str(1_795_000_000 + k * 3600) for k in range(-30, 3)),  # a day back, an hour on
    *("", "abc", "0", "-5", "1e9", "\uff19\uff19", "9" * 13, 2**70, -1, 1.5, 1_795_000_000, None),
)
CODE = mostly((131047, 131026, 131051), "131047", 0, -1, "x", 2**31, 2**63, 10**30, "9" * 12)
DETAILS = st.fixed_dictionaries({"details": TEXT})
ERRORS = st.lists(shape({"code": CODE, "title": TEXT}, error_data=DETAILS), max_size=2)
PRICING = st.fixed_dictionaries({"billable": st.sampled_from(ODD), "category": TEXT})
STATUS_EXTRAS = st.fixed_dictionaries(
    {}, optional={"recipient_user_id": USER_ID, "errors": ERRORS, "pricing": PRICING}
)
MESSAGE_EXTRAS = st.fixed_dictionaries(
    {}, optional={"context": shape({"id": WAMID}), "errors": ERRORS, "from_user_id": USER_ID}
)
REPLY = shape({"id": TEXT, "title": TEXT}, description=TEXT)
REPLIES = st.sampled_from(("button_reply", "list_reply"))
PARTS: dict[str, st.SearchStrategy[Any]] = {
    "text": shape({"body": TEXT}),
    **dict.fromkeys(("image", "audio", "sticker"), shape({"id": TEXT}, caption=TEXT)),
    "location": shape({"latitude": LOOSE, "longitude": st.floats()}, name=TEXT),
    "reaction": shape({"message_id": WAMID, "emoji": TEXT}),
    "interactive": shape({"type": REPLIES, "button_reply": REPLY, "list_reply": REPLY}),
    "button": shape({"payload": TEXT, "text": TEXT}),
    "system": shape({"type": st.just("user_changed_number"), "body": TEXT}, wa_id=PERSON),
    "contacts": st.lists(shape({"name": shape({"formatted_name": TEXT})}), max_size=2),
}
KINDS = (*PARTS, "order", "unsupported", "")


@st.composite
def message(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(KINDS))
    item = {"from": draw(PERSON), "id": draw(WAMID), "timestamp": draw(MOMENT), "type": kind}
    if kind in PARTS and draw(st.integers(0, 9)):  # re-tapped interactives come without
        item[kind] = draw(PARTS[kind])
    return loosen(draw, item | draw(MESSAGE_EXTRAS))


@st.composite
def status(draw: st.DrawFn) -> Any:
    """A status; for our sends, mostly with the outbox id the send carried as callback data
    (never another send's: Meta echoes what the send carried), else none or junk."""
    wamid, odd = draw(WAMID), draw(st.sampled_from((None, "x", 7, "", " 0", "9" * 19)))
    callback = CALLBACKS.get(wamid, odd) if draw(st.integers(0, 2)) else odd
    item = {"id": wamid, "status": draw(STATE), "timestamp": draw(MOMENT), "recipient_id": "1"}
    return loosen(draw, item | {"biz_opaque_callback_data": callback} | draw(STATUS_EXTRAS))


KERRY, ANA = {"name": "Kerry Fisher"}, {"name": "a\x00\ud800", "username": "@b"}
CONTACT = mostly(
    ({"profile": KERRY, "wa_id": meta.CUSTOMER}, {"profile": KERRY, "wa_id": "16505550000"}),
    *({"profile": ANA, "wa_id": "", "user_id": "US.2"}, {"wa_id": "9" * 40}, {}, None, "x"),
)
METADATA = mostly(
    ({"display_phone_number": meta.DISPLAY_NUMBER, "phone_number_id": meta.PHONE_NUMBER_ID},),
    *({"display_phone_number": "1" * 40, "phone_number_id": int(meta.PHONE_NUMBER_ID)}, {}),
    *({"phone_number_id": pid} for pid in ("999000111", "", "9" * 80, [], "\x00")),
)
EVENT = mostly(("APPROVED", "REJECTED", "RED", "UTILITY"), "", "x" * 100)
TEMPLATE = shape(  # each field names its event differently: all three are here
    {
        "message_template_id": mostly((1, 2, "3"), "", 10**30, "x" * 100),
        **dict.fromkeys(("event", "new_quality_score", "new_category"), EVENT),
    },
    message_template_name=TEXT,
    reason=mostly(("NONE", "PROMOTIONAL"), None, "", 1, []),
    rejection_info=shape({"reason": TEXT}),
)
NOTICE = shape(  # phone_number_quality_update, account_alerts, account_update
    {"event": mostly(("FLAGGED", "ACCOUNT_VIOLATION"), "", None)},
    display_phone_number=PERSON,
    current_limit=TEXT,
    alert_info=shape({"alert_severity": st.sampled_from(("CRITICAL", "")), "alert_type": TEXT}),
)
FIELDS = ("message_template_status_update", "message_template_quality_update")
FIELDS += ("template_category_update", "phone_number_quality_update", "account_alerts")


def change(field: st.SearchStrategy[Any], value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A change as the envelope wants it: a `field`, and a `value` that is an object."""
    return st.fixed_dictionaries({"field": field, "value": value.filter(lambda v: type(v) is dict)})


def notifications(messages: list[Any], statuses: list[Any]) -> st.SearchStrategy[Any]:
    """Notifications of one entry (`batches` merges them into bigger batches) whose
    messages and statuses come from the batch's pools, so they recur across bodies."""
    value = {"messaging_product": st.just("whatsapp"), "metadata": METADATA}
    value |= {"contacts": st.lists(CONTACT, max_size=2)}
    value |= {"messages": st.lists(st.sampled_from(messages), max_size=2)}
    value |= {"statuses": st.lists(st.sampled_from(statuses), max_size=4)}
    changes = weighted(
        (8, change(st.just("messages"), shape(value, errors=ERRORS))),
        (2, change(st.sampled_from(FIELDS[:3]), TEMPLATE)),
        (2, change(st.sampled_from((*FIELDS[3:], "account_update")), NOTICE)),
        (1, change(TEXT, st.dictionaries(TEXT, LOOSE, max_size=3))),
    )
    entry = {"id": mostly((meta.WABA_ID,), int(meta.WABA_ID), "")}
    entry["changes"] = st.lists(changes, min_size=1, max_size=2)
    entries = st.tuples(st.fixed_dictionaries(entry, optional={"time": MOMENT})).map(list)
    wrapper = {"object": st.just("whatsapp_business_account"), "entry": entries}
    return st.fixed_dictionaries(wrapper, optional={"brand_new": LOOSE})


# Nested past 40 levels, a body is refused, inside a notification's envelope or not.
NESTED = st.integers(30, 50).map(lambda n: functools.reduce(lambda v, _: [v], range(n), 1))
NOTIFIED = {"object": "whatsapp_business_account"}
DEEPER = NESTED.map(lambda deep: {**NOTIFIED, "entry": [], "deep": deep})
BROKEN = [{"object": "page", "entry": []}, NOTIFIED] + [
    {**NOTIFIED, "entry": entry}
    for entry in ({}, [[]], [{"changes": None}], [{"changes": [{"field": "messages"}]}])
]
JUNK = st.one_of(LOOSE, st.sampled_from(BROKEN), NESTED, DEEPER)
STYLES = st.sampled_from(("meta", "meta", "pretty", "utf-8"))


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[Any, str]]:
    """FRESH bodies, then ECHOES of them as Meta retries and re-batches: the same bytes
    again, the same payload serialised otherwise, or two notifications' entries in one."""
    messages = draw(st.lists(message(), min_size=4, max_size=4))
    statuses = draw(st.lists(status(), min_size=6, max_size=6))
    payload = weighted((9, notifications(messages, statuses)), (1, JUNK))
    bodies = draw(st.lists(st.tuples(payload, STYLES), min_size=FRESH, max_size=FRESH))
    pick = st.integers(0, FRESH - 1)
    echoes = st.lists(st.tuples(pick, pick, STYLES), min_size=ECHOES, max_size=ECHOES)
    for i, j, style in draw(echoes):
        one, other = bodies[i][0], bodies[j][0]
        if i != j and is_notification(one) and is_notification(other):
            one = {**one, "entry": [*one["entry"], *other["entry"]]}
        bodies.append((one, style))
    return bodies


# -- what the door must answer, and what processing must account for ---------------------------


def serialised(payload: Any, style: str) -> bytes:
    if style == "pretty":
        return json.dumps(payload, indent=1).encode()
    if style == "utf-8":
        with contextlib.suppress(UnicodeEncodeError):  # a lone surrogate has no UTF-8
            return json.dumps(payload, ensure_ascii=False).encode()
    return meta.as_meta_sends(payload)  # Meta's own: compact, everything else escaped


def depth(value: Any) -> int:
    inner = value.values() if isinstance(value, dict) else value if type(value) is list else None
    return 0 if inner is None else 1 + max(map(depth, inner), default=0)


def is_notification(payload: Any) -> bool:
    """Whether the door must keep it: a notification's envelope, nested within reason."""
    if not isinstance(payload, dict) or payload.get("object") != "whatsapp_business_account":
        return False
    entries = payload.get("entry")
    if not isinstance(entries, list) or depth(payload) > 40:
        return False
    changes = [e.get("changes") if isinstance(e, dict) else None for e in entries]
    return all(isinstance(cs, list) for cs in changes) and all(
        isinstance(c, dict) and isinstance(c.get("field"), str) and type(c.get("value")) is dict
        for cs in changes
        for c in cs
    )


def events_in(payload: dict[str, Any]) -> int:
    """The events a kept notification holds: one per message, status or other change, and
    one for a change's errors when it holds nothing else. Each must be accounted for."""
    total = 0
    for change in (c for entry in payload["entry"] for c in entry["changes"]):
        value, errors = change["value"], change["value"].get("errors")
        items = [value.get(key) for key in ("messages", "statuses")]
        errors = isinstance(errors, list) and any(type(e) is dict for e in errors)
        items_and_errors = sum(len(i) for i in items if type(i) is list) or int(errors)
        total += items_and_errors if change["field"] == "messages" else 1
    return total


# -- the run ------------------------------------------------------------------------------------


class Run:
    """What the run has posted, what processing audited, and where our sends stand (this
    batch's and the last one's: message id -> (outbox id, last status))."""

    def __init__(self, door: FlaskClient, db: Database, gate: Gate, clock: ManualClock) -> None:
        self.door, self.db, self.gate, self.clock = door, db, gate, clock
        self.batch = self.bodies = self.kept = self.events = self.seq = 0
        self.audited: Counter[str] = Counter()
        self.tokens: dict[str, str] = {}
        self.sends: dict[int, tuple[str, str]] = {}

    def begin(self) -> None:
        """Two sends for the batch to race statuses on: one Meta named, one not yet, each
        from a new outbox row (its id is the callback data); the last batch's stay."""
        n, last, self.sends = self.batch + 1, self.tokens, dict(list(self.sends.items())[-2:])
        self.batch, self.tokens = n, {"wamid.FRESH": f"wamid.fresh{n}"}
        for send, was in (("BEFORE", "NOW"), ("LATE", "NEW")):
            self.tokens[f"wamid.{send}"] = f"wamid.{was.lower()}{n - 1}"
            self.tokens[f"@{send}@"] = last.get(f"@{was}@", "0")
        for send, wamid in (("NOW", f"wamid.now{n}"), ("NEW", None)):
            with self.db.write() as session:  # `outbound` makes its customer: move it aside
                newest = session.scalar(select(func.max(models.OutboxMessage.id)))
                outbox_id = str((newest or 0) + 1)
                moved = update(models.Customer).where(models.Customer.key == "w:" + meta.CUSTOMER)
                session.execute(moved.values(key=f"w:before-{outbox_id}"))
            message = outbound(self.db, self.clock, wamid=wamid, outbox_id=int(outbox_id))
            self.sends[message] = (outbox_id, "queued")
            self.tokens |= {f"wamid.{send}": f"wamid.{send.lower()}{n}", f"@{send}@": outbox_id}

    def post(self, payload: Any, style: str) -> None:
        """200 for every notification, 400 for what is not one; never anything else."""
        body = serialised(payload, style)
        for token, value in self.tokens.items():
            body = body.replace(token.encode(), value.encode())
        answer = self.door.post("/whatsapp/webhook", data=body, headers=meta.signed(body))
        expected = 200 if is_notification(payload) else 400
        assert answer.status_code == expected, (answer.status_code, answer.get_json(), body[:500])
        self.bodies += 1
        if answer.get_json() == {"status": "received"}:
            self.kept, self.events = self.kept + 1, self.events + events_in(payload)

    def process(self) -> None:
        """Every body kept ends done (none retried, given up or left behind); every event
        in them is processed in exactly one way, and each message and (wamid, status) is
        written once: what the audit counted as new is what the tables hold."""
        inbox = WebhookInbox(self.db, self.clock)
        IntakeWorker(inbox, self.gate, Outbox(self.db, self.clock)).run_until_idle()
        w, a, m = models.InboundWebhook, models.AuditEntry, models.ConversationMessage
        with self.db.read() as session:
            stuck = session.execute(select(w.last_error, w.body).where(w.status != "done")).all()
            query = select(a.seq, a.outcome, a.details).where(a.seq > self.seq)
            audited = session.execute(query.where(a.action == "whatsapp.ingest")).all()
            inbound = session.scalar(select(func.count()).where(m.direction == "in"))
            statuses = session.scalar(select(func.count()).select_from(models.MessageStatus))
            held = select(m.wamid).where(m.wamid.is_not(None)).group_by(m.wamid)
            twice = session.execute(held.having(func.count() > 1)).all()
        assert not stuck, [tuple(row) for row in stuck]  # why, and the body as it came
        assert not twice, twice  # a wamid is one message, whichever way it came
        assert inbox.counts() == ({"done": self.kept} if self.kept else {})
        for seq, outcome, details in audited:
            assert outcome == "done", details
            self.audited.update(json.loads(details)["counts"])
            self.seq = max(self.seq, seq)
        assert self.audited.total() - self.audited["identity_changes"] == self.events
        assert (inbound, statuses) == (self.audited["messages"], self.audited["statuses"])

    def check_statuses(self) -> None:
        """Our sends only move forward and failed is final; each stands at a status Meta
        reported for its wamid or outbox id, at least as far as any that named the outbox
        id took it, and a send named from the start at the furthest."""
        m, s = models.ConversationMessage, models.MessageStatus
        with self.db.read() as session:
            query = select(m.id, m.wamid, m.status, m.status_rank).where(m.id.in_(self.sends))
            now = {row[0]: tuple(row[1:]) for row in session.execute(query)}
            named = s.wamid.in_([wamid for wamid, _, _ in now.values() if wamid])
            sent = s.callback.in_([outbox_id for outbox_id, _ in self.sends.values()])
            said = session.execute(select(s.wamid, s.callback, s.status).where(or_(named, sent)))
            said = said.all()
        for message, (wamid, state, rank) in now.items():
            (outbox_id, before), state = self.sends[message], state or "queued"
            self.sends[message] = (outbox_id, state)
            by_outbox = [RANK[status] for _, callback, status in said if callback == outbox_id]
            reported = by_outbox + [RANK[status] for w, _, status in said if wamid and w == wamid]
            assert rank == RANK.get(state, 0) and (rank == 0 or rank in reported), now
            assert rank >= max(by_outbox, default=0) and rank >= RANK.get(before, 0), (said, now)
            assert before != "failed" or state == "failed", (before, now)
            if wamid and wamid.startswith("wamid.now"):  # named before any status came
                assert rank == max(reported, default=0), (said, now)


@pytest.mark.slow
def test_ten_thousand_signed_bodies_hold_every_rule(
    db_url: str, db: Database, gate: Gate, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    with db.write() as session:
        register_number(session, BUSINESS, meta.PHONE_NUMBER_ID)
    secrets = {"whatsapp_app_secret": meta.APP_SECRET, "whatsapp_verify_token": meta.VERIFY_TOKEN}
    app = create_app(build_runtime(Settings(database_url=db_url, **secrets), clock=clock))
    run = Run(app.test_client(), db, gate, clock)
    caplog.set_level(logging.WARNING)

    @settings(max_examples=EXAMPLES, deadline=None, database=None, **ONLY_GENERATE)
    @given(batch=batches())
    def batch_holds(batch: list[tuple[Any, str]]) -> None:
        run.begin()
        for payload, style in batch:
            run.post(payload, style)
        run.process()
        run.check_statuses()
        broken = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
        assert broken == [], caplog.text
        caplog.clear()

    batch_holds()
    assert run.bodies >= EXAMPLES * (FRESH + ECHOES)
