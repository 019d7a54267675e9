"""What a webhook POST must be before anything trusts it: signed by Meta, then shaped
like a WhatsApp Business Account notification.

The signature is `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, body)>`
over the bytes exactly as they arrived: Meta signs its own serialisation (with
escaped Unicode), so hashing a re-serialised body would refuse genuine requests.
It is checked in constant time before a byte is parsed; a missing header is 401,
any other failure 403, and the answer never says what was expected. Only then is
the body decoded and parsed (bot/json_body.py) and its envelope checked; what is
inside the changes is the worker's business, which keeps unknown fields.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from ..json_body import Unreadable, load_json

SIGNATURE_HEADER = "X-Hub-Signature-256"
_PREFIX = "sha256="
_HEX_LENGTH = 64


def signature_refusal(app_secret: bytes, body: bytes, header: str | None) -> str | None:
    """Why the signature does not hold (`missing_signature`, `bad_signature`), or None."""
    if not header:
        return "missing_signature"
    given = header.strip()
    if not given.startswith(_PREFIX) or len(given) != len(_PREFIX) + _HEX_LENGTH:
        return "bad_signature"
    expected = hmac.new(app_secret, body, hashlib.sha256).hexdigest().encode("ascii")
    # Headers arrive as latin-1 text; compare bytes so any character compares, in
    # constant time, and never raises on a non-ASCII forgery.
    offered = given[len(_PREFIX) :].lower().encode("latin-1", "replace")
    return None if hmac.compare_digest(expected, offered) else "bad_signature"


def envelope_problem(payload: Any) -> str | None:
    """What keeps a signed payload from being a WhatsApp notification, or None.

    Only the envelope is checked (`object`, `entry[].changes[].field/value`): every
    change is stored whole and read by the worker, which tolerates what it does not
    know, as Meta adds fields and kinds of change without notice.
    """
    if not isinstance(payload, dict) or payload.get("object") != "whatsapp_business_account":
        return "it is not a WhatsApp Business Account notification"
    entries = payload.get("entry")
    if not isinstance(entries, list):
        return "its entry is not a list"
    for entry in entries:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        if not isinstance(changes, list):
            return "an entry has no list of changes"
        for change in changes:
            if not (
                isinstance(change, dict)
                and isinstance(change.get("field"), str)
                and isinstance(change.get("value"), dict)
            ):
                return "a change has no field and value"
    return None


def parse_notification(body: bytes) -> tuple[str, Any]:
    """The signed body as text and its JSON; raises Unreadable for what is neither."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Unreadable("it is not UTF-8") from None
    try:
        return text, load_json(text, plain_text=False)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, Unreadable):
            raise
        raise Unreadable("it is not JSON") from None
