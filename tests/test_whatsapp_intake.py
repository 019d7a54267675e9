"""Stored webhook bodies processed: every event exactly once, whatever Meta does.

Bodies are stored as the door stores them, then processed by the intake worker
through the gate (`whatsapp.ingest`), as `serve` and `wa-access worker` do.
Meta retries for days, batches, and delivers out of order (PROTOCOLS): the
records must end the same however often and in whatever order events come.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy import text as text_sql

from bot.whatsapp.intake_worker import IntakeWorker
from rbac_core import Database, Gate, ManualClock, build_gate
from rbac_core.clock import utcnow
from rbac_core.directory import register_number
from rbac_core.outbox import Outbox
from rbac_core.principals import WEBHOOK
from rbac_core.store.models import (
    Conversation,
    ConversationMessage,
    Customer,
    InboundWebhook,
    Number,
    OutboxMessage,
    UnknownNumber,
)
from rbac_core.store.webhook_inbox import WebhookInbox

from .conftest import ADMIN, ALICE
from .helpers import audit_rows, notices
from .whatsapp_requests import (
    CUSTOMER,
    PHONE_NUMBER_ID,
    WABA_ID,
    as_meta_sends,
    inbound,
    messages_change,
    notification,
    status,
)

BUSINESS = "+15550001111"


@pytest.fixture
def workspace(db: Database, clock: ManualClock) -> None:
    """The business number Meta's test payloads come through, registered with its id."""
    with db.write() as session:
        register_number(session, BUSINESS, PHONE_NUMBER_ID)


def now_ts(clock: ManualClock, ago: float = 0) -> int:
    return int(clock.now - ago)


def store(db: Database, clock: ManualClock, *payloads: dict[str, Any]) -> None:
    inbox = WebhookInbox(db, clock)
    for payload in payloads:
        inbox.store("whatsapp", as_meta_sends(payload).decode())


def process(db: Database, gate: Gate, clock: ManualClock, *payloads: dict[str, Any]) -> int:
    """Store each payload as the door does, then let a worker process what is due."""
    store(db, clock, *payloads)
    return IntakeWorker(WebhookInbox(db, clock), gate, Outbox(db, clock)).run_until_idle()


def text(body: str, wamid: str, ts: int, **extra: Any) -> dict[str, Any]:
    return inbound("text", {"body": body}, wamid, timestamp=ts, **extra)


def count(db: Database, model: Any) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def conversation(db: Database) -> Conversation:
    with db.read() as session:
        [found] = session.scalars(select(Conversation)).all()
        session.expunge(found)
        return found


def outbound(db: Database, clock: ManualClock, *, wamid: str | None, outbox_id: int) -> int:
    """A message we sent from outbox row `outbox_id` (the send action and the sender write
    these; written here to test statuses alone)."""
    with db.write() as session:
        customer = Customer(key="w:" + CUSTOMER, wa_id=CUSTOMER, created_at=utcnow(clock))
        session.add(customer)
        session.flush()
        conv = Conversation(
            number=BUSINESS, customer_id=customer.id, state="open", created_at=utcnow(clock)
        )
        session.add(conv)
        session.flush()
        message = ConversationMessage(
            wamid=wamid,
            conversation_id=conv.id,
            direction="out",
            kind="text",
            text="Your order shipped",
            sender=ALICE,
            sent_at=utcnow(clock),
            received_at=utcnow(clock),
            status="queued",
            status_rank=0,
        )
        session.add(message)
        session.flush()
        row = OutboxMessage(
            id=outbox_id,
            kind="whatsapp.send",
            to=f"whatsapp:{PHONE_NUMBER_ID}:C{conv.id}",
            data=json.dumps({"message": message.id}),
            status="done",
            attempt=1,
            next_try_at=utcnow(clock),
            created_at=utcnow(clock),
        )
        session.add(row)
        session.flush()
        if not db.is_sqlite:  # an id given by hand leaves PostgreSQL's sequence behind
            session.execute(
                text_sql(
                    "SELECT setval(pg_get_serial_sequence('outbox', 'id'), max(id)) FROM outbox"
                )
            )
        return message.id


