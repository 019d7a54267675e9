"""The Slack surface's door: `POST /slack/events`, one route for everything, as plain WSGI.

Every slash command, interaction and event comes through here to the one Bolt
app (bot/slack/adapter.py, bot/slack/app.py). `create_app` (bot/app.py) adds it
whole or not at all: without a signing secret and a bot token there is no Bolt
app to hand requests to, and the path is left to Flask (a 404) rather than
failing per request.

Why not a Flask blueprint: this is the path people wait on, and Flask's request
context, routing and response objects cost 79 µs of a 427 µs `/wa-role show`
in process, for nothing this route uses; see bot/wsgi_door.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from slack_bolt import App

from ..logs import ROUTE_KEY
from ..wsgi_door import StartResponse, Wsgi, failure, is_path, not_allowed, send, status_line
from .adapter import SlackEndpoint

PATH = "/slack/events"
_ALLOWED = "/slack/events answers POST: Slack's commands, interactions and events."


class SlackDoor:
    """WSGI middleware: answers `PATH` with the Bolt app, passes every other request to `app`."""

    def __init__(self, app: Wsgi, bolt: App) -> None:
        self.app = app
        self.endpoint = SlackEndpoint(bolt)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not is_path(environ, PATH):
            return self.app(environ, start_response)
        environ[ROUTE_KEY] = PATH
        method = str(environ.get("REQUEST_METHOD"))
        if method != "POST":
            return not_allowed(start_response, method, "POST", _ALLOWED)
        try:
            answer = self.endpoint.handle(environ)
        except Exception as exc:  # a body too large or cut short; anything unforeseen
            return send(start_response, failure(exc))
        body = answer.body.encode("utf-8")
        headers = [
            (name, value)
            for name, values in answer.headers.items()
            if name.lower() != "content-length"
            for value in values
        ]
        headers.append(("Content-Length", str(len(body))))
        start_response(status_line(answer.status), headers)
        return [body]
