"""/wa-role from Slack: signed requests in, Block Kit out, buttons that re-check."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from slack_bolt import Ack, App, BoltRequest, BoltResponse
from slack_bolt.kwargs_injection import build_required_kwargs

from bot.app import MAX_BODY_BYTES, create_app
from bot.config import Settings
from bot.demo.fake_slack import FakeSlack
from bot.runtime import build_runtime
from bot.slack.adapter import BodyMatcher, LeanApp, LeanListener
from bot.slack.app import build_slack_app
from handlers.slack.access import APPROVE_ACTION, DENY_ACTION, REQUEST_BUTTON, REQUEST_VIEW
from handlers.slack.audit import OLDER_ACTION
from handlers.slack.blocks import CANCEL_ACTION, CONFIRM_ACTION
from handlers.slack.review import KEEP_ACTION, PAGE_ACTION, REVOKE_ACTION
from handlers.slack.stepup import CALLBACK_ID as STEPUP_VIEW
from rbac_core import Database, Gate, ManualClock

from .conftest import ADMIN, ALICE, BOB
from .helpers import audit_rows, deliver_notices, live_grants, run
from .slack_requests import (
    SIGNING_SECRET,
    app_home_opened,
    block_action,
    signed_headers,
    slash_command,
    view_submission,
)

CAROL_NEW = "U0NEWCAROL"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    fake.add_user(CAROL_NEW, "carol")
    fake.add_user("U0GONE001", "gone", deleted=True)
    yield fake
    fake.stop()


@pytest.fixture
def make_app(
    db_url: str, slack: FakeSlack, team: dict[str, str], clock: ManualClock
) -> Callable[..., FlaskClient]:
    """The real app against the fake Slack; keyword arguments override settings."""

    def build(**overrides: Any) -> FlaskClient:
        settings = Settings(
            database_url=db_url,
            slack_signing_secret=SIGNING_SECRET,
            slack_bot_token="xoxb-0000-test",
            slack_api_url=slack.url,
            **overrides,
        )
        return create_app(build_runtime(settings, clock=clock)).test_client()

    return build


@pytest.fixture
def client(make_app: Callable[..., FlaskClient]) -> FlaskClient:
    return make_app()


def post(client: FlaskClient, body: str, **header_overrides: Any) -> Any:
    headers = signed_headers(body)
    headers.update(header_overrides)
    return client.post("/slack/events", data=body, headers=headers)


def command(
    client: FlaskClient, slack: FakeSlack, user: str, text: str, name: str = "/wa-role"
) -> dict[str, Any]:
    response = post(client, slash_command(user, text, slack.response_url(), command=name))
    assert response.status_code == 200
    return json.loads(response.data)


def click(
    client: FlaskClient, slack: FakeSlack, user: str, action: str, pending: str, name: str = "r1"
) -> dict[str, Any]:
    before = len(slack.responses())
    response = post(client, block_action(user, action, pending, slack.response_url(name)))
    assert response.status_code == 200
    posted = slack.responses()[before:]
    assert len(posted) == 1, posted
    return posted[0]


def enrol_2fa(app: FlaskClient, slack: FakeSlack, clock: ManualClock, user: str) -> Any:
    """`/wa-2fa enroll`, then `verify` with a code from the secret sent by DM: the TOTP."""
    import pyotp

    command(app, slack, user, "enroll", "/wa-2fa")
    secret = slack.named("chat.postMessage")[-1].body["blocks"][0]["text"]["text"].split("`")[1]
    totp = pyotp.TOTP(secret)
    command(app, slack, user, f"verify {totp.at(clock())}", "/wa-2fa")
    return totp


def support_alice(app: FlaskClient, slack: FakeSlack) -> None:
    """The admin makes Alice support staff, confirming by the button."""
    reply = command(app, slack, ADMIN, f"assign <@{ALICE}> support")
    click(app, slack, ADMIN, "wa_confirm", pending_of(reply))


def alice_asks(app: FlaskClient, slack: FakeSlack, wanted: str) -> dict[str, Any]:
    """Alice, made support staff, runs `/wa-role request {wanted}`: its reply."""
    support_alice(app, slack)
    return command(app, slack, ALICE, f"request {wanted}")


def pending_of(reply: dict[str, Any]) -> str:
    actions = [b for b in reply["blocks"] if b["type"] == "actions"]
    assert actions, reply
    return str(actions[0]["elements"][0]["value"])


def test_show_answers_ephemerally_with_the_callers_grants(
    client: FlaskClient, slack: FakeSlack
) -> None:
    reply = command(client, slack, ADMIN, "show")
    assert reply["response_type"] == "ephemeral"
    assert f"Grants of <@{ADMIN}>" in reply["blocks"][0]["text"]["text"]


def test_assign_asks_for_confirmation_and_the_click_updates_the_message(
    client: FlaskClient, slack: FakeSlack, db: Database
) -> None:
    reply = command(
        client, slack, ADMIN, f"assign <@{ALICE}|alice> agent --number +15550001111 --for 30d"
    )
    assert "Please confirm: assign agent to" in reply["text"]
    buttons = next(b for b in reply["blocks"] if b["type"] == "actions")["elements"]
    assert [b["action_id"] for b in buttons] == ["wa_confirm", "wa_cancel"]
    assert live_grants(db, ALICE) == []
    update = click(client, slack, ADMIN, "wa_confirm", pending_of(reply))
    assert update["replace_original"] is True
    assert f"Assigned agent to <@{ALICE}> in +15550001111" in update["text"]
    assert live_grants(db, ALICE) == [(ALICE, "agent", "+15550001111")]


def test_only_the_actor_can_confirm_and_the_original_is_left_alone(
    client: FlaskClient, slack: FakeSlack, db: Database
) -> None:
    reply = command(client, slack, ADMIN, f"assign <@{ALICE}> agent")
    other = click(client, slack, BOB, "wa_confirm", pending_of(reply))
    assert other["replace_original"] is False
    assert "can confirm or cancel" in other["text"]
    assert live_grants(db, ALICE) == []


def test_a_second_click_and_a_late_click_are_refused_politely(
    client: FlaskClient, slack: FakeSlack, clock: ManualClock
) -> None:
    reply = command(client, slack, ADMIN, f"assign <@{ALICE}> agent")
    pending = pending_of(reply)
    assert "Assigned" in click(client, slack, ADMIN, "wa_confirm", pending)["text"]
    assert "already confirmed" in click(client, slack, ADMIN, "wa_confirm", pending)["text"]
    late = command(client, slack, ADMIN, f"assign <@{BOB}> analyst")
    clock.advance(301)
    assert "expired" in click(client, slack, ADMIN, "wa_confirm", pending_of(late))["text"]


def test_a_grant_revoked_before_the_click_refuses_the_click(
    client: FlaskClient, slack: FakeSlack, db: Database, clock: ManualClock
) -> None:
    from rbac_core import build_gate

    gate = build_gate(Database(db.url), clock=clock)
    assert run(
        gate, ADMIN, "role.create", name="lead", perms=["roles:assign"], inherits=["agent"]
    ).ok
    assert run(gate, ADMIN, "role.assign", user=BOB, role="lead").ok
    reply = command(client, slack, BOB, f"assign <@{ALICE}> support")
    assert run(gate, ADMIN, "role.revoke", user=BOB, role="lead").ok
    refused = click(client, slack, BOB, "wa_confirm", pending_of(reply))
    assert "not allowed" in refused["text"]
    assert live_grants(db, ALICE) == []
    gate.db.dispose()


def test_cancel_updates_the_message_and_changes_nothing(
    client: FlaskClient, slack: FakeSlack, db: Database
) -> None:
    reply = command(client, slack, ADMIN, f"assign <@{ALICE}> agent")
    update = click(client, slack, ADMIN, "wa_cancel", pending_of(reply))
    assert update["replace_original"] is True and update["text"].startswith("Cancelled")
    assert live_grants(db, ALICE) == []


def test_a_newcomer_is_looked_up_in_slack(
    client: FlaskClient, slack: FakeSlack, db: Database
) -> None:
    reply = command(client, slack, ADMIN, f"assign <@{CAROL_NEW}|carol> analyst")
    assert "Please confirm" in reply["text"]
    assert [c.body["user"] for c in slack.named("users.info")] == [CAROL_NEW]


def test_registering_people_seen_in_slack_passes_the_gate_and_is_audited(
    client: FlaskClient, slack: FakeSlack, db: Database, gate: Gate
) -> None:
    """A newcomer's first signed command registers them; a person a command names is
    registered on Slack's word (users.info), by whoever named them. Once each."""
    newcomer = "U0NEWBIE01"
    command(client, slack, newcomer, "show")
    command(client, slack, newcomer, "show")
    command(client, slack, ADMIN, f"assign <@{CAROL_NEW}|carol> analyst")
    seen = [
        (r.actor, r.surface, r.target, json.loads(r.details)["via"])
        for r in audit_rows(db)
        if r.action == "user.seen"
    ]
    assert seen == [
        (newcomer, "slack", f"user:{newcomer}", "request"),
        (ADMIN, "slack", f"user:{CAROL_NEW}", "users.info"),
    ]
    assert gate.knows(newcomer) and gate.knows(CAROL_NEW)
    # No other surface registers people this way: the CLI has `user add`.
    refused = gate.submit("operator", "cli", "user.seen", {"user": "U0OTHER01", "via": "request"})
    assert refused.status == "refused" and not gate.knows("U0OTHER01")


