"""The outbox: notices are written with their action and delivered at least once,
paced per destination, retried, given up for good reasons, and never lost to a dead worker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.config import Settings
from bot.demo.fake_slack import FakeSlack
from bot.outbox_worker import OutboxWorker, build_worker, slack_deliverer
from rbac_core import Database, Gate, ManualClock, build_gate, signals
from rbac_core.clock import utcnow
from rbac_core.gate import Action, Context, NoParams, Prepared, Result
from rbac_core.outbox import AUDIT_CHANNEL, MAX_ATTEMPTS, Notice, Outbox, enqueue, person
from rbac_core.store.models import OutboxMessage
from rbac_core.values import WILDCARD

from .conftest import ADMIN, ALICE, BOB, Cli
from .helpers import audit_rows, notices, run

pytestmark = pytest.mark.usefixtures("team")


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    yield fake
    fake.stop()


@pytest.fixture
def settings(db_url: str, slack: FakeSlack) -> Settings:
    return Settings(
        database_url=db_url,
        slack_bot_token="xoxb-0000-test",
        slack_api_url=slack.url,
        audit_channel="C0WAAUDIT",
        alert_channel="C0WAALERT",
    )


@pytest.fixture
def outbox(db: Database, clock: ManualClock) -> Outbox:
    return Outbox(db, clock)


@pytest.fixture
def worker(outbox: Outbox, settings: Settings) -> OutboxWorker:
    return build_worker(settings, outbox, owner="worker-1")


def rows(db: Database) -> list[OutboxMessage]:
    with db.read() as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def posts(slack: FakeSlack, channel: str | None = None) -> list[dict[str, Any]]:
    return [
        c.body
        for c in slack.named("chat.postMessage")
        if channel is None or c.body["channel"] == channel
    ]


def queue(db: Database, clock: ManualClock, *items: Notice) -> None:
    from rbac_core.clock import utcnow

    with db.transaction(write=True) as txn:
        enqueue(txn, items, utcnow(clock))


def changed(n: int) -> Notice:
    data = {"verb": "assigned", "actor": ADMIN, "user": f"U0PERSON{n:02d}", "role": "agent"}
    return Notice("role.changed", AUDIT_CHANNEL, {**data, "scope": WILDCARD})


# -- written with the action, in its transaction --------------------------------------


def test_a_role_change_writes_its_notice_only_once_confirmed(gate: Gate, db: Database) -> None:
    asked = gate.submit(ADMIN, "slack", "role.assign", {"user": ALICE, "role": "agent"})
    assert asked.status == "needs_confirmation" and notices(db) == []
    assert gate.confirm(str(asked.pending_id), ADMIN, "slack").status == "done"
    [(kind, to, data)] = notices(db)
    assert (kind, to) == ("role.changed", AUDIT_CHANNEL)
    assert data == {
        "verb": "assigned",
        "actor": ADMIN,
        "user": ALICE,
        "role": "agent",
        "scope": "*",
        "expires_at": None,
        "reason": None,
    }


def test_a_refused_action_writes_no_notice(gate: Gate, db: Database) -> None:
    denied = run(gate, ALICE, "role.assign", user=BOB, role="agent")
    assert denied.status == "denied"
    assert notices(db) == []


class _Unsendable(Action[NoParams]):
    """Writes a grant-free row, then returns a notice that cannot be stored (not JSON)."""

    name = "test.unsendable"
    params_type = NoParams

    def prepare(self, ctx: Context, params: NoParams) -> Prepared:
        return Prepared({}, None, WILDCARD, "-", "send something odd")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        from rbac_core.directory import ensure_user

        ensure_user(ctx.session, "U0WRITTEN1", ctx.now)
        return Result("sent", notices=(Notice("role.changed", AUDIT_CHANNEL, {"x": {1, 2}}),))


def test_a_notice_that_cannot_be_written_undoes_its_action(
    db: Database, clock: ManualClock
) -> None:
    gate = Gate(db, {"test.unsendable": _Unsendable()}, clock=clock)
    outcome = gate.submit("operator", "cli", "test.unsendable", {})
    assert (outcome.status, outcome.error_code) == ("failed", "internal_error")
    assert notices(db) == []
    assert not build_gate(db, clock=clock).knows("U0WRITTEN1")  # its own write went with it
    assert audit_rows(db)[-1].outcome == "error"


# -- delivered ------------------------------------------------------------------------


def test_each_kind_of_notice_wakes_only_its_own_workers(db: Database) -> None:
    """A WhatsApp send wakes the sender; a Slack notice the general worker; once committed."""
    heard: list[tuple[str, int]] = []

    def general(count: int) -> None:
        heard.append(("general", count))

    def sender(count: int) -> None:
        heard.append(("sender", count))

    signals.outbox_queued.connect(general)
    signals.sends_queued.connect(sender)
    send = Notice("whatsapp.send", "whatsapp:106540352242922:C1", {"message": 1})
    told = Notice("role.changed", AUDIT_CHANNEL, {"user": ALICE})
    try:
        with db.transaction(write=True) as txn:
            enqueue(txn, [send, send, told], utcnow())
            assert heard == []  # not before the commit
        assert sorted(heard) == [("general", 1), ("sender", 2)]
        heard.clear()
        with db.transaction(write=True) as txn:
            enqueue(txn, [send], utcnow())
        assert heard == [("sender", 1)]
    finally:
        signals.outbox_queued.disconnect(general)
        signals.sends_queued.disconnect(sender)


def test_a_worker_posts_each_notice_and_marks_it_done(
    gate: Gate, db: Database, slack: FakeSlack, worker: OutboxWorker
) -> None:
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent", reason="on call").ok
    assert worker.run_until_idle() == 1
    [post] = posts(slack)
    assert post["channel"] == "C0WAAUDIT"
    assert post["text"] == (
        f"<@{ADMIN}> assigned *agent* to <@{ALICE}> in the whole workspace. Reason: on call"
    )
    [row] = rows(db)
    assert (row.status, row.attempt, row.owner, row.last_error) == ("done", 1, "worker-1", None)
    assert worker.run_until_idle() == 0 and len(posts(slack)) == 1


def test_one_destination_gets_at_most_one_post_a_second(
    db: Database, clock: ManualClock, slack: FakeSlack, worker: OutboxWorker
) -> None:
    queue(db, clock, changed(1), changed(2), Notice("expired", person(BOB), {"text": "gone"}))
    assert worker.run_until_idle() == 2  # one to the channel, one to Bob
    assert [p["channel"] for p in posts(slack)] == ["C0WAAUDIT", BOB]
    clock.advance(0.5)
    assert worker.run_until_idle() == 0
    clock.advance(0.5)
    assert worker.run_until_idle() == 1
    channel_posts = [p["text"] for p in posts(slack, "C0WAAUDIT")]
    assert [t.split()[4] for t in channel_posts] == ["<@U0PERSON01>", "<@U0PERSON02>"]


def test_a_rate_limited_post_waits_as_slack_asks_and_holds_back_its_channel(
    db: Database, clock: ManualClock, slack: FakeSlack, worker: OutboxWorker
) -> None:
    slack.scripted["chat.postMessage"] = [
        {"_status": 429, "_headers": {"Retry-After": "7"}, "ok": False, "error": "ratelimited"}
    ]
    queue(db, clock, changed(1), changed(2))
    assert worker.run_until_idle() == 1
    first = rows(db)[0]
    assert (first.status, first.attempt) == ("queued", 0)  # a wait Slack asked for: not counted
    assert first.last_error == "Slack rate limit"
    clock.advance(6)
    assert worker.run_until_idle() == 0  # the whole channel waits, not just that row
    clock.advance(1)
    assert worker.run_until_idle() == 1
    clock.advance(1)
    assert worker.run_until_idle() == 1
    assert len(posts(slack, "C0WAAUDIT")) == 3  # the refused one, then both
    assert [r.status for r in rows(db)] == ["done", "done"]


def test_a_failing_post_is_retried_with_growing_waits_then_given_up(
    db: Database, clock: ManualClock, slack: FakeSlack, worker: OutboxWorker
) -> None:
    slack.scripted["chat.postMessage"] = [{"ok": False, "error": "internal_error"}] * MAX_ATTEMPTS
    queue(db, clock, changed(1))
    for attempt in range(1, MAX_ATTEMPTS):
        assert worker.run_until_idle() == 1
        [row] = rows(db)
        assert (row.status, row.attempt) == ("queued", attempt)
        assert worker.run_until_idle() == 0  # not before its wait is over
        clock.advance(row.next_try_at.timestamp() - clock())
    assert worker.run_until_idle() == 1
    [row] = rows(db)
    assert row.status == "given_up" and row.attempt == MAX_ATTEMPTS
    assert row.last_error == f"Slack said internal_error (after {MAX_ATTEMPTS} attempts)"
    assert len(posts(slack)) == MAX_ATTEMPTS


def test_retry_waits_double_with_jitter_up_to_a_ceiling() -> None:
    from rbac_core.store.leases import FIRST_RETRY, LONGEST_WAIT, retry_delay

    for attempt in range(1, 12):
        ceiling = min(FIRST_RETRY * 2 ** (attempt - 1), LONGEST_WAIT)
        waits = {retry_delay(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(waits) > 1  # jittered: workers that failed together spread out


@pytest.mark.parametrize(
    ("scripted", "reason"),
    [
        ({"ok": False, "error": "channel_not_found"}, "Slack refused it: channel_not_found"),
        ({"ok": False, "error": "is_archived"}, "Slack refused it: is_archived"),
    ],
)
def test_a_post_slack_refuses_for_good_is_given_up_at_once(
    db: Database,
    clock: ManualClock,
    slack: FakeSlack,
    worker: OutboxWorker,
    scripted: dict[str, Any],
    reason: str,
) -> None:
    slack.scripted["chat.postMessage"] = [scripted]
    queue(db, clock, changed(1))
    assert worker.run_until_idle() == 1
    [row] = rows(db)
    assert (row.status, row.attempt, row.last_error) == ("given_up", 1, reason)


def test_a_notice_for_a_channel_nobody_configured_is_given_up_with_the_setting_named(
    db: Database, clock: ManualClock, slack: FakeSlack, outbox: Outbox, settings: Settings
) -> None:
    from dataclasses import replace

    worker = build_worker(replace(settings, audit_channel=None), outbox)
    queue(db, clock, changed(1))
    worker.run_until_idle()
    [row] = rows(db)
    assert (row.status, row.last_error) == ("given_up", "WA_AUDIT_CHANNEL is not set")
    assert posts(slack) == []


def test_a_notice_of_an_unknown_kind_waits_for_a_newer_worker_and_a_malformed_one_is_given_up(
    db: Database, clock: ManualClock, slack: FakeSlack, worker: OutboxWorker
) -> None:
    """In a rolling deploy an older worker may meet a newer kind: a newer worker may yet
    render it. Data its own kind cannot show will never be shown."""
    queue(db, clock, Notice("from.the.future", AUDIT_CHANNEL, {}))
    queue(db, clock, Notice("role.changed", person(BOB), {"verb": "assigned"}))
    worker.run_until_idle()
    assert [(r.status, r.attempt, r.last_error) for r in rows(db)] == [
        ("queued", 1, "no Slack message for notices of kind 'from.the.future'"),
        ("given_up", 1, "a role.changed notice without 'actor'"),
    ]
    assert posts(slack) == []


def test_an_unreachable_slack_is_retried(
    db: Database, clock: ManualClock, outbox: Outbox, settings: Settings
) -> None:
    import socket
    from dataclasses import replace

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    worker = build_worker(replace(settings, slack_api_url=f"http://127.0.0.1:{port}/api/"), outbox)
    queue(db, clock, changed(1))
    worker.run_until_idle()
    [row] = rows(db)
    assert row.status == "queued" and row.attempt == 1
    assert row.last_error is not None and row.last_error.startswith("Slack unreachable")


# -- leases ---------------------------------------------------------------------------


def test_a_row_held_by_a_worker_that_stopped_is_taken_over_once_its_lease_lapses(
    db: Database, clock: ManualClock, outbox: Outbox
) -> None:
    queue(db, clock, changed(1))
    [held] = outbox.claim("dead-worker")
    assert outbox.claim("live-worker") == []
    clock.advance(outbox.lease.total_seconds() - 1)
    assert outbox.claim("live-worker") == []  # the lease still stands
    clock.advance(2)
    [taken] = outbox.claim("live-worker")
    assert (taken.id, taken.attempt) == (held.id, 2)
    assert outbox.done(held) is False  # the first worker woke up late: fenced off
    assert outbox.done(taken) is True
    [row] = rows(db)
    assert (row.status, row.owner, row.attempt) == ("done", "live-worker", 2)


def test_a_row_whose_workers_keep_dying_is_given_up(
    db: Database, clock: ManualClock, outbox: Outbox
) -> None:
    queue(db, clock, changed(1))
    for attempt in range(1, MAX_ATTEMPTS + 1):
        [held] = outbox.claim(f"doomed-{attempt}")
        assert held.attempt == attempt
        clock.advance(outbox.lease.total_seconds() + 2)
    assert outbox.claim("survivor") == []
    [row] = rows(db)
    assert row.status == "given_up"
    assert row.last_error == f"its worker stopped during each of {MAX_ATTEMPTS} attempts"


def test_the_outbox_counts_rows_by_status(
    db: Database, clock: ManualClock, outbox: Outbox, worker: OutboxWorker
) -> None:
    queue(db, clock, changed(1), changed(2))
    worker.run_until_idle()
    assert outbox.counts() == {"done": 1, "queued": 1}
    assert json.loads(rows(db)[1].data)["user"] == "U0PERSON02"


def test_deliveries_and_their_outcomes_are_signalled_for_metrics(
    db: Database, clock: ManualClock, slack: FakeSlack, worker: OutboxWorker
) -> None:
    from rbac_core import signals

    seen: list[tuple[str, str]] = []

    def listen(kind: str, result: str) -> None:
        seen.append((kind, result))

    signals.outbox_delivered.connect(listen)
    try:
        slack.scripted["chat.postMessage"] = [{"ok": False, "error": "channel_not_found"}]
        queue(db, clock, changed(1), Notice("expired", person(BOB), {"text": "gone"}))
        worker.run_until_idle()
    finally:
        signals.outbox_delivered.disconnect(listen)
    assert sorted(seen) == [("expired", "done"), ("role.changed", "given_up")]


def test_a_slack_deliverer_needs_a_token(settings: Settings, outbox: Outbox, db: Database) -> None:
    from dataclasses import replace

    from rbac_core.outbox import Undeliverable

    deliver = slack_deliverer(replace(settings, slack_bot_token=None))
    queue(db, outbox.clock, changed(1))  # type: ignore[arg-type]
    [delivery] = outbox.claim("w")
    with pytest.raises(Undeliverable, match="SLACK_BOT_TOKEN is not set"):
        deliver(delivery)


def test_a_row_given_back_for_later_is_not_taken_before_its_time(
    db: Database, clock: ManualClock, outbox: Outbox
) -> None:
    from rbac_core.outbox import TryLater

    queue(db, clock, changed(1))
    [held] = outbox.claim("w")
    assert outbox.retry(held, TryLater("busy", after=timedelta(seconds=3)))
    assert outbox.retry(held, TryLater("again")) is False  # given back already: not its own
    clock.advance(2.9)
    assert outbox.claim("w") == []
    clock.advance(0.2)
    [again] = outbox.claim("w")
    assert (again.id, again.attempt) == (held.id, 1)


# -- `wa-access worker` ---------------------------------------------------------------


@pytest.fixture
def own_logging() -> Iterator[None]:
    """`wa-access worker` configures the root logger for its process: run in process,
    that handler would outlive the test and write to its closed, captured stderr."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