def state_of(db: Database, message_id: int) -> tuple[str | None, str | None, int | None]:
    with db.read() as session:
        message = session.get(ConversationMessage, message_id)
        assert message is not None
        return message.status, message.wamid, message.error_code


# -- customers, conversations and their window --------------------------------------------


def test_a_customer_writing_makes_a_customer_a_conversation_and_opens_its_window(
    db: Database, gate: Gate, clock: ManualClock, workspace: None
) -> None:
    written = now_ts(clock, ago=600)
    process(
        db, gate, clock, notification(messages_change(messages=[text("Hi", "wamid.A", written)]))
    )
    with db.read() as session:
        [customer] = session.scalars(select(Customer)).all()
        [message] = session.scalars(select(ConversationMessage)).all()
    assert (customer.key, customer.wa_id, customer.name) == (
        "w:" + CUSTOMER,
        CUSTOMER,
        "Kerry Fisher",
    )
    conv = conversation(db)
    assert (conv.number, conv.customer_id, conv.state) == (BUSINESS, customer.id, "open")
    assert conv.last_customer_at == datetime.fromtimestamp(written, UTC)
    assert (message.direction, message.kind, message.text, message.wamid) == (
        "in",
        "text",
        "Hi",
        "wamid.A",
    )
    assert message.conversation_id == conv.id


def test_the_window_runs_from_the_customers_own_timestamp_and_never_back(
    db: Database, gate: Gate, clock: ManualClock, workspace: None
) -> None:
    """A webhook Meta retries hours later must not reopen a window that closed."""
    old = now_ts(clock, ago=30 * 3600)
    newer = now_ts(clock, ago=2 * 3600)
    process(
        db, gate, clock, notification(messages_change(messages=[text("late", "wamid.NEW", newer)]))
    )
    process(
        db, gate, clock, notification(messages_change(messages=[text("older", "wamid.OLD", old)]))
    )
    assert conversation(db).last_customer_at == datetime.fromtimestamp(newer, UTC)
    # A clock running ahead at Meta cannot hold the window open past now.
    ahead = now_ts(clock) + 10 * 86400
    process(
        db,
        gate,
        clock,
        notification(messages_change(messages=[text("ahead", "wamid.AHEAD", ahead)])),
    )
    assert conversation(db).last_customer_at == utcnow(clock)


def test_customers_are_known_by_their_user_id_and_keep_their_row_when_meta_adds_one(
    db: Database, gate: Gate, clock: ManualClock, workspace: None
) -> None:
    ts = now_ts(clock, ago=60)
    process(db, gate, clock, notification(messages_change(messages=[text("1", "wamid.1", ts)])))
    with_user_id = [
        {"profile": {"name": "Kerry"}, "wa_id": CUSTOMER, "user_id": "US.13491208655302741918"}
    ]
    change = messages_change(
        messages=[text("2", "wamid.2", ts + 1, from_user_id="US.13491208655302741918")],
        contacts=with_user_id,
    )
    process(db, gate, clock, notification(change))
    # Someone with a username and no phone number at all: known by the user id alone.
    username_only = [
        {"profile": {"name": "Ana", "username": "@ana"}, "wa_id": "", "user_id": "US.ANA"}
    ]
    change = messages_change(
        messages=[text("3", "wamid.3", ts + 2, sender="", from_user_id="US.ANA")],
        contacts=username_only,
    )
    process(db, gate, clock, notification(change))
    with db.read() as session:
        rows = [
            (c.key, c.wa_id, c.username)
            for c in session.scalars(select(Customer).order_by(Customer.id))
        ]
        conversations = session.scalar(select(func.count()).select_from(Conversation))
    assert rows == [("u:US.13491208655302741918", CUSTOMER, None), ("u:US.ANA", None, "@ana")]
    assert conversations == 2


