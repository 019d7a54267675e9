"""The Graph API client the outbox senders use to reach WhatsApp Cloud API.

One `httpx.Client` per `GraphClient`: a pooled, thread-safe connection set whose
transport can be swapped (tests, the demo's fake), with a timeout on every phase so
a slow Meta never holds a sender forever. Every failure leaves as a `GraphError`
subclass from graph_errors.py saying what to do next; httpx's own exceptions never
escape, because they hold the request, and the request holds the token.

The access token is a bearer secret: it is sent in the `Authorization` header and
nowhere else. httpx logs request lines (method, URL, status) at INFO and httpcore
logs connection events at DEBUG, neither with headers; the URL never holds the token;
`repr()` shows only the base URL; and Meta's text is scrubbed of the token before it
goes into an error, in case an answer ever echoes it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import httpx

from .graph_errors import GraphError, TryAgain, UnknownOutcome, classify

DEFAULT_API_URL = "https://graph.facebook.com/v25.0"
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=15.0, write=10.0, pool=5.0)

_log = logging.getLogger(__name__)
_DIGITS = re.compile(r"[0-9]+")
# Graph paths are ids and edge names: no dots (no "..") , no query, no scheme.
_PATH = re.compile(r"[A-Za-z0-9_]+(?:/[A-Za-z0-9_]+)*")
_VERSION = re.compile(r"v[0-9]+(?:\.[0-9]+)?")
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")
# Failures before the request could have reached Meta: safe to send again.
_NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.WriteTimeout,
    httpx.WriteError,
    httpx.ProxyError,
)


@dataclass(frozen=True)
class Sent:
    """Meta accepted the message: `wamid` names it in later status webhooks."""

    wamid: str
    wa_id: str = ""
    """The customer's WhatsApp id as Meta resolved it; "" for username-only accounts."""


class GraphClient:
    """Calls to `{api_url}/…` with the bearer token; see the module docstring."""

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> None:
        base = api_url.strip().rstrip("/")
        if not base.startswith(("https://", "http://")) or "?" in base or "#" in base:
            raise ValueError("WHATSAPP_API_URL must be an http(s) base URL without a query")
        # A token with a space or newline would be refused by httpx in an error that
        # quotes the header value: refuse it here, without quoting it.
        if not _HEADER_SAFE.fullmatch(token):
            raise ValueError("the access token is empty or holds characters a header cannot")
        self._base = base
        self._token = token
        self._http = httpx.Client(
            headers={"Authorization": f"Bearer {token}", "User-Agent": "wa-access"},
            timeout=timeout or DEFAULT_TIMEOUT,
            transport=transport,
        )

    @property
    def api_url(self) -> str:
        return self._base

    @property
    def version(self) -> str:
        """The Graph version pinned in the URL (e.g. "v25.0"), "" when it has none."""
        path = httpx.URL(self._base).path
        found = [part for part in path.split("/") if _VERSION.fullmatch(part)]
        return found[-1] if found else ""

    def __repr__(self) -> str:
        return f"GraphClient(api_url={self._base!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def send_message(self, phone_number_id: str, message: Mapping[str, Any]) -> Sent:
        """POST the message body (built by the caller) as the number `phone_number_id`.

        A 200 without a message id is an `UnknownOutcome`: Meta may have queued it.
        """
        if not isinstance(phone_number_id, str) or not _DIGITS.fullmatch(phone_number_id):
            raise ValueError("phone_number_id must be digits only")
        data = self.post(f"{phone_number_id}/messages", message)
        messages = data.get("messages")
        first = messages[0] if isinstance(messages, list) and messages else None
        wamid = first.get("id") if isinstance(first, dict) else None
        if not isinstance(wamid, str) or not wamid:
            raise UnknownOutcome(
                http_status=200,
                title="no message id in Meta's answer",
                detail="Meta answered 200 without messages[0].id",
                explanation="Meta's answer did not say whether the message was sent",
            )
        contacts = data.get("contacts")
        contact = contacts[0] if isinstance(contacts, list) and contacts else None
        wa_id = contact.get("wa_id") if isinstance(contact, dict) else None
        return Sent(wamid=wamid, wa_id=wa_id if isinstance(wa_id, str) else "")

    def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """GET `{api_url}/{path}`: a read, so any failure is worth trying again."""
        response = self._request("GET", path, params=params, idempotent=True)
        return self._json(response, idempotent=True)

    def post(self, path: str, json: Mapping[str, Any]) -> dict[str, Any]:
        """POST JSON to `{api_url}/{path}`; a lost answer is an `UnknownOutcome`."""
        response = self._request("POST", path, json=dict(json), idempotent=False)
        return self._json(response, idempotent=False)

    def _request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        params: Mapping[str, str] | None = None,
        json: dict[str, Any] | None = None,
    ) -> httpx.Response:
        if not _PATH.fullmatch(path):
            raise ValueError("a Graph path is ids and edge names separated by /")
        try:
            response = self._http.request(
                method, f"{self._base}/{path}", params=dict(params or {}), json=json
            )
        except httpx.HTTPError as exc:
            failure = _transport_error(exc, idempotent)
        else:
            if response.is_success:
                return response
            failure = classify(response.status_code, response.content, headers=response.headers)
        # Raised outside the `except`, so no __context__ links back to httpx's request.
        raise self._scrubbed(failure, method, path)

    def _json(self, response: httpx.Response, *, idempotent: bool) -> dict[str, Any]:
        try:
            data = response.json()
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, dict):
            return data
        kind = TryAgain if idempotent else UnknownOutcome
        raise kind(
            http_status=response.status_code,
            title="unreadable answer",
            detail="Meta answered success with a body that is not a JSON object",
            explanation="Meta's answer could not be read",
        )

    def _scrubbed(self, err: GraphError, method: str, path: str) -> GraphError:
        """The error without the token in any of Meta's words, logged once."""
        for name in ("title", "detail", "explanation", "fbtrace_id", "meta_type"):
            value = getattr(err, name)
            if self._token in value:
                setattr(err, name, value.replace(self._token, "[redacted]"))
        _log.debug("graph %s /%s failed: %s", method, path, err)
        return err


def _transport_error(exc: httpx.HTTPError, idempotent: bool) -> GraphError:
    """httpx's failure as ours. Only its class name and text are kept (no request)."""
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, _NOT_SENT) or idempotent:
        return TryAgain(
            title="could not reach Meta",
            detail=detail,
            explanation="Meta could not be reached; it is worth trying again shortly",
        )
    return UnknownOutcome(
        title="no answer from Meta",
        detail=detail,
        explanation="the request reached Meta, or may have, but no answer said if it was sent",
    )
