# ruff: noqa: F811  (pytest fixtures imported from test_slack_roles, then named as arguments)
"""What operators read: a time and level on every line, JSON when asked, a request id,
and never a secret, a 2FA code or a phone number."""

from __future__ import annotations

import io
import json
import logging
import random
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient

from bot.app import create_app
from bot.config import ConfigError, Settings, load_settings
from bot.demo.fake_slack import FakeSlack
from bot.logs import _PHONE, Redactor, _mask_phone, _timestamp, configure_logging
from bot.runtime import build_runtime
from bot.slack.app import build_slack_app
from rbac_core import ManualClock

from .conftest import ADMIN, ALICE
from .slack_requests import SIGNING_SECRET, signed_headers, slash_command
from .test_http import serve, slack_env
from .test_slack_roles import make_app, slack, slack_settings  # noqa: F401  (fixtures)

BOT_TOKEN = "xoxb-0000-test"
SECRET_KEY = "k" * 8 + "secret-key-for-totp-at-rest" + "k" * 8
CODE = "493021"
TRACEBACK_LINE = re.compile(r"Traceback \(most recent call last\):$|  |\w+Error: ")
TEXT_LINE = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+ \[\S+\] "
)


@pytest.fixture
def logs_to() -> Iterator[Callable[[Settings], io.StringIO]]:
    """Configure logging as `serve` does, into a string; the root logger restored after."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)

    def configure(settings: Settings) -> io.StringIO:
        stream = io.StringIO()
        configure_logging(settings, stream=stream, level=logging.DEBUG)
        return stream

    yield configure
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def app_settings(db_url: str, slack: FakeSlack, log_format: str) -> Settings:
    return Settings(
        database_url=db_url,
        slack_signing_secret=SIGNING_SECRET,
        slack_bot_token=BOT_TOKEN,
        slack_api_url=slack.url,
        secret_key=SECRET_KEY,
        log_format=log_format,
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_parse_and_carry_the_request_id_and_what_the_request_did(
    logs_to: Callable[[Settings], io.StringIO],
    db_url: str,
    slack: FakeSlack,
    clock: ManualClock,
    team: dict[str, str],
) -> None:
    settings = app_settings(db_url, slack, "json")
    stream = logs_to(settings)
    client = create_app(build_runtime(settings, clock=clock)).test_client()
    body = slash_command(ADMIN, "show", slack.response_url())
    answer = client.post(
        "/slack/events", data=body, headers={**signed_headers(body), "X-Request-Id": "trace-42"}
    )
    assert answer.status_code == 200
    assert answer.headers["X-Request-Id"] == "trace-42"
    forged = client.post(
        "/slack/events", data=body, headers={**signed_headers(body, secret="nope-nope")}
    )
    assert forged.status_code == 401
    minted = forged.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", minted)  # none given: one is made

    lines = json_lines(stream.getvalue())
    assert lines and all(
        {"time", "level", "logger", "message", "request_id"} <= set(line) for line in lines
    )
    [done] = [line for line in lines if line["request_id"] == "trace-42" and "route" in line]
    assert done["route"] == "/slack/events" and done["status"] == 200
    assert (done["actor"], done["action"], done["outcome"]) == (ADMIN, "role.show", "done")
    refused = [line for line in lines if line["request_id"] == minted]
    assert [line["logger"] for line in refused] == ["wa_access.refusals", "wa_access.http"]
    assert refused[-1]["status"] == 401 and "actor" not in refused[-1]  # unsigned: nobody


def test_an_incoming_request_id_that_is_not_a_plain_token_is_replaced(
    make_app: Callable[..., FlaskClient],
) -> None:
    client = make_app()
    for given in ("has space", "x" * 65, "semi;colon", "é", ""):
        echoed = client.get("/healthz", headers={"X-Request-Id": given}).headers["X-Request-Id"]
        assert re.fullmatch(r"[0-9a-f]{32}", echoed), given


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_secrets_2fa_codes_and_phone_numbers_never_reach_the_log(
    logs_to: Callable[[Settings], io.StringIO],
    db_url: str,
    slack: FakeSlack,
    clock: ManualClock,
    team: dict[str, str],
    log_format: str,
) -> None:
    settings = app_settings(db_url, slack, log_format)
    stream = logs_to(settings)
    client = create_app(build_runtime(settings, clock=clock)).test_client()
    verify = slash_command(ALICE, f"verify {CODE}", slack.response_url(), command="/wa-2fa")
    assert client.post("/slack/events", data=verify, headers=signed_headers(verify)).status_code
    forged = signed_headers(verify, secret="not-the-signing-secret")
    assert client.post("/slack/events", data=verify, headers=forged).status_code == 401
    # A careless line, and a failure whose traceback quotes them: masked all the same.
    careless = logging.getLogger("wa_access.careless")
    careless.warning("secret %s token %s key %s", SIGNING_SECRET, BOT_TOKEN, SECRET_KEY)
    careless.info("customer +447700900123 wrote; other token xoxp-1-2-3-abcdef")
    try:
        raise RuntimeError(f"could not post with {BOT_TOKEN} to +15550001111")
    except RuntimeError:
        careless.exception("failed")

    text = stream.getvalue()
    for never in (CODE, SIGNING_SECRET, BOT_TOKEN, SECRET_KEY, "xoxp-1-2-3", "447700900123"):
        assert never not in text, never
    assert "15550001111" not in text
    assert "+**********23" in text and "[redacted]" in text  # the last two digits only
    if log_format == "json":
        assert len(json_lines(text)) == len(text.splitlines())
    else:
        # A record's first line has its time and level; only a traceback runs on below it.
        for line in text.splitlines():
            assert TEXT_LINE.match(line) or TRACEBACK_LINE.match(line), line
        assert len([line for line in text.splitlines() if TEXT_LINE.match(line)]) >= 6


def test_a_log_format_other_than_text_or_json_stops_start_up_naming_it() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({"WA_LOG_FORMAT": "xml"}, dotenv=None)
    assert refused.value.problems == [
        "WA_LOG_FORMAT is malformed: expected text or json, got 'xml'"
    ]
    assert load_settings({"WA_LOG_FORMAT": "json"}, dotenv=None).log_format == "json"
    assert load_settings({}, dotenv=None).log_format == "text"


def test_bolt_does_not_warn_in_every_worker_that_the_environment_token_is_unused(
    slack_settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Bolt reads SLACK_BOT_TOKEN from the environment even when given a client."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    caplog.set_level(logging.DEBUG)
    build_slack_app(build_runtime(slack_settings))
    assert "will be unused" not in caplog.text
    # and the filter that hides it is gone once the app is built
    logging.getLogger("wa_access.slack").warning(
        "As you gave `client` as well, `token` will be unused."
    )
    assert "will be unused" in caplog.text


def test_under_gunicorn_every_line_is_json_with_time_and_level(
    tmp_path: Path, db_url: str, slack: FakeSlack, team: dict[str, str]
) -> None:
    env = {**slack_env(db_url, slack), "WA_LOG_FORMAT": "json"}
    body = slash_command(ADMIN, "show", slack.response_url())
    with serve(tmp_path, env, workers=2) as served:
        status, headers, _ = served.request(
            "POST", "/slack/events", body, {**signed_headers(body), "X-Request-Id": "gun-7"}
        )
        assert status == 200 and headers["X-Request-Id"] == "gun-7"
    text = served.output()
    lines = json_lines(text)  # every line, gunicorn's included, or this raises
    assert all(line["time"].endswith("Z") and line["level"] for line in lines)
    assert {"gunicorn.error", "wa_access.http"} <= {line["logger"] for line in lines}
    [done] = [line for line in lines if line.get("request_id") == "gun-7"]
    assert (done["route"], done["status"], done["actor"]) == ("/slack/events", 200, ADMIN)
    assert "will be unused" not in text and SIGNING_SECRET not in text


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_secret_is_masked_however_it_is_escaped_and_numbers_however_they_are_spelt(
    logs_to: Callable[[Settings], io.StringIO], log_format: str
) -> None:
    """JSON escapes a quote or backslash, repr() a backslash or quote, URLs percent-encode."""
    secret = "Zx9\"q\\T'0-secret-with-quotes-and-slashes"
    out = logs_to(Settings(secret_key=secret, log_format=log_format))
    log = logging.getLogger("wa_access.test")
    log.warning("as given %s, as repr %r, in a URL %s", secret, secret, quote(secret, safe=""))
    try:
        raise ValueError(f"bad key {secret!r}")
    except ValueError:
        log.exception("failed")
    log.warning("numbers: +1 555 000 1111, +1-555-000-2222, %%2B15550003333, id_+15550004444")
    text = out.getvalue()
    for shown in (secret, json.dumps(secret)[1:-1], repr(secret)[1:-1], quote(secret, safe="")):
        assert shown not in text
    assert "Zx9" not in text  # no part of it is left, escaped or not
    for number in ("1111", "2222", "3333", "4444"):
        assert f"000{number}" not in text and f"000 {number}" not in text


def test_masking_only_lines_that_could_hold_a_secret_masks_exactly_what_the_patterns_do() -> None:
    """The redactor skips its patterns on a line without any of their literals; over
    lines mixing secrets, tokens, response URLs and numbers with plain words, it must
    mask exactly what running every pattern on every line masks."""
    secrets = ["Zx9\"q\\T'0-secret-with-quotes", "plain-signing-secret-0123"]
    redact = Redactor(secrets)

    def everything(text: str) -> str:  # the patterns, run whatever the line holds
        return _PHONE.sub(_mask_phone, redact._secret.sub("[redacted]", text))

    pieces = [
        *secrets,
        json.dumps(secrets[0])[1:-1],
        repr(secrets[0])[1:-1],
        quote(secrets[1], safe=""),
        "xoxb-1234-abcd",
        "xapp-1-A0-zz",
        "xox",
        "xoxb",
        "https://hooks.slack.com/commands/T0/1/abc",
        "hooks.slack.com",
        "+15550001111",
        "%2B15550002222",
        "+1 555 000 3333",
        "plain",
        "words",
        " ",
        "=",
        "secret",
        "Zx9",
    ]
    rng = random.Random(20261205)
    for _ in range(3000):
        line = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        assert redact(line) == everything(line), line


def test_a_lines_time_is_what_datetime_writes_across_second_boundaries() -> None:
    """The time up to the second is reused within a second: the milliseconds must still
    round as datetime rounds them, up to the next second included."""
    rng = random.Random(7)
    for _ in range(20000):
        whole = rng.randint(1_700_000_000, 1_900_000_000)
        created = whole + rng.choice(
            [0.0, 0.0000004, 0.123, 0.9995, 0.9999994, 0.9999996, rng.random()]
        )
        record = logging.LogRecord("t", logging.INFO, "", 0, "m", None, None)
        record.created = created
        expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        assert _timestamp(record) == expected.replace("+00:00", "Z"), created


def test_a_response_url_is_masked_as_sent_percent_encoded_or_json_escaped() -> None:
    """A form body carries it percent-encoded, an interactivity payload JSON-escaped."""
    url = "https://hooks.slack.com/commands/T0001/1234/SeCrEtPaRt"
    redact = Redactor([])
    for spelling in (url, quote(url, safe=""), json.dumps(url)[1:-1].replace("/", "\\/")):
        masked = redact(f"response_url={spelling}&trigger_id=1 and more")
        assert "SeCrEtPaRt" not in masked and "[redacted]" in masked, spelling


def test_a_stack_asked_for_is_still_logged_on_the_request_logger_and_others(
    logs_to: Callable[[Settings], io.StringIO],
) -> None:
    """The request's own line skips finding its caller; a stack asked for is not skipped."""
    out = logs_to(Settings())
    logging.getLogger("wa_access.http").warning("with a stack", stack_info=True)
    logging.getLogger("wa_access.other").warning("with a stack too", stack_info=True)
    assert out.getvalue().count("Stack (most recent call last):") == 2
