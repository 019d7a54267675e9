"""`/wa-send` and the sender: decided by the gate, queued with the decision, delivered to a
fake Graph API over real HTTP, and told back to the sender when Meta refuses.

SPEC §5 and §6: free text only inside the customer's 24-hour window, templates
any time, both in the business number's scope; a failure reaches the person who
sent with Meta's code and what to do; a number Meta restricted is paused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.demo.fake_graph import FakeGraph
from bot.whatsapp.graph import GraphClient
from bot.whatsapp.sender import CUSTOMER_PACE, PREFIX, STATE_TTL, WhatsAppSender
from handlers.commands.grammar import UsageError
from handlers.commands.send import SendCommand, parse_send
from rbac_core import Database, Gate, ManualClock
from rbac_core.directory import register_number
from rbac_core.outbox import Outbox
from rbac_core.principals import Principal
from rbac_core.store.models import ConversationMessage, Number

from .conftest import ADMIN, ALICE, BOB, CAROL
from .helpers import audit_rows, notices, run
from .test_whatsapp_intake import process, text
from .whatsapp_requests import (
    CUSTOMER,
    PHONE_NUMBER_ID,
    messages_change,
    notification,
    status,
)

BUSINESS, OTHER = "+15550001111", "+15550002222"
OTHER_ID = "200200200200200"
TO = "+" + CUSTOMER
TOKEN = "graph-token-for-tests"


@pytest.fixture
def graph() -> Iterator[FakeGraph]:
    fake = FakeGraph(token=TOKEN).start()
    yield fake
    fake.stop()


@pytest.fixture
def staff(db: Database, gate: Gate, clock: ManualClock, team: dict[str, str]) -> None:
    """Alice is an agent and Bob support, both on the business number only."""
    with db.write() as session:
        register_number(session, BUSINESS, PHONE_NUMBER_ID)
        register_number(session, OTHER, OTHER_ID)
    for user, role in ((ALICE, "agent"), (BOB, "support")):
        outcome = run(gate, ADMIN, "role.assign", user=user, role=role, number=BUSINESS)
        if outcome.status == "needs_confirmation":
            outcome = gate.confirm(outcome.pending_id or "", Principal.person(ADMIN), "cli")
        assert outcome.status == "done", outcome


def sender(
    db: Database, clock: ManualClock, graph: FakeGraph, outbox: Outbox | None = None
) -> WhatsAppSender:
    outbox = outbox or Outbox(db, clock, prefix=PREFIX, pace=CUSTOMER_PACE)
    return WhatsAppSender(db, GraphClient(graph.url, TOKEN), default_rate=80, outbox=outbox)


def send(gate: Gate, who: str, line: str) -> Any:
    """A `/wa-send` from Slack, where WHATSAPP_PHONE_NUMBER_ID names the default number."""
    return SendCommand(gate).handle(Principal.slack_user(who), "slack", line, PHONE_NUMBER_ID)


def customer_writes(db: Database, gate: Gate, clock: ManualClock, ago: float = 600) -> None:
    written = int(clock.now - ago)
    change = messages_change(messages=[text("Where is my order?", f"wamid.IN{ago}", written)])
    process(db, gate, clock, notification(change))


def messages_out(db: Database) -> list[ConversationMessage]:
    with db.read() as session:
        rows = session.scalars(
            select(ConversationMessage)
            .where(ConversationMessage.direction == "out")
            .order_by(ConversationMessage.id)
        ).all()
        for row in rows:
            session.expunge(row)
        return list(rows)


# -- the command line ---------------------------------------------------------------------


def test_the_send_line_reads_text_exactly_as_typed_and_templates_with_their_values() -> None:
    assert parse_send('+16505551234 Your order "A-12" shipped --today') == {
        "to": "+16505551234",
        "text": 'Your order "A-12" shipped --today',
    }
    assert parse_send(
        "+16505551234 --from +15550001111 --template order_shipped --lang pt_BR "
        '--param "Ana Silva" --param A-12'
    ) == {
        "to": "+16505551234",
        "from": "+15550001111",
        "template": "order_shipped",
        "lang": "pt_BR",
        "params": ["Ana Silva", "A-12"],
    }
    assert parse_send("") is None and parse_send("help") is None
    for bad, problem in (
        ("--template x", "whom to send to"),
        ("+1650 --template", "needs a value"),
        ("+1650 --template a hello", "--param, not free text"),
        ("+1650 --param x hi", "go with --template"),
        ("+1650", "say what to send"),
        ("+1650 --bogus 1 hi", "unknown option"),
        ("+1650 --from a --from b hi", "given twice"),
    ):
        with pytest.raises(UsageError, match=problem):
            parse_send(bad)


# -- the gate's decision ------------------------------------------------------------------


def test_an_agent_replies_inside_the_window_and_the_sender_delivers_it(
    db: Database, gate: Gate, clock: ManualClock, staff: None, graph: FakeGraph
) -> None:
    customer_writes(db, gate, clock)
    reply = send(gate, ALICE, f"{TO} Your order shipped today")
    assert reply.kind == "text" and reply.text.startswith("Queued message ")
    assert "+1 650•••1234" in reply.text and CUSTOMER not in reply.text
    assert graph.calls == []  # nothing leaves before a sender takes it
    assert sender(db, clock, graph).run_until_idle() == 1
    [call] = graph.sent()
    [(_, _, queued)] = notices(db, "whatsapp.send")
    outbox_id = _outbox_ids(db)[0]
    assert call.phone_number_id == PHONE_NUMBER_ID
    assert call.headers.get("Authorization") == f"Bearer {TOKEN}"
    assert call.body == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": TO,
        "biz_opaque_callback_data": str(outbox_id),
        "type": "text",
        "text": {"body": "Your order shipped today", "preview_url": False},
    }
    [message] = messages_out(db)
    assert (message.status, message.sender, message.id) == ("sent", ALICE, queued["message"])
    assert message.wamid and message.wamid.startswith("wamid.")
    # Meta's later statuses find it and move it forward.
    delivered = status("delivered", message.wamid, biz_opaque_callback_data=str(outbox_id))
    process(db, gate, clock, notification(messages_change(statuses=[delivered])))
    assert messages_out(db)[0].status == "delivered"


def test_the_audit_entry_names_the_conversation_not_the_customers_number_or_words(
    db: Database, gate: Gate, clock: ManualClock, staff: None
) -> None:
    customer_writes(db, gate, clock)
    assert send(gate, ALICE, f"{TO} my private words").kind == "text"
    [entry] = [e for e in audit_rows(db) if e.action == "whatsapp.send"]
    assert (entry.actor, entry.decision, entry.outcome) == (ALICE, "allow", "done")
    assert entry.target.startswith("conversation:C-")
    assert CUSTOMER not in entry.details and "private words" not in entry.details
    assert CUSTOMER not in entry.target


def test_free_text_outside_the_window_is_refused_with_what_to_do_instead(
    db: Database, gate: Gate, clock: ManualClock, staff: None
) -> None:
    customer_writes(db, gate, clock, ago=25 * 3600)
    reply = send(gate, ALICE, f"{TO} Hello again")
    assert reply.kind == "error" and reply.outcome is not None
    assert reply.outcome.error_code == "window_closed"
    assert "within 24 hours" in reply.text and f"/wa-send {TO} --template NAME" in reply.text
    never = send(gate, ALICE, "+14155550000 Hi there")  # a customer who never wrote
    assert never.outcome is not None and never.outcome.error_code == "window_closed"
    assert "have not written" in never.text
    # A template goes any time, even to someone who never wrote.
    assert send(gate, ALICE, "+14155550000 --template welcome --param Ana").kind == "text"
    assert [m.kind for m in messages_out(db)] == ["template"]


def test_support_may_send_templates_but_no_free_text(
    db: Database, gate: Gate, clock: ManualClock, staff: None
) -> None:
    customer_writes(db, gate, clock)
    refused = send(gate, BOB, f"{TO} I can fix that")
    assert refused.outcome is not None and refused.outcome.status == "denied"
    assert "messages:send_text" in refused.text
    assert send(gate, BOB, f"{TO} --template order_update").kind == "text"


def test_grants_count_only_on_their_number(
    db: Database, gate: Gate, clock: ManualClock, staff: None
) -> None:
    refused = send(gate, ALICE, f"{TO} --from {OTHER} --template welcome")
    assert refused.outcome is not None and refused.outcome.status == "denied"
    assert OTHER in refused.text
    nobody = send(gate, CAROL, f"{TO} --template welcome")
    assert nobody.outcome is not None and nobody.outcome.status == "denied"
    assert messages_out(db) == []


def test_which_number_to_send_from_must_be_clear(
    db: Database, gate: Gate, clock: ManualClock, staff: None
) -> None:
    command, alice = SendCommand(gate), Principal.slack_user(ALICE)
    ambiguous = command.handle(alice, "slack", f"{TO} --template w")  # two numbers can send
    assert ambiguous.kind == "error" and "--from" in ambiguous.text
    assert command.handle(alice, "slack", f"{TO} --from {BUSINESS} --template w").kind == "text"
    assert command.handle(alice, "slack", f"{TO} --template w", PHONE_NUMBER_ID).kind == "text"
    with db.write() as session:
        session.get(Number, OTHER).phone_number_id = None  # type: ignore[union-attr]
    assert command.handle(alice, "slack", f"{TO} --template w").kind == "text"  # the only one
    unknown = command.handle(alice, "slack", f"{TO} --from +15559999999 --template w")
    assert unknown.kind == "error" and "not a registered" in unknown.text


def _outbox_ids(db: Database) -> list[int]:
    from rbac_core.store.models import OutboxMessage

    with db.read() as session:
        return list(
            session.scalars(
                select(OutboxMessage.id)
                .where(OutboxMessage.kind == "whatsapp.send")
                .order_by(OutboxMessage.id)
            )
        )


# -- what Meta answers ----------------------------------------------------------------------


def test_a_permanent_refusal_fails_the_message_and_tells_its_sender_why(
    db: Database, gate: Gate, clock: ManualClock, staff: None, graph: FakeGraph
) -> None:
    from handlers.slack.notices import render

    graph.script(PHONE_NUMBER_ID, FakeGraph.error(131026, "Message Undeliverable"))
    assert send(gate, ALICE, f"{TO} --template welcome").kind == "text"
    sender(db, clock, graph).run_until_idle()
    [message] = messages_out(db)
    assert (message.status, message.error_code) == ("failed", 131026)
    [(_, to, data)] = notices(db, "whatsapp.send_failed")
    assert to == f"person:{ALICE}"
    told = render("whatsapp.send_failed", data)["text"]
    assert "131026" in told and "could not deliver" in told and CUSTOMER not in told
    assert len(graph.calls) == 1  # never retried


def test_a_transient_error_is_retried_and_the_message_sent_once(
    db: Database, gate: Gate, clock: ManualClock, staff: None, graph: FakeGraph
) -> None:
    graph.script(PHONE_NUMBER_ID, FakeGraph.error(130429, "Rate limit hit", http_status=400))
    assert send(gate, ALICE, f"{TO} --template welcome").kind == "text"
    worker = sender(db, clock, graph)
    worker.run_until_idle()
    assert messages_out(db)[0].status == "queued" and graph.sent() == []
    clock.advance(3600)
    worker.run_until_idle()
    assert len(graph.sent()) == 1 and messages_out(db)[0].status == "sent"


def test_metas_pair_rate_limit_makes_that_customer_wait(
    db: Database, gate: Gate, clock: ManualClock, staff: None, graph: FakeGraph
) -> None:
    graph.script(PHONE_NUMBER_ID, FakeGraph.error(131056, "Pair rate limit hit"))
    assert send(gate, ALICE, f"{TO} --template welcome").kind == "text"
    worker = sender(db, clock, graph)
    worker.run_until_idle()
    clock.advance(CUSTOMER_PACE.total_seconds())  # the usual pace is not enough now
    assert worker.run_until_idle() == 0
    clock.advance(CUSTOMER_PACE.total_seconds() * 2)
    assert worker.run_until_idle() == 1 and len(graph.sent()) == 1


def test_a_number_meta_restricts_is_paused_alerted_and_sends_nothing_more(
    db: Database, gate: Gate, clock: ManualClock, staff: None, graph: FakeGraph
) -> None:
    graph.script(PHONE_NUMBER_ID, FakeGraph.error(131048, "Spam rate limit hit"))
    assert send(gate, ALICE, f"{TO} --template welcome").kind == "text"
    worker = sender(db, clock, graph)
    worker.run_until_idle()
    [(_, to, data)] = notices(db, "whatsapp.number_paused")
    assert to == "channel:alert" and data["number"] == BUSINESS
    refused = send(gate, ALICE, f"{TO} --template welcome")
    assert refused.outcome is not None and refused.outcome.error_code == "number_paused"
    assert "wa-access number resume" in refused.text
    clock.advance(3600)
    worker.run_until_idle()
    assert len(graph.calls) == 1  # the queued message waits for the resume
    assert messages_out(db)[0].status == "queued"


def test_each_number_keeps_to_its_rate_whoever_sends(db: Database, clock: ManualClock) -> None:
    from rbac_core.outbox.slots import SendSlots

    slots = [SendSlots(db, clock), SendSlots(db, clock)]  # two senders, one budget
    waits = [slots[i % 2].take(BUSINESS, 80) for i in range(8)]
    assert waits == pytest.approx([i / 80 for i in range(8)], abs=1e-5)
    assert SendSlots(db, clock).take(OTHER, 80) == 0  # another number has its own
    assert slots[0].take(BUSINESS, 80, within=0.05) is None  # the next is 0.1 s ahead ...
    assert slots[1].take(BUSINESS, 80) == pytest.approx(8 / 80, abs=1e-5)  # ... and still free
    clock.advance(10)
    assert slots[0].take(BUSINESS, 80) == 0  # idle time is not saved up as a burst


def test_sends_are_json_in_the_outbox_and_carry_what_the_sender_needs(
    db: Database, gate: Gate, clock: ManualClock, staff: None
) -> None:
    assert send(gate, ALICE, f"{TO} --template welcome --param Ana").kind == "text"
    [(_, to, data)] = notices(db, "whatsapp.send")
    assert to.startswith(f"whatsapp:{PHONE_NUMBER_ID}:C")
    assert {k: data[k] for k in ("from", "to", "template", "lang", "params", "sender")} == {
        "from": BUSINESS,
        "to": TO,
        "template": "welcome",
        "lang": "en_US",
        "params": ["Ana"],
        "sender": ALICE,
    }
    json.dumps(data)


def test_an_operator_resumes_a_paused_number_and_its_queued_messages_go(
    db: Database, gate: Gate, clock: ManualClock, staff: None, graph: FakeGraph
) -> None:
    graph.script(PHONE_NUMBER_ID, FakeGraph.error(368, "Temporarily blocked"))
    assert send(gate, ALICE, f"{TO} --template welcome").kind == "text"
    worker = sender(db, clock, graph)
    worker.run_until_idle()
    refused = run(gate, ALICE, "number.resume", surface="slack", number=BUSINESS)
    assert refused.error_code == "operator_only"
    resumed = run(gate, "operator", "number.resume", number=PHONE_NUMBER_ID)
    assert resumed.status == "done" and "368" in resumed.message
    time.sleep(STATE_TTL)  # senders read the numbers' state again after this long
    clock.advance(3600)
    worker.run_until_idle()
    assert messages_out(db)[0].status == "sent" and len(graph.sent()) == 1


def test_a_sender_never_posts_a_row_another_sender_has_taken_over(
    db: Database, gate: Gate, clock: ManualClock, staff: None, graph: FakeGraph
) -> None:
    """A row whose lease ran out (a long wait for its number's slot, a stall) is renewed
    before it is posted, or left alone: a customer must not get the message twice."""
    assert send(gate, ALICE, f"{TO} --template welcome").kind == "text"
    short = Outbox(db, clock, prefix=PREFIX, pace=CUSTOMER_PACE, lease=timedelta(seconds=30))
    slow = sender(db, clock, graph, outbox=short)
    [held] = short.claim("slow-sender", 1)
    clock.advance(31)  # it stalled past its lease ...
    [taken] = short.claim("other-sender", 1)  # ... and another sender took the row over
    slow._send(held)
    assert graph.calls == []
    sender(db, clock, graph, outbox=short)._send(taken)
    assert len(graph.sent()) == 1 and messages_out(db)[0].status == "sent"


def test_a_slot_too_far_ahead_puts_the_row_back_instead_of_holding_it(
    db: Database, gate: Gate, clock: ManualClock, staff: None, graph: FakeGraph
) -> None:
    """Holding a row (and a thread) while waiting long for a slot risks its lease; the row
    goes back to the queue instead, and the slot stays free for the next taker."""
    for customer in ("+14155550001", "+14155550002", "+14155550003", "+14155550004"):
        assert send(gate, ALICE, f"{customer} --template welcome").kind == "text"
    outbox = Outbox(db, clock, prefix=PREFIX, pace=CUSTOMER_PACE)
    slow = WhatsAppSender(db, GraphClient(graph.url, TOKEN), default_rate=0.1, outbox=outbox)
    slow.run_until_idle()
    assert len(graph.sent()) == 1  # one slot every 10 s; the others were not taken
    for expected in (2, 3, 4):
        clock.advance(10)
        slow.run_until_idle()
        assert len(graph.sent()) == expected
    assert {m.status for m in messages_out(db)} == {"sent"}


def test_a_message_queued_from_a_number_since_removed_fails_and_its_sender_hears(
    db: Database, gate: Gate, clock: ManualClock, staff: None, graph: FakeGraph
) -> None:
    assert send(gate, ALICE, f"{TO} --template welcome").kind == "text"
    with db.write() as session:
        session.delete(session.get(Number, BUSINESS))
    sender(db, clock, graph).run_until_idle()
    assert graph.calls == [] and messages_out(db)[0].status == "failed"
    [(_, to, data)] = notices(db, "whatsapp.send_failed")
    assert to == f"person:{ALICE}" and "no longer a registered" in data["detail"]


def test_statuses_meta_sent_before_the_wamid_was_recorded_apply_once_it_is(
    db: Database, gate: Gate, clock: ManualClock, staff: None, graph: FakeGraph
) -> None:
    """Without callback data a status cannot find a message that has no wamid yet: it
    is kept, and applies when the sender records the wamid."""
    assert send(gate, ALICE, f"{TO} --template welcome").kind == "text"
    early = status("read", "wamid.ZmFrZWdyYXBoOjAwMDAwMDAwMDE=")  # the fake's first id
    process(db, gate, clock, notification(messages_change(statuses=[early])))
    sender(db, clock, graph).run_until_idle()
    [message] = messages_out(db)
    assert (message.wamid, message.status) == (early["id"], "read")


def test_meta_advising_one_retry_gets_one(
    db: Database, gate: Gate, clock: ManualClock, staff: None, graph: FakeGraph
) -> None:
    graph.script(
        PHONE_NUMBER_ID,
        FakeGraph.error(131000, "Something went wrong"),
        FakeGraph.error(131000, "Something went wrong"),
    )
    assert send(gate, ALICE, f"{TO} --template welcome").kind == "text"
    worker = sender(db, clock, graph)
    worker.run_until_idle()
    clock.advance(3600)
    worker.run_until_idle()
    assert len(graph.calls) == 2 and messages_out(db)[0].status == "failed"


def test_free_text_goes_exactly_as_typed_and_template_values_meta_refuses_are_refused(
    db: Database, gate: Gate, clock: ManualClock, staff: None
) -> None:
    typed = "It\u2019s \u201cready\u201d, Ana"  # as a phone's keyboard types it
    assert parse_send(f"+16505551234 {typed}") == {"to": "+16505551234", "text": typed}
    for value in ('"two\\nlines"', '"a\\ttab"', '"five     spaces"'):
        line = f"{TO} --template welcome --param {value}".replace("\\n", "\n").replace("\\t", "\t")
        reply = send(gate, ALICE, line)
        assert reply.kind in ("error", "usage") and "Meta refuses" in reply.text, value


def test_a_running_sender_sends_what_is_queued_and_stops_when_told(
    db: Database, gate: Gate, clock: ManualClock, staff: None, graph: FakeGraph
) -> None:
    """As inside `serve`: woken by the commit of a send, it keeps its lanes busy."""
    from .helpers import wait_for

    worker = sender(db, clock, graph)
    thread = worker.start()
    for customer in ("+14155550001", "+14155550002", "+14155550003"):
        assert send(gate, ALICE, f"{customer} --template welcome").kind == "text"
    wait_for(lambda: len(graph.sent()) == 3, what="three sends")
    worker.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert {m.status for m in messages_out(db)} == {"sent"}
