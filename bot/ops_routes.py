"""The operational surface: `GET /healthz` for load balancers, `GET /metrics` for Prometheus.

A blueprint of its own because its callers are not Slack's: nothing here is
behind Slack's signature, and it is there whether or not Slack is configured,
so a deployment can be probed and scraped before its Slack app exists.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify
from sqlalchemy.exc import SQLAlchemyError

from .runtime import Runtime

# The logger this warning had before it moved here from bot/app.py: log filters still match.
log = logging.getLogger("bot.app")


def ops_routes(runtime: Runtime) -> Blueprint:
    """The ops blueprint for one app: its views close over that app's runtime."""
    # Imported here, not above: bot.app imports this module before `serve` has
    # prepared prometheus_client's multiprocess files (bot/metrics.py).
    from .metrics import metrics_view

    ops = Blueprint("ops", __name__)

    @ops.get("/healthz")
    def healthz() -> tuple[Response, int]:
        try:
            runtime.db.ping()
        except SQLAlchemyError:
            log.warning("health check: database unreachable")
            return jsonify(status="unavailable", database="unreachable"), 503
        return jsonify(status="ok", database="ok"), 200

    ops.get("/metrics")(metrics_view(runtime.settings.metrics_token, runtime.outbox.counts))
    return ops
