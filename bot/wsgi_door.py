"""What the app's WSGI doors share: routes answered in front of Flask.

The two hottest routes, Meta's `POST /whatsapp/webhook` (bot/whatsapp/door.py)
and Slack's `POST /slack/events` (bot/slack/door.py), need none of what Flask
gives a request (a context, routing, sessions, response objects), and those
cost about as much CPU as either route's own work. Each is a WSGI middleware
inside the app's request-id, access-log and metrics middleware, which answers
its path and hands every other request to Flask untouched. Their answers look
like Flask's: errors as the same JSON, 405 with `Allow` (`OPTIONS` too: these are
server-to-server webhooks, no browser asks first).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
Wsgi = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
Answer = tuple[int, bytes, str]
"""(status, body, content type)"""


def is_path(environ: dict[str, Any], path: str) -> bool:
    """Whether the request is for `path`. Leading slashes collapse, as Werkzeug's routing
    does: a URL registered as `https://host/` + `/slack/events` keeps being delivered."""
    return "/" + str(environ.get("PATH_INFO", "")).lstrip("/") == path


def json_answer(code: int, **fields: str) -> Answer:
    # As Flask's jsonify writes it, so a client sees one style whichever route answered.
    return code, json.dumps(fields, separators=(",", ":")).encode() + b"\n", "application/json"


def failure(exc: Exception) -> Answer:
    """The answer to an exception a door's work raised, as bot/app.py's handlers give it."""
    if isinstance(exc, HTTPException):  # read_environ_body: too large, unframed, cut short
        error = exc.name.lower().replace(" ", "_")
        return json_answer(exc.code or 400, error=error, message=str(exc.description))
    log.exception("unhandled error")
    return json_answer(500, error="internal_error", message="something went wrong")


def status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase.upper()}"
    except ValueError:
        return f"{status} UNKNOWN"


def send(
    start_response: StartResponse,
    answer: Answer,
    *,
    extra: Iterable[tuple[str, str]] = (),
    head: bool = False,
) -> list[bytes]:
    status, body, kind = answer
    headers = [("Content-Type", kind), ("Content-Length", str(len(body))), *extra]
    if kind.startswith("text/"):
        headers.append(("X-Content-Type-Options", "nosniff"))
    start_response(status_line(status), headers)
    return [b""] if head else [body]


def not_allowed(
    start_response: StartResponse, method: str, allow: str, message: str
) -> list[bytes]:
    answer = json_answer(405, error="method_not_allowed", message=message)
    return send(start_response, answer, extra=[("Allow", allow)], head=method == "HEAD")
