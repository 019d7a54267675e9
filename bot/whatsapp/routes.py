"""The WhatsApp surface as a Flask blueprint: `GET|POST /whatsapp/webhook`.

`GET` is Meta's subscription check: the challenge is echoed (as plain text) only
for `hub.mode=subscribe` and the right verify token. `POST` is the door of every
notification: signature, then envelope, then the body stored durably
(`WebhookInbox`) and 200 at once; a worker processes it later, so Meta never
waits on the database's other work or retries because we were slow. Refusals
are counted by reason (bot/refusals.py) and answered with JSON, never the body.
"""

from __future__ import annotations

import hmac
import re

from flask import Blueprint, Response, jsonify, request

from ..json_body import Unreadable
from ..refusals import Refusals
from ..request_body import read_body
from ..runtime import Runtime
from .webhook import SIGNATURE_HEADER, envelope_problem, parse_notification, signature_refusal

SOURCE = "whatsapp"
_CHALLENGE = re.compile(r"[A-Za-z0-9._-]{1,256}")
"""Meta's challenge is a short number: nothing else is echoed back."""

Answer = tuple[Response, int]


def whatsapp_routes(runtime: Runtime, app_secret: str, verify_token: str) -> Blueprint:
    """The WhatsApp blueprint for one app."""
    secret = app_secret.encode("utf-8")
    token = verify_token.encode("utf-8")
    inbox = runtime.webhooks
    refusals = Refusals(SOURCE)
    routes = Blueprint("whatsapp", __name__)

    @routes.get("/whatsapp/webhook")
    def verify() -> Response | Answer:
        args = request.args
        offered = args.get("hub.verify_token", "").encode("utf-8", "replace")
        challenge = args.get("hub.challenge", "")
        if args.get("hub.mode") != "subscribe" or not hmac.compare_digest(offered, token):
            refusals.add("bad_verify_token")
            return _refused("forbidden", "The verify token does not match.", 403)
        if not _CHALLENGE.fullmatch(challenge):
            return _refused("bad_challenge", "hub.challenge is missing or malformed.", 400)
        answer = Response(challenge, 200, mimetype="text/plain")
        answer.headers["X-Content-Type-Options"] = "nosniff"
        return answer

    @routes.post("/whatsapp/webhook")
    def receive() -> Answer:
        body = read_body(request)
        refusal = signature_refusal(secret, body, request.headers.get(SIGNATURE_HEADER))
        if refusal is not None:
            refusals.add(refusal)
            if refusal == "missing_signature":
                return _refused("unauthorized", f"{SIGNATURE_HEADER} is missing.", 401)
            return _refused("forbidden", f"{SIGNATURE_HEADER} does not match the body.", 403)
        try:
            text, payload = parse_notification(body)
        except Unreadable as exc:
            refusals.add("unreadable")
            return _refused("bad_request", f"The body is signed but {exc}.", 400)
        problem = envelope_problem(payload)
        if problem is not None:
            refusals.add("wrong_shape")
            return _refused("bad_request", f"The body is signed but {problem}.", 400)
        stored = inbox.store(SOURCE, text)
        return jsonify(status="received" if stored else "already received"), 200

    return routes


def _refused(error: str, message: str, status: int) -> Answer:
    return jsonify(error=error, message=message), status
