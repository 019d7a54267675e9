"""The Graph API client against a fake Meta on 127.0.0.1: what it sends, and what each
of Meta's refusals tells the sender to do."""

from __future__ import annotations

import json
import logging
import socket
import threading
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.demo.fake_graph import Answer, FakeGraph
from bot.whatsapp.graph import DEFAULT_API_URL, GraphClient, Sent
from bot.whatsapp.graph_errors import (
    GraphError,
    PauseNumber,
    Permanent,
    TokenProblem,
    TryAgain,
    UnknownOutcome,
    WaitADay,
    classify,
    explain,
)

TOKEN = "EAAGsecretTOKENvalue0123456789abcdef"
NUMBER = "106540352242922"
TEXT = {
    "messaging_product": "whatsapp",
    "recipient_type": "individual",
    "to": "+16505551234",
    "type": "text",
    "text": {"body": "Hello, café ☕"},
}


@pytest.fixture
def fake() -> Iterator[FakeGraph]:
    with FakeGraph(TOKEN) as graph:
        yield graph


@pytest.fixture
def client(fake: FakeGraph) -> Iterator[GraphClient]:
    with GraphClient(fake.url, TOKEN) as graph:
        yield graph


def failure(client: GraphClient, message: dict[str, Any] = TEXT) -> GraphError:
    with pytest.raises(GraphError) as caught:
        client.send_message(NUMBER, message)
    return caught.value


# Sending.


def test_a_text_send_returns_the_wamid_and_the_customers_wa_id(
    fake: FakeGraph, client: GraphClient
) -> None:
    sent = client.send_message(NUMBER, TEXT)
    assert sent.wamid.startswith("wamid.") and len(sent.wamid) > len("wamid.")
    assert sent.wa_id == "16505551234"
    assert [c.status for c in fake.sent()] == [200]


def test_the_request_carries_the_bearer_token_and_exactly_the_json_given(
    fake: FakeGraph, client: GraphClient
) -> None:
    client.send_message(NUMBER, TEXT)
    (call,) = fake.calls
    assert call.method == "POST"
    assert call.path == f"/v25.0/{NUMBER}/messages"
    assert call.phone_number_id == NUMBER
    assert call.headers["Authorization"] == f"Bearer {TOKEN}"
    assert call.body == TEXT


def test_the_url_keeps_the_version_of_api_url_and_tolerates_a_trailing_slash() -> None:
    with FakeGraph(TOKEN, version="v26.0") as fake, GraphClient(fake.url + "/", TOKEN) as c:
        assert c.version == "v26.0"
        c.send_message(NUMBER, TEXT)
        assert fake.calls[0].path == f"/v26.0/{NUMBER}/messages"
    assert GraphClient(DEFAULT_API_URL, TOKEN).version == "v25.0"
    assert GraphClient("https://graph.example.test/proxy/", TOKEN).version == ""


def test_a_client_on_another_version_than_meta_expects_is_refused_with_code_100() -> None:
    with FakeGraph(TOKEN, version="v26.0") as fake, GraphClient(fake.base + "/v25.0", TOKEN) as c:
        err = failure(c)
    assert isinstance(err, Permanent) and err.code == 100 and err.http_status == 400


