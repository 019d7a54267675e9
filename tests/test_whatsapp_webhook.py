"""Meta's webhook door: signed over the raw bytes before anything is parsed, shaped like a
WhatsApp notification, stored durably (once per body) and answered 200 at once."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from bot.app import create_app
from bot.config import Settings
from bot.runtime import build_runtime
from rbac_core import Database, ManualClock
from rbac_core.store.models import InboundWebhook

from .test_metrics import parse
from .whatsapp_requests import (
    APP_SECRET,
    VERIFY_TOKEN,
    as_meta_sends,
    notification,
    signature,
    signed,
    text_message,
)

URL = "/whatsapp/webhook"


@pytest.fixture
def make_client(db_url: str, clock: ManualClock) -> Callable[..., FlaskClient]:
    def build(**overrides: Any) -> FlaskClient:
        wanted: dict[str, Any] = {
            "whatsapp_app_secret": APP_SECRET,
            "whatsapp_verify_token": VERIFY_TOKEN,
            **overrides,
        }
        settings = Settings(database_url=db_url, **wanted)
        return create_app(build_runtime(settings, clock=clock)).test_client()

    return build


@pytest.fixture
def client(make_client: Callable[..., FlaskClient]) -> FlaskClient:
    return make_client()


def stored(db: Database) -> list[InboundWebhook]:
    with db.read() as session:
        return list(session.scalars(select(InboundWebhook).order_by(InboundWebhook.id)))


# -- GET: the subscription check ---------------------------------------------------------


def test_the_challenge_is_echoed_for_the_right_verify_token(client: FlaskClient) -> None:
    query = {
        "hub.mode": "subscribe",
        "hub.challenge": "1158201444",
        "hub.verify_token": VERIFY_TOKEN,
    }
    answer = client.get(URL, query_string=query)
    assert (answer.status_code, answer.get_data(as_text=True)) == (200, "1158201444")
    assert answer.mimetype == "text/plain"


@pytest.mark.parametrize(
    "query",
    [
        {"hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": "guess"},
        {
            "hub.mode": "unsubscribe",
            "hub.challenge": "1158201444",
            "hub.verify_token": VERIFY_TOKEN,
        },
        {"hub.challenge": "1158201444"},
        {},
    ],
)
def test_anything_else_is_forbidden_and_echoes_nothing(
    client: FlaskClient, query: dict[str, str]
) -> None:
    answer = client.get(URL, query_string=query)
    assert answer.status_code == 403
    assert answer.get_json()["error"] == "forbidden"
    assert "1158201444" not in answer.get_data(as_text=True)


@pytest.mark.parametrize("challenge", ["", "x" * 257, "<script>\n"])
def test_a_challenge_worth_echoing_is_short_printable_text(
    client: FlaskClient, challenge: str
) -> None:
    query = {"hub.mode": "subscribe", "hub.challenge": challenge, "hub.verify_token": VERIFY_TOKEN}
    answer = client.get(URL, query_string=query)
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "bad_challenge"


# -- POST: signed, then shaped, then stored ------------------------------------------------


def test_a_signed_notification_is_stored_as_it_came_and_answered_at_once(
    client: FlaskClient, db: Database
) -> None:
    body = as_meta_sends(notification(text_message("Olá, é urgente")))
    assert b"\\u00e9" in body  # Meta escapes non-ASCII: the signature covers these bytes
    answer = client.post(URL, data=body, headers=signed(body))
    assert answer.status_code == 200
    assert answer.get_json() == {"status": "received"}
    [row] = stored(db)
    assert (row.source, row.status, row.attempt) == ("whatsapp", "queued", 0)
    assert row.body == body.decode()


def test_a_retried_body_is_acknowledged_and_kept_once(client: FlaskClient, db: Database) -> None:
    """Meta retries a POST it saw fail for up to seven days, with the same bytes."""
    body = as_meta_sends(notification(text_message()))
    for _ in range(3):
        assert client.post(URL, data=body, headers=signed(body)).status_code == 200
    other = as_meta_sends(notification(text_message("Second message", wamid="wamid.SECOND")))
    assert client.post(URL, data=other, headers=signed(other)).get_json() == {"status": "received"}
    again = client.post(URL, data=body, headers=signed(body))
    assert again.get_json() == {"status": "already received"}
    assert len(stored(db)) == 2


def test_an_unsigned_body_is_401_and_never_stored(client: FlaskClient, db: Database) -> None:
    body = as_meta_sends(notification(text_message()))
    answer = client.post(URL, data=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 401
    assert answer.get_json()["error"] == "unauthorized"
    assert stored(db) == []


def test_an_accepted_body_is_logged_for_debugging_and_a_refused_one_for_the_operator(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Meta delivers by the thousand a second, and /metrics counts them; a refusal is news."""
    caplog.set_level(logging.DEBUG, logger="wa_access.http")
    body = as_meta_sends(notification(text_message()))
    assert client.post(URL, data=body, headers=signed(body)).status_code == 200
    assert (
        client.post(URL, data=body, headers={"Content-Type": "application/json"}).status_code == 401
    )
    levels = [(r.levelno, r.status) for r in caplog.records if r.name == "wa_access.http"]
    assert levels == [(logging.DEBUG, 200), (logging.INFO, 401)]


