"""The demo's world: fake Slack and Meta, and the real app between them, on this machine.

Everything runs in this process but talks over real HTTP on 127.0.0.1, so each
request crosses the same doors (signature checks, body limits, Bolt) as in
production. The background work that `serve` runs in threads (webhook intake,
Slack notices, WhatsApp sends) is run here on cue instead, with the same
classes, so every scene can show what happened before the next one starts.
Settings are written out here and validated as `serve` validates its own, but
never read from the user's environment or a `.env`, which could point the demo
at a real workspace.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from rbac_core import Database, signals
from rbac_core.outbox import Outbox
from rbac_core.store import migrate

from ..app import create_app
from ..background import whatsapp_sender
from ..config import Settings, load_settings
from ..outbox_worker import OutboxWorker, build_worker
from ..polling import Poller
from ..runtime import Runtime, build_runtime
from ..whatsapp.intake_worker import IntakeWorker
from . import signing
from .fake_graph import FakeGraph
from .fake_slack import Call, FakeSlack


@dataclass(frozen=True)
class Person:
    id: str
    name: str

    @property
    def slack(self) -> tuple[str, str]:
        return (self.id, self.name)


@dataclass(frozen=True)
class Cast:
    """Who and what the story is about; customers' numbers are never printed unmasked."""

    admin: Person = Person("U0DEMOADM1", "dana")
    alice: Person = Person("U0DEMOALC1", "alice")
    bob: Person = Person("U0DEMOBOB1", "bob")
    business: str = "+15550001111"
    phone_number_id: str = "106540352242922"
    waba_id: str = "102290129340398"
    customer: str = "+16505551234"
    """Kerry, who writes to the business."""
    stranger: str = "+14155550123"
    """Someone who never wrote: free text to them is refused, a template is not."""
    unreachable: str = "+447700900123"
    """A number Meta cannot deliver to."""
    audit_channel: str = "C0DEMOAUDIT"
    alert_channel: str = "C0DEMOALERT"
    inbox_channel: str = "C0DEMOINBOX"

    @property
    def customers(self) -> tuple[str, ...]:
        return (self.customer, self.stranger, self.unreachable)


@dataclass
class SlackAnswer:
    """What Slack got back for a command: the HTTP answer, and the response_url it carried."""

    status: int
    body: dict[str, Any]
    response_url: str

    @property
    def text(self) -> str:
        return str(self.body.get("text", ""))

    def button(self, action_id: str) -> dict[str, Any] | None:
        for block in self.body.get("blocks", []):
            for element in block.get("elements", []):
                if element.get("action_id") == action_id:
                    return dict(element, block_id=block.get("block_id", ""))
        return None