def test_a_customer_who_changed_number_keeps_their_conversation(
    db: Database, gate: Gate, clock: ManualClock, workspace: None
) -> None:
    ts = now_ts(clock, ago=60)
    process(db, gate, clock, notification(messages_change(messages=[text("hi", "wamid.1", ts)])))
    changed = inbound(
        "system",
        {
            "body": "User A changed from 16505551234 to 16505559999",
            "wa_id": "16505559999",
            "type": "user_changed_number",
        },
        "wamid.SYS",
        timestamp=ts + 5,
    )
    process(db, gate, clock, notification(messages_change(messages=[changed])))
    with db.read() as session:
        [customer] = session.scalars(select(Customer)).all()
    assert (customer.key, customer.wa_id) == ("w:16505559999", "16505559999")
    assert conversation(db).last_customer_at == datetime.fromtimestamp(
        ts, UTC
    )  # not a customer writing


# -- exactly once ----------------------------------------------------------------------------


def test_the_same_message_three_times_in_one_batch_and_across_bodies_is_processed_once(
    db: Database, gate: Gate, clock: ManualClock, workspace: None
) -> None:
    ts = now_ts(clock, ago=60)
    same = text("only once", "wamid.SAME", ts)
    batch = notification(messages_change(messages=[same, same]), messages_change(messages=[same]))
    process(db, gate, clock, batch)
    # The same event in a body Meta batched differently (a different body, same event):
    other = {**notification(messages_change(messages=[same])), "extra": "a field nobody knows"}
    process(db, gate, clock, other)
    assert count(db, ConversationMessage) == 1
    entries = [e for e in audit_rows(db) if e.action == "whatsapp.ingest"]
    assert [json.loads(e.details)["counts"] for e in entries] == [
        {"messages": 1, "duplicates": 2},
        {"duplicates": 1},
    ]


@pytest.mark.parametrize(
    "order",
    [
        *itertools.permutations(["sent", "delivered", "read"]),
        ("read", "sent"),
        ("played", "read", "delivered"),
    ],
)
def test_statuses_in_any_order_end_in_the_furthest_one(
    db: Database, gate: Gate, clock: ManualClock, workspace: None, order: tuple[str, ...]
) -> None:
    message = outbound(db, clock, wamid="wamid.OUT", outbox_id=7)
    for state in order:  # one body each: as out of order as Meta can be
        process(
            db, gate, clock, notification(messages_change(statuses=[status(state, "wamid.OUT")]))
        )
    furthest = max(order, key=["sent", "delivered", "read", "played"].index)
    assert state_of(db, message)[0] == furthest


@pytest.mark.parametrize("order", list(itertools.permutations(["sent", "failed", "delivered"])))
def test_failed_is_final_whatever_came_before_or_after(
    db: Database, gate: Gate, clock: ManualClock, workspace: None, order: tuple[str, ...]
) -> None:
    message = outbound(db, clock, wamid="wamid.OUT", outbox_id=7)
    batch = [
        status(
            s,
            "wamid.OUT",
            errors=[{"code": 131026, "title": "Message undeliverable"}] if s == "failed" else [],
        )
        for s in order
    ]
    process(db, gate, clock, notification(messages_change(statuses=batch)))
    assert state_of(db, message) == ("failed", "wamid.OUT", 131026)


def test_a_status_finds_its_message_by_the_outbox_id_before_the_wamid_is_recorded(
    db: Database, gate: Gate, clock: ManualClock, workspace: None
) -> None:
    """Meta can report `sent` before the sender has written down the wamid it was given."""
    message = outbound(db, clock, wamid=None, outbox_id=41)
    early = status("sent", "wamid.EARLY", biz_opaque_callback_data="41")
    process(db, gate, clock, notification(messages_change(statuses=[early])))
    assert state_of(db, message) == ("sent", "wamid.EARLY", None)