@pytest.mark.parametrize("user", ["U0NOSUCH01", "U0GONE001"])
def test_people_slack_does_not_know_or_has_deleted_are_unknown(
    client: FlaskClient, slack: FakeSlack, db: Database, user: str
) -> None:
    reply = command(client, slack, ADMIN, f"assign <@{user}> analyst")
    assert f"unknown user <@{user}>" in reply["text"]
    assert "actions" not in {b["type"] for b in reply["blocks"]}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("frobnicate", "unknown subcommand 'frobnicate'"),
        ("assign", "missing USER"),
        ("assign @alice agent", "is not a mention"),
        (f"assign <@{ALICE}> agent --for soon", "not a duration"),
        (f"assign <@{ALICE}> agent --number 12", "not a phone number"),
        (f"assign <@{ALICE}> wizard", "unknown role"),
        ("delete admin", "built-in role"),
        ('assign <@U0ALICE01> agent --reason "open', "not closed"),
    ],
)
def test_malformed_commands_get_a_specific_ephemeral_answer(
    client: FlaskClient, slack: FakeSlack, text: str, expected: str
) -> None:
    reply = command(client, slack, ADMIN, text)
    assert reply["response_type"] == "ephemeral"
    assert expected in reply["text"]


def test_help_lists_only_what_the_caller_may_do(client: FlaskClient, slack: FakeSlack) -> None:
    assert "/wa-role assign" in command(client, slack, ADMIN, "help")["text"]
    newcomer = command(client, slack, ALICE, "")["text"]
    assert "/wa-role show" in newcomer and "/wa-role assign" not in newcomer


