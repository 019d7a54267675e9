# ruff: noqa: F811  (pytest fixtures imported from test_slack_roles, then named as arguments)
"""What a request must be before a listener reads it: signed, then readable, then Slack-shaped.

SPEC §4 rule 10: the signature and timestamp are checked before anything is
parsed, and a failure is a 401 that is counted. After that, a body that does
not parse or does not have the shape of a Slack payload gets a specific answer,
never a 500 and never a traceback.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_bolt import Ack

from bot.app import MAX_BODY_BYTES
from bot.config import Settings
from bot.demo.fake_slack import FakeSlack
from bot.refusals import Refusals
from bot.runtime import build_runtime
from bot.slack import shape as slack_shape
from bot.slack.app import FAILURE_TEXT, build_slack_app
from bot.slack.shape import parse_form
from handlers.slack.access import APPROVE_ACTION, REQUEST_BUTTON
from handlers.slack.audit import OLDER_ACTION
from handlers.slack.blocks import OUT_OF_DATE
from rbac_core import Database, ManualClock
from rbac_core.store.models import User

from .conftest import ADMIN, ALICE
from .helpers import audit_rows, deliver_notices, live_grants
from .slack_requests import (
    SIGNING_SECRET,
    app_home_opened,
    block_action,
    home_block_action,
    signed_headers,
    slash_command,
)
from .test_slack_roles import (  # noqa: F401  (fixtures)
    _bolt_request,
    alice_asks,
    click,
    client,
    command,
    enrol_2fa,
    every_kind_of_payload,
    make_app,
    pending_of,
    post,
    slack,
    slack_settings,
)

FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The bodies Bolt's parser is given, in order."""
    seen: list[str] = []
    real = slack_shape.parse_slack_body

    def spy(body: str, content_type: str | None) -> tuple[Any, bool]:
        seen.append(body)
        return real(body, content_type)

    monkeypatch.setattr(slack_shape, "parse_slack_body", spy)
    yield seen


def send(client: FlaskClient, body: str, content_type: str = FORM, **headers: str) -> Any:
    return client.post(
        "/slack/events",
        data=body.encode(),
        headers={"Content-Type": content_type, **headers},
    )


UNREADABLE = [
    ("{not json", "application/json"),
    ("[1, 2]", "application/json"),
    ("payload={not json", FORM),
    ("payload=%5B1%2C2%5D", FORM),
]


@pytest.mark.parametrize(("body", "content_type"), UNREADABLE)
def test_an_unsigned_body_is_refused_without_being_parsed(
    client: FlaskClient, parses: list[str], body: str, content_type: str
) -> None:
    """Bolt alone parses before it verifies; these bodies used to be 500s."""
    answer = send(client, body, content_type)
    assert answer.status_code == 401
    assert answer.get_json() == {"error": "invalid request"}
    assert parses == []


@pytest.mark.parametrize(
    "timestamp", ["abc", "", "1e9", "-5", "١٢٣", "9" * 40, str(int(time.time()) - 301)]
)
def test_a_timestamp_that_is_not_a_recent_unix_time_is_a_401(
    client: FlaskClient, slack: FakeSlack, parses: list[str], timestamp: str
) -> None:
    body = slash_command(ADMIN, "show", slack.response_url())
    headers = signed_headers(body)
    headers["X-Slack-Request-Timestamp"] = timestamp
    assert client.post("/slack/events", data=body, headers=headers).status_code == 401
    assert parses == []


@pytest.mark.parametrize("signature", ["v0=é", "v0=" + "\u0660" * 64, "v0=short", "sha256=00"])
def test_a_signature_that_is_not_ascii_hex_is_a_401_not_an_error(
    client: FlaskClient, slack: FakeSlack, caplog: pytest.LogCaptureFixture, signature: str
) -> None:
    """hmac.compare_digest raises on non-ASCII text instead of answering no."""
    body = slash_command(ADMIN, "show", slack.response_url())
    headers = {**signed_headers(body), "X-Slack-Signature": signature}
    assert client.post("/slack/events", data=body, headers=headers).status_code == 401
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("body", "content_type"), [*UNREADABLE, ("[" * 100_000, "application/json")]
)
def test_a_signed_body_that_is_no_slack_payload_gets_a_400_with_json(
    client: FlaskClient, body: str, content_type: str
) -> None:
    headers = {**signed_headers(body), "Content-Type": content_type}
    answer = client.post("/slack/events", data=body, headers=headers)
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "malformed_payload"
    assert "Nothing was done" in answer.get_json()["message"]


