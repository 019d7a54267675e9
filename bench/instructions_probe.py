"""Serve signed `/wa-role show` requests in process while callgrind counts instructions.

Run by `bench.slack_instructions` as `valgrind --tool=callgrind --instr-atstart=no
python -m bench.instructions_probe KIND N`: the app is built and warmed up with
counting off, every request is built and signed beforehand, and counting is
switched on (`callgrind_control -i on`) only around the N WSGI calls. Switching
it off again is counted too (Python starting `callgrind_control`): a run with
N = 0 measures that, and bench.slack_instructions takes it off. Settings come
from the environment, as for `wa-access serve`, and logging is configured as
each of serve's workers configures it (its lines go to /dev/null here), so a
request's log line is counted.

KIND is what answers the requests:

* `bare`: bench.bare_app, the Flask 200 of the throughput benchmark;
* `bolt`: our Bolt app as configured by bot.slack.app, behind our Slack door,
  with one `/wa-role` listener that acknowledges a fixed text (the cost of
  Slack's framework itself);
* `show`: the whole app, `/wa-role show` through the gate;
* `send`: the whole app, `/wa-send NUMBER --template welcome` from an agent: the gate,
  the conversation and the send queued in the outbox (sending is the background's);
* `ingest`: the whole app, one signed WhatsApp notification of one text message
  stored by the webhook door (processing it is the background's);
* `bare-ingest`: the bare Flask 200 at `/whatsapp/webhook`, with the same bodies.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from flask import Flask
from slack_bolt import Ack

from bot.app import create_app
from bot.config import load_settings
from bot.logs import configure_logging
from bot.runtime import build_runtime
from bot.slack.app import bolt_app, slack_client
from bot.slack.door import SlackDoor
from tests.slack_requests import signed_headers, slash_command

from .slack_roundtrip import SHOW_ACTORS, TEAM
from .whatsapp_ingest import requests_of

KINDS = ("bare", "bolt", "show", "send", "ingest", "bare-ingest")
SEND_TEXT = "+16505551234 --template welcome"

WARMUP = 200
BOLT_ONLY_ANSWER = "acknowledged by the one listener"
EXPECTED = {
    "bare": b"",
    "bolt": BOLT_ONLY_ANSWER.encode(),
    "show": b"Grants of",
    "send": b"Queued message",
    "ingest": b"received",
    "bare-ingest": b"",
}
Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Any]


def bolt_only() -> Flask:
    settings = load_settings(dotenv=None)
    app = bolt_app(settings, slack_client(settings))

    @app.command("/wa-role")
    def answer(ack: Ack) -> None:
        ack(response_type="ephemeral", text=BOLT_ONLY_ANSWER)

    flask = Flask("wa_access_bolt_only")
    flask.wsgi_app = SlackDoor(flask.wsgi_app, app)  # type: ignore[method-assign]
    return flask


def build(kind: str) -> Wsgi:
    if kind in ("bare", "bare-ingest"):
        from .bare_app import app as bare

        return bare
    if kind == "bolt":
        return bolt_only()
    return create_app(build_runtime(load_settings(dotenv=None)))


def request_of(kind: str, i: int, response_url: str) -> dict[str, Any]:
    """Request `i` of `kind`, signed as Slack or Meta sign it."""
    if kind in ("ingest", "bare-ingest"):
        headers, raw = requests_of(f"probe{kind}", 1)(i)
        return environ(raw, headers, "/whatsapp/webhook")
    if kind == "send":
        body = slash_command(TEAM[0], SEND_TEXT, response_url, command="/wa-send")
    else:
        body = slash_command(SHOW_ACTORS[i % len(SHOW_ACTORS)], "show", response_url)
    return environ(body.encode(), signed_headers(body), "/slack/events")


def environ(raw: bytes, headers: dict[str, str], path: str) -> dict[str, Any]:
    found = {
        "HTTP_" + name.upper().replace("-", "_"): value
        for name, value in headers.items()
        if name != "Content-Type"
    }
    return {
        **found,
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "3000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(raw),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "CONTENT_LENGTH": str(len(raw)),
        "CONTENT_TYPE": headers["Content-Type"],
    }


def serve(app: Wsgi, env: dict[str, Any]) -> bytes:
    status: list[str] = []
    body = b"".join(app(env, lambda s, headers, exc_info=None: status.append(s)))
    if not status or not status[0].startswith("200"):
        raise RuntimeError(f"answered {status}: {body[:300]!r}")
    return body


def count(on: bool) -> None:
    subprocess.run(
        ["callgrind_control", "-i", "on" if on else "off", str(os.getpid())],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions_probe")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("requests", type=int, help="0 measures only switching counting on and off")
    parser.add_argument("--response-url", required=True)
    args = parser.parse_args(argv)
    configure_logging(load_settings(dotenv=None), stream=open(os.devnull, "w"))  # noqa: SIM115
    app = build(args.kind)
    for i in range(WARMUP):
        serve(app, request_of(args.kind, i, args.response_url))
    envs = [request_of(args.kind, WARMUP + i, args.response_url) for i in range(args.requests)]
    answers: list[bytes] = []
    count(True)
    for env in envs:
        answers.append(serve(app, env))
    count(False)
    wrong = [a for a in answers if EXPECTED[args.kind] not in a]
    if wrong:
        raise RuntimeError(f"{len(wrong)} unexpected answers, the first: {wrong[0][:300]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
