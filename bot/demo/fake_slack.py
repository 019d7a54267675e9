"""A fake Slack Web API on 127.0.0.1 that records every call: tests assert what users see, and
`wa-access demo` shows it.

It answers the methods wa-access uses with the shapes of Slack's documentation,
and also stands in for `response_url` endpoints (`/response/<id>`).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


@dataclass
class Call:
    method: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class FakeSlack:
    """Start with `start()`; `url` is the Web API base (ends with /api/)."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    team_id: str = "T0WA0ACCESS"
    bot_user_id: str = "U0WABOT01"
    scripted: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Answers to give, in order, before the usual ones (e.g. a malformed reply)."""
    hold: set[str] = field(default_factory=set)
    """Methods whose calls are recorded and then never answered (a Slack that hangs)."""
    drop: set[str] = field(default_factory=set)
    """Methods whose calls are recorded, then cut off without an answer (a reset)."""
    delays: dict[str, float] = field(default_factory=dict)
    """Seconds to wait before answering a method (a slow Slack)."""
    arrivals: list[tuple[float, Call]] = field(default_factory=list)
    """(time.monotonic() on arrival, call), for tests of pacing."""
    _ts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _released: threading.Event = field(default_factory=threading.Event, repr=False)

    def start(self) -> FakeSlack:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length)
                if self.path.startswith("/upload/"):  # a files.getUploadURLExternal URL
                    fake.calls.append(
                        Call(self.path.strip("/"), {"content": data}, dict(self.headers))
                    )
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(b"OK")
                    return
                raw = data.decode("utf-8")
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    body = json.loads(raw or "{}")
                else:
                    body = {k: v[0] for k, v in parse_qs(raw).items()}
                name = self.path.split("?")[0].removeprefix("/api/").strip("/")
                call = Call(name, body, dict(self.headers))
                fake.calls.append(call)
                fake.arrivals.append((time.monotonic(), call))
                if name in fake.hold:
                    fake._released.wait(60)
                    return
                if name in fake.drop:
                    self.close_connection = True
                    return
                if name in fake.delays:
                    time.sleep(fake.delays[name])
                answer = dict(fake.answer(name, body))
                # A scripted answer may carry an HTTP status and headers (a 429's Retry-After).
                status = int(answer.pop("_status", 200))
                extra: dict[str, str] = answer.pop("_headers", {})
                data = json.dumps(answer).encode("utf-8")
                self.send_response(status)
                for header, value in extra.items():
                    self.send_header(header, value)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        """Stop holding calls: those held so far end without an answer."""
        self.hold.clear()
        self._released.set()

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    @property
    def base(self) -> str:
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    @property
    def url(self) -> str:
        return f"{self.base}/api/"

    def response_url(self, name: str = "r1") -> str:
        return f"{self.base}/response/{name}"

    def answer(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self.scripted.get(method):
                return self.scripted[method].pop(0)
        if method == "auth.test":
            return {
                "ok": True,
                "url": "https://wa.slack.com/",
                "team": "WA",
                "user": "wa-access",
                "team_id": self.team_id,
                "user_id": self.bot_user_id,
                "bot_id": "B0WABOT01",
            }
        if method == "users.info":
            user = self.users.get(str(body.get("user")))
            if user is None:
                return {"ok": False, "error": "user_not_found"}
            return {"ok": True, "user": user}
        if method.startswith("response/"):
            return {"ok": True}
        if method == "users.list":
            return self._users_page(body)
        if method == "chat.postMessage":
            with self._lock:
                self._ts += 1
                ts = f"1795000000.{self._ts:06d}"
            return {"ok": True, "channel": body.get("channel"), "ts": ts, "message": body}
        if method == "conversations.open":
            return {"ok": True, "channel": {"id": "D" + str(body.get("users", "X"))[1:]}}
        if method == "files.getUploadURLExternal":
            return {
                "ok": True,
                "upload_url": f"{self.base}/upload/F0QRCODE1",
                "file_id": "F0QRCODE1",
            }
        if method == "files.completeUploadExternal":
            return {"ok": True, "files": [{"id": "F0QRCODE1", "title": "QR"}]}
        return {"ok": True}

    def _users_page(self, body: dict[str, Any]) -> dict[str, Any]:
        """users.list, paginated by cursor as Slack does (the cursor is an opaque string)."""
        members = sorted(self.users.values(), key=lambda u: str(u["id"]))
        limit = int(body.get("limit") or 100)
        cursor = str(body.get("cursor") or "")
        start = int(cursor.removeprefix("next_")) if cursor.startswith("next_") else 0
        chunk = members[start : start + limit]
        more = start + limit < len(members)
        return {
            "ok": True,
            "members": chunk,
            "cache_ts": 1795000000,
            "response_metadata": {"next_cursor": f"next_{start + limit}" if more else ""},
        }

    def add_user(self, user_id: str, name: str, *, deleted: bool = False) -> None:
        self.users[user_id] = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "deleted": deleted,
            "real_name": name.title(),
            "is_bot": False,
        }

    def named(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def responses(self) -> list[dict[str, Any]]:
        """Bodies posted to response_url endpoints, oldest first."""
        return [c.body for c in self.calls if c.method.startswith("response/")]