def test_user_text_cannot_forge_mentions_or_links(client: FlaskClient, slack: FakeSlack) -> None:
    reply = command(client, slack, ADMIN, f"assign <@{ALICE}> agent --reason <!channel> & co")
    click(client, slack, ADMIN, "wa_confirm", pending_of(reply))
    shown = command(client, slack, ADMIN, f"show <@{ALICE}>")
    assert "reason: &lt;!channel&gt; &amp; co" in shown["text"]
    assert "<!channel>" not in json.dumps(shown)


@pytest.mark.parametrize(
    "tamper",
    [
        {"X-Slack-Signature": "v0=" + "0" * 64},
        {"X-Slack-Request-Timestamp": str(int(time.time()) - 301)},
        {"X-Slack-Signature": ""},
    ],
    ids=["bad signature", "stale timestamp", "unsigned"],
)
def test_unverified_requests_are_401_and_reach_nothing(
    client: FlaskClient, slack: FakeSlack, db: Database, tamper: dict[str, str]
) -> None:
    before = len(audit_rows(db))
    body = slash_command(ADMIN, "list", slack.response_url())
    response = post(client, body, **tamper)
    assert response.status_code == 401
    assert len(audit_rows(db)) == before


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_an_oversized_body_is_413_before_anything_reads_it(
    client: FlaskClient, slack: FakeSlack, db: Database, declared: bool
) -> None:
    """The signature covers the whole body: one past the cap is never read."""
    before = len(audit_rows(db))
    text = "show " + "x" * MAX_BODY_BYTES
    body = slash_command(ADMIN, text, slack.response_url())
    headers = signed_headers(body)  # even correctly signed
    if declared:
        response = client.post("/slack/events", data=body, headers=headers)
    else:  # no Content-Length: the server says the stream ends where the body does
        response = client.post(
            "/slack/events",
            input_stream=io.BytesIO(body.encode()),
            headers=headers,
            environ_overrides={"wsgi.input_terminated": True},
        )
    assert response.status_code == 413
    assert response.get_json()["error"] == "request_entity_too_large"
    assert len(audit_rows(db)) == before
    assert slack.calls == [] and slack.responses() == []


def test_a_stale_but_correctly_signed_request_is_refused(
    client: FlaskClient, slack: FakeSlack
) -> None:
    body = slash_command(ADMIN, "list", slack.response_url())
    headers = signed_headers(body, timestamp=int(time.time()) - 600)
    assert client.post("/slack/events", data=body, headers=headers).status_code == 401


