# ruff: noqa: F811  (the `env` fixture, imported from test_whatsapp_serve, then named as an argument)
"""`serve`'s background work runs in one process of its own, kept running by gunicorn's master.

The webhook intake, the outbox worker and the WhatsApp sender run beside the
web workers, not inside them: the master starts that process, starts it again
if it dies, stops it with the rest, and a master killed outright leaves no
background process behind.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest

from bot.background_process import RESTART_AFTER_S, BackgroundProcess
from bot.config import Settings
from bot.polling import Poller
from rbac_core import Database, signals

from .helpers import wait_for
from .test_http import Served, serve
from .test_whatsapp_serve import body, env, slack, state  # noqa: F401  (fixtures)
from .whatsapp_requests import signed

pytestmark = pytest.mark.slow


def deliver(server: Served, i: int) -> None:
    payload = body(i)
    status, _, answer = server.request("POST", "/whatsapp/webhook", payload, signed(payload))
    assert (status, json.loads(answer)) == (200, {"status": "received"})


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"


def test_webhooks_are_processed_by_one_background_process_beside_the_web_workers(
    env: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    db = Database(db_url)
    with serve(tmp_path, env, workers=2) as server:
        [background] = server.background()
        assert background not in server.workers() and len(server.workers()) == 2
        deliver(server, 0)
        wait_for(lambda: state(db)[1] == {"wamid.K0"}, what="the message to be processed")
        # What the background process did is counted in serve's /metrics too.
        _, _, metrics = server.request("GET", "/metrics")
        assert 'wa_access_webhooks_processed_total{result="done"} 1.0' in metrics.decode()
    assert gone(background)
    db.dispose()


def test_serve_without_its_worker_runs_no_background_process(
    env: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    with serve(tmp_path, env, workers=1, args=["--no-worker"]) as server:
        deliver(server, 0)
        assert server.background() == []


def test_a_background_process_that_dies_is_started_again_and_goes_on(
    env: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    db = Database(db_url)
    with serve(tmp_path, env, workers=1) as server:
        [first] = server.background()
        os.kill(first, signal.SIGKILL)
        wait_for(
            lambda: server.background() not in ([], [first]),
            timeout=RESTART_AFTER_S + 10,
            what="a new background process",
        )
        deliver(server, 0)
        wait_for(lambda: state(db)[1] == {"wamid.K0"}, what="the message to be processed")
        assert "background process (pid" in server.output()
    db.dispose()


def test_a_master_killed_outright_leaves_no_background_process(
    env: dict[str, str], tmp_path: Path
) -> None:
    with serve(tmp_path, env, workers=1) as server:
        [background] = server.background()
        os.kill(server.proc.pid, signal.SIGKILL)  # the master alone
        wait_for(lambda: gone(background), timeout=10, what="the background process to leave")


class Waiting(Poller):
    def __init__(self, *wake_on: signals.Signal) -> None:
        super().__init__(60.0, wake_on)
        self.woken = threading.Event()

    def run_once(self) -> int:
        return 0

    def wake(self, *_: object) -> None:
        self.woken.set()


def test_a_web_workers_commit_wakes_only_the_pollers_waiting_for_that_kind_of_work() -> None:
    """Through the pipe opened before gunicorn forks: a stored webhook wakes the intake at
    once, and sends no outbox worker to the database."""
    background = BackgroundProcess(Settings())
    intake, outbox = Waiting(signals.webhook_received), Waiting(signals.outbox_queued)
    sender = Waiting(signals.sends_queued)
    relay = threading.Thread(
        target=background._relay_wakes, args=([intake, outbox, sender],), daemon=True
    )
    relay.start()
    background.wake_on_commits()  # as each web worker does
    try:
        signals.webhook_received.send("whatsapp", True)
        assert intake.woken.wait(10)
        assert not outbox.woken.is_set() and not sender.woken.is_set()
        signals.sends_queued.send(1)  # a /wa-send: the sender, never the Slack worker
        assert sender.woken.wait(10)
        assert not outbox.woken.is_set()
        signals.outbox_queued.send(1)
        assert outbox.woken.wait(10)
    finally:
        background.stop_waking()
