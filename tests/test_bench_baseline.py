"""The benchmark's baseline must keep serving: a ratio against a server that cannot
start is no figure at all (the outbox worker once broke it without a failing test)."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time

from rbac_core import Database

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


def test_the_engines_benchmark_puts_the_same_policy_in_the_database_as_in_the_other_engines(
    db: Database,
) -> None:
    """Its ratios compare like with like only if the gate, reading the database the
    benchmark filled, answers what the in-memory policy (and so pycasbin and cedarpy,
    checked in the run itself) answers."""
    from bench.decisions import build_workload
    from bench.engines import fill, unique_grants
    from rbac_core import build_gate
    from rbac_core.policy.catalogue import CATALOGUE

    workload = unique_grants(build_workload(7, time.time(), sorted(CATALOGUE)))
    fill(db, workload)
    gate, policy = build_gate(db), workload.policy()
    queries = workload.queries[:500]
    assert [gate.decide(*q).allowed for q in queries] == [
        policy.decide(*q).allowed for q in queries
    ]
    assert any(policy.decide(*q).allowed for q in queries)