def test_bolts_internal_lazy_headers_are_not_taken_from_the_wire(
    client: FlaskClient, slack: FakeSlack
) -> None:
    """`X-Slack-Bolt-Lazy-*` exist for a process re-invoking itself; sent from outside
    they would ask Bolt to skip the listener's answer. Only the headers Slack sends
    reach Bolt, so such a request is answered like any other."""
    body = slash_command(ADMIN, "show", slack.response_url())
    response = post(
        client,
        body,
        **{"X-Slack-Bolt-Lazy-Only": "true", "X-Slack-Bolt-Lazy-Function-Name": "role_command"},
    )
    assert response.status_code == 200
    assert json.loads(response.data)["text"].startswith(f"Grants of <@{ADMIN}>")


def test_a_query_string_on_the_events_url_changes_nothing(
    client: FlaskClient, slack: FakeSlack
) -> None:
    body = slash_command(ADMIN, "show", slack.response_url())
    response = client.post("/slack/events?source=proxy", data=body, headers=signed_headers(body))
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert json.loads(response.data)["response_type"] == "ephemeral"


def _bolt_request(body: str) -> BoltRequest:
    headers = {k.lower(): [v] for k, v in signed_headers(body).items()}
    return BoltRequest(body=body, headers=headers)


@pytest.fixture
def slack_settings(db_url: str, slack: FakeSlack, team: dict[str, str]) -> Settings:
    return Settings(
        database_url=db_url,
        slack_signing_secret=SIGNING_SECRET,
        slack_bot_token="xoxb-0000-test",
        slack_api_url=slack.url,
    )


def every_kind_of_payload(url: str) -> list[str]:
    """One payload per listener this app registers, and a few that match none."""
    return [
        slash_command(ADMIN, "show", url),
        slash_command(ADMIN, "verify 123456", url, command="/wa-2fa"),
        slash_command(ADMIN, "log", url, command="/wa-audit"),
        slash_command(ADMIN, "+16505551234 --template welcome", url, command="/wa-send"),
        slash_command(ADMIN, "show", url, command="/someone-elses"),
        *(
            block_action(ADMIN, action, "p1", url)
            for action in (
                CONFIRM_ACTION,
                CANCEL_ACTION,
                APPROVE_ACTION,
                DENY_ACTION,
                REQUEST_BUTTON,
                OLDER_ACTION,
                REVOKE_ACTION,
                KEEP_ACTION,
                PAGE_ACTION,
                "no_such_button",
            )
        ),
        app_home_opened(ADMIN),
        view_submission(ADMIN, STEPUP_VIEW, "{}", {}),
        view_submission(ADMIN, REQUEST_VIEW, "{}", {}),
        view_submission(ADMIN, "not_ours", "{}", {}),
    ]


def test_listeners_get_the_apps_own_client_and_everything_else_bolt_gives_them(
    slack_settings: Settings, slack: FakeSlack
) -> None:
    """LeanApp skips Bolt's client per request; a Bolt that put more into the
    context than LeanApp does would fail here rather than in production."""
    app = build_slack_app(build_runtime(slack_settings))
    assert isinstance(app, LeanApp)
    body = slash_command(ADMIN, "show", slack.response_url())
    ours, bolts = _bolt_request(body), _bolt_request(body)
    app._init_context(ours)
    App._init_context(app, bolts)
    assert ours.context.keys() == bolts.context.keys()
    assert ours.context["client"] is app.client
    for setting in ("token", "base_url", "timeout", "ssl", "proxy", "headers", "retry_handlers"):
        assert getattr(bolts.context["client"], setting) == getattr(app.client, setting), setting
    assert ours.context["logger"] is bolts.context["logger"]
    assert ours.context["listener_runner"] is bolts.context["listener_runner"]
    for key in ours.context.keys() - {"client"}:
        assert ours.context[key] == bolts.context[key], key


def test_the_shared_client_comes_out_of_every_request_unchanged(
    slack_settings: Settings, slack: FakeSlack
) -> None:
    app = build_slack_app(build_runtime(slack_settings))
    before = (app.client.token, dict(app.client.default_params), dict(app.client.headers))
    for body in every_kind_of_payload(slack.response_url()):
        assert app.dispatch(_bolt_request(body)).status in (200, 404), body
    assert (app.client.token, app.client.default_params, app.client.headers) == before


