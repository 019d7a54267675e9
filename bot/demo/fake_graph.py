"""A fake Graph API on 127.0.0.1: Meta's send endpoint, its error shapes, and a record.

The tests of the client and the outbox senders, the sending benchmark and
`wa-access demo` all need a Meta that answers like Meta (the success shape, error
bodies with `code`, 401 for a bad token) and can misbehave on cue: scripted errors,
latency, connections cut without an answer. It speaks HTTP/1.1 with keep-alive so
thousands of sends from several processes reuse connections, and does little per
request: a lock is held only to count, record and pop a script.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

_MESSAGES = re.compile(r"/(?P<version>v[0-9]+\.[0-9]+)/(?P<number>[0-9]+)/messages")


@dataclass(frozen=True)
class Answer:
    """What the fake says: an HTTP status, a JSON body (or raw bytes), extra headers."""

    status: int
    body: dict[str, Any] | bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GraphCall:
    """One request as it arrived. `status` is the answer given, 0 when dropped."""

    method: str
    path: str
    phone_number_id: str
    body: dict[str, Any]
    headers: dict[str, str]
    arrived: float
    status: int = 0


class FakeGraph:
    """`FakeGraph(token).start()`; point a GraphClient at `.url`; `.stop()` at the end."""

    def __init__(self, token: str = "fake-graph-token", version: str = "v25.0") -> None:
        self.token = token
        self.version = version
        self.latency = 0.0
        """Seconds to wait before every answer (a slow Meta)."""
        self._calls: list[GraphCall] = []
        self._scripts: dict[str | None, deque[Answer]] = {}
        self._drops = 0
        self._counter = 0
        self._lock = threading.Lock()
        self._server: _Server | None = None

    def start(self) -> Self:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        # A short poll makes stop() quick; the serving itself does not poll.
        serve = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        serve.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeGraph is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def url(self) -> str:
        """WHATSAPP_API_URL for this fake: the base with the version."""
        return f"{self.base}/{self.version}"

    # Scripting.

    @staticmethod
    def error(
        code: int,
        message: str,
        http_status: int = 400,
        subcode: int | None = None,
        details: str = "",
        *,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """Meta's error shape: `{"error": {"message": "(#code) …", "type", "code", …}}`."""
        error: dict[str, Any] = {
            "message": f"(#{code}) {message}",
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details or message},
            "fbtrace_id": "AfakeTrace" + str(code),
        }
        if subcode is not None:
            error["error_subcode"] = subcode
        return Answer(http_status, {"error": error}, dict(headers or {}))

    def script(
        self, phone_number_id: str | None, *responses: Answer | tuple[int, dict[str, Any]]
    ) -> None:
        """Queue answers for message calls from that number (None: from any number),
        given in order before the usual success; a number's own queue goes first."""
        answers = [r if isinstance(r, Answer) else Answer(r[0], r[1]) for r in responses]
        with self._lock:
            self._scripts.setdefault(phone_number_id, deque()).extend(answers)

    def drop_next(self, n: int = 1) -> None:
        """Cut the next `n` requests off after reading them, without an answer."""
        with self._lock:
            self._drops += n

    # The record.

    @property
    def calls(self) -> list[GraphCall]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, phone_number_id: str) -> list[GraphCall]:
        return [c for c in self.calls if c.phone_number_id == phone_number_id]

    def sent(self) -> list[GraphCall]:
        """Message calls answered with success: what Meta would have sent."""
        return [c for c in self.calls if c.status == 200 and c.path.endswith("/messages")]

    # Answering (called by the handler threads).

    def _decide(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[GraphCall, Answer | None]:
        """Record the call and choose its answer (None: drop the connection)."""
        arrived = time.monotonic()
        match = _MESSAGES.fullmatch(path)
        number = match["number"] if match else ""
        body = _json_object(raw)
        answer: Answer | None
        with self._lock:
            if self._drops > 0:
                self._drops -= 1
                answer = None
            else:
                answer = self._answer(method, match, headers, body)
            status = answer.status if answer is not None else 0
            call = GraphCall(method, path, number, body or {}, headers, arrived, status)
            self._calls.append(call)
        return call, answer

    def _answer(
        self,
        method: str,
        match: re.Match[str] | None,
        headers: dict[str, str],
        body: dict[str, Any] | None,
    ) -> Answer:
        """Meta's checks in order: token, path, body; then a script, then success."""
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
        if auth != f"Bearer {self.token}":
            return _invalid_token()
        if method != "POST" or match is None or match["version"] != self.version:
            return self.error(100, "Unsupported request: unknown path components")
        if body is None:
            return self.error(100, "Invalid parameter", details="the body is not a JSON object")
        to = body.get("to")
        if body.get("messaging_product") != "whatsapp" or not isinstance(to, str) or not to:
            return self.error(100, "Invalid parameter", details="messaging_product and to needed")
        for key in (match["number"], None):
            queue = self._scripts.get(key)
            if queue:
                return queue.popleft()
        self._counter += 1
        wamid = "wamid." + base64.b64encode(f"fakegraph:{self._counter:010d}".encode()).decode()
        return Answer(
            200,
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": re.sub(r"[^0-9]", "", to)}],
                "messages": [{"id": wamid}],
            },
        )


def _invalid_token() -> Answer:
    error = {
        "message": "Invalid OAuth access token - Cannot parse access token",
        "type": "OAuthException",
        "code": 190,
        "fbtrace_id": "AfakeTraceToken",
    }
    return Answer(401, {"error": error}, {"WWW-Authenticate": 'OAuth "Facebook Platform"'})


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # thousands of concurrent senders must not be refused
    fake: FakeGraph


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: senders reuse their connections
    timeout = 30  # an idle kept-alive connection frees its thread eventually
    # One write per answer, sent at once: headers and body in separate small writes
    # meet Nagle's algorithm and delayed ACKs, ~40 ms a request.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep output clean
        pass

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        path = self.path.split("?", 1)[0]
        _, answer = fake._decide(self.command, path, dict(self.headers), raw)
        if answer is None:
            self.close_connection = True
            return
        if fake.latency > 0:
            time.sleep(fake.latency)
        data = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
        kind = "text/html" if isinstance(answer.body, bytes) else "application/json"
        try:
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client gave up waiting (a timeout test): nothing to say
            self.close_connection = True
