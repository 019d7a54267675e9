"""The benchmark's baseline must keep serving: a ratio against a server that cannot
start is no figure at all (the outbox worker once broke it without a failing test)."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time

from .test_http import REPO, START_TIMEOUT_S, _free_port


def test_the_bare_baseline_serves_through_wa_access_serves_own_gunicorn_settings() -> None:
    port = _free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DATABASE_URL": "sqlite://"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bare_app", "--port", str(port), "--workers", "1"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        status = None
        while status is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("POST", "/slack/events", body=b"x=1")
                status = conn.getresponse().status
                conn.close()
            except OSError:
                time.sleep(0.1)
        assert status == 200, proc.stdout.read().decode()[-2000:] if proc.poll() else status
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
