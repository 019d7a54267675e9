"""A bot token Slack refuses, or a Slack that cannot be reached, is named, never a generic error."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from bot.app import create_app
from bot.config import Settings
from bot.demo.fake_slack import FakeSlack
from bot.runtime import build_runtime
from bot.slack.app import slack_client
from bot.slack.token import check_token
from rbac_core import ManualClock

from .conftest import ADMIN
from .slack_requests import SIGNING_SECRET, signed_headers, slash_command


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    yield fake
    fake.stop()


def _app(db_url: str, api_url: str, clock: ManualClock) -> FlaskClient:
    settings = Settings(
        database_url=db_url,
        slack_signing_secret=SIGNING_SECRET,
        slack_bot_token="xoxb-your-token",
        slack_api_url=api_url,
    )
    return create_app(build_runtime(settings, clock=clock)).test_client()


def _show(app: FlaskClient, slack_url: str) -> dict[str, str]:
    body = slash_command(ADMIN, "show", f"{slack_url}response/r1")
    response = app.post("/slack/events", data=body, headers=signed_headers(body))
    assert response.status_code == 200
    return json.loads(response.data)


def test_a_refused_token_is_named_to_the_person_and_logged_once(
    db_url: str, slack: FakeSlack, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    refused = {"ok": False, "error": "invalid_auth"}
    slack.scripted["auth.test"] = [refused, refused]
    app = _app(db_url, slack.url, clock)
    with caplog.at_level(logging.ERROR, logger="wa_access.slack"):
        first, second = _show(app, slack.url), _show(app, slack.url)
    for answer in (first, second):
        assert answer["response_type"] == "ephemeral"
        assert "Slack refused its bot token (invalid_auth)" in answer["text"]
        assert "Something went wrong" not in answer["text"]
    assert len(slack.named("auth.test")) == 1  # the refusal answers for itself a while
    lines = [r.getMessage() for r in caplog.records if "SLACK_BOT_TOKEN" in r.getMessage()]
    assert lines == [
        "Slack refused SLACK_BOT_TOKEN (invalid_auth): it is not a valid bot "
        "token: set it to the app's Bot User OAuth Token (xoxb-…)."
    ]
    assert "xoxb-your-token" not in caplog.text


def test_an_unreachable_slack_is_named_not_a_failure(db_url: str, clock: ManualClock) -> None:
    answer = _show(_app(db_url, "http://127.0.0.1:1/api/", clock), "http://127.0.0.1:1/")
    assert "cannot reach Slack right now" in answer["text"]


def test_once_slack_accepts_the_token_requests_are_served(
    db_url: str, slack: FakeSlack, clock: ManualClock, team: dict[str, str]
) -> None:
    app = _app(db_url, slack.url, clock)
    assert "admin" in _show(app, slack.url)["text"]
    assert "admin" in _show(app, slack.url)["text"]
    assert len(slack.named("auth.test")) == 1


def test_the_start_up_check_says_in_one_line_whether_slack_accepted_the_token(
    slack: FakeSlack,
) -> None:
    settings = Settings(slack_bot_token="xoxb-real", slack_api_url=slack.url)
    accepted = check_token(slack_client(settings))
    assert accepted.ok and accepted.line == (
        "Slack accepted the bot token (workspace WA, bot user U0WABOT01)."
    )
    slack.scripted["auth.test"] = [{"ok": False, "error": "token_revoked"}]
    revoked = check_token(slack_client(settings))
    assert not revoked.ok and "(token_revoked)" in revoked.line and "reinstall" in revoked.line
    gone = check_token(
        slack_client(Settings(slack_bot_token="x", slack_api_url="http://127.0.0.1:1/api/"))
    )
    assert not gone.ok and "unreachable" in gone.line


def test_serve_says_at_start_whether_slack_took_the_token_and_what_a_missing_key_costs(
    db_url: str, slack: FakeSlack, tmp_path: Path
) -> None:
    from .test_http import serve, slack_env

    with serve(tmp_path, slack_env(db_url, slack)) as served:
        started = served.output()
    assert "Slack accepted the bot token (workspace WA, bot user U0WABOT01)." in started
    assert "WA_SECRET_KEY is not set: nobody can turn on 2FA" in started
    slack.scripted["auth.test"] = [{"ok": False, "error": "invalid_auth"}]
    env = {**slack_env(db_url, slack), "WA_SECRET_KEY": "s" * 40}
    with serve(tmp_path, env) as served:
        started = served.output()
    assert "Slack refused SLACK_BOT_TOKEN (invalid_auth)" in started
    assert "WA_SECRET_KEY" not in started
