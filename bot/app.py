"""The Flask application factory: the surfaces' doors in front, operations as a blueprint,
errors as JSON app-wide."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from .logs import install_request_logging
from .ops_routes import ops_routes
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

    settings = runtime.settings
    if settings.whatsapp_app_secret and settings.whatsapp_verify_token:
        from .whatsapp.door import WebhookDoor

        # In front of Flask and inside the middleware below, which log and count it.
        app.wsgi_app = WebhookDoor(  # type: ignore[method-assign]
            app.wsgi_app,
            runtime.webhooks.store,
            settings.whatsapp_app_secret,
            settings.whatsapp_verify_token,
        )
    if settings.slack_signing_secret and settings.slack_bot_token:
        from .slack.app import build_slack_app
        from .slack.door import SlackDoor

        app.wsgi_app = SlackDoor(app.wsgi_app, build_slack_app(runtime))  # type: ignore[method-assign]
    install_request_logging(app)
    install_metrics(app)
    app.register_blueprint(ops_routes(runtime))

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
