"""Serve signed `/wa-role show` requests in process while callgrind counts instructions.

Run by `bench.slack_instructions` as `valgrind --tool=callgrind --instr-atstart=no
python -m bench.instructions_probe KIND N`: the app is built and warmed up with
counting off, every request is built and signed beforehand, and counting is
switched on (`callgrind_control -i on`) only around the N WSGI calls. Switching
it off again is counted too (Python starting `callgrind_control`): a run with
N = 0 measures that, and bench.slack_instructions takes it off. Settings come
from the environment, as for `wa-access serve`.

KIND is what answers the requests:

* `bare`: bench.bare_app, the Flask 200 of the throughput benchmark;
* `bolt`: our Bolt app as configured by bot.slack.app, behind our Flask route,
  with one `/wa-role` listener that acknowledges a fixed text (the cost of
  Slack's framework itself);
* `show`: the whole app, `/wa-role show` through the gate.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from flask import Flask, Response, request
from slack_bolt import Ack

from bot.app import create_app
from bot.config import load_settings
from bot.runtime import build_runtime
from bot.slack.adapter import SlackEndpoint
from bot.slack.app import bolt_app, slack_client
from tests.slack_requests import signed_headers, slash_command

from .slack_roundtrip import SHOW_ACTORS

WARMUP = 200
BOLT_ONLY_ANSWER = "acknowledged by the one listener"
EXPECTED = {"bare": b"", "bolt": BOLT_ONLY_ANSWER.encode(), "show": b"Grants of"}
Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Any]


def bolt_only() -> Flask:
    settings = load_settings(dotenv=None)
    app = bolt_app(settings, slack_client(settings))

    @app.command("/wa-role")
    def answer(ack: Ack) -> None:
        ack(response_type="ephemeral", text=BOLT_ONLY_ANSWER)

    endpoint = SlackEndpoint(app)
    flask = Flask("wa_access_bolt_only")

    @flask.post("/slack/events")
    def slack_events() -> Response:
        return endpoint.handle(request)

    return flask


def build(kind: str) -> Wsgi:
    if kind == "bare":
        from .bare_app import app as bare

        return bare
    if kind == "bolt":
        return bolt_only()
    return create_app(build_runtime(load_settings(dotenv=None)))


def environ(body: str) -> dict[str, Any]:
    headers = signed_headers(body)
    raw = body.encode()
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/slack/events",
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
        "HTTP_X_SLACK_SIGNATURE": headers["X-Slack-Signature"],
        "HTTP_X_SLACK_REQUEST_TIMESTAMP": headers["X-Slack-Request-Timestamp"],
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
    parser.add_argument("kind", choices=("bare", "bolt", "show"))
    parser.add_argument("requests", type=int, help="0 measures only switching counting on and off")
    parser.add_argument("--response-url", required=True)
    args = parser.parse_args(argv)
    app = build(args.kind)
    bodies = [slash_command(actor, "show", args.response_url) for actor in SHOW_ACTORS]
    for i in range(WARMUP):
        serve(app, environ(bodies[i % len(bodies)]))
    envs = [environ(bodies[i % len(bodies)]) for i in range(args.requests)]
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
