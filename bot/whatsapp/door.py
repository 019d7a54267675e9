"""The WhatsApp surface's door: `GET|POST /whatsapp/webhook` as a plain WSGI app.

`GET` is Meta's subscription check: the challenge is echoed (as plain text) only
for `hub.mode=subscribe` and the right verify token. `POST` is the door of every
notification: signature, then envelope, then the body stored durably
(`WebhookInbox`) and 200 at once; a worker processes it later, so Meta never
waits on the database's other work or retries because we were slow. Refusals
are counted by reason (bot/refusals.py) and answered with JSON, never the body.

Why not a Flask blueprint: Meta delivers one POST per event, by the thousand a
second (`python -m bench --only whatsapp-ingest`); see bot/wsgi_door.py.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from ..json_body import Unreadable
from ..logs import ROUTE_KEY
from ..refusals import Refusals
from ..request_body import read_environ_body
from ..wsgi_door import Answer, StartResponse, Wsgi, failure, is_path, not_allowed, send
from ..wsgi_door import json_answer as _json
from .webhook import SIGNATURE_HEADER, envelope_problem, parse_notification, signature_refusal

PATH = "/whatsapp/webhook"
SOURCE = "whatsapp"
_CHALLENGE = re.compile(r"[A-Za-z0-9._-]{1,256}")
"""Meta's challenge is a short number: nothing else is echoed back."""
_SIGNATURE_KEY = "HTTP_" + SIGNATURE_HEADER.upper().replace("-", "_")


_RECEIVED = _json(200, status="received")
_ALREADY = _json(200, status="already received")


class WebhookDoor:
    """WSGI middleware: answers `PATH` itself, passes every other request to `app`."""

    def __init__(self, app: Wsgi, store: Callable[[str, str], bool], secret: str, token: str):
        self.app = app
        self.store = store
        self.secret = secret.encode("utf-8")
        self.token = token.encode("utf-8")
        self.refusals = Refusals(SOURCE)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not is_path(environ, PATH):
            return self.app(environ, start_response)
        environ[ROUTE_KEY] = PATH
        method = str(environ.get("REQUEST_METHOD"))
        if method not in ("POST", "GET", "HEAD"):
            return not_allowed(start_response, method, "GET, HEAD, POST", _ALLOWED)
        try:
            answer = self.receive(environ) if method == "POST" else self.verify(environ)
        except Exception as exc:  # the database away: a 5xx, so Meta delivers the body again
            answer = failure(exc)
        return send(start_response, answer, head=method == "HEAD")

    def verify(self, environ: dict[str, Any]) -> Answer:
        # The first value of each name, blank or not, as Flask's request.args gives it.
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        args = {name: values[0] for name, values in query.items()}
        offered = args.get("hub.verify_token", "").encode("utf-8", "replace")
        challenge = args.get("hub.challenge", "")
        if args.get("hub.mode") != "subscribe" or not hmac.compare_digest(offered, self.token):
            self.refusals.add("bad_verify_token")
            return _json(403, error="forbidden", message="The verify token does not match.")
        if not _CHALLENGE.fullmatch(challenge):
            return _json(400, error="bad_challenge", message=_BAD_CHALLENGE)
        return 200, challenge.encode("ascii"), "text/plain; charset=utf-8"

    def receive(self, environ: dict[str, Any]) -> Answer:
        body = read_environ_body(environ)
        refusal = signature_refusal(self.secret, body, environ.get(_SIGNATURE_KEY))
        if refusal is not None:
            self.refusals.add(refusal)
            if refusal == "missing_signature":
                return _json(401, error="unauthorized", message=f"{SIGNATURE_HEADER} is missing.")
            return _json(403, error="forbidden", message=_NOT_MATCHING)
        try:
            text, payload = parse_notification(body)
        except Unreadable as exc:
            self.refusals.add("unreadable")
            return _json(400, error="bad_request", message=f"The body is signed but {exc}.")
        problem = envelope_problem(payload)
        if problem is not None:
            self.refusals.add("wrong_shape")
            return _json(400, error="bad_request", message=f"The body is signed but {problem}.")
        return _RECEIVED if self.store(SOURCE, text) else _ALREADY


_ALLOWED = "/whatsapp/webhook answers GET (Meta's check) and POST (notifications)."
_BAD_CHALLENGE = "hub.challenge is missing or malformed."
_NOT_MATCHING = f"{SIGNATURE_HEADER} does not match the body."
