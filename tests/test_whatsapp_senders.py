"""WhatsApp senders as processes: several share the queue with no message sent twice, and
one killed with SIGKILL mid-send loses nothing (its rows go once its lease lapses)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.demo.fake_graph import FakeGraph
from rbac_core import Database, Gate, build_gate
from rbac_core.directory import register_number
from rbac_core.store.models import ConversationMessage, OutboxMessage

from .conftest import ADMIN
from .helpers import wait_for
from .whatsapp_requests import PHONE_NUMBER_ID

REPO = Path(__file__).resolve().parent.parent
TOKEN = "graph-token-for-senders"
BUSINESS = "+15550001111"

pytestmark = pytest.mark.slow


@pytest.fixture
def graph() -> Iterator[FakeGraph]:
    fake = FakeGraph(token=TOKEN).start()
    yield fake
    fake.stop()


@pytest.fixture
def queued(db_url: str, team: dict[str, str]) -> int:
    """120 templates queued by the admin, each to a customer of their own (real clock)."""
    gate: Gate = build_gate(Database(db_url))
    with gate.db.write() as session:
        register_number(session, BUSINESS, PHONE_NUMBER_ID)
    for n in range(120):
        params = {"to": f"+1415555{n:04d}", "from": BUSINESS, "template": "welcome"}
        assert gate.submit(ADMIN, "slack", "whatsapp.send", params).status == "done"
    gate.db.dispose()
    return 120


def sender_process(
    db_url: str, graph: FakeGraph, owner: str, *, go_at: float = 0.0, lease: float = 60.0
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "tests.whatsapp_sender", "--db", db_url),
            *("--graph", graph.url, "--token", TOKEN, "--owner", owner),
            *("--go-at", str(go_at), "--lease", str(lease)),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def callbacks(graph: FakeGraph) -> Counter[str]:
    return Counter(str(c.body.get("biz_opaque_callback_data")) for c in graph.sent())


def unsent(db: Database) -> list[tuple[int, str, int, str | None]]:
    """Rows not done, with why: what a failure of these tests needs to say."""
    with db.read() as session:
        rows = session.execute(
            select(
                OutboxMessage.id,
                OutboxMessage.status,
                OutboxMessage.attempt,
                OutboxMessage.last_error,
            ).where(OutboxMessage.kind == "whatsapp.send", OutboxMessage.status != "done")
        ).all()
    return [(int(i), str(s), int(a), e) for i, s, a, e in rows]


def states(db: Database) -> tuple[Counter[str], Counter[str]]:
    with db.read() as session:
        rows = Counter(
            session.scalars(
                select(OutboxMessage.status).where(OutboxMessage.kind == "whatsapp.send")
            )
        )
        messages = Counter(
            str(s)
            for s in session.scalars(
                select(ConversationMessage.status).where(ConversationMessage.direction == "out")
            )
        )
    return Counter({str(k): v for k, v in rows.items()}), messages


def test_three_senders_send_every_message_exactly_once(
    db: Database, db_url: str, graph: FakeGraph, queued: int
) -> None:
    graph.latency = 0.02
    go_at = time.time() + 2.0
    procs = [sender_process(db_url, graph, f"sender-{i}", go_at=go_at) for i in range(3)]
    for proc in procs:
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, output.decode()[-3000:]
    sent = callbacks(graph)
    assert len(sent) == queued and set(sent.values()) == {1}, unsent(db)  # no duplicates
    assert states(db) == (Counter({"done": queued}), Counter({"sent": queued}))


def test_a_sender_killed_mid_send_loses_nothing(
    db: Database, db_url: str, graph: FakeGraph, queued: int
) -> None:
    graph.latency = 1.0  # every send is still in flight when the kill comes
    doomed = sender_process(db_url, graph, "doomed", lease=3.0)
    wait_for(lambda: len(graph.calls) >= 4, what="sends in flight")
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait()
    graph.latency = 0.0
    heir = sender_process(db_url, graph, "heir", lease=3.0)
    output, _ = heir.communicate(timeout=120)
    assert heir.returncode == 0, output.decode()[-3000:]
    rows, messages = states(db)
    assert rows == Counter({"done": queued}) and messages == Counter({"sent": queued})
    sent = callbacks(graph)
    assert len(sent) == queued  # every message reached Meta; those in flight may twice
    assert sum(sent.values()) - queued <= 8  # at most the doomed sender's batch
