"""`/slack/events` is answered in front of Flask (bot/slack/door.py), and answers as Flask's
route did: Bolt's answer as it is, errors as JSON, other methods 405, other paths Flask's."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from slack_bolt import App

from bot.app import create_app
from bot.config import Settings
from bot.demo.fake_slack import FakeSlack
from bot.runtime import build_runtime
from rbac_core import ManualClock

from .conftest import ADMIN
from .slack_requests import SIGNING_SECRET, signed_headers, slash_command

URL = "/slack/events"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    yield fake
    fake.stop()


def app_for(db_url: str, slack: FakeSlack, clock: ManualClock, **overrides: Any) -> FlaskClient:
    given: dict[str, Any] = {
        "database_url": db_url,
        "slack_signing_secret": SIGNING_SECRET,
        "slack_bot_token": "xoxb-0000-test",
        "slack_api_url": slack.url,
    }
    settings = Settings(**{**given, **overrides})
    return create_app(build_runtime(settings, clock=clock)).test_client()


@pytest.fixture
def client(db_url: str, slack: FakeSlack, team: dict[str, str], clock: ManualClock) -> FlaskClient:
    return app_for(db_url, slack, clock)


def show(client: FlaskClient, slack: FakeSlack, path: str = URL, **extra: Any) -> Any:
    body = slash_command(ADMIN, "show", slack.response_url())
    return client.post(path, data=body, headers={**signed_headers(body)}, **extra)


def test_a_slash_command_gets_bolts_answer_with_its_type_and_length(
    client: FlaskClient, slack: FakeSlack
) -> None:
    answer = show(client, slack)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    assert int(answer.headers["Content-Length"]) == len(answer.get_data())
    assert json.loads(answer.get_data())["response_type"] == "ephemeral"


def test_other_methods_are_405_naming_post(client: FlaskClient) -> None:
    for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS"):
        answer = client.open(URL, method=method, data=b"x")
        assert answer.status_code == 405, method
        assert answer.headers["Allow"] == "POST"
        assert answer.get_json()["error"] == "method_not_allowed"
    head = client.head(URL)
    assert head.status_code == 405 and head.get_data() == b""


def test_an_unforeseen_failure_is_a_json_500_without_the_story(
    client: FlaskClient, slack: FakeSlack, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    def broken(self: App, req: Any) -> Any:
        raise RuntimeError("the secret plan")

    monkeypatch.setattr(App, "dispatch", broken)
    answer = show(client, slack)
    assert answer.status_code == 500
    assert answer.get_json() == {"error": "internal_error", "message": "something went wrong"}
    assert "secret plan" not in answer.get_data(as_text=True)
    assert any(r.exc_info for r in caplog.records if r.levelno == logging.ERROR)


def test_the_door_is_logged_under_its_route_with_the_actor_and_a_request_id(
    client: FlaskClient, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wa_access.http")
    body = slash_command(ADMIN, "show", slack.response_url())
    answer = client.post(URL, data=body, headers={**signed_headers(body), "X-Request-Id": "r-7"})
    assert answer.headers["X-Request-Id"] == "r-7"
    [line] = [r for r in caplog.records if r.name == "wa_access.http"]
    assert (line.route, line.status) == (URL, 200)
    assert ADMIN in line.getMessage()


def test_a_doubled_leading_slash_and_a_query_string_still_reach_the_door(
    client: FlaskClient, slack: FakeSlack
) -> None:
    doubled = {"PATH_INFO": "//slack/events"}  # as gunicorn passes it; a URL would not
    assert show(client, slack, environ_overrides=doubled).status_code == 200
    assert show(client, slack, URL, query_string="x=%FF&y").status_code == 200


def test_every_other_path_is_flasks(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.post(URL + "/", data=b"x").get_json()["error"] == "not_found"
    assert client.post("/slack/event", data=b"x").status_code == 404


def test_without_slack_settings_the_path_is_not_there(
    db_url: str, slack: FakeSlack, team: dict[str, str], clock: ManualClock
) -> None:
    bare = app_for(db_url, slack, clock, slack_bot_token=None)
    answer = bare.post(URL, data=b"x")
    assert answer.status_code == 404 and answer.get_json()["error"] == "not_found"
