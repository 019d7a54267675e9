"""Through `wa-access serve`: Meta's webhooks stored before the 200, processed by serve's own
workers, and nothing that got a 200 lost when serve is killed with SIGKILL mid-stream.

SPEC §4 rule 11: an accepted inbound event is durably stored before the 200.
The body is kept by the request itself; processing happens later, in the
intake worker of whichever gunicorn worker takes it, under a lease that a
restarted serve takes over once it lapses.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.demo.fake_slack import FakeSlack
from rbac_core import Database
from rbac_core.directory import register_number
from rbac_core.store.models import AuditEntry, ConversationMessage, InboundWebhook

from .helpers import wait_for
from .test_http import serve, slack_env
from .whatsapp_requests import (
    APP_SECRET,
    PHONE_NUMBER_ID,
    VERIFY_TOKEN,
    as_meta_sends,
    inbound,
    messages_change,
    notification,
    signed,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    yield fake
    fake.stop()


@pytest.fixture
def env(db_url: str, slack: FakeSlack) -> dict[str, str]:
    db = Database(db_url)
    with db.write() as session:
        register_number(session, "+15550001111", PHONE_NUMBER_ID)
    db.dispose()
    return {
        **slack_env(db_url, slack),
        "WHATSAPP_APP_SECRET": APP_SECRET,
        "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
    }


def body(i: int) -> bytes:
    """Body i carries message i and, again, message i-1: Meta's duplicates across bodies."""
    now = int(time.time())
    messages = [
        inbound("text", {"body": f"message {k}"}, f"wamid.K{k}", timestamp=now)
        for k in (i, i - 1)
        if k >= 0
    ]
    return as_meta_sends(notification(messages_change(messages=messages)))


def state(db: Database) -> tuple[dict[str, int], set[str], int]:
    """(bodies by status, wamids kept, messages counted by audited processing)."""
    with db.read() as session:
        bodies = dict(
            session.execute(
                select(InboundWebhook.status, func.count()).group_by(InboundWebhook.status)
            ).all()
        )
        wamids = set(session.scalars(select(ConversationMessage.wamid)))
        counted = 0
        for details in session.scalars(
            select(AuditEntry.details).where(
                AuditEntry.action == "whatsapp.ingest", AuditEntry.outcome == "done"
            )
        ):
            counted += json.loads(details)["counts"].get("messages", 0)
    return {str(k): int(v) for k, v in bodies.items()}, {str(w) for w in wamids}, counted


def test_a_signed_message_is_processed_by_serves_own_worker(
    env: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    db = Database(db_url)
    with serve(tmp_path, env, workers=2) as server:
        payload = body(0)
        status, _, answer = server.request("POST", "/whatsapp/webhook", payload, signed(payload))
        assert (status, json.loads(answer)) == (200, {"status": "received"})
        wait_for(lambda: state(db)[1] == {"wamid.K0"}, what="the message to be processed")
    assert state(db) == ({"done": 1}, {"wamid.K0"}, 1)
    db.dispose()


def test_every_event_that_got_a_200_survives_kill_9_and_is_processed_once(
    env: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    db = Database(db_url)
    acked: list[int] = []
    lock = threading.Lock()
    bodies = 120

    with serve(tmp_path, env, workers=2) as server:

        def pour(start: int) -> None:
            for i in range(start, bodies, 4):
                payload = body(i)
                try:
                    status, _, _ = server.request(
                        "POST", "/whatsapp/webhook", payload, signed(payload)
                    )
                except (OSError, http.client.HTTPException):
                    continue  # serve was killed mid-request: no 200, Meta would retry
                if status == 200:
                    with lock:
                        acked.append(i)

        senders = [threading.Thread(target=pour, args=(k,)) for k in range(4)]
        for t in senders:
            t.start()
        wait_for(lambda: len(acked) >= bodies // 3, what="a third of the bodies acknowledged")
        os.killpg(server.proc.pid, signal.SIGKILL)  # master and workers, mid-stream
        for t in senders:
            t.join(60)
    assert 0 < len(acked) < bodies

    with serve(tmp_path, env, workers=2):
        # Rows the killed workers held come back once their lease lapses.
        wait_for(lambda: set(state(db)[0]) == {"done"}, timeout=90, what="every body processed")
    bodies_by_status, wamids, counted = state(db)
    assert set(bodies_by_status) == {"done"}
    expected = {f"wamid.K{k}" for i in acked for k in (i, i - 1) if k >= 0}
    assert expected <= wamids  # nothing acknowledged was lost
    assert counted == len(wamids)  # and each message was processed once
    db.dispose()