@pytest.mark.usefixtures("own_logging")
def test_wa_access_worker_once_delivers_what_is_due_and_exits(
    cli: Cli, gate: Gate, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok
    assert run(gate, ADMIN, "role.assign", user=BOB, role="agent").ok  # same channel: paced
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-0000-test")
    monkeypatch.setenv("SLACK_API_URL", slack.url)
    monkeypatch.setenv("WA_AUDIT_CHANNEL", "C0WAAUDIT")
    code, out, err = cli("worker", "--once")
    assert (code, out, err) == (
        0,
        "processed 0 webhook bodies\ndelivered or settled 2 outbox rows\n"
        "WhatsApp messages: not sent (WHATSAPP_ACCESS_TOKEN is not set)\n",
        "",
    )
    first, second = posts(slack, "C0WAAUDIT")
    assert first["text"].startswith(f"<@{ADMIN}> assigned *agent* to <@{ALICE}>")
    assert second["text"].startswith(f"<@{ADMIN}> assigned *agent* to <@{BOB}>")


def test_wa_access_worker_needs_the_bot_token(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    code, _, err = cli("worker", "--once")
    assert code == 2 and "SLACK_BOT_TOKEN" in err


# -- what the independent review found --------------------------------------------------


def test_rows_behind_a_rate_limited_channel_do_not_hold_back_other_destinations(
    db: Database, clock: ManualClock, slack: FakeSlack, worker: OutboxWorker
) -> None:
    slack.scripted["chat.postMessage"] = [
        {"_status": 429, "_headers": {"Retry-After": "900"}, "ok": False, "error": "ratelimited"}
    ]
    queue(db, clock, *[changed(n) for n in range(45)])
    queue(db, clock, Notice("expired", person(BOB), {"text": "your grant expired"}))
    worker.run_until_idle()
    assert [p["channel"] for p in posts(slack)] == ["C0WAAUDIT", BOB]  # the 429, then Bob


def test_a_row_whose_data_is_not_json_is_given_up_alone(
    db: Database, clock: ManualClock, slack: FakeSlack, worker: OutboxWorker
) -> None:
    from sqlalchemy import update

    queue(db, clock, changed(1), Notice("expired", person(BOB), {"text": "gone"}))
    with db.write() as session:
        session.execute(update(OutboxMessage).where(OutboxMessage.id == 1).values(data="{not"))
    assert worker.run_until_idle() == 1
    assert [(r.status, r.last_error) for r in rows(db)] == [
        ("given_up", "its data is not a JSON object"),
        ("done", None),
    ]
    assert [p["channel"] for p in posts(slack)] == [BOB]


def test_a_destination_is_held_while_a_post_to_it_is_in_flight_and_paced_from_its_end(
    db: Database, clock: ManualClock, outbox: Outbox
) -> None:
    queue(db, clock, changed(1), changed(2))
    [first] = outbox.claim("w1")
    clock.advance(5)  # a slow post: still in flight
    assert outbox.claim("w2") == []
    assert outbox.done(first)
    clock.advance(0.9)
    assert outbox.claim("w2") == []
    clock.advance(0.2)
    [second] = outbox.claim("w2")
    assert second.data["user"] == "U0PERSON02"


def test_a_post_whose_connection_was_reset_is_not_sent_again_by_the_client(
    db: Database, clock: ManualClock, slack: FakeSlack, worker: OutboxWorker
) -> None:
    """Slack may have taken a post whose answer was lost: only the outbox retries it,
    after a wait, never the HTTP client at once."""
    slack.drop.add("chat.postMessage")
    queue(db, clock, changed(1))
    worker.run_until_idle()
    assert len(posts(slack)) == 1
    [row] = rows(db)
    assert row.status == "queued" and row.last_error == "Slack unreachable (RemoteDisconnected)"


def test_a_row_near_the_end_of_its_lease_is_renewed_before_it_is_posted(
    db: Database, clock: ManualClock, slack: FakeSlack, outbox: Outbox, settings: Settings
) -> None:
    worker = build_worker(settings, outbox, owner="slow")
    queue(db, clock, changed(1), changed(2))
    [held] = outbox.claim("slow")
    clock.advance(outbox.lease.total_seconds() - 5)
    worker._deliver(held)  # renewed first, so nobody else may take it meanwhile
    [row, _] = rows(db)
    assert (row.status, row.owner, row.attempt) == ("done", "slow", 1)
    assert len(posts(slack)) == 1


def test_a_row_lost_before_its_post_is_not_posted(
    db: Database, clock: ManualClock, slack: FakeSlack, outbox: Outbox, settings: Settings
) -> None:
    worker = build_worker(settings, outbox, owner="stalled")
    queue(db, clock, changed(1))
    [held] = outbox.claim("stalled")
    clock.advance(outbox.lease.total_seconds() + 1)
    [taken] = outbox.claim("other")
    worker._deliver(held)
    assert posts(slack) == []
    assert outbox.done(taken)


def test_a_failure_to_record_one_delivery_does_not_stop_the_rest_of_the_batch(
    db: Database, clock: ManualClock, slack: FakeSlack, settings: Settings
) -> None:
    from sqlalchemy.exc import OperationalError

    class Flaky(Outbox):
        failures = 1

        def done(self, delivery: Any) -> bool:
            if self.failures:
                self.failures -= 1
                raise OperationalError("UPDATE outbox", {}, Exception("server closed"))
            return super().done(delivery)

    worker = build_worker(settings, Flaky(db, clock), owner="w")
    queue(db, clock, *[Notice("expired", person(f"U0P{n:06d}"), {"text": "t"}) for n in range(3)])
    assert worker.run_once() == 3
    assert len(posts(slack)) == 3
    assert [r.status for r in rows(db)] == ["running", "done", "done"]


def test_a_request_the_approvers_never_saw_is_told_to_its_requester(
    gate: Gate, db: Database, slack: FakeSlack, worker: OutboxWorker, clock: ManualClock
) -> None:
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="support").ok
    asked = gate.submit(
        ALICE, "slack", "access.request", {"role": "agent", "for": "4h", "reason": "nights"}
    )
    assert asked.status == "done"
    slack.scripted["chat.postMessage"] = [{"ok": True}, {"ok": False, "error": "not_in_channel"}]
    worker.run_until_idle()
    clock.advance(1)
    worker.run_until_idle()
    [told] = posts(slack, ALICE)
    assert "could not tell the approvers (Slack refused it: not_in_channel)" in told["text"]
