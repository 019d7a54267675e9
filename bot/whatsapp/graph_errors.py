"""Meta's Graph API errors, sorted by what the sender must do next.

Meta answers a refused send with `{"error": {"message", "type", "code",
"error_subcode", "error_data": {"messaging_product", "details"}, "fbtrace_id"}}`, and
the HTTP status says little: a throughput limit and a closed 24-hour window are both
400. So `classify` branches on `error.code` (Meta's advice) and falls back on the
status only when there is no code. Each class names an action, not a cause:

- `TryAgain`: transient; retry with jittered backoff, no sooner than `after` when set;
  `per_customer` means only this customer is throttled (131056, pair rate), so the
  sender backs off that conversation, not the number; `retry_once` (131000, 135000)
  means Meta suggests a single retry before treating it as permanent.
- `UnknownOutcome`: the request reached Meta, or may have, and no answer said whether
  the message went out (a read timeout after the body was written, a dropped
  connection, a 200 without a message id). It is deliberately *not* a `TryAgain`: a
  sender that retries every `TryAgain` must not send the customer a duplicate without
  deciding to. The outbox id travels in `biz_opaque_callback_data`, so a status
  webhook can settle it; retrying is the sender's explicit choice.
- `WaitADay`: 131049, Meta's per-user marketing limit; retrying within hours fails again.
- `Permanent`: the message will never go as it is; tell the person who sent it, in
  plain words (`explanation`), with Meta's code.
- `PauseNumber`: every message from this number will fail or harm it (spam limit,
  policy block, locked account); stop the number and tell the alert channel.
- `TokenProblem`: the access token is expired or lacks a permission; nothing sends
  until an operator rotates or re-grants it.

Every error carries an `explanation` for a person (rbac_core/messaging/meta_codes.py
holds the codes and their sentences); none ever carries the access token (the client
scrubs Meta's text before raising).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from rbac_core.messaging.meta_codes import Handling, explain, handling_of

DETAIL_LIMIT = 500


class GraphError(Exception):
    """A Graph API call that did not do what was asked. Fields are Meta's, cleaned."""

    def __init__(
        self,
        *,
        code: int | None = None,
        subcode: int | None = None,
        title: str = "",
        detail: str = "",
        http_status: int | None = None,
        fbtrace_id: str = "",
        meta_type: str = "",
        explanation: str = "",
    ) -> None:
        super().__init__()
        self.code = code
        self.subcode = subcode
        # The short name of the error: Meta's `title` (webhook errors) or its `message`
        # without the "(#131047) " prefix, else its `type` (e.g. "OAuthException").
        self.title = title
        self.detail = detail[:DETAIL_LIMIT]
        self.http_status = http_status
        self.fbtrace_id = fbtrace_id
        self.meta_type = meta_type
        self.explanation = explanation or explain(code)

    def __str__(self) -> str:
        if self.code is not None:
            head = str(self.code)
        elif self.http_status is not None:
            head = f"HTTP {self.http_status}"
        else:
            head = type(self).__name__
        text = self.title or "error"
        if self.detail and self.detail != self.title:
            text = f"{text} ({self.detail})"
        return " ".join(f"{head}: {text}".split())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, subcode={self.subcode!r}, "
            f"http_status={self.http_status!r}, title={self.title!r})"
        )


class TryAgain(GraphError):
    """Transient: the same request may succeed later."""

    after: float | None = None
    """Seconds to wait at least, when Meta or `Retry-After` said; else the sender's backoff."""
    per_customer: bool = False
    """Only this customer is throttled (pair rate, 131056): back off the conversation."""
    retry_once: bool = False
    """Meta advises one retry only (131000, 135000); after that, treat it as permanent."""


class UnknownOutcome(GraphError):
    """The message may or may not have been sent; see the module docstring."""


class WaitADay(GraphError):
    """Meta's per-user marketing limit (131049): try this customer again tomorrow."""

    after: float = 24 * 3600.0