def test_a_send_that_failed_later_tells_its_sender_with_metas_code(
    db: Database, gate: Gate, clock: ManualClock, workspace: None
) -> None:
    """131047 usually arrives as a failed status, not in the send's answer."""
    outbound(db, clock, wamid="wamid.OUT", outbox_id=9)
    error = {
        "code": 131047,
        "title": "Re-engagement message",
        "error_data": {"details": "more than 24 hours"},
    }
    failed = status("failed", "wamid.OUT", biz_opaque_callback_data="9", errors=[error])
    process(db, gate, clock, notification(messages_change(statuses=[failed])))
    process(db, gate, clock, notification(messages_change(statuses=[failed])))  # retried: told once
    [(_, to, data)] = notices(db, "whatsapp.send_failed")
    assert to == f"person:{ALICE}"
    assert data["code"] == 131047 and data["detail"] == "more than 24 hours"


def test_a_status_for_a_message_nobody_here_sent_is_kept_for_the_record(
    db: Database, gate: Gate, clock: ManualClock, workspace: None
) -> None:
    process(
        db,
        gate,
        clock,
        notification(messages_change(statuses=[status("delivered", "wamid.ELSEWHERE")])),
    )
    [entry] = [e for e in audit_rows(db) if e.action == "whatsapp.ingest"]
    assert json.loads(entry.details)["counts"] == {"statuses": 1}
    assert notices(db) == []


# -- numbers, templates, notices ---------------------------------------------------------------


def test_an_unknown_number_is_recorded_reported_once_and_not_processed(
    db: Database, gate: Gate, clock: ManualClock, workspace: None
) -> None:
    ts = now_ts(clock, ago=60)
    stranger = messages_change(messages=[text("hi", "wamid.X1", ts)], phone_number_id="999000111")
    process(db, gate, clock, notification(stranger))
    again = messages_change(
        messages=[text("hi again", "wamid.X2", ts)], phone_number_id="999000111"
    )
    process(db, gate, clock, notification(again))
    assert count(db, Customer) == count(db, ConversationMessage) == 0
    with db.read() as session:
        [unknown] = session.scalars(select(UnknownNumber)).all()
    assert (unknown.phone_number_id, unknown.events) == ("999000111", 2)
    [(_, to, data)] = notices(db, "whatsapp.unknown_number")
    assert to == "channel:alert" and data["phone_number_id"] == "999000111"


def test_template_updates_are_recorded_once_and_told_to_the_audit_channel(
    db: Database, gate: Gate, clock: ManualClock, workspace: None
) -> None:
    approved = {
        "field": "message_template_status_update",
        "value": {
            "event": "APPROVED",
            "message_template_id": 1234567,
            "message_template_name": "order_shipped",
            "message_template_language": "en_US",
            "reason": "NONE",
        },
    }
    payload = {
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "time": 1_795_000_000, "changes": [approved]}],
    }
    process(db, gate, clock, payload)
    process(db, gate, clock, {**payload, "retried": True})
    [(_, to, data)] = notices(db, "whatsapp.template")
    assert to == "channel:audit"
    assert (data["name"], data["event"]) == ("order_shipped", "APPROVED")


def test_account_alerts_go_to_the_alert_channel_once(
    db: Database, gate: Gate, clock: ManualClock, workspace: None
) -> None:
    alert = {
        "field": "account_alerts",
        "value": {
            "entity_type": "WABA",
            "entity_id": WABA_ID,
            "alert_info": {
                "alert_severity": "CRITICAL",
                "alert_status": "ACTIVE",
                "alert_type": "OBA_APPROVED",
                "alert_description": "Your account is restricted",
            },
        },
    }
    process(db, gate, clock, notification(alert))
    process(db, gate, clock, {**notification(alert), "again": 1})
    [(_, to, data)] = notices(db, "whatsapp.account")
    assert to == "channel:alert" and data["severity"] == "CRITICAL"


# -- the audit entry ---------------------------------------------------------------------------