def test_every_send_gets_its_own_wamid_under_concurrent_senders(
    fake: FakeGraph, client: GraphClient
) -> None:
    wamids: list[str] = []
    lock = threading.Lock()

    def send(count: int) -> None:
        for _ in range(count):
            sent = client.send_message(NUMBER, TEXT)
            with lock:
                wamids.append(sent.wamid)

    threads = [threading.Thread(target=send, args=(25,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wamids) == len(set(wamids)) == 200
    assert sorted(c.status for c in fake.sent()) == [200] * 200


def test_a_phone_number_id_that_is_not_digits_is_refused_before_any_request(
    fake: FakeGraph, client: GraphClient
) -> None:
    for bad in ("", "abc", "123/..", "..", "123?x=1", " 123", "\uff11\uff12\uff13", "123/messages"):
        with pytest.raises(ValueError, match="digits"):
            client.send_message(bad, TEXT)
    assert fake.calls == []


def test_a_200_without_a_message_id_is_an_unknown_outcome(
    fake: FakeGraph, client: GraphClient
) -> None:
    fake.script(NUMBER, (200, {"messaging_product": "whatsapp", "messages": []}))
    fake.script(NUMBER, Answer(200, b"OK"))
    assert isinstance(failure(client), UnknownOutcome)
    assert isinstance(failure(client), UnknownOutcome)
    assert client.send_message(NUMBER, TEXT).wamid.startswith("wamid.")


def test_the_transport_can_be_injected_and_every_phase_has_a_timeout() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {"messaging_product": "whatsapp", "messages": [{"id": "wamid.MOCK"}]}
        return httpx.Response(200, json=body)

    with GraphClient(DEFAULT_API_URL, TOKEN, transport=httpx.MockTransport(answer)) as client:
        assert client.send_message(NUMBER, TEXT) == Sent(wamid="wamid.MOCK", wa_id="")
    (request,) = seen
    assert str(request.url) == f"https://graph.facebook.com/v25.0/{NUMBER}/messages"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert json.loads(request.content) == TEXT
    assert request.extensions["timeout"] == {
        "connect": 5.0,
        "read": 15.0,
        "write": 10.0,
        "pool": 5.0,
    }


# Meta's refusals, sorted by what to do.

PER_CODE: list[tuple[Answer, type[GraphError], str]] = [
    (FakeGraph.error(131047, "Re-engagement message"), Permanent, "24-hour window"),
    (
        FakeGraph.error(131056, "(Business Account, Consumer Account) pair rate limit hit"),
        TryAgain,
        "",
    ),
    (FakeGraph.error(130429, "Rate limit hit"), TryAgain, ""),
    (FakeGraph.error(4, "Application request limit reached"), TryAgain, ""),
    (FakeGraph.error(80007, "Rate limit issues"), TryAgain, ""),
    (FakeGraph.error(131049, "Meta chose not to deliver"), WaitADay, ""),
    (FakeGraph.error(131048, "Spam rate limit hit"), PauseNumber, "spam"),
    (FakeGraph.error(368, "Temporarily blocked for policies violations", 403), PauseNumber, ""),
    (FakeGraph.error(131031, "Account has been locked"), PauseNumber, "locked"),
    (FakeGraph.error(190, "Access token has expired", 401), TokenProblem, "WHATSAPP_ACCESS_TOKEN"),
    (FakeGraph.error(10, "Permission denied", 403), TokenProblem, "whatsapp_business_messaging"),
    (FakeGraph.error(131026, "Message Undeliverable"), Permanent, "deliver"),
    (
        FakeGraph.error(132001, "Template name does not exist in the translation"),
        Permanent,
        "template",
    ),
    (Answer(503, b"<html><body>Service Unavailable</body></html>"), TryAgain, ""),
    (Answer(502, b""), TryAgain, ""),
    (FakeGraph.error(777777, "Some brand new refusal"), Permanent, "Some brand new refusal"),
    (Answer(404, b"not found"), Permanent, ""),
]


@pytest.mark.parametrize(("answer", "kind", "words"), PER_CODE)
def test_each_refusal_is_classified_by_its_code(
    fake: FakeGraph, client: GraphClient, answer: Answer, kind: type[GraphError], words: str
) -> None:
    fake.script(NUMBER, answer)
    err = failure(client)
    assert type(err) is kind
    assert err.http_status == answer.status
    assert words in err.explanation
    if isinstance(answer.body, dict):
        assert err.code == answer.body["error"]["code"]
        assert str(err).startswith(f"{err.code}: ")
    assert fake.sent() == []


def test_a_pair_rate_limit_is_per_customer_and_a_throughput_limit_is_not(
    fake: FakeGraph, client: GraphClient
) -> None:
    fake.script(NUMBER, FakeGraph.error(131056, "pair rate limit hit"))
    fake.script(NUMBER, FakeGraph.error(130429, "Rate limit hit"))
    pair, throughput = failure(client), failure(client)
    assert isinstance(pair, TryAgain) and pair.per_customer
    assert isinstance(throughput, TryAgain) and not throughput.per_customer


def test_a_closed_window_reads_as_metas_code_title_and_details(
    fake: FakeGraph, client: GraphClient
) -> None:
    details = "Message failed to send because more than 24 hours have passed"
    fake.script(
        NUMBER, FakeGraph.error(131047, "Re-engagement message", subcode=2494010, details=details)
    )
    err = failure(client)
    assert str(err) == f"131047: Re-engagement message ({details})"
    assert err.explanation == "the customer's 24-hour window is closed; send a template instead"
    assert (err.subcode, err.title, err.detail) == (2494010, "Re-engagement message", details)
    assert err.fbtrace_id == "AfakeTrace131047" and err.meta_type == "OAuthException"


def test_a_wrong_token_is_a_token_problem_with_metas_401(fake: FakeGraph) -> None:
    with GraphClient(fake.url, "EAAGsomeOTHERtoken") as client:
        err = failure(client)
    assert isinstance(err, TokenProblem) and err.code == 190 and err.http_status == 401
    assert fake.sent() == []


def test_retry_after_is_honoured_in_seconds_and_as_a_date(
    fake: FakeGraph, client: GraphClient
) -> None:
    fake.script(
        NUMBER, FakeGraph.error(130429, "Rate limit hit", 429, headers={"Retry-After": "7"})
    )
    fake.script(NUMBER, Answer(503, b"busy", {"Retry-After": "2"}))
    fake.script(NUMBER, FakeGraph.error(4, "Application request limit reached"))
    first, second, third = failure(client), failure(client), failure(client)
    assert isinstance(first, TryAgain) and first.after == 7.0
    assert isinstance(second, TryAgain) and second.after == 2.0
    assert isinstance(third, TryAgain) and third.after is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    dated = classify(429, b"", headers={"retry-after": later})
    assert isinstance(dated, TryAgain) and dated.after is not None and 100 < dated.after <= 120


# The network failing.


def test_a_read_timeout_after_sending_is_an_unknown_outcome_since_meta_may_have_sent_it(
    fake: FakeGraph,
) -> None:
    """The body was written; Meta may act on it and answer too late. Retrying blindly
    could message the customer twice, so the sender is told it does not know."""
    fake.latency = 0.5
    with GraphClient(fake.url, TOKEN, timeout=httpx.Timeout(2.0, read=0.1)) as client:
        err = failure(client)
    assert isinstance(err, UnknownOutcome) and not isinstance(err, TryAgain)
    assert "ReadTimeout" in err.detail
    assert len(fake.sent()) == 1  # Meta did send it


def test_a_read_timeout_on_a_get_is_worth_trying_again(fake: FakeGraph) -> None:
    fake.latency = 0.5
    client = GraphClient(fake.url, TOKEN, timeout=httpx.Timeout(2.0, read=0.1))
    with client, pytest.raises(TryAgain):
        client.get("123/message_templates", {"fields": "name"})


def test_a_refused_connection_is_worth_trying_again() -> None:
    fake = FakeGraph(TOKEN).start()
    url = fake.url
    fake.stop()
    with GraphClient(url, TOKEN) as client:
        err = failure(client)
    assert isinstance(err, TryAgain) and err.code is None and not err.per_customer
    assert "ConnectError" in err.detail


def test_a_connection_dropped_after_the_request_is_an_unknown_outcome(
    fake: FakeGraph, client: GraphClient
) -> None:
    fake.drop_next(1)
    err = failure(client)
    assert isinstance(err, UnknownOutcome)
    assert [c.status for c in fake.calls] == [0] and fake.sent() == []
    assert client.send_message(NUMBER, TEXT).wamid  # only the next one was dropped


# The token stays secret.


def _every_kind_of_failure(fake: FakeGraph) -> list[GraphError]:
    errors: list[GraphError] = []
    echo = f"Invalid OAuth access token {TOKEN}"
    with GraphClient(fake.url, TOKEN, timeout=httpx.Timeout(2.0, read=0.2)) as client:
        client.send_message(NUMBER, TEXT)
        fake.script(NUMBER, FakeGraph.error(190, echo, 401, details=echo))
        fake.script(NUMBER, Answer(500, f"<pre>Authorization: Bearer {TOKEN}</pre>".encode()))
        fake.script(NUMBER, FakeGraph.error(131047, "Re-engagement message"))
        errors += [failure(client) for _ in range(3)]
        fake.drop_next(1)
        errors.append(failure(client))
        fake.latency = 0.5
        errors.append(failure(client))
        fake.latency = 0
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
    with GraphClient(f"http://127.0.0.1:{port}/v25.0", TOKEN) as refused:
        errors.append(failure(refused))
    return errors


def test_the_token_never_appears_in_errors_reprs_or_logs(
    fake: FakeGraph, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors = _every_kind_of_failure(fake)
    assert [type(e) for e in errors] == [
        TokenProblem,
        TryAgain,
        Permanent,
        UnknownOutcome,
        UnknownOutcome,
        TryAgain,
    ]
    assert "[redacted]" in errors[0].detail and "[redacted]" in errors[1].detail
    for err in errors:
        shown = [str(err), repr(err), err.title, err.detail, err.explanation]
        shown.append("".join(traceback.format_exception(err)))
        assert not any(TOKEN in text for text in shown), shown
        assert err.__cause__ is None and err.__context__ is None  # no httpx request held
    client = GraphClient(fake.url, TOKEN)
    assert TOKEN not in repr(client) and TOKEN not in str(client)
    client.close()
    loggers = {record.name.split(".")[0] for record in caplog.records}
    assert {"httpx", "httpcore", "bot"} <= loggers  # the logs were captured at DEBUG
    for record in caplog.records:
        assert TOKEN not in record.getMessage() and TOKEN not in str(record.args)


def test_a_token_a_header_cannot_hold_is_refused_without_quoting_it() -> None:
    with pytest.raises(ValueError) as caught:
        GraphClient(DEFAULT_API_URL, "EAAG secret\r\nX-Evil: 1")
    assert "secret" not in str(caught.value)
    with pytest.raises(ValueError):
        GraphClient(DEFAULT_API_URL, "")
    with pytest.raises(ValueError):
        GraphClient("graph.facebook.com/v25.0", TOKEN)


# classify on its own.

LISTED: dict[type[GraphError], list[int]] = {
    TryAgain: [1, 2, 4, 80007, 130429, 131056, 131057, 131016, 131000, 135000],
    WaitADay: [131049],
    Permanent: [
        131047,
        131026,
        131050,
        131051,
        131052,
        131053,
        131008,
        131009,
        132000,
        132001,
        132005,
        132007,
        132008,
        132012,
        132015,
        132016,
        131062,
        130497,
        131042,
        100,
    ],
    PauseNumber: [131048, 368, 131031],
    TokenProblem: [190, 10, 200, 250, 299],
}


def test_every_listed_code_has_its_class_and_its_own_explanation() -> None:
    generic = explain(999_999).replace("999999", "{}")
    for kind, codes in LISTED.items():
        for code in codes:
            err = classify(400, {"error": {"code": code, "message": f"(#{code}) M"}})
            assert type(err) is kind, code
            assert err.explanation == explain(code) != generic.format(code), code
    permanent = {explain(code) for code in LISTED[Permanent]}
    assert len(permanent) == len(LISTED[Permanent])  # one sentence each, none shared
    once = classify(400, {"error": {"code": 131000}})
    assert isinstance(once, TryAgain) and once.retry_once


def test_the_code_decides_not_the_http_status() -> None:
    assert type(classify(500, {"error": {"code": 131047}})) is Permanent
    assert type(classify(400, {"error": {"code": 130429}})) is TryAgain
    assert type(classify(503, {"error": {"code": 424242, "message": "new"}})) is TryAgain
    assert type(classify(429, b"slow down")) is TryAgain
    assert type(classify(400, b"<html>Bad Request</html>")) is Permanent


def test_a_webhook_status_error_object_is_understood_too() -> None:
    err = classify(
        200,
        {
            "code": 131047,
            "title": "Re-engagement message",
            "message": "Re-engagement message",
            "error_data": {"details": "Message failed to send"},
        },
    )
    assert isinstance(err, Permanent) and err.title == "Re-engagement message"
    assert str(err) == "131047: Re-engagement message (Message failed to send)"


def test_metas_text_is_cut_and_cleaned() -> None:
    err = classify(
        400,
        {
            "error": {
                "code": 131009,
                "message": "x\n\x00" * 2000,
                "error_data": {"details": "\ud800" + "y" * 900},
            }
        },
    )
    assert len(err.detail) == 500 and "\ud800" not in err.detail
    assert "\n" not in str(err) and "\x00" not in err.title


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
ERROR_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "code": JSON | st.integers(),
        "message": JSON,
        "type": JSON,
        "error_subcode": JSON,
        "error_data": JSON | st.fixed_dictionaries({}, optional={"details": JSON}),
        "fbtrace_id": JSON,
        "title": JSON,
    },
)
BODIES = (
    st.binary(max_size=200)
    | st.text(max_size=200)
    | JSON.map(json.dumps)
    | st.builds(lambda e: {"error": e}, ERROR_FIELDS)
    | st.builds(lambda e: json.dumps({"error": e}).encode(), ERROR_FIELDS)
    | ERROR_FIELDS
)


@settings(max_examples=400, deadline=None)
@given(
    status=st.integers(min_value=0, max_value=999),
    body=BODIES,
    retry=st.none() | st.text(max_size=40),
)
def test_classify_never_raises_on_junk(status: int, body: Any, retry: str | None) -> None:
    err = classify(status, body, headers={} if retry is None else {"Retry-After": retry})
    assert isinstance(err, GraphError)
    line = str(err)
    assert line and "\n" not in line and err.explanation
    assert len(err.detail) <= 500
    if isinstance(err, TryAgain):
        assert err.after is None or err.after >= 0