@pytest.mark.parametrize(
    "header",
    [
        signature(b"another body"),
        signature(as_meta_sends(notification(text_message())), secret="not the app secret"),
        "sha1=" + "0" * 40,
        "sha256=" + "0" * 64,
        "sha256=" + "é" * 64,
        "sha256=",
        "nonsense",
    ],
)
def test_a_signature_that_does_not_hold_is_403_and_reveals_nothing(
    client: FlaskClient, db: Database, header: str
) -> None:
    body = as_meta_sends(notification(text_message()))
    answer = client.post(
        URL, data=body, headers={"Content-Type": "application/json", "X-Hub-Signature-256": header}
    )
    assert answer.status_code == 403
    assert answer.get_json()["error"] == "forbidden"
    assert signature(body)[7:] not in answer.get_data(as_text=True)
    assert stored(db) == []


def test_a_body_changed_after_signing_is_refused(client: FlaskClient, db: Database) -> None:
    """Re-serialising changes the bytes: only the bytes as received are checked."""
    payload = notification(text_message("Olá"))
    body = as_meta_sends(payload)
    reserialised = json.dumps(payload, ensure_ascii=False).encode()
    answer = client.post(URL, data=reserialised, headers=signed(body))
    assert answer.status_code == 403
    assert stored(db) == []


def test_the_hex_digest_is_read_whatever_its_case(client: FlaskClient, db: Database) -> None:
    body = as_meta_sends(notification(text_message()))
    header = "sha256=" + signature(body)[7:].upper()
    answer = client.post(URL, data=body, headers={"X-Hub-Signature-256": header})
    assert answer.status_code == 200


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"not json at all", "not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[" * 100 + b"]" * 100, "nested deeper"),
        (b'{"object":"page","entry":[]}', "not a WhatsApp Business Account notification"),
        (b'{"object":"whatsapp_business_account","entry":{}}', "entry is not a list"),
        (b'{"object":"whatsapp_business_account","entry":[{"id":"1"}]}', "no list of changes"),
        (
            b'{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages"}]}]}',
            "no field and value",
        ),
    ],
)
def test_a_signed_body_that_is_not_a_notification_is_400_never_500(
    client: FlaskClient, db: Database, body: bytes, why: str
) -> None:
    answer = client.post(URL, data=body, headers=signed(body))
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "bad_request"
    assert why in answer.get_json()["message"]
    assert stored(db) == []


def test_a_signed_notification_with_fields_and_changes_nobody_knows_is_kept(
    client: FlaskClient, db: Database
) -> None:
    payload = notification(text_message(), {"field": "something_new", "value": {"x": [1]}})
    payload["brand_new"] = {"nested": True}
    body = as_meta_sends(payload)
    assert client.post(URL, data=body, headers=signed(body)).status_code == 200
    assert json.loads(stored(db)[0].body) == payload


def test_a_body_over_the_cap_is_413_before_it_is_read(client: FlaskClient, db: Database) -> None:
    body = b"x" * (4 * 1024 * 1024 + 1)
    assert client.post(URL, data=body, headers=signed(body)).status_code == 413
    assert stored(db) == []


def test_without_an_app_secret_there_is_no_webhook(
    make_client: Callable[..., FlaskClient],
) -> None:
    client = make_client(whatsapp_app_secret=None)
    assert client.get(URL).status_code == 404
    assert client.post(URL, data=b"{}").status_code == 404


def test_refusals_and_receipts_are_counted_for_metrics(client: FlaskClient, db: Database) -> None:
    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return parse(client.get("/metrics").get_data(as_text=True))

    def count(name: str, **labels: str) -> float:
        return samples().get((name, tuple(sorted(labels.items()))), 0.0)

    refused = "wa_access_refused_requests_total"
    received = "wa_access_webhooks_received_total"
    before = {
        "missing": count(refused, surface="whatsapp", reason="missing_signature"),
        "bad": count(refused, surface="whatsapp", reason="bad_signature"),
        "shape": count(refused, surface="whatsapp", reason="wrong_shape"),
        "stored": count(received, source="whatsapp", result="stored"),
        "retry": count(received, source="whatsapp", result="retry"),
    }
    body = as_meta_sends(notification(text_message()))
    client.post(URL, data=body)
    client.post(URL, data=body, headers={"X-Hub-Signature-256": "sha256=" + "0" * 64})
    wrong = b'{"object":"page"}'
    client.post(URL, data=wrong, headers=signed(wrong))
    client.post(URL, data=body, headers=signed(body))
    client.post(URL, data=body, headers=signed(body))
    after = {
        "missing": count(refused, surface="whatsapp", reason="missing_signature"),
        "bad": count(refused, surface="whatsapp", reason="bad_signature"),
        "shape": count(refused, surface="whatsapp", reason="wrong_shape"),
        "stored": count(received, source="whatsapp", result="stored"),
        "retry": count(received, source="whatsapp", result="retry"),
    }
    assert {k: after[k] - before[k] for k in after} == {
        "missing": 1,
        "bad": 1,
        "shape": 1,
        "stored": 1,
        "retry": 1,
    }
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(InboundWebhook)) == 1


