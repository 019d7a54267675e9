"""The weekly access review: what it finds, how it is posted, and what its buttons do.

The clock is injected: tests move it to a Monday morning instead of waiting for
one. Slack is the fake Web API; clicks are signed `block_actions` posts.
"""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from bot.app import create_app
from bot.config import Settings
from bot.demo.fake_slack import FakeSlack
from bot.runtime import Runtime, build_runtime
from bot.scheduler import REVIEW_JOB, Scheduler, build_scheduler
from bot.slack.app import slack_client
from rbac_core import Database, Gate, ManualClock
from rbac_core.directory import ensure_user
from rbac_core.store.models import AccessReview, Grant, JobRun, ReviewFinding

from .conftest import ADMIN, ALICE, BOB, CAROL
from .helpers import audit_rows, deliver_notices, live_grants, notices, run
from .slack_requests import SIGNING_SECRET, block_action, signed_headers

AUDIT = "C0WAAUDIT"
# 40 days after the team got its grants: Monday 28 December 2026, 09:00 in Paris.
MONDAY = datetime(2026, 12, 28, 8, 0, 30, tzinfo=UTC)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    for user, name in ((ADMIN, "admin"), (ALICE, "alice"), (BOB, "bob")):
        fake.add_user(user, name)
    fake.add_user(CAROL, "carol", deleted=True)  # left the company; Slack deactivated her
    yield fake
    fake.stop()


@pytest.fixture
def settings(db_url: str, slack: FakeSlack) -> Settings:
    return Settings(
        database_url=db_url,
        slack_signing_secret=SIGNING_SECRET,
        slack_bot_token="xoxb-0000-test",
        slack_api_url=slack.url,
        audit_channel=AUDIT,
        timezone="Europe/Paris",
        secret_key="s" * 40,
    )


@pytest.fixture
def runtime(settings: Settings, clock: ManualClock) -> Iterator[Runtime]:
    built = build_runtime(settings, clock=clock)
    yield built
    built.db.dispose()


@pytest.fixture
def scheduler(runtime: Runtime, settings: Settings) -> Scheduler:
    return review_scheduler(runtime, settings, "test-scheduler")


def review_scheduler(runtime: Runtime, settings: Settings, owner: str) -> Scheduler:
    """The production scheduler with its review job alone: the hourly audit checkpoint
    (also due at these instants) has tests of its own in test_audit_checkpoint.py."""
    built = build_scheduler(runtime, slack_client(settings), owner=owner)
    built.periodic = [job for job in built.periodic if job.name == REVIEW_JOB]
    return built


@pytest.fixture
def gate(runtime: Runtime) -> Gate:
    """The runtime's gate: it holds WA_SECRET_KEY, so it may write to the keyed audit log."""
    return runtime.gate


@pytest.fixture
def app(runtime: Runtime) -> FlaskClient:
    return create_app(runtime).test_client()


@pytest.fixture
def workspace(team: dict[str, str], gate: Any, clock: ManualClock) -> dict[str, str]:
    """Four grants that each deserve a look on MONDAY, for a different reason.

    * the admin holds admin, which requires 2FA, and never enrolled;
    * alice has done nothing since she got agent 40 days ago;
    * carol is deactivated in Slack but still holds analyst;
    * bob is active, and his support grant runs out in 5 days.
    """
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").status == "done"
    assert run(gate, ADMIN, "role.assign", user=CAROL, role="analyst").status == "done"
    bob = run(gate, ADMIN, "role.assign", user=BOB, role="support", **{"for": "45d"})
    assert bob.status == "done"
    clock.now = (MONDAY - timedelta(days=1)).timestamp()
    assert gate.submit(BOB, "slack", "role.show", {}).status == "done"  # bob's activity
    clock.now = MONDAY.timestamp()
    return team


