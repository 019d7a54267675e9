# ruff: noqa: F811  (pytest fixtures imported from test_slack_roles, then named as arguments)
"""GET /metrics: the counters move with the requests that should move them, in one
process and added up over gunicorn's workers."""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from bot import metrics
from bot.app import MAX_BODY_BYTES
from bot.demo.fake_slack import FakeSlack
from bot.server import prepare_metrics_dir
from rbac_core import signals

from .conftest import ADMIN, ALICE
from .slack_requests import signed_headers, slash_command
from .test_http import REPO, Served, _free_port, serve, slack_env
from .test_slack_roles import client, make_app, post, slack  # noqa: F401  (fixtures)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
TOKEN = "scrape-token-0123456789"


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def scrape(client: FlaskClient, **headers: str) -> Samples:
    answer = client.get("/metrics", headers=headers)
    assert answer.status_code == 200
    assert answer.content_type == metrics.CONTENT_TYPE
    return parse(answer.get_data(as_text=True))


def moved(before: Samples, after: Samples) -> Samples:
    """What changed between two scrapes, leaving out the second scrape's own count."""
    scrape_itself = ("wa_access_http_requests_total", (("route", "/metrics"), ("status", "200")))
    return {
        key: value - before.get(key, 0.0)
        for key, value in after.items()
        if value != before.get(key, 0.0) and key != scrape_itself
    }


def http(route: str, status: int) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("wa_access_http_requests_total", (("route", route), ("status", str(status))))