def test_a_signed_batch_with_an_escaped_nul_or_lone_surrogate_is_kept_whole(
    client: FlaskClient, db: Database
) -> None:
    """Refusing it would make Meta retry the whole batch for days, then drop it; the text
    is stored as it came, and its strings are cleaned when read."""
    body = as_meta_sends(notification(text_message("a\x00b"), text_message("\ud800", wamid="w2")))
    assert b"\\u0000" in body and b"\\ud800" in body
    assert client.post(URL, data=body, headers=signed(body)).status_code == 200
    assert stored(db)[0].body == body.decode()


def test_the_echoed_challenge_cannot_be_read_as_anything_but_text(client: FlaskClient) -> None:
    query = {"hub.mode": "subscribe", "hub.challenge": "<b>x</b>", "hub.verify_token": VERIFY_TOKEN}
    assert client.get(URL, query_string=query).status_code == 400
    query["hub.challenge"] = "1158201444"
    answer = client.get(URL, query_string=query)
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


# -- the door around Flask: what any other route would answer ----------------------------


def test_other_methods_are_405_naming_the_two_it_answers(client: FlaskClient) -> None:
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
        answer = client.open(URL, method=method, data=b"{}")
        assert answer.status_code == 405, method
        assert answer.headers["Allow"] == "GET, HEAD, POST"
        assert answer.get_json()["error"] == "method_not_allowed"


def test_head_answers_as_get_without_a_body(client: FlaskClient) -> None:
    query = {"hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": "x"}
    answer = client.head(URL, query_string=query)
    assert answer.status_code == 403 and answer.get_data() == b""


def test_the_door_is_counted_and_logged_under_its_route_with_a_request_id(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wa_access.http")
    body = as_meta_sends(notification(text_message()))
    answer = client.post(URL, data=body, headers={**signed(body), "X-Request-Id": "req-42"})
    assert answer.headers["X-Request-Id"] == "req-42"
    [line] = [r for r in caplog.records if r.name == "wa_access.http"]
    assert (line.route, line.status) == (URL, 200)
    samples = parse(client.get("/metrics").get_data(as_text=True))
    assert samples[("wa_access_http_requests_total", (("route", URL), ("status", "200")))] >= 1


def test_a_database_that_fails_the_store_is_a_json_500_so_meta_delivers_again(
    client: FlaskClient, db: Database, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    def broken(*args: object) -> list[tuple[object, ...]]:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(Database, "single", broken)
    body = as_meta_sends(notification(text_message()))
    answer = client.post(URL, data=body, headers=signed(body))
    assert answer.status_code == 500
    assert answer.get_json() == {"error": "internal_error", "message": "something went wrong"}
    assert "the database went away" not in answer.get_data(as_text=True)
    assert any(r.exc_info for r in caplog.records if r.levelno == logging.ERROR)
    monkeypatch.undo()
    assert client.post(URL, data=body, headers=signed(body)).get_json() == {"status": "received"}


def test_every_other_path_is_flasks(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.post(URL + "/", data=b"{}").status_code == 404
    assert client.get("/whatsapp/webhooks").get_json()["error"] == "not_found"


def test_a_doubled_leading_slash_reaches_the_door_as_it_reached_flasks_route(
    client: FlaskClient, db: Database
) -> None:
    """A callback URL registered as a base URL ending in / plus /whatsapp/webhook."""
    body = as_meta_sends(notification(text_message()))
    doubled = {"PATH_INFO": "//whatsapp/webhook"}  # as gunicorn passes it; a URL would not
    answer = client.post(URL, data=body, headers=signed(body), environ_overrides=doubled)
    assert answer.get_json() == {"status": "received"}
    assert len(stored(db)) == 1


def test_the_first_value_of_a_repeated_query_parameter_counts_even_when_blank(
    client: FlaskClient,
) -> None:
    query = (
        "hub.mode=subscribe&hub.challenge=123&hub.verify_token=&hub.verify_token=" + VERIFY_TOKEN
    )
    assert client.get(f"{URL}?{query}").status_code == 403
    blank_mode = f"hub.mode=&hub.mode=subscribe&hub.challenge=123&hub.verify_token={VERIFY_TOKEN}"
    assert client.get(f"{URL}?{blank_mode}").status_code == 403