def test_each_body_is_audited_in_counts_never_with_a_customers_words_or_number(
    db: Database, gate: Gate, clock: ManualClock, workspace: None
) -> None:
    ts = now_ts(clock, ago=60)
    process(
        db,
        gate,
        clock,
        notification(messages_change(messages=[text("my secret address", "wamid.P", ts)])),
    )
    [entry] = [e for e in audit_rows(db) if e.action == "whatsapp.ingest"]
    assert (entry.actor, entry.surface, entry.outcome) == ("whatsapp-webhook", "whatsapp", "done")
    details = json.loads(entry.details)
    assert details["counts"] == {"messages": 1}
    assert details["conversations"] == [f"C-{conversation(db).id}"]
    assert "secret address" not in entry.details and CUSTOMER not in entry.details


def test_only_metas_webhooks_may_ingest_events(db: Database, gate: Gate, workspace: None) -> None:
    for actor, surface in (
        (ADMIN, "slack"),
        ("operator", "cli"),
        (WEBHOOK, "slack"),
        (WEBHOOK, "cli"),
    ):
        outcome = gate.submit(
            actor,
            surface,
            "whatsapp.ingest",
            {"webhooks": [1], "owner": "x", "attempts": [1], "events": []},
        )
        assert (outcome.status, outcome.error_code) == ("refused", "operator_only"), (
            actor,
            surface,
        )


# -- leases, failures and races ----------------------------------------------------------------


def test_a_worker_that_lost_its_lease_commits_nothing_and_the_body_is_processed_once(
    db: Database, gate: Gate, clock: ManualClock, workspace: None
) -> None:
    from handlers.whatsapp.intake import ingest

    store(
        db,
        clock,
        notification(messages_change(messages=[text("hi", "wamid.L", now_ts(clock, 60))])),
    )
    inbox = WebhookInbox(db, clock)
    [slow] = inbox.take("slow-worker")
    clock.advance(inbox.lease.total_seconds() + 1)  # it stalls past its lease ...
    [fast] = inbox.take("fast-worker")  # ... and another takes the body over
    assert ingest(gate, fast.owner, [(fast.id, fast.attempt, fast.body)]).status == "done"
    late = ingest(gate, slow.owner, [(slow.id, slow.attempt, slow.body)])
    assert (late.status, late.error_code) == ("refused", "lease_lost")
    assert count(db, ConversationMessage) == 1
    assert inbox.counts() == {"done": 1}


def test_a_body_that_keeps_failing_is_retried_then_given_up_and_reported(
    db: Database, clock: ManualClock, workspace: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rbac_core.messaging import intake

    def broken(self: Any, events: Any) -> None:
        raise RuntimeError("a bug in processing")

    monkeypatch.setattr(intake.Intake, "apply", broken)
    gate = build_gate(db, clock=clock)
    inbox = WebhookInbox(db, clock, max_attempts=3)
    worker = IntakeWorker(inbox, gate, Outbox(db, clock))
    store(
        db,
        clock,
        notification(messages_change(messages=[text("hi", "wamid.F", now_ts(clock, 60))])),
    )
    for _ in range(3):
        assert worker.run_until_idle() == 1
        clock.advance(3600)
    assert inbox.counts() == {"given_up": 1}
    with db.read() as session:
        [row] = session.scalars(select(InboundWebhook)).all()
    assert row.body and "internal_error" in (row.last_error or "")  # kept for an operator
    [(_, to, data)] = notices(db, "whatsapp.webhook_given_up")
    assert to == "channel:alert" and data["attempts"] == 3


@pytest.fixture
def gates(db_url: str, clock: ManualClock) -> Iterator[list[Gate]]:
    made = [build_gate(Database(db_url), clock=clock) for _ in range(4)]
    yield made
    for g in made:
        g.db.dispose()


def test_four_workers_with_their_own_connections_process_every_body_once(
    db: Database, clock: ManualClock, workspace: None, gates: list[Gate]
) -> None:
    """Overlapping bodies (each message sent in three of them) raced by four workers."""
    ts = now_ts(clock, ago=60)
    for i in range(30):
        wamids = [f"wamid.R{(i + k) % 30}" for k in range(3)]
        body = notification(
            messages_change(
                messages=[text("hi", w, ts + n) for n, w in enumerate(wamids)],
                statuses=[status("delivered", f"wamid.S{i % 10}")],
            )
        )
        store(db, clock, body)
    barrier = threading.Barrier(len(gates))
    errors: list[BaseException] = []

    def work(g: Gate) -> None:
        worker = IntakeWorker(WebhookInbox(g.db, clock), g, Outbox(g.db, clock), batch=2)
        barrier.wait()
        try:
            worker.run_until_idle()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(g,)) for g in gates]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert WebhookInbox(db, clock).counts() == {"done": 30}
    assert count(db, ConversationMessage) == 30
    assert count(db, Customer) == count(db, Conversation) == 1
    totals: dict[str, int] = {}
    for entry in audit_rows(db):
        if entry.action == "whatsapp.ingest" and entry.outcome == "done":
            for k, v in json.loads(entry.details)["counts"].items():
                totals[k] = totals.get(k, 0) + v
    assert totals == {"messages": 30, "duplicates": 60 + 20, "statuses": 10}


