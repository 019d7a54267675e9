"""The Flask application factory."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from .logs import install_request_logging
from .request_body import MAX_BODY_BYTES
from .runtime import Runtime

log = logging.getLogger(__name__)


def create_app(runtime: Runtime) -> Flask:
    app = Flask("wa_access")
    # Routes read bodies with bot/request_body.read_body; this also caps werkzeug's
    # own readers (request.form, get_data) should anything use them.
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["wa_access"] = runtime
    # Imported here: prometheus_client fixes where counters live when first
    # imported, and `serve` decides that (files shared by workers) before any
    # worker builds its app (bot/metrics.py).
    from .metrics import install_metrics

    install_request_logging(app)
    install_metrics(app, runtime.settings.metrics_token, runtime.outbox.counts)

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
