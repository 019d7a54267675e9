"""Prometheus counters for operators, served as `GET /metrics`.

The core counts nothing itself (it must not depend on a metrics library):
it sends `rbac_core.signals`, and `connect_core_signals` turns them into
counters here. The HTTP layer counts requests by route and status, and
bot/slack/signature.py counts the requests it refuses, by reason.

Labels are bounded: a route is the URL rule (`/slack/events`, or `unmatched`),
never the path a caller sent; actions, statuses, reasons and jobs come from code.

Under `wa-access serve`, gunicorn runs several worker processes and a scrape
reaches one of them, so counters live in prometheus_client's multiprocess
files (`PROMETHEUS_MULTIPROC_DIR`, prepared by bot/server.py before any worker
starts) and `/metrics` adds up every worker's, including workers that have
exited. prometheus_client picks its storage when first imported, so this module
is imported only once that choice is made (bot/app.py and bot/ops_routes.py
import it inside the functions that build the app); an import in the wrong
order is refused rather than serving one worker's counts as the total.
Without the variable (tests, a single process) the counters are plain ones in
`REGISTRY`.

`/metrics` is not behind Slack's signature, and tells anyone who reads it how
busy the app is and how requests are refused: keep it off the public side of
the proxy, or set `WA_METRICS_TOKEN` to require `Authorization: Bearer TOKEN`.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from flask import Flask, Response, jsonify, request
from prometheus_client import CollectorRegistry, Counter, generate_latest, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from rbac_core import signals

from .logs import route_of

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
# The classic text format, which every Prometheus server reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

MULTIPROCESS = values.ValueClass is not values.MutexValue
if os.environ.get(MULTIPROC_ENV) and not MULTIPROCESS:
    raise RuntimeError(
        f"prometheus_client was imported before {MULTIPROC_ENV} was set: each worker "
        "would count alone; import bot.metrics only after bot/server.py prepared the directory"
    )

REGISTRY = CollectorRegistry(auto_describe=True)
HTTP_REQUESTS = Counter(
    "wa_access_http_requests",
    "HTTP requests answered, by route (the URL rule, never the raw path) and status.",
    ("route", "status"),
    registry=REGISTRY,
)
REFUSED_REQUESTS = Counter(
    "wa_access_refused_requests",
    "Requests refused before their body was trusted (bad or missing signature, "
    "stale or malformed timestamp), by surface and reason.",
    ("surface", "reason"),
    registry=REGISTRY,
)
GATE_OUTCOMES = Counter(
    "wa_access_gate_outcomes",
    "Gate calls, by action and outcome status (done, denied, invalid, ...).",
    ("action", "status"),
    registry=REGISTRY,
)
AUDIT_APPENDS = Counter(
    "wa_access_audit_appends",
    "Audit entries appended, counted once their transaction committed.",
    registry=REGISTRY,
)
POLICY_RELOADS = Counter(
    "wa_access_policy_reloads",
    "Policy snapshots reloaded after a change elsewhere, by kind (full or partial).",
    ("kind",),
    registry=REGISTRY,
)
OUTBOX_DELIVERIES = Counter(
    "wa_access_outbox_deliveries",
    "Outbox delivery attempts that ended, by notice kind and result "
    "(done, retry, given_up, lost: taken over by another worker).",
    ("kind", "result"),
    registry=REGISTRY,
)
WEBHOOKS_RECEIVED = Counter(
    "wa_access_webhooks_received",
    "Verified webhook bodies, by source and result (stored, or a retry of one stored).",
    ("source", "result"),
    registry=REGISTRY,
)
WEBHOOKS_PROCESSED = Counter(
    "wa_access_webhooks_processed",
    "Stored webhook bodies a worker finished with, by result "
    "(done, retry, given_up, lost: taken over by another worker).",
    ("result",),
    registry=REGISTRY,
)
WEBHOOK_EVENTS = Counter(
    "wa_access_webhook_events",
    "Events of processed webhook bodies, by what became of them (messages, statuses, "
    "templates, notices, duplicates, unknown_number, malformed, ignored, errors, …).",
    ("result",),
    registry=REGISTRY,
)
SCHEDULED_RUNS = Counter(
    "wa_access_scheduled_runs",
    "Scheduled job runs that ended, by job and result (done, failed, given_up).",
    ("job", "result"),
    registry=REGISTRY,
)


def _children(counter: Counter) -> Callable[..., Counter]:
    """`counter.labels`, remembered: labels() validates and locks on every call.

    The labels are bounded (see above), so the cache is too.
    """
    known: dict[tuple[str, ...], Counter] = {}

    def child(*labels: str) -> Counter:
        found = known.get(labels)
        if found is None:
            found = known[labels] = counter.labels(*labels)
        return found

    return child


_http = _children(HTTP_REQUESTS)
_refused = _children(REFUSED_REQUESTS)
_gate = _children(GATE_OUTCOMES)
_reloads = _children(POLICY_RELOADS)
_runs = _children(SCHEDULED_RUNS)
_deliveries = _children(OUTBOX_DELIVERIES)
_webhooks = _children(WEBHOOKS_RECEIVED)
_processed = _children(WEBHOOKS_PROCESSED)
_events = _children(WEBHOOK_EVENTS)


def refused(surface: str, reason: str) -> None:
    _refused(surface, reason).inc()


def _gate_outcome(action: str, status: str) -> None:
    _gate(action, status).inc()


def _audit_appended(count: int) -> None:
    AUDIT_APPENDS.inc(count)


def _policy_reloaded(kind: str) -> None:
    _reloads(kind).inc()


def _job_finished(job: str, result: str) -> None:
    _runs(job, result).inc()


def _outbox_delivered(kind: str, result: str) -> None:
    _deliveries(kind, result).inc()


def _webhook_received(source: str, stored: bool) -> None:
    _webhooks(source, "stored" if stored else "retry").inc()


def _webhook_processed(result: str, counts: Mapping[str, int]) -> None:
    _processed(result).inc()
    for what, n in counts.items():
        if what in EVENT_RESULTS:  # the label stays bounded whatever a count is called
            _events(what).inc(n)


EVENT_RESULTS = frozenset(
    {
        "messages",
        "statuses",
        "templates",
        "notices",
        "duplicates",
        "unknown_number",
        "malformed",
        "ignored",
        "errors",
        "identity_changes",
    }
)


def connect_core_signals() -> None:
    """Count what the core reports. Idempotent: each listener is connected once."""
    signals.outbox_delivered.connect(_outbox_delivered)
    signals.gate_outcome.connect(_gate_outcome)
    signals.audit_appended.connect(_audit_appended)
    signals.policy_reloaded.connect(_policy_reloaded)
    signals.job_finished.connect(_job_finished)
    signals.webhook_received.connect(_webhook_received)
    signals.webhook_processed.connect(_webhook_processed)


def exposition(*, all_processes: bool = True) -> bytes:
    """The counters in Prometheus text format: every worker's, when they share files."""
    directory = os.environ.get(MULTIPROC_ENV)
    if all_processes and MULTIPROCESS and directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def authorised(header: str | None, token: str | None) -> bool:
    """Whether a scrape may read: always without a token, else with `Bearer TOKEN`."""
    if token is None:
        return True
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "replace"), token.encode("utf-8")
    )