def test_a_signed_command_without_a_user_is_answered_in_slack(
    client: FlaskClient, slack: FakeSlack
) -> None:
    fields = dict(parse_qsl(slash_command(ADMIN, "show", slack.response_url())))
    del fields["user_id"]
    answer = post(client, urlencode(fields))
    assert answer.status_code == 200
    reply = answer.get_json()
    assert reply["response_type"] == "ephemeral"
    assert "does not name the Slack user who sent it" in reply["text"]


def test_ssl_checks_are_acknowledged_only_when_signed(client: FlaskClient) -> None:
    body = "ssl_check=1&token=gIkuvaNzQIHg97ATvDxqgjtO"
    assert post(client, body).status_code == 200
    assert send(client, body).status_code == 401


def test_refusals_are_counted_and_logged_without_the_body(
    client: FlaskClient, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    """The body of a refused request may hold a 2FA code or Slack's legacy token."""
    caplog.set_level(logging.DEBUG)
    body = slash_command(ADMIN, "verify 493021", slack.response_url(), command="/wa-2fa")
    stale = signed_headers(body, timestamp=int(time.time()) - 600)
    forged = signed_headers(body, secret="not-the-signing-secret")
    for headers in (stale, forged, forged):
        assert client.post("/slack/events", data=body, headers=headers).status_code == 401
    assert "493021" not in caplog.text and "gIkuvaNzQIHg97ATvDxqgjtO" not in caplog.text
    [first] = [r for r in caplog.records if r.name == "wa_access.refusals"]
    assert first.levelno == logging.WARNING
    assert first.getMessage() == (
        "slack: refused 1 unverified request(s) (1 stale timestamp); 1 since start"
    )


def test_refusals_are_summed_up_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    timers: list[tuple[float, Callable[[], None]]] = []
    refusals = Refusals(
        "slack", clock=lambda: now[0], schedule=lambda delay, then: timers.append((delay, then))
    )
    caplog.set_level(logging.WARNING, logger="wa_access.refusals")
    refusals.add("bad signature")  # the first at once: a wrong secret shows on request one
    now[0] += 15
    for _ in range(40):
        refusals.add("bad signature")
    refusals.add("unsigned")
    assert [delay for delay, _ in timers] == [45.0]  # one summary due, a minute after the report
    now[0] += 45
    timers.pop()[1]()  # then silence: the summary still comes
    refusals.flush()  # nothing more to say
    now[0] += 61
    refusals.add("stale timestamp")  # a minute on: at once again
    assert [r.getMessage() for r in caplog.records] == [
        "slack: refused 1 unverified request(s) (1 bad signature); 1 since start",
        "slack: refused 41 unverified request(s) (40 bad signature, 1 unsigned); 42 since start",
        "slack: refused 1 unverified request(s) (1 stale timestamp); 43 since start",
    ]
    assert refusals.totals == {"bad signature": 41, "unsigned": 1, "stale timestamp": 1}
    assert timers == []


WEIRD: list[Any] = [None, 5, "x", [], {}, ["id"], {"id": 5}, True]


def misshapen(body: str) -> Iterator[str]:
    """`body` with each field, and each field of its objects, dropped or of another type."""
    fields = dict(parse_qsl(body, keep_blank_values=True))
    data: dict[str, Any]
    if "payload" in fields:
        data = json.loads(fields["payload"])

        def encode(d: dict[str, Any]) -> str:
            return urlencode({"payload": json.dumps(d)})
    else:
        data = dict(fields)

        def encode(d: dict[str, Any]) -> str:
            return urlencode({k: v if isinstance(v, str) else json.dumps(v) for k, v in d.items()})

    def copy() -> dict[str, Any]:
        return json.loads(json.dumps(data))  # type: ignore[no-any-return]

    for key, value in data.items():
        dropped = copy()
        del dropped[key]
        yield encode(dropped)
        for weird in WEIRD:
            changed = copy()
            changed[key] = weird
            yield encode(changed)
        inner = value[0] if isinstance(value, list) and value else value
        if isinstance(inner, dict):
            for sub in inner:
                for weird in (None, 5, [], {}):
                    changed = copy()
                    (changed[key][0] if isinstance(value, list) else changed[key])[sub] = weird
                    yield encode(changed)


def test_misshapen_signed_payloads_get_an_answer_never_an_error(
    client: FlaskClient, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    """Every payload kind this app handles, each field broken in turn (some 2,500
    requests): none may answer 500, or reach the listeners' last resort."""
    caplog.set_level(logging.WARNING)
    failures = []
    tried = 0
    for base in every_kind_of_payload(slack.response_url()):
        for body in misshapen(base):
            tried += 1
            caplog.clear()
            answer = post(client, body)
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            if answer.status_code >= 500 or errors:
                failures.append((answer.status_code, body[:200], [r.getMessage() for r in errors]))
    assert tried > 2000
    assert failures == []


def test_an_unknown_command_is_named_in_the_answer(client: FlaskClient, slack: FakeSlack) -> None:
    reply = command(client, slack, ADMIN, "show", name="/someone-elses")
    assert reply == {
        "response_type": "ephemeral",
        "text": "This app does not answer `/someone-elses`.",
    }


def test_a_listener_that_fails_answers_a_sentence_and_logs_without_the_body(
    slack_settings: Settings, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    """The last resort, for bugs: the listeners catch what they expect themselves."""
    app = build_slack_app(build_runtime(slack_settings))

    @app.command("/wa-broken")
    def broken(ack: Ack) -> None:
        raise RuntimeError("a bug")

    caplog.set_level(logging.DEBUG)
    body = slash_command(ADMIN, "show 7c1e55", slack.response_url(), command="/wa-broken")
    answer = app.dispatch(_bolt_request(body))
    assert answer.status == 200
    assert json.loads(answer.body) == {"response_type": "ephemeral", "text": FAILURE_TEXT}
    [failure] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert failure.exc_info is not None and "a bug" in caplog.text
    assert "7c1e55" not in caplog.text


@pytest.mark.parametrize("value", ["not json", "[1, 2]", "5"])
def test_a_button_whose_value_is_not_ours_is_out_of_date(
    client: FlaskClient, slack: FakeSlack, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    caplog.set_level(logging.WARNING)
    for action in (OLDER_ACTION, REQUEST_BUTTON):
        assert OUT_OF_DATE in click(client, slack, ADMIN, action, value, name=action)["text"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_approver_decides_from_the_app_home(
    make_app: Callable[..., FlaskClient], slack: FakeSlack, db: Database, clock: ManualClock
) -> None:
    """A Home click comes without a response_url: the outcome goes to the approver by
    DM, and their Home is drawn again without the request."""
    app = make_app(audit_channel="C0WAAUDIT")
    request_id = _alice_asks(app, slack, db, "agent --for 4h --reason covering the night shift")
    before = len(slack.calls)
    answer = post(app, home_block_action(ADMIN, APPROVE_ACTION, request_id))
    assert answer.status_code == 200
    assert (ALICE, "agent", "*") in live_grants(db, ALICE)
    calls = slack.calls[before:]
    to_admin = [
        c.body for c in calls if c.method == "chat.postMessage" and c.body["channel"] == ADMIN
    ]
    assert f"<@{ADMIN}> approved <@{ALICE}>'s request for *agent*" in to_admin[-1]["text"]
    deliver_notices(app)  # the requester hears through the outbox
    to_alice = [
        c.body
        for c in slack.calls[before:]
        if c.method == "chat.postMessage" and c.body["channel"] == ALICE
    ]
    assert "was approved" in to_alice[-1]["text"]
    [home] = [c.body for c in calls if c.method == "views.publish"]
    assert home["user_id"] == ADMIN
    view = home["view"] if isinstance(home["view"], dict) else json.loads(home["view"])
    assert request_id not in json.dumps(view)
    assert not [c for c in calls if c.method.startswith("response/")]

    again = post(app, home_block_action(ADMIN, APPROVE_ACTION, request_id))
    assert again.status_code == 200
    last = [c.body for c in slack.calls if c.method == "chat.postMessage"][-1]
    assert last["channel"] == ADMIN and "already approved" in last["text"]


def _alice_asks(app: FlaskClient, slack: FakeSlack, db: Database, wanted: str) -> str:
    """`alice_asks`, then the id of the request she made."""
    alice_asks(app, slack, wanted)
    [request_id] = _pending_requests(db)
    return request_id


def _pending_requests(db: Database) -> list[str]:
    from sqlalchemy import select

    from rbac_core.store.models import AccessRequest

    with db.read() as session:
        pending = select(AccessRequest.id).where(AccessRequest.status == "pending")
        return list(session.scalars(pending))


@settings(max_examples=2000, deadline=None)
@given(
    st.one_of(
        st.text(alphabet=st.sampled_from("ab=&%+2FfA0é;\x00 ")),
        st.dictionaries(st.text(), st.text()).map(urlencode),
    )
)
def test_form_fields_parse_as_the_standard_library_parses_them(raw: str) -> None:
    assert parse_form(raw) == dict(parse_qsl(raw, keep_blank_values=True))


def test_a_command_whose_text_says_payload_reaches_its_listener(
    client: FlaskClient, slack: FakeSlack
) -> None:
    """Bolt's parser took any body holding the word for an interactivity payload."""
    reply = command(client, slack, ADMIN, "why payload")
    assert "payload" in reply["text"] and "does not answer" not in reply["text"]


def test_an_approval_from_the_app_home_that_needs_a_code_finishes_there_too(
    make_app: Callable[..., FlaskClient], slack: FakeSlack, db: Database, clock: ManualClock
) -> None:
    from rbac_core.clock import utcnow

    from .helpers import give_2fa
    from .slack_requests import view_submission

    app = make_app(secret_key="s" * 40, audit_channel="C0WAAUDIT")
    totp = enrol_2fa(app, slack, clock, ADMIN)
    give_2fa(db, ALICE, utcnow(clock))
    request_id = _alice_asks(app, slack, db, "developer --for 2h --reason release night")
    clock.advance(11 * 60)  # the enrolment code no longer counts as a recent step-up

    assert post(app, home_block_action(ADMIN, APPROVE_ACTION, request_id)).status_code == 200
    asked = slack.named("chat.postMessage")[-1].body
    assert asked["channel"] == ADMIN and "enter a 2FA code" in asked["text"]
    assert (ALICE, "developer", "*") not in live_grants(db, ALICE)
    modal = slack.named("views.open")[-1].body["view"]
    modal = json.loads(modal) if isinstance(modal, str) else modal

    before = len(slack.calls)
    values = {"code": {"code": {"type": "plain_text_input", "value": totp.at(clock())}}}
    done = post(app, view_submission(ADMIN, "wa_stepup", modal["private_metadata"], values))
    assert done.status_code == 200
    assert (ALICE, "developer", "*") in live_grants(db, ALICE)
    calls = slack.calls[before:]
    told = [c.body for c in calls if c.method == "chat.postMessage" and c.body["channel"] == ADMIN]
    assert f"<@{ADMIN}> approved <@{ALICE}>'s request for *developer*" in told[-1]["text"]
    assert [c.body["user_id"] for c in calls if c.method == "views.publish"] == [ADMIN]


def test_a_decision_in_the_app_home_stands_when_the_dm_to_the_approver_fails(
    make_app: Callable[..., FlaskClient], slack: FakeSlack, db: Database
) -> None:
    app = make_app(audit_channel="C0WAAUDIT")
    request_id = _alice_asks(app, slack, db, "agent --for 4h --reason covering the night shift")
    deliver_notices(app)  # the request's post to the approvers
    # The approver's DM (the answer to the click) fails; the requester is told later.
    slack.scripted["chat.postMessage"] = [{"ok": False, "error": "channel_not_found"}]
    before = len(slack.calls)
    assert post(app, home_block_action(ADMIN, APPROVE_ACTION, request_id)).status_code == 200
    assert (ALICE, "agent", "*") in live_grants(db, ALICE)
    assert deliver_notices(app) == 1
    calls = slack.calls[before:]
    told = [c.body for c in calls if c.method == "chat.postMessage"]
    assert [t["channel"] for t in told] == [ADMIN, ALICE]
    assert "was approved" in told[1]["text"]
    assert [c.body["user_id"] for c in calls if c.method == "views.publish"] == [ADMIN]


def test_events_whose_user_is_an_object_are_not_refused_as_misshapen(
    client: FlaskClient,
) -> None:
    """`user_change` and `team_join` carry a user object; only the Home opener must be an id."""
    body = json.dumps(
        {
            "type": "event_callback",
            "team_id": "T0WA0ACCESS",
            "api_app_id": "A0WAACCESS",
            "event": {"type": "user_change", "user": {"id": ALICE, "deleted": True}},
            "event_id": "Ev0WAUSER01",
            "event_time": 1795000002,
        }
    )
    headers = {**signed_headers(body), "Content-Type": "application/json"}
    answer = client.post("/slack/events", data=body, headers=headers)
    assert answer.status_code not in (400, 500)
    home = json.loads(app_home_opened(ALICE))
    home["event"]["user"] = {"id": ALICE}
    body = json.dumps(home)
    headers = {**signed_headers(body), "Content-Type": "application/json"}
    assert client.post("/slack/events", data=body, headers=headers).status_code == 400


def _signed(client: FlaskClient, raw: str, content_type: str) -> Any:
    headers = {**signed_headers(raw), "Content-Type": content_type}
    return client.post("/slack/events", data=raw.encode(), headers=headers)


def _payload(data: dict[str, Any]) -> str:
    return urlencode({"payload": json.dumps(data)})


_CLICKER = {"id": ADMIN}
NOT_SLACK_PAYLOADS = {
    "view submitted without a type": (
        json.dumps({"type": "view_submission", "user": _CLICKER, "view": {"callback_id": "x"}}),
        "application/json",
    ),
    "a legacy workflow step": (
        _payload(
            {
                "type": "view_submission",
                "user": _CLICKER,
                "view": {"callback_id": "wa_stepup", "type": "workflow_step"},
            }
        ),
        FORM,
    ),
    "form fields naming an event": ("event=x", FORM),
    "form fields naming a view": ("view=x", FORM),
    "form fields posing as a click": ("type=block_actions&user_id=U0ADMIN01&actions=x", FORM),
    "an empty body": ("", FORM),
    "form fields of no kind": ("foo=bar", FORM),
    "a click by a bare user id": (
        _payload(
            {"type": "block_actions", "user": ADMIN, "actions": [{"action_id": "wa_confirm"}]}
        ),
        FORM,
    ),
    "a lone surrogate in a button": (
        _payload(
            {
                "type": "block_actions",
                "user": _CLICKER,
                "response_url": "https://hooks.slack.com/actions/T0/1/x",
                "actions": [{"action_id": "wa_confirm", "value": "\ud800"}],
            }
        ),
        FORM,
    ),
    "a lone surrogate in an event id": (
        '{"type":"event_callback","event_id":"\\ud800",'
        '"event":{"type":"app_home_opened","user":"U0ADMIN01","tab":"home"}}',
        "application/json",
    ),
    "NUL in a command's text": ("command=%2Fwa-role&user_id=U0ADMIN01&text=show%00", FORM),
    "JSON nested 500 deep": (
        '{"command":"/wa-audit","user_id":"U0ADMIN01","text":"log","x":'
        + "[" * 500
        + "]" * 500
        + "}",
        "application/json",
    ),
    "a response_url that is no URL": (
        _payload(
            {
                "type": "block_actions",
                "user": _CLICKER,
                "response_url": "http://[::1/",
                "actions": [{"action_id": "wa_cancel", "value": "p"}],
            }
        ),
        FORM,
    ),
}


@pytest.mark.parametrize(
    ("raw", "content_type"), NOT_SLACK_PAYLOADS.values(), ids=NOT_SLACK_PAYLOADS
)
def test_signed_bodies_that_are_no_slack_payload_found_by_fuzzing_get_a_400(
    client: FlaskClient, caplog: pytest.LogCaptureFixture, raw: str, content_type: str
) -> None:
    caplog.set_level(logging.WARNING)
    answer = _signed(client, raw, content_type)
    reply = answer.get_json()
    if "command=" in raw and content_type == FORM:
        assert answer.status_code == 200 and "Nothing was done" in reply["text"]
    else:
        assert answer.status_code == 400 and reply["error"] == "malformed_payload"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_slash_command_with_a_field_bolt_reads_as_an_object_is_refused_in_slack(
    client: FlaskClient, slack: FakeSlack
) -> None:
    answer = post(client, slash_command(ADMIN, "show", slack.response_url()) + "&event=x")
    assert answer.status_code == 200
    assert "`event` has no place in a slash command" in answer.get_json()["text"]


def test_an_unreachable_response_url_is_a_warning_not_an_error(
    client: FlaskClient, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    """The gate has acted by then: a lost answer is worth a warning, never the URL."""
    caplog.set_level(logging.DEBUG)
    dead = "http://127.0.0.1:1/actions/T0WA0ACCESS/1/secret-token"
    assert post(client, block_action(ADMIN, "wa_cancel", "p", dead)).status_code == 200
    audit = slash_command(ADMIN, "verify", dead, command="/wa-audit")
    assert post(client, audit).status_code == 200
    deadline = time.monotonic() + 10  # /wa-audit answers from a lazy listener's thread
    while time.monotonic() < deadline and caplog.text.count("could not answer") < 2:
        time.sleep(0.02)
    assert caplog.text.count("could not answer through the response_url (URLError)") == 2
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "secret-token" not in caplog.text


def test_a_request_no_listener_takes_is_logged_without_what_people_typed(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    dialog = {
        "type": "dialog_submission",
        "callback_id": "old_dialog",
        "submission": {"code": "493021", "note": "gIkuvaNzQIHg97ATvDxqgjtO"},
        "user": _CLICKER,
    }
    assert _signed(client, json.dumps(dialog), "application/json").status_code == 404
    assert "493021" not in caplog.text and "gIkuvaNzQIHg97ATvDxqgjtO" not in caplog.text
    assert "no listener for this request (dialog_submission, old_dialog)" in caplog.text


# -- the body: at most MAX_BODY_BYTES however it is framed, and bytes before text ---------


def _sign_bytes(body: bytes, secret: str = SIGNING_SECRET) -> dict[str, str]:
    """Slack's v0 signature over raw bytes, which need not be UTF-8."""
    ts = str(int(time.time()))
    mac = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256)
    return {
        "Content-Type": FORM,
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": "v0=" + mac.hexdigest(),
    }


def _chunked(client: FlaskClient, body: bytes, headers: dict[str, str]) -> Any:
    """POSTed as a server passes on a chunked body: no usable length, the stream ends it.

    (The test client always sets Content-Length; `Transfer-Encoding: chunked`
    overrides it, as it does on the wire.)
    """
    return client.post(
        "/slack/events",
        input_stream=io.BytesIO(body),
        headers={**headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def command_of_exactly(size: int, response_url: str) -> bytes:
    """`/wa-role show` by the admin, padded with a field nobody reads to `size` bytes."""
    base = slash_command(ADMIN, "show", response_url) + "&pad="
    return (base + "x" * (size - len(base))).encode()


def test_a_chunked_body_past_the_cap_signed_over_its_first_bytes_is_413_not_run(
    client: FlaskClient, slack: FakeSlack, db: Database
) -> None:
    """A stream cut at the cap looked like a whole body whose signature held."""
    head = command_of_exactly(MAX_BODY_BYTES, slack.response_url())
    body = head + b"&more=" + b"y" * (1017 - 6)
    assert len(body) == MAX_BODY_BYTES + 1017
    before = len(audit_rows(db))
    answer = _chunked(client, body, _sign_bytes(head))
    assert answer.status_code == 413
    assert answer.get_json()["error"] == "request_entity_too_large"
    assert len(audit_rows(db)) == before
    assert slack.calls == [] and slack.responses() == []


def test_a_correctly_signed_chunked_body_past_the_cap_is_413(
    client: FlaskClient, slack: FakeSlack
) -> None:
    body = command_of_exactly(MAX_BODY_BYTES + 1, slack.response_url())
    answer = _chunked(client, body, _sign_bytes(body))
    assert answer.status_code == 413
    assert answer.get_json()["error"] == "request_entity_too_large"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_of_exactly_the_cap_is_read_whole(
    client: FlaskClient, slack: FakeSlack, framing: str
) -> None:
    body = command_of_exactly(MAX_BODY_BYTES, slack.response_url())
    headers = _sign_bytes(body)
    if framing == "chunked":
        answer = _chunked(client, body, headers)
    else:
        answer = client.post("/slack/events", data=body, headers=headers)
    assert answer.status_code == 200
    assert answer.get_json()["text"].startswith(f"Grants of <@{ADMIN}>")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"command=%2Fwa-role&text=show\xff&user_id=" + ADMIN.encode(), FORM),
        (b'{"type": "event_callback", "note": "\xc3\x28"}', "application/json"),
        (b"payload=" + b"\xed\xa0\x80", FORM),  # an encoded surrogate: not UTF-8 either
    ],
)
def test_a_signed_body_that_is_not_utf8_is_a_400_with_json(
    client: FlaskClient, caplog: pytest.LogCaptureFixture, body: bytes, content_type: str
) -> None:
    """The signature is over bytes; only once it holds is the text decoded."""
    headers = {**_sign_bytes(body), "Content-Type": content_type}
    answer = client.post("/slack/events", data=body, headers=headers)
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "malformed_payload"
    assert "UTF-8" in answer.get_json()["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_body_that_is_not_utf8_and_not_signed_is_a_401(client: FlaskClient) -> None:
    body = b"command=%2Fwa-role&text=show\xff&user_id=" + ADMIN.encode()
    headers = _sign_bytes(body, secret="not-the-signing-secret")
    assert client.post("/slack/events", data=body, headers=headers).status_code == 401


def test_a_literal_nul_in_a_signed_form_body_is_a_400(client: FlaskClient) -> None:
    """PostgreSQL refuses NUL in text: refused at the door, as `%00` already was."""
    body = slash_command(ADMIN, "show", "https://hooks.slack.com/x").replace(
        "user_name=", "user_name=a\x00b", 1
    )
    answer = client.post("/slack/events", data=body.encode(), headers=signed_headers(body))
    assert answer.status_code == 200 and "NUL" in answer.get_json()["text"]


def test_a_newcomers_long_or_odd_slack_name_is_stored_not_a_failure(
    client: FlaskClient, db: Database
) -> None:
    """Slack's `user_name` went into users.name as sent: past 200 characters, or with a
    control character, PostgreSQL refused the insert and the person saw an error."""
    newcomer = "U0NEWBIE01"
    body = slash_command(newcomer, "show", "https://hooks.slack.com/x").replace(
        f"user_name={newcomer.lower()}", "user_name=" + "n" * 300 + "%07", 1
    )
    answer = client.post("/slack/events", data=body.encode(), headers=signed_headers(body))
    assert answer.status_code == 200
    assert "Something went wrong" not in answer.get_json()["text"]
    with db.read() as session:
        assert session.get(User, newcomer).name == "n" * 200  # type: ignore[union-attr]