def test_a_window_is_never_moved_back_by_racing_workers(
    db: Database, clock: ManualClock, workspace: None, gates: list[Gate]
) -> None:
    base = now_ts(clock, ago=3600)
    for i in range(12):
        store(
            db,
            clock,
            notification(messages_change(messages=[text(str(i), f"wamid.W{i}", base + i * 60)])),
        )
    threads = [
        threading.Thread(
            target=IntakeWorker(
                WebhookInbox(g.db, clock), g, Outbox(g.db, clock), batch=1
            ).run_until_idle
        )
        for g in gates
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert conversation(db).last_customer_at == datetime.fromtimestamp(base + 11 * 60, UTC)
    assert timedelta(0) < utcnow(clock) - conversation(db).last_customer_at  # type: ignore[operator]


def test_every_notice_the_intake_writes_reads_well_in_slack_without_a_customers_number(
    db: Database, gate: Gate, clock: ManualClock, workspace: None
) -> None:
    from handlers.slack.notices import render

    outbound(db, clock, wamid="wamid.OUT", outbox_id=3)
    failed = status(
        "failed", "wamid.OUT", errors=[{"code": 131047, "title": "Re-engagement message"}]
    )
    quality = {
        "field": "phone_number_quality_update",
        "value": {
            "display_phone_number": "15550001111",
            "event": "FLAGGED",
            "current_limit": "TIER_1K",
        },
    }
    review = {
        "field": "message_template_status_update",
        "value": {
            "event": "REJECTED",
            "message_template_id": 99,
            "message_template_name": "promo_<b>",
            "message_template_language": "en_US",
            "reason": "PROMOTIONAL",
        },
    }
    stranger = messages_change(messages=[text("hi", "wamid.Z", 1)], phone_number_id="424242")
    process(
        db,
        gate,
        clock,
        notification(messages_change(statuses=[failed]), quality, review, stranger),
    )
    told = [(kind, data) for kind, _, data in notices(db) if kind != "whatsapp.send"]
    texts = {kind: render(kind, data)["text"] for kind, data in told}
    assert set(texts) == {
        "whatsapp.send_failed",
        "whatsapp.number_quality",
        "whatsapp.template",
        "whatsapp.unknown_number",
    }
    assert "24-hour window is closed; send a template" in texts["whatsapp.send_failed"]
    assert "C-" in texts["whatsapp.send_failed"] and "131047" in texts["whatsapp.send_failed"]
    assert "FLAGGED" in texts["whatsapp.number_quality"]
    assert "promo_&lt;b&gt;" in texts["whatsapp.template"]  # Meta's text cannot forge markup
    assert "PROMOTIONAL" in texts["whatsapp.template"]
    assert "wa-access number add +E164 --id 424242" in texts["whatsapp.unknown_number"]
    assert not any(CUSTOMER in t for t in texts.values())


def test_bodies_are_processed_together_and_one_that_fails_holds_up_no_other(
    db: Database, clock: ManualClock, workspace: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rbac_core.messaging import inbound

    real = inbound.row_of

    def poisoned(message: Any, conversation: int, now: Any) -> Any:
        if message.wamid == "wamid.POISON":
            raise RuntimeError("a bug this one body trips")
        return real(message, conversation, now)

    monkeypatch.setattr(inbound, "row_of", poisoned)
    gate = build_gate(db, clock=clock)
    ts = now_ts(clock, ago=60)
    for wamid in ("wamid.B1", "wamid.POISON", "wamid.B2", "wamid.B3"):
        store(db, clock, notification(messages_change(messages=[text("x", wamid, ts)])))
    inbox = WebhookInbox(db, clock)
    assert IntakeWorker(inbox, gate, Outbox(db, clock)).run_until_idle() == 4
    assert inbox.counts() == {"done": 3, "queued": 1}
    with db.read() as session:
        kept = set(session.scalars(select(ConversationMessage.wamid)))
    assert kept == {"wamid.B1", "wamid.B2", "wamid.B3"}
    entries = [e for e in audit_rows(db) if e.action == "whatsapp.ingest"]
    # The batch failed as a whole (audited), then each body went alone.
    assert [e.outcome for e in entries] == ["error", "done", "error", "done", "done"]


def test_under_load_one_gate_call_and_one_audit_entry_serve_many_bodies(
    db: Database, gate: Gate, clock: ManualClock, workspace: None
) -> None:
    ts = now_ts(clock, ago=60)
    for i in range(120):
        store(db, clock, notification(messages_change(messages=[text("x", f"wamid.M{i}", ts)])))
    worker = IntakeWorker(WebhookInbox(db, clock), gate, Outbox(db, clock), batch=50)
    assert worker.run_until_idle() == 120
    entries = [json.loads(e.details) for e in audit_rows(db) if e.action == "whatsapp.ingest"]
    assert [d["counts"]["messages"] for d in entries] == [50, 50, 20]
    assert count(db, ConversationMessage) == 120


def test_every_kind_of_notice_the_code_writes_has_a_slack_message() -> None:
    """A kind with no renderer is never posted: the worker retries it, then gives it up."""
    import re
    from pathlib import Path

    from handlers.slack.notices import RENDERERS

    repo = Path(__file__).resolve().parent.parent
    written = {
        kind
        for package in ("rbac_core", "bot", "handlers")
        for path in (repo / package).rglob("*.py")
        for kind in re.findall(r'Notice\(\s*"([a-z0-9_.]+)"', path.read_text(encoding="utf-8"))
    }
    assert {"whatsapp.number_paused", "whatsapp.send_failed", "access.requested"} <= written
    assert written - set(RENDERERS) == set()


def test_a_failed_status_saying_the_number_is_restricted_pauses_it(
    db: Database, gate: Gate, clock: ManualClock, workspace: None
) -> None:
    """Meta often reports 131048 later, as a failed status, not in the send's answer."""
    outbound(db, clock, wamid="wamid.OUT", outbox_id=5)
    spam = {"code": 131048, "title": "Spam rate limit hit"}
    failed = status("failed", "wamid.OUT", errors=[spam])
    process(db, gate, clock, notification(messages_change(statuses=[failed])))
    with db.read() as session:
        number = session.get(Number, BUSINESS)
        assert number is not None and number.paused_at is not None
    [(_, to, data)] = notices(db, "whatsapp.number_paused")
    assert to == "channel:alert" and "131048" in data["reason"]
    assert len(notices(db, "whatsapp.send_failed")) == 1


def test_values_no_column_could_hold_make_an_event_malformed_never_a_body_given_up(
    db: Database, gate: Gate, clock: ManualClock, workspace: None
) -> None:
    ts = now_ts(clock, ago=60)
    odd = [
        text("huge code", "wamid.C1", ts, errors=[{"code": 2**70, "title": "x"}]),
        text("long code", "wamid.C2", ts, errors=[{"code": "99999999999", "title": "x"}]),
        inbound("text", {"body": "int id"}, 10**600, timestamp=ts),  # type: ignore[arg-type]
        text("reply", "wamid.C3", ts, context={"from": CUSTOMER, "id": 10**600}),
    ]
    process(db, gate, clock, notification(messages_change(messages=odd)))
    assert WebhookInbox(db, clock).counts() == {"done": 1}
    with db.read() as session:
        kept = dict(
            session.execute(select(ConversationMessage.wamid, ConversationMessage.error_code)).all()
        )
    assert kept == {"wamid.C1": None, "wamid.C2": None, "wamid.C3": None}


def test_a_status_naming_a_customers_message_never_renames_ours(
    db: Database, gate: Gate, clock: ManualClock, workspace: None
) -> None:
    """A wamid belongs to one message: a status carrying an inbound message's wamid and our
    callback data moves our message's status, and both messages are kept."""
    message = outbound(db, clock, wamid=None, outbox_id=8)
    ts = now_ts(clock, ago=60)
    clash = status("delivered", "wamid.SHARED", biz_opaque_callback_data="8")
    body = notification(
        messages_change(messages=[text("hi", "wamid.SHARED", ts)], statuses=[clash])
    )
    process(db, gate, clock, body)
    assert WebhookInbox(db, clock).counts() == {"done": 1}
    assert state_of(db, message) == ("delivered", None, None)
    assert count(db, ConversationMessage) == 2


def test_a_body_whose_worker_died_holding_it_is_taken_alone_and_given_up_with_an_alert(
    db: Database, gate: Gate, clock: ManualClock, workspace: None
) -> None:
    ts = now_ts(clock, ago=60)
    for i in range(3):
        store(db, clock, notification(messages_change(messages=[text("x", f"wamid.D{i}", ts)])))
    inbox = WebhookInbox(db, clock, max_attempts=2)
    assert len(inbox.take("doomed-1", limit=1)) == 1  # body 1 kills its worker ...
    clock.advance(inbox.lease.total_seconds() + 1)
    assert [t.id for t in inbox.take("doomed-2")] == [1]  # ... alone, not with 2 and 3
    clock.advance(inbox.lease.total_seconds() + 1)
    worker = IntakeWorker(inbox, gate, Outbox(db, clock))
    assert worker.run_until_idle() == 2
    assert inbox.counts() == {"given_up": 1, "done": 2}
    [(_, to, data)] = notices(db, "whatsapp.webhook_given_up")
    assert to == "channel:alert" and data["webhook"] == 1 and data["attempts"] == 2


def test_a_take_stops_short_of_its_byte_budget_but_always_takes_one(
    db: Database, gate: Gate, clock: ManualClock, workspace: None
) -> None:
    """Up to 200 small bodies go in one gate call; large ones (up to 4 MiB each) must not
    make a worker hold hundreds of MiB."""
    ts = now_ts(clock, ago=60)
    for i, size in enumerate((3000, 3000, 3000, 9000)):
        padded = text("x" * size, f"wamid.B{i}", ts)
        store(db, clock, notification(messages_change(messages=[padded])))
    inbox = WebhookInbox(db, clock)
    assert [t.id for t in inbox.take("w", max_bytes=7000)] == [1, 2]
    assert [t.id for t in inbox.take("w", max_bytes=7000)] == [3]
    assert [t.id for t in inbox.take("w", max_bytes=7000)] == [4]  # larger than it: alone
    assert inbox.take("w", max_bytes=7000) == []
