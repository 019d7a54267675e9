"""Logging for operators: one line per event, time and level first, JSON when asked.

`serve` (its gunicorn master and every worker), `scheduler` and later `worker`
call `configure_logging` once: it replaces whatever the root logger had with
one handler whose lines a person can read (`WA_LOG_FORMAT=text`, the default)
or a log pipeline can parse (`json`, one object a line).

Every HTTP request gets an id (the caller's `X-Request-Id` when it is a sane
token, so a proxy's id carries through; a new one otherwise), echoed in the
response and put on every line logged while the request runs; one line at the
end of the request names its route, status and duration, and the actor, gate
action and outcome when the request got that far.

What must never reach a log: secrets (every `Settings` field kept out of
`repr`, a database password, anything shaped like a Slack token or a
response_url) and phone numbers (anything shaped like E.164). These are
masked in the formatted line, tracebacks included, as a last line of defence;
the code's first one is not to log bodies or URLs that carry them.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote, quote_plus

from sqlalchemy.engine import make_url

from rbac_core import signals
from rbac_core.store.dialects import normalize_url

from .config import Settings

if TYPE_CHECKING:  # Flask itself only where requests are served: the CLI starts faster
    from flask import Flask

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

LOG_FORMATS = ("text", "json")
request_id: ContextVar[str | None] = ContextVar("wa_request_id", default=None)
# What is known about the current request so far (actor, action, outcome).
_facts: ContextVar[dict[str, str] | None] = ContextVar("wa_request_facts", default=None)

_INCOMING_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Record attributes that JSON lines carry as fields of their own, when present.
FIELDS = ("route", "method", "status", "duration_ms", "actor", "action", "outcome", "job")
# Shapes that are never logged whatever the code around them does.
_SLACK_TOKEN = r"\bxox[a-z]-[0-9A-Za-z-]+|\bxapp-[0-9A-Za-z-]+"
# A response_url as sent, percent-encoded (in a form body) or JSON-escaped (`\/`).
_RESPONSE_URL = r"https(?::|%3[Aa])(?:/|%2[Ff]|\\/){2}hooks\.slack\.com(?:/|%2[Ff]|\\/)[^\s\"'<>]+"
# A literal each of those two patterns needs, to skip them on a line without any.
_SECRET_NEEDLES = ("xox", "xapp-", "hooks.slack.com")
# E.164 written compactly, with spaces, dots or dashes, or percent-encoded (%2B).
_PHONE = re.compile(r"(?<![0-9+])(?:\+|%2[Bb])[1-9](?:[ .-]?[0-9]){6,14}(?![0-9])")
_MIN_SECRET = 6  # shorter values would mask ordinary words; every real one is longer
_HANDLER_MARK = "wa_access_handler"


class _AccessLogger(logging.Logger):
    """The logger of each request's last line, which names its caller nowhere: no walk up
    the stack for a file, line and function on every request (a stack, when asked for
    with `stack_info`, is still collected)."""

    def findCaller(
        self, stack_info: bool = False, stacklevel: int = 1
    ) -> tuple[str, int, str, str | None]:
        if stack_info:
            return super().findCaller(stack_info, stacklevel + 1)
        return "(unknown file)", 0, "(unknown function)", None


_ACCESS_LOG = logging.getLogger("wa_access.http")
_ACCESS_LOG.__class__ = _AccessLogger  # the same logger, wherever else it is looked up
_QUIET_ROUTES = frozenset({"/healthz", "/metrics"})  # probes and scrapes: DEBUG only
# Deliveries by the thousand a second, counted in /metrics: DEBUG when accepted, and INFO
# like any request when refused (a bad signature is news) or not a delivery (Meta's GET).
_QUIET_WHEN_ACCEPTED = frozenset({"/whatsapp/webhook"})


def secrets_of(settings: Settings) -> list[str]:
    """The values of `settings` that must not be logged: those it keeps out of repr."""
    found = [getattr(settings, f.name) for f in fields(settings) if not f.repr]
    try:
        password = make_url(normalize_url(settings.database_url)).password
    except Exception:  # a malformed URL was refused by load_settings already
        password = None
    found.append(password)
    return [s for s in found if isinstance(s, str) and len(s) >= _MIN_SECRET]


class Redactor:
    """Masks secrets and phone numbers in formatted text.

    Every line of every request passes through here, so the patterns only run on
    a line holding something they could match: each of them needs a literal
    (a secret's spelling, `xox`, `xapp-`, `hooks.slack.com`, `+` or `%2`) that a
    substring test finds in a fraction of the time the regex takes to fail.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        spellings = {v for s in secrets if len(s) >= _MIN_SECRET for v in _spellings(s)}
        known = sorted(spellings, key=len, reverse=True)
        self._secret = re.compile(
            "|".join([*(re.escape(s) for s in known), _SLACK_TOKEN, _RESPONSE_URL])
        )
        self._needles = (*known, *_SECRET_NEEDLES)

    def __call__(self, text: str) -> str:
        for needle in self._needles:
            if needle in text:
                text = self._secret.sub("[redacted]", text)
                break
        if "+" in text or "%2" in text:
            text = _PHONE.sub(_mask_phone, text)
        return text


def _spellings(secret: str) -> set[str]:
    """A secret as it may appear in a line: itself, and escaped by JSON, by repr() (an
    exception's message often quotes a value) or by percent-encoding (a URL)."""
    return {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
        quote(secret, safe=""),
        quote_plus(secret),
    }


def _mask_phone(match: re.Match[str]) -> str:
    found = match.group()
    sign, digits = ("%2B", found[3:]) if found.startswith("%2") else ("+", found[1:])
    digits = re.sub(r"[^0-9]", "", digits)
    return sign + "*" * (len(digits) - 2) + digits[-2:]


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record (`-` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get() or "-"
        return True


_second: tuple[int, str] = (-1, "")  # the last second formatted, and its text


def _timestamp(record: logging.LogRecord) -> str:
    """`2026-11-18T11:06:40.123Z`, as `datetime.isoformat` writes it; the part up to the
    second is formatted once a second."""
    global _second
    whole = math.floor(record.created)
    micros = round((record.created - whole) * 1e6)  # datetime's own rounding
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    second, text = _second
    if second != whole:
        text = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second = (whole, text)
    return f"{text}.{micros // 1000:03d}Z"


class TextFormatter(logging.Formatter):
    """`2026-11-18T11:06:40.123Z INFO name [request id] message`, masked."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{_timestamp(record)} {record.levelname} {record.name} "
            f"[{getattr(record, 'request_id', '-')}] {record.getMessage()}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return self._redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request_id and known fields."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
            "pid": record.process,
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        # Masked before encoding (JSON escapes a quote or backslash in a secret) and
        # after (a field made text by `default=str`).
        masked = {k: self._redact(v) if isinstance(v, str) else v for k, v in out.items()}
        return self._redact(json.dumps(masked, ensure_ascii=False, default=str))


def configure_logging(
    settings: Settings, *, stream: TextIO | None = None, level: int = logging.INFO
) -> logging.Handler:
    """Route every logger through one handler on the root, in `settings.log_format`.

    Idempotent: a second call (gunicorn's worker after its master) replaces the
    handler this module installed and leaves any other (pytest's) alone.
    """
    redact = Redactor(secrets_of(settings))
    formatter: logging.Formatter = (
        JsonFormatter(redact) if settings.log_format == "json" else TextFormatter(redact)
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    # What no line here shows is not collected for every record (the logging HOWTO's
    # "Optimization"): the thread's and the multiprocessing names. The request's own
    # line also skips the walk up the stack for its caller (`_AccessLogger`).
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging.captureWarnings(True)
    return handler


def note(**facts: str) -> None:
    """Record what is known about the current request (actor, action, outcome)."""
    current = _facts.get()
    if current is None:
        return  # not in a request (the scheduler, a lazy listener's thread)
    for key, value in facts.items():
        earlier = current.get(key)
        current[key] = value if earlier is None or earlier == value else f"{earlier},{value}"


def _note_gate_outcome(action: str, status: str) -> None:
    note(action=action, outcome=status)


ROUTE_KEY = "wa_access.route"
"""Where a WSGI door answering a route without Flask (bot/whatsapp/door.py) names it."""


def route_of(environ: Mapping[str, Any]) -> str:
    """The URL rule Flask matched (`/slack/events`), never the path sent: `unmatched` else.

    Only while Flask's request is live: from start_response, not after the app returned.
    """
    door = environ.get(ROUTE_KEY)
    if door is not None:
        return str(door)
    req = environ.get("werkzeug.request")
    rule = getattr(req, "url_rule", None)
    return rule.rule if rule is not None else "unmatched"


def _new_id() -> str:
    """32 hex digits. Not a secret, only unique: `random` rather than `secrets`, whose
    system call per request showed in the webhook door's profile."""
    return f"{random.getrandbits(128):032x}"


class RequestLogging:
    """WSGI middleware around Flask's app: the request id, and one line at the end.

    A wrapper rather than Flask's before/after/teardown hooks: those cost about
    8% of a whole `/wa-role show` in instructions (`python -m bench --only
    slack-instructions`), this a fraction of it.
    """

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        incoming = environ.get("HTTP_X_REQUEST_ID", "")
        rid = incoming if incoming and _INCOMING_ID.fullmatch(incoming) else _new_id()
        rid_token, facts_token = request_id.set(rid), _facts.set({})
        started = time.perf_counter()
        answered: list[tuple[str, str]] = []

        def start(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            answered.append((route_of(environ), status))
            headers.append(("X-Request-Id", rid))
            return start_response(status, headers, *exc_info)

        try:
            return self.app(environ, start)
        finally:
            try:
                if answered:
                    rule, status = answered[-1]
                    self._log(environ, rule, int(status.split(" ", 1)[0]), started)
            finally:
                request_id.reset(rid_token)
                _facts.reset(facts_token)

    @staticmethod
    def _log(environ: Mapping[str, Any], rule: str, status: int, started: float) -> None:
        accepted = status < 300 and environ.get("REQUEST_METHOD") == "POST"
        quiet = rule in _QUIET_ROUTES or (rule in _QUIET_WHEN_ACCEPTED and accepted)
        level = logging.DEBUG if quiet else logging.INFO
        if not _ACCESS_LOG.isEnabledFor(level):
            return
        facts = dict(_facts.get() or {})
        ms = round((time.perf_counter() - started) * 1000, 1)
        method = str(environ.get("REQUEST_METHOD", ""))[:16]
        described = "".join(f" {k}={v}" for k, v in facts.items())
        _ACCESS_LOG.log(
            level,
            "%s %s %d in %.1f ms%s",
            method,
            rule,
            status,
            ms,
            described,
            extra={
                "route": rule,
                "method": method,
                "status": status,
                "duration_ms": ms,
                **facts,
            },
        )


def install_request_logging(app: Flask) -> None:
    """Give each request an id, echo it, and log one line when the request ends."""
    signals.gate_outcome.connect(_note_gate_outcome)
    app.wsgi_app = RequestLogging(app.wsgi_app)  # type: ignore[method-assign]
