"""Slack's signature is checked before a byte of the body is parsed.

Bolt's own order is the other way round: `BoltRequest` parses the body (form
fields, then the `payload=` JSON) when it is built, and its `SslCheck` answers
before `RequestVerification` runs. So an unsigned request with a broken JSON
body, or a timestamp header that is not a number, made Bolt raise before any
check, and the caller got a 500. SPEC §4 rule 10 asks for the check first.

`LeanApp` (bot/slack/adapter.py) therefore receives the request unparsed and
runs, in this order, before Bolt's other middleware:

1. `SignatureCheck` (here): Bolt's `RequestVerification`, with Slack's v0 HMAC
   computed over the body's raw bytes (constant-time comparison, 5-minute
   window), after a plain look at the two headers so that a missing or
   non-numeric timestamp is a 401 like any other failure. A refusal is
   counted (`Refusals`, and the metric of bot/metrics.py) and logged without
   the body, which may carry a 2FA code or Slack's legacy verification token;
   Bolt's version logs the whole body.
2. `ParseSignedBody` (bot/slack/shape.py): only on a body now known to come
   from Slack is it decoded, parsed and checked for the shape Bolt and the
   listeners expect.
3. Bolt's `SslCheck`, so that an `ssl_check` is acknowledged only when signed,
   as Slack signs every request it sends.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

from slack_bolt import BoltRequest, BoltResponse
from slack_bolt.middleware import RequestVerification

from ..refusals import Refusals

# Slack's window: a request whose timestamp is further than this from now is refused.
TIMESTAMP_WINDOW_S = 300
# Ten digits today; anything much longer is not a Unix time (and int() of a
# very long digit string is slow, then refused by Python itself).
_MAX_TIMESTAMP_DIGITS = 12


def _first(req: BoltRequest, name: str) -> str:
    values = req.headers.get(name)
    return values[0] if values else ""


def signed_bytes(req: BoltRequest) -> bytes:
    """The body as Slack signed it: the bytes that came in, when the adapter kept them."""
    raw = getattr(req, "raw_bytes", None)
    return raw if isinstance(raw, bytes) else req.raw_body.encode("utf-8")


class SignatureCheck(RequestVerification):
    """Bolt's signature check, refusing a malformed header instead of raising on it.

    The HMAC is computed over the body's bytes, not over text: slack_sdk's
    verifier decodes bytes as UTF-8 first, and raises on bytes that are not.
    """

    def __init__(self, signing_secret: str, refusals: Refusals, **kwargs: Any) -> None:
        super().__init__(signing_secret, **kwargs)
        self.refusals = refusals
        self._keyed = hmac.new(signing_secret.encode("utf-8"), digestmod=hashlib.sha256)

    def _valid(self, body: bytes, timestamp: str, signature: str) -> bool:
        mac = self._keyed.copy()  # the key's pads are hashed once, not per request
        mac.update(b"v0:" + timestamp.encode("ascii") + b":")
        mac.update(body)  # never copied: it may be 4 MiB
        expected = b"v0=" + mac.hexdigest().encode("ascii")
        return hmac.compare_digest(expected, signature.encode("ascii"))

    def refusal(self, req: BoltRequest) -> str | None:
        """Why this request is not Slack's, or None when it is."""
        timestamp = _first(req, "x-slack-request-timestamp")
        signature = _first(req, "x-slack-signature")
        if not timestamp or not signature:
            return "unsigned"
        if (
            not (timestamp.isascii() and timestamp.isdigit())
            or len(timestamp) > _MAX_TIMESTAMP_DIGITS
        ):
            return "malformed timestamp"
        if abs(time.time() - int(timestamp)) > TIMESTAMP_WINDOW_S:
            return "stale timestamp"
        # A signature is ASCII hex; anything else cannot match, and is not encoded.
        if not signature.isascii() or not self._valid(signed_bytes(req), timestamp, signature):
            return "bad signature"
        return None

    def process(
        self, *, req: BoltRequest, resp: BoltResponse, next: Callable[[], BoltResponse]
    ) -> BoltResponse:
        reason = self.refusal(req)
        if reason is None:
            return next()
        self.refusals.add(reason)
        return self._build_error_response()
