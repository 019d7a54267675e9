"""`/wa-audit` from Slack: acknowledged at once, answered through the response_url."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text

from bot.app import create_app
from bot.config import Settings
from bot.demo.fake_slack import FakeSlack
from bot.runtime import build_runtime
from rbac_core import Database, Gate, ManualClock

from .conftest import ADMIN, ALICE, BOB
from .helpers import audit_count, run
from .slack_requests import SIGNING_SECRET, block_action, signed_headers, slash_command


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    yield fake
    fake.stop()


@pytest.fixture
def app(db_url: str, slack: FakeSlack, team: dict[str, str], clock: ManualClock) -> FlaskClient:
    settings = Settings(
        database_url=db_url,
        slack_signing_secret=SIGNING_SECRET,
        slack_bot_token="xoxb-0000-test",
        slack_api_url=slack.url,
        audit_channel="C0WAAUDIT",
    )
    return create_app(build_runtime(settings, clock=clock)).test_client()


@pytest.fixture
def staffed(gate: Gate, team: dict[str, str]) -> None:
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok
    assert run(gate, ADMIN, "role.assign", user=BOB, role="analyst").ok


def post(app: FlaskClient, body: str) -> dict[str, Any]:
    response = app.post("/slack/events", data=body, headers=signed_headers(body))
    assert response.status_code == 200
    return json.loads(response.data) if response.data else {}


def audit(app: FlaskClient, slack: FakeSlack, user: str, line: str) -> tuple[dict[str, Any], Any]:
    """The acknowledgement, then the answer the lazy listener sends (None if none comes)."""
    before = len(slack.responses())
    ack = post(app, slash_command(user, line, slack.response_url("audit"), command="/wa-audit"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if len(slack.responses()) > before:
            return ack, slack.responses()[before]
        if ack.get("text", "").startswith("Working on it") is False:
            return ack, None
        time.sleep(0.02)
    return ack, None


@pytest.mark.usefixtures("staffed")
def test_log_lists_entries_newest_first_and_filters_by_person_and_action(
    app: FlaskClient, slack: FakeSlack
) -> None:
    ack, answer = audit(app, slack, ADMIN, "log")
    assert ack["text"].startswith("Working on it")
    lines = answer["text"].splitlines()
    assert f"*role.assign* user:<@{BOB}>" in lines[0]  # the newest: bob's grant
    seqs = [int(line.split("`#")[1].split("`")[0]) for line in lines if line.startswith("`#")]
    assert seqs == sorted(seqs, reverse=True)
    _, about = audit(app, slack, ADMIN, f"log <@{ALICE}|alice> --action role.assign")
    assert all(f"user:<@{ALICE}>" in line for line in about["text"].splitlines())
    assert "— allow/done" in about["text"]


@pytest.mark.usefixtures("staffed")
def test_a_command_that_says_payload_is_answered_by_the_lazy_listener_too(
    app: FlaskClient, slack: FakeSlack
) -> None:
    """Bolt re-parses the body for a lazy listener, and its parser took any body
    holding that word for an empty interactivity payload."""
    ack, answer = audit(app, slack, ADMIN, "log --action payload")
    assert ack["text"].startswith("Working on it")
    assert answer is not None and answer["response_type"] == "ephemeral"


@pytest.mark.usefixtures("staffed")
def test_a_long_log_is_paged_with_an_older_entries_button(
    app: FlaskClient, slack: FakeSlack, gate: Gate
) -> None:
    for _ in range(25):
        gate.submit(BOB, "slack", "role.show", {})
    _, first = audit(app, slack, ADMIN, f"log <@{BOB}> --since 7d")
    assert len([line for line in first["text"].splitlines() if line.startswith("`#")]) == 20
    button = first["blocks"][-1]["elements"][0]
    assert button["text"]["text"] == "Older entries"
    before = len(slack.responses())
    body = block_action(ADMIN, button["action_id"], button["value"], slack.response_url("audit"))
    post(app, body)
    older = slack.responses()[before]
    assert older["replace_original"] is True
    shown = [line for line in older["text"].splitlines() if line.startswith("`#")]
    assert 0 < len(shown) <= 20
    last_first = int(first["text"].splitlines()[19].split("`#")[1].split("`")[0])
    assert int(shown[0].split("`#")[1].split("`")[0]) < last_first


@pytest.mark.usefixtures("staffed")
def test_verify_says_intact_and_then_names_the_first_tampered_entry(
    app: FlaskClient, slack: FakeSlack, db: Database
) -> None:
    _, answer = audit(app, slack, ADMIN, "verify")
    assert answer["text"].startswith("The audit log is intact:")
    with db.write() as session:
        session.execute(text("UPDATE audit_log SET actor = 'U0MALLORY' WHERE seq = 2"))
    _, answer = audit(app, slack, ADMIN, "verify")
    assert "TAMPERED" in answer["text"] and "#2" in answer["text"]


@pytest.mark.usefixtures("staffed")
def test_export_sends_the_whole_log_as_csv_by_dm(
    app: FlaskClient, slack: FakeSlack, db: Database
) -> None:
    _, answer = audit(app, slack, ADMIN, "export")
    assert answer["text"].startswith("Sent you the audit log by DM as CSV")
    [upload] = [c for c in slack.calls if c.method.startswith("upload/")]
    rows = list(csv.reader(io.StringIO(upload.body["content"].decode())))
    assert rows[0][:3] == ["seq", "time", "actor"]
    assert len(rows) - 1 == audit_count(db)  # every entry, the export's own included
    [complete] = slack.named("files.completeUploadExternal")
    assert complete.body["channel_id"] == "D" + ADMIN[1:]


@pytest.mark.usefixtures("staffed")
def test_inactive_shows_the_review_with_its_buttons_to_the_asker(
    app: FlaskClient, slack: FakeSlack
) -> None:
    _, answer = audit(app, slack, ADMIN, "inactive --days 30")
    assert answer["response_type"] == "ephemeral"
    assert answer["blocks"][0]["text"]["text"].startswith("Access review #")
    assert "(on demand)" in answer["blocks"][0]["text"]["text"]
    assert "1 holding a 2FA role without 2FA" in answer["blocks"][1]["text"]["text"]
    assert slack.named("users.list"), "Slack's deactivations are checked"


@pytest.mark.usefixtures("staffed")
@pytest.mark.parametrize(
    ("user", "line", "expected", "audited"),
    [
        (ALICE, "log", "You are not allowed to read the audit log: you need audit:view", 1),
        (ALICE, "export", "You are not allowed to export the audit log: you need audit:export", 1),
        (BOB, "inactive", "You are not allowed to run the access review", 1),
        (ADMIN, "log --since forever", "'forever' is not a duration", 1),
        (ADMIN, "inactive --days lots", "--days takes a whole number of days", 1),
        # Refused by the grammar before any gate call: nothing to audit.
        (ADMIN, "log <@U0BAD|x> <@U0BAD2>", "Usage: /wa-audit log", 0),
        (ADMIN, "frobnicate", "unknown subcommand 'frobnicate' for /wa-audit", 0),
    ],
)
def test_refusals_and_bad_input_get_a_specific_answer(
    app: FlaskClient,
    slack: FakeSlack,
    db: Database,
    user: str,
    line: str,
    expected: str,
    audited: int,
) -> None:
    entries = audit_count(db)
    ack, answer = audit(app, slack, user, line)
    said = answer["text"] if answer else ack["text"]
    assert expected in said
    assert audit_count(db) == entries + audited  # the refusal, and nothing else


@pytest.mark.usefixtures("staffed")
def test_help_hides_what_the_caller_may_not_do(app: FlaskClient, slack: FakeSlack) -> None:
    ack, answer = audit(app, slack, ALICE, "help")
    assert answer is None
    assert "/wa-audit log" not in ack["text"] and "/wa-audit help" in ack["text"]
    admin_ack, _ = audit(app, slack, ADMIN, "help")
    for sub in ("inactive", "log", "verify", "export"):
        assert f"/wa-audit {sub}" in admin_ack["text"]


@pytest.mark.parametrize("before", ["9223372036854775808", str(10**30), "-1", "1.5", "true"])
def test_an_out_of_range_page_button_is_refused_clearly_and_audited(
    app: FlaskClient, slack: FakeSlack, db: Database, before: str
) -> None:
    """Bounded before any query: PostgreSQL's bigint overflow used to abort the transaction
    and take the refusal's audit entry with it."""
    value = '{"before": ' + before + "}"
    seen = len(slack.responses())
    post(app, block_action(ADMIN, "wa_audit_log_older", value, slack.response_url("audit")))
    [answer] = slack.responses()[seen:]
    assert "that page of the log does not exist" in answer["text"]
    with db.read() as session:
        last = session.execute(
            text("SELECT action, decision, outcome FROM audit_log ORDER BY seq DESC LIMIT 1")
        ).one()
    assert tuple(last) == ("audit.log", "deny", "invalid")
