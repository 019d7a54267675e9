"""The Flask application factory."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from .runtime import Runtime

log = logging.getLogger(__name__)

# A signature covers the whole body, so the body is read before it can be
# checked: without a cap anyone could make a worker hold gigabytes. 4 MiB is far above any
# Slack payload (a message of 50 blocks, percent-encoded) and above the 3 MB a
# WhatsApp webhook batch may reach; larger bodies get a 413 before being read.
MAX_BODY_BYTES = 4 * 1024 * 1024


def create_app(runtime: Runtime) -> Flask:
    app = Flask("wa_access")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["wa_access"] = runtime

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        try:
            runtime.db.ping()
        except SQLAlchemyError:
            log.warning("health check: database unreachable")
            return jsonify(status="unavailable", database="unreachable"), 503
        return jsonify(status="ok", database="ok"), 200

    if runtime.settings.slack_signing_secret and runtime.settings.slack_bot_token:
        from .slack_adapter import SlackEndpoint
        from .slack_app import build_slack_app

        slack = SlackEndpoint(build_slack_app(runtime))

        @app.post("/slack/events")
        def slack_events() -> Response:
            return slack.handle(request)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        # HTTP callers get JSON, never an HTML error page.
        return jsonify(error=exc.name.lower().replace(" ", "_"), message=exc.description), (
            exc.code or 500
        )

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return jsonify(error="internal_error", message="something went wrong"), 500

    return app