class Permanent(GraphError):
    """This message will never be sent as it is; `explanation` says what to change."""


class PauseNumber(GraphError):
    """The sending number is limited or restricted: pause it and alert the operators."""


class TokenProblem(GraphError):
    """The access token is expired, invalid or lacks a permission: nothing will send."""


_CLASSES: dict[Handling, type[GraphError]] = {
    Handling.RETRY: TryAgain,
    Handling.WAIT_A_DAY: WaitADay,
    Handling.PERMANENT: Permanent,
    Handling.PAUSE_NUMBER: PauseNumber,
    Handling.TOKEN: TokenProblem,
}


def _entry(code: int | None) -> tuple[type[GraphError], str] | None:
    found = handling_of(code)
    return None if found is None else (_CLASSES[found[0]], found[1])


def classify(
    http_status: int,
    body: bytes | str | Mapping[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
) -> GraphError:
    """The error an answer that was not a success stands for. Never raises: junk bodies
    become a `TryAgain` (5xx, 408, 429) or a `Permanent` (anything else).

    `body` may also be one error object as Meta puts it in webhooks (`statuses[].errors[]`:
    `{code, title, message, error_data}`). `headers` supplies `Retry-After`.
    """
    try:
        return _classify(http_status, body, headers or {})
    except Exception:  # defensive: a bug here must not hide Meta's answer behind a crash
        return Permanent(http_status=http_status, title="unreadable error from Meta")


def _classify(
    status: int, body: bytes | str | Mapping[str, Any], headers: Mapping[str, str]
) -> GraphError:
    data = _parse(body)
    error = _error_object(data)
    code = _integer(error.get("code"))
    message = _text(error.get("message"))
    error_data = error.get("error_data")
    details = _text(error_data.get("details")) if isinstance(error_data, Mapping) else ""
    title = _text(error.get("title")) or re.sub(r"^\(#\d+\)\s*", "", message)
    title = title or _text(error.get("type")) or "no error details from Meta"
    if data is None and not isinstance(body, Mapping):  # not JSON: a proxy's page, say
        snippet = body[:1000].decode("utf-8", "replace") if isinstance(body, bytes) else body
        message = _text(str(snippet))[:200]
    found = _entry(code)
    if found is not None:
        kind, explanation = found
    elif status >= 500 or status in (408, 429):
        kind, explanation = TryAgain, f"Meta answered HTTP {status}; the message is retried"
    elif code is not None and message:
        kind, explanation = Permanent, f"Meta refused it with error {code}: “{message[:200]}”"
    else:
        kind, explanation = Permanent, explain(code)
    err = kind(
        code=code,
        subcode=_integer(error.get("error_subcode")),
        title=title[:DETAIL_LIMIT],
        detail=details or message,
        http_status=status,
        fbtrace_id=_text(error.get("fbtrace_id"))[:100],
        meta_type=_text(error.get("type"))[:100],
        explanation=explanation,
    )
    if isinstance(err, TryAgain):
        err.after = retry_after(headers)
        err.per_customer = code == 131056
        err.retry_once = code in (131000, 135000)
    return err


def _parse(body: object) -> object:
    if isinstance(body, Mapping):
        return body
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _error_object(data: object) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        return {}
    error = data.get("error")
    if isinstance(error, Mapping):
        return error
    return data if "code" in data else {}


def _integer(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if abs(value) < 10**12 else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 12:
        return int(value)
    return None


def _text(value: object) -> str:
    """Meta's text made safe to show: a string, no control characters or lone surrogates."""
    if not isinstance(value, str):
        return ""
    value = value[: DETAIL_LIMIT * 2].encode("utf-8", "replace").decode("utf-8")
    return " ".join("".join(c if c.isprintable() else " " for c in value).split())


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a `Retry-After` header (seconds or an HTTP date), or None."""
    raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if not raw:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(raw).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)