def test_lean_app_refuses_what_would_write_a_token_into_the_shared_client() -> None:
    def authorize(**kwargs: Any) -> None:
        return None

    with pytest.raises(ValueError, match="AttachingFunctionToken"):
        LeanApp(signing_secret=SIGNING_SECRET, token="xoxb-1", token_verification_enabled=False)
    with pytest.raises(ValueError, match="MultiTeamsAuthorization"):
        LeanApp(
            signing_secret=SIGNING_SECRET,
            authorize=authorize,
            attaching_function_token_enabled=False,
        )


def test_every_listener_matches_exactly_what_bolts_own_matchers_match(
    slack_settings: Settings, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = build_runtime(slack_settings)
    lean = build_slack_app(runtime)
    monkeypatch.setattr("bot.slack.app.LeanApp", App)
    plain = build_slack_app(runtime)
    assert type(plain) is App
    assert len(lean._listeners) == len(plain._listeners)
    assert all(isinstance(listener.matchers[0], BodyMatcher) for listener in lean._listeners)
    matched = set()
    for body in every_kind_of_payload(slack.response_url()):
        request = _bolt_request(body)
        response = BoltResponse(status=200)
        ours = [lst.matches(req=request, resp=response) for lst in lean._listeners]
        bolts = [lst.matches(req=request, resp=response) for lst in plain._listeners]
        assert ours == bolts, body
        matched.update(i for i, hit in enumerate(ours) if hit)
    assert matched == set(range(len(lean._listeners)))  # the sample reaches every listener


def test_every_listener_gets_exactly_the_arguments_bolt_would_give_it(
    slack_settings: Settings, slack: FakeSlack
) -> None:
    """LeanListener builds only the arguments a listener names; each must be the very
    object Bolt's own injection passes, for every kind of payload that reaches it."""
    app = build_slack_app(build_runtime(slack_settings))
    assert all(type(listener) is LeanListener for listener in app._listeners)
    compared = 0
    for body in every_kind_of_payload(slack.response_url()):
        request = _bolt_request(body)
        app._init_context(request)
        response = BoltResponse(status=200)
        for listener in app._listeners:
            if not listener.matches(req=request, resp=response):
                continue
            passed: dict[str, Any] = {}
            names, function = list(listener.arg_names), listener.ack_function
            listener.ack_function = lambda _into=passed, **kwargs: _into.update(kwargs)
            try:
                listener.run_ack_function(request=request, response=response)
            finally:
                listener.ack_function = function
            bolts = build_required_kwargs(
                logger=listener.logger,
                required_arg_names=names,
                request=request,
                response=response,
                this_func=function,
            )
            assert passed.keys() == bolts.keys() == set(names), body
            for name, value in bolts.items():
                assert passed[name] is value or passed[name] == value, (name, body)
            compared += 1
    assert compared >= len(app._listeners)


def test_a_listener_naming_an_argument_lean_does_not_build_gets_bolts_own(
    slack_settings: Settings, slack: FakeSlack
) -> None:
    app = build_slack_app(build_runtime(slack_settings))
    seen: dict[str, Any] = {}

    @app.command("/wa-lean-test")
    def answer(ack: Ack, payload: dict[str, Any], next: Any, logger: Any) -> None:
        seen.update(payload=payload, logger=logger)
        ack("ok")

    listener = app._listeners[-1]
    assert type(listener) is LeanListener
    request = _bolt_request(slash_command(ADMIN, "x", slack.response_url(), "/wa-lean-test"))
    app._init_context(request)
    listener.run_ack_function(request=request, response=BoltResponse(status=200))
    assert seen["payload"]["command"] == "/wa-lean-test"
    assert seen["logger"] is listener.logger


@pytest.fixture
def client_2fa(make_app: Callable[..., FlaskClient]) -> FlaskClient:
    return make_app(secret_key="s" * 40, alert_channel="C0SECURITY")


def test_2fa_enrolment_sends_the_secret_by_dm_only(
    client_2fa: FlaskClient,
    slack: FakeSlack,
    clock: ManualClock,
    db: Database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    import pyotp

    caplog.set_level(logging.DEBUG)
    reply = command(client_2fa, slack, ALICE, "enroll", "/wa-2fa")
    assert "I sent you a DM" in reply["text"]
    dm = slack.named("chat.postMessage")[-1].body
    opened = slack.named("conversations.open")[-1].body
    assert opened["users"] == ALICE and dm["channel"] == "D0ALICE01"
    png = next(c for c in slack.calls if c.method.startswith("upload/")).body["content"]
    assert png.startswith(b"\x89PNG")  # the QR code, uploaded to the same DM
    assert slack.named("files.completeUploadExternal")[-1].body["channel_id"] == "D0ALICE01"
    secret = dm["blocks"][0]["text"]["text"].split("`")[1]
    assert secret not in json.dumps(reply)
    code = pyotp.TOTP(secret).at(clock())
    assert "2FA is now on" in command(client_2fa, slack, ALICE, f"verify {code}", "/wa-2fa")["text"]
    replay = command(client_2fa, slack, ALICE, f"verify {code}", "/wa-2fa")
    assert "already used" in replay["text"]
    trail = " ".join(r.details for r in audit_rows(db))
    assert secret not in trail and code not in trail
    assert secret not in caplog.text and code not in caplog.text


def test_the_fifth_wrong_code_locks_and_alerts_security(
    client_2fa: FlaskClient, slack: FakeSlack, clock: ManualClock
) -> None:

    totp = enrol_2fa(client_2fa, slack, clock, ALICE)
    clock.advance(60)
    wrong = "000000" if totp.at(clock()) != "000000" else "111111"
    for _ in range(4):
        answer = command(client_2fa, slack, ALICE, f"verify {wrong}", "/wa-2fa")
        assert "not right" in answer["text"]
    assert not [c for c in slack.named("chat.postMessage") if c.body["channel"] == "C0SECURITY"]
    locked = command(client_2fa, slack, ALICE, f"verify {wrong}", "/wa-2fa")
    assert "locked until" in locked["text"]
    assert deliver_notices(client_2fa) == 1  # the alert left through the outbox
    alerts = [c for c in slack.named("chat.postMessage") if c.body["channel"] == "C0SECURITY"]
    assert len(alerts) == 1 and f"<@{ALICE}>" in alerts[0].body["text"]


def test_role_changes_are_posted_to_the_audit_channel(
    make_app: Callable[..., FlaskClient], slack: FakeSlack, clock: ManualClock
) -> None:
    app = make_app(audit_channel="C0WAAUDIT")
    reply = command(
        app,
        slack,
        ADMIN,
        f"assign <@{ALICE}> agent --number +15550001111 --for 30d --reason on call",
    )
    click(app, slack, ADMIN, "wa_confirm", pending_of(reply))
    reply = command(app, slack, ADMIN, f"revoke <@{ALICE}> agent --number +15550001111")
    click(app, slack, ADMIN, "wa_confirm", pending_of(reply), name="r2")
    assert not slack.named("chat.postMessage")  # the answers did not wait for the posts
    assert deliver_notices(app) == 2
    posts = [
        c.body["text"] for c in slack.named("chat.postMessage") if c.body["channel"] == "C0WAAUDIT"
    ]
    assert len(posts) == 2
    assert posts[0].startswith(f"<@{ADMIN}> assigned *agent* to <@{ALICE}> in +15550001111")
    assert "until" in posts[0] and "Reason: on call" in posts[0]
    assert posts[1].startswith(f"<@{ADMIN}> revoked *agent* from <@{ALICE}>")


def test_access_requests_go_to_approvers_and_are_decided_by_buttons(
    make_app: Callable[..., FlaskClient], slack: FakeSlack, clock: ManualClock, db: Database
) -> None:
    app = make_app(audit_channel="C0WAAUDIT")
    asked = alice_asks(app, slack, "agent --for 4h --reason covering the night shift")
    assert "Approvers are being told in the approvers' channel." in asked["text"]
    deliver_notices(app)
    posted = [c.body for c in slack.named("chat.postMessage") if c.body["channel"] == "C0WAAUDIT"]
    request_post = (
        json.loads(posted[-1]["blocks"])
        if isinstance(posted[-1]["blocks"], str)
        else posted[-1]["blocks"]
    )
    assert f"<@{ALICE}> asks for *agent*" in request_post[0]["text"]["text"]
    request_id = request_post[1]["elements"][0]["value"]
    own = click(app, slack, ALICE, "wa_access_approve", request_id, name="own")
    assert own["replace_original"] is False and "you need access:approve" in own["text"]
    decided = click(app, slack, ADMIN, "wa_access_approve", request_id, name="adm")
    assert decided["replace_original"] is True
    assert f"<@{ADMIN}> approved <@{ALICE}>'s request for *agent*" in decided["text"]
    deliver_notices(app)
    dms = [c.body for c in slack.named("chat.postMessage") if c.body["channel"] == ALICE]
    assert "was approved" in dms[-1]["text"]
    assert (ALICE, "agent", "*") in live_grants(db, ALICE)
    again = click(app, slack, ADMIN, "wa_access_deny", request_id, name="again")
    assert "already approved" in again["text"]


def test_app_home_shows_roles_2fa_and_requests_waiting_for_an_approver(
    make_app: Callable[..., FlaskClient], slack: FakeSlack, clock: ManualClock
) -> None:
    from .slack_requests import app_home_opened

    app = make_app(audit_channel="C0WAAUDIT")
    reply = command(app, slack, ADMIN, f"assign <@{ALICE}> support --number +15550001111")
    click(app, slack, ADMIN, "wa_confirm", pending_of(reply))
    command(app, slack, ALICE, "request agent --number +15550001111 --for 4h --reason cover")

    def home(user: str) -> str:
        body = app_home_opened(user, event_id=f"Ev0HOME{user}")  # each opening is an event
        headers = {**signed_headers(body), "Content-Type": "application/json"}
        assert app.post("/slack/events", data=body, headers=headers).status_code == 200
        published = slack.named("views.publish")[-1].body
        assert published["user_id"] == user
        view = published["view"]
        return view if isinstance(view, str) else json.dumps(view)

    alice = home(ALICE)
    assert "*support* in +15550001111" in alice and "Your pending requests" in alice
    assert "2FA: off" in alice and "Waiting for your decision" not in alice
    admin = home(ADMIN)
    assert "Waiting for your decision" in admin and "wa_access_approve" in admin
    assert "Latest access review" not in alice  # only for those who may read the audit log
    assert "*Latest access review*\\nNone has run yet." in admin


def test_a_sensitive_command_asks_for_a_code_in_a_modal_then_carries_on(
    client_2fa: FlaskClient, slack: FakeSlack, clock: ManualClock, db: Database
) -> None:
    from rbac_core.clock import utcnow

    from .helpers import give_2fa
    from .slack_requests import view_submission

    totp = enrol_2fa(client_2fa, slack, clock, ADMIN)
    give_2fa(db, ALICE, utcnow(clock))
    clock.advance(11 * 60)
    asked = command(client_2fa, slack, ADMIN, f"assign <@{ALICE}> developer")
    assert "enter a 2FA code" in asked["text"]
    modal = slack.named("views.open")[-1].body["view"]
    modal = json.loads(modal) if isinstance(modal, str) else modal
    meta = modal["private_metadata"]

    def submit(code: str) -> Any:
        body = view_submission(
            ADMIN,
            "wa_stepup",
            meta,
            {"code": {"code": {"type": "plain_text_input", "value": code}}},
        )
        return post(client_2fa, body)

    wrong = submit("000000" if totp.at(clock()) != "000000" else "111111")
    assert wrong.status_code == 200 and json.loads(wrong.data)["response_action"] == "errors"
    right = submit(totp.at(clock()))
    assert right.status_code == 200 and not right.data.strip()
    follow_up = slack.responses()[-1]
    assert "Please confirm: assign developer to" in follow_up["text"]
    pending = next(b for b in follow_up["blocks"] if b["type"] == "actions")["elements"][0]
    done = click(client_2fa, slack, ADMIN, "wa_confirm", pending["value"], name="r9")
    assert "Assigned developer" in done["text"]
    assert (ALICE, "developer", "*") in live_grants(db, ALICE)


def test_a_denial_explained_by_why_offers_a_request_access_form(
    make_app: Callable[..., FlaskClient], slack: FakeSlack, clock: ManualClock, db: Database
) -> None:
    from .slack_requests import view_submission

    app = make_app(audit_channel="C0WAAUDIT")
    support_alice(app, slack)
    why = command(app, slack, ALICE, f"why <@{ALICE}> messages:send_text")
    assert "may not use messages:send_text" in why["text"]
    button = next(b for b in why["blocks"] if b["type"] == "actions")["elements"][0]
    assert button["action_id"] == "wa_request_access"
    post(app, block_action(ALICE, "wa_request_access", button["value"], slack.response_url("w")))
    form = slack.named("views.open")[-1].body["view"]
    form = json.loads(form) if isinstance(form, str) else form
    roles = [o["value"] for o in form["blocks"][1]["element"]["options"]]
    assert roles[0] == "agent" and "admin" in roles and "support" not in roles
    values = {
        "role": {"role": {"type": "static_select", "selected_option": {"value": "agent"}}},
        "for": {"for": {"type": "plain_text_input", "value": "forever"}},
        "reason": {"reason": {"type": "plain_text_input", "value": "night shift"}},
    }
    bad = post(
        app, view_submission(ALICE, "wa_request_access_view", form["private_metadata"], values)
    )
    assert json.loads(bad.data)["errors"]["for"].startswith("'forever' is not a duration")
    values["for"]["for"]["value"] = "4h"
    good = post(
        app, view_submission(ALICE, "wa_request_access_view", form["private_metadata"], values)
    )
    assert good.status_code == 200 and not good.data.strip()
    deliver_notices(app)
    posts = [c.body for c in slack.named("chat.postMessage") if c.body["channel"] == "C0WAAUDIT"]
    assert any("asks for *agent*" in p["text"] for p in posts)
    assert "Asked for agent" in slack.responses()[-1]["text"]


def test_approving_a_sensitive_request_asks_the_approver_for_a_code_then_decides(
    make_app: Callable[..., FlaskClient], slack: FakeSlack, clock: ManualClock, db: Database
) -> None:
    from rbac_core.clock import utcnow

    from .helpers import give_2fa
    from .slack_requests import view_submission

    app = make_app(secret_key="s" * 40, audit_channel="C0WAAUDIT")
    totp = enrol_2fa(app, slack, clock, ADMIN)
    give_2fa(db, ALICE, utcnow(clock))
    alice_asks(app, slack, "developer --for 2h --reason release night")
    deliver_notices(app)
    posted = [c.body for c in slack.named("chat.postMessage") if c.body["channel"] == "C0WAAUDIT"]
    blocks = posted[-1]["blocks"]
    request_id = (json.loads(blocks) if isinstance(blocks, str) else blocks)[1]["elements"][0][
        "value"
    ]
    clock.advance(11 * 60)  # the enrolment code no longer counts as a recent step-up

    asked = click(app, slack, ADMIN, "wa_access_approve", request_id, name="ask")
    assert asked["replace_original"] is False and "enter a 2FA code" in asked["text"]
    assert live_grants(db, ALICE) == [(ALICE, "support", "*")]
    modal = slack.named("views.open")[-1].body["view"]
    modal = json.loads(modal) if isinstance(modal, str) else modal
    assert "Approving this access request" in modal["blocks"][0]["text"]["text"]
    assert request_id in modal["private_metadata"]

    def submit(user: str, code: str) -> Any:
        values = {"code": {"code": {"type": "plain_text_input", "value": code}}}
        return post(app, view_submission(user, "wa_stepup", modal["private_metadata"], values))

    # The metadata carries no authority: someone else submitting it decides nothing.
    before = len(slack.responses())
    theirs = submit(ALICE, totp.at(clock()))
    assert json.loads(theirs.data)["response_action"] == "errors"
    assert live_grants(db, ALICE) == [(ALICE, "support", "*")]

    done = submit(ADMIN, totp.at(clock()))
    assert done.status_code == 200 and not done.data.strip()
    decided = slack.responses()[-1]
    assert len(slack.responses()) > before
    assert decided["replace_original"] is True
    assert f"<@{ADMIN}> approved <@{ALICE}>'s request for *developer*" in decided["text"]
    assert (ALICE, "developer", "*") in live_grants(db, ALICE)
    deliver_notices(app)
    dms = [c.body for c in slack.named("chat.postMessage") if c.body["channel"] == ALICE]
    assert "was approved" in dms[-1]["text"]


def test_a_retried_event_is_handled_once(
    client: FlaskClient, slack: FakeSlack, clock: ManualClock
) -> None:
    """Slack retries with X-Slack-Retry-Num and the same event_id (PROTOCOLS, Events API)."""
    from .slack_requests import app_home_opened

    def deliver(event_id: str, retry: int | None = None) -> None:
        body = app_home_opened(ALICE, event_id=event_id)
        headers = {**signed_headers(body), "Content-Type": "application/json"}
        if retry is not None:
            headers.update(
                {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
            )
        response = client.post("/slack/events", data=body, headers=headers)
        assert response.status_code == 200

    deliver("Ev0RETRY001")
    deliver("Ev0RETRY001", retry=1)
    clock.advance(300)
    deliver("Ev0RETRY001", retry=2)
    assert len(slack.named("views.publish")) == 1
    deliver("Ev0RETRY002")  # the next time Alice opens the tab is a new event
    assert len(slack.named("views.publish")) == 2


def test_a_claimed_delivery_is_released_when_handling_it_fails(db: Database) -> None:
    from rbac_core.store.inbound import InboundEvents

    inbound = InboundEvents(db)
    assert inbound.claim("slack", "Ev0FAIL0001")
    assert not inbound.claim("slack", "Ev0FAIL0001")
    inbound.release("slack", "Ev0FAIL0001")
    assert inbound.claim("slack", "Ev0FAIL0001")
    assert inbound.claim("whatsapp", "Ev0FAIL0001"), "sources do not share ids"
    with pytest.raises(ValueError):
        inbound.claim("slack", "x" * 129)