def gate(action: str, status: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("wa_access_gate_outcomes_total", (("action", action), ("status", status)))


def refused(reason: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("wa_access_refused_requests_total", (("reason", reason), ("surface", "slack")))


AUDIT = ("wa_access_audit_appends_total", ())


def reloads(kind: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("wa_access_policy_reloads_total", (("kind", kind),))


def show(client: FlaskClient, slack: FakeSlack, user: str = ADMIN) -> None:
    assert post(client, slash_command(user, "show", slack.response_url())).status_code == 200


def test_a_signed_command_counts_its_request_its_gate_outcome_and_its_audit_entry(
    client: FlaskClient, slack: FakeSlack
) -> None:
    show(client, slack)  # the first request loads the policy
    before = scrape(client)
    show(client, slack)
    assert moved(before, scrape(client)) == {
        http("/slack/events", 200): 1,
        gate("role.show", "done"): 1,
        AUDIT: 1,
    }


def test_refused_requests_are_counted_by_reason(client: FlaskClient, slack: FakeSlack) -> None:
    body = slash_command(ADMIN, "show", slack.response_url())
    before = scrape(client)
    for tamper in (
        {"X-Slack-Signature": "v0=" + "0" * 64},
        {"X-Slack-Signature": "v0=" + "0" * 64},
        {"X-Slack-Request-Timestamp": str(int(time.time()) - 301)},
        {"X-Slack-Signature": ""},
        {"X-Slack-Request-Timestamp": "soon"},
    ):
        assert post(client, body, **tamper).status_code == 401
    assert moved(before, scrape(client)) == {
        http("/slack/events", 401): 5,
        refused("bad signature"): 2,
        refused("stale timestamp"): 1,
        refused("unsigned"): 1,
        refused("malformed timestamp"): 1,
    }


def test_the_route_label_is_the_url_rule_never_the_path_sent(
    client: FlaskClient, slack: FakeSlack
) -> None:
    before = scrape(client)
    for path in ("/nope-1", "/nope-2?x=1", "/slack/events/extra"):
        assert client.get(path).status_code == 404
    doubled = {"PATH_INFO": "//slack/events"}  # a door's route: named, however spelled
    assert client.get("/slack/events", environ_overrides=doubled).status_code == 405
    oversized = b"x" * (MAX_BODY_BYTES + 1)
    answer = client.post(
        "/slack/events",
        input_stream=io.BytesIO(oversized),
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert answer.status_code == 413
    assert moved(before, scrape(client)) == {
        http("unmatched", 404): 3,
        http("/slack/events", 405): 1,
        http("/slack/events", 413): 1,
    }


ELSEWHERE = """
import json, sys
from rbac_core import Database, build_gate
from tests.helpers import run
gate = build_gate(Database(sys.argv[1]))
outcome = run(gate, sys.argv[2], sys.argv[3], **json.loads(sys.argv[4]))
assert outcome.ok, outcome
"""


def elsewhere(db_url: str, action: str, **params: object) -> None:
    """A gate call in another process: it reaches the app only through the database."""
    subprocess.run(
        [sys.executable, "-c", ELSEWHERE, db_url, ADMIN, action, json.dumps(params)],
        cwd=REPO,
        check=True,
        timeout=60,
    )


def test_policy_reloads_are_counted_by_kind(
    client: FlaskClient, slack: FakeSlack, db_url: str
) -> None:
    show(client, slack)
    before = scrape(client)
    elsewhere(db_url, "role.assign", user=ALICE, role="analyst")  # names Alice
    show(client, slack)
    elsewhere(db_url, "role.create", name="night", perms=["messages:send_text"])  # names nobody
    show(client, slack)
    changed = moved(before, scrape(client))
    assert (changed[reloads("partial")], changed[reloads("full")]) == (1, 1)


def test_scheduled_runs_are_counted_by_job_and_result(client: FlaskClient) -> None:
    before = scrape(client)
    signals.job_finished.send("access_review", "done")
    signals.job_finished.send("access_review", "failed")
    signals.job_finished.send("sweep", "given_up")
    runs = "wa_access_scheduled_runs_total"
    assert moved(before, scrape(client)) == {
        (runs, (("job", "access_review"), ("result", "done"))): 1,
        (runs, (("job", "access_review"), ("result", "failed"))): 1,
        (runs, (("job", "sweep"), ("result", "given_up"))): 1,
    }


def test_the_outbox_depth_and_its_deliveries_are_reported(
    make_app: Callable[..., FlaskClient], slack: FakeSlack
) -> None:
    from .helpers import deliver_notices
    from .test_slack_roles import click, command, pending_of

    app = make_app(audit_channel="C0WAAUDIT")
    before = scrape(app)
    asked = command(app, slack, ADMIN, f"assign <@{ALICE}> agent")
    click(app, slack, ADMIN, "wa_confirm", pending_of(asked))
    queued = scrape(app)
    depth = "wa_access_outbox_rows"
    assert queued[(depth, (("status", "queued"),))] == 1
    assert queued[(depth, (("status", "done"),))] == 0
    deliver_notices(app)
    after = scrape(app)
    assert after[(depth, (("status", "queued"),))] == 0
    assert after[(depth, (("status", "done"),))] == 1
    delivered = (
        "wa_access_outbox_deliveries_total",
        (("kind", "role.changed"), ("result", "done")),
    )
    assert moved(before, after)[delivered] == 1


def test_metrics_need_the_bearer_token_when_one_is_set(
    make_app: Callable[..., FlaskClient],
) -> None:
    client = make_app(metrics_token=TOKEN)
    for given in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN}):
        answer = client.get("/metrics", headers=given)
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert "wa_access_http_requests_total" in str(scrape(client, Authorization=f"Bearer {TOKEN}"))


def test_the_schedulers_listener_serves_its_own_counters() -> None:
    port = _free_port()
    server = metrics.start_listener("127.0.0.1", port, TOKEN)
    try:
        signals.job_finished.send("listener_probe", "done")
        url = f"http://127.0.0.1:{port}/metrics"
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url, timeout=10)
        assert denied.value.code == 401
        asked = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(asked, timeout=10) as answer:
            samples = parse(answer.read().decode())
        key = ("wa_access_scheduled_runs_total", (("job", "listener_probe"), ("result", "done")))
        assert samples[key] >= 1
    finally:
        server.shutdown()
        server.server_close()


def test_an_operators_multiprocess_dir_is_emptied_and_a_new_one_is_private(
    tmp_path: Path,
) -> None:
    given = tmp_path / "metrics"
    given.mkdir()
    (given / "counter_4242.db").write_bytes(b"an earlier run")
    (given / "gauge_livesum_4242.db").write_bytes(b"an earlier run")
    (given / "keep.txt").write_text("not ours")
    (given / "wa_access.db").write_bytes(b"the database, pointed at by mistake")
    env = {"PROMETHEUS_MULTIPROC_DIR": str(given)}
    assert prepare_metrics_dir(env) == (given, False)
    assert sorted(p.name for p in given.iterdir()) == ["keep.txt", "wa_access.db"]
    fresh: dict[str, str] = {}
    made, made_here = prepare_metrics_dir(fresh)
    try:
        assert made_here and fresh["PROMETHEUS_MULTIPROC_DIR"] == str(made)
        assert stat.S_IMODE(made.stat().st_mode) == 0o700
    finally:
        made.rmdir()


# -- under gunicorn, several workers ------------------------------------------------


def scrape_served(served: Served) -> Samples:
    status, headers, body = served.request("GET", "/metrics")
    assert status == 200, body
    assert headers["Content-Type"] == metrics.CONTENT_TYPE
    return parse(body.decode())


def replace_workers(served: Served) -> None:
    """Stop each worker in turn and wait for gunicorn to start another in its place."""
    for pid in served.workers():
        os.kill(pid, signal.SIGTERM)  # a worker of the server this test started
        deadline = time.monotonic() + 30
        while pid in served.workers() or len(served.workers()) < 2:
            assert time.monotonic() < deadline, served.output()
            time.sleep(0.05)
    deadline = time.monotonic() + 30
    while served.request("GET", "/healthz")[0] != 200:
        assert time.monotonic() < deadline, served.output()
        time.sleep(0.05)


def test_counts_add_up_over_workers_even_those_that_exited(
    tmp_path: Path, db_url: str, slack: FakeSlack, team: dict[str, str]
) -> None:
    """Every worker that counted is replaced before the scrape: the totals can only
    come from the shared files, never from the process that answers."""
    shared = tmp_path / "metrics"
    shared.mkdir()
    (shared / "counter_999999.db").write_bytes(b"left by an earlier run: unreadable")
    env = {**slack_env(db_url, slack), "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    requests = 6
    with serve(tmp_path, env, workers=2) as served:
        for _ in range(requests):
            body = slash_command(ADMIN, "show", slack.response_url())
            assert served.request("POST", "/slack/events", body, signed_headers(body))[0] == 200
        body = slash_command(ADMIN, "show", slack.response_url())
        forged = signed_headers(body, secret="not-the-signing-secret")
        assert served.request("POST", "/slack/events", body, forged)[0] == 401
        replace_workers(served)
        scrapes = [scrape_served(served) for _ in range(4)]
    for samples in scrapes:
        assert samples[http("/slack/events", 200)] == requests
        assert samples[http("/slack/events", 401)] == 1
        assert samples[gate("role.show", "done")] == requests
        assert samples[AUDIT] == requests
        assert samples[refused("bad signature")] == 1
    assert not (shared / "counter_999999.db").exists()


def test_serve_makes_a_private_metrics_dir_and_removes_it_at_exit(
    tmp_path: Path, db_url: str, slack: FakeSlack, team: dict[str, str]
) -> None:
    before = set(Path(tempfile.gettempdir()).glob("wa-access-metrics-*"))
    with serve(tmp_path, slack_env(db_url, slack), workers=2) as served:
        body = slash_command(ADMIN, "show", slack.response_url())
        assert served.request("POST", "/slack/events", body, signed_headers(body))[0] == 200
        assert scrape_served(served)[http("/slack/events", 200)] == 1
        workers = served.workers()
        [made] = [
            d
            for d in set(Path(tempfile.gettempdir()).glob("wa-access-metrics-*")) - before
            if any(d.glob(f"counter_{pid}.db") for pid in workers)
        ]
        assert stat.S_IMODE(made.stat().st_mode) == 0o700
    assert not made.exists()
