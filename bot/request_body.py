"""Reading a request's body: all of it, or a refusal, never a part taken for the whole.

A signature covers the whole body, so a route that checks one must read the
body before trusting a byte of it; without a cap anyone could make a worker
hold gigabytes. Every route that reads a body goes through `read_body`.

Werkzeug's own guard is not enough for a chunked body (no Content-Length): it
wraps the stream in a `LimitedStream` that stops reading at the cap and ends
there quietly, so a body of 4 MiB and a bit arrived cut at 4 MiB, and a body
signed over its first 4 MiB passed as signed. Here a chunked body is read to
one byte past the cap: if that byte exists, the request is refused with 413.
A body with a Content-Length over the cap is refused before any of it is read.
"""

from __future__ import annotations

from typing import Any, BinaryIO

from flask import Request
from werkzeug.exceptions import ClientDisconnected, LengthRequired, RequestEntityTooLarge
from werkzeug.wsgi import get_content_length

# 4 MiB is far above any Slack payload (a message of 50 blocks, percent-encoded)
# and above the 3 MB a WhatsApp webhook batch may reach.
MAX_BODY_BYTES = 4 * 1024 * 1024
READ_TIMEOUT_S = 10.0
_READ_SIZE = 64 * 1024
_CACHE = "wa_access.body"


def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body of a Flask request: `read_environ_body` of its environ."""
    return read_environ_body(request.environ, limit)


def read_environ_body(environ: dict[str, Any], limit: int = MAX_BODY_BYTES) -> bytes:
    """The request's body as bytes, at most `limit` of them, read once per request.

    Raises `RequestEntityTooLarge` (413) past the limit, `LengthRequired` (411)
    for a chunked body the server does not delimit (a WSGI server that does
    sets `wsgi.input_terminated`, as gunicorn does), and `ClientDisconnected`
    (400) for a body that ends before its Content-Length.
    """
    cached = environ.get(_CACHE)
    if isinstance(cached, bytes):
        return cached
    _bound_reads(environ)
    stream: BinaryIO = environ["wsgi.input"]
    length = get_content_length(environ)  # None when chunked, whatever Content-Length says
    if length is not None:
        if length > limit:
            raise RequestEntityTooLarge()
        body = _read_exactly(stream, length) if length else b""
    elif "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        body = b""  # neither a length nor chunks: HTTP/1.1 says there is no body
    elif "wsgi.input_terminated" not in environ:
        raise LengthRequired("Send the body with a Content-Length.")
    else:
        body = _read_terminated(stream, limit)
    environ[_CACHE] = body
    return body


def _bound_reads(environ: dict[str, object]) -> None:
    """A client that sends its headers and then part of its body, and waits, held a
    server thread for as long as it liked: eight of them stalled `serve` (2 workers
    x 4 threads). Under gunicorn each read of the body now gives up after
    READ_TIMEOUT_S (Slack and Meta send a body at once); the request is then a 400."""
    sock = environ.get("gunicorn.socket")
    settimeout = getattr(sock, "settimeout", None)
    if callable(settimeout):
        settimeout(READ_TIMEOUT_S)


def _read_exactly(stream: BinaryIO, length: int) -> bytes:
    """`length` bytes, or ClientDisconnected: a server's stream may return fewer at a time."""
    try:
        body = stream.read(length)
        if len(body) < length:  # the rest comes in pieces: gathered without copying it all
            gathered = bytearray(body)
            while len(gathered) < length:
                more = stream.read(length - len(gathered))
                if not more:
                    raise ClientDisconnected()
                gathered += more
            body = bytes(gathered)
    except ClientDisconnected:
        raise
    except Exception as exc:  # a timeout, or the server's own framing errors
        raise ClientDisconnected() from exc
    return body


def _read_terminated(stream: BinaryIO, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        try:
            part = stream.read(min(_READ_SIZE, limit + 1 - total))
        except Exception as exc:
            # A timeout or a dropped connection (OSError), or the server's own parser
            # refusing the chunk framing (gunicorn's ParseException: a size of `zz`, a
            # missing CRLF): the body is unreadable, a 400 rather than a 500.
            raise ClientDisconnected() from exc
        if not part:
            return b"".join(parts)
        total += len(part)
        if total > limit:
            raise RequestEntityTooLarge()
        parts.append(part)
