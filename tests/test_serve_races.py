"""Through `wa-access serve`: 2FA codes sent at once from Slack, as a person or a script would.

The bars of issue 12 as the probe measured them: gunicorn with several workers
and threads, signed `/wa-2fa verify` commands arriving together, on whichever
database the suite runs on. `tests/test_races.py` holds the same rules gate by
gate; this checks nothing between Slack's request and the gate undoes them.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest

from bot.demo.fake_slack import FakeSlack
from rbac_core import Database, build_gate
from rbac_core.actions.twofa import MAX_FAILURES

from .conftest import ADMIN, ALICE, BOB, CAROL
from .helpers import wait_for
from .slack_requests import signed_headers, slash_command
from .test_http import Served, serve, slack_env

KEY = "k" * 40
ACCEPTED = ("Code accepted", "2FA is now on")


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    for user in (ADMIN, ALICE, BOB, CAROL):
        fake.add_user(user, user.lower())
    yield fake
    fake.stop()


@pytest.fixture
def enrolled(team: dict[str, str], db_url: str) -> dict[str, pyotp.TOTP]:
    """Everyone enrolled in 2FA on the real clock (the server's), first code verified."""
    gate = build_gate(Database(db_url), secret_key=KEY)
    seeds = {}
    for user in (ADMIN, ALICE, BOB, CAROL):
        totp = pyotp.TOTP(gate.submit(user, "cli", "2fa.enroll", {}).data["secret"])
        assert gate.submit(user, "cli", "2fa.verify", {"code": totp.now()}).ok
        seeds[user] = totp
    gate.db.dispose()
    return seeds


@pytest.fixture
def served(
    enrolled: dict[str, pyotp.TOTP], db_url: str, slack: FakeSlack, tmp_path: Path
) -> Iterator[Served]:
    env = {**slack_env(db_url, slack), "WA_SECRET_KEY": KEY, "WA_ALERT_CHANNEL": "C0WAALERT"}
    with serve(tmp_path, env, workers=2) as server:
        yield server


def _verify_at_once(server: Served, slack: FakeSlack, user: str, codes: list[str]) -> list[str]:
    """Each code as its own signed `/wa-2fa verify`, all released together; the answers."""
    barrier = threading.Barrier(len(codes))
    answers: list[str] = [""] * len(codes)

    def send(i: int) -> None:
        body = slash_command(user, f"verify {codes[i]}", slack.response_url(), "/wa-2fa")
        headers = signed_headers(body)
        barrier.wait()
        status, _, data = server.request("POST", "/slack/events", body.encode(), headers)
        answers[i] = json.loads(data)["text"] if status == 200 else f"HTTP {status}"

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(codes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return answers


def _kind(answer: str) -> str:
    if answer.startswith(ACCEPTED):
        return "accepted"
    for marker, kind in (
        ("already used", "replay"),
        ("not right", "wrong"),
        ("Too many wrong codes", "locked_now"),
        ("2FA is locked", "locked"),
    ):
        if marker in answer:
            return kind
    return answer


def test_the_same_code_sent_eight_times_at_once_is_accepted_once(
    served: Served, slack: FakeSlack, enrolled: dict[str, pyotp.TOTP]
) -> None:
    """Three rounds, each with a code not used before (the next step's, which the drift
    window accepts), so no round waits 30 seconds for the clock."""
    for user in (ALICE, BOB, CAROL):
        code = enrolled[user].at(time.time() + 30)
        answers = _verify_at_once(served, slack, user, [code] * 8)
        assert Counter(map(_kind, answers)) == {"accepted": 1, "replay": 7}, answers


def test_forty_wrong_codes_at_once_are_at_most_five_guesses(
    served: Served, slack: FakeSlack, enrolled: dict[str, pyotp.TOTP]
) -> None:
    totp = enrolled[ADMIN]
    valid = {totp.at(time.time() + d) for d in (-60, -30, 0, 30, 60)}
    wrong = next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)
    answers = _verify_at_once(served, slack, ADMIN, [wrong] * 40)
    assert Counter(map(_kind, answers)) == {
        "wrong": MAX_FAILURES - 1,
        "locked_now": 1,
        "locked": 40 - MAX_FAILURES,
    }, answers

    def alerts() -> list[Any]:
        return [c for c in slack.named("chat.postMessage") if c.body.get("channel") == "C0WAALERT"]

    wait_for(alerts, what="the lockout alert from serve's outbox worker")
    time.sleep(1.5)  # a second alert, were there one, would have been delivered by now
    assert len(alerts()) == 1