def reports(slack: FakeSlack) -> list[dict[str, Any]]:
    """The access reviews posted to the audit channel (not the hourly signed checkpoints)."""
    return [
        c.body
        for c in slack.named("chat.postMessage")
        if c.body.get("channel") == AUDIT and "wa-access-checkpoint" not in c.body.get("text", "")
    ]


def finding_rows(report: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(text, button labels) for each finding in a posted report."""
    blocks = report["blocks"]
    rows = []
    for i, block in enumerate(blocks):
        if block["type"] == "section" and block["text"]["text"].split(".")[0].strip("*").isdigit():
            after = blocks[i + 1] if i + 1 < len(blocks) else {}
            labels = (
                [e["text"]["text"] for e in after["elements"]]
                if after.get("type") == "actions"
                else []
            )
            rows.append((block["text"]["text"], labels))
    return rows


def findings(db: Database) -> dict[str, ReviewFinding]:
    with db.read() as session:
        return {f.user_id: f for f in session.scalars(select(ReviewFinding))}


def click(app: FlaskClient, slack: FakeSlack, user: str, action: str, value: str) -> list[Any]:
    before = len(slack.responses())
    body = block_action(user, action, value, slack.response_url("report"))
    response = app.post("/slack/events", data=body, headers=signed_headers(body))
    assert response.status_code == 200
    return slack.responses()[before:]


# -- what the review finds and posts -------------------------------------------------


def test_the_weekly_review_posts_one_row_per_finding_with_revoke_and_keep(
    workspace: dict[str, str], scheduler: Scheduler, slack: FakeSlack, db: Database
) -> None:
    ran = scheduler.tick()
    assert [(r.job, r.period, r.status) for r in ran] == [(REVIEW_JOB, "2026-12-28T08:00Z", "done")]
    [report] = reports(slack)
    assert report["blocks"][0]["text"]["text"].startswith("Weekly access review #")
    rows = finding_rows(report)
    assert len(rows) == 4
    text = "\n".join(t for t, _ in rows)
    assert f"<@{ADMIN}> · *admin*" in text and "requires 2FA" in text
    assert f"<@{ALICE}> · *agent*" in text and "no activity on record" in text
    assert f"<@{CAROL}> · *analyst*" in text and "deactivated" in text
    assert f"<@{BOB}> · *support*" in text and "expires 2027-01-02" in text
    assert all(labels[0] == "Revoke" for _, labels in rows)
    assert sorted(labels[1] for _, labels in rows) == [
        "Extend 30 days",
        "Keep 30 days",
        "Keep 30 days",
        "Keep 30 days",
    ]
    assert "1 holding a 2FA role without 2FA" in report["blocks"][1]["text"]["text"]
    assert not slack.named("files.completeUploadExternal")  # one page: no CSV needed
    with db.read() as session:
        review = session.scalars(select(AccessReview)).one()
        assert (review.status, review.channel, review.period) == (
            "posted",
            AUDIT,
            "2026-12-28T08:00Z",
        )


def test_active_people_with_lasting_grants_are_not_reported(
    workspace: dict[str, str], scheduler: Scheduler, db: Database
) -> None:
    scheduler.tick()
    assert set(findings(db)) == {ADMIN, ALICE, CAROL, BOB}
    assert findings(db)[BOB].kind == "expiring"  # bob is active: only his expiry shows


def test_a_review_runs_once_per_period_however_often_schedulers_look(
    workspace: dict[str, str],
    scheduler: Scheduler,
    runtime: Runtime,
    settings: Settings,
    slack: FakeSlack,
    clock: ManualClock,
) -> None:
    others = [review_scheduler(runtime, settings, f"replica-{i}") for i in range(2)]
    for minute in range(5):
        clock.now = MONDAY.timestamp() + 60 * minute
        for each in (scheduler, *others):
            each.tick()
    assert len(reports(slack)) == 1


def test_a_missed_review_runs_once_when_the_scheduler_comes_back_within_the_grace_time(
    workspace: dict[str, str], scheduler: Scheduler, slack: FakeSlack, clock: ManualClock
) -> None:
    clock.now = (MONDAY + timedelta(hours=5)).timestamp()  # down from 09:00 to 14:00
    ran = scheduler.tick()
    assert [r.period for r in ran] == ["2026-12-28T08:00Z"]
    clock.now += 60
    assert scheduler.tick() == []
    assert len(reports(slack)) == 1


def test_a_review_missed_beyond_the_grace_time_is_not_run_late(
    workspace: dict[str, str], scheduler: Scheduler, slack: FakeSlack, clock: ManualClock
) -> None:
    clock.now = (MONDAY + timedelta(hours=25)).timestamp()
    assert scheduler.tick() == []
    assert reports(slack) == []


def test_nothing_runs_before_the_hour(
    workspace: dict[str, str], scheduler: Scheduler, slack: FakeSlack, clock: ManualClock
) -> None:
    clock.now = (MONDAY - timedelta(minutes=2)).timestamp()  # 08:58 in Paris
    assert scheduler.tick() == []
    assert reports(slack) == []


def test_the_schedule_follows_the_configured_time_zone(
    workspace: dict[str, str], runtime: Runtime, settings: Settings, clock: ManualClock
) -> None:
    from dataclasses import replace

    tokyo = replace(settings, timezone="Asia/Tokyo")
    runtime = replace(runtime, settings=tokyo)
    scheduler = review_scheduler(runtime, tokyo, "tokyo")
    clock.now = datetime(2026, 12, 28, 0, 0, 30, tzinfo=UTC).timestamp()  # 09:00 in Tokyo
    assert [r.period for r in scheduler.tick()] == ["2026-12-28T00:00Z"]


def test_large_reports_are_paged_and_attached_whole_as_csv(
    workspace: dict[str, str],
    scheduler: Scheduler,
    slack: FakeSlack,
    db: Database,
    gate: Any,
    clock: ManualClock,
    app: FlaskClient,
) -> None:
    clock.now = (MONDAY - timedelta(days=40)).timestamp()
    with db.write() as session:
        for i in range(36):
            ensure_user(session, f"U0IDLE{i:04d}", datetime.fromtimestamp(clock.now, UTC))
    for i in range(36):
        assert run(gate, ADMIN, "role.assign", user=f"U0IDLE{i:04d}", role="agent").ok
    clock.now = MONDAY.timestamp()
    scheduler.tick()
    [report] = reports(slack)
    assert len(report["blocks"]) <= 50  # Slack's limit for one message
    assert "page 1 of 3" in report["blocks"][2]["elements"][0]["text"]
    assert "attached as CSV" in report["blocks"][2]["elements"][0]["text"]
    [upload] = [c for c in slack.calls if c.method.startswith("upload/")]
    rows = list(csv.reader(io.StringIO(upload.body["content"].decode())))
    assert rows[0][:3] == ["position", "finding", "user"]
    assert len(rows) == 1 + 40  # every finding, none cut off
    [complete] = slack.named("files.completeUploadExternal")
    assert complete.body["thread_ts"] == "1795000000.000001"

    nav = report["blocks"][-1]
    assert [e["text"]["text"] for e in nav["elements"]] == ["Next page"]
    [redrawn] = click(app, slack, ADMIN, "wa_review_page", nav["elements"][0]["value"])
    assert redrawn["replace_original"] is True
    assert "page 2 of 3" in json.dumps(redrawn["blocks"])
    first = finding_rows(redrawn)[0][0]
    assert first.startswith("*16.*")


# -- the buttons --------------------------------------------------------------------


def test_revoke_revokes_the_grant_audits_it_and_redraws_the_report(
    workspace: dict[str, str],
    scheduler: Scheduler,
    app: FlaskClient,
    slack: FakeSlack,
    db: Database,
) -> None:
    scheduler.tick()
    alice = findings(db)[ALICE]
    redrawn, told = click(app, slack, ADMIN, "wa_review_revoke", str(alice.id))
    assert live_grants(db, ALICE) == []
    assert redrawn["replace_original"] is True
    row = next(t for t, labels in finding_rows(redrawn) if f"<@{ALICE}>" in t)
    assert row  # still listed, now with who handled it and no buttons
    assert f"Revoked by <@{ADMIN}>" in json.dumps(redrawn["blocks"])
    assert told["response_type"] == "ephemeral" and "Revoked agent" in told["text"]
    entry = audit_rows(db)[-1]
    assert (entry.actor, entry.action, entry.decision, entry.outcome) == (
        ADMIN,
        "review.revoke",
        "allow",
        "done",
    )
    with db.read() as session:
        grant = session.get(Grant, alice.grant_id)
        assert (
            grant is not None
            and grant.revoke_reason == f"access review #{alice.review_id}: inactive"
        )


def test_a_second_click_on_a_handled_row_changes_nothing(
    workspace: dict[str, str],
    scheduler: Scheduler,
    app: FlaskClient,
    slack: FakeSlack,
    db: Database,
) -> None:
    scheduler.tick()
    carol = findings(db)[CAROL]
    click(app, slack, ADMIN, "wa_review_revoke", str(carol.id))
    entries = len(audit_rows(db))
    [answer] = click(app, slack, ADMIN, "wa_review_keep", str(carol.id))
    assert answer["response_type"] == "ephemeral" and answer["replace_original"] is False
    assert "Already handled: revoked by" in answer["text"]
    assert findings(db)[CAROL].status == "revoked"
    assert len(audit_rows(db)) == entries + 1  # the refusal is audited, nothing else


def test_revoke_by_someone_without_roles_assign_is_denied_and_changes_nothing(
    workspace: dict[str, str],
    scheduler: Scheduler,
    app: FlaskClient,
    slack: FakeSlack,
    db: Database,
) -> None:
    scheduler.tick()
    carol = findings(db)[CAROL]
    [answer] = click(app, slack, BOB, "wa_review_revoke", str(carol.id))
    assert "You are not allowed to revoke analyst" in answer["text"]
    assert "roles:assign" in answer["text"]
    assert live_grants(db, CAROL) == [(CAROL, "analyst", "*")]
    assert findings(db)[CAROL].status == "open"
    entry = audit_rows(db)[-1]
    assert (entry.actor, entry.action, entry.decision) == (BOB, "review.revoke", "deny")


def test_a_click_after_the_person_was_active_again_changes_nothing(
    workspace: dict[str, str],
    scheduler: Scheduler,
    app: FlaskClient,
    slack: FakeSlack,
    db: Database,
    gate: Any,
    clock: ManualClock,
) -> None:
    scheduler.tick()
    clock.now += 3600
    assert gate.submit(ALICE, "slack", "role.show", {}).status == "done"  # alice is back
    clock.now += 60
    alice = findings(db)[ALICE]
    [answer] = click(app, slack, ADMIN, "wa_review_revoke", str(alice.id))
    assert "has been active since this review" in answer["text"]
    assert live_grants(db, ALICE) == [(ALICE, "agent", "*")]
    assert findings(db)[ALICE].status == "open"


def test_keep_leaves_the_grant_out_of_the_next_reviews_for_30_days(
    workspace: dict[str, str],
    scheduler: Scheduler,
    app: FlaskClient,
    slack: FakeSlack,
    db: Database,
    clock: ManualClock,
) -> None:
    scheduler.tick()
    click(app, slack, ADMIN, "wa_review_keep", str(findings(db)[ALICE].id))
    assert live_grants(db, ALICE) == [(ALICE, "agent", "*")]
    clock.now = (MONDAY + timedelta(days=7)).timestamp()
    scheduler.tick()
    with db.read() as session:
        latest = max(session.scalars(select(AccessReview)), key=lambda r: r.id)
        kinds = {
            f.user_id
            for f in session.scalars(
                select(ReviewFinding).where(ReviewFinding.review_id == latest.id)
            )
        }
    assert ALICE not in kinds
    clock.now = (MONDAY + timedelta(days=35)).timestamp()
    scheduler.tick()
    assert findings(db)[ALICE].kind == "inactive"  # the keep ran out: she is back on the list


def test_extend_on_an_expiring_grant_moves_its_expiry_30_days(
    workspace: dict[str, str],
    scheduler: Scheduler,
    app: FlaskClient,
    slack: FakeSlack,
    db: Database,
) -> None:
    scheduler.tick()
    bob = findings(db)[BOB]
    with db.read() as session:
        before = session.get(Grant, bob.grant_id)
        assert before is not None and before.expires_at is not None
        was = before.expires_at
    click(app, slack, ADMIN, "wa_review_keep", str(bob.id))
    with db.read() as session:
        after = session.get(Grant, bob.grant_id)
        assert after is not None and after.expires_at == was + timedelta(days=30)


def test_nobody_keeps_their_own_access(
    workspace: dict[str, str],
    scheduler: Scheduler,
    app: FlaskClient,
    slack: FakeSlack,
    db: Database,
) -> None:
    scheduler.tick()
    [answer] = click(app, slack, ADMIN, "wa_review_keep", str(findings(db)[ADMIN].id))
    assert "You cannot keep your own access" in answer["text"]
    assert findings(db)[ADMIN].status == "open"


def test_a_malformed_button_value_gets_a_clear_answer(
    workspace: dict[str, str], scheduler: Scheduler, app: FlaskClient, slack: FakeSlack
) -> None:
    scheduler.tick()
    [answer] = click(app, slack, ADMIN, "wa_review_revoke", "not-a-number")
    assert answer["text"] == "that button names no finding"
    [missing] = click(app, slack, ADMIN, "wa_review_revoke", "999999")
    assert "no longer exists" in missing["text"]


def test_job_runs_record_each_period(
    workspace: dict[str, str], scheduler: Scheduler, db: Database
) -> None:
    scheduler.tick()
    with db.read() as session:
        [row] = session.scalars(select(JobRun))
        assert (row.job, row.status, row.attempt) == (REVIEW_JOB, "done", 1)
        assert row.summary and "4 findings for 4 people" in row.summary


# -- several replicas, and a replica that dies ---------------------------------------

REPO = Path(__file__).resolve().parent.parent


def replica(
    db_url: str, slack: FakeSlack, owner: str, periods: int, go_at: float
) -> subprocess.Popen[bytes]:
    """A scheduler replica in a process of its own (see tests/scheduler_worker.py)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.scheduler_worker",
            "--db",
            db_url,
            "--slack",
            slack.url,
            "--owner",
            owner,
            "--periods",
            str(periods),
            "--go-at",
            str(go_at),
            "--secret-key",
            "s" * 40,  # the workspace's, which keys its audit log
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.slow
def test_three_schedulers_over_ten_periods_post_exactly_ten_reports(
    workspace: dict[str, str], db_url: str, slack: FakeSlack, db: Database
) -> None:
    go_at = time.time() + 3.0  # all three are up by then, and race from the same instant
    procs = [replica(db_url, slack, f"replica-{i}", 10, go_at) for i in range(3)]
    for proc in procs:
        output, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, output.decode()[-3000:]
    posted = reports(slack)
    assert len(posted) == 10
    with db.read() as session:
        everything = list(session.scalars(select(JobRun).order_by(JobRun.period)))
        reviews = list(session.scalars(select(AccessReview)))
    runs = [r for r in everything if r.job == REVIEW_JOB]
    # The hourly checkpoint ran beside it (the workspace has WA_SECRET_KEY): each once, done.
    assert {r.status for r in everything if r.job != REVIEW_JOB} <= {"done"}
    assert len({r.owner for r in runs}) > 1  # the replicas really raced for the periods
    assert [r.status for r in runs] == ["done"] * 10
    assert len({r.period for r in runs}) == 10
    assert sorted(r.period or "" for r in reviews) == [r.period for r in runs]
    assert all(r.status == "posted" for r in reviews)
    # The expiry sweep ran on every replica; bob's notice was written once, and heard once.
    assert [to for _, to, _ in notices(db, "expired")] == [f"person:{BOB}"]
    later = ManualClock(datetime(2100, 1, 1, tzinfo=UTC).timestamp())
    worker = build_runtime(
        Settings(database_url=db_url, slack_bot_token="xoxb-0000-test", slack_api_url=slack.url),
        clock=later,
    )
    deliver_notices(worker)
    worker.db.dispose()
    expiry_dms = [
        c.body
        for c in slack.named("chat.postMessage")
        if c.body.get("channel") == BOB and "expired" in c.body.get("text", "")
    ]
    assert len(expiry_dms) == 1


@pytest.mark.slow
def test_a_run_killed_half_way_is_taken_over_once_its_claim_lapses(
    workspace: dict[str, str],
    db_url: str,
    slack: FakeSlack,
    db: Database,
    scheduler: Scheduler,
    clock: ManualClock,
) -> None:
    slack.hold.add("users.list")  # the first run hangs half way, on its call to Slack
    proc = replica(db_url, slack, "doomed", 1, 0.0)
    deadline = time.time() + 60
    while not slack.named("users.list") and time.time() < deadline:
        time.sleep(0.05)
    assert slack.named("users.list"), "the first run never reached Slack"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    slack.hold.clear()
    with db.read() as session:
        [claim] = session.scalars(select(JobRun))
        assert (claim.owner, claim.status, claim.attempt) == ("doomed", "running", 1)

    clock.now = (MONDAY + timedelta(minutes=5)).timestamp()
    assert scheduler.tick() == []  # its lease has not lapsed yet: nobody steps in
    clock.now = (MONDAY + timedelta(minutes=11)).timestamp()
    [ran] = scheduler.tick()
    assert (ran.status, ran.period) == ("done", "2026-12-28T08:00Z")
    assert len(reports(slack)) == 1
    with db.read() as session:
        [claim] = session.scalars(select(JobRun))
        assert (claim.owner, claim.status, claim.attempt) == ("test-scheduler", "done", 2)
        [review] = session.scalars(select(AccessReview))
        assert review.status == "posted"
        assert (
            len(
                list(
                    session.scalars(
                        select(ReviewFinding).where(ReviewFinding.review_id == review.id)
                    )
                )
            )
            == 4
        )


@pytest.mark.slow
def test_the_scheduler_process_posts_the_due_review_and_stops_on_sigterm(
    workspace: dict[str, str], db_url: str, slack: FakeSlack, db: Database
) -> None:
    """`wa-access scheduler` for real: APScheduler, the wall clock, a minutely schedule."""
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": db_url,
        "SLACK_BOT_TOKEN": "xoxb-0000-test",
        "SLACK_API_URL": slack.url,
        "WA_AUDIT_CHANNEL": AUDIT,
        "WA_AUDIT_SCHEDULE": "* * * * *",
        "WA_AUDIT_GRACE_HOURS": "1",
        "WA_SECRET_KEY": "s" * 40,  # the workspace's, which keys its audit log
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "scheduler"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not reports(slack) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert reports(slack), "no review was posted"
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output.decode()[-2000:]
    log = output.decode()
    assert "weekly_access_review for" in log and "done" in log
    assert "xoxb-0000-test" not in log  # the token never reaches the log


def test_the_admins_app_home_shows_the_latest_review_and_what_is_still_open(
    workspace: dict[str, str],
    scheduler: Scheduler,
    app: FlaskClient,
    slack: FakeSlack,
    db: Database,
) -> None:
    from .slack_requests import app_home_opened

    scheduler.tick()
    click(app, slack, ADMIN, "wa_review_revoke", str(findings(db)[CAROL].id))
    body = app_home_opened(ADMIN, event_id="Ev0HOMEREVIEW")
    headers = {**signed_headers(body), "Content-Type": "application/json"}
    assert app.post("/slack/events", data=body, headers=headers).status_code == 200
    view = json.dumps(slack.named("views.publish")[-1].body["view"])
    assert f"in <#{AUDIT}>: 4 grants to look at, 3 still open." in view


# -- findings that stop being true, or that several reports share ----------------------


def test_keeping_someone_inactive_does_not_hide_them_once_deactivated(
    workspace: dict[str, str],
    scheduler: Scheduler,
    app: FlaskClient,
    slack: FakeSlack,
    db: Database,
    clock: ManualClock,
) -> None:
    scheduler.tick()
    click(app, slack, ADMIN, "wa_review_keep", str(findings(db)[ALICE].id))
    slack.add_user(ALICE, "alice", deleted=True)  # she leaves the next day
    clock.now = (MONDAY + timedelta(days=7)).timestamp()
    scheduler.tick()
    assert findings_of_latest(db)[ALICE] == "deactivated"


def findings_of_latest(db: Database) -> dict[str, str]:
    with db.read() as session:
        latest = max(session.scalars(select(AccessReview)), key=lambda r: r.id)
        return {
            f.user_id: f.kind
            for f in session.scalars(
                select(ReviewFinding).where(ReviewFinding.review_id == latest.id)
            )
        }


def test_a_grant_in_two_reports_is_acted_on_once(
    workspace: dict[str, str],
    scheduler: Scheduler,
    app: FlaskClient,
    slack: FakeSlack,
    db: Database,
    gate: Any,
) -> None:
    scheduler.tick()
    older = findings(db)[BOB]
    newer = gate.submit("operator", "cli", "audit.review", {"days": 30})  # an on-demand one
    built = gate.submit("operator", "cli", "review.build", {"review": newer.data["review_id"]})
    assert built.status == "done", built.message
    with db.read() as session:
        both = list(session.scalars(select(ReviewFinding).where(ReviewFinding.user_id == BOB)))
    assert len(both) == 2 and {f.grant_id for f in both} == {older.grant_id}
    fresh = next(f for f in both if f.id != older.id)
    click(app, slack, ADMIN, "wa_review_keep", str(fresh.id))  # extends by 30 days
    [answer] = click(app, slack, ADMIN, "wa_review_keep", str(older.id))
    assert "Already handled: kept" in answer["text"]
    with db.read() as session:
        grant = session.get(Grant, older.grant_id)
        assert grant is not None and grant.expires_at == older.expires_at + timedelta(days=30)


def test_revoking_for_missing_2fa_is_refused_once_they_turned_it_on(
    workspace: dict[str, str],
    scheduler: Scheduler,
    app: FlaskClient,
    slack: FakeSlack,
    db: Database,
    clock: ManualClock,
) -> None:
    from .helpers import give_2fa

    scheduler.tick()
    give_2fa(db, ADMIN, datetime.fromtimestamp(clock.now, UTC))
    other_admin = "U0ADMIN02"
    finding = findings(db)[ADMIN]
    [answer] = click(app, slack, other_admin, "wa_review_revoke", str(finding.id))
    assert "You are not allowed" in answer["text"]  # a stranger is refused first
    [answer] = click(app, slack, ADMIN, "wa_review_revoke", str(finding.id))
    assert "has turned on 2FA since this review" in answer["text"]
    assert findings(db)[ADMIN].status == "open"


def test_keep_needs_the_power_the_grant_carries(
    workspace: dict[str, str],
    scheduler: Scheduler,
    app: FlaskClient,
    slack: FakeSlack,
    db: Database,
    gate: Any,
) -> None:
    """Someone who may assign roles but lacks agent's permissions cannot vouch for agent."""
    made = run(gate, ADMIN, "role.create", name="assigner", perms=["roles:assign", "roles:view"])
    assert made.ok, made.message
    assert run(gate, ADMIN, "role.assign", user=BOB, role="assigner").ok
    scheduler.tick()
    [answer] = click(app, slack, BOB, "wa_review_keep", str(findings(db)[ALICE].id))
    assert "You cannot keep agent" in answer["text"]
    assert findings(db)[ALICE].status == "open"


def test_a_report_whose_posting_failed_is_posted_again_without_being_rebuilt(
    workspace: dict[str, str],
    scheduler: Scheduler,
    slack: FakeSlack,
    db: Database,
    clock: ManualClock,
) -> None:
    slack.scripted["chat.postMessage"] = [{"ok": True}]  # accepted, but no ts came back
    [ran] = scheduler.tick()
    assert ran.status == "failed"
    before = {f.id for f in findings(db).values()}
    clock.advance(5 * 60)
    [ran] = scheduler.tick()
    assert ran.status == "done"
    assert {f.id for f in findings(db).values()} == before  # same findings, same buttons
    assert len(reports(slack)) == 2
    with db.read() as session:
        assert session.scalars(select(AccessReview.status)).all() == ["posted"]


def test_extending_a_sensitive_grant_asks_the_clicker_for_a_2fa_code_first(
    workspace: dict[str, str],
    scheduler: Scheduler,
    app: FlaskClient,
    slack: FakeSlack,
    db: Database,
    clock: ManualClock,
) -> None:
    import pyotp

    from rbac_core.policy.versions import bump_policy_version
    from rbac_core.store import txn_of

    from .helpers import give_2fa
    from .slack_requests import slash_command, view_submission

    now = datetime.fromtimestamp(clock.now, UTC)
    give_2fa(db, BOB, now)
    with db.write() as session:  # developer (2FA role) for bob, ending in 5 days
        session.add(
            Grant(
                user_id=BOB,
                role="developer",
                scope="*",
                granted_by=ADMIN,
                granted_at=now - timedelta(days=40),
                expires_at=now + timedelta(days=5),
            )
        )
        bump_policy_version(txn_of(session), None)
    scheduler.tick()
    finding = next(f for f in session_findings(db) if f.user_id == BOB and f.role == "developer")
    assert finding.kind == "expiring"

    def slash(line: str) -> None:
        body = slash_command(ADMIN, line, slack.response_url("c"), command="/wa-2fa")
        assert app.post("/slack/events", data=body, headers=signed_headers(body)).status_code == 200

    slash("enroll")
    secret = slack.named("chat.postMessage")[-1].body["blocks"][0]["text"]["text"].split("`")[1]
    totp = pyotp.TOTP(secret)
    slash(f"verify {totp.at(clock())}")
    clock.advance(11 * 60)  # the verification is too old for a sensitive action

    [prompt] = click(app, slack, ADMIN, "wa_review_keep", str(finding.id))
    assert "enter a 2FA code" in prompt["text"]
    assert session_grant(db, finding.grant_id).expires_at == finding.expires_at  # not yet
    modal = slack.named("views.open")[-1].body["view"]
    modal = json.loads(modal) if isinstance(modal, str) else modal
    assert json.loads(modal["private_metadata"])["kind"] == "review_finding"

    before = len(slack.responses())
    body = view_submission(
        ADMIN,
        "wa_stepup",
        modal["private_metadata"],
        {"code": {"code": {"type": "plain_text_input", "value": totp.at(clock())}}},
    )
    assert app.post("/slack/events", data=body, headers=signed_headers(body)).status_code == 200
    redrawn, told = slack.responses()[before:]
    assert redrawn["replace_original"] is True and "Extended developer" in told["text"]
    assert finding.expires_at is not None
    assert session_grant(db, finding.grant_id).expires_at == finding.expires_at + timedelta(days=30)


def session_findings(db: Database) -> list[ReviewFinding]:
    with db.read() as session:
        return list(session.scalars(select(ReviewFinding)))


def session_grant(db: Database, grant_id: int) -> Grant:
    with db.read() as session:
        grant = session.get(Grant, grant_id)
        assert grant is not None
        return grant