class _Quiet(WSGIRequestHandler):
    """The narration says what each request did; werkzeug's access log would only repeat it."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@dataclass
class Stage:
    cast: Cast
    scratch: Path
    slack: FakeSlack
    graph: FakeGraph
    runtime: Runtime
    app_url: str
    intake: IntakeWorker
    notices: OutboxWorker
    sender: Poller
    http: httpx.Client
    _responses: int = field(default=0)

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    # -- as Slack -------------------------------------------------------------------------

    def slash(self, who: Person, command: str, text: str) -> SlackAnswer:
        """A slash command typed by `who`, signed and posted as Slack posts it."""
        self._responses += 1
        response_url = self.slack.response_url(f"r{self._responses}")
        body = signing.slash_command(who.slack, command, text, response_url)
        answer = self._to_slack_route(body)
        payload = answer.json() if answer.content else {}
        return SlackAnswer(answer.status_code, payload, response_url)

    def click(self, who: Person, answer: SlackAnswer, action_id: str) -> tuple[int, list[str]]:
        """`who` clicks a button of a reply: (HTTP status, texts posted to its response_url)."""
        button = answer.button(action_id)
        if button is None:
            return 0, []
        before = len(self._responded(answer.response_url))
        body = signing.button_click(who.slack, button, answer.text, answer.response_url)
        status = self._to_slack_route(body).status_code
        posted = self._responded(answer.response_url)[before:]
        return status, [str(call.body.get("text", "")) for call in posted]

    def later(self, answer: SlackAnswer, timeout: float = 10.0) -> list[str]:
        """Texts posted to a command's response_url, waiting for a first one: commands that
        read a lot answer "working on it" at once and the rest from a background thread."""
        deadline = time.monotonic() + timeout
        while not (posted := self._responded(answer.response_url)):
            if time.monotonic() > deadline:
                return []
            time.sleep(0.01)
        return [str(call.body.get("text", "")) for call in posted]

    def uploads(self) -> list[bytes]:
        """Files the app uploaded to Slack (files.getUploadURLExternal's URL), oldest first."""
        return [
            bytes(c.body["content"]) for c in self.slack.calls if c.method.startswith("upload/")
        ]

    def _to_slack_route(self, body: str) -> httpx.Response:
        secret = self.settings.slack_signing_secret or ""
        headers = signing.slack_headers(secret, body)
        return self.http.post("/slack/events", content=body.encode(), headers=headers)

    def _responded(self, response_url: str) -> list[Call]:
        name = "response/" + response_url.rsplit("/response/", 1)[1]
        return [call for call in self.slack.calls if call.method == name]

    def posts(self) -> list[Call]:
        """Everything the app posted with chat.postMessage so far."""
        return self.slack.named("chat.postMessage")

    # -- the background work `serve` runs in threads ------------------------------------

    def process_webhooks(self) -> IntakeRun:
        """Run the intake worker until idle; what it took, and what it reported doing with
        it (the results and event counts it gives the metrics)."""
        reports: list[tuple[str, dict[str, int]]] = []

        def heard(result: str, counts: Mapping[str, int]) -> None:
            reports.append((result, dict(counts)))

        signals.webhook_processed.connect(heard)
        try:
            bodies = self.intake.run_until_idle()
        finally:
            signals.webhook_processed.disconnect(heard)
        return IntakeRun(bodies, reports)

    # -- as Meta ----------------------------------------------------------------------------

    def webhook(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """A notification POSTed as Meta posts it: its own bytes, signed with the app secret."""
        body = signing.as_meta_sends(payload)
        headers = signing.meta_headers(self.settings.whatsapp_app_secret or "", body)
        answer = self.http.post("/whatsapp/webhook", content=body, headers=headers)
        return answer.status_code, answer.json()

    def subscribe(self, challenge: str) -> tuple[int, str]:
        """Meta's subscription check, with the verify token the operator gave Meta."""
        params = {
            "hub.mode": "subscribe",
            "hub.challenge": challenge,
            "hub.verify_token": self.settings.whatsapp_verify_token or "",
        }
        answer = self.http.get("/whatsapp/webhook", params=params)
        return answer.status_code, answer.text

    def graph_received(self) -> list[dict[str, Any]]:
        """The message bodies Meta accepted, oldest first."""
        return [call.body for call in self.graph.sent()]


def demo_settings(cast: Cast, database_url: str, slack: FakeSlack, graph: FakeGraph) -> Settings:
    """Settings for the fakes, checked by the same validation as the environment's."""
    environ = {
        "DATABASE_URL": database_url,
        "SLACK_SIGNING_SECRET": secrets.token_hex(16),
        "SLACK_BOT_TOKEN": "xoxb-demo-" + secrets.token_hex(12),
        "SLACK_API_URL": slack.url,
        "WA_AUDIT_CHANNEL": cast.audit_channel,
        "WA_ALERT_CHANNEL": cast.alert_channel,
        "WA_INBOX_CHANNEL": cast.inbox_channel,
        "WA_SECRET_KEY": secrets.token_urlsafe(32),
        "WHATSAPP_APP_SECRET": secrets.token_hex(16),
        "WHATSAPP_VERIFY_TOKEN": secrets.token_urlsafe(16),
        "WHATSAPP_ACCESS_TOKEN": graph.token,
        "WHATSAPP_WABA_ID": cast.waba_id,
        "WHATSAPP_PHONE_NUMBER_ID": cast.phone_number_id,
        "WHATSAPP_API_URL": graph.url,
    }
    return load_settings(environ, dotenv=None)


@contextmanager
def stage(cast: Cast | None = None) -> Iterator[Stage]:
    """Everything started, and on the way out (however it goes) stopped and removed."""
    cast = cast or Cast()
    with ExitStack() as stops:  # unwound in reverse, each step even if another fails
        scratch = Path(tempfile.mkdtemp(prefix="wa-access-demo-"))
        stops.callback(shutil.rmtree, scratch, ignore_errors=True)
        slack = stops.enter_context(_started(FakeSlack()))
        for person in (cast.admin, cast.alice, cast.bob):
            slack.add_user(person.id, person.name)
        graph = stops.enter_context(FakeGraph(token=secrets.token_urlsafe(24)))
        database_url = f"sqlite:///{scratch / 'wa_access.db'}"
        _migrate(database_url)
        runtime = build_runtime(demo_settings(cast, database_url, slack, graph))
        stops.callback(runtime.db.dispose)
        server = _serve(runtime)
        stops.callback(server.server_close)
        stops.callback(server.shutdown)
        sender = whatsapp_sender(runtime)
        assert sender is not None  # WHATSAPP_ACCESS_TOKEN is set above
        stops.callback(sender.stop)
        app_url = f"http://127.0.0.1:{server.server_port}"
        http = stops.enter_context(httpx.Client(base_url=app_url, timeout=10.0))
        yield Stage(
            cast,
            scratch,
            slack,
            graph,
            runtime,
            app_url,
            IntakeWorker(runtime.webhooks, runtime.gate, runtime.outbox),
            # Paced at nothing: Slack's one post a second per channel only slows a demo.
            build_worker(runtime.settings, Outbox(runtime.db, pace=timedelta(0))),
            sender,
            http,
        )


@contextmanager
def _started(slack: FakeSlack) -> Iterator[FakeSlack]:
    slack.start()
    try:
        yield slack
    finally:
        slack.stop()


def _migrate(database_url: str) -> None:
    db = Database(database_url)
    try:
        migrate.upgrade(db)
    finally:
        db.dispose()


def _serve(runtime: Runtime) -> BaseWSGIServer:
    server = make_server("127.0.0.1", 0, create_app(runtime), threaded=True, request_handler=_Quiet)
    threading.Thread(target=server.serve_forever, name="demo-app", daemon=True).start()
    return server


def pretty(value: dict[str, Any]) -> str:
    """A JSON object a key a line, each value on its line: readable, and short."""
    lines = [f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in value.items()]
    return "{\n" + ",\n".join(lines) + "\n}"


@dataclass(frozen=True)
class IntakeRun:
    bodies: int
    reports: list[tuple[str, dict[str, int]]]

    @property
    def results(self) -> set[str]:
        return {result for result, _ in self.reports}

    def __str__(self) -> str:
        events: dict[str, int] = {}
        for _, counts in self.reports:
            for kind, n in counts.items():
                events[kind] = events.get(kind, 0) + n
        results = ", ".join(sorted(self.results)) or "no result"
        said = ", ".join(f"{kind} {n}" for kind, n in events.items()) or "none"
        noun = "body" if self.bodies == 1 else "bodies"
        return (
            f"the webhook worker processed {self.bodies} stored {noun} ({results}); events: {said}"
        )
