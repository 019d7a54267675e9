# ruff: noqa: F811  (the `slack` fixture, imported, then named as an argument)
"""The Flask app: health check and JSON errors; and the app as gunicorn serves it."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request
from flask.testing import FlaskClient
from werkzeug.exceptions import ClientDisconnected

from bot.app import MAX_BODY_BYTES, create_app
from bot.background_process import PROCESS_NAME
from bot.config import Settings
from bot.demo.fake_slack import FakeSlack
from bot.request_body import READ_TIMEOUT_S, read_body, read_environ_body
from bot.runtime import build_runtime
from rbac_core import Database

from .conftest import ADMIN
from .helpers import audit_rows
from .slack_requests import SIGNING_SECRET, slash_command
from .test_slack_intake import _sign_bytes, command_of_exactly
from .test_slack_roles import slack  # noqa: F401  (fixture)


def test_healthz_answers_once_the_database_does(db_url: str) -> None:
    app = create_app(build_runtime(Settings(database_url=db_url)))
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


def test_healthz_is_503_with_json_when_the_database_is_down() -> None:
    settings = Settings(database_url="postgresql://nobody@127.0.0.1:1/x?connect_timeout=1")
    app = create_app(build_runtime(settings))
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["database"] == "unreachable"


def test_unknown_routes_get_a_json_404(db_url: str) -> None:
    app = create_app(build_runtime(Settings(database_url=db_url)))
    response = app.test_client().get("/nope")
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


# -- through gunicorn, as `wa-access serve` runs it ------------------------------------

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Served:
    """A `wa-access serve` (gunicorn) started by a test, in its own process group."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a connection of its own: (status, headers, body)."""
        conn = self.connect()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            answer = conn.getresponse()
            return answer.status, dict(answer.getheaders()), answer.read()
        finally:
            conn.close()

    def children(self) -> list[int]:
        """The master's children, from /proc: web workers and the background process."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []

    def workers(self) -> list[int]:
        """gunicorn's web workers."""
        return [pid for pid in self.children() if _name(pid) not in (None, PROCESS_NAME)]

    def background(self) -> list[int]:
        """serve's background process (none under `--no-worker`, or while it restarts)."""
        return [pid for pid in self.children() if _name(pid) == PROCESS_NAME]

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _name(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _without_metrics_dir(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment less PROMETHEUS_MULTIPROC_DIR, which a test names when it means it."""
    return {k: v for k, v in environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}


@contextmanager
def serve(
    tmp_path: Path, env: dict[str, str], *, workers: int = 1, args: Sequence[str] = ()
) -> Iterator[Served]:
    """`wa-access serve` on a free port of 127.0.0.1, up once every worker answers /healthz."""
    port = _free_port()
    log = tmp_path / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1"),
                *("--port", str(port), "--workers", str(workers), *args),
            ],
            cwd=tmp_path,  # no stray .env
            env={**_without_metrics_dir(os.environ), "PYTHONPATH": str(REPO), **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    served = Served(proc, port, log)
    background = 0 if "--no-worker" in args else 1
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited with {proc.returncode}:\n{served.output()}")
            with suppress(OSError):
                started = (len(served.workers()), len(served.background())) == (workers, background)
                if started and served.request("GET", "/healthz")[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"serve did not start:\n{served.output()}")
            time.sleep(0.1)
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(15)
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group this test started
        proc.wait()


def slack_env(db_url: str, slack: FakeSlack) -> dict[str, str]:
    return {
        "DATABASE_URL": db_url,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_BOT_TOKEN": "xoxb-0000-test",
        "SLACK_API_URL": slack.url,
    }


def _pieces(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """The body as an iterable: http.client then sends it chunked, with no Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _headers_only(served: Served, length: int, headers: dict[str, str]) -> bytes:
    """The answer to a POST declaring `length` bytes, of which none is sent.

    A body over the cap with a Content-Length is refused before a byte of it is
    read, so the answer comes without the body; a client that sent it all first
    would find the connection closed once gunicorn gives up draining it.
    """
    lines = ["POST /slack/events HTTP/1.1", f"Host: 127.0.0.1:{served.port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {length}")
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return sock.recv(65536)


def test_gunicorn_hands_a_chunked_body_to_the_app_whole(
    tmp_path: Path, db_url: str, slack: FakeSlack, team: dict[str, str]
) -> None:
    """Under gunicorn a chunked POST reaches the app terminated (wsgi.input_terminated):
    a small one is read whole and answered."""
    body = slash_command(ADMIN, "show", slack.response_url()).encode()
    with serve(tmp_path, slack_env(db_url, slack)) as served:
        status, _, answer = served.request(
            "POST", "/slack/events", _pieces(body, 100), _sign_bytes(body)
        )
    assert status == 200, answer
    assert json.loads(answer)["text"].startswith(f"Grants of <@{ADMIN}>")


def test_gunicorn_refuses_chunked_bodies_past_the_cap_with_413(
    tmp_path: Path, db_url: str, slack: FakeSlack, team: dict[str, str], db: Database
) -> None:
    head = command_of_exactly(MAX_BODY_BYTES, slack.response_url())
    cut = head + b"&more=" + b"y" * (1017 - 6)  # signed over its first 4 MiB only
    whole = command_of_exactly(MAX_BODY_BYTES + 1, slack.response_url())  # signed right
    before = len(audit_rows(db))
    with serve(tmp_path, slack_env(db_url, slack)) as served:
        answers = [
            served.request("POST", "/slack/events", _pieces(cut), _sign_bytes(head)),
            served.request("POST", "/slack/events", _pieces(whole), _sign_bytes(whole)),
        ]
        declared = _headers_only(served, len(whole), _sign_bytes(whole))
        exact = served.request("POST", "/slack/events", _pieces(head), _sign_bytes(head))
    for status, _, answer in answers:
        assert status == 413, answer
        assert json.loads(answer)["error"] == "request_entity_too_large"
    assert declared.startswith(b"HTTP/1.1 413 "), declared
    assert len(audit_rows(db)) == before + 1  # only the body of exactly 4 MiB ran
    assert exact[0] == 200 and json.loads(exact[2])["text"].startswith(f"Grants of <@{ADMIN}>")


def _raw(served: Served, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(request)
        return sock.recv(65536)


@pytest.mark.parametrize(
    "chunks",
    [
        b"zz\r\nabc\r\n0\r\n\r\n",
        b"-5\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabcXX",
        b"3;\x01\r\nabc\r\n0\r\n\r\n",
    ],
)
def test_malformed_chunk_framing_is_a_400_not_a_500(
    tmp_path: Path, db_url: str, slack: FakeSlack, chunks: bytes
) -> None:
    """gunicorn's parser raises its own exceptions for broken chunks, before any signature
    could be checked; they used to escape as a 500 with a traceback."""
    head = b"POST /slack/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    with serve(tmp_path, slack_env(db_url, slack)) as served:
        answer = _raw(served, head + chunks)
        log = served.output()
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert "Traceback" not in log


def test_clients_that_stall_mid_body_do_not_hold_the_server(
    tmp_path: Path, db_url: str, slack: FakeSlack, team: dict[str, str]
) -> None:
    """Eight connections that send their headers and part of the body, then wait, used to
    take every thread of `serve` (2 workers x 4) for as long as they liked."""
    body = slash_command(ADMIN, "show", slack.response_url()).encode()
    stalled_head = (
        f"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body) + 10}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n"
    ).encode()
    with serve(tmp_path, slack_env(db_url, slack), workers=2) as served:
        stalls = []
        for _ in range(8):
            sock = socket.create_connection(("127.0.0.1", served.port), timeout=60)
            sock.sendall(stalled_head + body[:20])
            stalls.append(sock)
        try:
            started = time.monotonic()
            status, _, answer = served.request("POST", "/slack/events", body, {**_sign_bytes(body)})
            waited = time.monotonic() - started
            stalled_answers = [sock.recv(65536) for sock in stalls]
        finally:
            for sock in stalls:
                sock.close()
    assert status == 200, answer
    # Each stall is cut off after READ_TIMEOUT_S; with the eight spread unevenly over the
    # two workers, the request may queue behind two of them. (A buffering proxy in front
    # is still the defence against a flood of them: see README.)
    assert waited < 2 * READ_TIMEOUT_S + 10
    assert all(a.startswith(b"HTTP/1.1 400 ") for a in stalled_answers), stalled_answers


# -- read_body: the one way a route reads a body ------------------------------------


def _reader(limit: int) -> FlaskClient:
    app = Flask("reader")

    @app.post("/read")
    def read() -> dict[str, int]:
        body = read_body(request, limit)
        assert read_body(request, limit) == body  # a second read sees the same bytes
        return {"length": len(body)}

    return app.test_client()


@pytest.mark.parametrize(
    ("size", "chunked", "status"),
    [(10, False, 200), (11, False, 413), (10, True, 200), (11, True, 413), (0, True, 200)],
)
def test_read_body_takes_up_to_the_limit_however_the_body_is_framed(
    size: int, chunked: bool, status: int
) -> None:
    headers = {"Transfer-Encoding": "chunked"} if chunked else {}
    answer = _reader(10).post(
        "/read",
        input_stream=io.BytesIO(b"x" * size),
        headers=headers,
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert answer.status_code == status
    if status == 200:
        assert answer.get_json() == {"length": size}


class Trickle(io.RawIOBase):
    """A server's input stream that hands over at most `piece` bytes a read."""

    def __init__(self, data: bytes, piece: int) -> None:
        self.data, self.piece = data, piece

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self.piece if size < 0 else min(size, self.piece)
        out, self.data = self.data[:size], self.data[size:]
        return out


def test_a_body_that_arrives_in_pieces_is_read_whole_and_one_cut_short_is_a_400() -> None:
    body = bytes(range(256)) * 64
    environ = {"wsgi.input": Trickle(body, 1000), "CONTENT_LENGTH": str(len(body))}
    assert read_environ_body(environ) == body
    cut = {"wsgi.input": Trickle(body[:-1], 1000), "CONTENT_LENGTH": str(len(body))}
    with pytest.raises(ClientDisconnected):
        read_environ_body(cut)


def test_read_body_refuses_chunks_a_server_does_not_delimit_and_short_bodies() -> None:
    reader = _reader(10)
    undelimited = reader.post(
        "/read", input_stream=io.BytesIO(b"xx"), headers={"Transfer-Encoding": "chunked"}
    )
    assert undelimited.status_code == 411
    short = reader.post(
        "/read", input_stream=io.BytesIO(b"xx"), environ_overrides={"CONTENT_LENGTH": "5"}
    )
    assert short.status_code == 400
    assert reader.post("/read").get_json() == {"length": 0}
