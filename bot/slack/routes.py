"""The Slack surface as a Flask blueprint: `POST /slack/events`, one route for everything.

A blueprint so that `create_app` (bot/app.py) adds the surface whole or not at
all: without a signing secret and a bot token there is no Bolt app to hand
requests to, and the route is left out (a 404) rather than failing per request.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from ..runtime import Runtime
from .adapter import SlackEndpoint
from .app import build_slack_app


def slack_routes(runtime: Runtime) -> Blueprint:
    """The Slack blueprint for one app: new each time, as each app has its own Bolt app."""
    slack = SlackEndpoint(build_slack_app(runtime))
    routes = Blueprint("slack", __name__)

    @routes.post("/slack/events")
    def events() -> Response:
        return slack.handle(request)

    return routes