def outbox_depth(counts: Callable[[], dict[str, int]]) -> bytes:
    """The outbox's rows by status, read from the database at scrape time: one answer
    for every process, so it is not kept in the per-process counter files."""
    gauge = GaugeMetricFamily(
        "wa_access_outbox_rows",
        "Outbox rows by status (queued and running are the depth still to deliver).",
        labels=("status",),
    )
    found = counts()
    for status in ("queued", "running", "done", "given_up"):
        gauge.add_metric((status,), found.get(status, 0))
    registry = CollectorRegistry()
    registry.register(_Fixed(gauge))
    return generate_latest(registry)


class _Fixed:
    def __init__(self, family: GaugeMetricFamily) -> None:
        self.family = family

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return [self.family]


def install_metrics(app: Flask) -> None:
    """Count the app's requests, and what the core and Slack's door report.

    A WSGI wrapper around the whole app rather than part of a blueprint: a
    request that no route matched, or that a blueprint refused, counts too.
    `GET /metrics` itself is served by the ops blueprint (bot/ops_routes.py).
    """
    from .refusals import request_refused

    connect_core_signals()
    request_refused.connect(refused)

    app.wsgi_app = CountRequests(app.wsgi_app)  # type: ignore[method-assign]


MetricsAnswer = Response | tuple[Response, int, dict[str, str]]


def metrics_view(
    token: str | None, outbox_counts: Callable[[], dict[str, int]] | None = None
) -> Callable[[], MetricsAnswer]:
    """The view of `GET /metrics`, bound to this app's token and outbox.

    No Slack signature on it: a bearer token, when one is set, is what keeps
    strangers from reading how busy the app is (see above).
    """

    def metrics() -> MetricsAnswer:
        if not authorised(request.headers.get("Authorization"), token):
            answer = jsonify(error="unauthorized", message="a bearer token is required")
            return answer, 401, {"WWW-Authenticate": 'Bearer realm="metrics"'}
        body = exposition()
        if outbox_counts is not None:
            try:
                body += outbox_depth(outbox_counts)
            except Exception:  # the database away: the counters are still worth reading
                log.warning("metrics: the outbox depth could not be read")
        return Response(body, content_type=CONTENT_TYPE)

    return metrics


class CountRequests:
    """WSGI middleware counting answers by URL rule and status (cheaper than Flask's hooks)."""

    def __init__(self, app: Wsgi) -> None:
        self.app = app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        answered: list[tuple[str, str]] = []

        def start(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            answered.append((route_of(environ), status.split(" ", 1)[0]))
            return start_response(status, headers, *exc_info)

        try:
            return self.app(environ, start)
        finally:
            if answered:
                _http(*answered[-1]).inc()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
        pass


def listener_app(token: str | None) -> Wsgi:
    """`GET /metrics` alone, this process's counters, for a process with no HTTP app."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        if not authorised(environ.get("HTTP_AUTHORIZATION"), token):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Bearer realm="metrics"')],
            )
            return [b"a bearer token is required\n"]
        body = exposition(all_processes=False)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE)])
        return [body]

    return app


def start_listener(host: str, port: int, token: str | None) -> WSGIServer:
    """Serve `GET /metrics` on host:port from a daemon thread (the scheduler's)."""
    connect_core_signals()
    server = make_server(host, port, listener_app(token), handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
