# ruff: noqa: F811  (the `slack` fixture, imported from test_slack_roles, then named as an argument)
"""`serve --pin-workers`: each web worker keeps to one CPU, the one fewest live workers use.

Asked for, the master gives every worker it starts a CPU of those it may use
itself, spreading them evenly and giving a replaced worker the CPU its
predecessor left; the worker keeps to it before any of its threads exist.
Not asked for, nothing is pinned. A system that cannot pin says so at start.
"""

from __future__ import annotations

import io
import logging
import os
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bot.cli import main
from bot.demo.fake_slack import FakeSlack
from bot.server import CpuPinning, PinningUnavailable

from .helpers import wait_for
from .test_http import serve, slack_env
from .test_slack_roles import slack  # noqa: F401  (fixture)

CAN_PIN = hasattr(os, "sched_getaffinity")
needs_affinity = pytest.mark.skipif(not CAN_PIN, reason="this system cannot pin processes")


def arbiter_with(*cpus: int | None) -> Any:
    """gunicorn's master as the hooks see it: its live workers, each with its CPU."""
    workers = {}
    for pid, cpu in enumerate(cpus, start=100):
        worker = SimpleNamespace()
        if cpu is not None:
            worker.wa_access_cpu = cpu
        workers[pid] = worker
    return SimpleNamespace(WORKERS=workers)


def test_workers_spread_over_the_cpus_one_each_then_evenly() -> None:
    pinning = CpuPinning([3, 1, 2])
    assert pinning.cpus == [1, 2, 3]
    taken: list[int | None] = []
    for _ in range(7):
        taken.append(pinning.choose(taken))
    assert taken == [1, 2, 3, 1, 2, 3, 1]


def test_a_replaced_worker_takes_the_cpu_its_predecessor_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    pinning = CpuPinning([0, 1, 2, 3])
    # Workers on 0, 1 and 3 live; the one on 2 died. A worker the master knows
    # nothing of (started before pinning was asked for) counts for no CPU.
    assert pinning.choose([0, 1, 3, None]) == 2
    worker = SimpleNamespace()
    pinning.pre_fork(arbiter_with(0, 1, 3, None), worker)
    assert worker.wa_access_cpu == 2


def test_a_cpu_the_master_may_no_longer_use_is_not_given_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pinning = CpuPinning([0, 1, 2, 3])
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1, 3}, raising=False)
    worker = SimpleNamespace()
    pinning.pre_fork(arbiter_with(1), worker)
    assert worker.wa_access_cpu == 3
    # None of them left (a cpuset moved elsewhere): the configured ones, rather than none.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {7}, raising=False)
    pinning.pre_fork(arbiter_with(0, 1), worker)
    assert worker.wa_access_cpu == 2


def test_a_cpu_refused_at_the_workers_start_leaves_it_unpinned_not_stopped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An error in gunicorn's post_fork would halt the whole server (a worker that
    cannot boot): the worker runs unpinned instead, and says so."""

    def refuse(pid: int, cpus: object) -> None:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(os, "sched_setaffinity", refuse, raising=False)
    with caplog.at_level(logging.WARNING, logger="wa_access.server"):
        CpuPinning([0, 1]).post_fork(arbiter_with(), SimpleNamespace(wa_access_cpu=1))
    assert "runs on any CPU: CPU 1 refused" in caplog.text


def test_there_must_be_a_cpu_to_pin_to() -> None:
    with pytest.raises(ValueError, match="no CPU"):
        CpuPinning([])


def test_a_system_that_cannot_pin_refuses_at_start_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    with pytest.raises(PinningUnavailable, match="--pin-workers needs"):
        CpuPinning.of_this_process()
    monkeypatch.chdir(tmp_path)
    assert main(["serve", "--pin-workers"], out=io.StringIO()) == 1
    err = capsys.readouterr().err
    assert "--pin-workers needs a system that lets a process choose its CPUs" in err
    assert "Traceback" not in err


@needs_affinity
@pytest.mark.slow
def test_served_workers_each_keep_to_their_own_cpu_and_nothing_else_is_pinned(
    db_url: str, slack: FakeSlack, tmp_path: Path
) -> None:
    allowed = os.sched_getaffinity(0)
    with serve(tmp_path, slack_env(db_url, slack), workers=2, args=("--pin-workers",)) as served:
        first = {pid: os.sched_getaffinity(pid) for pid in served.workers()}
        assert all(len(cpus) == 1 and cpus <= allowed for cpus in first.values())
        if len(allowed) >= 2:
            assert len(set.union(*first.values())) == 2  # one CPU each
        [background] = served.background()
        assert os.sched_getaffinity(background) == allowed
        assert os.sched_getaffinity(served.proc.pid) == allowed
        # A worker killed outright is replaced on the CPU it left.
        victim, its_cpu = next(iter(first.items()))
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: victim not in served.workers() and len(served.workers()) == 2,
            what="gunicorn to replace the worker",
        )
        [replacement] = [pid for pid in served.workers() if pid not in first]
        assert os.sched_getaffinity(replacement) == its_cpu
        assert served.request("GET", "/healthz")[0] == 200
        assert "keeps to CPU" in served.output()


@needs_affinity
@pytest.mark.slow
def test_without_the_option_workers_may_run_anywhere(
    db_url: str, slack: FakeSlack, tmp_path: Path
) -> None:
    allowed = os.sched_getaffinity(0)
    with serve(tmp_path, slack_env(db_url, slack), workers=2) as served:
        assert [os.sched_getaffinity(pid) for pid in served.workers()] == [allowed, allowed]
        assert "keeps to CPU" not in served.output()
